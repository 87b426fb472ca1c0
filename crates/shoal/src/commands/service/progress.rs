//! Waiting for a service to converge, with docker's progress display: `overall progress: k out
//! of N tasks`, one line per slot (per node for global services) with the state of its task
//! (or why it failed), then `verify: Service NAME converged`.
//!
//! The service and its tasks are polled every 500 ms. On a terminal the block is redrawn in
//! place; otherwise each line is printed when it changes.
//!
//! Between polls, [`Tracker`] remembers what one poll cannot tell: why an update was rolled
//! back (the reason is in the `UpdateStatus` while the rollback runs, and replaced by
//! "rollback completed" when it ends), and how long a global service has had no task at all.
//! "0 out of 0 tasks" is converged only once it has lasted [`EMPTY_GRACE`]: right after the
//! service is created or updated, the orchestrator may not have created its tasks yet, and
//! nothing the Control API returns says whether it has (a global service's desired count in
//! `ListServiceStatuses` is its number of tasks meant to run: 0 too).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use shoal_api::v1::{GetServiceRequest, Service, Task, TaskState, service_spec, update_status};

use super::{state_name, tasks_of};
use crate::commands::client::Client;
use crate::commands::output;

const POLL: Duration = Duration::from_millis(500);

/// How long a global service must be seen with no task before that counts as converged (it
/// has no node to run on), over at least [`EMPTY_POLLS`] polls.
pub const EMPTY_GRACE: Duration = Duration::from_secs(2);

/// How many consecutive polls must see a global service with no task before that counts as
/// converged.
pub const EMPTY_POLLS: u32 = 4;

/// Where the service stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Waiting,
    Converged,
    Failed(String),
}

/// The progress display of a service and its tasks: lines, and whether it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub lines: Vec<String>,
    pub outcome: Outcome,
}

/// States in order, for the progress bar (docker's numbering: running is the last).
fn step(state: i32) -> u32 {
    match TaskState::try_from(state) {
        Ok(TaskState::New) => 1,
        Ok(TaskState::Pending) => 3,
        Ok(TaskState::Assigned) => 4,
        Ok(TaskState::Accepted) => 5,
        Ok(TaskState::Preparing) => 6,
        Ok(TaskState::Ready) => 7,
        Ok(TaskState::Starting) => 8,
        Ok(TaskState::Running) | Ok(TaskState::Complete) => 9,
        _ => 0,
    }
}

const BAR_WIDTH: u32 = 50;

fn bar(state: i32) -> String {
    let filled = BAR_WIDTH * step(state) / 9;
    if filled == 0 {
        return String::new();
    }
    let mut s = String::from("[");
    s.extend(std::iter::repeat_n('=', filled.saturating_sub(1) as usize));
    s.push('>');
    s.extend(std::iter::repeat_n(' ', (BAR_WIDTH - filled) as usize));
    s.push(']');
    s
}

fn created(task: &Task) -> (i64, i32, u64) {
    let meta = task.meta.as_ref();
    let at = meta.and_then(|m| m.created_at.as_ref());
    (
        at.map(|t| t.seconds).unwrap_or(0),
        at.map(|t| t.nanos).unwrap_or(0),
        meta.map(|m| m.version).unwrap_or(0),
    )
}

fn status_state(task: &Task) -> i32 {
    task.status.as_ref().map(|s| s.state).unwrap_or(0)
}

/// One task's line after its label: its error if it has one, else its state and a bar.
fn task_line(task: Option<&Task>) -> String {
    let Some(task) = task else {
        return "waiting for a task".into();
    };
    let status = task.status.clone().unwrap_or_default();
    if !status.err.is_empty() {
        return format!("{}: {}", state_name(status.state), status.err);
    }
    format!("{:<9} {}", state_name(status.state), bar(status.state))
        .trim_end()
        .to_string()
}

