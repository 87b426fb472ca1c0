//! Agents mode: worker nodes, the dispatcher's heartbeat rule, and the real orchestrator and
//! scheduler running on whichever manager leads.
//!
//! # Time
//!
//! A simulated tick (10 ms) stands for the daemon's Raft tick (100 ms): the orchestrator,
//! the dispatcher's rule and every timestamp written see time run [`TIME_SCALE`] times
//! faster than simulated µs, so the daemon's figures keep their ratio to an election
//! timeout. The heartbeat period is `shoal_api::defaults::HEARTBEAT_PERIOD` (5 s: 50 ticks),
//! the grace after a heartbeat 3 periods (150 ticks) and a new leader's grace for a READY node
//! it has no session for 6 periods (300 ticks), as in the dispatcher.
//!
//! The orchestrator is `shoal_manager::orchestrator::Orchestrator`, built with
//! `Orchestrator::driven` (no Raft handle: the simulator decides when it leads) and run one
//! round at a time with `round_at(instant, wall time)`; both clocks are computed from
//! simulated time. The instant is a fixed `Instant` taken when the run starts plus the
//! scaled simulated time — an opaque origin whose value never matters, only differences. Task
//! IDs come from a counter (`set_id_source`) instead of random draws. Its store is the
//! leader's store with a proposer of our own ([`Outbox`]): `propose` queues the transaction
//! and returns a future that completes when the simulator fills its slot. The simulator
//! polls the round's future with a no-op waker; when it is pending it proposes what was
//! queued to the leader's `RaftNode`, and fills a slot when `process_ready` reports that
//! proposal applied (with its store version) or refused, or unknown when leadership is lost.
//! The future is then polled again. Rounds run as the real loop runs them: when leadership is
//! gained, soon after store changes (observed between rounds, as the loop's subscription
//! does), at the orchestrator's next wake (restart delays, update pacing), every 10 s
//! otherwise, and 100 ms after a failed round. A manager that stops leading drops its
//! orchestrator and the dispatcher's sessions; a new leader starts both afresh.
//!
//! # Agents
//!
//! Each agent is a Node in the store (READY, ACTIVE, runtime `process`) and an endpoint of
//! the simulated network. Every [`POLL`] it sends the manager it believes leads one message:
//! a heartbeat when one is due (every period, ± the dispatcher's jitter), and the status of
//! every task whose state it knows the store does not have yet. The leader, modelling the
//! dispatcher, moves the node's deadline, writes the node READY if it is not (a new
//! session), writes each reported status that moves a task forward, and answers with the
//! node's assignment set from its store (tasks on the node at ASSIGNED or later), as the
//! assignments stream would; a follower answers with the leader it knows. Each leader
//! tick, nodes past their deadline are written DOWN ("heartbeat failure").
//!
//! An agent runs what it is assigned: a task wanted RUNNING goes ASSIGNED → ACCEPTED →
//! PREPARING → READY → STARTING → RUNNING, a step every 1–4 ticks (only up to READY while it
//! is wanted READY); a task wanted past RUNNING is stopped (SHUTDOWN) after 3–30 ticks if it
//! started, at once otherwise; a task that left the assignment set is killed. A running task
//! fails now and then. An agent that crashes loses its tasks (their processes die with it);
//! when it comes back, a task the store shows past ASSIGNED is one it lost, and it reports it
//! FAILED. Faults: agents crash (100–350 ticks) and are cut off from every manager (150–400
//! ticks, often past the grace), drawn by the nemesis alongside the managers' faults. An
//! operator scales replicated services and updates services' specs (a stop-first rolling
//! update) every 40–120 ticks.
//!
//! # Invariants
//!
//! - **One task per slot** (continuously, from the agents' own state, not the store's): when
//!   a task starts RUNNING on an agent, no other task of its slot (its node, for a global
//!   service) may be running anywhere — unless that task's node was written DOWN (applied by a
//!   manager) after it started: the orchestrator gives up on a down node's tasks and replaces
//!   them, and a cut-off agent keeps running them, as in SwarmKit.
//! - After faults stop and everything heals, within [`CONVERGE_TICKS`]: every replicated
//!   service has exactly `replicas` tasks wanted RUNNING, RUNNING in the store and on their
//!   agent, on READY nodes; every global service exactly one on each READY, ACTIVE node; no
//!   task is NEW, PENDING or ASSIGNED while wanted RUNNING with a READY node in the cluster;
//!   no agent runs a task the store does not want running.
//!
//! # Departures
//!
//! The dispatcher, the agent, its executor and the gRPC streams are modelled, not run: a
//! status report is a fire-and-forget write through the leader (retried with every message
//! until the assignments show it), assignments are polled rather than pushed, a session is
//! one deadline. Networks, secrets, configs, volumes, resources and constraints are not
//! exercised (the services have none), nor drained or paused nodes, nor jobs.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use shoal_api::defaults::{
    GRACE_PERIOD_MULTIPLIER_NORMAL, GRACE_PERIOD_MULTIPLIER_UNKNOWN, HEARTBEAT_EPSILON,
    HEARTBEAT_PERIOD,
};
use shoal_api::shared::TaskSpecFields;
use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    GlobalService, Node, NodeDescription, NodeSpec, NodeStatus, ObjectKind, ProcessSpec,
    ReplicatedService, RestartPolicy, Service, ServiceSpec, Task, TaskState, TaskStatus, node_spec,
    node_status, restart_policy, service_spec, task_spec,
};
use shoal_manager::orchestrator::Orchestrator;
use shoal_store::{By, Filter, Object, Subscription, WriteTx};

use super::*;

