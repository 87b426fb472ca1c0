//! SwarmKit's README walk-through, with real `shoal daemon` processes on 127.0.0.1 and the
//! `shoal` command line: a cluster of three managers and two workers; `node ls` marks this
//! node and the leader; a replicated service is created, scaled, inspected and listed; a
//! drained node's tasks move; a rolling update and a rollback converge; then the leader is
//! killed with SIGKILL and every command still works against the managers left.

mod support;

use support::cluster::Cluster;

#[test]
fn the_swarmkit_walk_through_and_a_leader_killed() {
    let mut c = Cluster::start(&["w1", "w2"]);
    c.join_manager("m2");
    c.join_manager("m3");

    // node ls: five nodes; this node marked `*`, one leader, the other managers reachable.
    let out = c.shoal(&["node", "ls"]).ok();
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{out}");
    let me: Vec<&&str> = rows.iter().filter(|r| r.contains(" * ")).collect();
    assert_eq!(me.len(), 1, "one row is this node: {out}");
    assert!(me[0].contains("m1"), "{out}");
    assert_eq!(
        rows.iter().filter(|r| r.contains("Leader")).count(),
        1,
        "{out}"
    );
    c.wait("the other managers to be reachable", &[], |c| {
        let out = c.shoal(&["node", "ls"]).ok();
        (out.matches("Reachable").count() == 2).then_some(())
    });

    // A replicated service: create (waits until converged), scale, inspect, ps.
    let args = c.service_args("web", &["--replicas", "3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.shoal(&args).ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    let out = c.shoal(&["service", "scale", "web=5"]).ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    let inspected = c.inspect("web");
    assert_eq!(
        inspected["Spec"]["Mode"]["Replicated"]["Replicas"], 5,
        "{inspected}"
    );
    c.wait_settled("five tasks running", "web", |p| p.len() == 5);
    let out = c.shoal(&["service", "ls"]).ok();
    assert!(out.contains("5/5"), "{out}");

    // Drain a worker: its tasks move, the service stays at 5.
    c.shoal(&["node", "update", "--availability", "drain", "w1"])
        .ok();
    c.wait("w1's tasks to move", &["web"], |c| {
        let placed = c.settled("web")?;
        (placed.len() == 5 && placed.iter().all(|p| p.node != "w1")).then_some(())
    });

    // A rolling update, two at a time, then a rollback.
    let out = c
        .shoal(&[
            "service",
            "update",
            "--env-add",
            "GENERATION=2",
            "--update-parallelism",
            "2",
            "--update-monitor",
            "1s",
            "web",
        ])
        .ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    let inspected = c.inspect("web");
    assert_eq!(
        inspected["UpdateStatus"]["State"], "completed",
        "{inspected}"
    );
    let out = c.shoal(&["service", "rollback", "web"]).ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    let inspected = c.inspect("web");
    assert_eq!(
        inspected["UpdateStatus"]["State"], "rollback_completed",
        "{inspected}"
    );
    c.wait_settled("five tasks running", "web", |p| p.len() == 5);

    // The leader is killed with SIGKILL; the other managers elect a new one and answer.
    let out = c.shoal(&["node", "ls"]).ok();
    let leader = out
        .lines()
        .find(|l| l.contains("Leader"))
        .and_then(|l| {
            ["m1", "m2", "m3"]
                .into_iter()
                .find(|m| l.split_whitespace().any(|w| w == *m))
        })
        .unwrap_or_else(|| panic!("no leader in {out}"));
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .unwrap();
    c.daemon(leader).kill();
    c.socket = c.socket_of(survivor);
    c.wait("a new leader", &[], |c| {
        let run = c.shoal(&["node", "ls"]);
        (run.code == Some(0)
            && run
                .stdout
                .lines()
                // By hostname column, not substring: a node ID may contain "m1".
                .any(|l| l.contains("Leader") && !l.split_whitespace().any(|w| w == leader)))
        .then_some(())
    });
    let out = c.shoal(&["service", "ls"]).ok();
    assert!(out.contains("web"), "{out}");
    c.shoal(&["service", "ps", "web"]).ok();
    c.shoal(&["service", "inspect", "web"]).ok();
    c.shoal(&["task", "ls", "--service", "web"]).ok();
    let out = c.shoal(&["service", "scale", "web=2"]).ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    c.shoal(&["node", "update", "--availability", "active", "w1"])
        .ok();
    c.shoal(&["service", "rm", "web"]).ok();
    c.wait("web to be gone", &[], |c| {
        let out = c.shoal(&["service", "ls", "-q"]).ok();
        out.trim().is_empty().then_some(())
    });
}
