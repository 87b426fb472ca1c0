//! `shoal secret ...`, `shoal config ...`, `shoal task ...` and `shoal node ps` as users run
//! them: the `shoal` binary talking to a real manager over its control socket.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_api::shared::TaskSpecFields;
use shoal_api::v1::{
    Annotations, ConfigReference, CreateServiceRequest, FileTarget, ProcessSpec, RemoveTaskRequest,
    ReplicatedService, SecretReference, ServiceSpec, TaskSpec, service_spec, task_spec,
};
use support::cli::{Run, shoal, shoal_with_input};

/// A manager that created a cluster (and config "one") and runs tasks with the sim executor.
async fn manager(dir: &Path) -> (support::Manager, PathBuf) {
    let m = support::Manager::start(dir, "m1", &["--init", "--executor", "sim"]);
    let addr = m.addr.clone();
    support::eventually("m1 to lead", Duration::from_secs(20), async || {
        support::create_config(std::slice::from_ref(&addr), "one")
            .await
            .ok()
    })
    .await;
    let socket = m.state_dir.join("control.sock");
    (m, socket)
}

/// Every output of a run, kept so that the test can check that a secret shows in none.
#[derive(Default)]
struct Seen(String);

impl Seen {
    fn ok(&mut self, run: Run) -> String {
        self.0.push_str(&run.stdout);
        self.0.push_str(&run.stderr);
        run.ok()
    }

    fn failed(&mut self, run: Run) -> String {
        self.0.push_str(&run.stdout);
        self.0.push_str(&run.stderr);
        run.failed()
    }
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Table rows (the header checked and left out), split into columns.
fn rows(out: &str, first_header: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with(first_header), "{out}");
    lines
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// A replicated service of `replicas` sim tasks using the secret and config with these IDs,
/// created through the Control API (the command line has no `--secret`/`--config` yet).
async fn create_service(
    addr: &str,
    name: &str,
    replicas: u64,
    secret: Option<&str>,
    config: Option<&str>,
) -> String {
    let process = ProcessSpec {
        command: "sleep".into(),
        args: vec!["1000".into()],
        secrets: secret
            .map(|id| SecretReference {
                secret_id: id.into(),
                secret_name: "db-password".into(),
                file: Some(FileTarget {
                    name: "db-password".into(),
                    uid: "0".into(),
                    gid: "0".into(),
                    mode: 0o400,
                }),
            })
            .into_iter()
            .collect(),
        configs: config
            .map(|id| ConfigReference {
                config_id: id.into(),
                config_name: "app.conf".into(),
                file: None,
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let spec = ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: vec![],
        }),
        task: Some(TaskSpec::from(TaskSpecFields {
            runtime: Some(task_spec::Runtime::Process(Box::new(process))),
            ..Default::default()
        })),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas,
        })),
        ..Default::default()
    };
    let mut control = support::client(addr).await.expect("a Control API client");
    let service = control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .expect("create the service")
        .into_inner()
        .service
        .unwrap();
    service.meta.unwrap().id
}

