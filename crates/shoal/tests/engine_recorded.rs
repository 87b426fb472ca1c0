//! Golden-file tests of the Engine API's JSON shapes: the same requests as those recorded
//! against a real Docker Engine 20.10.24 (API 1.41) in swarm mode (`tests/recorded/`, see its
//! README) are made against a `shoal daemon --executor sim`, and each answer is compared with
//! its recording STRUCTURALLY — the set of key paths (objects' keys recursively, array elements
//! merged into one `[]` path, the entries of maps with free keys merged into one `{}` path) and
//! the JSON type at each path — never the values (IDs, times, versions differ).
//!
//! Every difference fails the test unless [`ALLOWED`] lists it with its reason; an entry that
//! no longer matches anything fails too, so the list stays as short as it can be. Status codes,
//! `Content-Type`, the presence of `Api-Version`/`Ostype` and moby's error texts are compared
//! exactly. Only the `shoal` binary is needed: the test always runs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Manager;
use support::engine::{Exchange, engine_socket, request};

/// What differs at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Diff {
    /// In Docker's recording, not in Shoal's answer.
    Missing,
    /// In Shoal's answer, not in Docker's recording.
    Extra,
    /// In both, with another JSON type.
    Type,
}

/// A known difference: in recording `file`, at `path` or under it (`path.x`, `path[]`,
/// `path{}`), of kind `diff`, because `reason`.
struct Allowed {
    file: &'static str,
    path: &'static str,
    diff: Diff,
    reason: &'static str,
}

const fn allow(
    file: &'static str,
    path: &'static str,
    diff: Diff,
    reason: &'static str,
) -> Allowed {
    Allowed {
        file,
        path,
        diff,
        reason,
    }
}

use Diff::{Extra, Missing, Type};

