//! The simulated world: managers, clients, the network and the fault schedule, all stepped
//! by one event queue under one seeded RNG.
//!
//! # The event loop
//!
//! Everything that happens is an [`Ev`] in a priority queue ordered by (simulated instant,
//! sequence number). The sequence number is the order in which events were scheduled, so
//! two events at the same instant always run in the same order. Handling an event may feed
//! a manager an input (a tick, a message, a client request), after which the manager's
//! `process_ready` runs at once, as the driver thread does after each input; what it sends
//! becomes new events through the network, what it answers becomes reply events to clients.
//! Time jumps from event to event; nothing waits and nothing runs on its own.
//!
//! # Managers
//!
//! Each manager is a `RaftNode` over a `LogStore` backed by a `MemoryLog` (its "disk") and a
//! `StateMachine` (its store). A crash drops the node and its store; the disk keeps exactly
//! what the storage layer made durable (entries and hard state written by `append`,
//! snapshots once saved; not the commit index learned without new entries, which is kept in
//! memory). A restart opens the disk again and calls `RaftNode::restart`, as the daemon does.
//! (raft's `LogStore` writes snapshots on a thread of its own; dropping the store waits for
//! it, so the disk's content at a crash does not depend on that thread's timing.)
//!
//! raft-rs draws every election timeout from its thread RNG. After every input the
//! simulator overwrites the timeout with a draw from the seed, whenever the node's (term,
//! leader) changed since the last draw and otherwise with the previous draw, through the
//! `RaftNode::set_randomized_election_timeout` test hook. raft-rs only reads the timeout in
//! `tick`, after the draw could have happened, so the thread RNG's values never matter.
//!
//! # Clients
//!
//! Clients act as users of the Control API: a write goes to the manager the client believes
//! leads (a follower forwards it once to the leader it knows, or refuses), is built there as
//! a store transaction against the leader's local store (`Store::update`, whose early checks
//! — object missing, version read differs, name taken — answer at once, as the Control API's
//! do), proposed through Raft, and answered when the leader applies it, with the store
//! version it produced. A read passes a ReadIndex barrier and then reads the leader's store,
//! as `linearize()` does. A client that hears nothing within two election timeouts (or hears
//! that leadership changed) records the outcome as unknown. Every operation is recorded with
//! its simulated call and return instants for `shoal-check`.
//!
//! Removal takes the version read (the Control API's `RemoveConfig` takes none): the
//! versioned model needs one, and the store's conflict check then decides it at apply time.
//!
//! # Agents
//!
//! With [`SimConfig::agents`] above 0, the leader also runs the orchestrator and the
//! dispatcher's heartbeat rule, and agents run tasks; the model, its clocks and its
//! invariants are described in the `agents` submodule. After every input a manager's Ready
//! work is followed by what it runs besides Raft (its orchestrator's round is polled, and
//! what the round proposed makes another Ready pass). Without agents none of this runs and
//! no random draw is added, so a seed runs exactly as it did before agents existed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use shoal_api::clock::ManualClock;
use shoal_api::labels::Labels;
use shoal_api::v1::{Annotations, Config, ConfigSpec, Meta, RaftMember};
use shoal_check::versioned::{Input, Output, VersionedObjects};
use shoal_check::{Checker, ClientId, History, Verdict};
use shoal_raft::{LogStore, MemoryLog, NodeConfig, ProposalError, ProposalId, RaftNode, ReadId};
use shoal_store::{ChangeSet, ProposeFuture, Proposer, Reader, StateMachine, Store, StoreError};

use crate::net::{Fate, Network, Slow};
use crate::trace::{Trace, fnv};

mod agents;

pub use agents::AgentStats;

/// One Raft tick of simulated time, µs (the daemon ticks every 100 ms; the ratio of network
/// latency to tick is what matters, and it is kept much below one here).
pub const TICK: u64 = 10_000;
const ELECTION_TICK: usize = 10;
/// raft-rs's exclusive upper bound, as `NodeConfig` sets it: `E + max(E / 2, 2)`.
const MAX_ELECTION_TICK: usize = ELECTION_TICK + ELECTION_TICK / 2;
const SNAPSHOT_INTERVAL: u64 = 30;
const KEEP_ENTRIES: u64 = 10;
/// A client gives up after two election timeouts, as the driver does.
const CLIENT_TIMEOUT: u64 = 2 * ELECTION_TICK as u64 * TICK + 5 * TICK;
/// Baseline loss and duplication while faults run (per mille).
const BASE_LOSS: u32 = 5;
const BASE_DUP: u32 = 10;
/// The instant simulated time 0 maps to, for timestamps written into objects.
const EPOCH_SECONDS: u64 = 1_700_000_000;
/// The step limit of the linearizability check (deterministic, unlike a time limit).
const CHECK_STEPS: u64 = 20_000_000;
/// Store events a subscriber may fall behind by (agents mode subscribes).
const WATCH_CAPACITY: usize = 1024;

/// A bug planted on purpose, to show that the invariants catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The leader answers a write as soon as it is proposed, before it is committed, with the
    /// version it would get if nothing intervened.
    AckBeforeCommit,
    /// (Agents mode.) A hook on the orchestrator's writes starts every task it creates at
    /// once (desired RUNNING), where the orchestrator held it at READY: through a restart
    /// delay, or — the bug this plants — until the slot's old task has stopped, so a
    /// stop-first update runs two tasks of one slot at once.
    StartWhileStopping,
    /// (Agents mode.) Agents never stop a task they run, whatever its desired state: scaled
    /// down and replaced tasks run on, and a stop-first update never gets its slot back.
    AgentIgnoresShutdown,
}

/// How the leader answers a write whose transaction fails its early checks (object
/// missing, version read differs, name taken) against the leader's local store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyAnswers {
    /// At once, from the local store, as the Control API did before it confirmed its view. The local store may be
    /// stale (a deposed leader that has not noticed yet, a new leader that has not applied
    /// its predecessor's last entries), so the answer may not be linearizable: seeds 15 and
    /// 28 (3 managers, 300 ticks) show it.
    ControlApi,
    /// After a ReadIndex barrier: the leader confirms it still leads and has applied
    /// everything committed before the request, then builds the transaction again and
    /// answers its error, or proposes it. The fix the simulation suggests.
    Confirmed,
}

/// How one run is set up. The run is a function of this and nothing else.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Managers: 3 or 5.
    pub managers: u64,
    /// Length of the phase with faults and client load, in ticks.
    pub steps: u64,
    pub clients: usize,
    /// Named objects the clients work on.
    pub objects: usize,
    /// Whether faults are injected (off: a calm run, for comparison).
    pub faults: bool,
    pub early_answers: EarlyAnswers,
    /// Simulated agents (worker nodes), with the orchestrator and scheduler running on the
    /// leader and a few services to run; 0: managers and clients only.
    pub agents: usize,
    /// Keep this many trace lines (all of them with `usize::MAX`); `None`: digest only.
    pub keep_trace: Option<usize>,
    /// Test only: a deliberate bug.
    #[doc(hidden)]
    pub planted_bug: Option<PlantedBug>,
    /// Test only: off leaves raft-rs's own (thread RNG) election timeouts in place, which
    /// makes runs irreproducible; the determinism test shows it.
    #[doc(hidden)]
    pub seeded_election_timeouts: bool,
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            managers: 3,
            steps: 300,
            clients: 4,
            objects: 3,
            faults: true,
            early_answers: EarlyAnswers::Confirmed,
            agents: 0,
            keep_trace: None,
            planted_bug: None,
            seeded_election_timeouts: true,
        }
    }
}

