//! The orchestrator: the leader's loop that turns services into tasks on nodes, and keeps
//! them there.
//!
//! While this manager leads, [`Orchestrator`] runs *rounds*. A round reads the whole store
//! (services, tasks, nodes, networks), asks the pure decision cores what should change, and
//! writes the changes in as few transactions as the store's size limits allow (a store
//! batch: a round may create a hundred thousand tasks):
//!
//! 1. **Replicated services** ([`replicated::reconcile`]): tasks created for empty slots,
//!    stopped above the replica count, replaced when they ended (restart policy) or their
//!    node was lost. A task created to restart another is held at desired state READY until
//!    its restart delay has passed, then set to RUNNING.
//!    **Jobs** ([`jobs`]): replicated jobs run up to `max_concurrent` tasks until
//!    `total_completions` have completed, global jobs one task per node; a completed task is
//!    never restarted; an update of the job's spec re-runs it as a new iteration.
//!    **Global services** ([`global::reconcile`]): a task on every READY, ACTIVE node where
//!    the scheduler's filters say it fits, stopped on drained, down or removed nodes,
//!    restarted on its node as the restart policy says.
//! 2. **Deleted services**: their tasks are told to stop, and removed from the store once
//!    they have stopped (or never reached a node). **The reaper**: of a slot's stopped tasks
//!    (a node's, for global services) only the newest `task_history_retention_limit` (5 by
//!    default) stay in the store.
//! 3. **Scheduling** ([`crate::scheduler`]): tasks without a node get one (status ASSIGNED),
//!    or stay PENDING with the reason no node fits — recorded only when it changes, so a
//!    round that changes nothing writes nothing.
//!
//! Rounds are level-triggered: one runs when leadership is gained, after every change of a
//! service, task or node in the store (changes that arrive together make one round), and
//! when a restart delay or an update's delay or monitor period ends. Whatever a round decides
//! is computed from the state it read, so a new leader converges from whatever the old one
//! left; a write that conflicts with a concurrent one is simply redone by the next round.
//! Every decision is a function of the store and the clock: a restart delay's end is its
//! attempt's time when the policy limits attempts, else a new leader takes "now" as its
//! start.
//!
//! The clock is an input: a round takes the instant (restart delays, update pacing) and the
//! wall-clock time (timestamps, restart attempts, failure windows) as arguments
//! ([`Orchestrator::round_at`]); the loop passes the machine's. The deterministic simulation
//! (`shoal-sim`) runs rounds itself on simulated time, through hooks kept out of the docs:
//! [`Orchestrator::driven`] (no Raft handle), `round_at`, [`Orchestrator::next_wake`],
//! [`Orchestrator::observe`] and [`Orchestrator::set_id_source`] (task IDs from its seed).
//! Decisions never depend on a hash map's iteration order (the writes' order and the groups'
//! placement order are sorted), so a round is a function of the store, the clocks and the
//! IDs it is given. A restart delay that has ended while its unit is still busy does not
//! wake the loop: the old task's stop, a store change, does.
//!
//! Invariants: the orchestrator writes only on the leader (a write elsewhere fails and the
//! loop waits for leadership again), and only once that leader has applied an entry of its
//! own term (`RaftStatus::leader_caught_up`): before that its store may lack its
//! predecessor's last writes, and a task created for a slot there would be created twice
//! (creates carry no version for the state machine to check); a round that finds nothing to
//! change writes nothing, so its own writes cannot make it spin.
//!
//! Rolling updates and rollbacks are paced and judged by [`update`]; their `UpdateStatus`
//! and an automatic rollback's spec swap are written in the same transaction as the round's
//! task changes.
//!
//! Departure from SwarmKit: one loop and one batch of writes per round instead of an
//! orchestrator, a restart supervisor, a task reaper and a scheduler each watching the store
//! on its own; simpler to reason about, and incremental updates can come when the benchmarks
//! ask for them.

pub mod global;
pub mod jobs;
pub mod replicated;
pub mod update;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{Meta, Network, Node, ObjectKind, Service, Task, TaskState, TaskStatus};
use shoal_raft::RaftHandle;

