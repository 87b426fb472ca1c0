//! Orchestration as a user relies on it, across real processes: a manager and workers
//! (`shoal daemon`, process tasks, on 127.0.0.1), driven with the `shoal` binary. Tasks are
//! followed both in `shoal service ps` and as the host processes they run, on the node they
//! run on:
//! - draining a node moves its tasks to the other nodes, and making it active again moves
//!   nothing back, while new tasks may land on it;
//! - a paused node keeps its tasks and gets no new ones;
//! - a node that is lost (its daemon and its tasks killed) goes DOWN and its tasks are
//!   replaced on the other nodes;
//! - a global service runs one task per eligible node and follows nodes that drain, join,
//!   come back, and gain or lose the label its constraint asks for;
//! - a node that loses that label stops the tasks that need it (the constraint enforcer),
//!   and a replicated service's task moves to a node that has it;
//! - scaling down stops the highest slots.
//!
//! Every wait is bounded and fails showing `node ls`, `service ps` and the task processes
//! (see `support/cluster.rs`).

mod support;

use std::collections::BTreeMap;

use support::cluster::{Cluster, Placed};

/// How many tasks run on each node.
fn per_node(placed: &[Placed]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in placed {
        *out.entry(p.node.clone()).or_default() += 1;
    }
    out
}

fn on<'a>(placed: &'a [Placed], node: &str) -> Vec<&'a Placed> {
    placed.iter().filter(|p| p.node == node).collect()
}

fn names(placed: &[Placed]) -> Vec<String> {
    placed.iter().map(|p| p.name.clone()).collect()
}

/// The nodes a global service's tasks run on, sorted.
fn nodes_of(placed: &[Placed]) -> Vec<String> {
    per_node(placed).into_keys().collect()
}