/// Wall-clock time per simulated time in agents mode (a 10 ms tick is a 100 ms daemon tick).
pub(super) const TIME_SCALE: u64 = 10;
const HEARTBEAT: u64 = HEARTBEAT_PERIOD.as_micros() as u64 / TIME_SCALE;
const HEARTBEAT_JITTER: u64 = HEARTBEAT_EPSILON.as_micros() as u64 / TIME_SCALE;
const GRACE: u64 = HEARTBEAT * GRACE_PERIOD_MULTIPLIER_NORMAL as u64;
const UNKNOWN_GRACE: u64 = HEARTBEAT * GRACE_PERIOD_MULTIPLIER_UNKNOWN as u64;
/// How often an agent talks to the leader (reports, assignments; a heartbeat when due).
const POLL: u64 = 5 * TICK;
/// The orchestrator loop's idle round (10 s) and its pause after a failed round (100 ms).
const IDLE_ROUND: u64 = 100 * TICK;
const RETRY_ROUND: u64 = TICK;
/// Rounds in a row that write nothing and ask to run again at once before it counts as a spin.
const SPIN_LIMIT: u32 = 50;
/// Changes that arrive together make one round.
const ROUND_AFTER_CHANGE: u64 = 500;
/// Bound on the time to converge after healing.
pub(super) const CONVERGE_TICKS: u64 = 1_500;
/// Network IDs of agents start here (managers are 1..=5, clients 0).
const AGENT_NET: u64 = 1_000;
/// A running task fails once in this many agent polls, on average.
const FAILURE_ODDS: u32 = 400;

/// What the agents, the dispatcher and the orchestrator did in a run.
#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    pub agents: usize,
    pub services: usize,
    pub rounds: u64,
    pub failed_rounds: u64,
    /// Orchestrator transactions proposed.
    pub orchestrator_writes: u64,
    pub tasks_started: u64,
    pub tasks_failed: u64,
    pub nodes_written_down: u64,
    pub agent_crashes: u64,
    pub service_changes: u64,
    /// Tasks running at the end.
    pub running_at_end: usize,
}

/// A task's unit: (service, slot, "") for replicated services, (service, 0, node) for
/// global ones — as the orchestrator counts them.
type Unit = (String, u64, String);

fn unit_of(task: &Task) -> Unit {
    let node = if task.slot == 0 {
        task.node_id.clone()
    } else {
        String::new()
    };
    (task.service_id.clone(), task.slot, node)
}

fn state_of(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New)
}

fn node_state(node: &Node) -> i32 {
    node.status.as_ref().map(|s| s.state).unwrap_or_default()
}

fn id_of_task(task: &Task) -> &str {
    task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

type Slot = Arc<Mutex<Option<shoal_store::Result<u64>>>>;

/// The orchestrator's proposer: queues each transaction for the simulator to propose, and
/// completes when the simulator fills its slot.
#[derive(Default)]
pub(super) struct Outbox(Mutex<Vec<(ChangeSet, Slot)>>);

impl Proposer for Outbox {
    fn propose(&self, _state: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture {
        let slot: Slot = Arc::default();
        self.0
            .lock()
            .expect("outbox lock")
            .push((changes, slot.clone()));
        Box::pin(std::future::poll_fn(move |_| {
            match slot.lock().expect("slot lock").take() {
                Some(result) => Poll::Ready(result),
                None => Poll::Pending,
            }
        }))
    }
}

type RoundFuture = Pin<Box<dyn Future<Output = (Orchestrator, shoal_store::Result<()>)>>>;

fn round_filter() -> Filter {
    Filter::all()
        .kind(ObjectKind::Service)
        .kind(ObjectKind::Task)
        .kind(ObjectKind::Node)
}

/// What a leading manager runs besides Raft: the orchestrator, and the dispatcher's
/// sessions (a deadline per node).
pub(super) struct Lead {
    term: u64,
    /// `None` while a round runs (the round's future owns it).
    orchestrator: Option<Orchestrator>,
    round: Option<RoundFuture>,
    store: Store,
    outbox: Arc<Outbox>,
    waiting: BTreeMap<ProposalId, Slot>,
    changes: Subscription,
    /// A round was asked for while one ran: run another after it.
    again: bool,
    /// When the next round is scheduled.
    next_round: Option<u64>,
    /// Transactions the round in flight proposed.
    round_writes: u64,
    /// Rounds in a row that wrote nothing and asked to run again at once.
    idle_spins: u32,
    deadlines: BTreeMap<String, u64>,
}

impl Lead {
    /// Completes the orchestrator's proposal `p`, if it is one.
    pub(super) fn resolve(&mut self, p: ProposalId, result: Result<u64, ProposalError>) {
        if let Some(slot) = self.waiting.remove(&p) {
            let result = result.map_err(|e| match e {
                ProposalError::Refused(e) => e,
                ProposalError::Unknown | ProposalError::Membership(_) => {
                    StoreError::Unavailable("leadership lost".into())
                }
            });
            *slot.lock().expect("slot lock") = Some(result);
        }
    }
}

/// A task as its agent runs it.
struct Local {
    unit: Unit,
    state: TaskState,
    /// The state the store had in the last assignments.
    stored: TaskState,
    desired: i32,
    next_step: u64,
    stopping: bool,
    /// When this agent learned of the task (µs).
    received: u64,
}

pub(super) struct Agent {
    node_id: String,
    net: u64,
    up: bool,
    incarnation: u64,
    /// The manager it believes leads.
    target: Option<u64>,
    answered: bool,
    next_heartbeat: u64,
    tasks: BTreeMap<String, Local>,
}

/// What an agent sends the leader.
#[derive(Debug)]
pub(super) struct AgentMsg {
    incarnation: u64,
    heartbeat: bool,
    reports: Vec<(String, TaskState)>,
}

/// One task of a node's assignment set.
#[derive(Debug)]
pub(super) struct Assigned {
    id: String,
    unit: Unit,
    desired: i32,
    state: TaskState,
}

#[derive(Debug)]
pub(super) enum AgentAnswer {
    NotLeader(Option<u64>),
    Assignments(Vec<Assigned>),
}

/// The agents, the services, and what the invariants remember.
pub(super) struct Workers {
    agents: Vec<Agent>,
    services: Vec<String>,
    /// Tasks running on agents, by unit: task → (agent, running since, received at).
    running: BTreeMap<Unit, BTreeMap<String, (usize, u64, u64)>>,
    /// The last time a manager applied a node's DOWN status.
    down_at: BTreeMap<String, u64>,
    origin: std::time::Instant,
    task_ids: Arc<AtomicU64>,
    spec_generation: u64,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            agents: Vec::new(),
            services: Vec::new(),
            running: BTreeMap::new(),
            down_at: BTreeMap::new(),
            // An opaque origin for the orchestrator's instants: only differences matter.
            origin: std::time::Instant::now(),
            task_ids: Arc::default(),
            spec_generation: 0,
        }
    }
}