/// The progress of `service` given its tasks. `rollback`: a rollback was asked for (so a
/// completed rollback is success, not failure).
pub fn progress(service: &Service, tasks: &[Task], rollback: bool) -> Progress {
    let spec = service.spec.clone().unwrap_or_default();
    // Up to date: the task runs the current spec version, or the same task spec (a change of
    // the replica count, say, does not redeploy tasks).
    let up_to_date = |t: &Task| {
        t.spec_version >= service.spec_version || (t.spec.is_some() && t.spec == spec.task)
    };
    let running = TaskState::Running as i32;
    let complete = TaskState::Complete as i32;
    let iteration = service.job_status.as_ref().map(|j| j.job_iteration);
    let current_iteration = |t: &Task| iteration.is_none_or(|i| t.job_iteration == i);
    let mut lines = Vec::new();
    let (done, total) = match spec.mode.as_ref() {
        Some(service_spec::Mode::Replicated(_)) | Some(service_spec::Mode::ReplicatedJob(_)) => {
            let job = matches!(spec.mode, Some(service_spec::Mode::ReplicatedJob(_)));
            let total = match spec.mode.as_ref() {
                Some(service_spec::Mode::Replicated(r)) => r.replicas,
                Some(service_spec::Mode::ReplicatedJob(j)) if j.total_completions > 0 => {
                    j.total_completions
                }
                Some(service_spec::Mode::ReplicatedJob(j)) => j.max_concurrent,
                _ => 0,
            };
            // The newest task of each slot, preferring the one meant to run.
            let mut by_slot: BTreeMap<u64, &Task> = BTreeMap::new();
            for t in tasks.iter().filter(|t| !job || current_iteration(t)) {
                let better = match by_slot.get(&t.slot) {
                    None => true,
                    Some(have) => {
                        let wanted = |x: &Task| x.desired_state <= complete;
                        (wanted(t), created(t)) > (wanted(have), created(have))
                    }
                };
                if better {
                    by_slot.insert(t.slot, t);
                }
            }
            let mut done = 0;
            for slot in 1..=total {
                let task = by_slot.get(&slot).copied();
                let ok = task.is_some_and(|t| {
                    up_to_date(t)
                        && if job {
                            status_state(t) == complete
                        } else {
                            status_state(t) == running && t.desired_state == running
                        }
                });
                if ok {
                    done += 1;
                }
                lines.push(format!("{slot}/{total}: {}", task_line(task)));
            }
            // Tasks beyond the wanted slots (a scale-down) must stop first.
            if !job
                && tasks.iter().any(|t| {
                    t.slot > total && status_state(t) <= running && t.desired_state <= running
                })
            {
                done = done.min(total.saturating_sub(1));
            }
            (done, total)
        }
        Some(service_spec::Mode::Global(_)) | Some(service_spec::Mode::GlobalJob(_)) => {
            let job = matches!(spec.mode, Some(service_spec::Mode::GlobalJob(_)));
            let mut by_node: BTreeMap<&str, &Task> = BTreeMap::new();
            for t in tasks.iter().filter(|t| {
                if job {
                    current_iteration(t) && t.desired_state <= complete
                } else {
                    t.desired_state == running
                }
            }) {
                let newer = by_node
                    .get(t.node_id.as_str())
                    .is_none_or(|have| created(t) > created(have));
                if newer {
                    by_node.insert(&t.node_id, t);
                }
            }
            let mut done = 0;
            for (node, task) in &by_node {
                let want = if job { complete } else { running };
                if up_to_date(task) && status_state(task) == want {
                    done += 1;
                }
                let label = if node.is_empty() {
                    "unassigned".to_string()
                } else {
                    output::short_id(node).to_string()
                };
                lines.push(format!("{label}: {}", task_line(Some(task))));
            }
            (done, by_node.len() as u64)
        }
        None => (0, 0),
    };
    lines.insert(0, format!("overall progress: {done} out of {total} tasks"));
    let mut outcome = if done == total {
        Outcome::Converged
    } else {
        Outcome::Waiting
    };
    if let Some(u) = service.update_status.as_ref() {
        use update_status::UpdateState as S;
        let why = |what: &str| {
            if u.message.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {}", u.message)
            }
        };
        match S::try_from(u.state) {
            Ok(S::Paused) => outcome = Outcome::Failed(why("update paused")),
            Ok(S::RollbackPaused) => outcome = Outcome::Failed(why("rollback paused")),
            Ok(S::RollbackCompleted) if !rollback => {
                outcome = Outcome::Failed(why("update rolled back"))
            }
            Ok(S::Updating) | Ok(S::RollbackStarted) if outcome == Outcome::Converged => {
                outcome = Outcome::Waiting
            }
            _ => {}
        }
    }
    Progress { lines, outcome }
}

/// What the wait remembers from one poll to the next (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Tracker {
    /// A rollback was asked for.
    rollback: bool,
    /// Since when, and over how many consecutive polls, a global service had no task.
    empty: Option<(Instant, u32)>,
    /// The message of an automatic rollback, once seen.
    rollback_cause: Option<String>,
}