/// REPLICAS of `service` in `service ls` (`running/desired`).
fn replicas_shown(c: &Cluster, service: &str) -> String {
    let out = c.shoal(&["service", "ls", "--format", "json"]).ok();
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["Name"] == service)
        .and_then(|v| v["Replicas"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{service} not in service ls: {out}"))
}

fn set_availability(c: &Cluster, node: &str, availability: &str) {
    c.shoal(&["node", "update", "--availability", availability, node])
        .ok();
    let shown = c.node(node).expect("node ls").availability;
    assert_eq!(shown.to_lowercase(), availability, "node ls shows {shown}");
}

#[test]
fn a_drained_node_hands_its_tasks_over_and_gets_none_back_when_active() {
    let c = Cluster::start(&["w1", "w2"]);
    let out = c.create_service("web", &["--replicas", "4"]);
    assert!(out.contains("converged"), "{out}");
    // Spread over the three nodes: 2, 1, 1.
    let before = c.wait_settled("4 tasks on 3 nodes", "web", |p| {
        p.len() == 4 && per_node(p).len() == 3
    });
    assert!(!on(&before, "w1").is_empty(), "{before:?}");

    set_availability(&c, "w1", "drain");
    // (Shut down as w1 reports it, too: until then a task would still count as w1's in
    // the scheduler's spread below.)
    let drained = c.wait(
        "w1's tasks shut down and replaced on m1 and w2",
        &["web"],
        |c| {
            let placed = c.settled("web")?;
            let rows = c.try_ps("web")?;
            let shut_down = rows.iter().filter(|r| r.node == "w1").all(|r| r.ended());
            (placed.len() == 4 && on(&placed, "w1").is_empty() && shut_down).then_some(placed)
        },
    );
    // w1 runs nothing any more; the other tasks were left alone (same task, same process);
    // the slots are the same four.
    assert!(
        c.processes()
            .iter()
            .all(|p| p.node.as_deref() != Some("w1")),
        "{:?}",
        c.processes()
    );
    for task in before.iter().filter(|t| t.node != "w1") {
        assert!(drained.contains(task), "{task:?} was moved: {drained:?}");
    }
    assert_eq!(names(&drained), ["web.1", "web.2", "web.3", "web.4"]);
    assert_eq!(replicas_shown(&c, "web"), "4/4");
    // `service ps` shows each replaced task as history of its slot, on w1, told to stop.
    let rows = c.ps("web");
    for task in on(&before, "w1") {
        let row = rows.iter().find(|r| r.id == task.task_id).unwrap();
        assert!(row.history && row.stopping() && row.node == "w1", "{row:?}");
        assert_eq!(row.name, task.name, "{row:?}");
    }

    // Active again: nothing moves back (as in docker), but new tasks land there — it has the
    // fewest of the service's tasks.
    set_availability(&c, "w1", "active");
    let out = c.shoal(&["service", "scale", "web=6"]).ok();
    assert!(out.contains("converged"), "{out}");
    let after = c.wait_settled("6 tasks", "web", |p| p.len() == 6);
    for task in &drained {
        assert!(after.contains(task), "{task:?} was moved: {after:?}");
    }
    let new: Vec<&Placed> = after.iter().filter(|t| !drained.contains(t)).collect();
    assert!(new.iter().all(|t| t.node == "w1"), "{after:?}");
    assert_eq!(replicas_shown(&c, "web"), "6/6");
}

#[test]
fn a_paused_node_keeps_its_tasks_and_gets_no_new_ones() {
    let c = Cluster::start(&["w1", "w2"]);
    c.create_service("web", &["--replicas", "3"]);
    let before = c.wait_settled("one task per node", "web", |p| {
        per_node(p).values().all(|n| *n == 1) && p.len() == 3
    });
    let kept = on(&before, "w1")[0].clone();

    set_availability(&c, "w1", "pause");
    let out = c.shoal(&["service", "scale", "web=6"]).ok();
    assert!(out.contains("converged"), "{out}");
    let after = c.wait_settled("6 tasks", "web", |p| p.len() == 6);
    // w1 still runs its task, the same process, and nothing more.
    assert_eq!(on(&after, "w1"), [&kept], "{after:?}");
    for task in &before {
        assert!(after.contains(task), "{task:?} was moved: {after:?}");
    }
    // The three new ones went to m1 and w2, spread: 2 and 3, or 3 and 2.
    let counts = per_node(&after);
    let (m1, w2) = (counts.get("m1").copied(), counts.get("w2").copied());
    assert!(
        matches!((m1, w2), (Some(2), Some(3)) | (Some(3), Some(2))),
        "{after:?}"
    );
}

/// The worker's daemon is killed with SIGKILL, and so are its task processes and their
/// shims: a machine that dies takes its processes with it. (Left running, they would be
/// orphans no manager knows of any more, which is what a partition looks like, not a loss.)
#[test]
fn a_lost_node_goes_down_and_its_tasks_are_replaced_elsewhere() {
    // Heartbeats every second, so a silent node is DOWN after about three: set before the
    // workers join, as each beat's deadline uses the period of its time.
    let mut c = Cluster::start(&[]);
    c.shoal(&["swarm", "update", "--dispatcher-heartbeat", "1s"])
        .ok();
    c.join_worker("w1");
    c.join_worker("w2");
    c.create_service("web", &["--replicas", "3"]);
    let before = c.wait_settled("one task per node", "web", |p| {
        per_node(p).values().all(|n| *n == 1) && p.len() == 3
    });
    let lost = on(&before, "w1")[0].clone();

    c.daemon("w1").kill();
    c.kill_tasks_on("w1");
    c.wait("w1 to be DOWN", &["web"], |c| {
        (c.node("w1")?.status == "Down").then_some(())
    });
    let after = c.wait_settled("w1's task replaced on m1 or w2", "web", |p| {
        p.len() == 3 && on(p, "w1").is_empty()
    });
    for task in before.iter().filter(|t| t.node != "w1") {
        assert!(after.contains(task), "{task:?} was moved: {after:?}");
    }
    // Its slot runs again elsewhere; the lost task stays as history, told to stop.
    let replacement = after.iter().find(|t| t.name == lost.name).unwrap();
    assert_ne!(replacement.task_id, lost.task_id);
    let rows = c.ps("web");
    let row = rows.iter().find(|r| r.id == lost.task_id).unwrap();
    assert!(row.history && row.stopping() && row.node == "w1", "{row:?}");
    assert_eq!(replicas_shown(&c, "web"), "3/3");
}

#[test]
fn a_global_service_follows_the_nodes() {
    let mut c = Cluster::start(&["w1"]);
    c.create_service("agent", &["--mode", "global"]);
    c.create_service(
        "probe",
        &["--mode", "global", "--constraint", "node.role==worker"],
    );
    c.wait_settled("agent on m1 and w1", "agent", |p| {
        nodes_of(p) == ["m1", "w1"] && p.len() == 2
    });
    c.wait_settled("probe on w1 only", "probe", |p| {
        nodes_of(p) == ["w1"] && p.len() == 1
    });

    // Drained: the node's tasks stop.
    set_availability(&c, "w1", "drain");
    c.wait_settled("agent on m1 only", "agent", |p| {
        nodes_of(p) == ["m1"] && p.len() == 1
    });
    c.wait_settled("no probe", "probe", |p| p.is_empty());

    // A new worker gets one of each.
    c.join_worker("w2");
    c.wait_settled("agent on m1 and w2", "agent", |p| {
        nodes_of(p) == ["m1", "w2"] && p.len() == 2
    });
    c.wait_settled("probe on w2", "probe", |p| {
        nodes_of(p) == ["w2"] && p.len() == 1
    });

    // Active again: the drained node gets its tasks back.
    set_availability(&c, "w1", "active");
    c.wait_settled("agent everywhere", "agent", |p| {
        nodes_of(p) == ["m1", "w1", "w2"] && p.len() == 3
    });
    c.wait_settled("probe on the workers", "probe", |p| {
        nodes_of(p) == ["w1", "w2"] && p.len() == 2
    });
    assert_eq!(replicas_shown(&c, "agent"), "3/3");
}

/// Service `edge`, global with the constraint `node.labels.zone==east`, runs where the label
/// is: on w1, labelled before the service was created, then also on m1, labelled after. When
/// w1 loses the label, the constraint enforcer stops the tasks there that need it: edge's
/// is not replaced, and the task of `api`, replicated with the same constraint, moves to m1.
#[test]
fn tasks_follow_the_label_their_constraint_asks_for() {
    let c = Cluster::start(&["w1"]);
    c.shoal(&["node", "update", "--label-add", "zone=east", "w1"])
        .ok();
    c.create_service(
        "edge",
        &["--mode", "global", "--constraint", "node.labels.zone==east"],
    );
    c.wait_settled("edge on w1 only", "edge", |p| {
        nodes_of(p) == ["w1"] && p.len() == 1
    });
    c.shoal(&["node", "update", "--label-add", "zone=east", "m1"])
        .ok();
    let edge = c.wait_settled("edge on m1 and w1", "edge", |p| {
        nodes_of(p) == ["m1", "w1"] && p.len() == 2
    });
    c.create_service(
        "api",
        &["--replicas", "2", "--constraint", "node.labels.zone==east"],
    );
    let api = c.wait_settled("api on m1 and w1", "api", |p| {
        nodes_of(p) == ["m1", "w1"] && p.len() == 2
    });

    c.shoal(&["node", "update", "--label-rm", "zone", "w1"])
        .ok();
    let after = c.wait_settled("edge on m1 only", "edge", |p| {
        nodes_of(p) == ["m1"] && p.len() == 1
    });
    assert_eq!(after[0], *on(&edge, "m1")[0]);
    assert_eq!(replicas_shown(&c, "edge"), "1/1");
    let moved = c.wait_settled("api on m1 only", "api", |p| {
        nodes_of(p) == ["m1"] && p.len() == 2
    });
    assert!(moved.contains(on(&api, "m1")[0]), "{moved:?}");
    assert_eq!(names(&moved), ["api.1", "api.2"]);
    assert!(
        c.processes()
            .iter()
            .all(|p| p.node.as_deref() != Some("w1")),
        "{:?}",
        c.processes()
    );
}

#[test]
fn scaling_down_stops_the_highest_slots() {
    let c = Cluster::start(&["w1"]);
    let out = c.create_service("web", &["--replicas", "5"]);
    assert!(out.contains("converged"), "{out}");
    let before = c.wait_settled("5 tasks", "web", |p| p.len() == 5);
    assert_eq!(
        names(&before),
        ["web.1", "web.2", "web.3", "web.4", "web.5"]
    );

    let out = c.shoal(&["service", "scale", "web=2"]).ok();
    assert!(out.contains("converged"), "{out}");
    let after = c.wait_settled("2 tasks", "web", |p| p.len() == 2);
    // Slots 1 and 2 stay, with the same tasks and processes.
    assert_eq!(names(&after), ["web.1", "web.2"]);
    assert_eq!(after, before[..2]);
    // The tasks of slots 3 to 5 are told to stop, and their processes are gone.
    let rows = c.ps("web");
    for task in &before[2..] {
        let row = rows.iter().find(|r| r.id == task.task_id).unwrap();
        assert!(row.stopping(), "{row:?}");
        assert_eq!(row.name, task.name);
    }
    assert_eq!(c.processes().len(), 2, "{:?}", c.processes());
    assert_eq!(replicas_shown(&c, "web"), "2/2");
}