fn worker_node(id: &str) -> Node {
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            availability: node_spec::Availability::Active as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: node_status::State::Ready as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: id.into(),
            runtimes: vec!["process".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn task_spec(generation: u64) -> shoal_api::shared::TaskSpec {
    TaskSpecFields {
        runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
            command: "serve".into(),
            args: vec![format!("--generation={generation}")],
            ..Default::default()
        }))),
        restart: Some(RestartPolicy {
            condition: restart_policy::Condition::Any as i32,
            delay: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

fn service(id: &str, replicas: Option<u64>) -> Service {
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: id.into(),
                ..Default::default()
            }),
            task: Some(task_spec(0)),
            mode: Some(match replicas {
                Some(replicas) => service_spec::Mode::Replicated(ReplicatedService { replicas }),
                None => service_spec::Mode::Global(GlobalService {}),
            }),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn replicas_of(service: &Service) -> Option<u64> {
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Replicated(r)) => Some(r.replicas),
        _ => None,
    }
}

/// The next state on the way to RUNNING.
fn next_state(state: TaskState) -> TaskState {
    match state {
        TaskState::New | TaskState::Pending | TaskState::Assigned => TaskState::Accepted,
        TaskState::Accepted => TaskState::Preparing,
        TaskState::Preparing => TaskState::Ready,
        TaskState::Ready => TaskState::Starting,
        _ => TaskState::Running,
    }
}

impl Sim {
    fn instant(&self) -> std::time::Instant {
        self.workers.origin + Duration::from_micros(self.now * TIME_SCALE)
    }

    /// Proposes, on manager `id`, the transaction `f` builds on its store (the Control API's
    /// and the dispatcher's way), without waiting for the outcome. False if nothing was
    /// proposed (not the leader, `f` failed or changed nothing).
    fn write_on(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut WriteTx<'_>) -> shoal_store::Result<()>,
    ) -> bool {
        let Some(r) = self.running_mut(id) else {
            return false;
        };
        if !r.node.is_leader() {
            return false;
        }
        if ready_now(r.store.update(f)).is_err() {
            return false;
        }
        let Some(changes) = r.capture.0.lock().expect("capture lock").take() else {
            return false;
        };
        let proposed = r.node.propose(changes).is_ok();
        if proposed {
            self.process(id);
        }
        proposed
    }

    /// Writes the agents' nodes and the services, and starts the agents.
    pub(super) fn start_workers(&mut self) -> bool {
        let n = self.cfg.agents;
        self.workers.agents = (0..n)
            .map(|i| Agent {
                node_id: format!("worker{i}"),
                net: AGENT_NET + i as u64,
                up: true,
                incarnation: 1,
                target: None,
                answered: false,
                next_heartbeat: 0,
                tasks: BTreeMap::new(),
            })
            .collect();
        let replicated = self.rng.random_range(2..=3);
        let mut services: Vec<Service> = (0..replicated)
            .map(|i| service(&format!("web{i}"), Some(self.rng.random_range(2..=5))))
            .collect();
        services.push(service("agentd", None));
        self.workers.services = services
            .iter()
            .map(|s| s.meta.as_ref().expect("meta").id.clone())
            .collect();
        self.stats.agents.agents = n;
        self.stats.agents.services = services.len();
        let nodes: Vec<Node> = self
            .workers
            .agents
            .iter()
            .map(|a| worker_node(&a.node_id))
            .collect();
        let line = format!(
            "{n} agents; services {:?}",
            services
                .iter()
                .map(|s| (id_of(s), replicas_of(s)))
                .collect::<Vec<_>>()
        );
        self.trace.record(self.now, &[0xa9e7, n as u64], || line);
        let Some(l) = self.leader() else {
            return false;
        };
        if !self.write_on(l, |tx| {
            for node in nodes {
                tx.create(node)?;
            }
            for service in services {
                tx.create(service)?;
            }
            Ok(())
        }) {
            return false;
        }
        let deadline = self.now + 200 * TICK;
        let expected = self.workers.services.len();
        if !self.run_until(deadline, |s| {
            s.settled()
                && s.managers.values().all(|m| {
                    m.running.as_ref().is_some_and(|r| {
                        r.store.view(|tx| tx.find::<Service>(By::All).len()) == expected
                    })
                })
        }) {
            return false;
        }
        for agent in 0..n {
            let offset = self.rng.random_range(0..POLL);
            self.schedule(
                offset,
                Ev::AgentTick {
                    agent,
                    incarnation: 1,
                },
            );
        }
        let first = self.rng.random_range(200_000..600_000);
        self.schedule(first, Ev::Operate);
        true
    }

    // ---- the leader's side -----------------------------------------------------------

    /// After a manager's Ready work: note DOWN nodes it applied, start or stop what it runs
    /// as leader, and drive the orchestrator's round. True if it proposed something (the
    /// manager's Ready work must run again).
    pub(super) fn after_process(&mut self, id: u64) -> bool {
        if self.cfg.agents == 0 || self.running(id).is_none() {
            return false;
        }
        self.watch_nodes(id);
        self.track_leadership(id);
        let proposed = self.drive_round(id);
        if !proposed {
            self.drain_changes(id);
        }
        proposed
    }

