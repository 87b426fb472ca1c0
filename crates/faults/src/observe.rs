//! What the cluster's own store says while the faults happen: every committed change of
//! nodes, services and tasks, followed through the Watch API, and the invariants checked at
//! every commit rather than on a sampled list.
//!
//! The [`Observer`] subscribes to the Watch API of one manager (served from that manager's own
//! store) before the services exist, so it sees every task from its creation. When the stream
//! ends — its manager killed, paused, cut off, or its store replaced from a snapshot — it
//! resumes from the version of the last message it received on the next manager, so no commit
//! is missed or seen twice (the Watch API's `resume_from`); a manager that has not reached
//! that version yet refuses, and the next one is tried. Each message is stamped with the
//! instant it arrived (the run's clock), a little after its commit.
//!
//! Checked at every commit:
//!
//! - **No slot with two running tasks** (per slot for replicated services, per node for
//!   global ones): at most one task whose reported state is RUNNING, not counting a task whose
//!   node was not READY at some point while the task was up — a node that goes DOWN or
//!   DISCONNECTED legitimately gets its task replaced while it may still run there, and the
//!   store shows it RUNNING until the node reports again. Under stop-first the orchestrator
//!   must never start a unit's new task while the old one is reported running on a node that
//!   stayed up.
//! - **No task stuck PENDING or ASSIGNED** once the faults have stopped: a task wanted running
//!   that stays PENDING while some node is READY and ACTIVE, or ASSIGNED while its node is
//!   READY, for longer than [`STUCK_LIMIT`] counted from the end of the faults.
//! - Every change of a node's state is kept ([`NodeEvent`]), so the runner can tell which
//!   DOWN marks a fault explains.
//!
//! This replaces sampling task lists: a sample taken every second can miss a double start
//! that lasts less than a second; the commit stream cannot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::v1::watch_client::WatchClient;
use shoal_api::v1::{
    Node, ObjectKind, Service, Task, TaskState, WatchAction, WatchEntry, WatchRequest, node_spec,
    node_status, service_spec, stored_object,
};

use crate::cluster::local_channel;

/// How long a task may stay PENDING or ASSIGNED, while a node could take it, after the faults.
pub const STUCK_LIMIT: Duration = Duration::from_secs(20);

/// A node's state as the store recorded it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeEvent {
    /// When the watch delivered it (the run's clock).
    pub at: Duration,
    pub node: String,
    pub state: String,
    pub message: String,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Node>,
    services: HashMap<String, Service>,
    tasks: HashMap<String, Task>,
    /// Tasks whose node was not READY while they were up.
    excused: BTreeSet<String>,
    /// When each task wanted running entered PENDING or ASSIGNED.
    waiting_since: HashMap<String, Duration>,
    node_events: Vec<NodeEvent>,
    double_running: Vec<String>,
    stuck: Vec<String>,
    stuck_reported: BTreeSet<String>,
    /// Instant after which waiting counts as stuck (the end of the faults).
    stuck_from: Option<Duration>,
    commits: u64,
    resumes: u64,
    tasks_seen: BTreeSet<String>,
    version: u64,
    errors: Vec<String>,
}

/// What the observer saw, at the end of a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Observed {
    /// Commits that changed a node, service or task.
    pub commits: u64,
    /// Times the watch moved to another manager (or the same one again) without a gap.
    pub resumes: u64,
    /// Tasks seen.
    pub tasks: usize,
    pub node_events: Vec<NodeEvent>,
    /// Slots (or nodes, for global services) seen with two running tasks.
    pub double_running: Vec<String>,
    pub stuck: Vec<String>,
    /// Why the watch could not go on (it gave up), if it did.
    pub errors: Vec<String>,
}

/// Follows the managers' Watch API until stopped.
pub struct Observer {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    origin: Instant,
    task: tokio::task::JoinHandle<()>,
}

fn hostname(node: &Node) -> String {
    node.description
        .as_ref()
        .map(|d| d.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default())
}

fn node_state(node: &Node) -> i32 {
    node.status.as_ref().map(|s| s.state).unwrap_or_default()
}

fn task_state(task: &Task) -> i32 {
    task.status.as_ref().map(|s| s.state).unwrap_or_default()
}

fn id_of_task(task: &Task) -> String {
    task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default()
}