impl Tracker {
    /// A tracker for a wait; `rollback`: a rollback was asked for (see [`progress`]).
    pub fn new(rollback: bool) -> Tracker {
        Tracker {
            rollback,
            empty: None,
            rollback_cause: None,
        }
    }

    /// The progress of `service` and its tasks as polled at `now`.
    pub fn poll(&mut self, service: &Service, tasks: &[Task], now: Instant) -> Progress {
        use update_status::UpdateState as S;
        let mut p = progress(service, tasks, self.rollback);
        let update = service
            .update_status
            .as_ref()
            .map(|u| (S::try_from(u.state).ok(), u.message.as_str()));
        if !self.rollback {
            if let Some((Some(S::RollbackStarted), message)) = update
                && !message.is_empty()
            {
                self.rollback_cause = Some(message.to_string());
            }
            if let Some(cause) = &self.rollback_cause {
                p.lines.push(format!("rollback: {cause}"));
                if let Some((Some(S::RollbackCompleted), _)) = update {
                    p.outcome = Outcome::Failed(format!("update rolled back: {cause}"));
                }
            }
        }
        let global = matches!(
            service.spec.as_ref().and_then(|s| s.mode.as_ref()),
            Some(service_spec::Mode::Global(_))
        );
        let no_task = !tasks
            .iter()
            .any(|t| t.desired_state == TaskState::Running as i32);
        if global && no_task && p.outcome == Outcome::Converged {
            let (since, polls) = self.empty.get_or_insert((now, 0));
            *polls += 1;
            if *polls < EMPTY_POLLS || now.saturating_duration_since(*since) < EMPTY_GRACE {
                p.outcome = Outcome::Waiting;
            }
        } else {
            self.empty = None;
        }
        p
    }
}

/// Redraws or appends the progress block.
struct Display {
    tty: bool,
    shown: Vec<String>,
}

impl Display {
    fn show(&mut self, lines: &[String]) -> Result<(), String> {
        let out = self.frame(lines);
        if out.is_empty() {
            return Ok(());
        }
        output::print(&out)
    }

    /// What [`Display::show`] writes for `lines`: on a terminal, the cursor moved up over the
    /// block shown before and every line redrawn (nothing if nothing changed); otherwise the
    /// lines that changed since the last poll.
    fn frame(&mut self, lines: &[String]) -> String {
        let mut out = String::new();
        if self.tty {
            if lines == self.shown.as_slice() {
                return out;
            }
            if !self.shown.is_empty() {
                out.push_str(&format!("\x1b[{}A", self.shown.len()));
            }
            for line in lines {
                out.push_str("\x1b[2K");
                out.push_str(line);
                out.push('\n');
            }
        } else {
            for (i, line) in lines.iter().enumerate() {
                if self.shown.get(i) != Some(line) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        self.shown = lines.to_vec();
        out
    }
}

/// The line printed once the service has converged (or, for a job, completed).
fn verify_line(service: &Service) -> String {
    let name = super::name(service);
    let is_job =
        shoal_api::validation::is_job(service.spec.as_ref().unwrap_or(&Default::default()));
    if is_job {
        format!("verify: Job {name} complete\n")
    } else {
        format!("verify: Service {name} converged\n")
    }
}

/// Waits until the service converges, showing progress; fails if its update pauses or rolls
/// back, or if it is removed meanwhile.
pub async fn wait(c: &mut Client, service_id: &str) -> Result<(), String> {
    wait_for(c, service_id, false).await
}

/// [`wait`], after a rollback was asked for. Ctrl-C stops the waiting, not the operation:
/// it goes on in the background, as the message says.
pub async fn wait_for(c: &mut Client, service_id: &str, rollback: bool) -> Result<(), String> {
    tokio::select! {
        waited = follow(c, service_id, rollback) => waited,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nOperation continuing in the background. Follow it with `shoal service ps \
                 {service_id}`."
            );
            Ok(())
        }
    }
}