use crate::dispatcher::Leadership;
use shoal_store::{By, Filter, Reader, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::allocator::Allocations;
use crate::scheduler::{Decision, Scheduler, enforcer};
use replicated::Change;

/// How long a round waits, at most, when nothing happens (a safety net: rounds are driven by
/// store changes and timers).
const IDLE_ROUND: Duration = Duration::from_secs(10);

/// The leader's orchestrator. [`Orchestrator::start`] spawns its loop; the returned
/// [`OrchestratorTask`] stops it.
pub struct Orchestrator {
    store: Store,
    leadership: Arc<dyn Leadership>,
    scheduler: Scheduler,
    /// Tasks held at desired READY until their restart delay ends.
    delayed: HashMap<String, Instant>,
    /// When a rolling update's delay or monitor period ends (the earliest).
    update_wake: Option<Instant>,
    /// When the last round ran: a restart delay that had ended by then and still holds its
    /// task is waiting for the task's unit to free up, which a store change will tell.
    last_round: Option<Instant>,
    /// The version of each node the constraint enforcer last checked.
    enforced: HashMap<String, u64>,
    /// Whether the scheduler's view matches the store (up to the changes not observed yet).
    scheduler_fresh: bool,
    /// Where new task IDs come from: random IDs, unless a simulation injected its own.
    ids: Option<Box<dyn FnMut() -> String + Send>>,
}

/// Raft's status for an orchestrator driven from outside ([`Orchestrator::driven`]): it never
/// leads as far as [`Orchestrator::start`]'s loop can tell.
struct Driven(watch::Sender<shoal_raft::RaftStatus>);

impl Leadership for Driven {
    fn status(&self) -> shoal_raft::RaftStatus {
        self.0.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<shoal_raft::RaftStatus> {
        self.0.subscribe()
    }

    fn not_leader(&self) -> tonic::Status {
        tonic::Status::failed_precondition("this orchestrator is driven from outside Raft")
    }
}

/// The running orchestrator loop; [`OrchestratorTask::stop`] ends it and waits.
pub struct OrchestratorTask {
    stop: watch::Sender<bool>,
    join: Option<JoinHandle<()>>,
}

impl OrchestratorTask {
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for OrchestratorTask {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

fn id_of<T: HasMeta>(object: &T) -> &str {
    object.meta().map(|m| m.id.as_str()).unwrap_or("")
}

trait HasMeta {
    fn meta(&self) -> Option<&Meta>;
}

impl HasMeta for Task {
    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }
}

impl HasMeta for Service {
    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }
}

fn state_of(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

/// The machine's time as a timestamp (the tests' task statuses).
#[cfg(test)]
fn now() -> prost_types::Timestamp {
    use shoal_api::clock::Clock;
    shoal_api::clock::SystemClock.timestamp()
}

/// A new task for `slot` of `service`, wanted RUNNING (or READY while a restart delay runs),
/// with ID `id`, created at `at`.
fn new_task(service: &Service, slot: u64, desired: TaskState, id: String, at: SystemTime) -> Task {
    let spec = service.spec.as_ref();
    Task {
        meta: Some(Meta {
            id,
            ..Default::default()
        }),
        spec: spec.and_then(|s| s.task.clone()),
        spec_version: service.spec_version,
        service_id: id_of(service).to_string(),
        slot,
        service_annotations: spec.and_then(|s| s.annotations.clone()).map(Box::new),
        status: Some(TaskStatus {
            timestamp: Some(at.into()),
            state: TaskState::New as i32,
            message: "created".into(),
            ..Default::default()
        }),
        desired_state: desired as i32,
        job_iteration: jobs::iteration(service),
        ..Default::default()
    }
}

/// Stopped tasks kept per slot: the cluster's `task_history_retention_limit` (negative: none),
/// else the default.
fn history_limit(store: &Store) -> usize {
    let limit = store
        .view(|tx| {
            tx.find::<shoal_api::v1::Cluster>(By::All)
                .into_iter()
                .next()
        })
        .and_then(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.orchestration.as_ref())
                .map(|o| o.task_history_retention_limit)
        })
        .unwrap_or(shoal_api::defaults::TASK_HISTORY_RETENTION_LIMIT);
    usize::try_from(limit).unwrap_or(0)
}

fn assigned_status(at: SystemTime) -> TaskStatus {
    TaskStatus {
        timestamp: Some(at.into()),
        state: TaskState::Assigned as i32,
        message: "scheduler assigned task to node".into(),
        ..Default::default()
    }
}

/// A task's unit: its service and slot, or its service and node for global services.
type Unit = (String, u64, String);

fn unit_of(task: &Task) -> Unit {
    let node = if task.slot == 0 {
        task.node_id.clone()
    } else {
        String::new()
    };
    (task.service_id.clone(), task.slot, node)
}

/// Whether `task` may still be running: it has not ended, and its node is there and not
/// DOWN (a down node's tasks are given up on, as in SwarmKit).
fn still_running(task: &Task, nodes: &HashMap<String, Arc<Node>>) -> bool {
    if task.node_id.is_empty() || is_terminal(state_of(task)) {
        return false;
    }
    nodes.get(&task.node_id).is_some_and(|n| {
        n.status.as_ref().map(|s| s.state).unwrap_or_default()
            != shoal_api::v1::node_status::State::Down as i32
    })
}

/// Failures of a service's spec version on one node, within [`FAULTY_WINDOW`], that make the
/// scheduler avoid the node for it (SwarmKit's figures).
const FAULTY_FAILURES: usize = 5;
const FAULTY_WINDOW: Duration = Duration::from_secs(300);

/// Per (service, spec version), the nodes where its tasks failed (or were rejected) at least
/// [`FAULTY_FAILURES`] times in the last [`FAULTY_WINDOW`], as the tasks kept in the store
/// tell (the reaper keeps `task_history_retention_limit` per slot).
fn faulty_nodes(tasks: &[Arc<Task>], now: SystemTime) -> BTreeMap<(String, u64), Vec<String>> {
    let mut failures: HashMap<(&str, u64, &str), usize> = HashMap::new();
    for task in tasks {
        if task.node_id.is_empty()
            || !matches!(state_of(task), TaskState::Failed | TaskState::Rejected)
        {
            continue;
        }
        let recent = task
            .status
            .as_ref()
            .and_then(|s| s.timestamp)
            .and_then(|t| SystemTime::try_from(t).ok())
            .is_some_and(|at| now.duration_since(at).unwrap_or(Duration::ZERO) < FAULTY_WINDOW);
        if recent {
            *failures
                .entry((
                    task.service_id.as_str(),
                    task.spec_version,
                    task.node_id.as_str(),
                ))
                .or_default() += 1;
        }
    }
    // Ordered: the round places each group in turn, so the order is part of the decision.
    let mut out: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for ((service, version, node), n) in failures {
        if n >= FAULTY_FAILURES {
            out.entry((service.to_string(), version))
                .or_default()
                .push(node.to_string());
        }
    }
    for nodes in out.values_mut() {
        nodes.sort();
    }
    out
}

/// Tasks with network addresses written in a round, at most: they share one transaction
/// with the networks they were allocated from (see the end of [`Orchestrator::round`]).
const MAX_ATTACHED_PER_ROUND: usize = 500;

/// What one round writes.
#[derive(Default)]
struct Writes {
    /// Services whose update status changed, or which roll back.
    services: Vec<Service>,
    create: Vec<Task>,
    /// Task ID → (new desired state, status message if it changes, node to assign).
    update: Vec<Task>,
    delete: Vec<String>,
}

impl Writes {
    fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.create.is_empty()
            && self.update.is_empty()
            && self.delete.is_empty()
    }
}