fn is_up(state: i32) -> bool {
    (TaskState::Assigned as i32..=TaskState::Running as i32).contains(&state)
}

impl State {
    fn apply(&mut self, at: Duration, action: i32, object: stored_object::Object) {
        let removed = action == WatchAction::Remove as i32;
        match object {
            stored_object::Object::Node(node) => {
                let id = node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
                let state = node_state(&node);
                let before = self.nodes.get(&id).map(node_state);
                if before != Some(state) {
                    self.node_events.push(NodeEvent {
                        at,
                        node: hostname(&node),
                        state: node_status::State::try_from(state)
                            .map(|s| s.as_str_name().to_string())
                            .unwrap_or_else(|_| state.to_string()),
                        message: node
                            .status
                            .as_ref()
                            .map(|s| s.message.clone())
                            .unwrap_or_default(),
                    });
                }
                if state != node_status::State::Ready as i32 {
                    for (tid, t) in &self.tasks {
                        if t.node_id == id && is_up(task_state(t)) {
                            self.excused.insert(tid.clone());
                        }
                    }
                }
                if removed {
                    self.nodes.remove(&id);
                } else {
                    self.nodes.insert(id, node);
                }
            }
            stored_object::Object::Service(service) => {
                let id = service
                    .meta
                    .as_ref()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                if removed {
                    self.services.remove(&id);
                } else {
                    self.services.insert(id, service);
                }
            }
            stored_object::Object::Task(task) => {
                let id = id_of_task(&task);
                if removed {
                    self.tasks.remove(&id);
                    self.waiting_since.remove(&id);
                    return;
                }
                let state = task_state(&task);
                let waiting = task.desired_state == TaskState::Running as i32
                    && (state == TaskState::Pending as i32 || state == TaskState::Assigned as i32);
                if waiting {
                    self.waiting_since.entry(id.clone()).or_insert(at);
                } else {
                    self.waiting_since.remove(&id);
                }
                let node_ready = self
                    .nodes
                    .get(&task.node_id)
                    .is_none_or(|n| node_state(n) == node_status::State::Ready as i32);
                if is_up(state) && !task.node_id.is_empty() && !node_ready {
                    self.excused.insert(id.clone());
                }
                self.tasks_seen.insert(id.clone());
                self.tasks.insert(id, task);
            }
            _ => {}
        }
    }

    /// The unit a task belongs to: its slot, or its node for a global service.
    fn unit(&self, task: &Task) -> (String, String) {
        let global = self
            .services
            .get(&task.service_id)
            .and_then(|s| s.spec.as_ref())
            .is_some_and(|s| matches!(s.mode, Some(service_spec::Mode::Global(_))));
        let unit = if global {
            format!("node {}", task.node_id)
        } else {
            format!("slot {}", task.slot)
        };
        (task.service_id.clone(), unit)
    }

    fn service_name(&self, id: &str) -> String {
        self.services
            .get(id)
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// The checks, after each commit.
    fn check(&mut self, at: Duration, version: u64) {
        let mut running: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (id, t) in &self.tasks {
            if task_state(t) == TaskState::Running as i32 && !self.excused.contains(id) {
                running.entry(self.unit(t)).or_default().push(id.clone());
            }
        }
        for ((service, unit), ids) in running {
            if ids.len() > 1 {
                let line = format!(
                    "{} {unit}: {} tasks running at once ({}) at store version {version}, {:.1} s",
                    self.service_name(&service),
                    ids.len(),
                    ids.join(", "),
                    at.as_secs_f64()
                );
                if !self.double_running.iter().any(|l| {
                    l.starts_with(&format!("{} {unit}:", self.service_name(&service)))
                        && l.contains(&ids.join(", "))
                }) {
                    self.double_running.push(line);
                }
            }
        }
        self.check_stuck(at);
    }

    fn check_stuck(&mut self, now: Duration) {
        let Some(from) = self.stuck_from else { return };
        let ready_active = |n: &Node| {
            node_state(n) == node_status::State::Ready as i32
                && n.spec
                    .as_ref()
                    .is_none_or(|s| s.availability == node_spec::Availability::Active as i32)
        };
        let any_ready = self.nodes.values().any(ready_active);
        let mut found = Vec::new();
        for (id, since) in &self.waiting_since {
            let waited = now.saturating_sub((*since).max(from));
            if waited < STUCK_LIMIT || self.stuck_reported.contains(id) {
                continue;
            }
            let Some(t) = self.tasks.get(id) else {
                continue;
            };
            let could = if task_state(t) == TaskState::Pending as i32 {
                any_ready
            } else {
                self.nodes.get(&t.node_id).is_some_and(ready_active)
            };
            if could {
                found.push((
                    id.clone(),
                    format!(
                        "task {id} of {} ({}) {} for {:.1} s after the faults while a node \
                         could take it",
                        self.service_name(&t.service_id),
                        self.unit(t).1,
                        TaskState::try_from(task_state(t))
                            .map(|s| s.as_str_name())
                            .unwrap_or("?"),
                        waited.as_secs_f64()
                    ),
                ));
            }
        }
        for (id, line) in found {
            self.stuck_reported.insert(id);
            self.stuck.push(line);
        }
    }
}

impl Observer {
    /// Starts following `managers` (`(name, socket)`), first the first one.
    pub fn start(managers: Vec<(String, PathBuf)>, origin: Instant) -> Observer {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow(managers, state.clone(), stop.clone(), origin));
        Observer {
            state,
            stop,
            origin,
            task,
        }
    }