    fn watch_nodes(&mut self, id: u64) {
        let now = self.now;
        let r = self.running_mut(id).expect("running");
        let Some(watch) = r.nodes_watch.as_mut() else {
            return;
        };
        let mut down = Vec::new();
        loop {
            match watch.try_next() {
                Ok(Some((_, event))) => {
                    if let Object::Node(node) = &event.object
                        && node_state(node) == node_status::State::Down as i32
                    {
                        down.push(node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default());
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Missed events (a snapshot was restored): take the store as it is.
                    r.nodes_watch = Some(r.store.watch(Filter::all().kind(ObjectKind::Node)));
                    down.extend(r.store.view(|tx| {
                        tx.find::<Node>(By::All)
                            .into_iter()
                            .filter(|n| node_state(n) == node_status::State::Down as i32)
                            .map(|n| n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default())
                            .collect::<Vec<_>>()
                    }));
                    break;
                }
            }
        }
        for node in down {
            self.workers.down_at.insert(node, now);
        }
    }

    fn track_leadership(&mut self, id: u64) {
        let now = self.now;
        let ids = self.workers.task_ids.clone();
        let clock = self.clock.clone();
        let r = self.running_mut(id).expect("running");
        // As the orchestrator's loop: it leads once its store holds every earlier commit.
        let (leading, term) = (r.node.leader_caught_up(), r.node.term());
        match (r.lead.as_ref().map(|l| l.term), leading) {
            (Some(led), true) if led == term => return,
            (None, false) => return,
            (Some(_), false) => {
                r.lead = None;
                self.trace.record(now, &[0x1ead, id, 0], || {
                    format!("manager {id} stops its orchestrator and dispatcher")
                });
                return;
            }
            _ => {}
        }
        let outbox = Arc::new(Outbox::default());
        let store = Store::with_state(r.state.clone(), outbox.clone(), clock);
        let mut orchestrator = Orchestrator::driven(store.clone());
        orchestrator.set_id_source(move || {
            let n = ids.fetch_add(1, AtomicOrdering::Relaxed) + 1;
            shoal_api::id::encode_base36(u128::from(n), shoal_api::id::ID_LEN)
        });
        // The dispatcher gives every node READY in the store the longer grace.
        let deadlines = r.store.view(|tx| {
            tx.find::<Node>(By::All)
                .into_iter()
                .filter(|n| node_state(n) == node_status::State::Ready as i32)
                .map(|n| {
                    (
                        n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                        now + UNKNOWN_GRACE,
                    )
                })
                .collect()
        });
        let changes = store.watch(round_filter());
        r.lead = Some(Lead {
            term,
            orchestrator: Some(orchestrator),
            round: None,
            store,
            outbox,
            waiting: BTreeMap::new(),
            changes,
            again: false,
            next_round: None,
            round_writes: 0,
            idle_spins: 0,
            deadlines,
        });
        self.trace.record(now, &[0x1ead, id, term], || {
            format!("manager {id} leads term {term}: starts its orchestrator and dispatcher")
        });
        self.schedule_round(id, now);
    }

    fn schedule_round(&mut self, id: u64, at: u64) {
        let incarnation = self.managers[&id].incarnation;
        let now = self.now;
        let Some(lead) = self.running_mut(id).and_then(|r| r.lead.as_mut()) else {
            return;
        };
        if lead.next_round.is_some_and(|n| n <= at) {
            return;
        }
        lead.next_round = Some(at);
        self.schedule(
            at - now,
            Ev::Round {
                node: id,
                incarnation,
            },
        );
    }

    pub(super) fn round(&mut self, id: u64, incarnation: u64) {
        if self.managers[&id].incarnation != incarnation {
            return;
        }
        let (now_instant, now_system) = (self.instant(), self.wall());
        let now = self.now;
        let Some(lead) = self.running_mut(id).and_then(|r| r.lead.as_mut()) else {
            return;
        };
        if lead.next_round != Some(now) {
            return; // Superseded by an earlier round.
        }
        lead.next_round = None;
        lead.round_writes = 0;
        let Some(mut orchestrator) = lead.orchestrator.take() else {
            lead.again = true;
            return;
        };
        lead.round = Some(Box::pin(async move {
            let result = orchestrator.round_at(now_instant, now_system).await;
            (orchestrator, result)
        }));
        self.stats.agents.rounds += 1;
        self.trace.record(now, &[0x40d, id], || {
            format!("manager {id}: orchestrator round")
        });
        if self.drive_round(id) {
            self.process(id);
        }
    }

    /// Polls the round in flight; proposes what it queued. True if something was proposed.
    fn drive_round(&mut self, id: u64) -> bool {
        let planted = self.cfg.planted_bug;
        let mut proposed = 0;
        let mut finished = None;
        {
            let Some(r) = self.running_mut(id) else {
                return false;
            };
            let Some(lead) = r.lead.as_mut() else {
                return false;
            };
            while let Some(round) = lead.round.as_mut() {
                match round.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready((orchestrator, result)) => {
                        lead.round = None;
                        lead.orchestrator = Some(orchestrator);
                        finished = Some(result);
                    }
                    Poll::Pending => {
                        let queued = std::mem::take(&mut *lead.outbox.0.lock().expect("outbox"));
                        if queued.is_empty() {
                            break; // Waiting for commits.
                        }
                        let mut refused = false;
                        for (mut changes, slot) in queued {
                            if planted == Some(PlantedBug::StartWhileStopping) {
                                start_at_once(&mut changes);
                            }
                            match r.node.propose(changes) {
                                Ok(p) => {
                                    lead.waiting.insert(p, slot);
                                    lead.round_writes += 1;
                                    proposed += 1;
                                }
                                Err(_) => {
                                    *slot.lock().expect("slot lock") =
                                        Some(Err(StoreError::Unavailable("not the leader".into())));
                                    refused = true;
                                }
                            }
                        }
                        if !refused {
                            break;
                        }
                    }
                }
            }
        }
        self.stats.agents.orchestrator_writes += proposed;
        if let Some(result) = finished {
            self.round_finished(id, result);
        }
        proposed > 0
    }

