//! Rolling updates as a user relies on them, across real processes: a manager and two
//! workers (`shoal daemon`, process tasks, on 127.0.0.1), driven with the `shoal` binary.
//! Tasks run [`COMMAND`], which sleeps unless its `VERSION` is `bad`, when it exits 1 at
//! once: `service update --env-add VERSION=…` is the new version of the service, and a
//! task's process says which version it runs. While `service update` runs, `service ps` is
//! sampled to count the tasks running at once.
//! - a failing update with `--update-failure-action rollback` rolls back by itself, one slot
//!   down at a time, and `service update` fails saying why;
//! - with the default failure action it pauses after the first failure, with the other
//!   slots left as they were, and a good update resumes and completes;
//! - start-first with parallelism 2 and a delay never runs fewer tasks than the replicas;
//! - `--force` redeploys every task; `service rollback` returns to the previous version;
//! - a global service's `service create` converges once its tasks run on every node (not
//!   at "0 out of 0 tasks", before they exist), and it is updated node by node;
//! - a task that keeps failing is restarted at most `--restart-max-attempts` times.
//!
//! Every wait is bounded and fails showing `node ls`, `service ps` and the task processes
//! (see `support/cluster.rs`).

mod support;

use std::time::{Duration, Instant};

use support::cli::Run;
use support::cluster::{Cluster, Placed, TaskRow, env_of};

/// The tasks' command: it runs unless its `VERSION` is `bad`, when it exits 1 at once.
const COMMAND: [&str; 3] = [
    "sh",
    "-c",
    r#"if [ "$VERSION" = bad ]; then exit 1; fi; exec sleep 1000"#,
];

/// Whether every task runs `version` (as its process's environment says).
fn all_on(placed: &[Placed], version: &str) -> bool {
    placed
        .iter()
        .all(|p| env_of(p.pid, "VERSION").as_deref() == Some(version))
}

