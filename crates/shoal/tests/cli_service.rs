//! `shoal service ...` as users run it: the `shoal` binary talking to a real manager over its
//! control socket. (Whether tasks get made and run is the orchestrator's business, tested
//! elsewhere: these tests assert only on what the Control API itself keeps.)

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::v1::{GetServiceRequest, UpdateServiceRequest, service_spec, task_spec};
use support::cli::shoal;
use tonic::Code;

/// A manager that created a cluster and runs tasks with the sim executor (so that nothing
/// these tests declare starts real processes once an orchestrator makes tasks).
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

fn inspect(socket: &Path, service: &str) -> serde_json::Value {
    let out = shoal(socket, &["service", "inspect", service]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
    v[0].clone()
}

/// The rows of `service ls` (the header left out).
fn ls_rows(socket: &Path) -> Vec<String> {
    let out = shoal(socket, &["service", "ls"]).ok();
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("NAME") && header.contains("REPLICAS"),
        "{out}"
    );
    lines.map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_created_listed_scaled_updated_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, socket) = manager(dir.path()).await;

    // Create: the ID is printed.
    let id = shoal(
        &socket,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--env",
            "X=1",
            "--limit-memory",
            "64M",
            "--",
            "sleep",
            "1000",
        ],
    )
    .ok()
    .trim()
    .to_string();
    assert_eq!(id.len(), 25, "{id}");

    // Listed, wanting 2 tasks.
    let rows = ls_rows(&socket);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let cols: Vec<&str> = rows[0]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cols[0], &id[..12], "{rows:?}");
    assert_eq!(cols[1], "web");
    assert_eq!(cols[2], "replicated");
    assert!(cols[3].ends_with("/2"), "{rows:?}");
    assert_eq!(cols[4], "sleep 1000");
    assert_eq!(
        shoal(&socket, &["service", "ls", "-q"]).ok(),
        format!("{id}\n")
    );
    let json: serde_json::Value = serde_json::from_str(
        shoal(&socket, &["service", "ls", "--format", "json"])
            .ok()
            .trim(),
    )
    .unwrap();
    assert_eq!(json["ID"], id.as_str());
    assert_eq!(json["Name"], "web");

    // Inspect: the spec, by name or ID prefix.
    let v = inspect(&socket, "web");
    assert_eq!(v["ID"], id.as_str());
    assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    let process = &v["Spec"]["TaskTemplate"]["ProcessSpec"];
    assert_eq!(process["Command"], "sleep");
    assert_eq!(process["Args"][0], "1000");
    assert_eq!(process["Env"][0], "X=1");
    assert_eq!(
        v["Spec"]["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
        64 << 20
    );
    assert_eq!(v["SpecVersion"]["Index"], 1);
    assert_eq!(inspect(&socket, &id[..8])["ID"], id.as_str());

    // Names are unique, whatever their case.
    let e = shoal(
        &socket,
        &[
            "service", "create", "-d", "--name", "WEB", "--", "sleep", "1",
        ],
    )
    .failed();
    assert!(e.contains("service name WEB is already in use"), "{e}");

    // Scale.
    let out = shoal(&socket, &["service", "scale", "-d", "web=3"]).ok();
    assert_eq!(out, "web scaled to 3\n");
    let v = inspect(&socket, "web");
    assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
    assert_eq!(v["SpecVersion"]["Index"], 2);
    assert!(ls_rows(&socket)[0].contains("/3"));

    // Update: a new spec version, the previous spec kept.
    let before = v["Version"]["Index"].as_u64().unwrap();
    let out = shoal(&socket, &["service", "update", "-d", "--env", "A=B", "web"]).ok();
    assert_eq!(out, "web\n");
    let v = inspect(&socket, "web");
    assert!(v["Version"]["Index"].as_u64().unwrap() > before, "{v}");
    assert_eq!(v["SpecVersion"]["Index"], 3);
    let env = &v["Spec"]["TaskTemplate"]["ProcessSpec"]["Env"];
    assert_eq!(env, &serde_json::json!(["X=1", "A=B"]));
    assert_eq!(
        v["PreviousSpec"]["TaskTemplate"]["ProcessSpec"]["Env"],
        serde_json::json!(["X=1"])
    );
    // --force alone redeploys: a new spec version.
    shoal(&socket, &["service", "update", "-d", "--force", "web"]).ok();
    let v = inspect(&socket, "web");
    assert_eq!(v["SpecVersion"]["Index"], 4);
    assert_eq!(v["Spec"]["TaskTemplate"]["ForceUpdate"], 1);

    // A stale update, through the API.
    let mut client = support::local_client(&socket).await;
    let current = client
        .get_service(GetServiceRequest {
            service_id: id.clone(),
            insert_defaults: false,
        })
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let mut spec = current.spec.clone().unwrap();
    if let Some(service_spec::Mode::Replicated(r)) = spec.mode.as_mut() {
        r.replicas = 7;
    }
    let stale = client
        .update_service(UpdateServiceRequest {
            service_id: id.clone(),
            service_version: current.meta.as_ref().unwrap().version - 1,
            spec: Some(spec.clone()),
            rollback: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(
        stale.message().starts_with("update out of sequence"),
        "{stale:?}"
    );
    // Renaming is refused.
    let mut renamed = spec.clone();
    renamed.annotations.as_mut().unwrap().name = "web2".into();
    let e = client
        .update_service(UpdateServiceRequest {
            service_id: id.clone(),
            service_version: current.meta.as_ref().unwrap().version,
            spec: Some(renamed),
            rollback: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(matches!(
        spec.task.as_ref().unwrap().runtime,
        Some(task_spec::Runtime::Process(_))
    ));

    // Bad flags: exit 1, clear errors, nothing changed.
    let version = inspect(&socket, "web")["Version"]["Index"].clone();
    for (args, expected) in [
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--limit-memory",
                "lots",
                "--",
                "true",
            ],
            "invalid size",
        ),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--limit-cpu",
                "two",
                "--",
                "true",
            ],
            "invalid CPU count",
        ),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--mode",
                "global",
                "--replicas",
                "2",
                "--",
                "true",
            ],
            "replicated or replicated-job mode",
        ),
        (
            vec![
                "service", "create", "-d", "--name", "x", "--mode", "sideways", "--", "true",
            ],
            "sideways",
        ),
        (vec!["service", "create", "-d", "--name", "x"], "an IMAGE"),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "bad name!",
                "--",
                "true",
            ],
            "name",
        ),
        (
            vec!["service", "update", "-d", "--image", "nginx", "web"],
            "container tasks only",
        ),
        (
            vec!["service", "update", "-d", "--restart-delay", "5", "web"],
            "invalid duration",
        ),
        (vec!["service", "scale", "-d", "web=x"], "invalid replicas"),
        (
            vec!["service", "scale", "-d", "nope=2"],
            "no such service: nope",
        ),
        (vec!["service", "inspect", "nope"], "no such service: nope"),
    ] {
        let e = shoal(&socket, &args).failed();
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    assert_eq!(inspect(&socket, "web")["Version"]["Index"], version);
    assert_eq!(ls_rows(&socket).len(), 1);

    // Remove.
    assert_eq!(shoal(&socket, &["service", "rm", "web"]).ok(), "web\n");
    assert!(ls_rows(&socket).is_empty());
    let e = shoal(&socket, &["service", "rm", "web"]).failed();
    assert!(e.contains("no such service: web"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_globals_jobs_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, socket) = manager(dir.path()).await;

    shoal(
        &socket,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "api",
            "--container-label",
            "k=v",
            "nginx:1.27",
        ],
    )
    .ok();
    shoal(
        &socket,
        &[
            "service", "create", "-d", "--name", "agent", "--mode", "global", "--", "sleep", "1000",
        ],
    )
    .ok();
    shoal(
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
            "4",
            "--max-concurrent",
            "2",
            "--",
            "true",
        ],
    )
    .ok();
    let v = inspect(&socket, "api");
    assert_eq!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "nginx:1.27"
    );
    assert_eq!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"]["k"],
        "v"
    );
    assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    assert!(inspect(&socket, "agent")["Spec"]["Mode"]["Global"].is_object());
    let job = inspect(&socket, "batch");
    assert_eq!(job["Spec"]["Mode"]["ReplicatedJob"]["TotalCompletions"], 4);
    assert_eq!(job["Spec"]["Mode"]["ReplicatedJob"]["MaxConcurrent"], 2);
    let rows = ls_rows(&socket);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows[0].contains("agent") && rows[0].contains("global"),
        "{rows:?}"
    );
    assert!(
        rows[1].contains("api") && rows[1].contains("/1"),
        "{rows:?}"
    );
    assert!(rows[1].contains("nginx:1.27"), "{rows:?}");
    assert!(
        rows[2].contains("replicated-job") && rows[2].contains("completed)"),
        "{rows:?}"
    );

    // Scaling a global service is refused; the mode cannot change.
    let e = shoal(&socket, &["service", "scale", "-d", "agent=3"]).failed();
    assert!(e.contains("replicated or replicated-job mode"), "{e}");

    // Rollback: refused before any update, then back to the previous spec.
    let e = shoal(&socket, &["service", "rollback", "-d", "api"]).failed();
    assert!(e.contains("does not have a previous spec"), "{e}");
    shoal(
        &socket,
        &["service", "update", "-d", "--image", "nginx:1.28", "api"],
    )
    .ok();
    assert_eq!(
        inspect(&socket, "api")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "nginx:1.28"
    );
    shoal(&socket, &["service", "rollback", "-d", "api"]).ok();
    let v = inspect(&socket, "api");
    assert_eq!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "nginx:1.27"
    );
    assert_eq!(v["UpdateStatus"]["State"], "rollback_started");

    // ps: a service without tasks (yet) lists none.
    let out = shoal(&socket, &["service", "ps", "api"]).ok();
    assert!(out.starts_with("ID"), "{out}");

    // Several at once.
    let out = shoal(&socket, &["service", "rm", "api", "agent", "batch"]).ok();
    assert_eq!(out, "api\nagent\nbatch\n");
    assert!(ls_rows(&socket).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_the_operation_running_in_the_background() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let (_m, socket) = manager(dir.path()).await;
    // A service no node can take: `create` would wait for ever.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(&socket)
        .args([
            "service",
            "create",
            "--name",
            "stuck",
            "--constraint",
            "node.labels.nowhere==true",
            "--",
            "sleep",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the service exists (the CLI is waiting), interrupt it.
    support::eventually(
        "the service to be created",
        Duration::from_secs(20),
        async || {
            ls_rows(&socket)
                .iter()
                .any(|r| r.contains("stuck"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "create did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("overall progress: 0 out of 1 tasks"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Operation continuing in the background"),
        "{stderr}"
    );
    // The service is still there, its task still waiting for a node.
    assert!(ls_rows(&socket).iter().any(|r| r.contains("stuck")));
}