    fn round_finished(&mut self, id: u64, result: shoal_store::Result<()>) {
        let now = self.now;
        let origin_now = self.instant();
        let lead = self
            .running_mut(id)
            .and_then(|r| r.lead.as_mut())
            .expect("a round ran");
        let again = std::mem::take(&mut lead.again);
        let wrote = lead.round_writes > 0;
        let wake = lead
            .orchestrator
            .as_ref()
            .and_then(|o| o.next_wake())
            .map(|w| w.saturating_duration_since(origin_now).as_micros() as u64 / TIME_SCALE);
        let failed = result.is_err();
        self.trace
            .record(now, &[0x40de, id, u64::from(failed)], || match &result {
                Ok(()) => format!("manager {id}: round done"),
                Err(e) => format!("manager {id}: round failed: {e}"),
            });
        // A round that wrote nothing must not ask to run again at once: nothing it reads
        // would have changed, so the loop would spin.
        let spinning = !failed && !wrote && wake.is_some_and(|w| w == 0);
        let lead = self
            .running_mut(id)
            .and_then(|r| r.lead.as_mut())
            .expect("a round ran");
        lead.idle_spins = if spinning { lead.idle_spins + 1 } else { 0 };
        let spins = lead.idle_spins;
        if spins == SPIN_LIMIT {
            self.violation(
                "the orchestrator does not spin",
                format!(
                    "manager {id}: {spins} rounds in a row wrote nothing and asked to be woken at \
                     once (a restart delay or update wake already past)"
                ),
            );
        }
        let after = if failed {
            self.stats.agents.failed_rounds += 1;
            RETRY_ROUND
        } else if again {
            ROUND_AFTER_CHANGE
        } else if spins >= SPIN_LIMIT {
            // Reported; wait for a change instead of spinning.
            IDLE_ROUND
        } else {
            wake.map_or(IDLE_ROUND, |w| (w + 1).min(IDLE_ROUND))
        };
        self.schedule_round(id, now + after);
    }

    /// Between rounds, feeds the store's changes to the orchestrator, as its loop does, and
    /// asks for a round when there were some.
    fn drain_changes(&mut self, id: u64) {
        let now = self.now;
        let Some(lead) = self.running_mut(id).and_then(|r| r.lead.as_mut()) else {
            return;
        };
        let Some(orchestrator) = lead.orchestrator.as_mut() else {
            return;
        };
        let mut any = false;
        loop {
            match lead.changes.try_next() {
                Ok(Some((_, event))) => {
                    orchestrator.observe(&event);
                    any = true;
                }
                Ok(None) => break,
                Err(_) => {
                    orchestrator.view_lost();
                    lead.changes = lead.store.watch(round_filter());
                    any = true;
                    break;
                }
            }
        }
        if any {
            self.schedule_round(id, now + ROUND_AFTER_CHANGE);
        }
    }

    /// The dispatcher's sweep, every leader tick: nodes past their deadline go DOWN.
    pub(super) fn sweep(&mut self, id: u64) {
        let now = self.now;
        let Some(lead) = self.running_mut(id).and_then(|r| r.lead.as_mut()) else {
            return;
        };
        let expired: Vec<String> = lead
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(n, _)| n.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for n in &expired {
            lead.deadlines.remove(n);
        }
        let down = expired.clone();
        if self.write_on(id, move |tx| {
            for n in &down {
                if let Some(node) = tx.get::<Node>(n)
                    && node_state(&node) != node_status::State::Down as i32
                {
                    let mut node = (*node).clone();
                    let status = node.status.get_or_insert_with(Default::default);
                    status.state = node_status::State::Down as i32;
                    status.message = "heartbeat failure".into();
                    tx.update(node)?;
                }
            }
            Ok(())
        }) {
            self.stats.agents.nodes_written_down += expired.len() as u64;
            self.trace
                .record(now, &[0xd0e, id, expired.len() as u64], || {
                    format!("manager {id} writes DOWN (heartbeat failure): {expired:?}")
                });
        }
    }

    pub(super) fn agent_arrive(&mut self, agent: usize, manager: u64, msg: AgentMsg) {
        let net = self.workers.agents[agent].net;
        if !self.is_up(manager) || !self.net.connected(net, manager) {
            self.stats.messages_dropped += 1;
            return;
        }
        let node_id = self.workers.agents[agent].node_id.clone();
        let now = self.now;
        let r = self.running_mut(manager).expect("running");
        let not_leader = match r.lead.as_mut() {
            Some(lead) if r.node.is_leader() => {
                if msg.heartbeat {
                    lead.deadlines.insert(node_id.clone(), now + GRACE);
                }
                None
            }
            _ => Some(r.node.leader()),
        };
        let incarnation = msg.incarnation;
        let answer = match not_leader {
            Some(hint) => AgentAnswer::NotLeader(hint),
            None => {
                let at: prost_types::Timestamp = self.wall().into();
                let heartbeat = msg.heartbeat;
                let reports = msg.reports;
                let nid = node_id.clone();
                self.write_on(manager, move |tx| {
                    if heartbeat
                        && let Some(node) = tx.get::<Node>(&nid)
                        && node_state(&node) != node_status::State::Ready as i32
                    {
                        let mut node = (*node).clone();
                        let status = node.status.get_or_insert_with(Default::default);
                        status.state = node_status::State::Ready as i32;
                        status.message = String::new();
                        tx.update(node)?;
                    }
                    for (task_id, state) in &reports {
                        let Some(task) = tx.get::<Task>(task_id) else {
                            continue;
                        };
                        let current = state_of(&task);
                        if task.node_id != nid || *state <= current || is_terminal(current) {
                            continue;
                        }
                        let mut task = (*task).clone();
                        task.status = Some(TaskStatus {
                            timestamp: Some(at),
                            state: *state as i32,
                            message: shoal_api::task_state::name(*state).to_lowercase(),
                            ..Default::default()
                        });
                        tx.update(task)?;
                    }
                    Ok(())
                });
                let r = self.running(manager).expect("running");
                let assigned = r.store.view(|tx| {
                    tx.find::<Task>(By::Node(&node_id))
                        .into_iter()
                        .filter(|t| state_of(t) >= TaskState::Assigned)
                        .map(|t| Assigned {
                            id: id_of_task(&t).to_string(),
                            unit: unit_of(&t),
                            desired: t.desired_state,
                            state: state_of(&t),
                        })
                        .collect()
                });
                AgentAnswer::Assignments(assigned)
            }
        };
        let up = self.workers.agents[agent].up;
        if let Fate::Deliver(latencies) = self.net.fate(&mut self.rng, manager, net, up) {
            let mut answer = Some(answer);
            for latency in latencies {
                // A duplicate carries what the first copy carried.
                let copy = match answer.take() {
                    Some(a) => a,
                    None => break,
                };
                self.schedule(
                    latency,
                    Ev::AgentAnswer {
                        agent,
                        incarnation,
                        from: manager,
                        answer: Box::new(copy),
                    },
                );
            }
        }
    }

