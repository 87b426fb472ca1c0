//! Root CA rotation on clusters of real `shoal daemon` processes, driven by the `shoal`
//! command line: under a stream of Control API calls (every one of them answered), with a
//! worker stopped (the rotation waits for it, then completes when it comes back — or when it
//! is removed), through the Engine API (and the docker CLI, when it is installed), and
//! refused when asked wrongly.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::cli::{Run, finished};
use support::cluster::{Cluster, LIMIT};

/// `shoal -s SOCKET args…`, bounded by [`LIMIT`].
fn shoal_at(socket: &Path, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .env_remove("SHOAL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return finished(child.wait_with_output().unwrap());
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "shoal {args:?} did not finish within {LIMIT:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `shoal swarm inspect`, as JSON.
fn inspect(c: &Cluster) -> serde_json::Value {
    let out = c.shoal(&["swarm", "inspect"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0].clone()
}

/// What a node holds on disk.
fn certificates(state_dir: &Path) -> shoal_tls::NodeCertificates {
    shoal_node::certificates::load(state_dir)
        .unwrap()
        .expect("the node's certificates")
}

/// Whether the node whose state is in `state_dir` holds a certificate from `root` alone —
/// no chain that could lead anywhere else — and trusts `root` alone.
fn on_root_alone(state_dir: &Path, root: &str) -> bool {
    let held = certificates(state_dir);
    held.root_pem == root
        && shoal_ca::certificates_der(&held.cert_pem).is_ok_and(|c| c.len() == 1)
        && shoal_ca::issued_by(&held.cert_pem, root)
}

/// The node rows of `node ls` as (hostname, status).
fn statuses(c: &Cluster) -> Vec<(String, String)> {
    c.nodes()
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.hostname, n.status))
        .collect()
}

/// Whether a handshake with the manager at `addr` succeeds trusting `root` alone (without
/// a certificate of ours, as a joining node dials).
fn handshake(addr: &str, root: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        shoal_tls::Dialer::anonymous(root)
            .unwrap()
            .connect(addr)
            .await
            .is_ok()
    })
}

/// Control API calls, a write and two reads per round, on one manager's control socket
/// (followers forward them to the leader over mutual TLS) until `stop` — at most `ROUNDS`
/// rounds and [`LIMIT`]. Returns the calls that failed, with their error, and every node
/// listed as anything but READY.
fn load(
    socket: PathBuf,
    name: String,
    data: PathBuf,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) -> Vec<String> {
    const ROUNDS: usize = 400;
    let start = Instant::now();
    let mut failed = Vec::new();
    for round in 0..ROUNDS {
        if stop.load(Ordering::Acquire) || start.elapsed() > LIMIT {
            break;
        }
        let config = format!("load-{name}-{round}");
        let data = data.display().to_string();
        for args in [
            vec!["config", "create", config.as_str(), data.as_str()],
            vec!["node", "ls", "--format", "json"],
            vec!["service", "ls", "-q"],
        ] {
            let run = shoal_at(&socket, &args);
            calls.fetch_add(1, Ordering::AcqRel);
            if run.code != Some(0) {
                failed.push(format!("{name}: shoal {args:?}: {}", run.stderr.trim()));
                continue;
            }
            // No node is ever seen anything but READY.
            if args[1] == "ls" && args[0] == "node" {
                for line in run.stdout.lines().filter(|l| !l.trim().is_empty()) {
                    let node: serde_json::Value = serde_json::from_str(line).unwrap();
                    if node["Status"] != "Ready" {
                        failed.push(format!("{name}: node ls showed {line}"));
                    }
                }
            }
        }
    }
    failed
}