/// The known differences between Docker 20.10's answers and Shoal's, each with its reason.
#[rustfmt::skip]
const ALLOWED: &[Allowed] = &[
    // GET /info: moby's fields for a machine that runs containers, and API versions.
    allow("info.json", "BridgeNfIptables", Missing, "dropped from moby's system.Info by API 1.50 (Shoal's version; 20.10 speaks 1.41)"),
    allow("info.json", "BridgeNfIp6tables", Missing, "dropped from moby's system.Info by API 1.50 (Shoal's version; 20.10 speaks 1.41)"),
    allow("info.json", "KernelMemory", Missing, "omitempty in moby since API 1.42; false on Shoal, which limits no container's memory"),
    allow("info.json", "KernelMemoryTCP", Missing, "omitempty in moby since API 1.42; false on Shoal, which limits no container's memory"),
    allow("info.json", "CgroupVersion", Missing, "omitempty in moby; Shoal runs no containers itself, so it has no cgroup version"),
    allow("info.json", "ContainerdCommit.Expected", Missing, "deprecated and omitempty in moby since API 1.49"),
    allow("info.json", "RuncCommit.Expected", Missing, "deprecated and omitempty in moby since API 1.49"),
    allow("info.json", "InitCommit.Expected", Missing, "deprecated and omitempty in moby since API 1.49"),
    allow("info.json", "DriverStatus", Type, "no storage driver: Shoal sends [] where moby's nil slice is null"),
    allow("info.json", "Plugins.Authorization", Type, "no authorization plugin: Shoal sends [] where moby's nil slice is null"),
    allow("info.json", "Plugins.Log[]", Missing, "no engine plugins: logs belong to each node's own Docker Engine"),
    allow("info.json", "Plugins.Network[]", Missing, "no engine plugins: local networks belong to each node's own Docker Engine"),
    allow("info.json", "Plugins.Volume[]", Missing, "no engine plugins: volumes belong to each node's own Docker Engine"),
    allow("info.json", "RegistryConfig", Type, "Shoal pulls no images: no registry configuration (moby's nil pointer, null)"),
    allow("info.json", "Runtimes{}", Missing, "no container runtimes: Shoal runs no containers itself (the map is empty)"),
    allow("info.json", "SecurityOptions[]", Missing, "no seccomp/AppArmor profiles: Shoal runs no containers itself"),
    allow("info.json", "Warnings", Type, "Shoal always warns that it serves the swarm-mode API only; 20.10 had no warning (null)"),
    allow("info.json", "CDISpecDirs", Extra, "added in API 1.46 (Shoal speaks 1.50)"),
    // GET /version.
    allow("version.json", "BuildTime", Missing, "omitempty in moby; Shoal's build records no time"),
    // GET /nodes/<self>: the sim executor describes a node without an engine.
    allow("node.json", "Description.Engine", Missing, "the sim executor reports no engine (the docker executor reports its Docker Engine's version and plugins)"),
    allow("node.json", "Description.Resources", Missing, "the sim executor reports no resources (the docker executor reports its Docker Engine's)"),
    // GET /tasks.
    allow("tasks.json", "[].Status.ContainerStatus", Missing, "the sim executor runs no container (the docker executor's tasks have one)"),
    allow("tasks.json", "[].NetworksAttachments[].Network.DriverState.Options", Missing, "no VXLAN ID: Shoal has no overlay data plane yet"),
    allow("tasks.json", "[].NetworksAttachments[].Network.Spec.IPAMOptions", Missing, "the ingress network's stored spec: moby's daemon gives it empty IPAM options, Shoal's manager none"),
    allow("tasks.json", "[].NetworksAttachments[].Network.Spec.DriverConfiguration.Name", Extra, "the ingress network's stored spec: Shoal's manager names its driver (overlay), moby's leaves it to the allocator"),
    // GET /networks/<name>.
    allow("network.json", "Containers", Type, "no data plane, no containers: Shoal sends {} where moby's nil map is null"),
    allow("network.json", "IPAM.Options", Type, "no IPAM options: Shoal sends {} where moby's nil map is null"),
    allow("network.json", "Labels", Type, "moby shows a swarm network's empty labels as null (nil map), Shoal as {} (engine-api.md §3)"),
    allow("network.json", "Options{}", Missing, "no VXLAN ID (com.docker.network.driver.overlay.vxlanid_list): Shoal has no overlay data plane yet"),
    allow("network.json", "EnableIPv4", Extra, "added in API 1.47 (Shoal speaks 1.50)"),
];

/// Objects whose keys are data (labels, options, runtimes…), not field names: their entries
/// are merged into one `{}` path.
const MAPS: &[&str] = &[
    "Labels",
    "Options",
    "DriverOpts",
    "Runtimes",
    "IndexConfigs",
    "Sysctls",
];

/// The JSON type of `v`.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key path of `v` under `path`, with the JSON types seen there.
fn shape(v: &Value, path: &str, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    out.entry(path.to_string()).or_default().insert(kind(v));
    match v {
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), out);
            }
        }
        Value::Object(fields) => {
            let last = path.rsplit(['.', ']', '}']).next().unwrap_or_default();
            let is_map = MAPS.contains(&last) && !path.is_empty();
            for (key, value) in fields {
                let child = if is_map {
                    format!("{path}{{}}")
                } else if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                shape(value, &child, out);
            }
        }
        _ => {}
    }
}

fn shape_of(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    shape(v, "", &mut out);
    out.into_iter()
        .map(|(path, kinds)| {
            let path = if path.is_empty() {
                "(root)".into()
            } else {
                path
            };
            (path, kinds.into_iter().collect::<Vec<_>>().join("|"))
        })
        .collect()
}

/// Whether `path` is `entry` or under it.
fn covers(entry: &str, path: &str) -> bool {
    path == entry
        || path
            .strip_prefix(entry)
            .is_some_and(|rest| rest.starts_with(['.', '[', '{']))
}