/// Retries `rm` until it succeeds (a config stays in use until the tasks of a removed service
/// are gone); every refusal must contain `refusal`.
fn rm_eventually(socket: &Path, kind: &str, name: &str, refusal: &str) -> String {
    let start = Instant::now();
    loop {
        let run = shoal(socket, &[kind, "rm", name]);
        if run.code == Some(0) {
            return run.stdout;
        }
        let e = run.failed();
        assert!(e.contains(refusal), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{kind} {name} still not removable: {e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_created_listed_inspected_and_removed_never_showing_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let (m, socket) = manager(dir.path()).await;
    let mut seen = Seen::default();
    const FROM_FILE: &str = "s3cr3t-from-a-file-7f1d";
    const FROM_STDIN: &str = "s3cr3t-from-stdin-9a2c";

    // From a file, with labels; from standard input.
    let file = dir.path().join("password.txt");
    std::fs::write(&file, FROM_FILE).unwrap();
    let db = seen
        .ok(shoal(
            &socket,
            &[
                "secret",
                "create",
                "--label",
                "tier=db",
                "-l",
                "env=prod",
                "db-password",
                file.to_str().unwrap(),
            ],
        ))
        .trim()
        .to_string();
    assert_eq!(db.len(), 25, "{db}");
    let api = seen
        .ok(shoal_with_input(
            &socket,
            &["secret", "create", "api.key", "-"],
            FROM_STDIN.as_bytes(),
        ))
        .trim()
        .to_string();
    assert_eq!(api.len(), 25, "{api}");

    // Refusals: a taken name (whatever its case), no data, a missing file, a bad name.
    let e = seen.failed(shoal_with_input(
        &socket,
        &["secret", "create", "DB-PASSWORD", "-"],
        b"other",
    ));
    assert!(
        e.contains("secret name DB-PASSWORD is already in use"),
        "{e}"
    );
    let e = seen.failed(shoal_with_input(
        &socket,
        &["secret", "create", "empty", "-"],
        b"",
    ));
    assert!(e.contains("the secret is empty"), "{e}");
    let e = seen.failed(shoal(
        &socket,
        &["secret", "create", "missing", "/nonexistent/file"],
    ));
    assert!(
        e.contains("reading the secret from /nonexistent/file"),
        "{e}"
    );
    assert!(e.contains("or - to read standard input"), "{e}");
    let e = seen.failed(shoal_with_input(
        &socket,
        &["secret", "create", "bad name", "-"],
        b"x",
    ));
    assert!(e.contains("spec.annotations.name"), "{e}");

    // ls: a table sorted by name, IDs alone, JSON lines.
    let out = seen.ok(shoal(&socket, &["secret", "ls"]));
    let table = rows(&out, "ID");
    assert!(out.lines().next().unwrap().contains("NAME"), "{out}");
    assert!(out.lines().next().unwrap().contains("CREATED"), "{out}");
    assert!(out.lines().next().unwrap().contains("UPDATED"), "{out}");
    assert_eq!(table.len(), 2, "{out}");
    assert_eq!(table[0][0], &api[..12]);
    assert_eq!(table[0][1], "api.key");
    assert!(table[0][2].ends_with(" ago"), "{out}");
    assert_eq!(table[1][1], "db-password");
    assert_eq!(
        seen.ok(shoal(&socket, &["secret", "ls", "-q"])),
        format!("{api}\n{db}\n")
    );
    let json = json_lines(&seen.ok(shoal(&socket, &["secret", "ls", "--format", "json"])));
    assert_eq!(json.len(), 2);
    assert_eq!(json[1]["ID"], db.as_str());
    assert_eq!(json[1]["Name"], "db-password");
    assert_eq!(json[1]["Labels"]["tier"], "db");

    // inspect: by name, ID and prefix; a JSON array; no data.
    let out = seen.ok(shoal(
        &socket,
        &["secret", "inspect", "db-password", &api, &api[..7]],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3, "{out}");
    assert_eq!(items[0]["ID"], db.as_str());
    assert_eq!(items[0]["Spec"]["Name"], "db-password");
    assert_eq!(items[0]["Spec"]["Labels"]["env"], "prod");
    assert!(items[0]["Version"]["Index"].as_u64().unwrap() > 0);
    assert!(items[0]["CreatedAt"].is_string());
    assert_eq!(items[1]["ID"], api.as_str());
    assert_eq!(items[2]["ID"], api.as_str());
    assert!(items[0]["Spec"].get("Data").is_none(), "{out}");
    // One found, one not: the found one printed, the error after.
    let run = shoal(&socket, &["secret", "inspect", "api.key", "nope"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains(&api), "{}", run.stdout);
    assert!(
        run.stderr.contains("no such secret: nope"),
        "{}",
        run.stderr
    );
    seen.0.push_str(&run.stdout);

    // A secret a service uses is not removed; the refusal names the service.
    create_service(&m.addr, "web", 1, Some(&db), None).await;
    let e = seen.failed(shoal(&socket, &["secret", "rm", "db-password"]));
    assert!(
        e.contains("secret db-password is in use by service web"),
        "{e}"
    );
    assert!(
        seen.ok(shoal(&socket, &["secret", "ls", "-q"]))
            .contains(&db)
    );
    seen.ok(shoal(&socket, &["service", "rm", "web"]));

    // rm by name and by ID prefix: each printed as named; unknown ones are errors.
    assert_eq!(
        seen.ok(shoal(&socket, &["secret", "rm", "db-password", &api[..9]])),
        format!("db-password\n{}\n", &api[..9])
    );
    let e = seen.failed(shoal(&socket, &["secret", "rm", "db-password"]));
    assert!(e.contains("no such secret: db-password"), "{e}");
    assert_eq!(seen.ok(shoal(&socket, &["secret", "ls", "-q"])), "");

    // The secrets' content showed in no output, in no encoding.
    for data in [FROM_FILE, FROM_STDIN] {
        let b64 = base64(data.as_bytes());
        assert!(!seen.0.contains(data), "{data} was printed:\n{}", seen.0);
        assert!(
            !seen.0.contains(&b64[..16]),
            "{data} was printed:\n{}",
            seen.0
        );
    }
    // Nor in the daemon's log.
    assert!(!m.logs().contains(FROM_FILE));
    assert!(!m.logs().contains(FROM_STDIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_created_listed_inspected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (m, socket) = manager(dir.path()).await;

    let file = dir.path().join("app.conf");
    std::fs::write(&file, "listen 80;\n").unwrap();
    let app = shoal(
        &socket,
        &[
            "config",
            "create",
            "--label",
            "app=web",
            "app.conf",
            file.to_str().unwrap(),
        ],
    )
    .ok()
    .trim()
    .to_string();
    assert_eq!(app.len(), 25, "{app}");
    let piped = shoal_with_input(&socket, &["config", "create", "piped", "-"], b"foobar")
        .ok()
        .trim()
        .to_string();

    let e = shoal_with_input(&socket, &["config", "create", "app.conf", "-"], b"x").failed();
    assert!(e.contains("app.conf"), "{e}");
    assert!(e.contains("already"), "{e}");

    // ls: "one" (made by the test's setup), app.conf, piped.
    let out = shoal(&socket, &["config", "ls"]).ok();
    let table = rows(&out, "ID");
    let names: Vec<&str> = table.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["app.conf", "one", "piped"], "{out}");
    assert_eq!(table[0][0], &app[..12]);
    let quiet = shoal(&socket, &["config", "ls", "-q"]).ok();
    assert_eq!(quiet.lines().count(), 3);
    assert!(quiet.starts_with(&format!("{app}\n")), "{quiet}");
    let json = json_lines(&shoal(&socket, &["config", "ls", "--format", "json"]).ok());
    assert_eq!(json[0]["Name"], "app.conf");
    assert_eq!(json[0]["Labels"]["app"], "web");

    // inspect shows the data in base64, as docker does.
    let v: serde_json::Value =
        serde_json::from_str(&shoal(&socket, &["config", "inspect", "piped", &app[..8]]).ok())
            .unwrap();
    assert_eq!(v[0]["ID"], piped.as_str());
    assert_eq!(v[0]["Spec"]["Data"], "Zm9vYmFy");
    assert_eq!(v[1]["Spec"]["Name"], "app.conf");
    assert_eq!(v[1]["Spec"]["Data"], base64(b"listen 80;\n"));

    // A config a service uses is not removed while the service references it, nor until
    // its tasks are gone.
    create_service(&m.addr, "web", 1, None, Some(&app)).await;
    let e = shoal(&socket, &["config", "rm", "app.conf"]).failed();
    assert!(
        e.contains("config app.conf is in use by service web"),
        "{e}"
    );
    shoal(&socket, &["service", "rm", "web"]).ok();
    assert_eq!(
        rm_eventually(&socket, "config", "app.conf", "in use"),
        "app.conf\n"
    );
    assert_eq!(
        shoal(&socket, &["config", "rm", &piped[..10], "one"]).ok(),
        format!("{}\none\n", &piped[..10])
    );
    assert_eq!(shoal(&socket, &["config", "ls", "-q"]).ok(), "");
    let e = shoal(&socket, &["config", "rm", "piped"]).failed();
    assert!(e.contains("no such config: piped"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_and_inspected_by_service_and_node() {
    let dir = tempfile::tempdir().unwrap();
    let (m, socket) = manager(dir.path()).await;
    let web = create_service(&m.addr, "web", 2, None, None).await;
    let api = create_service(&m.addr, "api", 1, None, None).await;

    // Wait for the three tasks to run.
    let start = Instant::now();
    let table = loop {
        let out = shoal(&socket, &["task", "ls"]).ok();
        let table = rows(&out, "ID");
        if table.len() == 3 && table.iter().all(|r| r[5].starts_with("Running")) {
            break table;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let header = shoal(&socket, &["task", "ls"]).ok();
    let header = header.lines().next().unwrap().to_string();
    for column in [
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
    ] {
        assert!(header.contains(column), "{header}");
    }
    // Grouped by service name, then slot.
    let names: Vec<&str> = table.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["api.1", "web.1", "web.2"], "{table:?}");
    assert!(table.iter().all(|r| r[2] == "sleep 1000"), "{table:?}");
    assert!(table.iter().all(|r| r[4] == "Running"), "{table:?}");

    // The node is the only one: its hostname in the NODE column, its ID for node ps.
    let node_id = shoal(&socket, &["node", "ls", "-q"])
        .ok()
        .trim()
        .to_string();
    let node: serde_json::Value =
        serde_json::from_str(&shoal(&socket, &["node", "inspect", &node_id]).ok()).unwrap();
    let hostname = node[0]["Description"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(table.iter().all(|r| r[3] == hostname), "{table:?}");

    // --service, by name or ID prefix; -q; JSON.
    let quiet = shoal(&socket, &["task", "ls", "-q", "--service", "web"]).ok();
    let web_tasks: Vec<&str> = quiet.lines().collect();
    assert_eq!(web_tasks.len(), 2, "{quiet}");
    assert!(web_tasks.iter().all(|t| t.len() == 25), "{quiet}");
    assert_eq!(
        shoal(&socket, &["task", "ls", "-q", "--service", &api[..8]])
            .ok()
            .lines()
            .count(),
        1
    );
    let json = json_lines(
        &shoal(
            &socket,
            &["task", "ls", "--service", "web", "--format", "json"],
        )
        .ok(),
    );
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["Name"], "web.1");
    assert_eq!(json[0]["Node"], hostname.as_str());
    assert_eq!(json[0]["DesiredState"], "Running");
    let e = shoal(&socket, &["task", "ls", "--service", "nope"]).failed();
    assert!(e.contains("no such service: nope"), "{e}");

    // --node, by hostname or `self`.
    assert_eq!(
        shoal(&socket, &["task", "ls", "-q", "--node", &hostname])
            .ok()
            .lines()
            .count(),
        3
    );
    assert_eq!(
        shoal(
            &socket,
            &["task", "ls", "-q", "--node", "self", "--service", "web"]
        )
        .ok()
        .lines()
        .count(),
        2
    );
    let e = shoal(&socket, &["task", "ls", "--node", "nope"]).failed();
    assert!(e.contains("no such node: nope"), "{e}");

    // inspect: by ID, by prefix; a JSON array.
    let out = shoal(
        &socket,
        &["task", "inspect", web_tasks[0], &web_tasks[1][..10]],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{out}");
    assert_eq!(v[0]["ID"], web_tasks[0]);
    assert_eq!(v[1]["ID"], web_tasks[1]);
    assert_eq!(v[0]["ServiceID"], web.as_str());
    assert_eq!(v[0]["NodeID"], node_id.as_str());
    assert_eq!(v[0]["DesiredState"], "running");
    assert_eq!(v[0]["Status"]["State"], "running");
    assert_eq!(v[0]["Spec"]["ProcessSpec"]["Command"], "sleep");
    let e = shoal(&socket, &["task", "inspect", "nope"]).failed();
    assert!(e.contains("no such task: nope"), "{e}");

    // node ps: the local node by default, or named.
    let out = shoal(&socket, &["node", "ps"]).ok();
    let local = rows(&out, "ID");
    assert_eq!(local.len(), 3, "{out}");
    assert_eq!(local[1][1], "web.1");
    assert_eq!(
        shoal(&socket, &["node", "ps", "-q", &node_id[..6]])
            .ok()
            .lines()
            .count(),
        3
    );
    assert_eq!(
        shoal(&socket, &["node", "ps", "-q", &hostname]).ok(),
        shoal(&socket, &["node", "ps", "-q", "self"]).ok()
    );
    let e = shoal(&socket, &["node", "ps", "nope"]).failed();
    assert!(e.contains("no such node: nope"), "{e}");

    // Scaled down, a task stops: `task ls` leaves it out, `-a` and `node ps` show it.
    shoal(&socket, &["service", "scale", "-d", "web=1"]).ok();
    let start = Instant::now();
    loop {
        let current = shoal(&socket, &["task", "ls", "-q", "--service", "web"]).ok();
        if current.lines().count() == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{current}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        shoal(&socket, &["task", "ls", "-a", "-q", "--service", "web"])
            .ok()
            .lines()
            .count(),
        2
    );
    assert_eq!(
        shoal(&socket, &["node", "ps", "-q"]).ok().lines().count(),
        3
    );

    // RemoveTask (no command line, as in docker): the task goes and its service gets a new one.
    let api_task = shoal(&socket, &["task", "ls", "-q", "--service", "api"])
        .ok()
        .trim()
        .to_string();
    let mut control = support::client(&m.addr).await.unwrap();
    control
        .remove_task(RemoveTaskRequest {
            task_id: api_task.clone(),
        })
        .await
        .unwrap();
    let e = control
        .remove_task(RemoveTaskRequest {
            task_id: api_task.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let start = Instant::now();
    loop {
        let now = shoal(&socket, &["task", "ls", "-a", "-q", "--service", "api"]).ok();
        if now.lines().count() == 1 && !now.contains(&api_task) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{now}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