    /// From now on, tasks waiting too long count as stuck (call when the faults end).
    pub fn faults_ended(&self) {
        let now = self.origin.elapsed();
        self.state.lock().unwrap().stuck_from = Some(now);
    }

    /// The store version of the last message received.
    pub fn version(&self) -> u64 {
        self.state.lock().unwrap().version
    }

    /// Waits until the watch has started (so that what follows is seen).
    pub async fn wait_subscribed(&self, limit: Duration) -> Result<(), String> {
        crate::cluster::eventually("the watch of nodes and tasks", limit, || async {
            (self.version() > 0).then_some(())
        })
        .await
    }

    /// Stops following and returns what was seen.
    pub async fn finish(self) -> Observed {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        let now = self.origin.elapsed();
        let mut state = self.state.lock().unwrap();
        state.check_stuck(now);
        Observed {
            commits: state.commits,
            resumes: state.resumes,
            tasks: state.tasks_seen.len(),
            node_events: state.node_events.clone(),
            double_running: state.double_running.clone(),
            stuck: state.stuck.clone(),
            errors: state.errors.clone(),
        }
    }
}

fn request(resume_from: u64) -> WatchRequest {
    let entry = |kind: ObjectKind| WatchEntry {
        kind: kind as i32,
        actions: 0,
        filters: Vec::new(),
    };
    WatchRequest {
        entries: vec![
            entry(ObjectKind::Node),
            entry(ObjectKind::Service),
            entry(ObjectKind::Task),
        ],
        resume_from,
        include_old_object: false,
    }
}