    // ---- the agents ------------------------------------------------------------------

    pub(super) fn agent_tick(&mut self, agent: usize, incarnation: u64) {
        let a = &self.workers.agents[agent];
        if !a.up || a.incarnation != incarnation {
            return;
        }
        let now = self.now;
        let ids: Vec<String> = a.tasks.keys().cloned().collect();
        for id in ids {
            self.step_task(agent, &id);
        }
        let a = &mut self.workers.agents[agent];
        let heartbeat = now >= a.next_heartbeat;
        if heartbeat {
            let jitter = self.rng.random_range(0..=2 * HEARTBEAT_JITTER);
            a.next_heartbeat = now + HEARTBEAT - HEARTBEAT_JITTER + jitter;
        }
        let reports: Vec<(String, TaskState)> = a
            .tasks
            .iter()
            .filter(|(_, t)| t.state > t.stored)
            .map(|(id, t)| (id.clone(), t.state))
            .collect();
        if !a.answered || a.target.is_none() {
            a.target = Some(self.rng.random_range(1..=self.cfg.managers));
        }
        a.answered = false;
        let (target, net) = (a.target.expect("a target"), a.net);
        let msg = AgentMsg {
            incarnation,
            heartbeat,
            reports,
        };
        self.trace.record(
            now,
            &[
                0xa7,
                agent as u64,
                target,
                u64::from(heartbeat),
                msg.reports.len() as u64,
            ],
            || format!("agent {agent} -> manager {target}: {msg:?}"),
        );
        let up = self.is_up(target);
        if let Fate::Deliver(latencies) = self.net.fate(&mut self.rng, net, target, up) {
            // A duplicate is the same message again.
            for latency in latencies {
                let copy = AgentMsg {
                    incarnation: msg.incarnation,
                    heartbeat: msg.heartbeat,
                    reports: msg.reports.clone(),
                };
                self.schedule(
                    latency,
                    Ev::AgentArrive {
                        agent,
                        manager: target,
                        msg: Box::new(copy),
                    },
                );
            }
        } else {
            self.stats.messages_dropped += 1;
        }
        let next = POLL + self.rng.random_range(0..TICK / 5);
        self.schedule(next, Ev::AgentTick { agent, incarnation });
    }

    /// One step of a task on its agent, when due.
    fn step_task(&mut self, agent: usize, id: &str) {
        let now = self.now;
        let step = self.rng.random_range(TICK..=4 * TICK);
        let stop = self.rng.random_range(3 * TICK..=30 * TICK);
        let fails = self.rng.random_range(0..FAILURE_ODDS) == 0;
        let deaf = self.cfg.planted_bug == Some(PlantedBug::AgentIgnoresShutdown);
        let a = &mut self.workers.agents[agent];
        let t = a.tasks.get_mut(id).expect("a task");
        if is_terminal(t.state) {
            return;
        }
        if t.desired > TaskState::Running as i32 && !t.stopping && !deaf {
            t.stopping = true;
            t.next_step = if t.state >= TaskState::Starting {
                now + stop
            } else {
                now
            };
        }
        if t.next_step > now {
            return;
        }
        let before = t.state;
        if t.stopping {
            t.state = TaskState::Shutdown;
        } else if t.state == TaskState::Running {
            if !fails {
                return;
            }
            t.state = TaskState::Failed;
            self.stats.agents.tasks_failed += 1;
        } else {
            let cap = if t.desired >= TaskState::Running as i32 {
                TaskState::Running
            } else {
                TaskState::Ready
            };
            if t.state >= cap {
                return;
            }
            t.state = next_state(t.state);
            t.next_step = now + step;
        }
        let (after, unit) = (t.state, t.unit.clone());
        let node = a.node_id.clone();
        self.trace.record(
            now,
            &[0x7a5c, agent as u64, fnv(id.as_bytes()), after as u64],
            || {
                format!(
                    "agent {agent} ({node}): task {id} {} -> {}",
                    shoal_api::task_state::name(before),
                    shoal_api::task_state::name(after)
                )
            },
        );
        if after == TaskState::Running {
            self.task_started(agent, id, unit);
        } else if before == TaskState::Running {
            self.task_stopped(id, &unit);
        }
    }

