//! Deterministic simulation of Shoal's manager group, and of the agents it runs tasks on.
//!
//! # What
//!
//! One process, one thread, one seeded RNG (`StdRng`). A run builds a cluster of 3 or 5
//! managers — each a real `RaftNode` (raft-rs under Shoal's state machine wrapper) over a
//! `MemoryLog` "disk", applying to a real store `StateMachine` — and lets simulated clients
//! create, update, read and remove a few config objects through whichever manager they
//! believe leads, while a fault schedule drawn from the seed crashes and restarts managers,
//! partitions the network symmetrically and asymmetrically, isolates the leader, cuts a
//! follower off until it must catch up by snapshot, loses and duplicates messages in bursts
//! and slows managers down. Then faults stop, everything heals, and the run checks that the
//! cluster comes back and that nothing acknowledged was lost.
//!
//! With agents ([`SimConfig::agents`], 4 by default in the `shoal-sim` command, 0 in
//! [`SimConfig::new`]), the run also holds worker nodes and a few services (2–3 replicated
//! ones of 2–5 replicas, one global), and whichever manager leads runs the real orchestrator
//! and scheduler (`shoal_manager::orchestrator::Orchestrator`) on its store, writing through
//! its Raft node; the agents heartbeat to the leader, which writes silent nodes DOWN by the
//! dispatcher's rule, run the tasks assigned to them and report their states through the
//! leader. Agents crash (their tasks die with them) and are cut off from the managers, as
//! part of the same fault schedule, and an operator scales and updates services while
//! faults run ([`world`]'s `agents` module describes the model).
//!
//! Time is simulated: an event queue ordered by (instant, sequence number) holds Raft ticks,
//! message deliveries, client calls, replies and timeouts, orchestrator rounds, agents'
//! messages, and fault starts and ends; the loop pops the next event, jumps the clock to it
//! and handles it ([`world`]). Nothing depends on the machine's clock: the stores' timestamps
//! come from a `ManualClock` set from simulated time, and the orchestrator's round takes its
//! clocks as arguments (`Orchestrator::round_at(instant, wall time)`), both computed from
//! simulated time (in agents mode a 10 ms tick stands for the daemon's 100 ms Raft tick, so
//! the dispatcher's and the orchestrator's figures — heartbeat period, grace, restart delays,
//! update pacing — keep their ratio to an election timeout). The orchestrator is async: its
//! round is a future the simulator polls with a no-op waker, and its store's proposer queues
//! each transaction for the simulator to propose, completing when the entry is applied (or
//! failing when leadership is lost). Messages go through the simulated network ([`net`]) with
//! a latency drawn per message, so they reorder; no wall-clock time, thread or async runtime
//! takes part. A run is therefore a function of
//! its [`SimConfig`]: every event is folded into a digest ([`trace`]), two runs of one seed
//! give the same digest (a test checks it), and a failing seed replays exactly with
//! `shoal-sim --seed N --trace`, which prints every event.
//!
//! # Invariants
//!
//! Checked after every change to a manager:
//! - **Election safety**: at most one leader per term, over the whole run.
//! - **Committed entries never change**: every entry a manager reports committed is compared,
//!   by index, with the first one any manager reported there (term, type, data, context).
//! - **State machine safety**: whenever a manager's applied index moves, a digest of its
//!   whole store (the snapshot encoding, equal content giving equal bytes) is compared with
//!   the digest any other manager had at the same applied index.
//!
//! Checked continuously in agents mode, from the agents' own state:
//! - **One task per slot**: when a task starts running, no other task of its slot (of its
//!   node, for a global service) runs anywhere, unless that one's node was written DOWN
//!   since it started (the orchestrator replaces a down node's tasks; a cut-off agent keeps
//!   running them, as in SwarmKit).
//! - **The orchestrator does not spin**: a round that wrote nothing does not ask to run again
//!   at once, round after round.
//!
//! Checked at the end:
//! - **Progress after healing**: within 500 ticks of the faults stopping there is a leader,
//!   its whole log is committed, every manager has applied it; then a final read of every
//!   object completes.
//! - **Replicas converge**: every manager has the same applied index and store digest.
//! - **Linearizability** of every client operation, final reads included, against
//!   `shoal-check`'s versioned-objects model. An acknowledged write that was lost makes the
//!   final read (or a read before it) impossible, so "no acknowledged write lost" is part of
//!   this check; operations whose outcome the client never learned are "unknown" and may or
//!   may not have happened.
//! - In agents mode, **tasks converge** within 1,500 ticks of healing: each replicated
//!   service has exactly its replicas wanted RUNNING, RUNNING in the store and on the agent,
//!   on READY nodes; each global service one such task per READY, ACTIVE node; no task wanted
//!   RUNNING is left NEW, PENDING or ASSIGNED while a node is READY; no agent runs a task the
//!   store does not want running.
//!
//! Tests prove the checks have teeth: planted bugs are caught in most seeds —
//! [`PlantedBug::AckBeforeCommit`] (a leader acknowledging writes when proposed) by
//! linearizability, [`PlantedBug::StartWhileStopping`] (below) by one task per slot,
//! [`PlantedBug::AgentIgnoresShutdown`] (agents that never stop a task) by convergence —
//! and the simulation found real ones (below).
//!
//! # What it found
//!
//! The Control API builds a write as a transaction on the leader's *local* store and, when
//! the transaction's early checks fail (object not found, version read differs, name taken),
//! answers that error at once, without a Raft round. A leader that was deposed and has not
//! noticed yet, or a new leader that has not yet applied its predecessor's last entries,
//! answers from a stale store: in seed 28 a client creates `k2` (acknowledged, version 75),
//! then removes it at version 75 through an isolated old leader and is told "not found".
//! Reads are not affected (they pass a ReadIndex barrier). Fixed: the Control API now
//! confirms its view with a ReadIndex barrier before answering such a refusal, and tries the
//! write again on the confirmed store (successful writes need no barrier: the state machine
//! checks versions again when it applies them). The default, [`EarlyAnswers::Confirmed`],
//! models that; [`EarlyAnswers::ControlApi`] keeps the old behaviour, as a bug the checks
//! must catch.
//!
//! Longer runs found a second, worse one, in `RaftNode` itself: proposal IDs start at 1
//! again when a node restarts (`next_proposal: 1` in `RaftNode::start`), and the leader
//! applies an entry tagged with its own (raft ID, proposal ID) from the changes it cached
//! for that proposal instead of decoding the entry. A manager that restarts with
//! uncommitted entries from its previous leadership still in its log, is elected again and
//! takes a write before those entries are applied, applies the *new* write in place of an
//! old entry: its store diverges from the followers' and the client is told its write was
//! applied, while on the followers it was not (seed 450, 3 managers: the leader holds `k0`
//! = 306 at version 14, the followers 140; also seeds 840, 1693, 3373, 3907, 4292, and with
//! `--managers 5 --steps 1000 --clients 6` seeds 386 and 891). Fixed: a proposal is now
//! ours only at the index and term its entry was appended at; the seeds above run clean.
//!
//! The first run with agents found a third, in the orchestrator's loop: in a stop-first
//! update (and whenever a restart's delay ends while the slot's old task is still stopping)
//! the new task is held at READY with a delay that has already ended; the loop computed its
//! next wake-up from that ended delay, so it woke at once, ran a round that wrote nothing,
//! and did it again, back to back, until the old task's status changed — a busy loop over
//! the whole store for as long as a task takes to stop (seed 1 with 4 agents, before the
//! agents' fault schedule took its present form; the simulator's spin check reported it
//! after 50 rounds at one instant). Fixed: `Orchestrator::next_wake` leaves out delays that
//! had ended by the last round (their task waits for a store change, not a timer), with a
//! unit test in the orchestrator.
//!
//! A planted orchestrator bug ([`PlantedBug::StartWhileStopping`]: every task it creates is
//! wanted RUNNING at once, so a stop-first update starts the new task while the old one still
//! stops) is caught by the one-task-per-slot check in most seeds.
//!
//! A run of 5,000 seeds with agents found a fourth: a new leader ran the orchestrator as
//! soon as it was elected, before it had applied its predecessor's last entries. Its store
//! did not yet hold a task the old leader had just created for a slot (a scale-up), so it
//! created another, and the slot ran two tasks under stop-first until the next round
//! stopped one (seeds 2271, 2849, 2987, 4227 with 4 agents). Creates carry no version, so
//! the state machine's conflict check cannot catch this. Fixed: the orchestrator leads only
//! once its Raft node has applied an entry of its own term (`RaftStatus::leader_caught_up`;
//! the empty entry a new leader appends), when its store holds every earlier commit. The same
//! run refined the one-task-per-slot check: a node cut off from the managers goes on with the
//! tasks it has, so a task it starts after being written DOWN, or the old task still stopping
//! on a node that came back and received the replacement, is a given-up task, not a
//! violation (seeds 940, 3031).
//!
//! # Compared with FoundationDB's simulation and with turmoil
//!
//! FoundationDB runs its *whole* server — every role, written as Flow actors on one
//! deterministic run loop — against simulated network, disks and machines ("sim2"), with
//! fault injection compiled into the production code (`BUGGIFY`), workloads that check
//! themselves, and a consistency check at the end. The boundary here is smaller: what is
//! simulated is the replicated core — `RaftNode`, the log's durability contract and the
//! store — which is synchronous by design (it owns no sockets, timers or threads), so it is
//! driven directly, the way the real driver thread drives it, instead of through a simulated
//! runtime. The orchestrator's round is async but waits on nothing except its store's
//! proposer, so it too is driven directly: its future is polled by hand, and each proposal
//! completes when the simulator applies it. There is no `BUGGIFY` inside Shoal's code;
//! faults come from outside (network, crashes, slowness).
//!
//! turmoil simulates hosts and a network *under tokio*: async code using its `TcpStream`
//! runs unchanged on simulated time, single-threaded, reproducible from a seed. It would let
//! the real gRPC transport, driver and Control API run, which this simulator cannot; the
//! price is a runtime in the loop (every source of nondeterminism in tokio, tonic and the
//! code above them must be tamed), far fewer events per second, and the threads Shoal's
//! driver uses by design (it is one OS thread per manager, not a task). Since the part whose
//! bugs lose data is synchronous, driving it directly gives millions of events per minute
//! and exact replay for little code.
//!
//! # Where it departs from the real system
//!
//! - The driver thread, the gRPC transport and the Control API are modelled, not run: the
//!   write path is rebuilt from the same pieces (`Store::update` closures on the leader's
//!   store, `RaftNode::propose`, answers on apply, ReadIndex before reads, one-hop
//!   forwarding from a follower, "outcome unknown" after two election timeouts or a lost
//!   leadership). A bug in the driver or the transport is out of reach.
//! - Crashes happen between events, never inside `process_ready`: a leader's appends, sent
//!   before its own durable write, always find that write done. The disk is perfect (no torn
//!   or lying fsyncs: redb's guarantee is assumed), and raft's snapshot writer thread
//!   finishes before a crash takes effect.
//! - Membership is fixed once the cluster formed; joins and removals under faults are not
//!   exercised. Clients are outside the partitions (only loss bursts touch them).
//! - raft-rs draws election timeouts from its thread RNG; the simulator overrides them from
//!   the seed after every input through one test hook, `RaftNode::
//!   set_randomized_election_timeout` (`#[doc(hidden)]`), the only change outside this crate.
//!   raft-rs's own maps use a fixed hasher; the outcomes `RaftNode` returns from a `HashMap`
//!   are sorted here before use.
//! - The orchestrator and scheduler run unchanged, through four hooks marked
//!   `#[doc(hidden)]`: `Orchestrator::driven` (no Raft handle: the simulator decides when it
//!   leads, and builds a fresh one for each term it leads, as the real loop clears its state
//!   on gaining leadership), `round_at` (the clocks as arguments), `next_wake` and `observe`
//!   (the loop's wake-up and the store events it feeds the scheduler between rounds), and
//!   `set_id_source` (task IDs from a counter instead of random draws). Its `Instant`s are
//!   a fixed origin taken when the run starts plus simulated time: the origin's value never
//!   matters, only differences. Its loop (`Orchestrator::start`: the tokio `select!` over
//!   leadership, store changes and timers) is replayed by the simulator, not run; a round in
//!   flight when leadership is lost is dropped rather than finished.
//! - The dispatcher and the agents are modelled, not run (the real ones sit behind gRPC
//!   streams and an executor): a session is a deadline on the leader, a heartbeat moves it,
//!   a status report is a write through the leader retried until the assignments show it,
//!   assignments are polled every 5 ticks rather than pushed, and an agent's executor is a
//!   seeded state machine. Bugs in the dispatcher's code, the agent or the executor are out
//!   of reach; so are networks, secrets, configs, volumes, resources, constraints, drained
//!   nodes and jobs (the services use none of them).

pub mod net;
pub mod trace;
pub mod world;

pub use world::{AgentStats, EarlyAnswers, PlantedBug, Report, SimConfig, Stats, Violation, run};