impl Orchestrator {
    pub fn new(store: Store, raft: RaftHandle) -> Self {
        Self::with_leadership(store, Arc::new(raft))
    }

    pub(crate) fn with_leadership(store: Store, leadership: Arc<dyn Leadership>) -> Self {
        Self {
            store,
            leadership,
            scheduler: Scheduler::new(),
            delayed: HashMap::new(),
            update_wake: None,
            last_round: None,
            enforced: HashMap::new(),
            scheduler_fresh: false,
            ids: None,
        }
    }

    /// An orchestrator that is not tied to a Raft node: whoever owns it decides when it
    /// leads and runs its rounds ([`Orchestrator::round_at`]), with the clock it chooses.
    /// [`Orchestrator::start`] on it waits forever (it never learns that it leads). For the
    /// deterministic simulation (`shoal-sim`), which plays the loop of [`Orchestrator::start`]
    /// on simulated time.
    #[doc(hidden)]
    pub fn driven(store: Store) -> Self {
        Self::with_leadership(
            store,
            Arc::new(Driven(watch::Sender::new(Default::default()))),
        )
    }

    /// Takes new task IDs from `ids` instead of drawing random ones (a simulation needs them
    /// to be a function of its seed).
    #[doc(hidden)]
    pub fn set_id_source(&mut self, ids: impl FnMut() -> String + Send + 'static) {
        self.ids = Some(Box::new(ids));
    }

    fn next_id(&mut self) -> String {
        match self.ids.as_mut() {
            Some(ids) => ids(),
            None => shoal_api::id::new_id(),
        }
    }

    /// When the loop must run a round even if the store does not change: the earliest end of
    /// a restart delay still to come, or of a rolling update's delay or monitor period
    /// (`None`: only store changes, and the loop's idle safety net).
    ///
    /// A delay that had already ended at the last round and still holds its task does so
    /// because the task's unit is busy (its old task is still stopping): the round that
    /// frees it follows the old task's status change in the store. Waking for it would run
    /// rounds back to back, each writing nothing, until then (the simulation found this: a
    /// stop-first update spun the loop while the old task stopped).
    #[doc(hidden)]
    pub fn next_wake(&self) -> Option<std::time::Instant> {
        self.delayed
            .values()
            .copied()
            .filter(|due| self.last_round.is_none_or(|at| *due > at))
            .chain(self.update_wake)
            .min()
            .map(Instant::into_std)
    }