    /// One task per unit: a task that starts running may not share its unit with another
    /// running task, unless the orchestrator gave that one up: its node was written DOWN
    /// after its agent received it. (A node cut off from the managers goes on with the tasks
    /// it has, even one it had not started yet when it was written DOWN; and a replacement
    /// may land on the same node once it is back, before that node has stopped the old
    /// task: the worker drives each task on its own, as Docker's does.)
    fn task_started(&mut self, agent: usize, id: &str, unit: Unit) {
        self.stats.agents.tasks_started += 1;
        let now = self.now;
        let received = self.workers.agents[agent]
            .tasks
            .get(id)
            .map_or(now, |t| t.received);
        let mut found = Vec::new();
        let others = self.workers.running.entry(unit.clone()).or_default();
        for (other, (other_agent, since, other_received)) in others.iter() {
            let other_node = &self.workers.agents[*other_agent].node_id;
            let given_up = self
                .workers
                .down_at
                .get(other_node)
                .is_some_and(|down| *down >= *other_received);
            if !given_up {
                found.push(format!(
                    "task {id} started on agent {agent} while task {other} of the same unit \
                     {unit:?} runs on agent {other_agent} (since {since} µs; its node {other_node} \
                     was not written DOWN after it received that task)"
                ));
            }
        }
        others.insert(id.to_string(), (agent, now, received));
        for detail in found {
            self.violation("one task per slot", detail);
        }
    }

    fn task_stopped(&mut self, id: &str, unit: &Unit) {
        if let Some(running) = self.workers.running.get_mut(unit) {
            running.remove(id);
            if running.is_empty() {
                self.workers.running.remove(unit);
            }
        }
    }

    pub(super) fn agent_answer(
        &mut self,
        agent: usize,
        incarnation: u64,
        from: u64,
        answer: AgentAnswer,
    ) {
        let now = self.now;
        let a = &mut self.workers.agents[agent];
        if !a.up || a.incarnation != incarnation {
            return;
        }
        a.answered = true;
        let assigned = match answer {
            AgentAnswer::NotLeader(hint) => {
                a.target = hint;
                return;
            }
            AgentAnswer::Assignments(assigned) => assigned,
        };
        a.target = Some(from);
        let mut listed = BTreeSet::new();
        for t in assigned {
            listed.insert(t.id.clone());
            match a.tasks.get_mut(&t.id) {
                Some(local) => {
                    local.desired = t.desired;
                    local.stored = t.state;
                }
                None if is_terminal(t.state) => {}
                None => {
                    // Past ASSIGNED in the store but unknown here: it ran in an earlier life
                    // of this agent, and died with it.
                    let lost = t.state > TaskState::Assigned;
                    a.tasks.insert(
                        t.id,
                        Local {
                            unit: t.unit,
                            state: if lost {
                                TaskState::Failed
                            } else {
                                TaskState::Assigned
                            },
                            stored: t.state,
                            desired: t.desired,
                            next_step: now,
                            stopping: false,
                            received: now,
                        },
                    );
                }
            }
        }
        // Tasks that left the assignment set are killed.
        let gone: Vec<(String, Unit, bool)> = a
            .tasks
            .iter()
            .filter(|(id, _)| !listed.contains(*id))
            .map(|(id, t)| (id.clone(), t.unit.clone(), t.state == TaskState::Running))
            .collect();
        for (id, unit, running) in gone {
            self.workers.agents[agent].tasks.remove(&id);
            if running {
                self.task_stopped(&id, &unit);
            }
        }
    }

    fn crash_agent(&mut self, agent: usize) {
        let a = &mut self.workers.agents[agent];
        if !a.up {
            return;
        }
        a.up = false;
        a.incarnation += 1;
        let tasks = std::mem::take(&mut a.tasks);
        for (id, t) in tasks {
            if t.state == TaskState::Running {
                self.task_stopped(&id, &t.unit);
            }
        }
        self.stats.agents.agent_crashes += 1;
        self.trace.record(self.now, &[0xc4a6, agent as u64], || {
            format!("CRASH agent {agent} (its tasks die)")
        });
        let after = self.rng.random_range(100 * TICK..350 * TICK);
        self.schedule(after, Ev::AgentRestart { agent });
    }

    pub(super) fn restart_agent(&mut self, agent: usize) {
        let a = &mut self.workers.agents[agent];
        if a.up {
            return;
        }
        a.up = true;
        a.incarnation += 1;
        a.target = None;
        a.answered = false;
        a.next_heartbeat = 0;
        let incarnation = a.incarnation;
        self.trace.record(self.now, &[0x4e58, agent as u64], || {
            format!("RESTART agent {agent}")
        });
        self.schedule(0, Ev::AgentTick { agent, incarnation });
    }