async fn follow(
    managers: Vec<(String, PathBuf)>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    origin: Instant,
) {
    let mut turn = 0usize;
    let mut failures_in_a_row = 0u32;
    let mut out_of_range = 0usize;
    // Bounded: the runner stops it; the loop also gives up after many failures in a row.
    while !stop.load(Ordering::Relaxed) {
        let (name, socket) = &managers[turn % managers.len()];
        turn += 1;
        let resume_from = state.lock().unwrap().version;
        let stream = async {
            let channel = local_channel(socket, Duration::from_secs(2))
                .await
                .map_err(|e| (e, false))?;
            let mut client = WatchClient::new(channel);
            let response =
                tokio::time::timeout(Duration::from_secs(3), client.watch(request(resume_from)))
                    .await
                    .map_err(|_| (format!("{name}: watch did not start within 3 s"), false))?
                    .map_err(|s| {
                        (
                            format!("{name}: {}", s.message()),
                            s.code() == tonic::Code::OutOfRange,
                        )
                    })?;
            Ok::<_, (String, bool)>(response.into_inner())
        };
        let mut stream = match stream.await {
            Ok(s) => s,
            Err((e, true)) => {
                // This manager's history does not reach back (its store was restored from a
                // snapshot, or it trimmed it): try the others first.
                out_of_range += 1;
                if out_of_range < managers.len() {
                    continue;
                }
                // No manager's does: start again from now, and say that commits were missed
                // (the checks above are then incomplete).
                out_of_range = 0;
                let mut s = state.lock().unwrap();
                s.errors
                    .push(format!("watch gap after version {resume_from}: {e}"));
                s.version = 0;
                continue;
            }
            Err((e, false)) => {
                failures_in_a_row += 1;
                if failures_in_a_row > 2_000 {
                    state.lock().unwrap().errors.push(e);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        out_of_range = 0;
        if resume_from > 0 {
            state.lock().unwrap().resumes += 1;
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // A stream silent for long may be on a paused or cut-off manager: move on.
            let next = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
            let message = match next {
                Ok(Ok(Some(m))) => m,
                _ => break,
            };
            failures_in_a_row = 0;
            let at = origin.elapsed();
            let mut s = state.lock().unwrap();
            if message.subscribed {
                if s.version == 0 {
                    s.version = message.version;
                }
                continue;
            }
            for event in message.events {
                if let Some(object) = event.object.and_then(|o| o.object) {
                    s.apply(at, event.action, object);
                }
            }
            s.version = message.version;
            s.commits += 1;
            s.check(at, message.version);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{Meta, NodeDescription, NodeStatus, TaskStatus};

    fn node(id: &str, state: node_status::State) -> stored_object::Object {
        stored_object::Object::Node(Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            description: Some(Box::new(NodeDescription {
                hostname: id.into(),
                ..Default::default()
            })),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn task(id: &str, node: &str, slot: u64, state: TaskState) -> stored_object::Object {
        stored_object::Object::Task(Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: "s".into(),
            slot,
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    const UPDATE: i32 = WatchAction::Update as i32;

    #[test]
    fn two_running_tasks_in_a_slot_are_caught() {
        let mut s = State::default();
        let t = Duration::from_secs(1);
        s.apply(t, UPDATE, node("n1", node_status::State::Ready));
        s.apply(t, UPDATE, node("n2", node_status::State::Ready));
        s.apply(t, UPDATE, task("a", "n1", 1, TaskState::Running));
        s.check(t, 1);
        assert!(s.double_running.is_empty());
        s.apply(t, UPDATE, task("b", "n2", 1, TaskState::Running));
        s.check(t, 2);
        assert_eq!(s.double_running.len(), 1, "{:?}", s.double_running);
        s.check(t, 3);
        assert_eq!(s.double_running.len(), 1, "reported once");
    }

    #[test]
    fn a_task_on_a_node_that_went_down_is_excused() {
        let mut s = State::default();
        let t = Duration::from_secs(1);
        s.apply(t, UPDATE, node("n1", node_status::State::Ready));
        s.apply(t, UPDATE, node("n2", node_status::State::Ready));
        s.apply(t, UPDATE, task("a", "n1", 1, TaskState::Running));
        s.apply(t, UPDATE, node("n1", node_status::State::Down));
        s.apply(t, UPDATE, task("b", "n2", 1, TaskState::Running));
        s.apply(t, UPDATE, node("n1", node_status::State::Ready));
        s.check(t, 4);
        assert!(s.double_running.is_empty(), "{:?}", s.double_running);
        assert_eq!(s.node_events.len(), 4);
        assert_eq!(s.node_events[2].state, "DOWN");
    }

    #[test]
    fn a_pending_task_is_stuck_only_after_the_faults_and_the_limit() {
        let mut s = State::default();
        let t0 = Duration::from_secs(1);
        s.apply(t0, UPDATE, node("n1", node_status::State::Ready));
        s.apply(t0, UPDATE, task("a", "", 1, TaskState::Pending));
        s.check_stuck(t0 + STUCK_LIMIT * 2);
        assert!(s.stuck.is_empty(), "faults not over yet");
        s.stuck_from = Some(Duration::from_secs(10));
        s.check_stuck(Duration::from_secs(10) + STUCK_LIMIT / 2);
        assert!(s.stuck.is_empty());
        s.check_stuck(Duration::from_secs(11) + STUCK_LIMIT);
        assert_eq!(s.stuck.len(), 1, "{:?}", s.stuck);
        s.apply(t0, UPDATE, task("a", "n1", 1, TaskState::Running));
        assert!(s.waiting_since.is_empty());
    }
}