#[test]
fn a_root_rotation_drops_no_node_and_no_call_and_leaves_only_the_new_root() {
    let mut c = Cluster::start(&["w1"]);
    c.join_manager("m2");
    c.join_manager("m3");
    c.create_service("web", &["--replicas", "4"]);
    let before = c.wait_settled("web to run its 4 tasks", "web", |p| p.len() == 4);
    let old_root = c.shoal(&["swarm", "ca"]).ok();
    let nodes = ["m1", "m2", "m3", "w1"];
    for node in nodes {
        assert!(on_root_alone(&c.daemon(node).state_dir.clone(), &old_root));
    }

    // Calls on every manager while the rotation runs, and on until it has settled.
    let data = c.dir().join("config-data");
    std::fs::write(&data, b"some config").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let loads: Vec<_> = ["m1", "m2", "m3"]
        .into_iter()
        .map(|m| {
            let (socket, data, stop, calls) =
                (c.socket_of(m), data.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || load(socket, m.to_string(), data, stop, calls))
        })
        .collect();
    c.wait("the calls to start", &[], |_| {
        (calls.load(Ordering::Acquire) >= 6).then_some(())
    });

    let at_start = calls.load(Ordering::Acquire);
    let rotated = c.shoal(&["swarm", "ca", "--rotate"]);
    let at_end = calls.load(Ordering::Acquire);
    assert!(at_end > at_start, "no call was made during the rotation");
    assert!(
        rotated.stderr.contains("Root CA rotation complete"),
        "{}",
        rotated.stderr
    );
    let new_root = rotated.ok();
    assert_ne!(new_root, old_root);
    assert!(shoal_ca::certificates_der(&new_root).is_ok_and(|r| r.len() == 1));
    assert_eq!(c.shoal(&["swarm", "ca"]).ok(), new_root);

    // Every node trusts the new root alone and holds a certificate from it alone.
    let dirs: Vec<(String, PathBuf)> = nodes
        .iter()
        .map(|n| (n.to_string(), c.daemon(n).state_dir.clone()))
        .collect();
    c.wait("every node to hold the new root alone", &["web"], |_| {
        dirs.iter()
            .all(|(_, dir)| on_root_alone(dir, &new_root))
            .then_some(())
    });
    // A few more rounds of calls, then the verdict: every call was answered.
    let settled_at = calls.load(Ordering::Acquire);
    c.wait("calls after the rotation", &[], |_| {
        (calls.load(Ordering::Acquire) >= settled_at + 9).then_some(())
    });
    stop.store(true, Ordering::Release);
    let failed: Vec<String> = loads.into_iter().flat_map(|l| l.join().unwrap()).collect();
    assert!(
        failed.is_empty(),
        "calls failed during the rotation:\n{}",
        failed.join("\n")
    );
    assert!(calls.load(Ordering::Acquire) >= 15);

    // No node was dropped, the rotation is over, the tasks never moved.
    assert!(
        statuses(&c).iter().all(|(_, s)| s == "Ready") && statuses(&c).len() == 4,
        "{:?}",
        statuses(&c)
    );
    let cluster = inspect(&c);
    assert_eq!(cluster["RootRotationInProgress"], false);
    assert!(cluster.get("RootRotation").is_none(), "{cluster}");
    assert_eq!(cluster["TLSInfo"]["TrustRoot"], new_root.as_str());
    // The join tokens name the new root; their secrets stayed.
    let digest = shoal_ca::cert_digest(&new_root).unwrap();
    assert!(
        cluster["JoinTokens"]["Worker"]
            .as_str()
            .unwrap()
            .contains(&digest)
    );
    let after = c.wait_settled("web to run its 4 tasks", "web", |p| p.len() == 4);
    assert_eq!(after, before, "tasks were restarted or moved");

    // The managers' remote API: a node trusting the old root alone cannot get in any more;
    // one trusting the new root can.
    for m in ["m1", "m2", "m3"] {
        let addr = c.daemon(m).addr.clone();
        assert!(handshake(&addr, &new_root), "{m} refused the new root");
        assert!(
            !handshake(&addr, &old_root),
            "{m} still chains to the old root"
        );
    }
}

