//! `shoal network ...` and published ports as users run them: the `shoal` binary talking to a
//! real manager over its control socket. Networks and ports are bookkeeping so far (no data
//! plane): these tests assert on what the Control API allocates and keeps.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cli::shoal;

/// A manager that created a cluster and runs tasks with the sim executor.
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

fn inspect(socket: &Path, kind: &str, name: &str) -> serde_json::Value {
    let out = shoal(socket, &[kind, "inspect", name]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
    v[0].clone()
}

/// The rows of `network ls`, split into columns (the header left out).
fn network_rows(socket: &Path) -> Vec<Vec<String>> {
    let out = shoal(socket, &["network", "ls"]).ok();
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NETWORK ID") && header.contains("DRIVER"),
        "{out}"
    );
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn create_service(socket: &Path, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["service", "create", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sleep", "1000"]);
    shoal(socket, &args).ok().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_are_created_listed_inspected_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, socket) = manager(dir.path()).await;

    let front = shoal(&socket, &["network", "create", "front"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(front.len(), 25, "{front}");
    let back = shoal(
        &socket,
        &[
            "network",
            "create",
            "--driver",
            "overlay",
            "--subnet",
            "10.20.0.0/16",
            "--label",
            "tier=back",
            "back",
        ],
    )
    .ok()
    .trim()
    .to_string();

    let rows = network_rows(&socket);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0],
        [&back[..12], "back", "overlay", "swarm", "10.20.0.0/16"]
    );
    assert_eq!(rows[1][1], "front");
    assert_eq!(rows[1][4], "10.0.0.0/24");
    assert_eq!(
        shoal(&socket, &["network", "ls", "-q"]).ok(),
        format!("{back}\n{front}\n")
    );

    let v = inspect(&socket, "network", "front");
    assert_eq!(v["Id"], front.as_str());
    assert_eq!(v["Driver"], "overlay");
    assert_eq!(v["Scope"], "swarm");
    assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.0.0.1");
    let v = inspect(&socket, "network", &back[..8]);
    assert_eq!(v["Name"], "back");
    assert_eq!(v["Labels"]["tier"], "back");
    assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.20.0.1");

    // Refusals: a taken name, an overlapping subnet, another driver. Nothing changes.
    let e = shoal(&socket, &["network", "create", "front"]).failed();
    assert!(e.contains("network name front is already in use"), "{e}");
    let e = shoal(
        &socket,
        &["network", "create", "--subnet", "10.20.5.0/24", "other"],
    )
    .failed();
    assert!(
        e.contains("subnet 10.20.5.0/24 overlaps subnet 10.20.0.0/16 of network back"),
        "{e}"
    );
    let e = shoal(&socket, &["network", "create", "-d", "bridge", "other"]).failed();
    assert!(e.contains("\"bridge\" is not supported"), "{e}");
    assert_eq!(network_rows(&socket).len(), 2);

    // A network in use by a service is not removed; once the service is gone, it is.
    let web = create_service(&socket, "web", &["--network", "front"]);
    let v = inspect(&socket, "service", "web");
    assert_eq!(
        v["Spec"]["TaskTemplate"]["Networks"][0]["Target"],
        front.as_str(),
        "the network is stored by ID: {v}"
    );
    let vips = &v["Endpoint"]["VirtualIPs"];
    assert_eq!(vips[0]["NetworkID"], front.as_str(), "{v}");
    assert_eq!(vips[0]["Addr"], "10.0.0.2/24", "{v}");
    let e = shoal(&socket, &["network", "rm", "front"]).failed();
    assert!(e.contains("network front is in use by service web"), "{e}");
    shoal(&socket, &["service", "rm", &web]).ok();
    // Its tasks hold addresses on the network until they have stopped: `rm` says so, and
    // succeeds once they have.
    let start = std::time::Instant::now();
    let removed = loop {
        let run = shoal(&socket, &["network", "rm", "front"]);
        if run.code == Some(0) {
            break run.stdout;
        }
        let e = run.failed();
        assert!(
            e.contains("in use by 1 task(s) that have not stopped yet"),
            "{e}"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "web's task never stopped: {e}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(removed, "front\n");
    assert_eq!(shoal(&socket, &["network", "rm", "back"]).ok(), "back\n");
    assert!(network_rows(&socket).is_empty());
    let e = shoal(&socket, &["network", "inspect", "front"]).failed();
    assert!(e.contains("no such network: front"), "{e}");
    let e = shoal(
        &socket,
        &[
            "service",
            "create",
            "-d",
            "--network",
            "nope",
            "--",
            "sleep",
            "1",
        ],
    )
    .failed();
    assert!(e.contains("network nope not found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_are_allocated_and_conflicts_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, socket) = manager(dir.path()).await;

    // A published port shows in the service's endpoint.
    create_service(&socket, "web", &["-p", "8080:80"]);
    let web = inspect(&socket, "service", "web");
    let port = &web["Endpoint"]["Ports"][0];
    assert_eq!(port["PublishedPort"], 8080, "{web}");
    assert_eq!(port["TargetPort"], 80);
    assert_eq!(port["Protocol"], "tcp");
    assert_eq!(port["PublishMode"], "ingress");
    assert_eq!(
        web["Spec"]["EndpointSpec"]["Ports"][0]["PublishedPort"],
        8080
    );
    // The routing mesh's network was made for it.
    let rows = network_rows(&socket);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], "ingress");

    // A second service publishing 8080 is refused, naming the first; nothing is created.
    let e = shoal(
        &socket,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "api",
            "-p",
            "8080:8080",
            "--",
            "sleep",
            "1",
        ],
    )
    .failed();
    assert!(
        e.contains(&format!(
            "port 8080/tcp is already published by service web (ID {})",
            web["ID"].as_str().unwrap()
        )),
        "{e}"
    );
    assert_eq!(
        shoal(&socket, &["service", "ls", "-q"])
            .ok()
            .lines()
            .count(),
        1
    );

    // No published port: one from 30000-32767.
    create_service(&socket, "api", &["-p", "80"]);
    let api = inspect(&socket, "service", "api");
    let published = api["Endpoint"]["Ports"][0]["PublishedPort"]
        .as_u64()
        .unwrap();
    assert!((30000..=32767).contains(&published), "{api}");

    // An update that would take web's port is refused and changes nothing; one that does not
    // keeps the allocated port.
    let e = shoal(
        &socket,
        &["service", "update", "-d", "--publish-add", "8080:80", "api"],
    )
    .failed();
    assert!(
        e.contains("port 8080/tcp is already published by service web"),
        "{e}"
    );
    assert_eq!(inspect(&socket, "service", "api"), api);
    shoal(&socket, &["service", "update", "-d", "--env", "A=B", "api"]).ok();
    let updated = inspect(&socket, "service", "api");
    assert_eq!(updated["SpecVersion"]["Index"], 2);
    assert_eq!(updated["Endpoint"]["Ports"][0]["PublishedPort"], published);

    // Host-mode ports are not allocated cluster-wide: two services may use one.
    create_service(
        &socket,
        "h1",
        &["--publish", "mode=host,published=9090,target=80"],
    );
    create_service(
        &socket,
        "h2",
        &["--publish", "mode=host,published=9090,target=80"],
    );
    let h2 = inspect(&socket, "service", "h2");
    assert_eq!(h2["Endpoint"]["Ports"][0]["PublishMode"], "host", "{h2}");

    // Bad flags are refused before anything is sent.
    let e = shoal(
        &socket,
        &["service", "create", "-p", "80/icmp", "--", "sleep", "1"],
    )
    .failed();
    assert!(e.contains("unknown protocol"), "{e}");

    // Once web is removed, its port is free again.
    shoal(&socket, &["service", "rm", "web"]).ok();
    shoal(
        &socket,
        &["service", "update", "-d", "--publish-add", "8080:80", "api"],
    )
    .ok();
    let api = inspect(&socket, "service", "api");
    assert_eq!(api["Endpoint"]["Ports"][0]["PublishedPort"], 8080, "{api}");
    // The ingress network cannot be removed while a service publishes through it.
    let e = shoal(&socket, &["network", "rm", "ingress"]).failed();
    assert!(e.contains("in use by service api"), "{e}");
}