    /// The agents' share of the nemesis's draws.
    pub(super) fn agent_fault(&mut self, roll: u32) -> &'static str {
        let n = self.cfg.agents;
        let agent = self.rng.random_range(0..n);
        if roll < 108 {
            if !self.workers.agents[agent].up {
                return "none";
            }
            self.crash_agent(agent);
            "agent crash"
        } else {
            let net = self.workers.agents[agent].net;
            let links = (1..=self.cfg.managers)
                .flat_map(|m| [(net, m), (m, net)])
                .collect();
            self.partition(links, 150 * TICK..400 * TICK, || {
                format!("cut agent {agent} off from the managers")
            });
            "agent cut off"
        }
    }

    /// An operator scales a replicated service or updates a service's spec.
    pub(super) fn operate(&mut self) {
        if self.phase != Phase::Faulty {
            return;
        }
        let next = self.rng.random_range(40 * TICK..120 * TICK);
        self.schedule(next, Ev::Operate);
        let Some(l) = self.leader() else {
            return;
        };
        let pick = self.rng.random_range(0..self.workers.services.len());
        let id = self.workers.services[pick].clone();
        let scale = self.rng.random_bool(0.5);
        let replicas = self.rng.random_range(1..=6);
        self.workers.spec_generation += 1;
        let generation = self.workers.spec_generation;
        let mut what = String::new();
        let done = self.write_on(l, |tx| {
            let Some(current) = tx.get::<Service>(&id) else {
                return Ok(());
            };
            let mut next = (*current).clone();
            let spec = next.spec.get_or_insert_with(Default::default);
            match spec.mode.as_mut() {
                Some(service_spec::Mode::Replicated(r)) if scale => {
                    what = format!("scale {id} from {} to {replicas}", r.replicas);
                    r.replicas = replicas;
                }
                _ => {
                    // A new spec: a stop-first rolling update.
                    what = format!("update {id} to spec generation {generation}");
                    next.previous_spec = current.spec.clone().map(Box::new);
                    next.previous_spec_version = current.spec_version;
                    spec.task = Some(task_spec(generation));
                    next.spec_version = current.spec_version + 1;
                    next.update_status = None;
                }
            }
            tx.update(next)
        });
        if done {
            self.stats.agents.service_changes += 1;
            self.trace
                .record(self.now, &[0x0be4, pick as u64, generation], || {
                    format!("operator: {what}")
                });
        }
    }

    // ---- the end ---------------------------------------------------------------------

    /// Waits (a bounded time) for the tasks to converge, then records what did not.
    pub(super) fn converge_tasks(&mut self) {
        let deadline = self.now + CONVERGE_TICKS * TICK;
        // Looking at every task costs: once a tick is enough.
        let checked = std::cell::Cell::new(None);
        let done = self.run_until(deadline, |s| {
            if checked.get().is_some_and(|at| s.now < at + TICK) {
                return false;
            }
            checked.set(Some(s.now));
            s.settled() && s.tasks_converged().is_ok()
        });
        let problems = match self.tasks_converged() {
            Ok(()) => Vec::new(),
            Err(problems) => problems,
        };
        self.stats.agents.running_at_end = self.workers.running.values().map(|r| r.len()).sum();
        self.trace.record(self.now, &[0xc0e, u64::from(done)], || {
            format!(
                "tasks {} after healing",
                if done {
                    "converged"
                } else {
                    "did NOT converge"
                }
            )
        });
        if !done {
            for (invariant, detail) in problems {
                self.violation(
                    invariant,
                    format!("{CONVERGE_TICKS} ticks after healing: {detail}"),
                );
            }
        }
    }

    /// The convergence invariants, on the leader's store and the agents' own state.
    fn tasks_converged(&self) -> Result<(), Vec<(&'static str, String)>> {
        let Some(l) = self.leader() else {
            return Err(vec![("tasks converge", "no leader".into())]);
        };
        let r = self.running(l).expect("running");
        let (services, tasks, nodes) = r.store.view(|tx| {
            (
                tx.find::<Service>(By::All),
                tx.find::<Task>(By::All),
                tx.find::<Node>(By::All),
            )
        });
        let ready: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| node_state(n) == node_status::State::Ready as i32)
            .filter_map(|n| n.meta.as_ref().map(|m| m.id.as_str()))
            .collect();
        let agent_of: BTreeMap<&str, &Agent> = self
            .workers
            .agents
            .iter()
            .map(|a| (a.node_id.as_str(), a))
            .collect();
        // Running: wanted RUNNING, RUNNING in the store and on its agent, on a READY node.
        let running = |t: &Task| {
            t.desired_state == TaskState::Running as i32
                && state_of(t) == TaskState::Running
                && ready.contains(t.node_id.as_str())
                && agent_of.get(t.node_id.as_str()).is_some_and(|a| {
                    a.up && a
                        .tasks
                        .get(id_of_task(t))
                        .is_some_and(|l| l.state == TaskState::Running)
                })
        };
        let mut problems = Vec::new();
        for service in &services {
            let sid = id_of(service);
            let own: Vec<&Arc<Task>> = tasks.iter().filter(|t| t.service_id == sid).collect();
            match replicas_of(service) {
                Some(replicas) => {
                    let n = own.iter().filter(|t| running(t)).count() as u64;
                    if n != replicas {
                        problems.push((
                            "replicated services run their replicas",
                            format!("service {sid} wants {replicas} replicas, {n} run"),
                        ));
                    }
                }
                None => {
                    let active: Vec<&Arc<Node>> = nodes
                        .iter()
                        .filter(|n| {
                            node_state(n) == node_status::State::Ready as i32
                                && n.spec.as_ref().map(|s| s.availability).unwrap_or_default()
                                    == node_spec::Availability::Active as i32
                        })
                        .collect();
                    for node in active {
                        let nid = node.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
                        let n = own
                            .iter()
                            .filter(|t| t.node_id == nid && running(t))
                            .count();
                        if n != 1 {
                            problems.push((
                                "global services run once per node",
                                format!("service {sid} runs {n} tasks on READY node {nid}"),
                            ));
                        }
                    }
                }
            }
        }
        if !ready.is_empty() {
            for t in &tasks {
                if t.desired_state <= TaskState::Running as i32
                    && state_of(t) <= TaskState::Assigned
                {
                    problems.push((
                        "no task left pending",
                        format!(
                            "task {} of {} slot {} is {} (node {:?}, desired {}) with {} READY nodes",
                            id_of_task(t),
                            t.service_id,
                            t.slot,
                            shoal_api::task_state::name(state_of(t)),
                            t.node_id,
                            t.desired_state,
                            ready.len()
                        ),
                    ));
                }
            }
        }
        let by_id: BTreeMap<&str, &Arc<Task>> = tasks.iter().map(|t| (id_of_task(t), t)).collect();
        for a in self.workers.agents.iter().filter(|a| a.up) {
            for (id, local) in &a.tasks {
                if local.state != TaskState::Running {
                    continue;
                }
                let wanted = by_id
                    .get(id.as_str())
                    .is_some_and(|t| t.desired_state <= TaskState::Running as i32);
                if !wanted {
                    problems.push((
                        "agents run only what is wanted",
                        format!(
                            "agent {} runs task {id}, which the store does not want running",
                            a.node_id
                        ),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn id_of(service: &Service) -> &str {
    service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The planted bug: every task the orchestrator creates is wanted RUNNING at once.
fn start_at_once(changes: &mut ChangeSet) {
    for change in &mut changes.changes {
        if let Object::Task(task) = &mut change.object
            && task.desired_state == TaskState::Ready as i32
        {
            Arc::make_mut(task).desired_state = TaskState::Running as i32;
        }
    }
}