#[test]
fn a_rotation_waits_for_a_stopped_worker_and_completes_when_it_comes_back_or_is_removed() {
    // m1, w1, w2; w3 joins during the rotation.
    let mut c = Cluster::start(&["w1", "w2"]);
    let old_root = c.shoal(&["swarm", "ca"]).ok();
    let old_token = c.shoal(&["swarm", "join-token", "-q", "worker"]).ok();
    assert_eq!(c.daemon("w2").terminate(LIMIT), Some(0));
    c.wait("w2 to be gone", &[], |c| {
        c.node("w2").filter(|n| n.status != "Ready").map(|_| ())
    });

    // Detached: the command returns at once, the rotation goes on.
    let started = c.shoal(&["swarm", "ca", "--rotate", "--detach"]);
    assert!(
        started.stderr.contains("Root CA rotation started"),
        "{}",
        started.stderr
    );
    assert_eq!(started.ok(), "");
    let w2_id = c.node("w2").unwrap().id;
    let pending = c.wait("the rotation to wait for w2 alone", &[], |c| {
        let cluster = inspect(c);
        let rotation = &cluster["RootRotation"];
        (cluster["RootRotationInProgress"] == true
            && rotation["NodesRotated"] == 2
            && rotation["NodesTotal"] == 3)
            .then(|| rotation["NodesPending"].clone())
    });
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["Hostname"], "w2");
    assert_eq!(pending[0]["ID"], w2_id.as_str());
    assert_ne!(pending[0]["State"], "ready");
    // Meanwhile the root is still the old one, and so are the tokens.
    assert_eq!(c.shoal(&["swarm", "ca"]).ok(), old_root);
    assert_eq!(
        c.shoal(&["swarm", "join-token", "-q", "worker"]).ok(),
        old_token
    );
    // A node joining now checks the old root its token names, and gets a certificate from
    // the new root with the old root's cross-signature of it; it counts as rotated.
    c.join_worker("w3");
    let w3 = certificates(&c.daemon("w3").state_dir.clone());
    let chain = shoal_ca::certificates_der(&w3.cert_pem).unwrap();
    assert_eq!(chain.len(), 2);
    assert!(!shoal_ca::issued_by(&w3.cert_pem, &old_root));
    let cross = shoal_ca::first_certificate_pem(
        &w3.cert_pem[shoal_ca::first_certificate_pem(&w3.cert_pem).unwrap().len()..],
    )
    .unwrap();
    assert!(shoal_ca::issued_by(&cross, &old_root));
    c.wait("the rotation to wait for w2 alone, w3 rotated", &[], |c| {
        let rotation = inspect(c)["RootRotation"].clone();
        (rotation["NodesRotated"] == 3
            && rotation["NodesTotal"] == 4
            && rotation["NodesPending"][0]["Hostname"] == "w2")
            .then_some(())
    });

    // w2 comes back: its old certificate is still trusted, it renews, the rotation completes.
    c.daemon("w2").restart(&["--hostname", "w2"]);
    c.wait("the rotation to complete", &[], |c| {
        (inspect(c)["RootRotationInProgress"] == false).then_some(())
    });
    let new_root = c.shoal(&["swarm", "ca"]).ok();
    assert_ne!(new_root, old_root);
    c.wait("w2 to be READY", &[], |c| {
        c.node("w2").filter(|n| n.status == "Ready").map(|_| ())
    });
    let dirs: Vec<PathBuf> = ["m1", "w1", "w2", "w3"]
        .iter()
        .map(|n| c.daemon(n).state_dir.clone())
        .collect();
    c.wait("every node to hold the new root alone", &[], |_| {
        dirs.iter()
            .all(|d| on_root_alone(d, &new_root))
            .then_some(())
    });
    // The tokens: same secrets, the new root's digest.
    let new_token = c.shoal(&["swarm", "join-token", "-q", "worker"]).ok();
    assert_ne!(new_token.trim(), old_token.trim());
    assert_eq!(
        new_token.trim().rsplit('-').next(),
        old_token.trim().rsplit('-').next()
    );

    // Again, with w2 stopped for good: removing it lets the rotation complete.
    assert_eq!(c.daemon("w2").terminate(LIMIT), Some(0));
    c.wait("w2 to be gone", &[], |c| {
        c.node("w2").filter(|n| n.status != "Ready").map(|_| ())
    });
    c.shoal(&["swarm", "ca", "--rotate", "-d", "-q"]).ok();
    c.wait("the rotation to wait for w2 alone", &[], |c| {
        let pending = inspect(c)["RootRotation"]["NodesPending"].clone();
        (pending.as_array().is_some_and(|p| p.len() == 1) && pending[0]["Hostname"] == "w2")
            .then_some(())
    });
    assert_eq!(inspect(&c)["RootRotationInProgress"], true);
    c.shoal(&["node", "rm", "--force", "w2"]).ok();
    c.wait("the rotation to complete", &[], |c| {
        (inspect(c)["RootRotationInProgress"] == false).then_some(())
    });
    let newest = c.shoal(&["swarm", "ca"]).ok();
    assert_ne!(newest, new_root);
    let dirs: Vec<PathBuf> = ["m1", "w1", "w3"]
        .iter()
        .map(|n| c.daemon(n).state_dir.clone())
        .collect();
    c.wait("m1, w1 and w3 to hold the newest root alone", &[], |_| {
        dirs.iter().all(|d| on_root_alone(d, &newest)).then_some(())
    });
}