/// An invariant that did not hold.
#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
    /// Simulated instant, µs.
    pub at: u64,
    /// The trace lines before it (only when the run kept a trace).
    pub excerpt: Vec<String>,
    /// Where in simulated time to look (µs), when that is not where it was detected: for a
    /// history that is not linearizable, the call and return of the operation that could
    /// not be placed.
    pub window: Option<(u64, u64)>,
}

/// Counts of what a run did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub operations: usize,
    pub returned: usize,
    pub unknown: usize,
    /// Requests refused before anything happened (not the leader): not in the history.
    pub refused: usize,
    pub writes_acknowledged: usize,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub snapshots_sent: u64,
    pub snapshots_delivered: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub faults: BTreeMap<&'static str, u64>,
    /// Terms that had a leader.
    pub leader_terms: usize,
    /// Early answers from the leader's local view (Control API checks before proposing).
    pub early_answers: u64,
    /// The linearizability verdict, in words.
    pub verdict: String,
    /// What the agents, the dispatcher and the orchestrator did (agents mode).
    pub agents: AgentStats,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub digest: u64,
    pub events: u64,
    /// Simulated time at the end, µs.
    pub sim_time: u64,
    pub stats: Stats,
    /// The first violations (at most 20).
    pub violations: Vec<Violation>,
    /// How many violations there were in all.
    pub violation_count: usize,
    /// The trace kept (see [`SimConfig::keep_trace`]).
    pub trace: Vec<String>,
}

/// Runs one seed.
pub fn run(config: SimConfig) -> Report {
    let mut sim = Sim::new(config);
    sim.run();
    sim.report()
}

/// Collects the transaction a `Store::update` closure built, instead of committing it: the
/// simulator proposes it to Raft itself.
#[derive(Default)]
struct Capture(Mutex<Option<ChangeSet>>);

impl Proposer for Capture {
    fn propose(&self, _state: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture {
        *self.0.lock().expect("capture lock") = Some(changes);
        Box::pin(std::future::ready(Ok(0)))
    }
}

/// Polls a future that is ready at once (the capture proposer never waits).
fn ready_now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("a store update with the capture proposer never waits"),
    }
}

struct Pending {
    client: usize,
    op: u64,
    input: Input,
    /// Already answered (planted bug): the real outcome is ignored.
    answered: bool,
    /// A write whose early checks failed, waiting for a read barrier to check again.
    recheck: bool,
}

struct Running {
    node: RaftNode,
    state: Arc<StateMachine>,
    store: Store,
    capture: Arc<Capture>,
    writes: BTreeMap<ProposalId, Pending>,
    reads: BTreeMap<ReadId, Pending>,
    /// (term, leader) when the election timeout was last drawn, and the draw.
    timeout_key: Option<(u64, Option<u64>)>,
    timeout: usize,
    /// Committed entries compared with the cluster's record up to here.
    checked: u64,
    /// Applied index whose store digest was last compared.
    digested: u64,
    /// Agents mode: the orchestrator and the dispatcher's sessions, while this manager leads.
    lead: Option<agents::Lead>,
    /// Agents mode: node changes this manager applied (for the DOWN times).
    nodes_watch: Option<shoal_store::Subscription>,
}

struct Manager {
    disk: MemoryLog,
    running: Option<Running>,
    /// Bumped at every crash and restart: ticks of an earlier life are ignored.
    incarnation: u64,
}

#[derive(Clone, Debug)]
enum Reply {
    Output(Output),
    Unknown,
    /// Not the leader: nothing happened. Carries the leader the manager knows.
    Refused(Option<u64>),
    /// A store error no correct run gives.
    Unexpected(String),
}

struct Outstanding {
    op: u64,
    input: Input,
    call: u64,
}

#[derive(Default)]
struct Client {
    leader_hint: Option<u64>,
    outstanding: Option<Outstanding>,
    /// The last version this client saw of each object.
    known: BTreeMap<String, u64>,
    /// The final reader: reads these names, one at a time, until each returned.
    final_reads: Vec<String>,
    is_final: bool,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: u64,
        incarnation: u64,
    },
    Deliver(Box<Message>),
    Call {
        client: usize,
    },
    Arrive {
        client: usize,
        op: u64,
        node: u64,
        forwarded: bool,
    },
    Reply {
        client: usize,
        op: u64,
        reply: Reply,
    },
    Timeout {
        client: usize,
        op: u64,
    },
    Nemesis,
    Restart {
        node: u64,
    },
    Heal {
        generation: u64,
    },
    LossEnd {
        generation: u64,
    },
    SlowEnd {
        node: u64,
        generation: u64,
    },
    /// Agents mode: an orchestrator round on a leading manager.
    Round {
        node: u64,
        incarnation: u64,
    },
    AgentTick {
        agent: usize,
        incarnation: u64,
    },
    AgentArrive {
        agent: usize,
        manager: u64,
        msg: Box<agents::AgentMsg>,
    },
    AgentAnswer {
        agent: usize,
        incarnation: u64,
        from: u64,
        answer: Box<agents::AgentAnswer>,
    },
    AgentRestart {
        agent: usize,
    },
    /// An operator scales or updates a service.
    Operate,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest instant, then the earliest scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Forming,
    Faulty,
    Healing,
}

/// Committed entry identity: (term, type, digest of data and context).
type EntryId = (u64, i32, u64);

struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    managers: BTreeMap<u64, Manager>,
    net: Network,
    clients: Vec<Client>,
    history: History<Input, Output>,
    inputs: BTreeMap<u64, Input>,
    next_op: u64,
    next_value: u64,
    max_version_seen: u64,
    generation: u64,
    phase: Phase,
    clock: Arc<ManualClock>,
    trace: Trace,
    stats: Stats,
    violations: Vec<Violation>,
    violation_count: usize,
    /// Election safety: the leader of each term.
    leaders: BTreeMap<u64, u64>,
    /// Every committed entry any manager reported, by index.
    committed: BTreeMap<u64, EntryId>,
    /// Store digest (and encoding, to explain a difference) at each applied index any
    /// manager reported.
    digests: BTreeMap<u64, (u64, u64, Vec<u8>)>,
    /// Agents mode: the agents, the services, and what the invariants need to remember.
    workers: agents::Workers,
}

fn msg_fields(m: &Message) -> [u64; 8] {
    [
        m.get_msg_type() as u64,
        m.from,
        m.to,
        m.term,
        m.index,
        m.log_term,
        m.commit,
        m.entries.len() as u64 | (u64::from(m.reject) << 32),
    ]
}

fn msg_line(m: &Message) -> String {
    format!(
        "{:?} {}->{} term {} index {} log_term {} commit {} entries {}{}",
        m.get_msg_type(),
        m.from,
        m.to,
        m.term,
        m.index,
        m.log_term,
        m.commit,
        m.entries.len(),
        if m.reject { " reject" } else { "" }
    )
}