async fn follow(c: &mut Client, service_id: &str, rollback: bool) -> Result<(), String> {
    let mut display = Display {
        tty: std::io::stdout().is_terminal(),
        shown: Vec::new(),
    };
    let mut tracker = Tracker::new(rollback);
    loop {
        let service = c
            .control()
            .get_service(GetServiceRequest {
                service_id: service_id.to_string(),
                insert_defaults: false,
            })
            .await
            .map_err(|s| c.error("GetService", &s))?
            .into_inner()
            .service
            .ok_or("the manager did not return the service")?;
        let tasks = tasks_of(c, service_id).await?;
        let p = tracker.poll(&service, &tasks, Instant::now());
        display.show(&p.lines)?;
        match p.outcome {
            Outcome::Converged => return output::print(&verify_line(&service)),
            Outcome::Failed(why) => return Err(why),
            Outcome::Waiting => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::tests::service;
    use shoal_api::v1::{Meta, TaskStatus, UpdateStatus};

    fn task(id: &str, slot: u64, desired: TaskState, state: TaskState, at: i64) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                version: 1,
                created_at: Some(prost_types::Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
                updated_at: None,
            }),
            slot,
            spec_version: 2,
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The polls of `shoal service create --replicas 3 --name web ...`: no task yet; tasks
    /// on their way; slot 3's task fails and is replaced; all running.
    fn create_polls() -> (Service, Vec<Vec<Task>>) {
        use TaskState::{Assigned, Failed, Pending, Preparing, Running, Shutdown, Starting};
        let s = service("svc", "web", 3);
        let mut failed = task("t3", 3, Shutdown, Failed, 3);
        failed.status.as_mut().unwrap().err =
            "starting \"sleep\": No such file or directory (os error 2)".into();
        let polls = vec![
            vec![],
            vec![
                task("t1", 1, Running, Preparing, 1),
                task("t2", 2, Running, Assigned, 1),
                task("t3", 3, Running, Pending, 1),
            ],
            vec![
                task("t1", 1, Running, Running, 1),
                task("t2", 2, Running, Starting, 1),
                failed.clone(),
            ],
            vec![
                task("t1", 1, Running, Running, 1),
                task("t2", 2, Running, Running, 1),
                failed,
                task("t4", 3, Running, Running, 4),
            ],
        ];
        (s, polls)
    }

    /// What a wait prints over `polls`, as `follow` does.
    fn printed(tty: bool, service: &Service, polls: &[Vec<Task>]) -> String {
        let mut display = Display {
            tty,
            shown: Vec::new(),
        };
        let mut tracker = Tracker::new(false);
        let mut out = String::new();
        for tasks in polls {
            let p = tracker.poll(service, tasks, Instant::now());
            out.push_str(&display.frame(&p.lines));
            if p.outcome == Outcome::Converged {
                out.push_str(&verify_line(service));
            }
        }
        out
    }

    #[test]
    fn snapshot_plain_progress() {
        // Not on a terminal: each line once, when it changes.
        let (s, polls) = create_polls();
        insta::assert_snapshot!("progress_plain", printed(false, &s, &polls));
    }

    #[test]
    fn snapshot_terminal_frame() {
        // On a terminal, the third poll: the cursor goes up over the 4 lines drawn at the
        // second, and each line is erased and drawn again. Escapes shown as `^[`.
        let (s, polls) = create_polls();
        let mut display = Display {
            tty: true,
            shown: Vec::new(),
        };
        let mut tracker = Tracker::new(false);
        let mut frames = Vec::new();
        for tasks in &polls[..3] {
            frames.push(display.frame(&tracker.poll(&s, tasks, Instant::now()).lines));
        }
        insta::assert_snapshot!("progress_terminal_frame", frames[2].replace('\x1b', "^["));
        // The same lines again: nothing is redrawn.
        let again = tracker.poll(&s, &polls[2], Instant::now());
        assert_eq!(display.frame(&again.lines), "");
    }

    #[test]
    fn snapshot_global_job_and_rollback_progress() {
        use TaskState::{Complete, Running, Starting};
        let on = |mut t: Task, node: &str| {
            t.node_id = node.into();
            t
        };
        // A global service on three nodes, one task still starting.
        let mut agent = service("svc", "agent", 0);
        agent.spec.as_mut().unwrap().mode = Some(service_spec::Mode::Global(Default::default()));
        let tasks = [
            on(
                task("a", 0, Running, Running, 1),
                "7x3lzq0c1n8d5k2m9w4v6b8hr",
            ),
            on(
                task("b", 0, Running, Starting, 1),
                "q5t8w2e4r6y1u3i9o0p7a5s2d",
            ),
            on(
                task("c", 0, Running, Running, 1),
                "e2r4t6y8u0i1o3p5a7s9d1f3g",
            ),
        ];
        let mut out = progress(&agent, &tasks, false).lines.join("\n");
        out.push_str("\n\n");
        // A replicated job of 4 completions, 2 at a time, done.
        let mut job = service("svc", "migrate", 0);
        job.spec.as_mut().unwrap().mode = Some(service_spec::Mode::ReplicatedJob(
            shoal_api::v1::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 4,
            },
        ));
        let done: Vec<Task> = (1..=4)
            .map(|i| task(&format!("j{i}"), i, Complete, Complete, 1))
            .collect();
        let p = progress(&job, &done, false);
        assert_eq!(p.outcome, Outcome::Converged);
        out.push_str(&(p.lines.join("\n") + "\n"));
        out.push_str(&verify_line(&job));
        out.push('\n');
        // An update rolled back on its own: the cause below the slots.
        let mut web = service("svc", "web", 2);
        web.update_status = Some(UpdateStatus {
            state: update_status::UpdateState::RollbackStarted as i32,
            message: "update rolled back due to failure or early termination of task t9".into(),
            ..Default::default()
        });
        let running = [
            task("t1", 1, Running, Running, 1),
            task("t2", 2, Running, Starting, 1),
        ];
        let p = Tracker::new(false).poll(&web, &running, Instant::now());
        out.push_str(&p.lines.join("\n"));
        insta::assert_snapshot!("progress_global_job_rollback", out);
    }

    #[test]
    fn replicated_progress_shows_one_line_per_slot() {
        use TaskState::{Failed, Preparing, Running, Shutdown};
        let s = service("svc", "web", 3);
        let mut failed = task("t0", 2, Shutdown, Failed, 1);
        failed.status.as_mut().unwrap().err = "exit status 1".into();
        let tasks = vec![
            task("t1", 1, Running, Running, 2),
            failed,
            task("t2", 2, Running, Preparing, 3),
        ];
        let p = progress(&s, &tasks, false);
        assert_eq!(p.outcome, Outcome::Waiting);
        assert_eq!(p.lines[0], "overall progress: 1 out of 3 tasks");
        assert!(
            p.lines[1].starts_with("1/3: running   [=========="),
            "{p:?}"
        );
        assert!(p.lines[1].ends_with(">]"), "{p:?}");
        assert!(p.lines[2].starts_with("2/3: preparing [="), "{p:?}");
        assert!(p.lines[2].ends_with(' ') || p.lines[2].ends_with(']'));
        assert_eq!(p.lines[3], "3/3: waiting for a task");

        // The newest task of slot 2 failed: its error is on its line.
        let mut failing = task("t3", 2, Running, Failed, 4);
        failing.status.as_mut().unwrap().err = "no such file".into();
        let p = progress(&s, &[tasks[0].clone(), failing], false);
        assert_eq!(p.lines[2], "2/3: failed: no such file");

        let all: Vec<Task> = (1..=3)
            .map(|i| task(&format!("r{i}"), i, Running, Running, 5))
            .collect();
        let p = progress(&s, &all, false);
        assert_eq!(p.outcome, Outcome::Converged);
        assert_eq!(p.lines[0], "overall progress: 3 out of 3 tasks");
        // Running tasks of an older spec do not count.
        let mut old = all.clone();
        old[0].spec_version = 1;
        assert_eq!(progress(&s, &old, false).outcome, Outcome::Waiting);
        // Unless they run the same task spec (a scale changes the version, not the tasks).
        old[0].spec = s.spec.as_ref().unwrap().task.clone();
        assert_eq!(progress(&s, &old, false).outcome, Outcome::Converged);
    }

    #[test]
    fn paused_and_rolled_back_updates_fail() {
        let mut s = service("svc", "web", 0);
        assert_eq!(progress(&s, &[], false).outcome, Outcome::Converged);
        s.update_status = Some(UpdateStatus {
            state: update_status::UpdateState::Paused as i32,
            message: "task t1 failed".into(),
            ..Default::default()
        });
        assert_eq!(
            progress(&s, &[], false).outcome,
            Outcome::Failed("update paused: task t1 failed".into())
        );
        s.update_status.as_mut().unwrap().state =
            update_status::UpdateState::RollbackCompleted as i32;
        assert!(matches!(
            progress(&s, &[], false).outcome,
            Outcome::Failed(_)
        ));
        assert_eq!(progress(&s, &[], true).outcome, Outcome::Converged);
    }

    #[test]
    fn a_global_service_without_tasks_converges_only_once_that_lasts() {
        let mut s = service("svc", "agent", 0);
        s.spec.as_mut().unwrap().mode = Some(service_spec::Mode::Global(Default::default()));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Just created: no task yet, which may only mean the orchestrator has not made them.
        let mut t = Tracker::new(false);
        for ms in [0, 500, 1000, 1500] {
            let p = t.poll(&s, &[], at(ms));
            assert_eq!(p.outcome, Outcome::Waiting, "at {ms} ms");
            assert_eq!(p.lines[0], "overall progress: 0 out of 0 tasks");
        }
        // Tasks appear: they are waited for, and the count of empty polls starts again.
        let mut a = task("a", 0, TaskState::Running, TaskState::Pending, 1);
        a.node_id = "node0000000000001".into();
        assert_eq!(t.poll(&s, &[a], at(2000)).outcome, Outcome::Waiting);
        // (Their node was drained, say: none is meant to run any more.)
        for ms in [2500, 3000, 3500, 4000] {
            assert_eq!(t.poll(&s, &[], at(ms)).outcome, Outcome::Waiting, "{ms}");
        }
        assert_eq!(t.poll(&s, &[], at(4500)).outcome, Outcome::Converged);

        // Many quick polls are not enough, nor a long time over too few polls.
        let mut t = Tracker::new(false);
        for ms in 0..10 {
            assert_eq!(t.poll(&s, &[], at(ms)).outcome, Outcome::Waiting);
        }
        let mut t = Tracker::new(false);
        for ms in [0, 5000, 10_000] {
            assert_eq!(t.poll(&s, &[], at(ms)).outcome, Outcome::Waiting);
        }
        assert_eq!(t.poll(&s, &[], at(15_000)).outcome, Outcome::Converged);

        // A replicated service of 0 replicas has converged at once: its count is its spec's.
        let zero = service("svc", "web", 0);
        let mut t = Tracker::new(false);
        assert_eq!(t.poll(&zero, &[], start).outcome, Outcome::Converged);
    }

    #[test]
    fn an_automatic_rollback_fails_with_its_cause() {
        use update_status::UpdateState;
        let mut s = service("svc", "web", 1);
        let start = Instant::now();
        let running = [task("t1", 1, TaskState::Running, TaskState::Running, 1)];
        let cause = "update rolled back due to failure or early termination of task t9";
        s.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackStarted as i32,
            message: cause.into(),
            ..Default::default()
        });
        let mut t = Tracker::new(false);
        let p = t.poll(&s, &running, start);
        assert_eq!(p.outcome, Outcome::Waiting);
        assert_eq!(p.lines.last().unwrap(), &format!("rollback: {cause}"));
        s.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackCompleted as i32,
            message: "rollback completed".into(),
            ..Default::default()
        });
        assert_eq!(
            t.poll(&s, &running, start).outcome,
            Outcome::Failed(format!("update rolled back: {cause}"))
        );
        // Seen only once completed, it says what the status says.
        assert_eq!(
            Tracker::new(false).poll(&s, &running, start).outcome,
            Outcome::Failed("update rolled back: rollback completed".into())
        );
        // A rollback the user asked for succeeds.
        let mut t = Tracker::new(true);
        s.update_status.as_mut().unwrap().state = UpdateState::RollbackStarted as i32;
        s.update_status.as_mut().unwrap().message = "manually requested rollback".into();
        assert_eq!(t.poll(&s, &running, start).outcome, Outcome::Waiting);
        s.update_status.as_mut().unwrap().state = UpdateState::RollbackCompleted as i32;
        assert_eq!(t.poll(&s, &running, start).outcome, Outcome::Converged);
    }

    #[test]
    fn global_progress_shows_one_line_per_node() {
        let mut s = service("svc", "agent", 0);
        s.spec.as_mut().unwrap().mode = Some(service_spec::Mode::Global(Default::default()));
        let mut a = task("a", 0, TaskState::Running, TaskState::Running, 1);
        a.node_id = "node0000000000001".into();
        let mut b = task("b", 0, TaskState::Running, TaskState::Pending, 1);
        b.node_id = "node0000000000002".into();
        let p = progress(&s, &[a, b], false);
        assert_eq!(p.lines[0], "overall progress: 1 out of 2 tasks");
        assert!(p.lines[1].starts_with("node00000000: running"), "{p:?}");
        assert_eq!(p.outcome, Outcome::Waiting);
    }
}