#[test]
fn the_engine_api_starts_a_rotation_and_reports_it() {
    let c = Cluster::start(&["w1"]);
    let engine = c.engine_socket_of("m1");
    let swarm = support::engine::request(&engine, "GET", "/v1.41/swarm", None).json();
    let old_root = swarm["TLSInfo"]["TrustRoot"].as_str().unwrap().to_string();
    assert_eq!(swarm["RootRotationInProgress"], false);
    assert!(
        !swarm["TLSInfo"]["CertIssuerPublicKey"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let subject = swarm["TLSInfo"]["CertIssuerSubject"].clone();
    // What `docker swarm ca --rotate` sends: the spec read, ForceRotate + 1.
    let mut spec = swarm["Spec"].clone();
    let version = swarm["Version"]["Index"].as_u64().unwrap();
    spec["CAConfig"]["ForceRotate"] =
        serde_json::json!(spec["CAConfig"]["ForceRotate"].as_u64().unwrap_or(0) + 1);
    let updated = support::engine::request(
        &engine,
        "POST",
        &format!("/v1.41/swarm/update?version={version}"),
        Some(&spec.to_string()),
    );
    assert_eq!(
        updated.status,
        200,
        "{}",
        String::from_utf8_lossy(&updated.body)
    );
    let after = c.wait("the rotation to complete", &[], |_| {
        let swarm = support::engine::request(&engine, "GET", "/v1.41/swarm", None).json();
        (swarm["RootRotationInProgress"] == false
            && swarm["TLSInfo"]["TrustRoot"].as_str() != Some(old_root.as_str()))
        .then_some(swarm)
    });
    assert_eq!(
        after["Spec"]["CAConfig"]["ForceRotate"],
        spec["CAConfig"]["ForceRotate"]
    );
    // Roots share their subject; the key is another.
    assert_eq!(after["TLSInfo"]["CertIssuerSubject"], subject);
    assert_ne!(
        after["TLSInfo"]["CertIssuerPublicKey"],
        swarm["TLSInfo"]["CertIssuerPublicKey"]
    );
    // Each node reports the new root as its certificate's issuer.
    let nodes = c.wait("the nodes to report the new root", &[], |_| {
        let nodes = support::engine::request(&engine, "GET", "/v1.41/nodes", None).json();
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| {
                n["Description"]["TLSInfo"]["CertIssuerPublicKey"]
                    == after["TLSInfo"]["CertIssuerPublicKey"]
            })
            .then_some(nodes)
    });
    assert_eq!(nodes.as_array().unwrap().len(), 2);

    // The docker CLI's own `swarm ca --rotate`: it waits for every node to report the new
    // root, then prints it.
    if support::engine::docker_cli() {
        let rotated = support::engine::docker(&engine, &["swarm", "ca", "--rotate"]);
        assert_eq!(
            rotated.code,
            Some(0),
            "{}{}",
            rotated.stdout,
            rotated.stderr
        );
        let swarm = support::engine::request(&engine, "GET", "/v1.41/swarm", None).json();
        assert_eq!(swarm["RootRotationInProgress"], false);
        let root = swarm["TLSInfo"]["TrustRoot"].as_str().unwrap();
        assert_ne!(root, after["TLSInfo"]["TrustRoot"].as_str().unwrap());
        assert!(
            rotated.stdout.trim_end().ends_with(root.trim_end()),
            "{}",
            rotated.stdout
        );
        let shown = support::engine::docker(&engine, &["swarm", "ca"]);
        assert_eq!(shown.stdout.trim_end(), root.trim_end());
    }
}

#[test]
fn a_rotation_asked_wrongly_is_refused_and_changes_nothing() {
    let c = Cluster::start(&["w1"]);
    let before = inspect(&c);
    let root = c.shoal(&["swarm", "ca"]).ok();

    // On a worker: the Control API is the managers'.
    let on_worker = shoal_at(&c.socket_of("w1"), &["swarm", "ca", "--rotate"]).failed();
    assert!(on_worker.contains("worker"), "{on_worker}");
    assert!(on_worker.contains("manager"), "{on_worker}");
    // A flag `swarm ca` does not have, or flags of a rotation without --rotate.
    let unknown = c
        .shoal(&["swarm", "ca", "--rotate", "--ca-cert", "x.pem"])
        .failed();
    assert!(unknown.contains("--ca-cert"), "{unknown}");
    let detached = c.shoal(&["swarm", "ca", "--detach"]).failed();
    assert!(
        detached.contains("--detach only applies to a rotation"),
        "{detached}"
    );
    assert!(detached.contains("shoal swarm ca --rotate"), "{detached}");
    let quiet = c.shoal(&["swarm", "ca", "-q"]).failed();
    assert!(quiet.contains("--quiet only applies"), "{quiet}");

    // ForceRotate lowered through the Control API: refused, naming the field.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        let mut control = support::local_client(&c.socket).await;
        let cluster = control
            .list_clusters(shoal_api::v1::ListClustersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .clusters
            .remove(0);
        let meta = cluster.meta.unwrap();
        let mut spec = cluster.spec.unwrap();
        // Raise it once (a rotation), then ask for the lower value again.
        spec.ca_config.as_mut().unwrap().force_rotate = 5;
        control
            .update_cluster(shoal_api::v1::UpdateClusterRequest {
                cluster_id: meta.id.clone(),
                cluster_version: meta.version,
                spec: Some(spec.clone()),
                rotation: None,
            })
            .await
            .unwrap();
        let current = control
            .list_clusters(shoal_api::v1::ListClustersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .clusters
            .remove(0);
        spec.ca_config.as_mut().unwrap().force_rotate = 4;
        control
            .update_cluster(shoal_api::v1::UpdateClusterRequest {
                cluster_id: meta.id,
                cluster_version: current.meta.unwrap().version,
                spec: Some(spec),
                rotation: None,
            })
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("spec.ca_config.force_rotate")
            && status.message().contains("only be raised"),
        "{}",
        status.message()
    );
    // Nothing of the refusals changed the cluster: only the one rotation asked for rightly.
    c.wait("the rotation asked for to complete", &[], |c| {
        (inspect(c)["RootRotationInProgress"] == false).then_some(())
    });
    let after = inspect(&c);
    assert_eq!(after["Spec"]["CAConfig"]["ForceRotate"], 5);
    assert_ne!(c.shoal(&["swarm", "ca"]).ok(), root);
    assert_eq!(before["Spec"]["CAConfig"]["ForceRotate"], 0);
}