fn input_fields(input: &Input) -> [u64; 4] {
    match input {
        Input::Create { name, value } => [1, fnv(name.as_bytes()), *value, 0],
        Input::Update {
            name,
            read_version,
            value,
        } => [2, fnv(name.as_bytes()), *read_version, *value],
        Input::Read { name } => [3, fnv(name.as_bytes()), 0, 0],
        Input::Remove { name, read_version } => [4, fnv(name.as_bytes()), *read_version, 0],
    }
}

fn output_fields(output: &Output) -> [u64; 3] {
    match output {
        Output::Created { version } => [1, *version, 0],
        Output::AlreadyExists => [2, 0, 0],
        Output::Updated { version } => [3, *version, 0],
        Output::OutOfSequence => [4, 0, 0],
        Output::NotFound => [5, 0, 0],
        Output::Found { value, version } => [6, *value, *version],
        Output::Removed => [7, 0, 0],
    }
}

fn node_config(id: u64) -> NodeConfig {
    NodeConfig {
        id,
        election_tick: ELECTION_TICK,
        heartbeat_tick: 1,
        snapshot_interval: SNAPSHOT_INTERVAL,
        keep_entries: KEEP_ENTRIES,
    }
}

fn member(id: u64) -> RaftMember {
    RaftMember {
        raft_id: id,
        node_id: format!("manager{id}"),
        addr: format!("sim://manager{id}"),
    }
}

fn config_object(name: &str, value: u64) -> Config {
    let mut labels = Vec::new();
    labels.set_label("value", value.to_string());
    Config {
        meta: Some(Meta {
            id: name.into(),
            ..Default::default()
        }),
        spec: Some(ConfigSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels,
            }),
            data: b"shoal-sim".to_vec(),
            ..Default::default()
        }),
    }
}