/// The comparisons made so far: the differences not allowed, and the allowlist entries used.
#[derive(Default)]
struct Report {
    failures: String,
    used: BTreeSet<usize>,
}

impl Report {
    /// Compares Shoal's answer with the recording `file` (in `tests/recorded/`).
    fn compare(&mut self, file: &'static str, answer: &Value) {
        let (docker, shoal) = (shape_of(&recorded_json(file)), shape_of(answer));
        // Only the topmost path of a difference is reported: what lies under a missing object
        // or one of another type differs with it.
        let mut diffs: Vec<(Diff, &String, &str, &str)> = Vec::new();
        let under_reported = |diffs: &[(Diff, &String, &str, &str)], path: &str| {
            diffs
                .iter()
                .any(|(_, reported, _, _)| covers(reported, path))
        };
        for (path, docker_kind) in &docker {
            if under_reported(&diffs, path) {
                continue;
            }
            match shoal.get(path) {
                None => diffs.push((Missing, path, docker_kind, "-")),
                Some(k) if k != docker_kind => diffs.push((Type, path, docker_kind, k)),
                Some(_) => {}
            }
        }
        for (path, shoal_kind) in &shoal {
            if !docker.contains_key(path) && !under_reported(&diffs, path) {
                diffs.push((Extra, path, "-", shoal_kind));
            }
        }
        let mut unexplained = String::new();
        for (diff, path, docker_kind, shoal_kind) in diffs {
            let entry = ALLOWED
                .iter()
                .position(|a| a.file == file && a.diff == diff && covers(a.path, path));
            match entry {
                Some(i) => {
                    self.used.insert(i);
                }
                None => {
                    let _ = writeln!(
                        unexplained,
                        "  {:<8} {path:<60} docker: {docker_kind:<8} shoal: {shoal_kind}",
                        format!("{diff:?}")
                    );
                }
            }
        }
        if !unexplained.is_empty() {
            let _ = write!(
                self.failures,
                "{file}: shapes differ (what, path, Docker's type, Shoal's type):\n{unexplained}"
            );
            let _ = writeln!(self.failures, "  shoal's answer: {answer}");
        }
    }

    /// Fails with every difference not allowed and every allowlist entry no longer needed.
    fn finish(self) {
        let mut failures = self.failures;
        for (i, a) in ALLOWED.iter().enumerate() {
            if !self.used.contains(&i) {
                let _ = writeln!(
                    failures,
                    "stale allowlist entry: {} {:?} {} ({})",
                    a.file, a.diff, a.path, a.reason
                );
            }
        }
        assert!(failures.is_empty(), "\n{failures}");
    }
}

fn recorded_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recorded")
}

