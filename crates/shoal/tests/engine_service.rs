//! The real `docker` CLI drives services through a manager's Engine API socket: create (and
//! its wait for convergence), ls, ps, inspect (and `--pretty`), scale, update, rollback, rm,
//! a global service and a replicated job on a cluster of sim executors; logs of host-process
//! tasks on a process-executor cluster (the sim executor prints nothing); and raw requests
//! with bad input, each refused with Docker's status code and changing nothing. The state
//! each command leaves is checked with `shoal service inspect` and `service ps`.

mod support;

use serde_json::{Value, json};
use support::cli::Run;
use support::cluster::Cluster;
use support::engine::{Exchange, docker, docker_cli, request};

fn sim_cluster() -> Cluster {
    Cluster::start_with(&["w1"], &["--executor", "sim"])
}

/// The last non-empty line of `out`.
fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn ok(run: Run, what: &str) -> String {
    assert_eq!(
        run.code,
        Some(0),
        "{what}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

fn replicas(cluster: &Cluster, service: &str) -> u64 {
    cluster.inspect(service)["Spec"]["Mode"]["Replicated"]["Replicas"]
        .as_u64()
        .unwrap_or_else(|| panic!("{service} is not replicated: {}", cluster.inspect(service)))
}

fn image(cluster: &Cluster, service: &str) -> String {
    cluster.inspect(service)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn get(socket: &std::path::Path, path: &str) -> Exchange {
    request(socket, "GET", path, None)
}

#[test]
fn the_docker_cli_creates_scales_updates_rolls_back_and_removes_a_service() {
    if !docker_cli() {
        return;
    }
    let cluster = sim_cluster();
    let socket = cluster.engine_socket_of("m1");

    // create waits for convergence, polling by ID.
    let out = ok(
        docker(
            &socket,
            &[
                "service",
                "create",
                "--name",
                "web",
                "--replicas",
                "3",
                "busybox:latest",
                "sleep",
                "1d",
            ],
        ),
        "service create",
    );
    let id = out.lines().next().unwrap().trim().to_string();
    assert_eq!(id.len(), 25, "the first line is the ID: {out}");
    assert_eq!(
        last_line(&out),
        format!("verify: Service {id} converged"),
        "{out}"
    );
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert_eq!(replicas(&cluster, "web"), 3);
    assert_eq!(image(&cluster, "web"), "busybox:latest");

    // ls shows the counts from ServiceStatus.
    let ls = ok(docker(&socket, &["service", "ls"]), "service ls");
    let row = ls
        .lines()
        .find(|l| l.contains(" web "))
        .unwrap_or_else(|| panic!("{ls}"));
    for column in [&id[..12], "replicated", "3/3", "busybox:latest"] {
        assert!(row.contains(column), "{column} in {row}");
    }

    // ps: one running task per slot, named as docker names them.
    let ps = ok(docker(&socket, &["service", "ps", "web"]), "service ps");
    for slot in 1..=3 {
        let row = ps
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(format!("web.{slot}").as_str()))
            .unwrap_or_else(|| panic!("web.{slot} in {ps}"));
        assert!(row.contains("Running"), "{row}");
        assert!(row.contains("busybox:latest"), "{row}");
    }
    assert_eq!(cluster.ps("web").iter().filter(|t| t.running()).count(), 3);

    // inspect: Docker's shape, with defaults inserted.
    let inspected: Value = serde_json::from_str(&ok(
        docker(&socket, &["service", "inspect", "web"]),
        "inspect",
    ))
    .unwrap();
    let service = &inspected[0];
    assert_eq!(service["ID"], id.as_str());
    assert_eq!(service["Spec"]["Name"], "web");
    assert_eq!(
        service["Spec"]["Mode"],
        json!({"Replicated": {"Replicas": 3}})
    );
    assert_eq!(
        service["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"],
        json!(["sleep", "1d"])
    );
    assert_eq!(service["Spec"]["UpdateConfig"]["Order"], "stop-first");
    assert!(service.get("ServiceStatus").is_none());
    let pretty = ok(
        docker(&socket, &["service", "inspect", "--pretty", "web"]),
        "inspect --pretty",
    );
    assert!(pretty.contains("Name:\t\tweb"), "{pretty}");
    assert!(pretty.contains("Replicas:\t3"), "{pretty}");
    assert!(pretty.contains("Image:\t\tbusybox:latest"), "{pretty}");

    // scale polls by name.
    let out = ok(docker(&socket, &["service", "scale", "web=5"]), "scale");
    assert_eq!(last_line(&out), "verify: Service web converged", "{out}");
    assert_eq!(replicas(&cluster, "web"), 5);
    assert_eq!(cluster.ps("web").iter().filter(|t| t.running()).count(), 5);

    // update rolls the tasks over one by one.
    let out = ok(
        docker(
            &socket,
            &["service", "update", "--image", "busybox:1.36", "web"],
        ),
        "update",
    );
    assert_eq!(last_line(&out), "verify: Service web converged", "{out}");
    assert!(out.contains("overall progress: 5 out of 5 tasks"), "{out}");
    assert_eq!(image(&cluster, "web"), "busybox:1.36");
    let tasks = cluster.ps("web");
    assert_eq!(tasks.iter().filter(|t| t.running()).count(), 5, "{tasks:?}");
    assert_eq!(tasks.iter().filter(|t| t.history).count(), 5, "{tasks:?}");
    let status = &cluster.inspect("web")["UpdateStatus"];
    assert!(
        status.to_string().to_lowercase().contains("complete"),
        "the update completed: {status}"
    );

    // rollback is the Control API's rollback.
    let out = ok(docker(&socket, &["service", "rollback", "web"]), "rollback");
    assert!(
        out.contains("rollback: manually requested rollback"),
        "{out}"
    );
    assert_eq!(last_line(&out), "verify: Service web converged", "{out}");
    assert_eq!(image(&cluster, "web"), "busybox:latest");
    let inspected: Value = serde_json::from_str(&ok(
        docker(&socket, &["service", "inspect", "web"]),
        "inspect after rollback",
    ))
    .unwrap();
    assert_eq!(
        inspected[0]["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "busybox:1.36"
    );

    // rm; then the service is gone for both fronts.
    let out = ok(docker(&socket, &["service", "rm", "web"]), "rm");
    assert_eq!(out.trim(), "web");
    assert!(cluster.shoal(&["service", "inspect", "web"]).code != Some(0));
    let run = docker(&socket, &["service", "inspect", "web"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("web"), "{}", run.stderr);
}

#[test]
fn the_docker_cli_runs_global_services_and_replicated_jobs() {
    if !docker_cli() {
        return;
    }
    let cluster = sim_cluster();
    let socket = cluster.engine_socket_of("m1");

    // A global service: one task per node.
    let out = ok(
        docker(
            &socket,
            &[
                "service",
                "create",
                "--name",
                "everywhere",
                "--mode",
                "global",
                "busybox",
                "sleep",
                "1d",
            ],
        ),
        "create global",
    );
    assert!(last_line(&out).ends_with("converged"), "{out}");
    let ls = ok(docker(&socket, &["service", "ls"]), "service ls");
    let row = ls
        .lines()
        .find(|l| l.contains("everywhere"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("global") && row.contains("2/2"), "{row}");
    let tasks = cluster.ps("everywhere");
    let mut nodes: Vec<&str> = tasks
        .iter()
        .filter(|t| t.running())
        .map(|t| t.node.as_str())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["m1", "w1"]);

    // A replicated job (sim tasks never end on their own, so it is created detached).
    let out = ok(
        docker(
            &socket,
            &[
                "service",
                "create",
                "-d",
                "--name",
                "batch",
                "--mode",
                "replicated-job",
                "--replicas",
                "2",
                "busybox",
                "true",
            ],
        ),
        "create job",
    );
    let job_id = out.trim().to_string();
    let inspected = cluster.inspect("batch");
    assert_eq!(
        inspected["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"],
        json!(2),
        "{inspected}"
    );
    cluster.wait("the job's two tasks to run", &["batch"], |c| {
        (c.ps("batch").iter().filter(|t| t.running()).count() == 2).then_some(())
    });
    // The CLI dereferences JobStatus and MaxConcurrent/TotalCompletions: ls must not fail.
    let ls = ok(docker(&socket, &["service", "ls"]), "service ls with a job");
    let row = ls
        .lines()
        .find(|l| l.contains("batch"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("replicated job"), "{row}");
    assert!(row.contains("(0/2 completed)"), "{row}");
    let engine = get(&socket, &format!("/v1.50/services/{job_id}"));
    assert_eq!(engine.status, 200);
    let service = engine.json();
    // The first iteration: moby omits `Index` 0.
    assert_eq!(service["JobStatus"]["JobIteration"], json!({}));
    // Job slots count from 0; the tasks show their iteration and that they are meant to end.
    let tasks = get(
        &socket,
        &format!(
            "/v1.50/tasks?filters={}",
            urlencode(&json!({"service": [job_id]}).to_string())
        ),
    )
    .json();
    let mut slots: Vec<u64> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["Slot"].as_u64().unwrap_or(0))
        .collect();
    slots.sort();
    assert_eq!(slots, [0, 1], "{tasks}");
    for task in tasks.as_array().unwrap() {
        assert_eq!(task["JobIteration"], json!({}), "{task}");
        assert_eq!(task["DesiredState"], "complete", "{task}");
    }
    let meant_to_complete = get(
        &socket,
        &format!(
            "/v1.50/tasks?filters={}",
            urlencode(&json!({"service": [job_id], "desired-state": ["complete"]}).to_string())
        ),
    )
    .json();
    assert_eq!(meant_to_complete.as_array().unwrap().len(), 2);
    let ps = ok(
        docker(&socket, &["service", "ps", "batch"]),
        "service ps job",
    );
    assert_eq!(ps.lines().count(), 3, "a header and two tasks: {ps}");
}

/// Sends `GET path` and reads until `until` arrives (at most 30 s), then hangs up.
fn follow_until(socket: &std::path::Path, path: &str, until: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: api.moby.localhost\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(until.len()).any(|w| w == until) {
        let n = stream
            .read(&mut buf)
            .expect("the stream sends what was logged");
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Splits Docker's multiplexed stream into (stream, line) frames.
fn frames(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while body.len() >= 8 {
        let len = u32::from_be_bytes([body[4], body[5], body[6], body[7]]) as usize;
        assert_eq!(&body[1..4], &[0, 0, 0], "a frame header");
        out.push((
            body[0],
            String::from_utf8_lossy(&body[8..8 + len]).into_owned(),
        ));
        body = &body[8 + len..];
    }
    assert!(body.is_empty(), "a partial frame is left: {body:?}");
    out
}

#[test]
fn service_and_task_logs_stream_as_docker_does() {
    if !docker_cli() {
        return;
    }
    // Host processes (the sim executor prints nothing).
    let cluster = Cluster::start(&[]);
    let socket = cluster.engine_socket_of("m1");
    cluster
        .create_command_service(
            "talk",
            &["--replicas", "2"],
            &["sh", "-c", "echo hello; echo oops >&2; sleep 1000"],
        )
        .ok();
    let service_id = cluster.inspect("talk")["ID"].as_str().unwrap().to_string();
    // Wait until both tasks said both lines.
    let body = cluster.wait("both tasks' output", &["talk"], |_| {
        let logs = get(
            &socket,
            "/v1.50/services/talk/logs?stdout=1&stderr=1&details=1&timestamps=1&tail=all",
        );
        assert_eq!(logs.status, 200);
        assert_eq!(
            logs.header("content-type"),
            Some("application/vnd.docker.multiplexed-stream")
        );
        let frames = frames(&logs.body);
        (frames.len() == 4).then_some(frames)
    });
    for (stream, line) in &body {
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), "2006-01-02T15:04:05.000000000Z".len(), "{line}");
        let (details, text) = rest.split_once(' ').unwrap();
        let keys: Vec<&str> = details
            .split(',')
            .map(|kv| kv.split_once('=').unwrap().0)
            .collect();
        assert_eq!(
            keys,
            [
                "com.docker.swarm.node.id",
                "com.docker.swarm.service.id",
                "com.docker.swarm.task.id"
            ]
        );
        assert!(details.contains(&format!("com.docker.swarm.service.id={service_id}")));
        match stream {
            1 => assert_eq!(text, "hello\n"),
            2 => assert_eq!(text, "oops\n"),
            other => panic!("stream {other}"),
        }
    }
    // docker-py's spelling: stdout only, no details.
    let logs = get(
        &socket,
        &format!(
            "/v1.50/services/{service_id}/logs?details=False&follow=False&stdout=True&stderr=False&since=0&timestamps=False&tail=all"
        ),
    );
    assert_eq!(
        frames(&logs.body),
        vec![(1, "hello\n".to_string()), (1, "hello\n".to_string())]
    );
    // One task's logs, its last line only.
    let task = cluster.ps("talk")[0].id.clone();
    let logs = get(
        &socket,
        &format!("/v1.50/tasks/{task}/logs?stdout=1&stderr=1&tail=1"),
    );
    assert_eq!(frames(&logs.body).len(), 1, "{:?}", frames(&logs.body));
    // Following: the lines so far arrive at once; the stream ends when the client leaves,
    // and the daemon goes on answering.
    let head = follow_until(
        &socket,
        "/v1.50/services/talk/logs?stdout=1&follow=1",
        b"hello\n",
    );
    assert!(head.windows(6).any(|w| w == b"hello\n"));
    assert_eq!(get(&socket, "/v1.50/services/talk").status, 200);
    // No stream asked for; unknown services and tasks.
    let e = get(&socket, "/v1.50/services/talk/logs");
    assert_eq!(e.status, 400);
    assert!(
        e.json()["message"]
            .as_str()
            .unwrap()
            .contains("at least one stream")
    );
    assert_eq!(
        get(&socket, "/v1.50/services/nope/logs?stdout=1").status,
        404
    );
    assert_eq!(get(&socket, "/v1.50/tasks/nope/logs?stdout=1").status, 404);

    // The docker CLI: each line prefixed with its task and node.
    let run = docker(&socket, &["service", "logs", "talk"]);
    assert_eq!(run.code, Some(0), "service logs: {}", run.stderr);
    let out = run.stdout.clone();
    assert_eq!(
        out.lines().filter(|l| l.ends_with("| hello")).count(),
        2,
        "{out}"
    );
    assert!(
        out.lines()
            .all(|l| l.starts_with("talk.") && l.contains("@m1")),
        "{out}"
    );
    assert_eq!(
        run.stderr.lines().filter(|l| l.ends_with("| oops")).count(),
        2,
        "{}",
        run.stderr
    );
    let run = docker(&socket, &["service", "logs", "nope"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("no such task or service: nope"),
        "{}",
        run.stderr
    );
    // The CLI's view of a host-process service: no image, the process as a container spec.
    let inspected: Value = serde_json::from_str(&ok(
        docker(&socket, &["service", "inspect", "talk"]),
        "inspect",
    ))
    .unwrap();
    assert!(
        inspected[0]["Spec"]["TaskTemplate"]
            .get("Runtime")
            .is_none()
    );
    assert!(
        inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
            .get("Image")
            .is_none()
    );
    assert_eq!(
        inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Command"],
        json!(["sh"])
    );
    // Scaling it through the CLI keeps it a host-process service.
    let out = ok(docker(&socket, &["service", "scale", "talk=3"]), "scale");
    assert_eq!(last_line(&out), "verify: Service talk converged", "{out}");
    assert_eq!(
        cluster.inspect("talk")["Spec"]["TaskTemplate"]["ProcessSpec"]["Command"],
        "sh"
    );
    assert_eq!(replicas(&cluster, "talk"), 3);
}

const CREATE: &str = r#"{"Name":"api","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest","Init":false,"DNSConfig":{}},
     "Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip"}}"#;

#[test]
fn bad_requests_are_refused_as_docker_refuses_them_and_change_nothing() {
    if !docker_cli() {
        return;
    }
    let cluster = Cluster::start_with(&[], &["--executor", "sim"]);
    let socket = cluster.engine_socket_of("m1");
    let created = request(&socket, "POST", "/v1.50/services/create", Some(CREATE));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["ID"].as_str().unwrap().to_string();
    assert_eq!(created.json()["Warnings"], Value::Null);
    let before = get(&socket, &format!("/v1.50/services/{id}")).json();
    assert_eq!(
        before["Spec"]["Mode"],
        json!({"Replicated": {"Replicas": 1}})
    );
    let index = before["Version"]["Index"].as_u64().unwrap();
    let services = || get(&socket, "/v1.50/services").json();
    let count = services().as_array().unwrap().len();
    let message = |e: &Exchange| e.json()["message"].as_str().unwrap_or_default().to_string();

    // Creates that are refused.
    for (body, status, words) in [
        ("{", 400, "invalid JSON"),
        (r#"{"Name":3}"#, 400, "invalid JSON"),
        (
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"Sometimes":{}}}"#,
            400,
            "unknown service mode",
        ),
        (
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"Replicated":{"Replicas":-1}}}"#,
            400,
            "Mode.Replicated.Replicas",
        ),
        (
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{}}}"#,
            400,
            "image",
        ),
        (CREATE, 409, "api"),
    ] {
        let e = request(&socket, "POST", "/v1.50/services/create", Some(body));
        assert_eq!(
            e.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&e.body)
        );
        assert_eq!(e.header("content-type"), Some("application/json"));
        assert!(message(&e).contains(words), "{body}: {}", message(&e));
    }
    assert_eq!(services().as_array().unwrap().len(), count);

    // Updates that are refused.
    let spec = before["Spec"].to_string();
    let update = |query: &str, body: &str| {
        request(
            &socket,
            "POST",
            &format!("/v1.50/services/api/update{query}"),
            Some(body),
        )
    };
    let e = update("", &spec);
    assert_eq!(e.status, 400);
    assert!(
        message(&e).contains("invalid service version"),
        "{}",
        message(&e)
    );
    let e = update(&format!("?version={}", index - 1), &spec);
    assert_eq!(e.status, 500);
    assert!(
        message(&e).ends_with("update out of sequence"),
        "{}",
        message(&e)
    );
    let global = spec.replace(r#"{"Replicated":{"Replicas":1}}"#, r#"{"Global":{}}"#);
    assert_ne!(global, spec);
    let e = update(&format!("?version={index}"), &global);
    assert_eq!(e.status, 501, "{}", message(&e));
    let renamed = spec.replace(r#""Name":"api""#, r#""Name":"other""#);
    let e = update(&format!("?version={index}"), &renamed);
    assert_eq!(e.status, 501, "{}", message(&e));
    let e = update(&format!("?version={index}"), "{");
    assert_eq!(e.status, 400);
    let e = update(&format!("?version={index}&rollback=sideways"), &spec);
    assert_eq!(e.status, 400);
    let e = request(
        &socket,
        "POST",
        &format!("/v1.50/services/nope/update?version={index}"),
        Some(&spec),
    );
    assert_eq!(e.status, 404);
    assert_eq!(message(&e), "service nope not found");
    let after = get(&socket, &format!("/v1.50/services/{id}")).json();
    assert_eq!(after, before, "refused updates changed nothing");

    // Unknown and ambiguous references.
    let e = get(&socket, "/v1.50/services/nope");
    assert_eq!(e.status, 404);
    assert_eq!(message(&e), "service nope not found");
    assert_eq!(get(&socket, "/v1.50/tasks/nope").status, 404);
    assert_eq!(
        request(&socket, "DELETE", "/v1.50/services/nope", None).status,
        404
    );
    let e = get(
        &socket,
        "/v1.50/services?filters=%7B%22nme%22%3A%5B%22x%22%5D%7D",
    );
    assert_eq!(e.status, 400);
    let e = get(
        &socket,
        "/v1.50/tasks?filters=%7B%22service%22%3A%5B%22nope%22%5D%7D",
    );
    assert_eq!(e.status, 404);
    // Services until two IDs share their first character.
    let mut ids = vec![id.clone()];
    let shared = loop {
        let name = format!("p{}", ids.len());
        let body = CREATE.replace(r#""Name":"api""#, &format!(r#""Name":"{name}""#));
        let created = request(&socket, "POST", "/v1.50/services/create", Some(&body));
        assert_eq!(created.status, 201);
        let new = created.json()["ID"].as_str().unwrap().to_string();
        if let Some(other) = ids.iter().find(|i| i[..1] == new[..1]) {
            break other[..1].to_string();
        }
        ids.push(new);
    };
    let e = get(&socket, &format!("/v1.50/services/{shared}"));
    assert_eq!(e.status, 400, "{}", message(&e));
    assert!(message(&e).contains("ambiguous"), "{}", message(&e));

    // A good update raises the version; the status shows only when asked for.
    let e = update(
        &format!("?version={index}"),
        &spec.replace(r#""Replicas":1"#, r#""Replicas":2"#),
    );
    assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
    assert_eq!(e.json(), json!({"Warnings": null}));
    let after = get(&socket, "/v1.50/services/api").json();
    assert!(after["Version"]["Index"].as_u64().unwrap() > index);
    assert_eq!(
        after["PreviousSpec"]["Mode"],
        json!({"Replicated": {"Replicas": 1}})
    );
    assert!(
        services()
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("ServiceStatus").is_none())
    );
    let listed = get(
        &socket,
        "/v1.50/services?status=True&filters=%7B%22name%22%3A%5B%22api%22%5D%7D",
    )
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["ServiceStatus"]["DesiredTasks"], json!(2));
    // insertDefaults on and off.
    let plain = get(&socket, "/v1.50/services/api?insertDefaults=false").json();
    assert!(plain["Spec"].get("RollbackConfig").is_none());
    let filled = get(&socket, "/v1.50/services/api?insertDefaults=true").json();
    assert_eq!(filled["Spec"]["RollbackConfig"]["FailureAction"], "pause");
    // The CLI's convergence poll: the up-to-date tasks of the service.
    let tasks = cluster.wait("api's two tasks", &["api"], |_| {
        let tasks = get(
            &socket,
            &format!(
                "/v1.50/tasks?filters={}",
                urlencode(r#"{"_up-to-date":{"true":true},"service":{"api":true}}"#)
            ),
        )
        .json();
        let running = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["Status"]["State"] == "running")
            .count();
        (running == 2).then_some(tasks)
    });
    for task in tasks.as_array().unwrap() {
        assert_eq!(task["ServiceID"], id.as_str());
        assert!(task["Spec"]["ContainerSpec"].is_object());
        let one = get(
            &socket,
            &format!("/v1.50/tasks/{}", task["ID"].as_str().unwrap()),
        );
        assert_eq!(one.json()["ID"], task["ID"]);
    }
    // Filters on mode and runtime.
    let names = |filters: &str| -> Vec<String> {
        let mut names: Vec<String> = get(
            &socket,
            &format!("/v1.50/services?filters={}", urlencode(filters)),
        )
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Spec"]["Name"].as_str().unwrap().to_string())
        .collect();
        names.sort();
        names
    };
    assert_eq!(names(r#"{"mode":["global"]}"#), Vec::<String>::new());
    assert_eq!(names(r#"{"mode":["replicated"],"name":["api"]}"#), ["api"]);
    assert_eq!(
        names(r#"{"runtime":["container"],"name":["api"]}"#),
        ["api"]
    );
    assert_eq!(names(r#"{"runtime":["process"]}"#), Vec::<String>::new());
    assert_eq!(
        get(
            &socket,
            &format!(
                "/v1.50/services?filters={}",
                urlencode(r#"{"mode":["sometimes"]}"#)
            )
        )
        .status,
        400
    );

    // A network named by the client is stored by ID.
    cluster.shoal(&["network", "create", "front"]).ok();
    let network_id = cluster.shoal(&["network", "inspect", "front"]).ok();
    let network_id: Value = serde_json::from_str(&network_id).unwrap();
    let network_id = network_id[0]["Id"].as_str().unwrap().to_string();
    let body = CREATE
        .replace(r#""Name":"api""#, r#""Name":"netted""#)
        .replace(
            r#""ForceUpdate":0"#,
            r#""ForceUpdate":0,"Networks":[{"Target":"front","Aliases":["web"]}]"#,
        );
    let created = request(&socket, "POST", "/v1.50/services/create", Some(&body));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let netted = get(&socket, "/v1.50/services/netted").json();
    assert_eq!(
        netted["Spec"]["TaskTemplate"]["Networks"],
        json!([{"Target": network_id, "Aliases": ["web"]}])
    );
    assert!(
        netted["Endpoint"]["VirtualIPs"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["NetworkID"] == network_id.as_str())),
        "{netted}"
    );

    // Remove.
    assert_eq!(
        request(&socket, "DELETE", "/v1.50/services/api", None).status,
        200
    );
    assert_eq!(get(&socket, "/v1.50/services/api").status, 404);
}