fn config_value(config: &Config) -> u64 {
    config
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .and_then(|a| a.labels.get_label("value"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Builds the transaction for a write the way the Control API does: a closure on a view of
/// the leader's store. An error is the Control API's early answer.
fn build_write(store: &Store, capture: &Capture, input: &Input) -> Result<ChangeSet, StoreError> {
    let not_found = |name: &str| StoreError::NotFound {
        kind: "config",
        what: name.to_string(),
    };
    let done = match input {
        Input::Create { name, value } => {
            let config = config_object(name, *value);
            ready_now(store.update(|tx| tx.create(config)))
        }
        Input::Update {
            name,
            read_version,
            value,
        } => ready_now(store.update(|tx| {
            let current = tx.get::<Config>(name).ok_or_else(|| not_found(name))?;
            let mut updated = (*current).clone();
            let spec = updated.spec.get_or_insert_with(Default::default);
            spec.annotations
                .get_or_insert_with(Default::default)
                .labels
                .set_label("value", value.to_string());
            updated.meta.get_or_insert_with(Default::default).version = *read_version;
            tx.update(updated)
        })),
        Input::Remove { name, read_version } => ready_now(store.update(|tx| {
            let current = tx.get::<Config>(name).ok_or_else(|| not_found(name))?;
            let version = current.meta.as_ref().map(|m| m.version).unwrap_or(0);
            if version != *read_version {
                return Err(StoreError::SequenceConflict {
                    kind: "config",
                    id: name.clone(),
                    read: *read_version,
                    current: version,
                });
            }
            tx.delete::<Config>(name)
        })),
        Input::Read { .. } => unreachable!("reads are not transactions"),
    };
    done?;
    Ok(capture
        .0
        .lock()
        .expect("capture lock")
        .take()
        .expect("a write transaction changes something"))
}

/// The answer a store error gives the client.
fn store_error_reply(input: &Input, e: &StoreError) -> Reply {
    match (input, e) {
        (Input::Create { .. }, StoreError::IdConflict { .. } | StoreError::NameConflict { .. }) => {
            Reply::Output(Output::AlreadyExists)
        }
        (Input::Update { .. } | Input::Remove { .. }, StoreError::NotFound { .. }) => {
            Reply::Output(Output::NotFound)
        }
        (Input::Update { .. } | Input::Remove { .. }, StoreError::SequenceConflict { .. }) => {
            Reply::Output(Output::OutOfSequence)
        }
        (_, StoreError::Unavailable(_)) => Reply::Unknown,
        _ => Reply::Unexpected(e.to_string()),
    }
}

fn write_reply(input: &Input, result: Result<u64, ProposalError>) -> Reply {
    match result {
        Ok(version) => Reply::Output(match input {
            Input::Create { .. } => Output::Created { version },
            Input::Update { .. } => Output::Updated { version },
            Input::Remove { .. } => Output::Removed,
            Input::Read { .. } => unreachable!("reads are not proposed"),
        }),
        Err(ProposalError::Refused(e)) => store_error_reply(input, &e),
        Err(ProposalError::Unknown) | Err(ProposalError::Membership(_)) => Reply::Unknown,
    }
}

/// What differs between two encoded stores, in a line.
fn store_difference(mine: &[u8], theirs: &[u8]) -> String {
    use prost::Message as _;
    let describe = |bytes: &[u8]| -> BTreeMap<String, (u64, u64)> {
        shoal_api::v1::StoreSnapshot::decode(bytes)
            .map(|s| {
                s.configs
                    .iter()
                    .map(|c| {
                        let meta = c.meta.clone().unwrap_or_default();
                        (meta.id, (meta.version, config_value(c)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let version = |bytes: &[u8]| {
        shoal_api::v1::StoreSnapshot::decode(bytes)
            .map(|s| s.version)
            .unwrap_or(0)
    };
    format!(
        "store version {} vs {}, configs (id: (version, value)) {:?} vs {:?}",
        version(mine),
        version(theirs),
        describe(mine),
        describe(theirs)
    )
}

fn read_local(store: &Store, name: &str) -> Output {
    match store.view(|tx| tx.get::<Config>(name)) {
        Some(c) => Output::Found {
            value: config_value(&c),
            version: c.meta.as_ref().map(|m| m.version).unwrap_or(0),
        },
        None => Output::NotFound,
    }
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let clients = (0..=cfg.clients)
            .map(|i| Client {
                is_final: i == cfg.clients,
                ..Default::default()
            })
            .collect();
        let managers = (1..=cfg.managers)
            .map(|id| {
                (
                    id,
                    Manager {
                        disk: MemoryLog::new(),
                        running: None,
                        incarnation: 0,
                    },
                )
            })
            .collect();
        Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            trace: Trace::new(cfg.keep_trace),
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            managers,
            net: Network::default(),
            clients,
            history: History::new(),
            inputs: BTreeMap::new(),
            next_op: 1,
            next_value: 1,
            max_version_seen: 0,
            generation: 0,
            phase: Phase::Forming,
            clock: Arc::new(ManualClock::at_unix_seconds(EPOCH_SECONDS)),
            stats: Stats::default(),
            violations: Vec::new(),
            violation_count: 0,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            digests: BTreeMap::new(),
            workers: agents::Workers::default(),
        }
    }

    fn schedule(&mut self, after: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after,
            seq: self.seq,
            ev,
        });
    }

    fn violation(&mut self, invariant: &'static str, detail: String) {
        self.violation_count += 1;
        let at = self.now;
        self.trace
            .record(at, &[0xdead, fnv(invariant.as_bytes())], || {
                format!(
                    "VIOLATION {invariant}: {}",
                    detail.lines().next().unwrap_or("")
                )
            });
        if self.violations.len() < 20 {
            let excerpt = if self.violations.is_empty() {
                self.trace.lines()
            } else {
                Vec::new()
            };
            self.violations.push(Violation {
                invariant,
                detail,
                at,
                excerpt,
                window: None,
            });
        }
    }

    fn running(&self, id: u64) -> Option<&Running> {
        self.managers.get(&id).and_then(|m| m.running.as_ref())
    }

    fn running_mut(&mut self, id: u64) -> Option<&mut Running> {
        self.managers.get_mut(&id).and_then(|m| m.running.as_mut())
    }

    fn is_up(&self, id: u64) -> bool {
        self.running(id).is_some()
    }

    fn up_ids(&self) -> Vec<u64> {
        self.managers
            .iter()
            .filter(|(_, m)| m.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader of the highest term among running managers.
    fn leader(&self) -> Option<u64> {
        self.managers
            .iter()
            .filter_map(|(id, m)| m.running.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.node.is_leader())
            .max_by_key(|(_, r)| r.node.term())
            .map(|(id, _)| *id)
    }

    // ---- managers --------------------------------------------------------------------

    fn start(&mut self, id: u64, node: RaftNode, state: Arc<StateMachine>) {
        let capture = Arc::new(Capture::default());
        let store = Store::with_state(state.clone(), capture.clone(), self.clock.clone());
        let nodes_watch = (self.cfg.agents > 0)
            .then(|| store.watch(shoal_store::Filter::all().kind(shoal_api::v1::ObjectKind::Node)));
        let applied = node.applied();
        let m = self.managers.get_mut(&id).expect("a manager");
        m.incarnation += 1;
        m.running = Some(Running {
            node,
            state,
            store,
            capture,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            timeout_key: None,
            timeout: ELECTION_TICK,
            checked: applied,
            digested: u64::MAX,
            lead: None,
            nodes_watch,
        });
        let incarnation = m.incarnation;
        let phase = self.rng.random_range(0..TICK);
        self.schedule(
            phase,
            Ev::Tick {
                node: id,
                incarnation,
            },
        );
        self.fix_timeout(id);
        self.observe(id);
    }

    fn bootstrap(&mut self, id: u64) {
        let disk = self.managers[&id].disk.clone();
        let state = Arc::new(StateMachine::new(WATCH_CAPACITY));
        let node = LogStore::open(Box::new(disk))
            .and_then(|log| RaftNode::bootstrap(node_config(id), log, state.clone(), member(id)));
        match node {
            Ok(node) => self.start(id, node, state),
            Err(e) => self.violation("raft error", format!("bootstrapping manager {id}: {e}")),
        }
    }

    fn join(&mut self, id: u64) {
        let disk = self.managers[&id].disk.clone();
        let state = Arc::new(StateMachine::new(WATCH_CAPACITY));
        let node = LogStore::open(Box::new(disk))
            .and_then(|log| RaftNode::joining(node_config(id), log, state.clone()));
        match node {
            Ok(node) => self.start(id, node, state),
            Err(e) => self.violation("raft error", format!("joining manager {id}: {e}")),
        }
    }

    fn crash(&mut self, id: u64) {
        let m = self.managers.get_mut(&id).expect("a manager");
        if m.running.take().is_none() {
            return;
        }
        m.incarnation += 1;
        self.stats.crashes += 1;
        self.trace
            .record(self.now, &[0xc4a5, id], || format!("CRASH manager {id}"));
    }

    fn restart(&mut self, id: u64) {
        if self.is_up(id) {
            return;
        }
        self.stats.restarts += 1;
        self.trace
            .record(self.now, &[0x4e57, id], || format!("RESTART manager {id}"));
        let disk = self.managers[&id].disk.clone();
        let state = Arc::new(StateMachine::new(WATCH_CAPACITY));
        let node = LogStore::open(Box::new(disk))
            .and_then(|log| RaftNode::restart(node_config(id), log, state.clone()));
        match node {
            Ok(node) => self.start(id, node, state),
            Err(e) => self.violation("raft error", format!("restarting manager {id}: {e}")),
        }
    }

    /// Replaces raft-rs's thread-RNG election timeout with a seeded one (see the module
    /// documentation).
    fn fix_timeout(&mut self, id: u64) {
        let Some(r) = self.managers.get_mut(&id).and_then(|m| m.running.as_mut()) else {
            return;
        };
        if !self.cfg.seeded_election_timeouts {
            return;
        }
        let key = (r.node.term(), r.node.leader());
        if r.timeout_key != Some(key) {
            r.timeout_key = Some(key);
            r.timeout = self.rng.random_range(ELECTION_TICK..MAX_ELECTION_TICK);
        }
        r.node.set_randomized_election_timeout(r.timeout);
    }

    fn tick_interval(&mut self, id: u64) -> u64 {
        let factor = self.net.slow.get(&id).map(|s| s.tick_factor).unwrap_or(1);
        TICK * factor + self.rng.random_range(0..TICK / 50)
    }

    /// Runs the node's Ready work and routes what it produced; in agents mode, then drives
    /// what the manager runs besides Raft (which may propose, needing another pass).
    fn process(&mut self, id: u64) {
        loop {
            self.process_once(id);
            if !self.after_process(id) {
                return;
            }
        }
    }

    fn process_once(&mut self, id: u64) {
        let Some(r) = self.running_mut(id) else {
            return;
        };
        let mut messages = Vec::new();
        let result = r.node.process_ready_with(&mut |m| messages.push(m));
        let mut replies = Vec::new();
        match result {
            Ok(out) => {
                let mut proposals = out.proposals;
                proposals.sort_by_key(|(p, _)| *p);
                let mut reads = out.reads;
                reads.sort_unstable();
                for (p, result) in proposals {
                    if let Some(pending) = r.writes.remove(&p) {
                        if !pending.answered {
                            let reply = write_reply(&pending.input, result);
                            replies.push((pending.client, pending.op, reply));
                        }
                    } else if let Some(lead) = r.lead.as_mut() {
                        lead.resolve(p, result);
                    }
                }
                for read in reads {
                    let Some(pending) = r.reads.remove(&read) else {
                        continue;
                    };
                    if !pending.recheck {
                        let output = read_local(&r.store, pending.input.name());
                        replies.push((pending.client, pending.op, Reply::Output(output)));
                        continue;
                    }
                    // The view is confirmed: check the write again on it.
                    match build_write(&r.store, &r.capture, &pending.input) {
                        Err(e) => {
                            let reply = store_error_reply(&pending.input, &e);
                            replies.push((pending.client, pending.op, reply));
                        }
                        Ok(changes) => match r.node.propose(changes) {
                            Ok(p) => {
                                r.writes.insert(
                                    p,
                                    Pending {
                                        recheck: false,
                                        ..pending
                                    },
                                );
                            }
                            Err(_) => {
                                let reply = Reply::Refused(r.node.leader());
                                replies.push((pending.client, pending.op, reply));
                            }
                        },
                    }
                }
            }
            Err(e) => self.violation("raft error", format!("manager {id}: {e}")),
        }
        self.fix_timeout(id);
        self.observe(id);
        for (client, op, reply) in replies {
            self.reply(id, client, op, reply);
        }
        self.dispatch(id, messages);
    }

    /// Sends what a manager produced through the network.
    fn dispatch(&mut self, from: u64, messages: Vec<Message>) {
        let mut unreachable = BTreeSet::new();
        let mut snapshot_failed = BTreeSet::new();
        for msg in messages {
            let to = msg.to;
            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            let up = self.is_up(to);
            match self.net.fate(&mut self.rng, from, to, up) {
                fate @ (Fate::Unreachable | Fate::Lost) => {
                    self.stats.messages_dropped += 1;
                    if fate == Fate::Unreachable {
                        unreachable.insert(to);
                    }
                    if snapshot {
                        snapshot_failed.insert(to);
                    }
                    self.trace.record(self.now, &[0xd209, 1], || {
                        format!("drop {}", msg_line(&msg))
                    });
                }
                Fate::Deliver(latencies) => {
                    if snapshot {
                        self.stats.snapshots_sent += 1;
                    }
                    for latency in latencies {
                        self.schedule(latency, Ev::Deliver(Box::new(msg.clone())));
                    }
                }
            }
        }
        if let Some(r) = self.running_mut(from) {
            for to in unreachable {
                r.node.report_unreachable(to);
            }
            for to in snapshot_failed {
                r.node.report_snapshot(to, false);
            }
        }
    }

    /// Checks the invariants a manager's state can break, after every change to it.
    fn observe(&mut self, id: u64) {
        let Some(r) = self.managers.get_mut(&id).and_then(|m| m.running.as_mut()) else {
            return;
        };
        let mut found = Vec::new();
        // Election safety: at most one leader per term.
        if r.node.is_leader() {
            let term = r.node.term();
            match self.leaders.get(&term) {
                Some(other) if *other != id => found.push((
                    "election safety",
                    format!("managers {other} and {id} both lead term {term}"),
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                }
            }
        }
        // Committed entries never change.
        let store = r.node.raw_store();
        let first = raft::Storage::first_index(store).unwrap_or(1);
        let last = raft::Storage::last_index(store).unwrap_or(0);
        let high = r.node.commit_index().min(last);
        let low = (r.checked + 1).max(first);
        if low <= high {
            match raft::Storage::entries(
                store,
                low,
                high + 1,
                None,
                raft::GetEntriesContext::empty(false),
            ) {
                Ok(entries) => {
                    for e in entries {
                        let mut bytes = e.data.to_vec();
                        bytes.extend_from_slice(&e.context);
                        let identity = (e.term, e.get_entry_type() as i32, fnv(&bytes));
                        match self.committed.get(&e.index) {
                            Some(known) if *known != identity => found.push((
                                "committed entries never change",
                                format!(
                                    "manager {id} has entry {} of term {} committed; another \
                                     manager committed term {} there",
                                    e.index, e.term, known.0
                                ),
                            )),
                            Some(_) => {}
                            None => {
                                self.committed.insert(e.index, identity);
                            }
                        }
                    }
                }
                Err(e) => found.push((
                    "raft error",
                    format!("manager {id}: reading committed entries {low}..={high}: {e}"),
                )),
            }
        }
        r.checked = r.checked.max(high);
        // State machine safety: equal stores at equal applied indexes.
        let applied = r.node.applied();
        if applied != r.digested {
            r.digested = applied;
            let bytes = r.state.encode_snapshot();
            let digest = fnv(&bytes);
            match self.digests.get(&applied) {
                Some((other, known, theirs)) if *known != digest => found.push((
                    "state machine safety",
                    format!(
                        "manager {id}'s store at applied index {applied} differs from manager \
                         {other}'s at the same index: {}",
                        store_difference(&bytes, theirs)
                    ),
                )),
                Some(_) => {}
                None => {
                    self.digests.insert(applied, (id, digest, bytes));
                }
            }
            self.trace
                .record(self.now, &[0xa991, id, applied, digest], || {
                    format!("manager {id} applied {applied} store {digest:016x}")
                });
        }
        for (invariant, detail) in found {
            self.violation(invariant, detail);
        }
    }

    // ---- clients ---------------------------------------------------------------------

    fn fresh_value(&mut self) -> u64 {
        self.next_value += 1;
        self.next_value
    }

    fn generate(&mut self, c: usize) -> Input {
        let name = format!("k{}", self.rng.random_range(0..self.cfg.objects));
        let known = self.clients[c].known.get(&name).copied();
        let read_version = match known {
            Some(v) if self.rng.random_range(0..10) > 0 => v,
            Some(v) => v.saturating_sub(self.rng.random_range(0..3)),
            None => self.rng.random_range(0..=self.max_version_seen.max(1)),
        };
        match self.rng.random_range(0..100) {
            0..20 => {
                let value = self.fresh_value();
                Input::Create { name, value }
            }
            20..55 => {
                let value = self.fresh_value();
                Input::Update {
                    name,
                    read_version,
                    value,
                }
            }
            55..88 => Input::Read { name },
            _ => Input::Remove { name, read_version },
        }
    }

    fn call(&mut self, c: usize) {
        if self.clients[c].outstanding.is_some() {
            return;
        }
        let input = if self.clients[c].is_final {
            match self.clients[c].final_reads.pop() {
                Some(name) => Input::Read { name },
                None => return,
            }
        } else {
            if self.phase != Phase::Faulty {
                return;
            }
            self.generate(c)
        };
        let op = self.next_op;
        self.next_op += 1;
        let fields = input_fields(&input);
        self.trace.record(
            self.now,
            &[
                0xca11, c as u64, op, fields[0], fields[1], fields[2], fields[3],
            ],
            || format!("client {c} calls op {op}: {input:?}"),
        );
        self.inputs.insert(op, input.clone());
        self.clients[c].outstanding = Some(Outstanding {
            op,
            input,
            call: self.now,
        });
        let up = self.up_ids();
        let target = match self.clients[c].leader_hint {
            Some(h) if up.contains(&h) => h,
            _ => match up.choose(&mut self.rng) {
                Some(id) => *id,
                None => self.rng.random_range(1..=self.cfg.managers),
            },
        };
        if !self.lost() {
            let latency = self.net.latency(&mut self.rng, 0, target);
            self.schedule(
                latency,
                Ev::Arrive {
                    client: c,
                    op,
                    node: target,
                    forwarded: false,
                },
            );
        }
        self.schedule(CLIENT_TIMEOUT, Ev::Timeout { client: c, op });
    }

    /// Whether a client request or answer is lost (loss bursts touch clients too).
    fn lost(&mut self) -> bool {
        self.net.loss_per_mille > BASE_LOSS
            && self.rng.random_range(0..1000) < self.net.loss_per_mille
    }

    fn arrive(&mut self, client: usize, op: u64, node: u64, forwarded: bool) {
        let Some(input) = self.inputs.get(&op).cloned() else {
            return;
        };
        self.trace
            .record(self.now, &[0xa441, client as u64, op, node], || {
                format!(
                    "op {op} reaches manager {node}{}",
                    if forwarded { " (forwarded)" } else { "" }
                )
            });
        let Some(r) = self.running(node) else {
            return; // The client times out.
        };
        if !r.node.is_leader() {
            let leader = r.node.leader().filter(|l| *l != node);
            match leader {
                Some(l) if !forwarded && self.net.connected(node, l) => {
                    let latency = self.net.latency(&mut self.rng, node, l);
                    self.schedule(
                        latency,
                        Ev::Arrive {
                            client,
                            op,
                            node: l,
                            forwarded: true,
                        },
                    );
                }
                _ => self.reply(node, client, op, Reply::Refused(leader)),
            }
            return;
        }
        let planted = self.cfg.planted_bug;
        let early_answers = self.cfg.early_answers;
        let r = self.running_mut(node).expect("running");
        let mut early = None;
        match &input {
            Input::Read { .. } => {
                let id = r.node.read_index();
                r.reads.insert(
                    id,
                    Pending {
                        client,
                        op,
                        input,
                        answered: false,
                        recheck: false,
                    },
                );
            }
            _ => match build_write(&r.store, &r.capture, &input) {
                Err(_) if early_answers == EarlyAnswers::Confirmed => {
                    let id = r.node.read_index();
                    r.reads.insert(
                        id,
                        Pending {
                            client,
                            op,
                            input,
                            answered: false,
                            recheck: true,
                        },
                    );
                }
                Err(e) => early = Some(store_error_reply(&input, &e)),
                Ok(changes) => match r.node.propose(changes) {
                    Ok(id) => {
                        let mut answered = false;
                        if planted == Some(PlantedBug::AckBeforeCommit) {
                            // The bug: answer now, guessing the version.
                            let version = r.state.version() + 1 + r.writes.len() as u64;
                            early = Some(write_reply(&input, Ok(version)));
                            answered = true;
                        }
                        r.writes.insert(
                            id,
                            Pending {
                                client,
                                op,
                                input,
                                answered,
                                recheck: false,
                            },
                        );
                    }
                    Err(_) => early = Some(Reply::Refused(r.node.leader())),
                },
            },
        }
        if let Some(reply) = early {
            if matches!(reply, Reply::Output(_)) {
                self.stats.early_answers += 1;
                let r = self.running(node).expect("running");
                let (term, applied) = (r.node.term(), r.node.applied());
                self.trace
                    .record(self.now, &[0xea41, node, op, term, applied], || {
                        format!(
                            "manager {node} (leader of term {term}, applied {applied}) answers \
                             op {op} at once from its store: {reply:?}"
                        )
                    });
            }
            self.reply(node, client, op, reply);
        }
        self.fix_timeout(node);
        self.process(node);
    }

    fn reply(&mut self, from: u64, client: usize, op: u64, reply: Reply) {
        if self.lost() {
            return;
        }
        let latency = self.net.latency(&mut self.rng, from, 0);
        self.schedule(latency, Ev::Reply { client, op, reply });
    }

    fn finish(&mut self, c: usize, op: u64, reply: Reply) {
        let Some(o) = self.clients[c].outstanding.take_if(|o| o.op == op) else {
            return; // Late: the operation was already recorded as unknown.
        };
        let now = self.now;
        let tag = match &reply {
            Reply::Output(out) => {
                let f = output_fields(out);
                [1, f[0], f[1], f[2]]
            }
            Reply::Unknown => [2, 0, 0, 0],
            Reply::Refused(h) => [3, h.unwrap_or(0), 0, 0],
            Reply::Unexpected(_) => [4, 0, 0, 0],
        };
        self.trace.record(
            now,
            &[0xf1a1, c as u64, op, tag[0], tag[1], tag[2], tag[3]],
            || format!("client {c} op {op} -> {reply:?}"),
        );
        let client = ClientId(c as u32);
        let call = Duration::from_micros(o.call);
        match reply {
            Reply::Output(output) => {
                let name = o.input.name().to_string();
                match &output {
                    Output::Created { version }
                    | Output::Updated { version }
                    | Output::Found { version, .. } => {
                        self.max_version_seen = self.max_version_seen.max(*version);
                        self.clients[c].known.insert(name, *version);
                        if !matches!(output, Output::Found { .. }) {
                            self.stats.writes_acknowledged += 1;
                        }
                    }
                    Output::Removed => {
                        self.stats.writes_acknowledged += 1;
                        self.clients[c].known.remove(&name);
                    }
                    Output::NotFound => {
                        self.clients[c].known.remove(&name);
                    }
                    Output::AlreadyExists | Output::OutOfSequence => {}
                }
                self.history
                    .returned(client, o.input, call, Duration::from_micros(now), output);
            }
            Reply::Unknown => {
                self.clients[c].leader_hint = None;
                if self.clients[c].is_final {
                    self.clients[c].final_reads.push(o.input.name().to_string());
                }
                self.history.unknown(client, o.input, call);
            }
            Reply::Refused(hint) => {
                self.stats.refused += 1;
                self.clients[c].leader_hint = hint;
                if self.clients[c].is_final {
                    self.clients[c].final_reads.push(o.input.name().to_string());
                }
            }
            Reply::Unexpected(e) => {
                self.violation(
                    "unexpected store error",
                    format!("client {c} op {op} {:?}: {e}", o.input),
                );
                self.history.unknown(client, o.input, call);
            }
        }
        let think = self.rng.random_range(0..10_000);
        self.schedule(think, Ev::Call { client: c });
    }

    // ---- faults ----------------------------------------------------------------------

    fn nemesis(&mut self) {
        if self.phase != Phase::Faulty {
            return;
        }
        let n = self.cfg.managers;
        let ids: Vec<u64> = (1..=n).collect();
        // Agents mode adds the agents' faults (crash, cut off) above 87.
        let rolls = if self.cfg.agents > 0 { 130 } else { 100 };
        let roll = self.rng.random_range(0..rolls);
        let fault: &'static str = match roll {
            0..18 => {
                let up = self.up_ids();
                let down = n as usize - up.len();
                let extra = usize::from(self.rng.random_range(0..10) == 0);
                if down < (n as usize - 1) / 2 + extra {
                    let victim = match self.leader() {
                        Some(l) if self.rng.random_bool(0.4) => l,
                        _ => *up.choose(&mut self.rng).expect("a manager is up"),
                    };
                    self.crash(victim);
                    let after = self.rng.random_range(50_000..800_000);
                    self.schedule(after, Ev::Restart { node: victim });
                    "crash"
                } else {
                    "none"
                }
            }
            18..33 => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let k = self.rng.random_range(1..n as usize);
                let side: BTreeSet<u64> = shuffled[..k].iter().copied().collect();
                let mut links = BTreeSet::new();
                for a in &side {
                    for b in ids.iter().filter(|b| !side.contains(b)) {
                        links.insert((*a, *b));
                        links.insert((*b, *a));
                    }
                }
                self.partition(links, 100_000..1_000_000, || {
                    format!("partition {side:?} | rest")
                });
                "partition"
            }
            33..43 => {
                let mut links = BTreeSet::new();
                for _ in 0..self.rng.random_range(1..=n) {
                    let a = *ids.choose(&mut self.rng).expect("ids");
                    let b = *ids.choose(&mut self.rng).expect("ids");
                    if a != b {
                        links.insert((a, b));
                    }
                }
                let shown = links.clone();
                self.partition(links, 100_000..1_000_000, || {
                    format!("asymmetric partition: cut {shown:?}")
                });
                "asymmetric partition"
            }
            43..55 => match self.leader() {
                Some(l) => {
                    let links = ids
                        .iter()
                        .filter(|b| **b != l)
                        .flat_map(|b| [(l, *b), (*b, l)])
                        .collect();
                    self.partition(links, 100_000..800_000, || format!("isolate leader {l}"));
                    "leader isolation"
                }
                None => "none",
            },
            55..67 => {
                self.generation += 1;
                let generation = self.generation;
                self.net.loss_per_mille = self.rng.random_range(200..600);
                self.net.dup_per_mille = self.rng.random_range(20..200);
                self.net.loss_generation = generation;
                let (loss, dup) = (self.net.loss_per_mille, self.net.dup_per_mille);
                self.trace.record(self.now, &[0x1055, u64::from(loss)], || {
                    format!("loss burst: {loss}‰ lost, {dup}‰ duplicated")
                });
                let after = self.rng.random_range(100_000..500_000);
                self.schedule(after, Ev::LossEnd { generation });
                "loss burst"
            }
            67..77 => {
                self.generation += 1;
                let node = *ids.choose(&mut self.rng).expect("ids");
                let slow = Slow {
                    generation: self.generation,
                    extra_latency: self.rng.random_range(3_000..30_000),
                    tick_factor: self.rng.random_range(2..=4),
                };
                self.net.slow.insert(node, slow);
                self.trace.record(self.now, &[0x5104, node], || {
                    format!("slow manager {node}: {slow:?}")
                });
                let after = self.rng.random_range(200_000..1_000_000);
                self.schedule(
                    after,
                    Ev::SlowEnd {
                        node,
                        generation: slow.generation,
                    },
                );
                "slow node"
            }
            77..87 => {
                // Cut a follower off long enough for the leader to compact its log past it:
                // it comes back through a snapshot.
                let leader = self.leader();
                let followers: Vec<u64> = self
                    .up_ids()
                    .into_iter()
                    .filter(|id| Some(*id) != leader)
                    .collect();
                match followers.choose(&mut self.rng).copied() {
                    Some(f) => {
                        let links = ids
                            .iter()
                            .filter(|b| **b != f)
                            .flat_map(|b| [(f, *b), (*b, f)])
                            .collect();
                        self.partition(links, 800_000..1_600_000, || {
                            format!("cut follower {f} off (to catch up by snapshot)")
                        });
                        "lagging follower"
                    }
                    None => "none",
                }
            }
            _ if self.cfg.agents > 0 => self.agent_fault(roll),
            _ => "none",
        };
        *self.stats.faults.entry(fault).or_default() += 1;
        let next = self.rng.random_range(100_000..400_000);
        self.schedule(next, Ev::Nemesis);
    }

    fn partition(
        &mut self,
        links: BTreeSet<(u64, u64)>,
        lasts: std::ops::Range<u64>,
        what: impl FnOnce() -> String,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let digest: Vec<u64> = links.iter().flat_map(|(a, b)| [*a, *b]).collect();
        self.trace.record(
            self.now,
            &[
                0xc07,
                generation,
                fnv(&digest
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()),
            ],
            what,
        );
        self.net.cut(generation, links);
        let after = self.rng.random_range(lasts);
        self.schedule(after, Ev::Heal { generation });
    }

    // ---- the loop --------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, incarnation } => {
                if self.managers[&node].incarnation != incarnation {
                    return;
                }
                let Some(r) = self.running_mut(node) else {
                    return;
                };
                r.node.tick();
                self.trace
                    .record(self.now, &[0x71c, node], || format!("tick {node}"));
                self.fix_timeout(node);
                self.process(node);
                self.sweep(node);
                let every = self.tick_interval(node);
                self.schedule(every, Ev::Tick { node, incarnation });
            }
            Ev::Deliver(msg) => {
                let (from, to) = (msg.from, msg.to);
                let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
                if !self.is_up(to) || !self.net.connected(from, to) {
                    self.stats.messages_dropped += 1;
                    self.trace.record(self.now, &[0xd209, 2], || {
                        format!("drop on arrival {}", msg_line(&msg))
                    });
                    if snapshot && let Some(r) = self.running_mut(from) {
                        r.node.report_snapshot(to, false);
                    }
                    return;
                }
                self.stats.messages_delivered += 1;
                self.trace.record(self.now, &msg_fields(&msg), || {
                    format!("deliver {}", msg_line(&msg))
                });
                let r = self.running_mut(to).expect("running");
                if let Err(e) = r.node.step(*msg) {
                    self.violation(
                        "raft error",
                        format!("manager {to} stepping a message: {e}"),
                    );
                }
                self.fix_timeout(to);
                self.process(to);
                if snapshot {
                    self.stats.snapshots_delivered += 1;
                    if let Some(r) = self.running_mut(from) {
                        r.node.report_snapshot(to, true);
                    }
                }
            }
            Ev::Call { client } => self.call(client),
            Ev::Arrive {
                client,
                op,
                node,
                forwarded,
            } => self.arrive(client, op, node, forwarded),
            Ev::Reply { client, op, reply } => self.finish(client, op, reply),
            Ev::Timeout { client, op } => self.finish(client, op, Reply::Unknown),
            Ev::Nemesis => self.nemesis(),
            Ev::Restart { node } => self.restart(node),
            Ev::Heal { generation } => {
                self.trace.record(self.now, &[0x4ea1, generation], || {
                    format!("heal partition {generation}")
                });
                self.net.heal(generation);
            }
            Ev::LossEnd { generation } => {
                if self.net.loss_generation == generation && self.phase == Phase::Faulty {
                    self.net.loss_per_mille = BASE_LOSS;
                    self.net.dup_per_mille = BASE_DUP;
                    self.trace
                        .record(self.now, &[0x1056], || "loss burst ends".to_string());
                }
            }
            Ev::Round { node, incarnation } => self.round(node, incarnation),
            Ev::AgentTick { agent, incarnation } => self.agent_tick(agent, incarnation),
            Ev::AgentArrive {
                agent,
                manager,
                msg,
            } => self.agent_arrive(agent, manager, *msg),
            Ev::AgentAnswer {
                agent,
                incarnation,
                from,
                answer,
            } => self.agent_answer(agent, incarnation, from, *answer),
            Ev::AgentRestart { agent } => self.restart_agent(agent),
            Ev::Operate => self.operate(),
            Ev::SlowEnd { node, generation } => {
                if self
                    .net
                    .slow
                    .get(&node)
                    .is_some_and(|s| s.generation == generation)
                {
                    self.net.slow.remove(&node);
                    self.trace.record(self.now, &[0x5105, node], || {
                        format!("manager {node} no longer slow")
                    });
                }
            }
        }
    }

    /// Runs events until `done` holds or simulated time passes `deadline`.
    fn run_until(&mut self, deadline: u64, done: impl Fn(&Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(next) if next.at <= deadline => {}
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
            let next = self.queue.pop().expect("peeked");
            self.now = next.at;
            // Timestamps written into objects come from simulated time.
            self.clock.set(self.wall());
            self.handle(next.ev);
        }
    }

    /// Whether every manager runs and has applied everything the leader committed, and the
    /// leader has committed its whole log (so every earlier term's entries too).
    fn settled(&self) -> bool {
        let Some(l) = self.leader() else {
            return false;
        };
        let leader = &self.running(l).expect("running").node;
        let commit = leader.commit_index();
        let last = raft::Storage::last_index(leader.raw_store()).unwrap_or(0);
        commit == last
            && self.managers.values().all(|m| {
                m.running
                    .as_ref()
                    .is_some_and(|r| r.node.applied() == commit)
            })
    }

    fn form_cluster(&mut self) -> bool {
        self.bootstrap(1);
        let deadline = self.now + 100 * TICK;
        if !self.run_until(deadline, |s| s.leader() == Some(1)) {
            return false;
        }
        for id in 2..=self.cfg.managers {
            let Some(l) = self.leader() else {
                return false;
            };
            let r = self.running_mut(l).expect("running");
            if r.node.propose_add_member(member(id)).is_err() {
                return false;
            }
            self.process(l);
            let deadline = self.now + 100 * TICK;
            if !self.run_until(deadline, |s| {
                s.leader()
                    .and_then(|l| s.running(l))
                    .is_some_and(|r| r.node.voters().contains(&id))
            }) {
                return false;
            }
            self.join(id);
        }
        let deadline = self.now + 200 * TICK;
        let n = self.cfg.managers as usize;
        self.run_until(deadline, |s| {
            s.settled()
                && s.managers.values().all(|m| {
                    m.running
                        .as_ref()
                        .is_some_and(|r| r.node.voters().len() == n)
                })
        })
    }

    fn run(&mut self) {
        let (seed, managers, steps) = (self.cfg.seed, self.cfg.managers, self.cfg.steps);
        self.trace.record(0, &[seed, managers, steps], || {
            format!("seed {seed} with {managers} managers, {steps} ticks of faults")
        });
        if !self.form_cluster() {
            self.violation(
                "cluster formation",
                "the cluster did not form without faults".into(),
            );
            return;
        }
        if self.cfg.agents > 0 && !self.start_workers() {
            self.violation(
                "cluster formation",
                "the agents' nodes and the services were not written without faults".into(),
            );
            return;
        }
        // Faults and load.
        self.phase = Phase::Faulty;
        if self.cfg.faults {
            self.net.loss_per_mille = BASE_LOSS;
            self.net.dup_per_mille = BASE_DUP;
            let first = self.rng.random_range(50_000..200_000);
            self.schedule(first, Ev::Nemesis);
        }
        for c in 0..self.cfg.clients {
            let offset = self.rng.random_range(0..5_000);
            self.schedule(offset, Ev::Call { client: c });
        }
        let end = self.now + self.cfg.steps * TICK;
        self.run_until(end, |_| false);

        // Heal everything; clients finish what they started.
        self.phase = Phase::Healing;
        self.trace.record(self.now, &[0x4ea1a11], || {
            "HEAL: faults stop, crashed managers restart".into()
        });
        self.net.heal_all();
        for id in 1..=self.cfg.managers {
            self.restart(id);
        }
        for agent in 0..self.cfg.agents {
            self.restart_agent(agent);
        }
        let deadline = self.now + 500 * TICK;
        let settled = self.run_until(deadline, |s| {
            s.clients.iter().all(|c| c.outstanding.is_none()) && s.settled()
        });
        if !settled {
            let status = self.status();
            self.violation(
                "progress after healing",
                format!("no leader with every manager caught up 500 ticks after faults stopped: {status}"),
            );
            return self.check_history();
        }
        if self.cfg.agents > 0 {
            self.converge_tasks();
        }
        // A final read of every object, through the leader like any read: an acknowledged
        // write that was lost shows as a history that is not linearizable.
        let f = self.cfg.clients;
        self.clients[f].final_reads = (0..self.cfg.objects)
            .rev()
            .map(|i| format!("k{i}"))
            .collect();
        self.schedule(0, Ev::Call { client: f });
        let deadline = self.now + 300 * TICK;
        let done = self.run_until(deadline, |s| {
            let c = &s.clients[s.cfg.clients];
            c.final_reads.is_empty() && c.outstanding.is_none()
        });
        if !done {
            self.violation(
                "progress after healing",
                "the final reads did not complete within 300 ticks of a settled cluster".into(),
            );
        }
        let deadline = self.now + 100 * TICK;
        self.run_until(deadline, |s| s.settled());
        self.check_converged();
        self.check_history();
    }

    fn status(&self) -> String {
        self.managers
            .iter()
            .map(|(id, m)| match &m.running {
                Some(r) => format!(
                    "{id}: term {} leader {:?} commit {} applied {}",
                    r.node.term(),
                    r.node.leader(),
                    r.node.commit_index(),
                    r.node.applied()
                ),
                None => format!("{id}: down"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn check_converged(&mut self) {
        let stores: Vec<(u64, u64, u64)> = self
            .managers
            .iter()
            .filter_map(|(id, m)| {
                m.running
                    .as_ref()
                    .map(|r| (*id, r.node.applied(), fnv(&r.state.encode_snapshot())))
            })
            .collect();
        let first = stores.first().copied();
        for (id, applied, digest) in &stores {
            self.trace
                .record(self.now, &[0xe4d, *id, *applied, *digest], || {
                    format!("final: manager {id} applied {applied} store {digest:016x}")
                });
        }
        if let Some((fid, fapplied, fdigest)) = first
            && stores
                .iter()
                .any(|(_, a, d)| *a != fapplied || *d != fdigest)
        {
            self.violation(
                "replicas converge after healing",
                format!("managers differ after healing (first: {fid} at {fapplied}): {stores:?}"),
            );
        }
    }

    fn check_history(&mut self) {
        self.stats.operations = self.history.len();
        self.stats.unknown = self
            .history
            .operations()
            .iter()
            .filter(|o| o.is_unknown())
            .count();
        self.stats.returned = self.stats.operations - self.stats.unknown;
        let checker = Checker::new(VersionedObjects).step_limit(CHECK_STEPS);
        let verdict = checker.check(&self.history);
        self.stats.verdict = match &verdict {
            Verdict::Linearizable => "linearizable".into(),
            Verdict::Unknown(_) => format!("{verdict}"),
            Verdict::NotLinearizable(_) => "NOT linearizable".into(),
        };
        let line = format!(
            "history of {} operations: {}",
            self.history.len(),
            self.stats.verdict
        );
        self.trace.record(
            self.now,
            &[0xc4ec, u64::from(verdict.is_linearizable())],
            || line,
        );
        if let Verdict::NotLinearizable(v) = verdict {
            let blocking = &self.history.operations()[v.blocking];
            let call = blocking.call.as_micros() as u64;
            let ret = blocking.return_instant().map(|d| d.as_micros() as u64);
            self.violation("linearizability", format!("{v}"));
            if let Some(last) = self.violations.last_mut() {
                last.window = Some((call.saturating_sub(30_000), ret.unwrap_or(call)));
            }
        }
    }

    /// The wall-clock time simulated time stands for. In agents mode a tick stands for the
    /// daemon's 100 ms Raft tick (see [`agents`]), so time runs [`agents::TIME_SCALE`] times
    /// faster than the simulated µs; without agents one simulated µs is one µs.
    fn wall(&self) -> SystemTime {
        let scale = if self.cfg.agents > 0 {
            agents::TIME_SCALE
        } else {
            1
        };
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(EPOCH_SECONDS)
            + Duration::from_micros(self.now * scale)
    }

    fn report(mut self) -> Report {
        self.stats.leader_terms = self.leaders.len();
        if self.stats.operations == 0 {
            self.stats.operations = self.history.len();
        }
        Report {
            seed: self.cfg.seed,
            digest: self.trace.digest(),
            events: self.trace.events(),
            sim_time: self.now,
            trace: self.trace.lines(),
            stats: self.stats,
            violations: self.violations,
            violation_count: self.violation_count,
        }
    }
}