/// Runs `shoal args` while sampling, every 50 ms, how many tasks of `service` run (meant to
/// run, and running); returns how it ended and the fewest and the most seen at once.
fn sampled(c: &Cluster, service: &str, args: &[&str]) -> (Run, usize, usize) {
    std::thread::scope(|s| {
        let command = s.spawn(|| c.shoal(args));
        let (mut fewest, mut most) = (usize::MAX, 0);
        while !command.is_finished() {
            if let Some(rows) = c.try_ps(service) {
                let running = rows.iter().filter(|r| r.running()).count();
                fewest = fewest.min(running);
                most = most.max(running);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (command.join().unwrap(), fewest, most)
    })
}

/// The rows of `service ps` by slot (`NAME.SLOT`), newest first in each.
fn by_slot(rows: &[TaskRow]) -> std::collections::BTreeMap<String, Vec<TaskRow>> {
    let mut out = std::collections::BTreeMap::<String, Vec<TaskRow>>::new();
    for r in rows {
        out.entry(r.name.clone()).or_default().push(r.clone());
    }
    out
}

/// `UpdateStatus.State` in `service inspect`.
fn update_state(c: &Cluster, service: &str) -> String {
    let v = c.inspect(service);
    v["UpdateStatus"]["State"]
        .as_str()
        .unwrap_or_else(|| panic!("no UpdateStatus: {v}"))
        .to_string()
}

/// Creates `web`, 4 replicas of `VERSION=v1`, with `flags`; waits until they run.
fn create_web(c: &Cluster, flags: &[&str]) -> Vec<Placed> {
    let mut all = vec!["--replicas", "4", "--env", "VERSION=v1"];
    all.extend_from_slice(flags);
    let out = c.create_command_service("web", &all, &COMMAND).ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    c.wait_settled("4 tasks of v1", "web", |p| p.len() == 4 && all_on(p, "v1"))
}

#[test]
fn a_failing_update_rolls_back_by_itself_one_slot_at_a_time() {
    let c = Cluster::start(&["w1", "w2"]);
    let before = create_web(
        &c,
        &[
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
            "--update-parallelism",
            "1",
            // A failing task may report RUNNING a moment before FAILED; the delay keeps the
            // next slot waiting until the failure is known.
            "--update-delay",
            "500ms",
            "--rollback-monitor",
            "1s",
            "--restart-delay",
            "1s",
        ],
    );

    let (run, fewest, _) = sampled(
        &c,
        "web",
        &["service", "update", "--env-add", "VERSION=bad", "web"],
    );
    let err = run.failed();
    assert!(
        err.contains(
            "update rolled back: update rolled back due to failure or early termination of task "
        ),
        "{err}"
    );
    // Stop-first, one at a time: never more than one slot down, rollback included.
    assert!(fewest >= 3, "only {fewest} tasks ran at some point");
    assert_eq!(update_state(&c, "web"), "rollback_completed");

    // All four run v1 again; three never stopped (same task, same process).
    let after = c.wait_settled("4 tasks of v1 again", "web", |p| {
        p.len() == 4 && all_on(p, "v1")
    });
    let kept: Vec<&Placed> = before.iter().filter(|t| after.contains(t)).collect();
    assert_eq!(kept.len(), 3, "before: {before:?}\nafter: {after:?}");
    // The slot the update reached: its v1 task stopped, its bad task failed, and a new v1
    // task runs; the other slots have one task each.
    let rows = c.ps("web");
    let slots = by_slot(&rows);
    let touched: Vec<&Vec<TaskRow>> = slots.values().filter(|s| s.len() > 1).collect();
    assert_eq!(touched.len(), 1, "{rows:#?}");
    assert!(
        touched[0].iter().any(|r| r.current.starts_with("Failed")),
        "{rows:#?}"
    );
}

#[test]
fn a_failing_update_pauses_and_a_good_one_resumes() {
    let c = Cluster::start(&["w1", "w2"]);
    let before = create_web(
        &c,
        &[
            "--update-monitor",
            "2s",
            "--update-parallelism",
            "1",
            "--update-delay",
            "500ms",
        ],
    );

    let (run, fewest, _) = sampled(
        &c,
        "web",
        &["service", "update", "--env-add", "VERSION=bad", "web"],
    );
    let err = run.failed();
    assert!(
        err.contains("update paused: update paused due to failure or early termination of task "),
        "{err}"
    );
    assert!(fewest >= 3, "only {fewest} tasks ran at some point");
    assert_eq!(update_state(&c, "web"), "paused");

    // Paused: for a while, one slot has been reached, and the three others run their v1
    // task as before.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let rows = c.ps("web");
        let slots = by_slot(&rows);
        let touched = slots.values().filter(|s| s.len() > 1).count();
        assert_eq!(touched, 1, "{rows:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = c.ps("web");
    let untouched: Vec<&Placed> = before
        .iter()
        .filter(|t| {
            rows.iter()
                .any(|r| r.id == t.task_id && r.running() && !r.history)
        })
        .collect();
    assert_eq!(untouched.len(), 3, "{before:?}\n{rows:#?}");
    for t in untouched {
        assert_eq!(env_of(t.pid, "VERSION").as_deref(), Some("v1"), "{t:?}");
    }
    assert_eq!(update_state(&c, "web"), "paused");

    // A good version resumes: everything ends on it.
    let out = c
        .shoal(&["service", "update", "--env-add", "VERSION=v2", "web"])
        .ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    c.wait_settled("4 tasks of v2", "web", |p| p.len() == 4 && all_on(p, "v2"));
    assert_eq!(update_state(&c, "web"), "completed");
}

#[test]
fn a_start_first_update_never_runs_fewer_tasks_than_the_replicas() {
    let c = Cluster::start(&["w1", "w2"]);
    create_web(
        &c,
        &[
            "--update-order",
            "start-first",
            "--update-parallelism",
            "2",
            "--update-delay",
            "1s",
            "--update-monitor",
            "1s",
        ],
    );

    let start = Instant::now();
    let (run, fewest, most) = sampled(
        &c,
        "web",
        &["service", "update", "--env-add", "VERSION=v2", "web"],
    );
    let took = start.elapsed();
    let out = run.ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    assert!(fewest >= 4, "only {fewest} tasks ran at some point");
    // Two new tasks at most beside the four.
    assert!(most <= 6, "{most} tasks ran at some point");
    // Two groups, each waiting out the delay once running, then the monitor.
    assert!(took >= Duration::from_secs(2), "the update took {took:?}");
    c.wait_settled("4 tasks of v2", "web", |p| p.len() == 4 && all_on(p, "v2"));
    assert_eq!(update_state(&c, "web"), "completed");
}

#[test]
fn force_redeploys_every_task_and_rollback_returns_to_the_previous_version() {
    let c = Cluster::start(&["w1", "w2"]);
    let before = create_web(&c, &["--update-monitor", "1s", "--rollback-monitor", "1s"]);

    let out = c.shoal(&["service", "update", "--force", "web"]).ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    let forced = c.wait_settled("4 new tasks of v1", "web", |p| {
        p.len() == 4
            && all_on(p, "v1")
            && p.iter().all(|t| {
                before
                    .iter()
                    .all(|b| b.task_id != t.task_id && b.pid != t.pid)
            })
    });
    assert_eq!(update_state(&c, "web"), "completed");

    let out = c
        .shoal(&["service", "update", "--env-add", "VERSION=v2", "web"])
        .ok();
    assert!(out.contains("verify: Service web converged"), "{out}");
    c.wait_settled("4 tasks of v2", "web", |p| p.len() == 4 && all_on(p, "v2"));

    let out = c.shoal(&["service", "rollback", "web"]).ok();
    assert!(
        out.contains("rollback: manually requested rollback"),
        "{out}"
    );
    assert!(out.contains("verify: Service web converged"), "{out}");
    let back = c.wait_settled("4 tasks of v1 again", "web", |p| {
        p.len() == 4 && all_on(p, "v1")
    });
    assert!(
        back.iter().all(|t| !forced.contains(t)),
        "{forced:?}\n{back:?}"
    );
    assert_eq!(update_state(&c, "web"), "rollback_completed");
}

#[test]
fn a_global_service_converges_with_its_tasks_and_updates_node_by_node() {
    let c = Cluster::start(&["w1", "w2"]);
    let out = c
        .create_command_service(
            "agent",
            &[
                "--mode",
                "global",
                "--env",
                "VERSION=v1",
                "--update-parallelism",
                "1",
                "--update-monitor",
                "1s",
            ],
            &COMMAND,
        )
        .ok();
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert!(out.contains("verify: Service agent converged"), "{out}");
    let before = c.wait_settled("v1 on every node", "agent", |p| {
        p.len() == 3 && all_on(p, "v1")
    });

    let (run, fewest, _) = sampled(
        &c,
        "agent",
        &["service", "update", "--env-add", "VERSION=v2", "agent"],
    );
    let out = run.ok();
    assert!(out.contains("verify: Service agent converged"), "{out}");
    assert!(fewest >= 2, "only {fewest} tasks ran at some point");
    let after = c.wait_settled("v2 on every node", "agent", |p| {
        p.len() == 3 && all_on(p, "v2")
    });
    let nodes = |p: &[Placed]| {
        let mut n: Vec<String> = p.iter().map(|t| t.node.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(nodes(&after), ["m1", "w1", "w2"]);
    assert_eq!(nodes(&before), nodes(&after));
    assert_eq!(update_state(&c, "agent"), "completed");
}

#[test]
fn a_failing_task_is_restarted_at_most_max_attempts_times() {
    let c = Cluster::start(&["w1", "w2"]);
    let out = c
        .create_command_service(
            "fail",
            &[
                "-d",
                "--env",
                "VERSION=bad",
                "--restart-condition",
                "on-failure",
                "--restart-max-attempts",
                "2",
                "--restart-delay",
                "100ms",
            ],
            &COMMAND,
        )
        .ok();
    assert!(!out.trim().is_empty(), "{out}");

    // The first task and its two restarts, all failed.
    c.wait("3 failed tasks in slot 1", &["fail"], |c| {
        let rows = c.try_ps("fail")?;
        (rows.len() == 3 && rows.iter().all(|r| r.current.starts_with("Failed"))).then_some(())
    });
    // And no more: the last keeps its slot, failed.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let rows = c.ps("fail");
        assert_eq!(rows.len(), 3, "{rows:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = c.ps("fail");
    assert!(rows.iter().all(|r| r.name == "fail.1"), "{rows:#?}");
    let newest = rows.iter().find(|r| !r.history).unwrap();
    assert_eq!(newest.desired, "Running", "{rows:#?}");
    assert!(newest.current.starts_with("Failed"), "{rows:#?}");
    assert!(c.processes().is_empty(), "{:?}", c.processes());
}