    /// The scheduler's view may have missed changes (the subscription lagged): the next
    /// round rebuilds it from the store.
    #[doc(hidden)]
    pub fn view_lost(&mut self) {
        self.scheduler_fresh = false;
    }

    /// Feeds the changes already queued on `changes` to the scheduler's view, as the loop
    /// does between rounds (for tests that run rounds themselves).
    #[cfg(test)]
    fn catch_up(&mut self, changes: &mut shoal_store::Subscription) {
        loop {
            match changes.try_next() {
                Ok(Some((_, event))) => self.observe(&event),
                Ok(None) => return,
                Err(_) => {
                    self.scheduler_fresh = false;
                    return;
                }
            }
        }
    }

    /// Feeds one committed change to the scheduler's view, as the loop does for every event
    /// of its store subscription between rounds.
    #[doc(hidden)]
    pub fn observe(&mut self, event: &shoal_store::Event) {
        use shoal_store::{Action, Object};
        match (&event.object, event.action) {
            (Object::Task(task), Action::Remove) => self.scheduler.task_removed(id_of(&**task)),
            (Object::Task(task), _) => self.scheduler.task_changed(task.clone()),
            (Object::Node(node), Action::Remove) => self
                .scheduler
                .node_removed(node.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")),
            (Object::Node(node), _) => self.scheduler.node_changed(node.clone()),
            _ => {}
        }
    }

    /// Sets a new task's desired state: RUNNING at once, or READY until its restart delay has
    /// passed and its unit is no longer busy.
    fn hold_or_start(
        &mut self,
        task: &mut Task,
        delay: Duration,
        busy: &HashSet<Unit>,
        now: Instant,
    ) {
        if delay.is_zero() && !busy.contains(&unit_of(task)) {
            task.desired_state = TaskState::Running as i32;
        } else {
            task.desired_state = TaskState::Ready as i32;
            self.delayed.insert(id_of(task).to_string(), now + delay);
        }
    }

    /// Spawns the loop on the current runtime.
    pub fn start(self) -> OrchestratorTask {
        let (stop, stopped) = watch::channel(false);
        let join = tokio::spawn(self.run(stopped));
        OrchestratorTask {
            stop,
            join: Some(join),
        }
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut status = self.leadership.watch();
        loop {
            // Wait to lead, with the store caught up: a new leader that has not applied its
            // predecessor's last entries would decide from a stale store (and create a second
            // task for a slot whose task it does not see yet).
            // (The `Ref`s `wait_for` returns are dropped inside the blocks: they are not Send.)
            tokio::select! {
                () = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                led = async {
                    status.wait_for(|s| s.is_leader && s.leader_caught_up).await.is_ok()
                } => if !led { return },
            }
            tracing::info!("orchestrator: leading; converging services");
            self.delayed.clear();
            self.enforced.clear();
            self.scheduler_fresh = false;
            self.lead(&mut stopped, &mut status).await;
            if *stopped.borrow() {
                return;
            }
        }
    }

    /// Runs rounds while this manager leads.
    async fn lead(
        &mut self,
        stopped: &mut watch::Receiver<bool>,
        status: &mut watch::Receiver<shoal_raft::RaftStatus>,
    ) {
        let filter = Filter::all()
            .kind(ObjectKind::Service)
            .kind(ObjectKind::Task)
            .kind(ObjectKind::Node);
        let mut changes = self.store.watch(filter.clone());
        loop {
            if !status.borrow().is_leader || *stopped.borrow() {
                return;
            }
            if let Err(error) = self.round().await {
                // A conflict with a concurrent write is routine; anything else is worth a
                // word in the log.
                if matches!(error, shoal_store::StoreError::SequenceConflict { .. }) {
                    tracing::debug!("orchestrator: round failed ({error}); trying again");
                } else {
                    tracing::warn!("orchestrator: round failed ({error}); trying again");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let wake = self
                .next_wake()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + IDLE_ROUND);
            tokio::select! {
                () = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                () = async { let _ = status.wait_for(|s| !s.is_leader).await; } => return,
                () = tokio::time::sleep_until(wake) => {}
                event = changes.next() => {
                    // The scheduler's view follows the changes; take whatever else has
                    // arrived too, so that a burst makes one round.
                    let mut event = event.map(Some);
                    loop {
                        match event {
                            Ok(Some((_, event))) => self.observe(&event),
                            Ok(None) => break,
                            Err(_) => {
                                // Lagged or reset: subscribe again, and rebuild the
                                // scheduler's view from the store in the next round.
                                self.scheduler_fresh = false;
                                changes = self.store.watch(filter.clone());
                                break;
                            }
                        }
                        event = changes.try_next();
                    }
                }
            }
        }
    }

    /// One round on the machine's clock.
    async fn round(&mut self) -> shoal_store::Result<()> {
        self.round_at(Instant::now().into_std(), SystemTime::now())
            .await
    }

    /// One round: decide from the store, as of `now_instant` (restart delays, update
    /// pacing) and `now_system` (timestamps written, restart attempts, failure windows),
    /// and write the decisions through the store's proposer. The real loop passes the
    /// machine's clock; the simulation its own. On error (a conflict, lost leadership) the
    /// next round rebuilds the scheduler's view: placements it counted may not be written.
    #[doc(hidden)]
    pub async fn round_at(
        &mut self,
        now_instant: std::time::Instant,
        now_system: SystemTime,
    ) -> shoal_store::Result<()> {
        let result = self
            .decide_and_write(Instant::from_std(now_instant), now_system)
            .await;
        if result.is_err() {
            self.scheduler_fresh = false;
        }
        result
    }

    async fn decide_and_write(
        &mut self,
        now_instant: Instant,
        now_system: SystemTime,
    ) -> shoal_store::Result<()> {
        let (services, tasks, nodes, networks) = self.store.view(|tx| {
            (
                tx.find::<Service>(By::All),
                tx.find::<Task>(By::All),
                tx.find::<Node>(By::All),
                tx.find::<Network>(By::All),
            )
        });
        // Addresses on the services' networks and published ports, as the store holds them.
        let mut allocations = Allocations::from_objects(&networks, &services, &tasks);
        let services_by_id: HashMap<&str, &Arc<Service>> =
            services.iter().map(|s| (id_of(&**s), s)).collect();
        let nodes_by_id: HashMap<String, Arc<Node>> = nodes
            .iter()
            .map(|n| {
                (
                    n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                    n.clone(),
                )
            })
            .collect();
        let mut by_service: HashMap<&str, Vec<Arc<Task>>> = HashMap::new();
        for task in &tasks {
            by_service
                .entry(task.service_id.as_str())
                .or_default()
                .push(task.clone());
        }
        let mut writes = Writes::default();
        self.update_wake = None;
        self.last_round = Some(now_instant);
        let mut created_pending: Vec<Task> = Vec::new();
        // The scheduler's view is built once per leadership (or after the watch lagged, or a
        // round failed with placements it had counted), then kept up to date by the store's
        // changes (`observe`): rebuilding it costs a pass over every task.
        if !self.scheduler_fresh {
            self.scheduler.reset(
                nodes.iter().cloned(),
                tasks.iter().filter(|t| !t.node_id.is_empty()).cloned(),
            );
            self.scheduler_fresh = true;
        }

        let tasks_by_id: HashMap<&str, &Arc<Task>> =
            tasks.iter().map(|t| (id_of(&**t), t)).collect();
        // Units (slots, or nodes of global services) where a task told to stop may still run:
        // their new task waits (desired READY) until it has stopped, so that a unit never
        // runs two tasks at once — except in a start-first update, whose new task is created
        // before the old one is told to stop.
        let mut busy: HashSet<Unit> = tasks
            .iter()
            .filter(|t| {
                t.desired_state > TaskState::Running as i32 && still_running(t, &nodes_by_id)
            })
            .map(|t| unit_of(t))
            .collect();
        // 1. Services.
        for service in &services {
            let own = by_service
                .get(id_of(&**service))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let global = global::plan(service, own, &nodes_by_id, now_system);
            let replicated = replicated::plan(service, own, &nodes_by_id, now_system);
            let mut rolled_back = false;
            for supervision in [&global.update, &replicated.update] {
                if let Some(wake) = supervision.wake {
                    let at = now_instant + wake;
                    self.update_wake = Some(self.update_wake.map_or(at, |w| w.min(at)));
                }
                let Some(status) = supervision.status.clone() else {
                    continue;
                };
                let next = if supervision.rollback {
                    rolled_back = true;
                    update::rolled_back(service, status.clone())
                } else {
                    None
                };
                let next = next.unwrap_or_else(|| {
                    let mut next = (**service).clone();
                    next.update_status = Some(status.clone());
                    next
                });
                tracing::info!(service = %id_of(&**service), "orchestrator: {}", status.message);
                writes.services.push(next);
            }
            if rolled_back {
                continue;
            }
            // Stops first, so that a unit whose old task is still stopping is known to be
            // busy before its new task is created.
            let mut per_node = global.changes;
            per_node.extend(jobs::reconcile_global(service, own, &nodes_by_id));
            let mut per_slot = replicated.changes;
            per_slot.extend(jobs::reconcile_replicated(service, own, &nodes_by_id));
            let stops = per_node
                .iter()
                .filter_map(|c| match c {
                    global::Change::Shutdown { task_id, reason } => Some((task_id, reason)),
                    global::Change::Create { .. } => None,
                })
                .chain(per_slot.iter().filter_map(|c| match c {
                    Change::Shutdown { task_id, reason } => Some((task_id, reason)),
                    Change::Create { .. } => None,
                }));
            for (task_id, reason) in stops {
                if let Some(task) = tasks_by_id.get(task_id.as_str()) {
                    let mut task = (***task).clone();
                    task.desired_state = TaskState::Shutdown as i32;
                    tracing::debug!(task = %task_id, "orchestrator: stopping: {reason}");
                    if still_running(&task, &nodes_by_id) {
                        busy.insert(unit_of(&task));
                    }
                    writes.update.push(task);
                }
            }
            for change in per_node {
                let global::Change::Create {
                    node_id,
                    delay,
                    attempts,
                } = change
                else {
                    continue;
                };
                let id = self.next_id();
                let mut task = new_task(service, 0, TaskState::Ready, id, now_system);
                task.restart_attempts = attempts;
                if let Err(error) = allocations.allocate_task(service, &mut task) {
                    tracing::debug!(service = %id_of(&**service), "orchestrator: {error}");
                    continue;
                }
                // Only where the task fits (constraints, resources, runtime, host ports).
                if let Decision::Assign { .. } = self.scheduler.place_on(&task, &node_id) {
                    task.node_id = node_id;
                    task.status = Some(assigned_status(now_system));
                    self.hold_or_start(&mut task, delay, &busy, now_instant);
                    writes.create.push(task);
                }
            }
            for change in per_slot {
                let Change::Create {
                    slot,
                    delay,
                    attempts,
                } = change
                else {
                    continue;
                };
                let id = self.next_id();
                let mut task = new_task(service, slot, TaskState::Ready, id, now_system);
                task.restart_attempts = attempts;
                self.hold_or_start(&mut task, delay, &busy, now_instant);
                created_pending.push(task);
            }
        }

        // 2. Tasks of deleted services: stop them, then remove them once stopped.
        let service_ids: HashSet<&str> = services.iter().map(|s| id_of(&**s)).collect();
        for task in &tasks {
            if task.service_id.is_empty() || service_ids.contains(task.service_id.as_str()) {
                continue;
            }
            let stopped = is_terminal(state_of(task)) || task.node_id.is_empty();
            if stopped {
                writes.delete.push(id_of(&**task).to_string());
            } else if task.desired_state < TaskState::Shutdown as i32 {
                let mut task = (**task).clone();
                task.desired_state = TaskState::Shutdown as i32;
                writes.update.push(task);
            }
        }

        // The constraint enforcer, on the nodes that changed since it last checked them.
        let changed: HashMap<&str, (&Arc<Node>, u64)> = nodes
            .iter()
            .filter_map(|n| {
                let meta = n.meta.as_ref()?;
                (self.enforced.get(&meta.id) != Some(&meta.version))
                    .then_some((meta.id.as_str(), (n, meta.version)))
            })
            .collect();
        if !changed.is_empty() {
            // By node ID: the order of the writes must not depend on a hasher's seed.
            let mut live_on: BTreeMap<&str, Vec<&Arc<Task>>> = BTreeMap::new();
            for task in &tasks {
                if task.desired_state <= TaskState::Running as i32
                    && !is_terminal(state_of(task))
                    && changed.contains_key(task.node_id.as_str())
                {
                    live_on.entry(task.node_id.as_str()).or_default().push(task);
                }
            }
            let stopping: HashSet<String> =
                writes.update.iter().map(|t| id_of(t).to_string()).collect();
            for (node_id, on_node) in &live_on {
                let (node, _) = changed[node_id];
                for eviction in enforcer::evictions(node, on_node) {
                    if stopping.contains(&eviction.task_id) {
                        continue;
                    }
                    if let Some(task) = tasks_by_id.get(eviction.task_id.as_str()) {
                        tracing::info!(task = %eviction.task_id, "orchestrator: evicting: {}", eviction.reason);
                        let mut task = (***task).clone();
                        task.desired_state = TaskState::Shutdown as i32;
                        if let Some(status) = task.status.as_mut() {
                            status.message = eviction.reason;
                        }
                        writes.update.push(task);
                    }
                }
            }
        }
        let checked: Vec<(String, u64)> = changed
            .iter()
            .map(|(id, (_, version))| (id.to_string(), *version))
            .collect();

        // The reaper: of the tasks of a slot (of a node, for global services) that were told
        // to stop and have stopped, only the newest `task_history_retention_limit` stay.
        let keep = history_limit(&self.store);
        let mut history: BTreeMap<(&str, u64, &str), Vec<&Arc<Task>>> = BTreeMap::new();
        for task in &tasks {
            let exists = service_ids.contains(task.service_id.as_str());
            let stopped = task.desired_state > TaskState::Running as i32
                && (is_terminal(state_of(task)) || task.node_id.is_empty());
            if exists && stopped {
                let node = if task.slot == 0 {
                    task.node_id.as_str()
                } else {
                    ""
                };
                history
                    .entry((task.service_id.as_str(), task.slot, node))
                    .or_default()
                    .push(task);
            }
        }
        for (_, mut old) in history {
            if old.len() <= keep {
                continue;
            }
            // Newest first: by creation time, then by ID for a stable order.
            old.sort_by_key(|t| {
                std::cmp::Reverse((
                    t.meta
                        .as_ref()
                        .and_then(|m| m.created_at.as_ref())
                        .map(|c| (c.seconds, c.nanos)),
                    id_of(&***t).to_string(),
                ))
            });
            for task in &old[keep..] {
                writes.delete.push(id_of(&***task).to_string());
            }
        }

        // Restart delays: tasks held at READY start once their delay is over. A READY task
        // this leader has no timer for (it was created by an earlier leader) starts at its
        // last restart attempt's time when it carries one, else after the default delay.
        let mut updated: HashSet<String> =
            writes.update.iter().map(|t| id_of(t).to_string()).collect();
        for task in &tasks {
            if task.desired_state != TaskState::Ready as i32 {
                continue;
            }
            if busy.contains(&unit_of(task)) {
                continue;
            }
            let id = id_of(&**task);
            let due = *self.delayed.entry(id.to_string()).or_insert_with(|| {
                task.restart_attempts
                    .iter()
                    .filter_map(|t| SystemTime::try_from(*t).ok())
                    .max()
                    .map(|at| now_instant + at.duration_since(now_system).unwrap_or(Duration::ZERO))
                    .unwrap_or(now_instant + replicated::DEFAULT_RESTART_DELAY)
            });
            if due <= now_instant && !updated.contains(id) {
                let mut task = (**task).clone();
                task.desired_state = TaskState::Running as i32;
                updated.insert(id.to_string());
                writes.update.push(task);
                self.delayed.remove(id);
            }
        }
        let known: HashSet<&str> = tasks
            .iter()
            .map(|t| id_of(&**t))
            .chain(created_pending.iter().map(id_of))
            .chain(writes.create.iter().map(id_of))
            .collect();
        self.delayed.retain(|id, _| known.contains(id.as_str()));

        // 3. Scheduling: the tasks without a node (existing and just created).
        let mut pending: Vec<Arc<Task>> = tasks
            .iter()
            .filter(|t| {
                t.node_id.is_empty()
                    && t.desired_state <= TaskState::Running as i32
                    && state_of(t) <= TaskState::Pending
                    && !updated.contains(id_of(&***t))
            })
            .cloned()
            .collect();
        // The tasks from `existing` on are the ones this round creates.
        let existing = pending.len();
        pending.extend(created_pending.drain(..).map(Arc::new));
        // Each gets its addresses and its service's ports first (kept if it has them); one
        // that cannot stays PENDING saying why, and is tried again in later rounds.
        let mut unallocated: Vec<(usize, String)> = Vec::new();
        for (index, task) in pending.iter_mut().enumerate() {
            let Some(service) = services_by_id.get(task.service_id.as_str()) else {
                continue;
            };
            if let Err(error) = allocations.allocate_task(service, Arc::make_mut(task)) {
                unallocated.push((index, error.to_string()));
            }
        }
        let mut decisions: Vec<Option<Decision>> = vec![None; pending.len()];
        for (index, error) in unallocated {
            decisions[index] = Some(Decision::NoSuitableNode {
                task_id: id_of(&*pending[index]).to_string(),
                reason: error,
            });
        }
        // Nodes where a service's spec version recently failed repeatedly are avoided: its
        // tasks are placed with those nodes paused first, and only what finds no other node
        // goes on to the pass that includes them.
        for ((service_id, version), avoided) in faulty_nodes(&tasks, now_system) {
            let group: Vec<usize> = (0..pending.len())
                .filter(|i| {
                    decisions[*i].is_none()
                        && pending[*i].service_id == service_id
                        && pending[*i].spec_version == version
                })
                .collect();
            if group.is_empty() {
                continue;
            }
            let originals: Vec<&Arc<Node>> = avoided
                .iter()
                .filter_map(|id| nodes_by_id.get(id))
                .collect();
            for node in &originals {
                let mut paused = (***node).clone();
                paused
                    .spec
                    .get_or_insert_with(Default::default)
                    .availability = shoal_api::v1::node_spec::Availability::Pause as i32;
                self.scheduler.node_changed(Arc::new(paused));
            }
            let tasks: Vec<Arc<Task>> = group.iter().map(|i| pending[*i].clone()).collect();
            for (index, decision) in group.into_iter().zip(self.scheduler.schedule(&tasks)) {
                if let Decision::Assign { .. } = decision {
                    decisions[index] = Some(decision);
                }
            }
            for node in originals {
                self.scheduler.node_changed(node.clone());
            }
            tracing::debug!(service = %service_id, "orchestrator: avoiding nodes where it failed repeatedly: {avoided:?}");
        }
        let (schedulable, indexes): (Vec<Arc<Task>>, Vec<usize>) = pending
            .iter()
            .enumerate()
            .filter(|(i, _)| decisions[*i].is_none())
            .map(|(i, t)| (t.clone(), i))
            .unzip();
        for (index, decision) in indexes
            .into_iter()
            .zip(self.scheduler.schedule(&schedulable))
        {
            decisions[index] = Some(decision);
        }
        let decisions = decisions
            .into_iter()
            .map(|d| d.expect("every pending task has a decision"));
        for (index, (task, decision)) in pending.iter().zip(decisions).enumerate() {
            let is_new = index >= existing;
            let mut task = (**task).clone();
            let changed = match decision {
                Decision::Assign { node_id, .. } => {
                    task.node_id = node_id;
                    task.status = Some(assigned_status(now_system));
                    true
                }
                Decision::NoSuitableNode { reason, .. } => {
                    let current = task.status.clone().unwrap_or_default();
                    let changed =
                        current.state != TaskState::Pending as i32 || current.err != reason;
                    if changed {
                        task.status = Some(TaskStatus {
                            timestamp: Some(now_system.into()),
                            state: TaskState::Pending as i32,
                            message: "pending task scheduling".into(),
                            err: reason,
                            ..Default::default()
                        });
                    }
                    changed
                }
            };
            if is_new {
                writes.create.push(task);
            } else if changed {
                writes.update.push(task);
            }
        }

        let node_ids: HashSet<&str> = nodes_by_id.keys().map(String::as_str).collect();
        self.enforced.retain(|id, _| node_ids.contains(id.as_str()));
        if writes.is_empty() {
            self.enforced.extend(checked);
            return Ok(());
        }
        let Writes {
            services,
            create,
            update,
            delete,
        } = writes;
        // The networks allocated from are written back unchanged in the transaction that
        // holds the tasks given addresses on them: a concurrent allocation from the same
        // networks then conflicts rather than handing out an address twice. That transaction
        // must fit the store's limit, so it takes at most MAX_ATTACHED_PER_ROUND tasks; the
        // next round creates the rest.
        let guards = allocations.guards();
        let attached = |t: &Task| !guards.is_empty() && !t.networks.is_empty();
        let (mut attached_create, create): (Vec<Task>, Vec<Task>) =
            create.into_iter().partition(|t| attached(t));
        let (mut attached_update, update): (Vec<Task>, Vec<Task>) =
            update.into_iter().partition(|t| attached(t));
        attached_create.truncate(MAX_ATTACHED_PER_ROUND);
        attached_update.truncate(MAX_ATTACHED_PER_ROUND - attached_create.len());
        // Everything else in as few transactions as the store's limits allow: a round may
        // create or replace many thousands of tasks.
        let mut batch = self.store.batch();
        for service in services {
            batch.update(|tx| tx.update(service.clone())).await?;
        }
        if !attached_create.is_empty() || !attached_update.is_empty() {
            batch
                .update(|tx| {
                    for network in &guards {
                        tx.update(network.clone())?;
                    }
                    for task in &attached_create {
                        tx.create(task.clone())?;
                    }
                    for task in &attached_update {
                        tx.update(task.clone())?;
                    }
                    Ok(())
                })
                .await?;
        }
        for task in create {
            batch.update(|tx| tx.create(task.clone())).await?;
        }
        for task in update {
            batch.update(|tx| tx.update(task.clone())).await?;
        }
        for id in delete {
            batch.update(|tx| tx.delete::<Task>(&id)).await?;
        }
        batch.commit().await?;
        self.enforced.extend(checked);
        Ok(())
    }
}

#[cfg(test)]
mod invariants;
#[cfg(test)]
mod tests;