fn recorded_json(file: &str) -> Value {
    let text = std::fs::read_to_string(recorded_dir().join(file)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A recorded raw answer (`err404.txt`): status, headers (lower-case names), body.
fn recorded_raw(file: &str) -> Exchange {
    let text = std::fs::read_to_string(recorded_dir().join(file))
        .unwrap()
        .replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Exchange {
        status,
        headers,
        body: body.trim_end().as_bytes().to_vec(),
    }
}

/// moby's texts.
const SERVICE_NOPE_NOT_FOUND: &str = "service nope not found";
const ALREADY_IN_A_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm \
                                  leave\" to leave this swarm and join another one.";

/// The bodies the recordings were made with.
const SERVICE_BODY: &str = r#"{"Name":"rec-web","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"shoal-test/busybox:latest","Args":["sleep","1d"],"Init":false,"DNSConfig":{}},"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8089,"PublishMode":"ingress"}]}}"#;
const JOB_BODY: &str = r#"{"Name":"rec-job","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"shoal-test/busybox:latest","Args":["true"]}},"Mode":{"ReplicatedJob":{}}}"#;
const SECRET_BODY: &str = r#"{"Name":"rec-s1","Labels":{},"Data":"aHVudGVyMg=="}"#;
const CONFIG_BODY: &str = r#"{"Name":"rec-c1","Labels":{},"Data":"bGlzdGVuIDgw"}"#;
/// The docker CLI's `network create -d overlay rec-net1` (engine-api.md §6).
const NETWORK_BODY: &str = r#"{"Driver":"overlay","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{},"Name":"rec-net1"}"#;

/// `filters={"service":{"rec-web":true}}`, URL-encoded.
const TASKS_OF_REC_WEB: &str =
    "/v1.41/tasks?filters=%7B%22service%22%3A%7B%22rec-web%22%3Atrue%7D%7D";

/// `method path body` on `socket`: asserts the status and moby's headers, returns the JSON.
fn call(socket: &Path, method: &str, path: &str, body: Option<&str>, status: u16) -> Value {
    let answer = request(socket, method, path, body);
    assert_eq!(
        answer.status,
        status,
        "{method} {path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{method} {path}"
    );
    assert!(
        answer.header("api-version").is_some(),
        "{method} {path}: no Api-Version"
    );
    assert_eq!(answer.header("ostype"), Some("linux"), "{method} {path}");
    answer.json()
}

/// Shoal's answer to the request recorded in `file`: the same status, `Content-Type`, message
/// and headers `Api-Version`/`Ostype` (present; the version itself differs).
fn same_error(file: &str, answer: &Exchange) {
    let docker = recorded_raw(file);
    assert_eq!(answer.status, docker.status, "{file}");
    assert_eq!(
        answer.header("content-type"),
        docker.header("content-type"),
        "{file}"
    );
    for header in ["api-version", "ostype"] {
        assert!(docker.header(header).is_some(), "{file}: recorded {header}");
        assert!(answer.header(header).is_some(), "{file}: no {header}");
    }
    assert_eq!(answer.header("ostype"), docker.header("ostype"), "{file}");
    let docker_json: Value = serde_json::from_slice(&docker.body).unwrap();
    assert_eq!(answer.json(), docker_json, "{file}");
}

/// Waits until `f` returns a value, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shapes_match_docker_20_10_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let node = Manager::start(
        dir.path(),
        "rec",
        &["--hostname", "rec", "--executor", "sim"],
    );
    let socket = engine_socket(&node.state_dir);
    support::wait_for_path(&socket, Duration::from_secs(20));
    let mut report = Report::default();

    // `docker swarm init --advertise-addr …`, as the CLI sends it.
    let init = format!(
        r#"{{"ListenAddr":"{addr}","AdvertiseAddr":"{addr}","DataPathAddr":"","DataPathPort":0,"ForceNewCluster":false,"Spec":{{"Labels":null,"Orchestration":{{}},"Raft":{{"ElectionTick":0,"HeartbeatTick":0}},"Dispatcher":{{}},"CAConfig":{{}},"TaskDefaults":{{}},"EncryptionConfig":{{"AutoLockManagers":false}}}},"AutoLockManagers":false,"Availability":"","DefaultAddrPool":[],"SubnetSize":24}}"#,
        addr = node.addr
    );
    let node_id = call(&socket, "POST", "/v1.41/swarm/init", Some(&init), 200);
    let node_id = node_id.as_str().expect("a node ID").to_string();

    report.compare(
        "swarm.json",
        &call(&socket, "GET", "/v1.41/swarm", None, 200),
    );
    report.compare("info.json", &call(&socket, "GET", "/v1.41/info", None, 200));
    report.compare(
        "version.json",
        &call(&socket, "GET", "/v1.41/version", None, 200),
    );
    // The node once its agent has reported its description (as in the recording).
    let node_path = format!("/v1.41/nodes/{node_id}");
    let self_node = wait_for("the node to be ready", Duration::from_secs(20), || {
        let n = call(&socket, "GET", &node_path, None, 200);
        (n["Status"]["State"] == "ready").then_some(n)
    });
    report.compare("node.json", &self_node);

    // A replicated service with a published port, once its task runs.
    let created = call(
        &socket,
        "POST",
        "/v1.41/services/create",
        Some(SERVICE_BODY),
        201,
    );
    assert!(created["ID"].is_string(), "{created}");
    let tasks = wait_for("rec-web's task to run", Duration::from_secs(20), || {
        let tasks = call(&socket, "GET", TASKS_OF_REC_WEB, None, 200);
        let running = tasks
            .as_array()
            .is_some_and(|t| t.len() == 1 && t[0]["Status"]["State"] == "running");
        running.then_some(tasks)
    });
    report.compare("tasks.json", &tasks);
    report.compare(
        "service.json",
        &call(
            &socket,
            "GET",
            "/v1.41/services/rec-web?insertDefaults=false",
            None,
            200,
        ),
    );
    report.compare(
        "service_defaults.json",
        &call(
            &socket,
            "GET",
            "/v1.41/services/rec-web?insertDefaults=true",
            None,
            200,
        ),
    );
    report.compare(
        "services_status.json",
        &call(&socket, "GET", "/v1.41/services?status=true", None, 200),
    );

    // A replicated job.
    call(
        &socket,
        "POST",
        "/v1.41/services/create",
        Some(JOB_BODY),
        201,
    );
    report.compare(
        "service_job.json",
        &call(&socket, "GET", "/v1.41/services/rec-job", None, 200),
    );

    // A secret, a config, an overlay network.
    call(
        &socket,
        "POST",
        "/v1.41/secrets/create",
        Some(SECRET_BODY),
        201,
    );
    report.compare(
        "secret.json",
        &call(&socket, "GET", "/v1.41/secrets/rec-s1", None, 200),
    );
    call(
        &socket,
        "POST",
        "/v1.41/configs/create",
        Some(CONFIG_BODY),
        201,
    );
    report.compare(
        "config.json",
        &call(&socket, "GET", "/v1.41/configs/rec-c1", None, 200),
    );
    call(
        &socket,
        "POST",
        "/v1.41/networks/create",
        Some(NETWORK_BODY),
        201,
    );
    report.compare(
        "network.json",
        &call(
            &socket,
            "GET",
            "/v1.41/networks/rec-net1?scope=swarm",
            None,
            200,
        ),
    );

    // moby's errors, exactly.
    same_error(
        "err404.txt",
        &request(&socket, "GET", "/v1.41/services/nope", None),
    );
    assert_eq!(
        recorded_raw("err404.txt").json()["message"],
        SERVICE_NOPE_NOT_FOUND
    );
    same_error(
        "err503.txt",
        &request(&socket, "POST", "/v1.41/swarm/init", Some(&init)),
    );
    assert_eq!(
        recorded_raw("err503.txt").json()["message"],
        ALREADY_IN_A_SWARM
    );

    report.finish();
}

/// The comparison itself: paths, merged arrays and maps, types, the allowlist's prefixes.
#[test]
fn shapes_are_paths_and_types() {
    let v = serde_json::json!({
        "A": {"B": [1, 2], "Labels": {"x": "1", "y": "2"}},
        "C": [{"D": true}, {"E": null}],
        "F": []
    });
    let paths: Vec<String> = shape_of(&v)
        .into_iter()
        .map(|(p, k)| format!("{p}:{k}"))
        .collect();
    assert_eq!(
        paths,
        [
            "(root):object",
            "A:object",
            "A.B:array",
            "A.B[]:number",
            "A.Labels:object",
            "A.Labels{}:string",
            "C:array",
            "C[]:object",
            "C[].D:bool",
            "C[].E:null",
            "F:array",
        ]
    );
    assert!(covers("A", "A.B[]"));
    assert!(covers("A.Labels", "A.Labels{}"));
    assert!(!covers("A.B", "A.Bc"));
}
