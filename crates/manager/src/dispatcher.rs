//! The dispatcher: the manager's side of every agent. It keeps *sessions* and *heartbeats*,
//! so that the cluster knows which nodes are up, streams each node its *assignments* (the
//! tasks it must run, with the secrets and configs they need) and writes the *task statuses*
//! agents report.
//!
//! ## What it does
//!
//! An agent opens a session with `Dispatcher.Session`. The leader checks that the caller's
//! node (from its certificate) is still a member, gives it a new random session ID —
//! replacing any session the node had — and writes the node READY, with the address it
//! called from and the description it sent (unless the node already is exactly that: an
//! agent following a new leader after a failover costs no Raft commit). The answer is a stream: first a `SessionMessage`
//! with the session ID, the node, the managers (Raft members, weight 10) and the roots the
//! node must trust (the cluster's root certificate; during a root rotation the old and the
//! new root, see [`crate::root_rotation::trust_bundle`]); then a new message (same session
//! ID) whenever the Node object changes in the store, the list of managers changes, or the
//! roots to trust change. The agent then sends heartbeats with its
//! session ID — as messages on one `Dispatcher.HeartbeatStream` per session (a unary
//! `Dispatcher.Heartbeat` call per beat, SwarmKit's way, is served too, and costs the manager
//! a new HTTP/2 stream with headers and trailers each time: see docs/BENCHMARKS.md, S4). A
//! heartbeat stream carries one session's beats and ends when that session does. Each
//! heartbeat moves the session's deadline to
//! now + period × [`GRACE_PERIOD_MULTIPLIER_NORMAL`] and tells the agent when to beat next:
//! the period (the cluster spec's `dispatcher.heartbeat_period`, else [`HEARTBEAT_PERIOD`])
//! moved at random by up to ± [`HEARTBEAT_EPSILON`], so that agents started together do not
//! beat in lockstep. The jitter is only in the answer: the deadline uses the exact period. A
//! sweep drops the sessions past their deadline and writes their nodes DOWN ("heartbeat
//! failure"): it wakes just after the earliest deadline (the deadlines are kept in order, so
//! finding it and the expired nodes visits nothing else) and writes every node expired by
//! then in one store batch — one transaction, one Raft commit, unless the store's size limits
//! need more — so nodes that go silent together go DOWN together, at their deadline, rather
//! than one commit each. When a manager becomes leader, every node READY in the store
//! without a session here gets period × [`GRACE_PERIOD_MULTIPLIER_UNKNOWN`] to reconnect
//! before it goes DOWN — and longer while the agents are still coming back: a node adopted
//! at the election (or one whose agent hung up since) whose grace ends while sessions are
//! still being opened here (one within the last period) is waiting its turn behind
//! thousands of others, not gone, and gets one more period at a time, up to period × `RECONNECT_GRACE_MULTIPLIER_MAX` after the
//! election (SwarmKit has the fixed grace only: with 10,000 agents reconnecting to a new
//! leader on a small machine, half of them went DOWN and their tasks were rescheduled — a
//! failover restarting thousands of healthy tasks). A node that really died is then written
//! DOWN one period after the reconnections end, at most two minutes after the election.
//!
//! **Registration rate limit.** A node that already opened [`REGISTRATION_RATE_LIMIT_COUNT`]
//! sessions within the last [`REGISTRATION_RATE_LIMIT_PERIOD`] is refused with UNAVAILABLE
//! ("node X is re-registering too often; backing off"), which agents retry with their backoff
//! (it is no removal). The refusal changes nothing: no store write, and the node's current
//! session, if any, goes on. Refused attempts are not counted, so a node waiting out its
//! backoff gets in as soon as its oldest counted registration is 8 s old.
//!
//! **A closed session is DISCONNECTED at once.** When an agent drops its session stream (it
//! stops, or its connection closes), tonic drops our side of the stream; the stream's `Drop`
//! tells the state machine, which ends the session, keeps the node's deadline running, and
//! queues the node; the sweep task then writes it DISCONNECTED ("node closed its session")
//! without waiting for the deadline. A new session makes it READY again; if none comes, the
//! sweep writes it DOWN at the deadline as any silent node. A stream dropped after the
//! dispatcher ended its session (replaced, expired, leadership, removal, shutdown) is no
//! hang-up: the session is not current any more, and nothing happens.
//!
//! **Assignments.** With its current session ID, an agent calls `Dispatcher.Assignments`
//! (refused as `Heartbeat` is: [`Access::Nodes`], the node from the certificate, NOT_FOUND
//! "open a new session" unless the ID is the node's current session within its deadline, the
//! not-leader status on a follower). The stream's first message is COMPLETE: the node's
//! *assignment set*, as UPDATE changes — the secrets and configs first, then the tasks. A task
//! is in the set when its `node_id` is the node and its observed state is ASSIGNED or later
//! (as SwarmKit: a task below ASSIGNED may still fail the node's checks, so neither it nor its
//! secrets go to the node yet). Tasks stay in the set whatever their desired state — the agent
//! must see desired SHUTDOWN to stop a task — and also once terminal, until they leave the
//! store. The secrets and configs sent are exactly those the container or process spec of a
//! non-terminal task of the set references (`secrets[].secret_id`, `configs[].config_id`),
//! and that exist. Then come INCREMENTAL messages, from the task events that concern the node
//! (the task is on it after the change, or was before): UPDATE when a task enters the set or
//! changes in anything but its store metadata and observed status (the agent's own reports
//! are not echoed back, except for states up to ASSIGNED, which are the manager's), REMOVE
//! when it leaves the set (removed, moved to another node); the secrets and configs follow
//! (UPDATE before the first task that needs them, REMOVE after the last one stops needing
//! them). Changes are batched: a message
//! goes out when it holds [`ASSIGNMENT_BATCH_MAX_CHANGES`] changes, or
//! [`ASSIGNMENT_BATCH_MAX_DELAY`] after the first change it holds; a later change to an item
//! replaces an earlier one in the same message. Every message carries `results_in`, a version
//! counted per stream ("1" for the COMPLETE message, then "2", ...), and INCREMENTAL ones
//! `applies_to`, the version before: a gap tells the agent it missed one and should call
//! again. A COMPLETE message has an empty `applies_to`: it replaces whatever the agent had;
//! one is sent again if events were lost (the dispatcher's watch fell behind, the stream's
//! inbox overflowed, or the store was restored). The stream ends when
//! the session ends, with the status the session's stream ends with (replaced, expired,
//! leadership lost, node removed, shutting down, or CANCELLED if the agent closed its
//! session stream).
//!
//! **Routing.** The task and node events come from *one* store watch per dispatcher (kinds
//! Task and Node), read by the router task, not from a watch per stream: with a watch per
//! stream every commit woke every stream and was filtered once per connected node (1,000
//! node-ID comparisons per event with 1,000 agents; with 7,000 agents reconnecting after a
//! failover, each one's READY write woke all the others, and the leader starved its own Raft
//! heartbeats). A node event marks the *session inbox* of that node's session stream
//! changed — a flag and a wake-up, no queue: the stream then reads the node from the store,
//! so changes in a row coalesce into one message.
//! The router looks each event up by the task's `node_id` — and, if it changed, by the old
//! one, so a task moved or unassigned leaves the old node's set — in a map from node ID to
//! the *inboxes* of that node's open streams, and queues it there with the store version of
//! its commit. An inbox is a small queue with a `Notify`; the router never waits on one: an
//! inbox holding `INBOX_CAPACITY` events is emptied and marked *lagged*, and so is every
//! inbox when the router's own watch lags or the store is restored (the router first renews
//! its watch). A stream that finds its inbox lagged reads its set again and sends it
//! COMPLETE. A stream registers its inbox before it reads its set (COMPLETE) and skips the
//! events of commits up to the version that read saw, so it misses no change and sees none
//! twice; each stream applies its node's events in commit order. Secrets and configs are not
//! watched: they are read from the store when a task event calls for them. The dependencies
//! of a set are
//! kept incrementally (reference counts per secret and config): a task change looks at what
//! that task references, never at the node's other tasks.
//!
//! **Task status reports.** `Dispatcher.UpdateTaskStatus(session_id, updates)` is refused as
//! `Assignments` is. Then the whole call is checked before anything is written: if any
//! update names a task assigned to another node, the call is refused with PERMISSION_DENIED
//! naming the task, and nothing of it is written (SwarmKit does the same; an agent only
//! does this if confused, and a partial success would need per-item answers, which the
//! response has no room for). Also refused, whole: an update without a status, or more than
//! [`TASK_STATUS_BATCH_MAX_ITEMS`] updates. Updates of tasks no longer in the store are
//! dropped. The rest go to the *status batcher*, a tokio task started with the sweep: it
//! writes the reports of all calls waiting, through one store batch (as few transactions as
//! the store's size limits allow), [`TASK_STATUS_BATCH_MAX_DELAY`] after the oldest came, or
//! at once when [`TASK_STATUS_BATCH_MAX_ITEMS`] reports wait (a call's reports are never split
//! over two batches). Each call is answered once its batch is committed — or with the
//! batch's error, for all the calls of the batch — so an agent can resend what was not
//! acknowledged (resending is harmless: see below). Without a running batcher (the dispatcher
//! was not started) each call is written by its handler at once, the same way. Each write
//! re-reads the task and writes only a *forward* status: one whose state is not lower than
//! the task's current state (the same state may carry a new message) and which says
//! something new; a backward report is ignored, not an error (as SwarmKit), as is a task that
//! moved to another node between the check and the write.
//!
//! The decisions live in private, synchronous parts: `Sessions` (with its deadline index),
//! fed with the time and unit-tested with a driven clock; `AssignmentSet` (what to send on
//! each task change), `PendingAssignments` (batching), `AssignmentVersions`, `Inbox` and
//! `Router::route` (where each task event goes), `check_status_updates`,
//! `accepts_status` and `StatusQueue` (status batching), unit-tested on plain values. The
//! gRPC handlers, the sweep and the status batcher are a thin shell that reads the store and
//! Raft status, feeds these parts, and writes what they decide.
//!
//! ## The async shell
//!
//! The shell runs on the daemon's tokio runtime:
//!
//! - **The sweep** is one tokio task, spawned by [`Dispatcher::start`] and owned by the
//!   [`DispatcherTask`] it returns. It waits on five things at once: the stop signal, Raft's
//!   status (`RaftHandle::watch_status`, so a change of leadership or of the manager list is
//!   acted on at once), the time of its next round (`tokio::time::sleep_until`), in which
//!   it also looks at the status again, in case the watch ended with the Raft node, a
//!   `tokio::sync::Notify` poked by dropped session streams (hang-ups), upon which it writes
//!   the queued nodes DISCONNECTED, and a second `Notify` poked when the earliest deadline
//!   moves earlier than the one it sleeps until (a first session, a shorter period), upon
//!   which it recomputes its next round. The next round is due `EXPIRY_SLACK` after the
//!   earliest deadline (the deadline read on the injected clock, the sleep on tokio's), but
//!   at most `MAX_SWEEP_INTERVAL` (or the test's interval) away, and at least
//!   `MIN_SWEEP_INTERVAL` after the last, so a failing write cannot spin. Its store writes
//!   are plain `.await`s.
//! - **The router** is a tokio task started by the first session or Assignments call (which
//!   subscribes its watch first, under the router's lock), so that a dispatcher serves
//!   sessions and assignments whether or not it was started. It holds the router weakly and is aborted when the
//!   dispatcher's last handle goes or the [`DispatcherTask`] stops; it never waits on a
//!   stream. Routes are registered and removed under the router's `std::sync::Mutex`; a
//!   route is removed when its stream is dropped.
//! - **Each session** has a `tokio::sync::watch` channel: the state machine holds the sender
//!   and sends on it, without awaiting, when the session ends (the value: why) or when the
//!   managers changed (a send that leaves the value as it is). The session's stream holds the
//!   receiver and waits on it and on its session inbox together (registered with the router
//!   before the stream reads the node, so no change after that read is missed); it is a
//!   `futures_util::stream::unfold` over the session's state, so it runs on whatever task
//!   tonic polls it on, and no task of ours serves a stream. Its `Drop` reports a hang-up
//!   (synchronously: it takes the sessions lock, queues the node and pokes the sweep).
//! - **Each Assignments stream** is also an `unfold`, run by whoever polls it: it waits on
//!   its own receiver of the session's channel (taken with the session check, under the
//!   sessions lock, so it cannot miss the end), its inbox's `Notify`, and the batch's
//!   deadline (`tokio::time::sleep_until`). It takes its inbox's events all at once into a
//!   backlog and applies them, in one store view, until a batch is full. Dropping it
//!   removes its route and changes nothing else.
//! - **The status batcher** is a second tokio task spawned by [`Dispatcher::start`] and owned
//!   by the [`DispatcherTask`]. Handlers queue their checked calls (a `std::sync::Mutex`
//!   around the queue, never held across an `.await`), poke it with a `Notify`, and wait on
//!   a `oneshot` for the answer. It waits on the stop signal, that poke and the due time of
//!   the oldest call; when it stops (or is aborted) the calls still queued are dropped, and
//!   their handlers answer UNAVAILABLE ("shutting down"), nothing of them written.
//! - The heartbeat jitter is drawn in the handler (from the standard library's randomly
//!   seeded hasher keys; this crate has no random number crate), outside the state machine,
//!   which stays deterministic.
//! - The state machine's lock is a `std::sync::Mutex`, taken briefly and never across an
//!   `.await`; so are the router's and each inbox's.
//!
//! ## Using it (the daemon's part)
//!
//! ```text
//! let dispatcher = Dispatcher::new(store, raft_handle, authorizer, Arc::new(SystemClock));
//! let task = dispatcher.start();          // the sweep: a tokio task; exactly once per
//!                                         // dispatcher, from within the runtime
//! server.add_service(DispatcherServer::new(dispatcher.clone()))  // over mutual TLS
//! ...
//! // on shutdown, BEFORE waiting for the gRPC server to drain:
//! task.stop().await;                      // ends every session stream, refuses new ones
//! ```
//!
//! - Serve it on the TLS listener (`shoal_tls::listen`): every call needs the caller's node
//!   certificate ([`Access::Nodes`]), which the authorizer reads from the connection. There is
//!   no interceptor to add: the handlers authorize themselves.
//! - Session streams never end on their own while the node is healthy, and tonic's graceful
//!   shutdown waits for open streams. So [`DispatcherTask::stop`] must run as part of the
//!   server's shutdown signal (e.g. inside the future given to
//!   `serve_with_incoming_shutdown`, after the stop signal), not after the server returned.
//!   `stop` is final: afterwards every stream has ended with UNAVAILABLE ("this manager is
//!   shutting down") and new sessions are refused the same way.
//! - Without [`Dispatcher::start`] sessions still open and heartbeat, but nothing ever goes
//!   DOWN or DISCONNECTED and leadership changes are noticed only by the calls themselves;
//!   task status reports are then written by each call, unbatched.
//! - Dropping a [`DispatcherTask`] without `stop` also ends every session and refuses new
//!   ones, and aborts the sweep task without waiting for it (a DOWN write in flight may then
//!   be committed or not).
//!
//! ## Invariants
//!
//! 1. A node has at most one session. Opening a session replaces the previous one: its
//!    stream ends (ABORTED, "replaced") and its heartbeats are refused (NOT_FOUND).
//! 2. Only the leader holds sessions, and they belong to one leadership term. On losing
//!    leadership every session ends and its stream closes with the not-leader status, whose
//!    metadata names the leader so the agent follows it in one hop (heartbeats and sessions
//!    on a follower are refused the same way); on finding a new term while still leading,
//!    the older sessions end with UNAVAILABLE and the agents open new ones here.
//! 3. A node is written DOWN only by the leader, only after its deadline passed (strictly),
//!    and only if it has no session at the moment the write is built. A reconnect racing the
//!    DOWN write is settled by the store's version check: the loser is refused as out of
//!    sequence, re-reads, and retries (a refused DOWN batch is redone node by node; the sweep
//!    then sees the new session and skips it). Every node expired at a round is written in
//!    that round's one batch.
//! 4. A heartbeat that arrives after its session's deadline is refused, even if the sweep has
//!    not run yet: a session never outlives period × 3 without a heartbeat in time.
//! 5. Time comes from the injected [`Clock`]; the sweep's own pacing uses real time (it
//!    sleeps for the time the clock says is left until the earliest deadline).
//! 6. Lock order: the store's lock may be held when the sessions lock is taken (the DOWN and
//!    DISCONNECTED writes check for a session inside their transaction), never the reverse.
//!    A session stream's `Drop` takes the sessions lock: no stream is dropped with it held.
//!    The status queue's lock is taken alone, never with another lock held. The router's
//!    lock may be held when an inbox's lock is taken (routing), never the reverse, and
//!    neither is held with the store's or the sessions' lock.
//! 7. Nothing runs detached: the sweep and the status batcher are tokio tasks owned by the
//!    [`DispatcherTask`], the router a tokio task owned by the dispatcher (aborted with it or
//!    at stop), and session and assignment streams run on the tasks that poll them. A
//!    hang-up's write is the sweep's.
//! 8. A node is written DISCONNECTED only by the leader's sweep, only after its agent dropped
//!    its current session's stream, and only if at the moment the write is built it is READY
//!    and has no session again. The hung-up node keeps its deadline (invariant 3 applies).
//! 9. A registration refused by the rate limit changes nothing (sessions, deadlines, store).
//! 10. Assignments and status reports are served only to the node's current session on the
//!     leader; an Assignments stream ends when its session does. A node is sent a task only
//!     if it is assigned to it and ASSIGNED or later, and a secret or config only if one of
//!     its non-terminal tasks references it. A node writes only its own tasks' statuses, and
//!     only forward.
//! 11. The deadline index holds exactly one entry per node expected here, with its current
//!     deadline; every change of `Sessions::nodes` goes through the methods that keep it.
//! 12. An Assignments stream gets every task event concerning its node committed after the
//!     version its last COMPLETE set was read at, once, in commit order — or it is told it
//!     lagged and sends COMPLETE again. The router never waits on a stream, and an inbox
//!     never holds more than `INBOX_CAPACITY` events.
//!
//! ## Testing
//!
//! The state machine is tested on a driven clock ([`ManualClock`]); the handlers and the sweep
//! on a real store and authorizer, with Raft's status stood in for by a settable `watch`
//! channel behind the private `Leadership` trait (a single-node Raft cannot be started from
//! this crate: its transport trait names types of the `raft` crate, which is not a dependency
//! here). The assignment and status handlers are tested on the same fixture, creating,
//! updating and removing tasks in the store, with many nodes connected at once for the
//! routing (each gets exactly its own tasks' changes; a moved task leaves one set and joins
//! the other; a lost event brings COMPLETE). The sweep's batching is tested with a driven
//! clock (nodes expired by one round go DOWN in one commit), its timing with the real clock
//! and no periodic rounds (each node goes DOWN just after its own deadline). One test serves
//! the dispatcher over a real (plain TCP) HTTP/2 connection to check that a client dropping
//! its stream reaches the stream's `Drop`. Tests wait for events (a stream item, a completed
//! sweep round, a store write), not for time.
//!
//! [`ManualClock`]: shoal_api::clock::ManualClock
//!
//! ## Where this departs from SwarmKit, and why
//!
//! - **Expiry by one sweep** woken at the earliest deadline (a deadline-ordered index), instead
//!   of one timer per node; the nodes expired by then are written DOWN in one store batch.
//!   Invariant 4 keeps late heartbeats from reviving a node between its deadline and the
//!   write.
//! - **On a leader change** SwarmKit writes every node UNKNOWN and gives them all the longer
//!   grace. We write nothing: nodes READY in the store keep their status and get the longer
//!   grace; nodes in any other state are left alone (they are not up as far as the store
//!   knows). This saves one write per node per election.
//! - **READY and DISCONNECTED writes are single transactions** (retried on conflict), not
//!   SwarmKit's batched node updates; batching them can come when thousands of agents
//!   reconnecting at once matter. DOWN writes are batched (see above).
//! - **One task watch per dispatcher, routed by node**, where SwarmKit (and we, before) gave
//!   each Assignments stream its own watch filtered by node: the cost per event no longer
//!   grows with the number of agents.
//! - **The heartbeat jitter is at most half the period** (± [`HEARTBEAT_EPSILON`] otherwise,
//!   as SwarmKit), so that a very short period (tests) never comes out as zero.
//! - **The registration rate limit is a sliding window** over the sessions the node opened
//!   in the last [`REGISTRATION_RATE_LIMIT_PERIOD`]; SwarmKit counts attempts, refused ones
//!   too, and resets the count when the last accepted registration is older than the
//!   period. Ours lets a node in as soon as a slot frees, whatever its failed attempts.
//! - **A dropped session stream** writes the node DISCONNECTED at once, the DOWN coming at
//!   the normal deadline, so `node ls` tells a stopped agent from a silent one.
//! - **Manager list updates are deduplicated**: a stream sends one only when the list differs
//!   from the one it last sent, so the sweep may announce changes liberally.
//! - **Ended streams say why** (replaced, expired, not leader, node removed, shutting down).
//! - **An update without a status refuses the whole call** (SwarmKit skips it).
//! - **A status batch's error answers all its calls**, and transactions of the batch
//!   committed before the error stay; as reports only move tasks forward, the agents'
//!   resending them is harmless.
//! - **Assignment versions** are a counter per stream, not SwarmKit's store version strings;
//!   they tell the agent of a gap, not where to resume (a new call starts COMPLETE again).
//! - **A whole status call is refused** when one update names another node's task.
//! - **Not yet:** network bootstrap keys, node description updates beyond the one sent with
//!   `Session`; assignments do not follow changes of the secrets and configs themselves (only
//!   the tasks' references to them: a secret created after the task that references it is
//!   sent with the next change of one of the node's tasks, and one removed from the store is not withdrawn), and
//!   carry no volumes or network attachments.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use shoal_api::clock::Clock;
use shoal_api::defaults::{
    ASSIGNMENT_BATCH_MAX_CHANGES, ASSIGNMENT_BATCH_MAX_DELAY, GRACE_PERIOD_MULTIPLIER_NORMAL,
    GRACE_PERIOD_MULTIPLIER_UNKNOWN, HEARTBEAT_EPSILON, HEARTBEAT_PERIOD,
    REGISTRATION_RATE_LIMIT_COUNT, REGISTRATION_RATE_LIMIT_PERIOD, TASK_STATUS_BATCH_MAX_DELAY,
    TASK_STATUS_BATCH_MAX_ITEMS,
};
use shoal_api::task_state;
use shoal_api::v1::dispatcher_server;
use shoal_api::v1::{
    Assignment, AssignmentChange, Config, Meta, Secret, Task, TaskState, TaskStatus, assignment,
    assignment_change::AssignmentAction, assignments_message, task_spec,
    update_task_status_request,
};
use shoal_api::v1::{
    AssignmentsMessage, AssignmentsRequest, Cluster, HeartbeatRequest, HeartbeatResponse, Node,
    NodeStatus, ObjectKind, RaftMember, SessionMessage, SessionRequest, UpdateTaskStatusRequest,
    UpdateTaskStatusResponse, WeightedPeer, node_status,
};
use shoal_ca::NodeIdentity;
use shoal_raft::{RaftHandle, RaftStatus};
use shoal_store::{
    Action, By, ErrorClass, Event, Filter, Object, Reader, Store, StoreError, Subscription,
    WatchError,
};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::authorize::{Access, Authorizer};
use crate::status::store_status;

/// Weight of every manager in the list sent to agents (SwarmKit's default weight).
const MANAGER_WEIGHT: i64 = 10;
/// After an election, how long (in heartbeat periods) the nodes of the previous leader may
/// wait for their turn to reconnect while reconnections go on: 2 minutes at the default
/// period, four times the usual grace for unknown nodes.
const RECONNECT_GRACE_MULTIPLIER_MAX: u32 = 4 * GRACE_PERIOD_MULTIPLIER_UNKNOWN;
/// The longest pause between two sweeps, whatever the deadlines: the sweep also looks at
/// leadership and the manager list (should the watch on Raft's status have ended). Also how
/// long a node whose DOWN write failed waits before the sweep tries again.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest pause between two sweeps (at most the configured interval).
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);
/// How long after the earliest deadline the sweep wakes: a node expires once its deadline
/// has passed, strictly.
const EXPIRY_SLACK: Duration = Duration::from_millis(1);
/// Attempts at a node write that keeps being refused as out of sequence.
const WRITE_ATTEMPTS: usize = 5;
/// The message of a node written DOWN because its heartbeats stopped.
const HEARTBEAT_FAILURE: &str = "heartbeat failure";
/// The message of a node written DISCONNECTED because its agent closed its session stream.
const SESSION_CLOSED: &str = "node closed its session";

// --- The state machine --------------------------------------------------------------------

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndReason {
    /// The node opened a newer session.
    Replaced,
    /// No heartbeat arrived before the deadline.
    Expired,
    /// This manager stopped leading, or leads a new term.
    LeadershipLost,
    /// The node's object was removed from the store.
    NodeRemoved,
    /// The session was opened but the node could not be marked READY.
    Abandoned,
    /// The dispatcher stopped.
    Stopped,
    /// The agent dropped the session's stream (nobody is listening any more).
    Hangup,
}

/// What a session's stream is told.
#[derive(Debug, PartialEq, Eq)]
enum News {
    Ended(EndReason),
    ManagersChanged,
}

/// How the state machine tells one session's stream that it ended or that the managers
/// changed: the sending half of the session's `watch` channel, whose value is why the session
/// ended, if it did. Sending never waits, so it is done with the sessions lock held.
struct Signal(watch::Sender<Option<EndReason>>);

/// The stream's half of the session's channel.
struct Listener(watch::Receiver<Option<EndReason>>);

impl Signal {
    fn new() -> (Signal, Listener) {
        let (sender, receiver) = watch::channel(None);
        (Signal(sender), Listener(receiver))
    }

    /// Ends the session; the first reason given is the one reported.
    fn end(&self, reason: EndReason) {
        self.0.send_if_modified(|ended| {
            if ended.is_some() {
                return false;
            }
            *ended = Some(reason);
            true
        });
    }

    /// Wakes the stream without changing the value: it reads the manager list again.
    fn managers_changed(&self) {
        self.0.send_modify(|_| {});
    }
}

impl Listener {
    /// Waits for the next news. An end wins over a manager change sent before it; changes
    /// that come before the stream looks are reported once.
    async fn next(&mut self) -> News {
        let open = self.0.changed().await.is_ok();
        match *self.0.borrow_and_update() {
            Some(reason) => News::Ended(reason),
            None if open => News::ManagersChanged,
            // The state machine drops a session's sender only after ending it; should one be
            // dropped otherwise, the session is over all the same.
            None => News::Ended(EndReason::Abandoned),
        }
    }

    #[cfg(test)]
    fn ended(&self) -> Option<EndReason> {
        *self.0.borrow()
    }
}

/// A session just opened.
struct Opened {
    id: String,
    news: Listener,
}

/// Why a heartbeat or a session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionError {
    /// The node has no session here (it expired, was replaced, or leadership changed).
    NoSession,
    /// The node has another, newer session.
    Replaced,
    /// The session is past its deadline.
    Expired,
    /// The dispatcher stopped.
    Stopped,
    /// The node opened [`REGISTRATION_RATE_LIMIT_COUNT`] sessions within the last
    /// [`REGISTRATION_RATE_LIMIT_PERIOD`] already.
    TooOften,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionError::NoSession => {
                "this manager holds no session for the node (it expired, or leadership changed)"
            }
            SessionError::Replaced => "the node opened a newer session since",
            SessionError::Expired => "it expired: no heartbeat arrived within the grace period",
            SessionError::Stopped => "this manager is shutting down",
            SessionError::TooOften => "the node is re-registering too often",
        })
    }
}

struct Live {
    id: String,
    signal: Signal,
}

/// A node this manager expects to hear from: with a session, or (after an election) without
/// one yet.
struct Entry {
    live: Option<Live>,
    deadline: SystemTime,
    /// Expected back without a session: READY in the store when this manager was elected and
    /// not connected since, or hung up (its agent closed the session). Its grace may be
    /// extended while reconnections go on (see [`Sessions::expired`]).
    awaited: bool,
}

/// The dispatcher's decisions: which node has which session, and until when. Synchronous; the
/// time is an input.
struct Sessions {
    period: Duration,
    /// The leadership term the sessions belong to; `None` while not leading.
    term: Option<u64>,
    stopped: bool,
    nodes: BTreeMap<String, Entry>,
    /// The deadline of every entry of `nodes`, earliest first: kept exactly in step with
    /// `nodes` (every deadline change goes through [`Sessions::insert`], [`Sessions::remove`]
    /// or [`Sessions::set_deadline`]), so the sweep finds the expired nodes and the time of the
    /// next expiry without scanning every node.
    deadlines: BTreeSet<(SystemTime, String)>,
    /// The earliest deadline moved earlier since [`Sessions::take_earlier`] last looked: the
    /// sweep, which sleeps until the earliest deadline it knew of, must look again.
    earlier: bool,
    /// When each node opened its sessions within the last [`REGISTRATION_RATE_LIMIT_PERIOD`]
    /// (oldest first): the registration rate limit.
    registrations: BTreeMap<String, VecDeque<SystemTime>>,
    /// Nodes whose agent dropped its session stream, to be written DISCONNECTED.
    hung_up: Vec<String>,
    /// When this manager took over the nodes of the previous leader (its election).
    adopted_at: Option<SystemTime>,
    /// When the last session was opened here.
    last_open: Option<SystemTime>,
}

impl Sessions {
    fn new(period: Duration) -> Self {
        Self {
            period,
            term: None,
            stopped: false,
            nodes: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            earlier: false,
            registrations: BTreeMap::new(),
            hung_up: Vec::new(),
            adopted_at: None,
            last_open: None,
        }
    }

    /// Notes that `deadline` enters the index, and whether it is now the earliest.
    fn index_deadline(&mut self, node_id: &str, deadline: SystemTime) {
        if self
            .deadlines
            .first()
            .is_none_or(|(first, _)| deadline < *first)
        {
            self.earlier = true;
        }
        self.deadlines.insert((deadline, node_id.to_string()));
    }

    /// Adds or replaces the entry of `node_id`; the one it had, if any.
    fn insert(&mut self, node_id: &str, entry: Entry) -> Option<Entry> {
        let deadline = entry.deadline;
        let old = self.nodes.insert(node_id.to_string(), entry);
        if let Some(old) = &old {
            self.deadlines.remove(&(old.deadline, node_id.to_string()));
        }
        self.index_deadline(node_id, deadline);
        old
    }

    /// Removes the entry of `node_id`, if any.
    fn remove(&mut self, node_id: &str) -> Option<Entry> {
        let old = self.nodes.remove(node_id)?;
        self.deadlines.remove(&(old.deadline, node_id.to_string()));
        Some(old)
    }

    /// Moves the deadline of `node_id`'s entry, if it has one.
    fn set_deadline(&mut self, node_id: &str, deadline: SystemTime) {
        let Some(entry) = self.nodes.get_mut(node_id) else {
            return;
        };
        let old = std::mem::replace(&mut entry.deadline, deadline);
        if old != deadline {
            self.deadlines.remove(&(old, node_id.to_string()));
            self.index_deadline(node_id, deadline);
        }
    }

    /// The earliest deadline of all nodes expected here: the sweep's next expiry.
    fn next_deadline(&self) -> Option<SystemTime> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Whether the earliest deadline moved earlier since the last call (see `earlier`).
    fn take_earlier(&mut self) -> bool {
        std::mem::take(&mut self.earlier)
    }

    /// The heartbeat period deadlines are computed from from now on.
    fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    fn term(&self) -> Option<u64> {
        self.term
    }

    fn end_all(&mut self, reason: EndReason) {
        self.hung_up.clear();
        self.deadlines.clear();
        for entry in std::mem::take(&mut self.nodes).into_values() {
            if let Some(live) = entry.live {
                live.signal.end(reason);
            }
        }
    }

    /// This manager leads `term`. Sessions of an earlier term end; `ready` nodes (READY in the
    /// store) without a session get the longer, post-election grace.
    fn lead(&mut self, term: u64, ready: impl IntoIterator<Item = String>, now: SystemTime) {
        if self.stopped || self.term == Some(term) {
            return;
        }
        self.end_all(EndReason::LeadershipLost);
        self.term = Some(term);
        self.adopt_unknown(ready, now);
    }

    /// This manager does not lead: every session ends.
    fn step_down(&mut self) {
        self.end_all(EndReason::LeadershipLost);
        self.term = None;
    }

    /// The dispatcher stops: every session ends and no new one opens.
    fn stop(&mut self) {
        self.end_all(EndReason::Stopped);
        self.term = None;
        self.stopped = true;
        self.registrations.clear();
    }

    /// Nodes believed up but not connected here get period × UNKNOWN multiplier to connect.
    fn adopt_unknown(&mut self, node_ids: impl IntoIterator<Item = String>, now: SystemTime) {
        let deadline = now + self.period * GRACE_PERIOD_MULTIPLIER_UNKNOWN;
        self.adopted_at = Some(now);
        for id in node_ids {
            if !self.nodes.contains_key(&id) {
                self.insert(
                    &id,
                    Entry {
                        live: None,
                        deadline,
                        awaited: true,
                    },
                );
            }
        }
    }

    /// Whether a node without a session (adopted at the election, or hung up) past its grace
    /// is still waiting its turn in a reconnection storm rather than gone: a session was
    /// opened here within the last period (the agents are still coming back), and the
    /// election is less than period × [`RECONNECT_GRACE_MULTIPLIER_MAX`] ago.
    fn reconnections_go_on(&self, now: SystemTime) -> bool {
        let recent = |t: Option<SystemTime>, within: Duration| {
            t.is_some_and(|t| now.duration_since(t).unwrap_or_default() < within)
        };
        recent(self.last_open, self.period)
            && recent(
                self.adopted_at,
                self.period * RECONNECT_GRACE_MULTIPLIER_MAX,
            )
    }

    /// Opens a session for `node_id`, replacing the one it had — unless the node opened
    /// [`REGISTRATION_RATE_LIMIT_COUNT`] sessions within the last
    /// [`REGISTRATION_RATE_LIMIT_PERIOD`] already: then nothing changes (a refused attempt
    /// is not counted) and the node is told to back off.
    fn open(&mut self, node_id: &str, now: SystemTime) -> Result<Opened, SessionError> {
        if self.stopped {
            return Err(SessionError::Stopped);
        }
        let opened = self.registrations.entry(node_id.to_string()).or_default();
        forget_registrations_before(opened, now);
        if opened.len() >= REGISTRATION_RATE_LIMIT_COUNT as usize {
            return Err(SessionError::TooOften);
        }
        opened.push_back(now);
        let id = shoal_api::id::new_id();
        let (signal, news) = Signal::new();
        let entry = Entry {
            live: Some(Live {
                id: id.clone(),
                signal,
            }),
            deadline: now + self.period * GRACE_PERIOD_MULTIPLIER_NORMAL,
            awaited: false,
        };
        self.last_open = Some(now);
        if let Some(old) = self.insert(node_id, entry)
            && let Some(live) = old.live
        {
            live.signal.end(EndReason::Replaced);
        }
        Ok(Opened { id, news })
    }

    /// A heartbeat of `session_id`: moves its deadline to now + period × NORMAL multiplier.
    fn heartbeat(
        &mut self,
        node_id: &str,
        session_id: &str,
        now: SystemTime,
    ) -> Result<(), SessionError> {
        if self.stopped {
            return Err(SessionError::Stopped);
        }
        let grace = self.period * GRACE_PERIOD_MULTIPLIER_NORMAL;
        let entry = self.nodes.get_mut(node_id).ok_or(SessionError::NoSession)?;
        match &entry.live {
            Some(live) if live.id == session_id => {}
            Some(_) => return Err(SessionError::Replaced),
            None => return Err(SessionError::NoSession),
        }
        if now > entry.deadline {
            // Left for the sweep, which writes the node DOWN.
            return Err(SessionError::Expired);
        }
        self.set_deadline(node_id, now + grace);
        Ok(())
    }

    /// A receiver that sees `session_id` end, if it is the node's current session.
    fn watch_end(
        &self,
        node_id: &str,
        session_id: &str,
    ) -> Option<watch::Receiver<Option<EndReason>>> {
        match self.nodes.get(node_id).and_then(|e| e.live.as_ref()) {
            Some(live) if live.id == session_id => Some(live.signal.0.subscribe()),
            _ => None,
        }
    }

    /// The agent of `session_id` dropped its stream. If that is still the node's session, it
    /// ends, the node is queued to be written DISCONNECTED (see [`take_hung_up`]), and its
    /// deadline keeps running: the node goes DOWN then unless it opens a new session. Whether
    /// anything was queued.
    ///
    /// [`take_hung_up`]: Self::take_hung_up
    fn hang_up(&mut self, node_id: &str, session_id: &str) -> bool {
        if !self.is_current(node_id, session_id) {
            // The dispatcher ended the session before (replaced, expired, leadership, ...).
            return false;
        }
        if let Some(entry) = self.nodes.get_mut(node_id)
            && let Some(live) = entry.live.take()
        {
            entry.awaited = true;
            live.signal.end(EndReason::Hangup);
        }
        if !self.hung_up.iter().any(|n| n == node_id) {
            self.hung_up.push(node_id.to_string());
        }
        true
    }

    /// The nodes to write DISCONNECTED, in the order they hung up.
    fn take_hung_up(&mut self) -> Vec<String> {
        std::mem::take(&mut self.hung_up)
    }

    /// Whether the node has a live session (not only a deadline).
    fn is_connected(&self, node_id: &str) -> bool {
        self.nodes.get(node_id).is_some_and(|e| e.live.is_some())
    }

    /// Drops every node past its deadline and returns their IDs, earliest deadline first. Only
    /// the expired nodes are visited (the deadline index is ordered). Also forgets
    /// registrations older than the rate limit's period.
    fn expired(&mut self, now: SystemTime) -> Vec<String> {
        self.registrations.retain(|_, opened| {
            forget_registrations_before(opened, now);
            !opened.is_empty()
        });
        let waiting = self.reconnections_go_on(now);
        let mut ids = Vec::new();
        let mut extended = Vec::new();
        while let Some((deadline, _)) = self.deadlines.first()
            && now > *deadline
        {
            let (_, id) = self.deadlines.pop_first().expect("looked at just before");
            match self.nodes.remove(&id) {
                Some(entry) if entry.awaited && waiting => extended.push((id, entry)),
                entry => {
                    if let Some(live) = entry.and_then(|e| e.live) {
                        live.signal.end(EndReason::Expired);
                    }
                    ids.push(id);
                }
            }
        }
        for (id, entry) in extended {
            let deadline = now + self.period;
            self.insert(&id, Entry { deadline, ..entry });
        }
        ids
    }

    /// Ends `session_id` if it is still the node's session.
    fn close(&mut self, node_id: &str, session_id: &str, reason: EndReason) {
        if self.is_current(node_id, session_id)
            && let Some(live) = self.remove(node_id).and_then(|e| e.live)
        {
            live.signal.end(reason);
        }
    }

    /// A node whose DOWN write failed for a passing reason: it expires again once `at` has
    /// passed, and the sweep then tries again (unless the node opened a session meanwhile).
    fn expire_again(&mut self, node_id: &str, at: SystemTime) {
        if !self.nodes.contains_key(node_id) {
            self.insert(
                node_id,
                Entry {
                    live: None,
                    deadline: at,
                    awaited: false,
                },
            );
        }
    }

    fn is_current(&self, node_id: &str, session_id: &str) -> bool {
        self.nodes
            .get(node_id)
            .and_then(|e| e.live.as_ref())
            .is_some_and(|l| l.id == session_id)
    }

    /// The end of `session_id`, if it is the node's current session and within its deadline:
    /// a listener told when the session ends (the Assignments stream follows it).
    fn listen(
        &self,
        node_id: &str,
        session_id: &str,
        now: SystemTime,
    ) -> Result<Listener, SessionError> {
        if self.stopped {
            return Err(SessionError::Stopped);
        }
        let entry = self.nodes.get(node_id).ok_or(SessionError::NoSession)?;
        let live = match &entry.live {
            Some(live) if live.id == session_id => live,
            Some(_) => return Err(SessionError::Replaced),
            None => return Err(SessionError::NoSession),
        };
        if now > entry.deadline {
            return Err(SessionError::Expired);
        }
        Ok(Listener(live.signal.0.subscribe()))
    }

    /// Whether the node is expected here (with a session, or within its post-election grace).
    fn has(&self, node_id: &str) -> bool {
        self.nodes.contains_key(node_id)
    }

    fn managers_changed(&self) {
        for live in self.nodes.values().filter_map(|e| e.live.as_ref()) {
            live.signal.managers_changed();
        }
    }
}

/// Drops the registrations that no longer count at `now`: those at least
/// [`REGISTRATION_RATE_LIMIT_PERIOD`] old. (A clock that went back keeps them.)
fn forget_registrations_before(opened: &mut VecDeque<SystemTime>, now: SystemTime) {
    while let Some(&first) = opened.front() {
        match now.duration_since(first) {
            Ok(age) if age >= REGISTRATION_RATE_LIMIT_PERIOD => {
                opened.pop_front();
            }
            _ => break,
        }
    }
}

// --- Assignments: the decisions -----------------------------------------------------------

/// Whether `task` belongs in the assignment set of `node_id`: it is assigned to the node and
/// the scheduler is done with it (observed state ASSIGNED or later). As SwarmKit, tasks below
/// ASSIGNED are held back even if `node_id` is set, since they may not have passed the
/// node's checks yet (and must not pull secrets to it); terminal tasks stay in the set, whatever
/// their desired state, until they leave the store (the agent cleans up after them then).
fn in_assignment_set(task: &Task, node_id: &str) -> bool {
    !node_id.is_empty()
        && task.node_id == node_id
        && task.status.as_ref().map_or(0, |s| s.state) >= TaskState::Assigned as i32
}

/// Whether the agent needs `task`'s secrets and configs: only while the task may still run
/// (its observed state is not terminal).
fn needs_dependencies(task: &Task) -> bool {
    let state = task.status.as_ref().map_or(0, |s| s.state);
    state < TaskState::Complete as i32
}

/// The secret and config IDs `task`'s spec references (container or process runtime).
fn task_references(task: &Task) -> (Vec<String>, Vec<String>) {
    let (secrets, configs) = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => (&c.secrets, &c.configs),
        Some(task_spec::Runtime::Process(p)) => (&p.secrets, &p.configs),
        None => return (Vec::new(), Vec::new()),
    };
    (
        secrets.iter().map(|r| r.secret_id.clone()).collect(),
        configs.iter().map(|r| r.config_id.clone()).collect(),
    )
}

/// Whether two versions of a task differ in anything the agent acts on: everything but the
/// store's metadata and the observed status (which the agent itself reported).
fn same_for_agent(a: &Task, b: &Task) -> bool {
    let strip = |t: &Task| Task {
        meta: None,
        status: None,
        ..t.clone()
    };
    strip(a) == strip(b)
}

/// Whether a reported status may replace a task's `current` one: its state is not lower (a
/// report of the same state may carry a new message or details), and it says something new.
fn accepts_status(current: Option<&TaskStatus>, reported: &TaskStatus) -> bool {
    match current {
        None => true,
        Some(current) => {
            let from = TaskState::try_from(current.state).unwrap_or(TaskState::New);
            let to = TaskState::try_from(reported.state).unwrap_or(TaskState::New);
            (from == to || task_state::is_forward(from, to)) && current != reported
        }
    }
}

/// The identity of an assignment item, to merge changes to the same item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ItemKey {
    Task(String),
    Secret(String),
    Config(String),
}

fn change(item: assignment::Item, action: AssignmentAction) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment { item: Some(item) }),
        action: action as i32,
    }
}

/// What one node's agent has been sent: the tasks of its assignment set and the secrets and
/// configs they need. Synchronous; secrets and configs are looked up through the given
/// functions (the store, in the shell).
///
/// The dependencies are kept incrementally: a change of one task looks only at the secrets
/// and configs that task references (before and after) and at the ones still missing, never
/// at the node's other tasks.
#[derive(Default)]
struct AssignmentSet {
    node_id: String,
    /// The tasks as last sent.
    tasks: BTreeMap<String, Arc<Task>>,
    /// How many references the tasks of the set that need their dependencies hold to each
    /// secret / config (a secret is needed while its count is above zero).
    secret_refs: HashMap<String, usize>,
    config_refs: HashMap<String, usize>,
    /// The secrets and configs sent (and not removed since).
    secrets: BTreeSet<String>,
    configs: BTreeSet<String>,
    /// Needed ones that did not exist when last looked at: looked at again at every change.
    missing_secrets: BTreeSet<String>,
    missing_configs: BTreeSet<String>,
}

/// The secrets and configs whose need may have changed.
#[derive(Default)]
struct Touched {
    secrets: BTreeSet<String>,
    configs: BTreeSet<String>,
}

/// Counts one reference to `id` more (`add`) or less.
fn count_reference(refs: &mut HashMap<String, usize>, id: &str, add: bool) {
    if add {
        *refs.entry(id.to_string()).or_default() += 1;
    } else if let Some(n) = refs.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            refs.remove(id);
        }
    }
}

/// Reads secrets and configs by ID.
trait Dependencies {
    fn secret(&self, id: &str) -> Option<Arc<Secret>>;
    fn config(&self, id: &str) -> Option<Arc<Config>>;
}

impl AssignmentSet {
    fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            ..Default::default()
        }
    }

    /// The COMPLETE set from `tasks` (every task in the store assigned to the node): secrets
    /// and configs first, then tasks, as UPDATE changes. Resets what was sent before.
    fn complete(
        &mut self,
        tasks: impl IntoIterator<Item = Arc<Task>>,
        deps: &dyn Dependencies,
    ) -> Vec<AssignmentChange> {
        self.tasks = tasks
            .into_iter()
            .filter(|t| in_assignment_set(t, &self.node_id))
            .map(|t| (task_id(&t).to_string(), t))
            .collect();
        self.secret_refs.clear();
        self.config_refs.clear();
        self.secrets.clear();
        self.configs.clear();
        self.missing_secrets.clear();
        self.missing_configs.clear();
        let mut touched = Touched::default();
        let tasks: Vec<Arc<Task>> = self.tasks.values().cloned().collect();
        for task in &tasks {
            self.count(task, true, &mut touched);
        }
        let mut changes = self.sync_dependencies(touched, deps);
        changes.extend(self.tasks.values().map(|t| {
            change(
                assignment::Item::Task((**t).clone()),
                AssignmentAction::Update,
            )
        }));
        changes
    }

    /// A task changed in the store (`None`: it was removed): the changes to send, if any.
    fn apply(
        &mut self,
        id: &str,
        task: Option<Arc<Task>>,
        deps: &dyn Dependencies,
    ) -> Vec<AssignmentChange> {
        let task = task.filter(|t| in_assignment_set(t, &self.node_id));
        let mut changes = Vec::new();
        match task {
            None => {
                let Some(old) = self.tasks.remove(id) else {
                    return changes;
                };
                let mut touched = Touched::default();
                self.count(&old, false, &mut touched);
                changes.extend(self.sync_dependencies(touched, deps));
                changes.push(change(
                    assignment::Item::Task((*old).clone()),
                    AssignmentAction::Remove,
                ));
            }
            Some(task) => {
                let old = self.tasks.insert(id.to_string(), task.clone());
                let state = task.status.as_ref().map_or(0, |s| s.state);
                // As SwarmKit: states up to ASSIGNED are the manager's and are always sent;
                // later ones came from the agent and are not echoed back.
                let echo = old.as_ref().is_some_and(|old| same_for_agent(old, &task))
                    && state > TaskState::Assigned as i32;
                let mut touched = Touched::default();
                if let Some(old) = &old {
                    self.count(old, false, &mut touched);
                }
                self.count(&task, true, &mut touched);
                // Dependencies first, so the agent has them when it sees the task.
                changes.extend(self.sync_dependencies(touched, deps));
                if !echo {
                    changes.push(change(
                        assignment::Item::Task((*task).clone()),
                        AssignmentAction::Update,
                    ));
                }
            }
        }
        changes
    }

    /// Counts the references of `task` (a task of the set) in (`add`) or out, if it needs its
    /// dependencies, noting them in `touched`.
    fn count(&mut self, task: &Task, add: bool, touched: &mut Touched) {
        if !needs_dependencies(task) {
            return;
        }
        let (secrets, configs) = task_references(task);
        for id in secrets {
            count_reference(&mut self.secret_refs, &id, add);
            touched.secrets.insert(id);
        }
        for id in configs {
            count_reference(&mut self.config_refs, &id, add);
            touched.configs.insert(id);
        }
    }

    /// Brings the secrets and configs sent to what the tasks need, looking at the `touched`
    /// ones and the missing ones only: UPDATE for newly needed ones that exist, REMOVE for the
    /// ones no task needs any more (secrets before configs, updates before removals, each in
    /// ID order).
    fn sync_dependencies(
        &mut self,
        touched: Touched,
        deps: &dyn Dependencies,
    ) -> Vec<AssignmentChange> {
        let mut secrets = touched.secrets;
        secrets.append(&mut self.missing_secrets);
        let mut configs = touched.configs;
        configs.append(&mut self.missing_configs);
        let mut updates = Vec::new();
        let mut removals = Vec::new();
        for id in secrets {
            let needed = self.secret_refs.contains_key(&id);
            let sent = self.secrets.contains(&id);
            if needed && !sent {
                match deps.secret(&id) {
                    Some(secret) => {
                        updates.push(change(
                            assignment::Item::Secret((*secret).clone()),
                            AssignmentAction::Update,
                        ));
                        self.secrets.insert(id);
                    }
                    // Not recorded as sent: it is tried again at the next change.
                    None => {
                        self.missing_secrets.insert(id);
                    }
                }
            } else if !needed && sent {
                self.secrets.remove(&id);
                removals.push(change(
                    assignment::Item::Secret(Secret {
                        meta: Some(Meta {
                            id,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    AssignmentAction::Remove,
                ));
            }
        }
        let mut config_removals = Vec::new();
        for id in configs {
            let needed = self.config_refs.contains_key(&id);
            let sent = self.configs.contains(&id);
            if needed && !sent {
                match deps.config(&id) {
                    Some(config) => {
                        updates.push(change(
                            assignment::Item::Config((*config).clone()),
                            AssignmentAction::Update,
                        ));
                        self.configs.insert(id);
                    }
                    None => {
                        self.missing_configs.insert(id);
                    }
                }
            } else if !needed && sent {
                self.configs.remove(&id);
                config_removals.push(change(
                    assignment::Item::Config(Config {
                        meta: Some(Meta {
                            id,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    AssignmentAction::Remove,
                ));
            }
        }
        updates.extend(removals);
        updates.extend(config_removals);
        updates
    }
}

fn task_id(task: &Task) -> &str {
    task.meta.as_ref().map_or("", |m| m.id.as_str())
}

fn item_key(change: &AssignmentChange) -> Option<ItemKey> {
    let meta_id = |m: &Option<Meta>| m.as_ref().map_or(String::new(), |m| m.id.clone());
    match change.assignment.as_ref()?.item.as_ref()? {
        assignment::Item::Task(t) => Some(ItemKey::Task(meta_id(&t.meta))),
        assignment::Item::Secret(s) => Some(ItemKey::Secret(meta_id(&s.meta))),
        assignment::Item::Config(c) => Some(ItemKey::Config(meta_id(&c.meta))),
    }
}

/// Changes waiting to be sent in one INCREMENTAL message. A later change to the same item
/// replaces the earlier one (keeping the earlier one's place); full at
/// [`ASSIGNMENT_BATCH_MAX_CHANGES`] changes.
#[derive(Default)]
struct PendingAssignments {
    changes: Vec<AssignmentChange>,
    index: HashMap<ItemKey, usize>,
}

impl PendingAssignments {
    fn push(&mut self, change: AssignmentChange) {
        match item_key(&change) {
            Some(key) => match self.index.get(&key) {
                Some(&i) => self.changes[i] = change,
                None => {
                    self.index.insert(key, self.changes.len());
                    self.changes.push(change);
                }
            },
            None => self.changes.push(change),
        }
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn is_full(&self) -> bool {
        self.changes.len() >= ASSIGNMENT_BATCH_MAX_CHANGES
    }

    fn take(&mut self) -> Vec<AssignmentChange> {
        self.index.clear();
        std::mem::take(&mut self.changes)
    }
}

/// Numbers the assignment messages of one stream: each one results in the next version and
/// applies to the one before, so the agent sees a gap.
#[derive(Default)]
struct AssignmentVersions(u64);

impl AssignmentVersions {
    fn message(
        &mut self,
        kind: assignments_message::Type,
        changes: Vec<AssignmentChange>,
    ) -> AssignmentsMessage {
        // A COMPLETE message applies to nothing: it replaces whatever the agent had.
        let applies_to = match kind {
            assignments_message::Type::Complete => String::new(),
            assignments_message::Type::Incremental => self.0.to_string(),
        };
        self.0 += 1;
        AssignmentsMessage {
            r#type: kind as i32,
            applies_to,
            results_in: self.0.to_string(),
            changes,
        }
    }
}

/// Checks the status updates of one UpdateTaskStatus call from `node_id`, with `task` reading
/// the store: the updates to write. The whole call is refused (nothing written) if an update
/// has no status, or names a task assigned to another node (PERMISSION_DENIED, naming the
/// task), or if there are more than [`TASK_STATUS_BATCH_MAX_ITEMS`]. Updates of tasks that
/// are not in the store (removed meanwhile) are dropped: there is nothing to report them on.
fn check_status_updates(
    node_id: &str,
    updates: Vec<update_task_status_request::TaskStatusUpdate>,
    task: impl Fn(&str) -> Option<Arc<Task>>,
) -> Result<Vec<(String, TaskStatus)>, Status> {
    if updates.len() > TASK_STATUS_BATCH_MAX_ITEMS {
        return Err(Status::invalid_argument(format!(
            "{} task status updates in one call; send at most {TASK_STATUS_BATCH_MAX_ITEMS}",
            updates.len()
        )));
    }
    let mut checked = Vec::with_capacity(updates.len());
    for update in updates {
        let Some(status) = update.status else {
            return Err(Status::invalid_argument(format!(
                "the update of task {} has no status",
                update.task_id
            )));
        };
        let Some(stored) = task(&update.task_id) else {
            continue;
        };
        if stored.node_id != node_id {
            return Err(Status::permission_denied(format!(
                "task {} is not assigned to node {node_id}; a node reports the status of its own \
                 tasks only (nothing of this call was written)",
                update.task_id
            )));
        }
        checked.push((update.task_id, status));
    }
    Ok(checked)
}

impl Inner {
    /// Writes the reported task statuses of some calls (`nodes[i]` reported `calls[i]`), in
    /// as few transactions as the store's limits allow, skipping the ones that would move a
    /// task backwards (or say nothing new) and tasks that left the node meanwhile. Returns
    /// once everything is committed.
    async fn write_task_statuses(
        &self,
        nodes: &[String],
        calls: &[Vec<(String, TaskStatus)>],
    ) -> Result<(), Status> {
        let write = async {
            let mut batch = self.store.batch();
            for (node_id, updates) in nodes.iter().zip(calls) {
                for (task_id, status) in updates {
                    batch
                        .update(|tx| {
                            let Some(task) = tx.get::<Task>(task_id) else {
                                return Ok(());
                            };
                            if task.node_id != *node_id
                                || !accepts_status(task.status.as_ref(), status)
                            {
                                return Ok(());
                            }
                            let mut task = (*task).clone();
                            task.status = Some(status.clone());
                            tx.update(task)
                        })
                        .await?;
                }
            }
            batch.commit().await
        };
        write.await.map(|_| ()).map_err(|e| {
            if self.leadership.status().is_leader {
                store_status(e)
            } else {
                tracing::debug!("writing task statuses failed: {e}");
                self.leadership.not_leader()
            }
        })
    }
}

/// The answer to one status call, once its reports are committed (or failed).
type StatusAnswer = oneshot::Sender<Result<(), Status>>;

/// One UpdateTaskStatus call waiting for the status batcher.
struct StatusCall {
    node_id: String,
    updates: Vec<(String, TaskStatus)>,
    answer: StatusAnswer,
}

/// The status reports waiting to be written, and the decisions on when: a batch is due
/// [`TASK_STATUS_BATCH_MAX_DELAY`] after its first call came, or at once when it holds
/// [`TASK_STATUS_BATCH_MAX_ITEMS`] reports. A call's reports are never split over batches.
#[derive(Default)]
struct StatusQueue {
    calls: VecDeque<StatusCall>,
    items: usize,
    /// When the oldest waiting call came.
    since: Option<Instant>,
    /// A batcher task serves the queue.
    running: bool,
    /// The batcher stopped: calls are refused.
    closed: bool,
}

impl StatusQueue {
    /// Queues a call; gives it back if no batcher serves the queue.
    fn push(&mut self, call: StatusCall, now: Instant) -> Result<(), StatusCall> {
        if !self.running || self.closed {
            return Err(call);
        }
        self.items += call.updates.len();
        self.since.get_or_insert(now);
        self.calls.push_back(call);
        Ok(())
    }

    /// When the waiting calls must be written at the latest.
    fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + TASK_STATUS_BATCH_MAX_DELAY)
    }

    /// Whether a batch should be written at `now`.
    fn ready(&self, now: Instant) -> bool {
        self.items >= TASK_STATUS_BATCH_MAX_ITEMS || self.due().is_some_and(|due| due <= now)
    }

    /// The next batch: the oldest calls, as many as fit in [`TASK_STATUS_BATCH_MAX_ITEMS`]
    /// reports (at least one). The calls left wait from `now`.
    fn take(&mut self, now: Instant) -> Vec<StatusCall> {
        let mut batch = Vec::new();
        let mut items = 0;
        while let Some(call) = self.calls.front() {
            if !batch.is_empty() && items + call.updates.len() > TASK_STATUS_BATCH_MAX_ITEMS {
                break;
            }
            items += call.updates.len();
            batch.extend(self.calls.pop_front());
        }
        self.items -= items;
        self.since = (!self.calls.is_empty()).then_some(now);
        batch
    }

    /// The batcher stopped: the waiting calls are dropped (their callers are told the manager
    /// is shutting down) and new ones refused.
    fn close(&mut self) {
        self.closed = true;
        self.calls.clear();
        self.items = 0;
        self.since = None;
    }
}

impl Inner {
    fn status_queue(&self) -> MutexGuard<'_, StatusQueue> {
        self.status_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a checked status call: through the batcher if it runs, else at once. Returns
    /// once the reports are committed.
    async fn submit_statuses(
        &self,
        node_id: String,
        updates: Vec<(String, TaskStatus)>,
    ) -> Result<(), Status> {
        if updates.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        let call = StatusCall {
            node_id,
            updates,
            answer,
        };
        let queued = self.status_queue().push(call, Instant::now());
        match queued {
            Ok(()) => {
                self.status_wake.notify_one();
                // Dropped unanswered: the batcher stopped.
                answered.await.unwrap_or_else(|_| Err(shutting_down()))
            }
            Err(call) if self.status_queue().closed => {
                drop(call);
                Err(shutting_down())
            }
            Err(call) => {
                self.write_task_statuses(&[call.node_id], &[call.updates])
                    .await
            }
        }
    }

    /// The status batcher: writes the queued calls as they become due, until `stop` says so.
    async fn run_status_batcher(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let _close = CloseStatusQueue(self.clone());
        loop {
            let (ready, due) = {
                let queue = self.status_queue();
                (queue.ready(Instant::now()), queue.due())
            };
            if ready {
                let calls = self.status_queue().take(Instant::now());
                let (nodes, updates): (Vec<String>, Vec<Vec<(String, TaskStatus)>>) = calls
                    .iter()
                    .map(|c| (c.node_id.clone(), c.updates.clone()))
                    .unzip();
                let result = self.write_task_statuses(&nodes, &updates).await;
                for call in calls {
                    // A caller that went away does not mind.
                    let _ = call.answer.send(result.clone());
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                () = self.status_wake.notified() => {}
                () = sleep_until_some(due) => {}
            }
        }
    }
}

/// Closes the status queue when dropped: the batcher holds one, so that however it ends, no
/// call waits for it.
struct CloseStatusQueue(Arc<Inner>);

impl Drop for CloseStatusQueue {
    fn drop(&mut self) {
        self.0.status_queue().close();
    }
}

// --- Helpers ------------------------------------------------------------------------------

/// The period told to an agent: `period` moved by up to ± [`HEARTBEAT_EPSILON`] (at most
/// half the period), so that agents started together do not beat in lockstep. `random` picks
/// where in that range (any value; uniform values give a uniform jitter).
fn jittered(period: Duration, random: u64) -> Duration {
    let epsilon = HEARTBEAT_EPSILON.min(period / 2);
    let span = epsilon.as_nanos() as u64 * 2 + 1;
    period - epsilon + Duration::from_nanos(random % span)
}

/// Random bits for the jitter, without a random number crate: the standard library seeds
/// every `RandomState` afresh.
fn random_u64() -> u64 {
    RandomState::new().hash_one(0u8)
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .is_some_and(|s| s.state == node_status::State::Ready as i32)
}

/// A node this manager's store does not hold. Not final: a new leader may not have applied
/// the node's creation yet. (A removed node never gets this far: the authorizer, which runs
/// first, refuses a certificate whose node the store lacks — finally where the store is
/// complete, with a retry elsewhere.)
fn not_member(node_id: &str) -> Status {
    Status::unavailable(format!(
        "this manager does not know node {node_id} (yet); retrying shortly. If the node was \
         never part of this cluster, join it with a token"
    ))
}

/// The refusal of a node over the registration rate limit. UNAVAILABLE, as SwarmKit: the
/// agent retries it with its backoff like any passing failure (RESOURCE_EXHAUSTED would say
/// the same, but agents and tools read UNAVAILABLE as "try again later" already).
fn too_often(node_id: &str) -> Status {
    Status::unavailable(format!(
        "node {node_id} is re-registering too often; backing off (more than \
         {REGISTRATION_RATE_LIMIT_COUNT} sessions within {REGISTRATION_RATE_LIMIT_PERIOD:?}); \
         the current session, if any, stays"
    ))
}

fn shutting_down() -> Status {
    Status::unavailable(
        "this manager is shutting down; open a session with another manager of the cluster",
    )
}

// --- The shell ----------------------------------------------------------------------------

/// What the dispatcher needs of Raft: a seam so the handlers can be tested without a Raft
/// node.
pub(crate) trait Leadership: Send + Sync + 'static {
    fn status(&self) -> RaftStatus;
    /// A receiver that sees every status change (it ends if the Raft node stops).
    fn watch(&self) -> watch::Receiver<RaftStatus>;
    /// The status answering a call only the leader serves.
    fn not_leader(&self) -> Status;
}

impl Leadership for RaftHandle {
    fn status(&self) -> RaftStatus {
        RaftHandle::status(self)
    }

    fn watch(&self) -> watch::Receiver<RaftStatus> {
        self.watch_status()
    }

    fn not_leader(&self) -> Status {
        shoal_raft::service::not_leader(self)
    }
}

struct Inner {
    store: Store,
    leadership: Arc<dyn Leadership>,
    authorizer: Authorizer,
    clock: Arc<dyn Clock>,
    sessions: Mutex<Sessions>,
    started: AtomicBool,
    /// The number of sweep rounds completed, for whoever waits for one (the tests).
    rounds: watch::Sender<u64>,
    /// Wakes the sweep task when an agent hung up (see [`Sessions::hang_up`]).
    hangups: Notify,
    /// Wakes the sweep task when the earliest deadline moved earlier than the one it sleeps
    /// until (see [`Sessions::take_earlier`]).
    deadlines_moved: Notify,
    /// Status reports waiting for the batcher, and its wake-up.
    status_queue: Mutex<StatusQueue>,
    status_wake: Notify,
    /// Routes task events to the Assignments streams.
    router: Arc<Router>,
}

/// The Dispatcher service of one manager: agent sessions, heartbeats, assignments and task
/// status reports. Cheap to clone; all
/// clones share the sessions. See the module documentation for how to run it.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// A dispatcher over this manager's store and Raft node. `authorizer` checks callers'
    /// certificates; `clock` gives the time deadlines are measured on. Call
    /// [`start`](Self::start) once to run the sweep that marks silent nodes DOWN.
    pub fn new(
        store: Store,
        raft: RaftHandle,
        authorizer: Authorizer,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_leadership(store, Arc::new(raft), authorizer, clock)
    }

    fn with_leadership(
        store: Store,
        leadership: Arc<dyn Leadership>,
        authorizer: Authorizer,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                leadership,
                authorizer,
                clock,
                sessions: Mutex::new(Sessions::new(HEARTBEAT_PERIOD)),
                started: AtomicBool::new(false),
                rounds: watch::Sender::new(0),
                hangups: Notify::new(),
                deadlines_moved: Notify::new(),
                status_queue: Mutex::new(StatusQueue::default()),
                status_wake: Notify::new(),
                router: Arc::new(Router::default()),
            }),
        }
    }

    /// Starts the sweep, a tokio task: it follows leadership and the manager list as Raft
    /// reports changes and, just after the earliest heartbeat deadline (looking at least
    /// every second), drops expired sessions and writes their nodes DOWN, all in one batch.
    /// Stop it with [`DispatcherTask::stop`].
    ///
    /// Must be called from within a tokio runtime with its time driver enabled (as the
    /// daemon's multi-threaded runtime, built with `enable_all`); the sweep runs on it.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if the dispatcher was started before: one sweep per
    /// dispatcher.
    pub fn start(&self) -> DispatcherTask {
        self.spawn(None)
    }

    /// [`start`](Self::start), sweeping at least every `interval` instead of every second
    /// (tests use a few milliseconds, or an hour to see the deadlines alone wake it).
    pub fn start_with_interval(&self, interval: Duration) -> DispatcherTask {
        self.spawn(Some(interval))
    }

    fn spawn(&self, interval: Option<Duration>) -> DispatcherTask {
        let runtime = tokio::runtime::Handle::try_current()
            .expect("Dispatcher::start must be called from within a tokio runtime");
        assert!(
            !self.inner.started.swap(true, Ordering::SeqCst),
            "Dispatcher::start called twice: a dispatcher runs one sweep; stop it with \
             DispatcherTask::stop (stopping is final)"
        );
        let (stop, stopped) = watch::channel(false);
        self.inner.status_queue().running = true;
        let statuses = runtime.spawn(self.inner.clone().run_status_batcher(stopped.clone()));
        let task = runtime.spawn(self.inner.clone().run(interval, stopped));
        DispatcherTask {
            inner: self.inner.clone(),
            stop,
            task: Some(task),
            statuses: Some(statuses),
        }
    }
}

/// One agent's heartbeat stream: answers each beat as [`Dispatcher::heartbeat`] would, and
/// ends (with an error saying why) when the session its beats name ends — so a stream never
/// outlives its session, and the dispatcher's stop ends it with the sessions.
struct HeartbeatBeats {
    inner: Arc<Inner>,
    caller: NodeIdentity,
    incoming: Streaming<HeartbeatRequest>,
    /// The session the beats name, once the first was accepted, and its end.
    session: Option<(String, watch::Receiver<Option<EndReason>>)>,
    done: bool,
}

impl HeartbeatBeats {
    async fn next(mut self) -> Option<(Result<HeartbeatResponse, Status>, Self)> {
        if self.done {
            return None;
        }
        let ended = match &mut self.session {
            Some((id, ended)) => tokio::select! {
                message = self.incoming.message() => Ok(message),
                reason = ended.wait_for(Option::is_some) => {
                    let reason = reason.map(|r| *r).ok().flatten().unwrap_or(EndReason::Abandoned);
                    Err(format!(
                        "session {id} of node {} ended ({reason:?}); open a new session",
                        self.caller.node_id
                    ))
                }
            },
            None => Ok(self.incoming.message().await),
        };
        let message = match ended {
            Ok(message) => message,
            Err(why) => {
                self.done = true;
                return Some((Err(Status::not_found(why)), self));
            }
        };
        // The agent closed its side, or the connection broke: nothing more to answer.
        let request = message.ok().flatten()?;
        let answer = self.answer(&request.session_id);
        self.done = answer.is_err();
        Some((answer, self))
    }

    fn answer(&mut self, session_id: &str) -> Result<HeartbeatResponse, Status> {
        if let Some((id, _)) = &self.session
            && id != session_id
        {
            return Err(Status::invalid_argument(format!(
                "a heartbeat stream carries the beats of one session ({id}), not of {session_id}"
            )));
        }
        // The certificate was checked when the stream opened; a stream can outlive its dates.
        if self.caller.not_after < SystemTime::now() {
            return Err(Status::unauthenticated(format!(
                "the certificate of node {} has expired; renew it and reconnect",
                self.caller.node_id
            )));
        }
        self.inner.require_leader()?;
        let response = self.inner.beat(&self.caller.node_id, session_id)?;
        if self.session.is_none() {
            let ended = self
                .inner
                .sessions()
                .watch_end(&self.caller.node_id, session_id);
            if let Some(ended) = ended {
                self.session = Some((session_id.to_string(), ended));
            }
        }
        Ok(response)
    }
}

impl Inner {
    /// Takes one heartbeat of `node_id`'s session `session_id`: moves its deadline, and
    /// answers with the (jittered) period to beat at.
    fn beat(&self, node_id: &str, session_id: &str) -> Result<HeartbeatResponse, Status> {
        let period = self.period();
        let now = self.clock.now();
        let result = {
            let mut sessions = self.sessions();
            sessions.set_period(period);
            let result = sessions.heartbeat(node_id, session_id, now);
            self.wake_sweep_if_earlier(&mut sessions);
            result
        };
        match result {
            // The deadline above uses the exact period; only the answer is jittered.
            Ok(()) => Ok(HeartbeatResponse {
                period: Some(proto_duration(jittered(period, random_u64()))),
            }),
            Err(SessionError::Stopped) => Err(shutting_down()),
            Err(e) => Err(Status::not_found(format!(
                "session {session_id} of node {node_id} is not current: {e}; open a new session"
            ))),
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pokes the sweep if the earliest deadline moved earlier than the one it sleeps until
    /// (a shorter period, a first session): it then sleeps until the new one.
    fn wake_sweep_if_earlier(&self, sessions: &mut Sessions) {
        if sessions.take_earlier() {
            // Stores a permit if the sweep is busy: it looks as soon as it waits again.
            self.deadlines_moved.notify_one();
        }
    }

    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.store
            .view(|tx| tx.find::<Cluster>(By::All).into_iter().next())
    }

    /// The roots nodes must trust (see [`crate::root_rotation::trust_bundle`]).
    fn trust_bundle(&self) -> Vec<u8> {
        self.cluster()
            .and_then(|c| c.root_ca.as_ref().map(crate::root_rotation::trust_bundle))
            .unwrap_or_default()
    }

    /// The heartbeat period: the cluster spec's, else the default.
    fn period(&self) -> Duration {
        self.cluster()
            .and_then(|c| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.dispatcher.as_ref())
                    .and_then(|d| d.heartbeat_period.as_ref())
                    .map(shoal_api::validation::to_std_duration)
            })
            .filter(|p| !p.is_zero())
            .unwrap_or(HEARTBEAT_PERIOD)
    }

    /// The calling node, if it may talk to the dispatcher.
    fn caller<T>(&self, request: &Request<T>) -> Result<NodeIdentity, Status> {
        self.authorizer
            .check(request, Access::Nodes)?
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no client certificate: the dispatcher needs a node certificate of this \
                     cluster; join the cluster with a token first",
                )
            })
    }

    /// Refuses the call unless this manager leads, and brings the sessions to its term.
    fn require_leader(&self) -> Result<(), Status> {
        let status = self.leadership.status();
        if !status.is_leader {
            self.sync_leadership(&status);
            return Err(self.leadership.not_leader());
        }
        self.sync_leadership(&status);
        Ok(())
    }

    /// Brings the sessions to what Raft says: not leading (all end) or leading a term (older
    /// sessions end, READY nodes get the post-election grace).
    fn sync_leadership(&self, status: &RaftStatus) {
        let term = status.is_leader.then_some(status.term);
        {
            let mut sessions = self.sessions();
            if sessions.stopped || sessions.term() == term {
                return;
            }
            if term.is_none() {
                sessions.step_down();
                tracing::info!("dispatcher: not the leader any more; every agent session ended");
                return;
            }
        }
        // Read the store before taking the sessions lock (lock order: store, then sessions).
        let ready: Vec<String> = self.store.view(|tx| {
            tx.find::<Node>(By::All)
                .iter()
                .filter(|n| is_ready(n))
                .map(|n| n.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default())
                .collect()
        });
        let period = self.period();
        let now = self.clock.now();
        let mut sessions = self.sessions();
        if sessions.stopped || sessions.term() == term {
            return;
        }
        let count = ready.len();
        sessions.set_period(period);
        sessions.lead(status.term, ready, now);
        self.wake_sweep_if_earlier(&mut sessions);
        tracing::info!(
            term = status.term,
            "dispatcher: leading term {}; {count} READY node(s) have {:?} to open a session",
            status.term,
            period * GRACE_PERIOD_MULTIPLIER_UNKNOWN
        );
    }

    fn managers(status: &RaftStatus) -> Vec<WeightedPeer> {
        status
            .members
            .values()
            .map(|m| WeightedPeer {
                node_id: m.node_id.clone(),
                addr: m.addr.clone(),
                weight: MANAGER_WEIGHT,
            })
            .collect()
    }

    fn message(
        &self,
        session_id: &str,
        node: &Node,
        managers: Vec<WeightedPeer>,
    ) -> SessionMessage {
        let root_ca = self.trust_bundle();
        SessionMessage {
            session_id: session_id.to_string(),
            node: Some(node.clone()),
            managers,
            network_bootstrap_keys: Vec::new(),
            root_ca,
        }
    }

    /// Changes node `node_id` with `change` (which says whether there is anything to write),
    /// retrying when a concurrent write got there first. Ok(false): nothing written.
    async fn write_node(
        &self,
        node_id: &str,
        change: impl Fn(&mut Node) -> bool,
    ) -> Result<bool, StoreError> {
        let mut attempt = 1;
        loop {
            let result = self
                .store
                .update(|tx| {
                    let node = tx
                        .get::<Node>(node_id)
                        .ok_or_else(|| StoreError::NotFound {
                            kind: "node",
                            what: node_id.to_string(),
                        })?;
                    let mut node = (*node).clone();
                    if !change(&mut node) {
                        return Ok(false);
                    }
                    tx.update(node)?;
                    Ok(true)
                })
                .await;
            match result {
                Err(e) if e.is_conflict() && attempt < WRITE_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    /// Writes the node DOWN unless it has a session again. Ok(false): nothing to write.
    async fn mark_down(&self, node_id: &str) -> Result<bool, StoreError> {
        let result = self
            .write_node(node_id, |node| {
                // Store lock held here, then the sessions lock: the allowed order.
                if self.sessions().has(node_id) {
                    return false;
                }
                let status = node.status.get_or_insert_with(NodeStatus::default);
                if status.state == node_status::State::Down as i32 {
                    return false;
                }
                status.state = node_status::State::Down as i32;
                status.message = HEARTBEAT_FAILURE.to_string();
                true
            })
            .await;
        match result {
            Err(StoreError::NotFound { .. }) => Ok(false),
            other => other,
        }
    }

    /// Writes DOWN every node of `node_ids` that has no session again and is not DOWN yet,
    /// through one store batch (one transaction unless the store's limits need more); the
    /// nodes written. Should a node change meanwhile (a reconnect racing the write: the batch
    /// is refused as out of sequence), the nodes are written one at a time, each re-read and
    /// retried as [`mark_down`](Self::mark_down) does.
    async fn mark_all_down(&self, node_ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut written = BTreeSet::new();
        let batched = async {
            let mut batch = self.store.batch();
            for node_id in node_ids {
                batch
                    .update(|tx| {
                        // The batch may build an update twice: only the last build counts.
                        written.remove(node_id);
                        let Some(node) = tx.get::<Node>(node_id) else {
                            return Ok(());
                        };
                        // Store lock held here, then the sessions lock: the allowed order.
                        if self.sessions().has(node_id) {
                            return Ok(());
                        }
                        let mut node = (*node).clone();
                        let status = node.status.get_or_insert_with(NodeStatus::default);
                        if status.state == node_status::State::Down as i32 {
                            return Ok(());
                        }
                        status.state = node_status::State::Down as i32;
                        status.message = HEARTBEAT_FAILURE.to_string();
                        tx.update(node)?;
                        written.insert(node_id.clone());
                        Ok(())
                    })
                    .await?;
            }
            batch.commit().await
        }
        .await;
        match batched {
            Ok(_) => Ok(written.into_iter().collect()),
            Err(e) if e.is_conflict() => {
                let mut written = Vec::new();
                for node_id in node_ids {
                    if self.mark_down(node_id).await? {
                        written.push(node_id.clone());
                    }
                }
                Ok(written)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes DISCONNECTED the nodes whose agents hung up, unless they have a session again
    /// (or are not READY any more).
    async fn write_hung_up(&self, stop: &watch::Receiver<bool>) {
        let nodes = self.sessions().take_hung_up();
        for node_id in nodes {
            if *stop.borrow() || !self.leadership.status().is_leader {
                return;
            }
            let result = self
                .write_node(&node_id, |node| {
                    // Store lock held here, then the sessions lock: the allowed order.
                    if self.sessions().is_connected(&node_id) || !is_ready(node) {
                        return false;
                    }
                    let status = node.status.get_or_insert_with(NodeStatus::default);
                    status.state = node_status::State::Disconnected as i32;
                    status.message = SESSION_CLOSED.to_string();
                    true
                })
                .await;
            match result {
                Ok(true) => tracing::info!(
                    node_id = %node_id,
                    "node {node_id} is DISCONNECTED: its agent closed its session"
                ),
                Ok(false) | Err(StoreError::NotFound { .. }) => {}
                // Not retried: the node goes DOWN at its deadline all the same.
                Err(e) => tracing::info!(
                    node_id = %node_id,
                    "could not write node {node_id} DISCONNECTED: {e}"
                ),
            }
        }
    }

    /// The sweep task: follows Raft's status as it changes, runs a round at every pause,
    /// writes hung-up nodes DISCONNECTED as they come, until `stop` says so (or its sender
    /// is gone).
    async fn run(self: Arc<Self>, interval: Option<Duration>, mut stop: watch::Receiver<bool>) {
        // Ends the sessions even if a round panics or the task is aborted.
        let _stop_sessions = StopSessions(self.clone());
        let mut raft = self.leadership.watch();
        let mut watching = true;
        let mut members = None;
        // The longest pause between rounds; the earliest deadline may make it shorter.
        let cap = interval.unwrap_or(MAX_SWEEP_INTERVAL);
        let mut next_round = Instant::now();
        loop {
            // The stop first; then the round when due, so that a busy Raft (every commit
            // changes its status) cannot hold expiry off.
            tokio::select! {
                biased;
                // The only value ever sent is `true`; an error: the owner is gone.
                _ = stop.changed() => break,
                () = tokio::time::sleep_until(next_round) => {
                    self.sweep(&mut members, &stop, cap).await;
                    self.rounds.send_modify(|n| *n += 1);
                    next_round = self.next_round(cap);
                }
                () = self.deadlines_moved.notified() => {
                    next_round = next_round.min(self.next_round(cap));
                }
                changed = raft.changed(), if watching => match changed {
                    Ok(()) => {
                        let status = raft.borrow_and_update().clone();
                        self.follow(&status, &mut members);
                    }
                    // The Raft node stopped: the rounds still look at its last status.
                    Err(_) => watching = false,
                },
                () = self.hangups.notified() => self.write_hung_up(&stop).await,
            }
        }
    }

    /// When the next round is due: just after the earliest deadline passes, but at most `cap`
    /// from now (and at least [`MIN_SWEEP_INTERVAL`], or `cap` if shorter).
    fn next_round(&self, cap: Duration) -> Instant {
        let earliest = self.sessions().next_deadline();
        let until_expiry = earliest.map(|deadline| {
            deadline
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO)
                + EXPIRY_SLACK
        });
        let pause = until_expiry
            .map_or(cap, |d| d.min(cap))
            .max(MIN_SWEEP_INTERVAL.min(cap));
        Instant::now() + pause
    }

    /// Brings the sessions to Raft's `status`, and tells the streams when the manager list
    /// differs from `members`, the one last seen.
    fn follow(&self, status: &RaftStatus, members: &mut Option<BTreeMap<u64, RaftMember>>) {
        self.sync_leadership(status);
        if !status.is_leader {
            *members = None;
            return;
        }
        if members.as_ref() != Some(&status.members) {
            // Also on the first look: a session may have been opened before it, with a list
            // that has changed since. Streams skip lists they have already sent.
            self.sessions().managers_changed();
            *members = Some(status.members.clone());
        }
    }

    /// One round of the sweep: follows Raft's status, then writes every node expired by now
    /// DOWN, all in one store batch (one transaction, unless there are more than the store's
    /// limits allow in one), unless `stop` says so. A node whose write failed expires again
    /// `retry` later.
    async fn sweep(
        &self,
        members: &mut Option<BTreeMap<u64, RaftMember>>,
        stop: &watch::Receiver<bool>,
        retry: Duration,
    ) {
        let status = self.leadership.status();
        self.follow(&status, members);
        if !status.is_leader {
            return;
        }
        let period = self.period();
        let now = self.clock.now();
        let expired = {
            let mut sessions = self.sessions();
            sessions.set_period(period);
            sessions.expired(now)
        };
        if expired.is_empty() || *stop.borrow() {
            // Stopping: the sessions end; the next leader gives these nodes its grace.
            return;
        }
        match self.mark_all_down(&expired).await {
            Ok(written) => {
                for node_id in written {
                    tracing::warn!(
                        node_id = %node_id,
                        "node {node_id} is DOWN: no heartbeat within {:?}",
                        period * GRACE_PERIOD_MULTIPLIER_NORMAL
                    );
                }
            }
            Err(e)
                if e.class() == ErrorClass::Unavailable || !self.leadership.status().is_leader =>
            {
                tracing::info!(
                    "dispatcher: could not write {} node(s) DOWN ({e}); leadership was lost, \
                     every agent session ended",
                    expired.len()
                );
                self.sessions().step_down();
            }
            Err(e) => {
                tracing::warn!(
                    "could not write {} node(s) DOWN: {e}; trying again in {retry:?}",
                    expired.len()
                );
                let mut sessions = self.sessions();
                for node_id in &expired {
                    sessions.expire_again(node_id, now + retry);
                }
            }
        }
    }

    /// The status a session's stream ends with.
    fn ended_status(&self, reason: EndReason, node_id: &str, session_id: &str) -> Status {
        match reason {
            EndReason::Replaced => Status::aborted(format!(
                "session {session_id} was replaced by a newer session of node {node_id}; keep \
                 using the newest session"
            )),
            EndReason::Expired => Status::aborted(format!(
                "session {session_id} of node {node_id} expired: no heartbeat arrived in time; \
                 open a new session"
            )),
            EndReason::LeadershipLost => {
                if self.leadership.status().is_leader {
                    Status::unavailable(
                        "this manager's leadership changed (a new term began); open a new session",
                    )
                } else {
                    let s = self.leadership.not_leader();
                    Status::with_metadata(
                        s.code(),
                        format!(
                            "{}; the session ended: open a new one with the leader",
                            s.message()
                        ),
                        s.metadata().clone(),
                    )
                }
            }
            EndReason::NodeRemoved => Status::permission_denied(format!(
                "node {node_id} was removed from the cluster; join again with a token"
            )),
            EndReason::Abandoned => Status::aborted(format!(
                "session {session_id} was abandoned before it started; open a new session"
            )),
            EndReason::Stopped => shutting_down(),
            // Nobody reads the stream any more; said for completeness.
            EndReason::Hangup => Status::cancelled(format!(
                "session {session_id} of node {node_id} was closed by the node"
            )),
        }
    }
}

// --- Session streams ----------------------------------------------------------------------

enum Woken {
    News(News),
    Node(SessionNews),
}

/// The state behind one session's stream.
struct Watcher {
    inner: Arc<Inner>,
    node_id: String,
    session_id: String,
    node: Arc<Node>,
    news: Listener,
    route: Route<SessionInbox>,
    /// The first message is yet to be sent.
    first: bool,
    /// The manager list last sent.
    managers: Vec<WeightedPeer>,
    /// The roots to trust last sent.
    root_ca: Vec<u8>,
    done: bool,
}

type Item = Result<SessionMessage, Status>;

impl Watcher {
    fn message(&mut self) -> Item {
        self.managers = Inner::managers(&self.inner.leadership.status());
        let message = self
            .inner
            .message(&self.session_id, &self.node, self.managers.clone());
        self.root_ca = message.root_ca.clone();
        Ok(message)
    }

    fn end(&mut self, reason: EndReason) -> Item {
        self.done = true;
        Err(self
            .inner
            .ended_status(reason, &self.node_id, &self.session_id))
    }

    fn removed(&mut self) -> Item {
        self.inner
            .sessions()
            .close(&self.node_id, &self.session_id, EndReason::NodeRemoved);
        self.end(EndReason::NodeRemoved)
    }

    /// The next message, and the watcher to get the one after from.
    async fn next(mut self) -> Option<(Item, Self)> {
        if self.done {
            return None;
        }
        if std::mem::take(&mut self.first) {
            let first = self.message();
            return Some((first, self));
        }
        let item = loop {
            // Both are cancel-safe: the one that loses loses nothing.
            let woken = tokio::select! {
                biased;
                news = self.news.next() => Woken::News(news),
                news = self.route.inbox.next() => Woken::Node(news),
            };
            match woken {
                Woken::News(News::Ended(reason)) => break self.end(reason),
                Woken::News(News::ManagersChanged) => {
                    if Inner::managers(&self.inner.leadership.status()) == self.managers {
                        continue;
                    }
                    break self.message();
                }
                Woken::Node(SessionNews::Changed) => {
                    let node = self.inner.store.view(|tx| tx.get::<Node>(&self.node_id));
                    match node {
                        // A change already sent (the flag may outlive the message it caused),
                        // unless the roots to trust changed.
                        Some(node)
                            if Arc::ptr_eq(&node, &self.node)
                                && self.inner.trust_bundle() == self.root_ca =>
                        {
                            continue;
                        }
                        Some(node) => {
                            self.node = node;
                            break self.message();
                        }
                        None => break self.removed(),
                    }
                }
                Woken::Node(SessionNews::Closed) => {
                    self.done = true;
                    break Err(shutting_down());
                }
            }
        };
        Some((item, self))
    }
}

/// The stream of one session's messages: the first one, then one per change of the node or
/// of the manager list, until the session ends (the last item then says why).
///
/// Dropping it while its session is still current means the agent went away: tonic drops
/// the stream when the client resets it or the connection closes. The session then ends at
/// once and the node is written DISCONNECTED (see [`Sessions::hang_up`]). A stream dropped
/// after the dispatcher ended its session changes nothing.
pub struct SessionStream {
    stream: BoxStream<'static, Item>,
    inner: Arc<Inner>,
    node_id: String,
    session_id: String,
}

impl SessionStream {
    fn new(watcher: Watcher) -> Self {
        Self {
            inner: watcher.inner.clone(),
            node_id: watcher.node_id.clone(),
            session_id: watcher.session_id.clone(),
            stream: stream::unfold(watcher, Watcher::next).fuse().boxed(),
        }
    }
}

impl Stream for SessionStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        let hung_up = self
            .inner
            .sessions()
            .hang_up(&self.node_id, &self.session_id);
        if hung_up {
            tracing::info!(
                node_id = %self.node_id,
                "node {} closed its session {}",
                self.node_id,
                self.session_id
            );
            // Stores a permit if the sweep is busy: it looks as soon as it waits again.
            self.inner.hangups.notify_one();
        }
    }
}

// --- Assignments and task status: the shell -----------------------------------------------

/// Secrets and configs read from one store view.
struct StoreDependencies<'a, 'b>(&'a shoal_store::ReadTx<'b>);

impl Dependencies for StoreDependencies<'_, '_> {
    fn secret(&self, id: &str) -> Option<Arc<Secret>> {
        self.0.get::<Secret>(id)
    }

    fn config(&self, id: &str) -> Option<Arc<Config>> {
        self.0.get::<Config>(id)
    }
}

// --- Assignments: routing task events to the streams -------------------------------------

/// Task events an Assignments stream's inbox holds before the stream is told it lagged (and
/// reads its set again, sending it COMPLETE).
const INBOX_CAPACITY: usize = 16_384;
/// Events the router takes from the store's watch before routing them under one lock.
const ROUTE_CHUNK: usize = 1_024;
/// Events an Assignments stream applies in one store view, at most.
const APPLY_CHUNK: usize = 256;

/// What the router left for one Assignments stream.
#[derive(Default)]
struct InboxState {
    /// The task events of the stream's node (on it before or after), with the store version
    /// of their commit, in commit order.
    events: VecDeque<(u64, Event)>,
    /// Events were lost (the inbox overflowed, the router's watch lagged or the store was
    /// restored): the stream must read its set again. Nothing is queued while it is set.
    lagged: bool,
    /// No more events will come (the store closed, or the dispatcher stopped).
    closed: bool,
}

/// One Assignments stream's channel from the router: a queue and its wake-up. The router
/// never waits on it: a full inbox is emptied and marked lagged.
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    wake: Notify,
}

/// What a stream finds in its inbox.
enum Delivery {
    Events(VecDeque<(u64, Event)>),
    Lagged,
    Closed,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The router's side: queues one event.
    fn push(&self, version: u64, event: Event) {
        {
            let mut state = self.lock();
            if state.lagged || state.closed {
                return;
            }
            if state.events.len() >= INBOX_CAPACITY {
                state.events.clear();
                state.lagged = true;
            } else {
                state.events.push_back((version, event));
            }
        }
        // Stores a permit if the stream is busy: it looks as soon as it waits again.
        self.wake.notify_one();
    }

    /// Events were lost: the stream reads its set again.
    fn lag(&self) {
        {
            let mut state = self.lock();
            state.events.clear();
            state.lagged = true;
        }
        self.wake.notify_one();
    }

    fn close(&self) {
        {
            let mut state = self.lock();
            state.events.clear();
            state.closed = true;
        }
        self.wake.notify_one();
    }

    /// The stream's side: everything queued, or that it lagged (which it then no longer is:
    /// events queued from now on follow the set it reads next).
    fn take(&self) -> Delivery {
        let mut state = self.lock();
        if state.closed {
            Delivery::Closed
        } else if std::mem::take(&mut state.lagged) {
            state.events.clear();
            Delivery::Lagged
        } else {
            Delivery::Events(std::mem::take(&mut state.events))
        }
    }
}

/// The dispatcher's one watch on task events, and where each goes: the routes (inboxes) of
/// the Assignments streams open on this manager, by node. A task event goes to the streams
/// of the node the task is on after the change and, if it moved, of the node it was on: one
/// map lookup per event and node, whatever the number of streams.
#[derive(Default)]
struct Router {
    state: Mutex<RouterState>,
}

#[derive(Default)]
struct RouterState {
    routes: HashMap<String, Vec<(u64, Arc<Inbox>)>>,
    /// The session streams open on this manager, by node: told when their Node changes.
    sessions: HashMap<String, Vec<(u64, Arc<SessionInbox>)>>,
    next_id: u64,
    /// The routing task, once the first stream registered.
    task: Option<JoinHandle<()>>,
    /// No more routing (the store closed, or the dispatcher stopped): new routes are closed.
    stopped: bool,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a route for a stream of `node_id`, starting the routing task if it does not
    /// run yet. Every event committed after this call reaches the route: each task event of
    /// the node an Assignments inbox (some before it may too: the stream skips what its set
    /// already holds, by store version), each change of the node a session inbox (which the
    /// stream follows by reading the node after registering).
    ///
    /// Must be called from within a tokio runtime.
    fn register<I: Routed>(self: &Arc<Self>, store: &Store, node_id: &str) -> Route<I> {
        let inbox = Arc::new(I::default());
        let mut state = self.lock();
        if state.stopped {
            inbox.close();
        } else {
            self.start_routing(&mut state, store);
        }
        let id = state.next_id;
        state.next_id += 1;
        I::table(&mut state)
            .entry(node_id.to_string())
            .or_default()
            .push((id, inbox.clone()));
        Route {
            router: self.clone(),
            node_id: node_id.to_string(),
            id,
            inbox,
        }
    }

    /// Starts the routing task if it does not run yet. Subscribed here, under the router's
    /// lock and before the registering stream reads the store: nothing committed after the
    /// registration is missed.
    fn start_routing(self: &Arc<Self>, state: &mut RouterState, store: &Store) {
        if state.task.is_none() {
            let subscription = store.watch(router_filter());
            state.task = Some(tokio::spawn(run_router(
                Arc::downgrade(self),
                store.clone(),
                subscription,
            )));
        }
    }

    /// Routes events, in commit order: task events to the Assignments inboxes of the nodes
    /// concerned, node events to the session inboxes of that node.
    fn route(&self, events: Vec<(u64, Event)>) {
        let state = self.lock();
        fn node_of(o: &Object) -> Option<&str> {
            match o {
                Object::Task(t) if !t.node_id.is_empty() => Some(t.node_id.as_str()),
                _ => None,
            }
        }
        for (version, event) in &events {
            if let Object::Cluster(cluster) = &event.object {
                // The roots to trust changed (a root rotation started or ended): every
                // session stream sends its node a message with the new ones.
                let bundle = |c: &Cluster| {
                    c.root_ca
                        .as_ref()
                        .map(crate::root_rotation::trust_bundle)
                        .unwrap_or_default()
                };
                let old = match event.old.as_ref() {
                    Some(Object::Cluster(old)) => bundle(old),
                    _ => Vec::new(),
                };
                if bundle(cluster) != old {
                    for (_, inbox) in state.sessions.values().flatten() {
                        inbox.changed();
                    }
                }
                continue;
            }
            if let Object::Node(_) = &event.object {
                for (_, inbox) in state.sessions.get(event.object.id()).into_iter().flatten() {
                    inbox.changed();
                }
                continue;
            }
            let now_on = node_of(&event.object);
            let was_on = event.old.as_ref().and_then(node_of);
            let deliver = |node_id: Option<&str>| {
                if let Some(routes) = node_id.and_then(|n| state.routes.get(n)) {
                    for (_, inbox) in routes {
                        inbox.push(*version, event.clone());
                    }
                }
            };
            deliver(now_on);
            if was_on != now_on {
                deliver(was_on);
            }
        }
    }

    /// The router's watch missed events: every stream reads its set again.
    fn lag_all(&self) {
        let state = self.lock();
        for (_, inbox) in state.routes.values().flatten() {
            inbox.lag();
        }
        for (_, inbox) in state.sessions.values().flatten() {
            inbox.changed();
        }
    }

    /// Stops routing: every stream's inbox is closed (the stream ends, saying the manager is
    /// shutting down), new ones are closed at once, and the routing task is aborted.
    fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        if let Some(task) = state.task.take() {
            task.abort();
        }
        for (_, inbox) in state.routes.values().flatten() {
            inbox.close();
        }
        for (_, inbox) in state.sessions.values().flatten() {
            inbox.close();
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(task) = self.lock().task.take() {
            task.abort();
        }
    }
}

/// Task, node and cluster events: what the router watches (cluster events only for the
/// roots nodes must trust).
fn router_filter() -> Filter {
    Filter::all()
        .kind(ObjectKind::Task)
        .kind(ObjectKind::Node)
        .kind(ObjectKind::Cluster)
}

/// The routing task: takes task events from its watch and routes them, until the router is
/// gone (it holds it weakly) or the store closes. A watch that lagged or saw the store
/// restored is renewed first, then every stream is told to read its set again.
async fn run_router(router: Weak<Router>, store: Store, mut subscription: Subscription) {
    loop {
        let first = subscription.next().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let mut failed = None;
        match first {
            Ok(event) => {
                let mut events = vec![event];
                while events.len() < ROUTE_CHUNK {
                    match subscription.try_next() {
                        Ok(Some(event)) => events.push(event),
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                router.route(events);
            }
            Err(e) => failed = Some(e),
        }
        match failed {
            None => {}
            Some(WatchError::Lagged | WatchError::Reset) => {
                // Renewed before the streams look: each reads its set after this.
                subscription = store.watch(router_filter());
                tracing::info!(
                    "dispatcher: the assignments watch fell behind or the store was restored; \
                     every agent is sent its complete set again"
                );
                router.lag_all();
            }
            Some(WatchError::Closed) => {
                router.stop();
                return;
            }
        }
    }
}

/// What a stream's inbox is, for the router: where its routes are kept, and how it is closed.
trait Routed: Default + Send + Sync + 'static {
    fn table(state: &mut RouterState) -> &mut HashMap<String, Vec<(u64, Arc<Self>)>>;
    fn close(&self);
}

impl Routed for Inbox {
    fn table(state: &mut RouterState) -> &mut HashMap<String, Vec<(u64, Arc<Self>)>> {
        &mut state.routes
    }

    fn close(&self) {
        Inbox::close(self);
    }
}

impl Routed for SessionInbox {
    fn table(state: &mut RouterState) -> &mut HashMap<String, Vec<(u64, Arc<Self>)>> {
        &mut state.sessions
    }

    fn close(&self) {
        SessionInbox::close(self);
    }
}

/// One stream's registration with the router (an Assignments stream's [`Inbox`] or a session
/// stream's [`SessionInbox`]); unregisters when dropped.
struct Route<I: Routed> {
    router: Arc<Router>,
    node_id: String,
    id: u64,
    inbox: Arc<I>,
}

impl<I: Routed> Drop for Route<I> {
    fn drop(&mut self) {
        let mut state = self.router.lock();
        let table = I::table(&mut state);
        if let Some(routes) = table.get_mut(&self.node_id) {
            routes.retain(|(id, _)| *id != self.id);
            if routes.is_empty() {
                table.remove(&self.node_id);
            }
        }
    }
}

/// A session stream's channel from the router. It holds no events, only that the node
/// changed since the stream last looked (the stream then reads the node from the store,
/// which is at least as new as any change routed): changes in a row coalesce into one
/// message, and the router's work per node event is a flag and a wake-up.
#[derive(Default)]
struct SessionInbox {
    changed: AtomicBool,
    closed: AtomicBool,
    wake: Notify,
}

/// What a session stream finds in its inbox.
enum SessionNews {
    /// The node changed (or may have: the router's watch lagged) since the stream last looked.
    Changed,
    /// No more changes will come (the store closed, or the dispatcher stopped).
    Closed,
}

impl SessionInbox {
    fn changed(&self) {
        self.changed.store(true, Ordering::Release);
        // Stores a permit if the stream is busy: it looks as soon as it waits again.
        self.wake.notify_one();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Waits until the node changed or the inbox closed. Cancel-safe: the flags stay set
    /// until a call that completes takes them.
    async fn next(&self) -> SessionNews {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return SessionNews::Closed;
            }
            if self.changed.swap(false, Ordering::AcqRel) {
                return SessionNews::Changed;
            }
            self.wake.notified().await;
        }
    }
}

enum AssignmentWoken {
    News(News),
    Routed,
    Due,
}

type AssignmentItem = Result<AssignmentsMessage, Status>;

/// The state behind one Assignments stream.
struct AssignmentWatcher {
    inner: Arc<Inner>,
    node_id: String,
    session_id: String,
    news: Listener,
    route: Route<Inbox>,
    /// Events routed here and not applied yet, oldest first.
    backlog: VecDeque<(u64, Event)>,
    /// The store version the set was last read at: events of commits up to it are in it.
    floor: u64,
    set: AssignmentSet,
    versions: AssignmentVersions,
    /// The COMPLETE message, until sent.
    first: Option<AssignmentsMessage>,
    done: bool,
}

impl AssignmentWatcher {
    /// Reads the node's tasks in one view: the COMPLETE message's changes, and the store
    /// version they are as of. The stream's route must be registered before, so that every
    /// event after that version reaches it.
    fn read(inner: &Inner, node_id: &str, set: &mut AssignmentSet) -> (Vec<AssignmentChange>, u64) {
        inner.store.view(|tx| {
            let changes = set.complete(tx.find::<Task>(By::Node(node_id)), &StoreDependencies(tx));
            (changes, tx.version())
        })
    }

    fn end(&mut self, reason: EndReason) -> AssignmentItem {
        self.done = true;
        Err(self
            .inner
            .ended_status(reason, &self.node_id, &self.session_id))
    }

    /// Applies backlog events, in one store view, until the batch is full, the backlog is
    /// empty or `APPLY_CHUNK` events were applied.
    fn apply_backlog(&mut self, pending: &mut PendingAssignments) {
        let (set, backlog) = (&mut self.set, &mut self.backlog);
        self.inner.store.view(|tx| {
            let deps = StoreDependencies(tx);
            // Bounded, so that a long backlog of echoes does not hold the store's read lock
            // (and so its writers) for long: the caller comes back for the rest.
            for _ in 0..APPLY_CHUNK {
                if pending.is_full() {
                    break;
                }
                let Some((_, event)) = backlog.pop_front() else {
                    break;
                };
                let id = event.object.id().to_string();
                let task = match (event.action, event.object) {
                    (Action::Remove, _) => None,
                    (_, Object::Task(task)) => Some(task),
                    _ => continue,
                };
                for c in set.apply(&id, task, &deps) {
                    pending.push(c);
                }
            }
        });
    }

    /// The next message, and the watcher to get the one after from.
    async fn next(mut self) -> Option<(AssignmentItem, Self)> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        let mut pending = PendingAssignments::default();
        // When the batch begun must be sent at the latest.
        let mut due: Option<Instant> = None;
        let item = loop {
            if pending.is_full() {
                let changes = pending.take();
                break Ok(self
                    .versions
                    .message(assignments_message::Type::Incremental, changes));
            }
            if !self.backlog.is_empty() {
                self.apply_backlog(&mut pending);
                if !pending.is_empty() && due.is_none() {
                    due = Some(Instant::now() + ASSIGNMENT_BATCH_MAX_DELAY);
                }
                continue;
            }
            let woken = tokio::select! {
                biased;
                news = self.news.next() => AssignmentWoken::News(news),
                () = sleep_until_some(due) => AssignmentWoken::Due,
                () = self.route.inbox.wake.notified() => AssignmentWoken::Routed,
            };
            match woken {
                AssignmentWoken::News(News::Ended(reason)) => break self.end(reason),
                AssignmentWoken::News(News::ManagersChanged) => continue,
                AssignmentWoken::Due => {
                    if !pending.is_empty() {
                        let changes = pending.take();
                        break Ok(self
                            .versions
                            .message(assignments_message::Type::Incremental, changes));
                    }
                    due = None;
                }
                AssignmentWoken::Routed => match self.route.inbox.take() {
                    Delivery::Events(events) => {
                        let floor = self.floor;
                        self.backlog
                            .extend(events.into_iter().filter(|(v, _)| *v > floor));
                    }
                    Delivery::Lagged => {
                        // Missed changes: read the tasks again and send a new COMPLETE set.
                        self.backlog.clear();
                        let (changes, floor) =
                            Self::read(&self.inner, &self.node_id, &mut self.set);
                        self.floor = floor;
                        break Ok(self
                            .versions
                            .message(assignments_message::Type::Complete, changes));
                    }
                    Delivery::Closed => {
                        self.done = true;
                        break Err(shutting_down());
                    }
                },
            }
        };
        Some((item, self))
    }
}

/// Sleeps until `due`, or forever if there is none.
async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The stream of one node's assignments: a COMPLETE message, then INCREMENTAL ones, until the
/// session it was opened with ends (the last item then says why, as the session's stream).
pub struct AssignmentsStream {
    stream: BoxStream<'static, AssignmentItem>,
}

impl Stream for AssignmentsStream {
    type Item = AssignmentItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AssignmentItem>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl Inner {
    /// Refuses the call unless `session_id` is the caller's current session here; else the
    /// listener of the session's end.
    fn current_session(&self, node_id: &str, session_id: &str) -> Result<Listener, Status> {
        let now = self.clock.now();
        self.sessions()
            .listen(node_id, session_id, now)
            .map_err(|e| match e {
                SessionError::Stopped => shutting_down(),
                e => Status::not_found(format!(
                    "session {session_id} of node {node_id} is not current: {e}; open a new \
                     session"
                )),
            })
    }
}

// --- The background task ------------------------------------------------------------------

/// Ends every session and refuses new ones when dropped: the sweep task holds one, so that
/// its end, whatever the cause, ends the sessions it no longer expires.
struct StopSessions(Arc<Inner>);

impl Drop for StopSessions {
    fn drop(&mut self) {
        self.0.sessions().stop();
    }
}

/// The running sweep and status batcher of a [`Dispatcher`]. Stop them with
/// [`stop`](Self::stop); dropping it ends the sessions too, refuses the queued status reports,
/// and aborts both tasks without waiting for them.
pub struct DispatcherTask {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    /// `None` once [`stop`](Self::stop) has taken it.
    task: Option<JoinHandle<()>>,
    /// The status batcher; `None` once [`stop`](Self::stop) has taken it.
    statuses: Option<JoinHandle<()>>,
}

impl DispatcherTask {
    /// Stops the sweep and the status batcher and waits for them: every session and
    /// assignments stream ends (UNAVAILABLE, "shutting down"), new sessions, heartbeats and
    /// status reports are refused, queued reports are answered so, unwritten. Final: the dispatcher cannot be
    /// started again. The streams end at once; the sweep ends after at most one store batch
    /// in flight.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        self.inner.sessions().stop();
        self.inner.router.stop();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("the dispatcher's sweep panicked: {e}");
        }
        if let Some(task) = self.statuses.take()
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("the dispatcher's status batcher panicked: {e}");
        }
    }
}

impl Drop for DispatcherTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // At once, not when the runtime gets to the aborted task.
            self.inner.sessions().stop();
            self.inner.router.stop();
            task.abort();
        }
        if let Some(task) = self.statuses.take() {
            self.inner.status_queue().close();
            task.abort();
        }
    }
}

// --- The gRPC service ---------------------------------------------------------------------

#[tonic::async_trait]
impl dispatcher_server::Dispatcher for Dispatcher {
    type SessionStream = SessionStream;
    type AssignmentsStream = AssignmentsStream;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let inner = &self.inner;
        let caller = inner.caller(&request)?;
        let addr = shoal_tls::peer(&request)
            .and_then(|p| p.remote_addr)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let description = request.into_inner().description;
        inner.require_leader()?;
        let node_id = caller.node_id;
        if inner.store.view(|tx| tx.get::<Node>(&node_id)).is_none() {
            return Err(not_member(&node_id));
        }
        let now = inner.clock.now();
        let opened = {
            let mut sessions = inner.sessions();
            let opened = sessions.open(&node_id, now);
            inner.wake_sweep_if_earlier(&mut sessions);
            opened
        }
        .map_err(|e| match e {
            SessionError::TooOften => too_often(&node_id),
            _ => shutting_down(),
        })?;
        let written = inner
            .write_node(&node_id, |node| {
                let status = NodeStatus {
                    state: node_status::State::Ready as i32,
                    message: String::new(),
                    addr: addr.clone(),
                };
                let same_description = match &description {
                    Some(d) => node.description.as_deref() == Some(d),
                    None => true,
                };
                if node.status.as_ref() == Some(&status) && same_description {
                    // Already READY from this address with this description (a reconnect
                    // after a failover): nothing to write, no Raft commit.
                    return false;
                }
                node.status = Some(status);
                if let Some(d) = &description {
                    node.description = Some(Box::new(d.clone()));
                }
                true
            })
            .await;
        if let Err(e) = written {
            inner
                .sessions()
                .close(&node_id, &opened.id, EndReason::Abandoned);
            return Err(match e {
                StoreError::NotFound { .. } => not_member(&node_id),
                e if !inner.leadership.status().is_leader => {
                    tracing::debug!("marking node {node_id} READY failed: {e}");
                    inner.leadership.not_leader()
                }
                e => store_status(e),
            });
        }
        // Registered before the node is read: every change after the read reaches the stream.
        let route = inner.router.register(&inner.store, &node_id);
        let node = inner.store.view(|tx| tx.get::<Node>(&node_id));
        let Some(node) = node else {
            inner
                .sessions()
                .close(&node_id, &opened.id, EndReason::NodeRemoved);
            return Err(not_member(&node_id));
        };
        tracing::info!(
            node_id = %node_id,
            session_id = %opened.id,
            "node {node_id} opened session {} from {addr}",
            opened.id
        );
        Ok(Response::new(SessionStream::new(Watcher {
            inner: inner.clone(),
            node_id,
            session_id: opened.id,
            node,
            news: opened.news,
            route,
            first: true,
            managers: Vec::new(),
            root_ca: Vec::new(),
            done: false,
        })))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let inner = &self.inner;
        let caller = inner.caller(&request)?;
        let session_id = request.into_inner().session_id;
        inner.require_leader()?;
        inner.beat(&caller.node_id, &session_id).map(Response::new)
    }

    type HeartbeatStreamStream = BoxStream<'static, Result<HeartbeatResponse, Status>>;

    async fn heartbeat_stream(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStreamStream>, Status> {
        let inner = self.inner.clone();
        let caller = inner.caller(&request)?;
        inner.require_leader()?;
        let beats = HeartbeatBeats {
            inner,
            caller,
            incoming: request.into_inner(),
            session: None,
            done: false,
        };
        Ok(Response::new(Box::pin(stream::unfold(
            beats,
            HeartbeatBeats::next,
        ))))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let inner = &self.inner;
        let caller = inner.caller(&request)?;
        let UpdateTaskStatusRequest {
            session_id,
            updates,
        } = request.into_inner();
        inner.require_leader()?;
        let node_id = caller.node_id;
        inner.current_session(&node_id, &session_id)?;
        let updates = inner
            .store
            .view(|tx| check_status_updates(&node_id, updates, |id| tx.get::<Task>(id)))?;
        inner.submit_statuses(node_id, updates).await?;
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let inner = &self.inner;
        let caller = inner.caller(&request)?;
        let session_id = request.into_inner().session_id;
        inner.require_leader()?;
        let node_id = caller.node_id;
        let news = inner.current_session(&node_id, &session_id)?;
        // Registered before the set is read: every change after the read reaches the route.
        let route = inner.router.register(&inner.store, &node_id);
        let mut set = AssignmentSet::new(&node_id);
        let (changes, floor) = AssignmentWatcher::read(inner, &node_id, &mut set);
        let mut versions = AssignmentVersions::default();
        let first = versions.message(assignments_message::Type::Complete, changes);
        let watcher = AssignmentWatcher {
            inner: inner.clone(),
            node_id,
            session_id,
            news,
            route,
            backlog: VecDeque::new(),
            floor,
            set,
            versions,
            first: Some(first),
            done: false,
        };
        Ok(Response::new(AssignmentsStream {
            stream: stream::unfold(watcher, AssignmentWatcher::next)
                .fuse()
                .boxed(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use shoal_api::clock::ManualClock;
    use tokio::time::timeout;

    const PERIOD: Duration = HEARTBEAT_PERIOD;
    const MS: Duration = Duration::from_millis(1);

    fn t(clock: &ManualClock) -> SystemTime {
        clock.now()
    }

    // --- The state machine, on a driven clock ---

    #[test]
    fn a_session_that_heartbeats_stays() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let opened = s.open("n1", t(&clock)).unwrap();
        for _ in 0..20 {
            clock.advance(PERIOD);
            s.heartbeat("n1", &opened.id, t(&clock)).unwrap();
            assert!(s.expired(t(&clock)).is_empty());
        }
        assert!(s.is_current("n1", &opened.id));
        assert_eq!(opened.news.ended(), None);
    }

    #[test]
    fn a_silent_session_expires_after_three_periods_and_only_then() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let opened = s.open("n1", t(&clock)).unwrap();
        clock.advance(PERIOD * 3);
        assert!(s.expired(t(&clock)).is_empty(), "not before the deadline");
        assert_eq!(opened.news.ended(), None);
        clock.advance(MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
        assert_eq!(opened.news.ended(), Some(EndReason::Expired));
        assert!(s.expired(t(&clock)).is_empty(), "reported once");
        assert_eq!(
            s.heartbeat("n1", &opened.id, t(&clock)),
            Err(SessionError::NoSession)
        );
    }

    #[test]
    fn the_deadline_counts_from_the_last_heartbeat() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let opened = s.open("n1", t(&clock)).unwrap();
        clock.advance(PERIOD * 2);
        s.heartbeat("n1", &opened.id, t(&clock)).unwrap();
        clock.advance(PERIOD * 3);
        assert!(s.expired(t(&clock)).is_empty());
        clock.advance(MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
    }

    #[test]
    fn a_late_heartbeat_is_refused_and_the_sweep_still_expires_the_node() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let opened = s.open("n1", t(&clock)).unwrap();
        clock.advance(PERIOD * 3 + MS);
        assert_eq!(
            s.heartbeat("n1", &opened.id, t(&clock)),
            Err(SessionError::Expired)
        );
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
    }

    #[test]
    fn a_replaced_session_is_ended_and_its_heartbeats_refused() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let old = s.open("n1", t(&clock)).unwrap();
        clock.advance(PERIOD);
        let new = s.open("n1", t(&clock)).unwrap();
        assert_ne!(old.id, new.id);
        assert_eq!(old.news.ended(), Some(EndReason::Replaced));
        assert_eq!(new.news.ended(), None);
        assert_eq!(
            s.heartbeat("n1", &old.id, t(&clock)),
            Err(SessionError::Replaced)
        );
        s.heartbeat("n1", &new.id, t(&clock)).unwrap();
        // Closing the old session does not touch the new one.
        s.close("n1", &old.id, EndReason::NodeRemoved);
        assert!(s.is_current("n1", &new.id));
        assert_eq!(
            s.heartbeat("n2", &new.id, t(&clock)),
            Err(SessionError::NoSession)
        );
    }

    #[test]
    fn unknown_nodes_get_the_longer_grace_after_an_election() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        s.lead(7, ["n1".to_string(), "n2".to_string()], t(&clock));
        // n2 reconnects and then goes silent: the normal grace applies to it from then on.
        clock.advance(PERIOD);
        let n2 = s.open("n2", t(&clock)).unwrap();
        clock.advance(PERIOD * 3 + MS);
        assert_eq!(s.expired(t(&clock)), vec!["n2".to_string()]);
        assert_eq!(n2.news.ended(), Some(EndReason::Expired));
        // n1 never reconnects: it has 6 periods from the election, and only then expires.
        clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + PERIOD * 6);
        assert!(s.expired(t(&clock)).is_empty());
        clock.advance(MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
    }

    #[test]
    fn nodes_waiting_to_reconnect_after_an_election_are_not_expired_while_others_come_back() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let elected = t(&clock);
        let mut s = Sessions::new(PERIOD);
        let adopted: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
        s.lead(7, adopted.clone(), elected);
        // A storm: one node gets in every half period; n0 and n1 get in late, n3 never.
        let open = |s: &mut Sessions, id: &str, at: SystemTime| {
            let opened = s.open(id, at).unwrap();
            s.heartbeat(id, &opened.id, at).unwrap();
            opened
        };
        clock.advance(PERIOD * 6 + MS);
        let _n2 = open(&mut s, "n2", t(&clock));
        assert!(
            s.expired(t(&clock)).is_empty(),
            "past the usual grace, but sessions are being opened"
        );
        // The others keep their place a period at a time while sessions go on opening.
        for id in ["n0", "n1"] {
            clock.advance(PERIOD / 2);
            let _ = open(&mut s, id, t(&clock));
            assert!(s.expired(t(&clock)).is_empty());
        }
        // The storm is over: n3 expires within a period after the last session opened.
        clock.advance(PERIOD + PERIOD + MS);
        let expired = s.expired(t(&clock));
        assert!(expired.contains(&"n3".to_string()), "{expired:?}");
        assert!(!expired.contains(&"n0".to_string()), "{expired:?}");

        // However long sessions go on opening, an adopted node expires at the cap.
        let mut s = Sessions::new(PERIOD);
        clock.set(elected);
        s.lead(8, ["gone".to_string()], elected);
        let mut i = 0;
        let cap = elected + PERIOD * RECONNECT_GRACE_MULTIPLIER_MAX;
        let expired_at = loop {
            clock.advance(PERIOD / 2);
            i += 1;
            s.open(&format!("busy-{i}"), t(&clock)).unwrap();
            if s.expired(t(&clock)).contains(&"gone".to_string()) {
                break t(&clock);
            }
            assert!(i < 1_000, "never expired");
        };
        assert!(expired_at >= cap, "expired before the cap");
        assert!(expired_at <= cap + PERIOD * 2, "expired long after the cap");

        // A node that reconnected and then went silent gets the normal grace only; one whose
        // agent hung up (and is reconnecting again) waits as the adopted ones do.
        let mut s = Sessions::new(PERIOD);
        s.lead(9, ["back".to_string(), "again".to_string()], t(&clock));
        let _back = s.open("back", t(&clock)).unwrap();
        let again = s.open("again", t(&clock)).unwrap();
        assert!(s.hang_up("again", &again.id));
        clock.advance(PERIOD * 3 + MS);
        s.open("other", t(&clock)).unwrap();
        assert_eq!(s.expired(t(&clock)), vec!["back".to_string()]);
        clock.advance(PERIOD * 2);
        assert_eq!(s.expired(t(&clock)), vec!["again".to_string()]);
    }

    #[test]
    fn adopting_does_not_shorten_or_replace_a_live_session() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        s.lead(1, [], t(&clock));
        let opened = s.open("n1", t(&clock)).unwrap();
        s.adopt_unknown(["n1".to_string()], t(&clock));
        assert!(s.is_current("n1", &opened.id));
        s.lead(1, ["n1".to_string()], t(&clock));
        assert!(s.is_current("n1", &opened.id), "same term: nothing changes");
    }

    #[test]
    fn losing_or_changing_leadership_ends_every_session() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        s.lead(1, [], t(&clock));
        let a = s.open("a", t(&clock)).unwrap();
        s.lead(2, ["b".to_string()], t(&clock));
        assert_eq!(a.news.ended(), Some(EndReason::LeadershipLost));
        assert!(s.has("b") && !s.has("a"));
        assert_eq!(s.term(), Some(2));
        let c = s.open("c", t(&clock)).unwrap();
        s.step_down();
        assert_eq!(c.news.ended(), Some(EndReason::LeadershipLost));
        assert!(!s.has("b") && !s.has("c"));
        assert_eq!(s.term(), None);
    }

    #[test]
    fn a_stopped_state_machine_refuses_sessions() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let a = s.open("a", t(&clock)).unwrap();
        s.stop();
        assert_eq!(a.news.ended(), Some(EndReason::Stopped));
        assert!(matches!(s.open("a", t(&clock)), Err(SessionError::Stopped)));
        assert_eq!(
            s.heartbeat("a", &a.id, t(&clock)),
            Err(SessionError::Stopped)
        );
        s.lead(3, ["a".to_string()], t(&clock));
        assert_eq!(s.term(), None, "a stopped dispatcher never leads again");
    }

    #[test]
    fn a_new_period_applies_from_the_next_heartbeat() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let opened = s.open("n1", t(&clock)).unwrap();
        s.set_period(Duration::from_secs(1));
        s.heartbeat("n1", &opened.id, t(&clock)).unwrap();
        clock.advance(Duration::from_secs(3) + MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
    }

    #[test]
    fn a_failed_down_write_is_tried_again_next_round() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        s.open("n1", t(&clock)).unwrap();
        clock.advance(PERIOD * 3 + MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
        s.expire_again("n1", t(&clock));
        clock.advance(MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);
    }

    /// The deadline index holds exactly one entry per node, with the node's deadline.
    fn assert_index_in_step(s: &Sessions) {
        let expected: BTreeSet<(SystemTime, String)> = s
            .nodes
            .iter()
            .map(|(id, e)| (e.deadline, id.clone()))
            .collect();
        assert_eq!(s.deadlines, expected);
    }

    #[test]
    fn the_deadline_index_follows_every_change_and_gives_the_next_expiry() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let start = t(&clock);
        let mut s = Sessions::new(PERIOD);
        assert_eq!(s.next_deadline(), None);
        assert!(!s.take_earlier());
        let a = s.open("a", t(&clock)).unwrap();
        assert!(s.take_earlier(), "the first deadline is the earliest");
        assert_eq!(s.next_deadline(), Some(start + PERIOD * 3));
        clock.advance(PERIOD);
        let b = s.open("b", t(&clock)).unwrap();
        assert!(
            !s.take_earlier(),
            "a later deadline changes nothing for the sweep"
        );
        s.heartbeat("a", &a.id, t(&clock)).unwrap();
        assert_index_in_step(&s);
        // a beat last at start + PERIOD, as b opened: both expire at start + 4 periods.
        assert_eq!(s.next_deadline(), Some(start + PERIOD * 4));
        clock.advance(PERIOD);
        s.heartbeat("b", &b.id, t(&clock)).unwrap();
        assert_eq!(s.next_deadline(), Some(start + PERIOD * 4), "a's, now");
        // A shorter period brings a deadline earlier: the sweep is told.
        s.set_period(Duration::from_secs(1));
        s.heartbeat("b", &b.id, t(&clock)).unwrap();
        assert!(s.take_earlier());
        assert_eq!(s.next_deadline(), Some(t(&clock) + Duration::from_secs(3)));
        s.set_period(PERIOD);
        s.adopt_unknown(["c".to_string(), "a".to_string()], t(&clock));
        assert!(s.hang_up("b", &b.id), "a hang-up keeps the deadline");
        assert_index_in_step(&s);
        s.close("a", &a.id, EndReason::NodeRemoved);
        assert_index_in_step(&s);
        assert!(!s.has("a"));
        // Expiry visits the expired nodes only, earliest deadline first.
        clock.advance(Duration::from_secs(3) + MS);
        assert_eq!(s.expired(t(&clock)), vec!["b".to_string()]);
        assert_index_in_step(&s);
        s.expire_again("b", t(&clock) + MS);
        s.expire_again("d", t(&clock));
        assert_eq!(s.next_deadline(), Some(t(&clock)));
        clock.advance(MS);
        assert_eq!(s.expired(t(&clock)), vec!["d".to_string()]);
        clock.advance(PERIOD * 6);
        assert_eq!(s.expired(t(&clock)), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(s.next_deadline(), None);
        assert_index_in_step(&s);
        s.open("e", t(&clock)).unwrap();
        s.step_down();
        assert_eq!(s.next_deadline(), None);
        assert_index_in_step(&s);
    }

    #[test]
    fn the_jitter_stays_within_epsilon() {
        assert_eq!(jittered(PERIOD, 0), PERIOD - HEARTBEAT_EPSILON);
        let span = HEARTBEAT_EPSILON.as_nanos() as u64 * 2 + 1;
        assert_eq!(jittered(PERIOD, span - 1), PERIOD + HEARTBEAT_EPSILON);
        assert_eq!(jittered(PERIOD, span), PERIOD - HEARTBEAT_EPSILON);
        assert_eq!(jittered(PERIOD, span / 2), PERIOD);
        for random in [1, 12_345, u64::MAX / 3, u64::MAX] {
            let got = jittered(PERIOD, random);
            assert!(got >= PERIOD - HEARTBEAT_EPSILON && got <= PERIOD + HEARTBEAT_EPSILON);
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let got = jittered(PERIOD, random_u64());
            assert!(got >= PERIOD - HEARTBEAT_EPSILON && got <= PERIOD + HEARTBEAT_EPSILON);
            seen.insert(got);
        }
        assert!(
            seen.len() > 50,
            "the jitter is random: {} values",
            seen.len()
        );
        // A short period is moved by at most half of itself.
        let short = Duration::from_millis(400);
        assert_eq!(jittered(short, 0), Duration::from_millis(200));
        assert!(jittered(short, u64::MAX) <= Duration::from_millis(600));
        assert_eq!(jittered(Duration::ZERO, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn the_fourth_registration_within_the_period_is_refused() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let start = t(&clock);
        let first = s.open("n1", start).unwrap();
        clock.advance(Duration::from_secs(1));
        s.open("n1", t(&clock)).unwrap();
        clock.advance(Duration::from_secs(1));
        let third = s.open("n1", t(&clock)).unwrap();
        assert_eq!(first.news.ended(), Some(EndReason::Replaced));
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            s.open("n1", t(&clock)),
            Err(SessionError::TooOften)
        ));
        // The refusal changed nothing: the third session goes on, and others are not limited.
        assert!(s.is_current("n1", &third.id));
        assert_eq!(third.news.ended(), None);
        s.heartbeat("n1", &third.id, t(&clock)).unwrap();
        s.open("n2", t(&clock)).unwrap();
        // Refused attempts do not count; the first registration stops counting 8 s after it.
        clock.set(start + REGISTRATION_RATE_LIMIT_PERIOD - MS);
        assert!(matches!(
            s.open("n1", t(&clock)),
            Err(SessionError::TooOften)
        ));
        clock.advance(MS);
        let fourth = s.open("n1", t(&clock)).unwrap();
        assert_eq!(third.news.ended(), Some(EndReason::Replaced));
        assert!(matches!(
            s.open("n1", t(&clock)),
            Err(SessionError::TooOften)
        ));
        assert!(s.is_current("n1", &fourth.id));
        // The sweep forgets old registrations.
        clock.advance(REGISTRATION_RATE_LIMIT_PERIOD);
        s.expired(t(&clock));
        assert!(s.registrations.is_empty());
    }

    #[test]
    fn a_hung_up_session_ends_and_keeps_its_deadline() {
        let clock = ManualClock::at_unix_seconds(1_000);
        let mut s = Sessions::new(PERIOD);
        let opened = s.open("n1", t(&clock)).unwrap();
        clock.advance(PERIOD);
        s.heartbeat("n1", &opened.id, t(&clock)).unwrap();
        assert!(s.hang_up("n1", &opened.id));
        assert!(!s.hang_up("n1", &opened.id), "once");
        assert_eq!(opened.news.ended(), Some(EndReason::Hangup));
        assert_eq!(s.take_hung_up(), vec!["n1".to_string()]);
        assert!(s.take_hung_up().is_empty());
        assert!(!s.is_connected("n1") && s.has("n1"));
        assert_eq!(
            s.heartbeat("n1", &opened.id, t(&clock)),
            Err(SessionError::NoSession)
        );
        clock.advance(PERIOD * 3);
        assert!(s.expired(t(&clock)).is_empty());
        clock.advance(MS);
        assert_eq!(s.expired(t(&clock)), vec!["n1".to_string()]);

        // A session the dispatcher ended (here: replaced) is no hang-up; a new session after
        // a hang-up is connected again.
        let old = s.open("n2", t(&clock)).unwrap();
        let new = s.open("n2", t(&clock)).unwrap();
        assert!(!s.hang_up("n2", &old.id));
        assert!(s.take_hung_up().is_empty());
        assert!(s.hang_up("n2", &new.id));
        s.open("n2", t(&clock)).unwrap();
        assert!(s.is_connected("n2"));
        // Leadership changes forget pending hang-ups.
        s.step_down();
        assert!(s.take_hung_up().is_empty());
    }

    #[tokio::test]
    async fn the_signal_wakes_its_stream_once_per_change() {
        let (signal, mut news) = Signal::new();
        assert_eq!(news.next().now_or_never(), None);
        let waiting = tokio::spawn(async move { (news.next().await, news) });
        // Lets the spawned task run until it waits (this runtime has one thread).
        tokio::task::yield_now().await;
        signal.managers_changed();
        let (got, mut news) = timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting stream is woken")
            .unwrap();
        assert_eq!(got, News::ManagersChanged);
        assert_eq!(news.next().now_or_never(), None, "once per change");
        signal.managers_changed();
        signal.end(EndReason::Replaced);
        signal.end(EndReason::Expired);
        assert_eq!(
            news.next().now_or_never(),
            Some(News::Ended(EndReason::Replaced)),
            "the first reason, and the end wins over the change before it"
        );
    }

    // --- Assignments and task status: the decisions ---

    fn task_with(
        id: &str,
        node_id: &str,
        state: TaskState,
        secrets: &[&str],
        configs: &[&str],
    ) -> Task {
        let container = shoal_api::v1::ContainerSpec {
            secrets: secrets
                .iter()
                .map(|s| shoal_api::v1::SecretReference {
                    secret_id: s.to_string(),
                    secret_name: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            configs: configs
                .iter()
                .map(|c| shoal_api::v1::ConfigReference {
                    config_id: c.to_string(),
                    config_name: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(
                shoal_api::v1::TaskSpecFields {
                    runtime: Some(task_spec::Runtime::Container(Box::new(container))),
                    ..Default::default()
                }
                .into(),
            ),
            node_id: node_id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        }
    }

    /// Secrets and configs that exist: every ID but "missing".
    struct AllButMissing;

    impl Dependencies for AllButMissing {
        fn secret(&self, id: &str) -> Option<Arc<Secret>> {
            (id != "missing").then(|| {
                Arc::new(Secret {
                    meta: Some(Meta {
                        id: id.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
        }

        fn config(&self, id: &str) -> Option<Arc<Config>> {
            (id != "missing").then(|| {
                Arc::new(Config {
                    meta: Some(Meta {
                        id: id.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
        }
    }

    /// The changes as ("task"/"secret"/"config", id, "update"/"remove").
    fn summary(changes: &[AssignmentChange]) -> Vec<(&'static str, String, &'static str)> {
        changes
            .iter()
            .map(|c| {
                let action = if c.action == AssignmentAction::Remove as i32 {
                    "remove"
                } else {
                    "update"
                };
                match item_key(c).unwrap() {
                    ItemKey::Task(id) => ("task", id, action),
                    ItemKey::Secret(id) => ("secret", id, action),
                    ItemKey::Config(id) => ("config", id, action),
                }
            })
            .collect()
    }

    fn s(
        kind: &'static str,
        id: &str,
        action: &'static str,
    ) -> (&'static str, String, &'static str) {
        (kind, id.to_string(), action)
    }

    #[test]
    fn the_complete_set_holds_the_nodes_scheduled_tasks_and_what_running_ones_need() {
        let mut set = AssignmentSet::new("n1");
        let tasks = [
            task_with("t-assigned", "n1", TaskState::Assigned, &["s1"], &["c1"]),
            task_with("t-pending", "n1", TaskState::Pending, &["s-pending"], &[]),
            task_with("t-other", "n2", TaskState::Running, &["s-other"], &[]),
            task_with("t-failed", "n1", TaskState::Failed, &["s-failed"], &[]),
            task_with(
                "t-running",
                "n1",
                TaskState::Running,
                &["s1", "missing"],
                &[],
            ),
            task_with("t-unassigned", "", TaskState::Assigned, &[], &[]),
        ];
        let changes = set.complete(tasks.into_iter().map(Arc::new), &AllButMissing);
        assert_eq!(
            summary(&changes),
            vec![
                s("secret", "s1", "update"),
                s("config", "c1", "update"),
                s("task", "t-assigned", "update"),
                s("task", "t-failed", "update"),
                s("task", "t-running", "update"),
            ]
        );
        assert!(!in_assignment_set(
            &task_with("x", "", TaskState::Running, &[], &[]),
            ""
        ));
    }

    #[test]
    fn changes_to_the_set_are_sent_once_with_their_dependencies() {
        let mut set = AssignmentSet::new("n1");
        set.complete(Vec::new(), &AllButMissing);
        let t1 = task_with("t1", "n1", TaskState::Assigned, &["s1"], &["c1"]);
        // A new task brings its secret and config first.
        assert_eq!(
            summary(&set.apply("t1", Some(Arc::new(t1.clone())), &AllButMissing)),
            vec![
                s("secret", "s1", "update"),
                s("config", "c1", "update"),
                s("task", "t1", "update")
            ]
        );
        // The agent's own report (RUNNING) is not echoed back.
        let mut running = t1.clone();
        running.status.as_mut().unwrap().state = TaskState::Running as i32;
        assert!(
            set.apply("t1", Some(Arc::new(running.clone())), &AllButMissing)
                .is_empty()
        );
        // A change of the desired state is sent.
        let mut stopping = running.clone();
        stopping.desired_state = TaskState::Shutdown as i32;
        assert_eq!(
            summary(&set.apply("t1", Some(Arc::new(stopping.clone())), &AllButMissing)),
            vec![s("task", "t1", "update")]
        );
        // Once the task has stopped its secrets and configs go; the task stays.
        let mut stopped = stopping.clone();
        stopped.status.as_mut().unwrap().state = TaskState::Shutdown as i32;
        assert_eq!(
            summary(&set.apply("t1", Some(Arc::new(stopped)), &AllButMissing)),
            vec![s("secret", "s1", "remove"), s("config", "c1", "remove")]
        );
        // Tasks of other nodes, and removals of tasks never sent, change nothing.
        let other = task_with("t2", "n2", TaskState::Running, &["s2"], &[]);
        assert!(
            set.apply("t2", Some(Arc::new(other)), &AllButMissing)
                .is_empty()
        );
        assert!(set.apply("t2", None, &AllButMissing).is_empty());
        // A task moved to another node, or removed, is removed.
        let t3 = task_with("t3", "n1", TaskState::Assigned, &["s3"], &[]);
        set.apply("t3", Some(Arc::new(t3.clone())), &AllButMissing);
        let mut moved = t3.clone();
        moved.node_id = "n2".into();
        assert_eq!(
            summary(&set.apply("t3", Some(Arc::new(moved)), &AllButMissing)),
            vec![s("secret", "s3", "remove"), s("task", "t3", "remove")]
        );
        assert_eq!(
            summary(&set.apply("t1", None, &AllButMissing)),
            vec![s("task", "t1", "remove")]
        );
    }

    #[test]
    fn a_secret_shared_by_two_tasks_stays_while_one_needs_it() {
        let mut set = AssignmentSet::new("n1");
        let a = task_with("a", "n1", TaskState::Running, &["s"], &[]);
        let b = task_with("b", "n1", TaskState::Running, &["s"], &[]);
        let changes = set.complete([Arc::new(a), Arc::new(b)], &AllButMissing);
        assert_eq!(summary(&changes).len(), 3);
        assert_eq!(
            summary(&set.apply("a", None, &AllButMissing)),
            vec![s("task", "a", "remove")]
        );
        assert_eq!(
            summary(&set.apply("b", None, &AllButMissing)),
            vec![s("secret", "s", "remove"), s("task", "b", "remove")]
        );
    }

    /// Secrets and configs that exist: those named in the set.
    struct Existing(std::cell::RefCell<BTreeSet<String>>);

    impl Dependencies for Existing {
        fn secret(&self, id: &str) -> Option<Arc<Secret>> {
            AllButMissing
                .secret(id)
                .filter(|_| self.0.borrow().contains(id))
        }

        fn config(&self, id: &str) -> Option<Arc<Config>> {
            AllButMissing
                .config(id)
                .filter(|_| self.0.borrow().contains(id))
        }
    }

    #[test]
    fn dependencies_are_kept_incrementally_and_missing_ones_tried_again() {
        let deps = Existing(Default::default());
        let mut set = AssignmentSet::new("n1");
        set.complete(Vec::new(), &deps);
        let a = task_with("a", "n1", TaskState::Running, &["late"], &["c1"]);
        deps.0.borrow_mut().insert("c1".into());
        assert_eq!(
            summary(&set.apply("a", Some(Arc::new(a.clone())), &deps)),
            vec![s("config", "c1", "update"), s("task", "a", "update")],
            "a secret that does not exist is not sent"
        );
        // Once it exists, the next change of any task of the node brings it.
        deps.0.borrow_mut().insert("late".into());
        let b = task_with("b", "n1", TaskState::Assigned, &[], &["c1"]);
        assert_eq!(
            summary(&set.apply("b", Some(Arc::new(b.clone())), &deps)),
            vec![s("secret", "late", "update"), s("task", "b", "update")]
        );
        // A config two tasks need stays until neither does; a task that changes its
        // references swaps them.
        let mut a2 = a.clone();
        a2.spec = task_with("a", "n1", TaskState::Running, &["late"], &["c2"]).spec;
        a2.status.as_mut().unwrap().state = TaskState::Running as i32;
        deps.0.borrow_mut().insert("c2".into());
        assert_eq!(
            summary(&set.apply("a", Some(Arc::new(a2)), &deps)),
            vec![s("config", "c2", "update"), s("task", "a", "update")]
        );
        assert_eq!(
            summary(&set.apply("b", None, &deps)),
            vec![s("config", "c1", "remove"), s("task", "b", "remove")]
        );
        assert_eq!(
            summary(&set.apply("a", None, &deps)),
            vec![
                s("secret", "late", "remove"),
                s("config", "c2", "remove"),
                s("task", "a", "remove")
            ]
        );
        assert!(set.secret_refs.is_empty() && set.config_refs.is_empty());
        assert!(set.secrets.is_empty() && set.configs.is_empty());
    }

    #[test]
    fn an_inbox_that_overflows_lags_and_then_takes_events_again() {
        let inbox = Inbox::default();
        let event = |id: &str| Event {
            action: Action::Create,
            object: Object::Task(Arc::new(task_with(id, "n1", TaskState::Assigned, &[], &[]))),
            old: None,
        };
        inbox.push(1, event("a"));
        assert!(matches!(inbox.take(), Delivery::Events(e) if e.len() == 1));
        for v in 0..=INBOX_CAPACITY as u64 {
            inbox.push(v, event("a"));
        }
        assert!(matches!(inbox.take(), Delivery::Lagged));
        assert!(matches!(inbox.take(), Delivery::Events(e) if e.is_empty()));
        inbox.push(2, event("b"));
        assert!(matches!(inbox.take(), Delivery::Events(e) if e.len() == 1));
        inbox.lag();
        inbox.push(3, event("c"));
        assert!(
            matches!(inbox.take(), Delivery::Lagged),
            "nothing queued while lagged"
        );
        assert!(matches!(inbox.take(), Delivery::Events(e) if e.is_empty()));
        inbox.close();
        inbox.push(4, event("d"));
        assert!(matches!(inbox.take(), Delivery::Closed));
    }

    #[test]
    fn task_statuses_only_move_forward() {
        let status = |state: TaskState, message: &str| TaskStatus {
            state: state as i32,
            message: message.into(),
            ..Default::default()
        };
        let running = status(TaskState::Running, "started");
        assert!(accepts_status(None, &running));
        assert!(accepts_status(
            Some(&status(TaskState::Assigned, "")),
            &running
        ));
        assert!(!accepts_status(
            Some(&running),
            &status(TaskState::Starting, "")
        ));
        assert!(!accepts_status(Some(&running), &running), "nothing new");
        assert!(accepts_status(
            Some(&running),
            &status(TaskState::Running, "healthy")
        ));
        assert!(!accepts_status(
            Some(&status(TaskState::Failed, "")),
            &running
        ));
    }

    #[test]
    fn assignment_batches_merge_changes_and_fill_up() {
        let mut pending = PendingAssignments::default();
        let t = |id: &str, action| {
            change(
                assignment::Item::Task(task_with(id, "n1", TaskState::Assigned, &[], &[])),
                action,
            )
        };
        pending.push(t("a", AssignmentAction::Update));
        pending.push(t("b", AssignmentAction::Update));
        pending.push(t("a", AssignmentAction::Remove));
        assert_eq!(
            summary(&pending.take()),
            vec![s("task", "a", "remove"), s("task", "b", "update")]
        );
        assert!(pending.is_empty());
        for i in 0..ASSIGNMENT_BATCH_MAX_CHANGES {
            assert!(!pending.is_full());
            pending.push(t(&i.to_string(), AssignmentAction::Update));
        }
        assert!(pending.is_full());
        assert_eq!(pending.take().len(), ASSIGNMENT_BATCH_MAX_CHANGES);
    }

    #[test]
    fn assignment_messages_chain_their_versions() {
        let mut v = AssignmentVersions::default();
        let m1 = v.message(assignments_message::Type::Complete, Vec::new());
        let m2 = v.message(assignments_message::Type::Incremental, Vec::new());
        let m3 = v.message(assignments_message::Type::Incremental, Vec::new());
        assert_eq!((m1.applies_to.as_str(), m1.results_in.as_str()), ("", "1"));
        assert_eq!((m2.applies_to.as_str(), m2.results_in.as_str()), ("1", "2"));
        assert_eq!((m3.applies_to.as_str(), m3.results_in.as_str()), ("2", "3"));
    }

    fn status_call(items: usize) -> (StatusCall, oneshot::Receiver<Result<(), Status>>) {
        let (answer, answered) = oneshot::channel();
        let call = StatusCall {
            node_id: "n1".into(),
            updates: vec![("t".into(), TaskStatus::default()); items],
            answer,
        };
        (call, answered)
    }

    #[test]
    fn status_batches_are_due_after_the_delay_or_when_full_and_never_split_a_call() {
        let start = Instant::now();
        let mut queue = StatusQueue::default();
        // No batcher: the caller writes itself.
        assert!(queue.push(status_call(1).0, start).is_err());
        queue.running = true;
        queue.push(status_call(2).0, start).map_err(|_| ()).unwrap();
        queue
            .push(status_call(3).0, start + 50 * MS)
            .map_err(|_| ())
            .unwrap();
        assert_eq!(queue.due(), Some(start + TASK_STATUS_BATCH_MAX_DELAY));
        assert!(!queue.ready(start + TASK_STATUS_BATCH_MAX_DELAY - MS));
        assert!(queue.ready(start + TASK_STATUS_BATCH_MAX_DELAY));
        let batch = queue.take(start + TASK_STATUS_BATCH_MAX_DELAY);
        assert_eq!(batch.len(), 2);
        assert_eq!(queue.due(), None);

        // Full: due at once; a call that would overflow the batch waits for the next one.
        let half = TASK_STATUS_BATCH_MAX_ITEMS / 2 + 1;
        queue
            .push(status_call(half).0, start)
            .map_err(|_| ())
            .unwrap();
        assert!(!queue.ready(start));
        queue
            .push(status_call(half).0, start)
            .map_err(|_| ())
            .unwrap();
        assert!(queue.ready(start));
        let later = start + 10 * MS;
        assert_eq!(queue.take(later).len(), 1);
        assert_eq!(queue.due(), Some(later + TASK_STATUS_BATCH_MAX_DELAY));
        assert_eq!(queue.take(later).len(), 1);

        // Closing drops the waiting calls (their callers hear of it) and refuses new ones.
        let (call, mut answered) = status_call(1);
        queue.push(call, start).map_err(|_| ()).unwrap();
        queue.close();
        assert!(answered.try_recv().is_err());
        assert!(queue.push(status_call(1).0, start).is_err());
    }

    #[test]
    fn status_updates_for_other_nodes_tasks_refuse_the_call() {
        let stored = |id: &str| -> Option<Arc<Task>> {
            match id {
                "mine" => Some(Arc::new(task_with(
                    "mine",
                    "n1",
                    TaskState::Running,
                    &[],
                    &[],
                ))),
                "theirs" => Some(Arc::new(task_with(
                    "theirs",
                    "n2",
                    TaskState::Running,
                    &[],
                    &[],
                ))),
                _ => None,
            }
        };
        let update = |id: &str| update_task_status_request::TaskStatusUpdate {
            task_id: id.into(),
            status: Some(TaskStatus::default()),
        };
        let ok = check_status_updates("n1", vec![update("mine"), update("gone")], stored).unwrap();
        assert_eq!(
            ok.len(),
            1,
            "updates of tasks no longer in the store are dropped"
        );
        let err =
            check_status_updates("n1", vec![update("mine"), update("theirs")], stored).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("theirs"));
        let err = check_status_updates(
            "n1",
            vec![update_task_status_request::TaskStatusUpdate {
                task_id: "mine".into(),
                status: None,
            }],
            stored,
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let many = (0..=TASK_STATUS_BATCH_MAX_ITEMS)
            .map(|_| update("mine"))
            .collect();
        let err = check_status_updates("n1", many, stored).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    // --- The handlers, on a real store and authorizer, with Raft's status stood in for ---

    /// Raft status set by the test, watched as the real one is. (A real single-node Raft
    /// cannot be started from this crate's tests: its transport trait names types of the
    /// `raft` crate, which this crate does not depend on.)
    struct FakeRaft(watch::Sender<RaftStatus>);

    impl Leadership for FakeRaft {
        fn status(&self) -> RaftStatus {
            self.0.borrow().clone()
        }

        fn watch(&self) -> watch::Receiver<RaftStatus> {
            self.0.subscribe()
        }

        fn not_leader(&self) -> Status {
            Status::failed_precondition("this manager is not the leader; the leader is at 2")
        }
    }

    impl FakeRaft {
        fn set(&self, f: impl FnOnce(&mut RaftStatus)) {
            self.0.send_modify(f);
        }
    }

    fn member(raft_id: u64, addr: &str) -> RaftMember {
        RaftMember {
            raft_id,
            node_id: format!("manager-{raft_id}"),
            addr: addr.into(),
        }
    }

    struct Fixture {
        dispatcher: Dispatcher,
        store: Store,
        clock: Arc<ManualClock>,
        raft: Arc<FakeRaft>,
        cluster: Cluster,
        /// A worker node in the store (status UNKNOWN).
        node_id: String,
    }

    fn new_node(id: &str, state: node_status::State) -> Node {
        Node {
            meta: Some(shoal_api::v1::Meta {
                id: id.into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn fixture() -> Fixture {
        let store = Store::new();
        let cluster = crate::cluster::new_cluster(SystemTime::now()).unwrap();
        let node_id = shoal_api::id::new_id();
        store
            .update(|tx| {
                tx.create(cluster.clone())?;
                tx.create(new_node(&node_id, node_status::State::Unknown))
            })
            .await
            .unwrap();
        let raft = Arc::new(FakeRaft(watch::Sender::new(RaftStatus {
            id: 1,
            leader: Some(1),
            term: 1,
            is_leader: true,
            members: [(1, member(1, "10.0.0.1:4242"))].into(),
            reachable: 1,
            voters: 1,
            ..Default::default()
        })));
        let clock = Arc::new(ManualClock::at_unix_seconds(1_000_000));
        let cluster_id = cluster.meta.as_ref().unwrap().id.clone();
        let dispatcher = Dispatcher::with_leadership(
            store.clone(),
            raft.clone(),
            Authorizer::new(store.clone(), cluster_id),
            clock.clone(),
        );
        Fixture {
            dispatcher,
            store,
            clock,
            raft,
            cluster,
            node_id,
        }
    }

    impl Fixture {
        fn request<T>(&self, message: T, node_id: &str) -> Request<T> {
            let mut request = Request::new(message);
            request.extensions_mut().insert(shoal_tls::PeerInfo {
                remote_addr: Some("10.0.0.7:51234".parse().unwrap()),
                identity: Some(NodeIdentity {
                    node_id: node_id.into(),
                    role: shoal_api::v1::NodeRole::Worker,
                    cluster_id: self.cluster.meta.as_ref().unwrap().id.clone(),
                    not_before: SystemTime::UNIX_EPOCH,
                    not_after: SystemTime::now() + Duration::from_secs(3600),
                }),
            });
            request
        }

        /// Serves the dispatcher over gRPC on loopback, every call made as this fixture's node
        /// (an interceptor stands in for the TLS listener, which tells the handlers who
        /// calls). Returns the address, the sender that stops the server, and its task.
        fn serve(
            &self,
        ) -> (
            std::net::SocketAddr,
            oneshot::Sender<()>,
            JoinHandle<Result<(), tonic::transport::Error>>,
        ) {
            let peer = self
                .request((), &self.node_id)
                .extensions()
                .get::<shoal_tls::PeerInfo>()
                .cloned()
                .unwrap();
            let service = dispatcher_server::DispatcherServer::with_interceptor(
                self.dispatcher.clone(),
                move |mut request: Request<()>| {
                    request.extensions_mut().insert(peer.clone());
                    Ok(request)
                },
            );
            let incoming =
                tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
                    .unwrap();
            let addr = incoming.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    }),
            );
            (addr, stop, server)
        }

        async fn open(&self) -> Result<SessionStream, Status> {
            let description = shoal_api::v1::NodeDescription {
                hostname: "worker-1".into(),
                ..Default::default()
            };
            let request = self.request(
                SessionRequest {
                    description: Some(description),
                    session_id: String::new(),
                },
                &self.node_id,
            );
            dispatcher_server::Dispatcher::session(&self.dispatcher, request)
                .await
                .map(Response::into_inner)
        }

        async fn heartbeat(&self, session_id: &str) -> Result<Duration, Status> {
            let request = self.request(
                HeartbeatRequest {
                    session_id: session_id.into(),
                },
                &self.node_id,
            );
            dispatcher_server::Dispatcher::heartbeat(&self.dispatcher, request)
                .await
                .map(|r| shoal_api::validation::to_std_duration(&r.into_inner().period.unwrap()))
        }

        fn stored(&self, id: &str) -> Arc<Node> {
            self.store.view(|tx| tx.get::<Node>(id)).unwrap()
        }

        fn state(&self, id: &str) -> (i32, String) {
            let status = self.stored(id).status.clone().unwrap_or_default();
            (status.state, status.message)
        }

        async fn set_period(&self, period: Duration) {
            let cluster_id = self.cluster.meta.as_ref().unwrap().id.clone();
            self.store
                .update(|tx| {
                    let mut c = (*tx.get::<Cluster>(&cluster_id).unwrap()).clone();
                    c.spec
                        .as_mut()
                        .unwrap()
                        .dispatcher
                        .as_mut()
                        .unwrap()
                        .heartbeat_period = Some(proto_duration(period));
                    tx.update(c)
                })
                .await
                .unwrap();
        }

        /// Waits until the sweep has completed `rounds` rounds since it started.
        async fn swept(&self, rounds: u64) {
            let mut done = self.dispatcher.inner.rounds.subscribe();
            timeout(Duration::from_secs(10), done.wait_for(|n| *n >= rounds))
                .await
                .expect("timed out waiting for the sweep")
                .unwrap();
        }

        /// Waits for a whole sweep round begun after this call: it saw everything before it.
        async fn full_round(&self) {
            let rounds = *self.dispatcher.inner.rounds.borrow();
            // The round under way may have begun before; the one after it has not.
            self.swept(rounds + 2).await;
        }

        async fn update(
            &self,
            f: impl FnOnce(&mut shoal_store::WriteTx<'_>) -> shoal_store::Result<()>,
        ) {
            self.store.update(f).await.unwrap();
        }
    }

    async fn next(stream: &mut SessionStream) -> Option<Item> {
        timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("timed out waiting for the session stream")
    }

    /// Nothing comes on the stream for a while.
    async fn quiet(stream: &mut SessionStream) {
        let got = timeout(Duration::from_millis(50), stream.next()).await;
        assert!(got.is_err(), "unexpected stream item: {got:?}");
    }

    /// Waits, within bounds, until `f` holds.
    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    const READY: i32 = node_status::State::Ready as i32;
    const DOWN: i32 = node_status::State::Down as i32;
    /// A sweep interval no test waits out: after its first round, the sweep acts only on
    /// what the Raft status watch tells it.
    const NEVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_session_marks_the_node_ready_and_streams_its_changes() {
        let f = fixture().await;
        let mut stream = f.open().await.unwrap();
        let first = next(&mut stream).await.unwrap().unwrap();
        assert!(!first.session_id.is_empty());
        let node = first.node.unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.state, READY);
        assert_eq!(status.addr, "10.0.0.7");
        assert!(status.message.is_empty());
        assert_eq!(node.description.unwrap().hostname, "worker-1");
        assert_eq!(
            first.managers,
            vec![WeightedPeer {
                node_id: "manager-1".into(),
                addr: "10.0.0.1:4242".into(),
                weight: 10,
            }]
        );
        assert_eq!(
            first.root_ca,
            f.cluster.root_ca.as_ref().unwrap().ca_cert.clone()
        );
        assert_eq!(f.state(&f.node_id).0, READY);
        quiet(&mut stream).await;

        // A change of the node in the store: a new message on the same session.
        let id = f.node_id.clone();
        f.update(|tx| {
            let mut n = (*tx.get::<Node>(&id).unwrap()).clone();
            n.spec.get_or_insert_with(Default::default).availability =
                shoal_api::v1::node_spec::Availability::Drain as i32;
            tx.update(n)
        })
        .await;
        let update = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(update.session_id, first.session_id);
        assert_eq!(
            update.node.unwrap().spec.unwrap().availability,
            shoal_api::v1::node_spec::Availability::Drain as i32
        );

        // Another node's change is not this session's business.
        let other = shoal_api::id::new_id();
        f.update(|tx| tx.create(new_node(&other, node_status::State::Unknown)))
            .await;
        quiet(&mut stream).await;

        let within = |got: Duration, period: Duration| {
            got >= period - HEARTBEAT_EPSILON && got <= period + HEARTBEAT_EPSILON
        };
        let period = f.heartbeat(&first.session_id).await.unwrap();
        assert!(within(period, PERIOD), "{period:?}");
        f.set_period(Duration::from_secs(2)).await;
        let period = f.heartbeat(&first.session_id).await.unwrap();
        assert!(within(period, Duration::from_secs(2)), "{period:?}");
    }

    #[tokio::test]
    async fn sessions_hear_of_the_roots_to_trust_when_a_root_rotation_starts_and_ends() {
        let f = fixture().await;
        let mut stream = f.open().await.unwrap();
        let first = next(&mut stream).await.unwrap().unwrap();
        let old = f.cluster.root_ca.as_ref().unwrap().ca_cert.clone();
        assert_eq!(first.root_ca, old);
        let cluster_id = f.cluster.meta.as_ref().unwrap().id.clone();
        // The rotation starts: old root, then new.
        let id = cluster_id.clone();
        f.update(|tx| {
            let mut c = (*tx.get::<Cluster>(&id).unwrap()).clone();
            crate::root_rotation::start(
                c.root_ca.as_mut().unwrap(),
                1,
                SystemTime::now(),
                Duration::from_secs(86400),
            )
            .unwrap();
            tx.update(c)
        })
        .await;
        let during = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(during.session_id, first.session_id);
        let rotation = f
            .store
            .view(|tx| tx.get::<Cluster>(&cluster_id))
            .unwrap()
            .root_ca
            .clone()
            .unwrap();
        let bundle = crate::root_rotation::trust_bundle(&rotation);
        assert!(bundle.starts_with(&old) && bundle.len() > old.len());
        assert_eq!(during.root_ca, bundle);
        // A change of the cluster that leaves the roots alone says nothing.
        f.set_period(Duration::from_secs(3)).await;
        quiet(&mut stream).await;
        // It completes: the new root alone.
        let id = cluster_id.clone();
        f.update(|tx| {
            let mut c = (*tx.get::<Cluster>(&id).unwrap()).clone();
            crate::root_rotation::complete(c.root_ca.as_mut().unwrap()).unwrap();
            tx.update(c)
        })
        .await;
        let after = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(
            after.root_ca,
            rotation.root_rotation.as_ref().unwrap().ca_cert
        );
        quiet(&mut stream).await;
    }

    #[tokio::test]
    async fn the_heartbeat_period_is_jittered_and_the_deadline_is_not() {
        let f = fixture().await;
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        let mut told = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let period = f.heartbeat(&session).await.unwrap();
            assert!(
                period >= PERIOD - HEARTBEAT_EPSILON && period <= PERIOD + HEARTBEAT_EPSILON,
                "{period:?}"
            );
            told.insert(period);
        }
        assert!(told.len() > 1, "the agents are told different periods");
        // The deadline is three exact periods from the last heartbeat, whatever was told.
        let inner = &f.dispatcher.inner;
        f.clock.advance(PERIOD * 3);
        assert!(inner.sessions().expired(f.clock.now()).is_empty());
        f.clock.advance(MS);
        assert_eq!(
            inner.sessions().expired(f.clock.now()),
            vec![f.node_id.clone()]
        );
    }

    #[tokio::test]
    async fn a_node_re_registering_too_often_is_told_to_back_off() {
        let f = fixture().await;
        let mut current = None;
        for _ in 0..REGISTRATION_RATE_LIMIT_COUNT {
            let mut stream = f.open().await.unwrap();
            let session = next(&mut stream).await.unwrap().unwrap().session_id;
            current = Some((stream, session));
            f.clock.advance(Duration::from_secs(1));
        }
        let (mut stream, session) = current.unwrap();
        let refused = f.open().await.err().unwrap();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused.message().contains(&format!(
                "node {} is re-registering too often; backing off",
                f.node_id
            )),
            "{}",
            refused.message()
        );
        // Nothing changed: the current session goes on.
        f.heartbeat(&session).await.unwrap();
        quiet(&mut stream).await;
        assert_eq!(f.state(&f.node_id).0, READY);
        // Eight seconds after the first registration, it counts no more.
        f.clock
            .advance(REGISTRATION_RATE_LIMIT_PERIOD - Duration::from_secs(3));
        let mut again = f.open().await.unwrap();
        let new_session = next(&mut again).await.unwrap().unwrap().session_id;
        let ended = next(&mut stream).await.unwrap().unwrap_err();
        assert!(ended.message().contains("replaced"), "{}", ended.message());
        f.heartbeat(&new_session).await.unwrap();
    }

    const DISCONNECTED: i32 = node_status::State::Disconnected as i32;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_closes_its_session_is_disconnected_at_once() {
        let f = fixture().await;
        // No round to come: only the hang-up can wake the sweep.
        let task = f.dispatcher.start_with_interval(NEVER);
        f.swept(1).await;
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        assert_eq!(f.state(&f.node_id).0, READY);
        drop(stream);
        wait_until("the node is written DISCONNECTED", || {
            f.state(&f.node_id) == (DISCONNECTED, SESSION_CLOSED.to_string())
        })
        .await;
        assert_eq!(
            f.heartbeat(&session).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        // It comes back: READY again, and a stream dropped after the dispatcher ended its
        // session (here: replaced) changes nothing.
        let mut again = f.open().await.unwrap();
        next(&mut again).await.unwrap().unwrap();
        assert_eq!(f.state(&f.node_id).0, READY);
        let mut newest = f.open().await.unwrap();
        next(&mut newest).await.unwrap().unwrap();
        next(&mut again).await.unwrap().unwrap_err();
        drop(again);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(f.state(&f.node_id).0, READY);
        assert!(f.dispatcher.inner.sessions().take_hung_up().is_empty());
        task.stop().await;
        // Streams dropped after the dispatcher stopped change nothing either.
        drop(newest);
        assert_eq!(f.state(&f.node_id).0, READY);
    }

    /// Over a real HTTP/2 connection: the agent dropping its stream (the client resets it)
    /// makes tonic drop ours, and the node is DISCONNECTED at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_dropped_by_a_grpc_client_is_seen_at_once() {
        let f = fixture().await;
        let task = f.dispatcher.start_with_interval(NEVER);
        f.swept(1).await;
        let (addr, stop_server, server) = f.serve();
        let mut client =
            shoal_api::v1::dispatcher_client::DispatcherClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        for _ in 0..2 {
            let mut stream = client
                .session(SessionRequest::default())
                .await
                .unwrap()
                .into_inner();
            let first = timeout(Duration::from_secs(10), stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(!first.session_id.is_empty());
            assert_eq!(f.state(&f.node_id).0, READY);
            // The connection stays; only the stream goes.
            drop(stream);
            wait_until("the node is written DISCONNECTED", || {
                f.state(&f.node_id) == (DISCONNECTED, SESSION_CLOSED.to_string())
            })
            .await;
        }
        drop(client);
        task.stop().await;
        let _ = stop_server.send(());
        timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Heartbeats as messages on one stream: each is answered with the period; a beat naming
    /// another session is refused and ends the stream; the stream ends when its session does
    /// (here: replaced by a newer one), and when the dispatcher stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_on_a_stream_follow_their_session() {
        let f = fixture().await;
        let task = f.dispatcher.start_with_interval(NEVER);
        f.swept(1).await;
        let (addr, _stop_server, server) = f.serve();
        let mut client =
            shoal_api::v1::dispatcher_client::DispatcherClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        let open_session =
            async |client: &mut shoal_api::v1::dispatcher_client::DispatcherClient<
                tonic::transport::Channel,
            >| {
                let mut stream = client
                    .session(SessionRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                let first = timeout(Duration::from_secs(10), stream.message())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                (stream, first.session_id)
            };
        let open_beats = async |client: &mut shoal_api::v1::dispatcher_client::DispatcherClient<
            tonic::transport::Channel,
        >| {
            let (beats, requests) = tokio::sync::mpsc::channel::<HeartbeatRequest>(4);
            let answers = client
                .heartbeat_stream(futures_util::stream::unfold(requests, |mut r| async {
                    r.recv().await.map(|m| (m, r))
                }))
                .await
                .unwrap()
                .into_inner();
            (beats, answers)
        };
        let beat = |id: &str| HeartbeatRequest {
            session_id: id.into(),
        };

        let (_session, id) = open_session(&mut client).await;
        let (beats, mut answers) = open_beats(&mut client).await;
        for _ in 0..3 {
            let before = f.dispatcher.inner.sessions().nodes[&f.node_id].deadline;
            f.clock.advance(Duration::from_secs(1));
            beats.send(beat(&id)).await.unwrap();
            let answer = timeout(Duration::from_secs(10), answers.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(answer.period.is_some());
            let after = f.dispatcher.inner.sessions().nodes[&f.node_id].deadline;
            assert!(after > before, "the beat moved the deadline");
        }
        // Another session's beat on this stream: refused, and the stream ends.
        beats.send(beat("someone-else")).await.unwrap();
        let refused = timeout(Duration::from_secs(10), answers.message())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);

        // A stream whose session is replaced ends, saying so, without a beat being sent.
        let (beats, mut answers) = open_beats(&mut client).await;
        beats.send(beat(&id)).await.unwrap();
        timeout(Duration::from_secs(10), answers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (_newer, newer_id) = open_session(&mut client).await;
        let ended = timeout(Duration::from_secs(10), answers.message())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(ended.code(), tonic::Code::NotFound);
        assert!(ended.message().contains("Replaced"), "{}", ended.message());

        // The dispatcher stopping ends a stream too.
        let (beats, mut answers) = open_beats(&mut client).await;
        beats.send(beat(&newer_id)).await.unwrap();
        timeout(Duration::from_secs(10), answers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        task.stop().await;
        let stopped = timeout(Duration::from_secs(10), answers.message())
            .await
            .unwrap();
        assert!(stopped.is_err(), "{stopped:?}");
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_closed_its_session_goes_down_at_its_deadline() {
        let f = fixture().await;
        let task = f.dispatcher.start_with_interval(Duration::from_millis(2));
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        f.clock.advance(PERIOD * 2);
        f.heartbeat(&session).await.unwrap();
        drop(stream);
        wait_until("the node is written DISCONNECTED", || {
            f.state(&f.node_id).0 == DISCONNECTED
        })
        .await;
        f.clock.advance(PERIOD * 3);
        f.full_round().await;
        assert_eq!(
            f.state(&f.node_id),
            (DISCONNECTED, SESSION_CLOSED.to_string()),
            "still within its grace"
        );
        f.clock.advance(MS);
        f.full_round().await;
        assert_eq!(f.state(&f.node_id), (DOWN, HEARTBEAT_FAILURE.to_string()));
        task.stop().await;
    }

    #[tokio::test]
    async fn a_new_session_replaces_the_old_one() {
        let f = fixture().await;
        let mut old = f.open().await.unwrap();
        let old_id = next(&mut old).await.unwrap().unwrap().session_id;
        let mut new = f.open().await.unwrap();
        let new_id = next(&mut new).await.unwrap().unwrap().session_id;
        assert_ne!(old_id, new_id);
        let ended = next(&mut old).await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Aborted);
        assert!(ended.message().contains("replaced"), "{}", ended.message());
        assert!(
            next(&mut old).await.is_none(),
            "the stream ends after saying why"
        );
        assert!(next(&mut old).await.is_none(), "and stays ended");
        let refused = f.heartbeat(&old_id).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
        assert!(
            refused.message().contains("open a new session"),
            "{}",
            refused.message()
        );
        f.heartbeat(&new_id).await.unwrap();
    }

    #[tokio::test]
    async fn reopening_a_session_of_a_ready_node_writes_nothing() {
        let f = fixture().await;
        let mut first = f.open().await.unwrap();
        next(&mut first).await.unwrap().unwrap();
        let version = || f.store.view(|tx| tx.version());
        let before = version();
        let node_before = f.stored(&f.node_id);

        // The same node, address and description again (an agent following a new leader):
        // no store write, yet a working session with the node as stored.
        let mut second = f.open().await.unwrap();
        let message = next(&mut second).await.unwrap().unwrap();
        assert_eq!(version(), before, "a no-op READY write was committed");
        assert_eq!(message.node.as_ref(), Some(&*node_before));
        f.heartbeat(&message.session_id).await.unwrap();

        // Its stream still follows the node's changes.
        let id = f.node_id.clone();
        f.update(|tx| {
            let mut n = (*tx.get::<Node>(&id).unwrap()).clone();
            n.spec.get_or_insert_with(Default::default).availability =
                shoal_api::v1::node_spec::Availability::Pause as i32;
            tx.update(n)
        })
        .await;
        let update = next(&mut second).await.unwrap().unwrap();
        assert_eq!(
            update.node.unwrap().spec.unwrap().availability,
            shoal_api::v1::node_spec::Availability::Pause as i32
        );

        // A node that is not READY (here written DOWN by hand) is written READY again.
        f.update(|tx| {
            let mut n = (*tx.get::<Node>(&id).unwrap()).clone();
            n.status.as_mut().unwrap().state = node_status::State::Down as i32;
            tx.update(n)
        })
        .await;
        let down = version();
        let mut third = f.open().await.unwrap();
        next(&mut third).await.unwrap().unwrap();
        assert!(version() > down);
        assert_eq!(f.state(&f.node_id).0, READY);
    }

    #[tokio::test]
    async fn only_members_of_this_cluster_with_a_certificate_get_a_session() {
        let f = fixture().await;
        // A certificate of this cluster whose node the store does not hold: the authorizer
        // refuses it before the dispatcher sees it, for good (this store is complete).
        let stranger = shoal_api::id::new_id();
        let request = f.request(SessionRequest::default(), &stranger);
        let refused = dispatcher_server::Dispatcher::session(&f.dispatcher, request)
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused
                .message()
                .contains("is not a member of this cluster (removed?)"),
            "{}",
            refused.message()
        );
        assert!(
            refused.message().contains("join again with a token"),
            "{}",
            refused.message()
        );

        let anonymous = Request::new(HeartbeatRequest::default());
        let refused = dispatcher_server::Dispatcher::heartbeat(&f.dispatcher, anonymous)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn followers_send_agents_to_the_leader() {
        let f = fixture().await;
        f.raft.set(|s| {
            s.is_leader = false;
            s.leader = Some(2);
        });
        let refused = f.open().await.err().unwrap();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert_eq!(f.heartbeat("x").await.unwrap_err().code(), refused.code());
        assert_eq!(f.state(&f.node_id).0, 0, "a follower writes nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_node_goes_down_and_its_stream_ends() {
        let f = fixture().await;
        let task = f.dispatcher.start_with_interval(Duration::from_millis(2));
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        f.clock.advance(PERIOD * 2);
        f.heartbeat(&session).await.unwrap();
        f.clock.advance(PERIOD * 3);
        f.full_round().await;
        assert_eq!(f.state(&f.node_id).0, READY, "still within its grace");
        f.clock.advance(MS);
        f.full_round().await;
        assert_eq!(f.state(&f.node_id), (DOWN, HEARTBEAT_FAILURE.to_string()));
        let ended = next(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Aborted);
        assert!(ended.message().contains("expired"), "{}", ended.message());
        assert_eq!(
            f.heartbeat(&session).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        // It comes back with a new session.
        let mut again = f.open().await.unwrap();
        next(&mut again).await.unwrap().unwrap();
        assert_eq!(f.state(&f.node_id).0, READY);
        task.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ready_nodes_without_a_session_get_the_longer_grace_after_an_election() {
        let f = fixture().await;
        let ready = shoal_api::id::new_id();
        f.update(|tx| tx.create(new_node(&ready, node_status::State::Ready)))
            .await;
        let task = f.dispatcher.start_with_interval(Duration::from_millis(2));
        f.swept(1).await;
        assert!(
            f.dispatcher.inner.sessions().has(&ready),
            "the sweep adopts the node"
        );
        f.clock.advance(PERIOD * 6);
        f.full_round().await;
        assert_eq!(f.state(&ready).0, READY, "six periods to reconnect");
        assert_eq!(f.state(&f.node_id).0, 0, "nodes not READY are left alone");
        f.clock.advance(MS);
        f.full_round().await;
        assert_eq!(f.state(&ready).0, DOWN);
        task.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn losing_leadership_ends_the_sessions() {
        let f = fixture().await;
        // Only the status watch can end the session: the sweep has no round to come.
        let task = f.dispatcher.start_with_interval(NEVER);
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        f.swept(1).await;
        f.raft.set(|s| {
            s.is_leader = false;
            s.leader = Some(2);
            s.term = 2;
        });
        let ended = next(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::FailedPrecondition);
        assert!(ended.message().contains("leader"), "{}", ended.message());
        // Leading again (a later term): the old session is gone for good.
        f.raft.set(|s| {
            s.is_leader = true;
            s.leader = Some(1);
            s.term = 3;
        });
        assert_eq!(
            f.heartbeat(&session).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        task.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_manager_list_is_sent() {
        let f = fixture().await;
        // Only the status watch can send the new list: the sweep has no round to come.
        let task = f.dispatcher.start_with_interval(NEVER);
        let mut stream = f.open().await.unwrap();
        let first = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(first.managers.len(), 1);
        f.swept(1).await;
        quiet(&mut stream).await; // the sweep's first look at the same list sends nothing
        f.raft.set(|s| {
            s.members.insert(2, member(2, "10.0.0.2:4242"));
        });
        let update = next(&mut stream).await.unwrap().unwrap();
        assert_eq!(update.session_id, first.session_id);
        let addrs: Vec<_> = update.managers.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1:4242", "10.0.0.2:4242"]);
        // A status change that leaves the list as it is sends nothing.
        f.raft.set(|s| s.applied += 1);
        quiet(&mut stream).await;
        task.stop().await;
    }

    #[tokio::test]
    async fn removing_the_node_ends_its_session() {
        let f = fixture().await;
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        let id = f.node_id.clone();
        f.update(|tx| tx.delete::<Node>(&id)).await;
        let ended = next(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::PermissionDenied);
        // Its certificate no longer counts: not even a heartbeat gets in.
        let refused = f.heartbeat(&session).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("not a member"), "{refused:?}");
    }

    #[tokio::test]
    async fn a_node_that_reconnected_is_not_written_down() {
        let f = fixture().await;
        let inner = &f.dispatcher.inner;
        // The sweep decided the node expired, then the node opened a session before the DOWN
        // write was built: the write finds the session and leaves the node alone.
        let mut stream = f.open().await.unwrap();
        next(&mut stream).await.unwrap().unwrap();
        assert_eq!(inner.mark_down(&f.node_id).await, Ok(false));
        assert_eq!(f.state(&f.node_id).0, READY);
        // Without a session it is written DOWN, once.
        inner.sessions().step_down();
        assert_eq!(inner.mark_down(&f.node_id).await, Ok(true));
        assert_eq!(f.state(&f.node_id), (DOWN, HEARTBEAT_FAILURE.to_string()));
        assert_eq!(inner.mark_down(&f.node_id).await, Ok(false));
        // A node removed meanwhile is nothing to write.
        assert_eq!(inner.mark_down("gone").await, Ok(false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_ends_every_stream_and_refuses_new_sessions() {
        let f = fixture().await;
        let task = f.dispatcher.start_with_interval(Duration::from_millis(2));
        let mut stream = f.open().await.unwrap();
        let session = next(&mut stream).await.unwrap().unwrap().session_id;
        task.stop().await;
        let ended = next(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unavailable);
        assert!(ended.message().contains("shutting down"));
        assert!(next(&mut stream).await.is_none());
        assert_eq!(
            f.open().await.err().unwrap().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            f.heartbeat(&session).await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_task_stops_the_sweep() {
        let f = fixture().await;
        let task = f.dispatcher.start_with_interval(Duration::from_millis(2));
        let mut stream = f.open().await.unwrap();
        next(&mut stream).await.unwrap().unwrap();
        drop(task);
        // At once: no waiting for the aborted task.
        assert_eq!(
            f.open().await.err().unwrap().code(),
            tonic::Code::Unavailable
        );
        let ended = next(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unavailable);
        // And the task ends, letting go of the dispatcher: only the fixture holds it then.
        drop(stream);
        wait_until("the aborted sweep lets go of the dispatcher", || {
            Arc::strong_count(&f.dispatcher.inner) == 1
        })
        .await;
    }

    #[test]
    #[should_panic(expected = "within a tokio runtime")]
    fn starting_outside_a_runtime_says_so() {
        let f = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fixture());
        f.dispatcher.start();
    }

    // --- Assignments and task status: the handlers ---

    impl Fixture {
        async fn session_id(&self) -> (SessionStream, String) {
            let mut stream = self.open().await.unwrap();
            let first = next(&mut stream).await.unwrap().unwrap();
            (stream, first.session_id)
        }

        async fn assignments(&self, session_id: &str) -> Result<AssignmentsStream, Status> {
            let request = self.request(
                AssignmentsRequest {
                    session_id: session_id.into(),
                },
                &self.node_id,
            );
            dispatcher_server::Dispatcher::assignments(&self.dispatcher, request)
                .await
                .map(Response::into_inner)
        }

        async fn report(
            &self,
            session_id: &str,
            updates: Vec<(&str, TaskState)>,
        ) -> Result<(), Status> {
            let updates = updates
                .into_iter()
                .map(|(id, state)| update_task_status_request::TaskStatusUpdate {
                    task_id: id.into(),
                    status: Some(TaskStatus {
                        state: state as i32,
                        message: "reported".into(),
                        ..Default::default()
                    }),
                })
                .collect();
            let request = self.request(
                UpdateTaskStatusRequest {
                    session_id: session_id.into(),
                    updates,
                },
                &self.node_id,
            );
            dispatcher_server::Dispatcher::update_task_status(&self.dispatcher, request)
                .await
                .map(|_| ())
        }

        fn task_state(&self, id: &str) -> i32 {
            self.store
                .view(|tx| tx.get::<Task>(id))
                .unwrap()
                .status
                .as_ref()
                .unwrap()
                .state
        }
    }

    async fn next_assignments(stream: &mut AssignmentsStream) -> Option<AssignmentItem> {
        timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("timed out waiting for the assignments stream")
    }

    fn secret(id: &str) -> Secret {
        Secret {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(shoal_api::v1::SecretSpec {
                annotations: Some(shoal_api::v1::Annotations {
                    name: format!("name-{id}"),
                    ..Default::default()
                }),
                data: b"hush".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn assignments_start_complete_then_follow_the_nodes_tasks() {
        let f = fixture().await;
        let node = f.node_id.clone();
        f.update(|tx| {
            tx.create(secret("s1"))?;
            tx.create(task_with("t1", &node, TaskState::Running, &["s1"], &[]))?;
            tx.create(task_with("t-other", "other", TaskState::Running, &[], &[]))
        })
        .await;
        let (_session, session_id) = f.session_id().await;
        let mut stream = f.assignments(&session_id).await.unwrap();
        let complete = next_assignments(&mut stream).await.unwrap().unwrap();
        assert_eq!(complete.r#type, assignments_message::Type::Complete as i32);
        assert_eq!(complete.results_in, "1");
        assert_eq!(
            summary(&complete.changes),
            vec![s("secret", "s1", "update"), s("task", "t1", "update")]
        );

        // A task of another node never appears; one of this node does.
        f.update(|tx| {
            tx.create(task_with(
                "t-other-2",
                "other",
                TaskState::Assigned,
                &[],
                &[],
            ))
        })
        .await;
        f.update(|tx| tx.create(task_with("t2", &node, TaskState::Assigned, &[], &[])))
            .await;
        let m = next_assignments(&mut stream).await.unwrap().unwrap();
        assert_eq!(m.r#type, assignments_message::Type::Incremental as i32);
        assert_eq!((m.applies_to.as_str(), m.results_in.as_str()), ("1", "2"));
        assert_eq!(summary(&m.changes), vec![s("task", "t2", "update")]);

        // Updated, then removed.
        f.update(|tx| {
            let mut t = (*tx.get::<Task>("t2").unwrap()).clone();
            t.desired_state = TaskState::Shutdown as i32;
            tx.update(t)
        })
        .await;
        let m = next_assignments(&mut stream).await.unwrap().unwrap();
        assert_eq!(summary(&m.changes), vec![s("task", "t2", "update")]);
        assert_eq!(m.applies_to, "2");
        f.update(|tx| tx.delete::<Task>("t1")).await;
        let m = next_assignments(&mut stream).await.unwrap().unwrap();
        assert_eq!(
            summary(&m.changes),
            vec![s("secret", "s1", "remove"), s("task", "t1", "remove")]
        );
    }

    #[tokio::test]
    async fn many_changes_are_batched() {
        let f = fixture().await;
        let node = f.node_id.clone();
        let (_session, session_id) = f.session_id().await;
        let mut stream = f.assignments(&session_id).await.unwrap();
        next_assignments(&mut stream).await.unwrap().unwrap();
        let count = ASSIGNMENT_BATCH_MAX_CHANGES + 20;
        for chunk in (0..count).collect::<Vec<_>>().chunks(50) {
            f.update(|tx| {
                for i in chunk {
                    tx.create(task_with(
                        &format!("t{i:03}"),
                        &node,
                        TaskState::Assigned,
                        &[],
                        &[],
                    ))?;
                }
                Ok(())
            })
            .await;
        }
        let mut seen = 0;
        while seen < count {
            let m = next_assignments(&mut stream).await.unwrap().unwrap();
            assert!(m.changes.len() <= ASSIGNMENT_BATCH_MAX_CHANGES);
            seen += m.changes.len();
        }
        assert_eq!(seen, count);
    }

    #[tokio::test]
    async fn assignments_need_the_current_session_and_end_with_it() {
        let f = fixture().await;
        let (_session, session_id) = f.session_id().await;
        let status = f.assignments("not-a-session").await.err().unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().contains("open a new session"));
        let mut stream = f.assignments(&session_id).await.unwrap();
        next_assignments(&mut stream).await.unwrap().unwrap();
        // A new session replaces the old one: the stream ends as the session's does.
        let (_newer, _) = f.session_id().await;
        let status = next_assignments(&mut stream).await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(next_assignments(&mut stream).await.is_none());
        let status = f.report(&session_id, Vec::new()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn task_status_reports_are_written_forward_only_for_the_nodes_own_tasks() {
        let f = fixture().await;
        let node = f.node_id.clone();
        f.update(|tx| {
            tx.create(task_with("mine", &node, TaskState::Assigned, &[], &[]))?;
            tx.create(task_with("done", &node, TaskState::Failed, &[], &[]))?;
            tx.create(task_with("theirs", "other", TaskState::Assigned, &[], &[]))
        })
        .await;
        let (_session, session_id) = f.session_id().await;

        // Another node's task: the whole call is refused, nothing is written.
        let status = f
            .report(
                &session_id,
                vec![("mine", TaskState::Running), ("theirs", TaskState::Running)],
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("theirs"));
        assert_eq!(f.task_state("mine"), TaskState::Assigned as i32);
        assert_eq!(f.task_state("theirs"), TaskState::Assigned as i32);

        // Forward moves are written (and committed when the call answers); backward ones are
        // ignored without error.
        f.report(
            &session_id,
            vec![("mine", TaskState::Running), ("done", TaskState::Running)],
        )
        .await
        .unwrap();
        assert_eq!(f.task_state("mine"), TaskState::Running as i32);
        assert_eq!(f.task_state("done"), TaskState::Failed as i32);
        f.report(&session_id, vec![("mine", TaskState::Starting)])
            .await
            .unwrap();
        assert_eq!(f.task_state("mine"), TaskState::Running as i32);
    }

    #[tokio::test]
    async fn followers_refuse_assignments_and_status_reports() {
        let f = fixture().await;
        let (_session, session_id) = f.session_id().await;
        f.raft.set(|s| {
            s.is_leader = false;
            s.leader = Some(2);
        });
        let status = f.assignments(&session_id).await.err().unwrap();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let status = f.report(&session_id, Vec::new()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn the_status_batcher_writes_reports_before_answering() {
        let f = fixture().await;
        let node = f.node_id.clone();
        f.update(|tx| {
            tx.create(task_with("a", &node, TaskState::Assigned, &[], &[]))?;
            tx.create(task_with("b", &node, TaskState::Assigned, &[], &[]))
        })
        .await;
        let task = f.dispatcher.start_with_interval(NEVER);
        let (_session, session_id) = f.session_id().await;
        let (one, two) = tokio::join!(
            f.report(&session_id, vec![("a", TaskState::Running)]),
            f.report(&session_id, vec![("b", TaskState::Preparing)]),
        );
        one.unwrap();
        two.unwrap();
        assert_eq!(f.task_state("a"), TaskState::Running as i32);
        assert_eq!(f.task_state("b"), TaskState::Preparing as i32);
        task.stop().await;
        let status = f
            .report(&session_id, vec![("a", TaskState::Complete)])
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(f.task_state("a"), TaskState::Running as i32);
    }

    // --- Routing assignments, and expiry at the deadline ---

    impl Fixture {
        /// Creates nodes in the store.
        async fn nodes(&self, count: usize) -> Vec<String> {
            let ids: Vec<String> = (0..count).map(|_| shoal_api::id::new_id()).collect();
            self.update(|tx| {
                for id in &ids {
                    tx.create(new_node(id, node_status::State::Unknown))?;
                }
                Ok(())
            })
            .await;
            ids
        }

        /// Opens a session as `node_id` on `dispatcher`.
        async fn session_on(
            &self,
            dispatcher: &Dispatcher,
            node_id: &str,
        ) -> (SessionStream, String) {
            let request = self.request(
                SessionRequest {
                    description: None,
                    session_id: String::new(),
                },
                node_id,
            );
            let mut stream = dispatcher_server::Dispatcher::session(dispatcher, request)
                .await
                .unwrap()
                .into_inner();
            let session_id = next(&mut stream).await.unwrap().unwrap().session_id;
            (stream, session_id)
        }

        /// Opens a session and the Assignments stream as `node_id`; the COMPLETE message.
        async fn agent(
            &self,
            node_id: &str,
        ) -> (SessionStream, AssignmentsStream, AssignmentsMessage) {
            let (session, session_id) = self.session_on(&self.dispatcher, node_id).await;
            let request = self.request(AssignmentsRequest { session_id }, node_id);
            let mut stream = dispatcher_server::Dispatcher::assignments(&self.dispatcher, request)
                .await
                .unwrap()
                .into_inner();
            let complete = next_assignments(&mut stream).await.unwrap().unwrap();
            assert_eq!(complete.r#type, assignments_message::Type::Complete as i32);
            (session, stream, complete)
        }
    }

    /// Reads INCREMENTAL messages until `count` changes came; the changes.
    async fn changes(
        stream: &mut AssignmentsStream,
        count: usize,
    ) -> Vec<(&'static str, String, &'static str)> {
        let mut got = Vec::new();
        while got.len() < count {
            let m = next_assignments(stream).await.unwrap().unwrap();
            assert_eq!(m.r#type, assignments_message::Type::Incremental as i32);
            got.extend(summary(&m.changes));
        }
        got
    }

    /// Nothing comes on the assignments stream for longer than a batch's delay.
    async fn no_assignments(stream: &mut AssignmentsStream) {
        let got = timeout(ASSIGNMENT_BATCH_MAX_DELAY * 3, stream.next()).await;
        assert!(got.is_err(), "unexpected assignments: {got:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_agent_receives_exactly_its_own_tasks_changes() {
        let f = fixture().await;
        let nodes = f.nodes(12).await;
        let mut agents = Vec::new();
        for node in &nodes {
            agents.push(f.agent(node).await);
        }
        assert_eq!(
            f.dispatcher.inner.router.lock().routes.len(),
            nodes.len(),
            "one route per stream"
        );
        // Tasks of every node, created together, plus tasks of no connected node.
        f.update(|tx| {
            for j in 0..3 {
                for (i, node) in nodes.iter().enumerate() {
                    tx.create(task_with(
                        &format!("t{i}-{j}"),
                        node,
                        TaskState::Assigned,
                        &[],
                        &[],
                    ))?;
                }
                tx.create(task_with(
                    &format!("elsewhere-{j}"),
                    "gone",
                    TaskState::Assigned,
                    &[],
                    &[],
                ))?;
                tx.create(task_with(
                    &format!("unassigned-{j}"),
                    "",
                    TaskState::Pending,
                    &[],
                    &[],
                ))?;
            }
            Ok(())
        })
        .await;
        for (i, (_, stream, _)) in agents.iter_mut().enumerate() {
            let got = changes(stream, 3).await;
            assert_eq!(got.len(), 3);
            let ids: BTreeSet<String> = got.iter().map(|(_, id, _)| id.clone()).collect();
            let expected: BTreeSet<String> = (0..3).map(|j| format!("t{i}-{j}")).collect();
            assert_eq!(ids, expected, "node {i} gets its own tasks, each once");
        }
        // Then a change to one node's task only.
        f.update(|tx| {
            let mut t = (*tx.get::<Task>("t0-0").unwrap()).clone();
            t.desired_state = TaskState::Shutdown as i32;
            tx.update(t)
        })
        .await;
        assert_eq!(
            changes(&mut agents[0].1, 1).await,
            vec![s("task", "t0-0", "update")]
        );
        for (_, stream, _) in agents.iter_mut() {
            no_assignments(stream).await;
        }
        // Streams that end unregister.
        drop(agents);
        wait_until("the routes are dropped", || {
            f.dispatcher.inner.router.lock().routes.is_empty()
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_moved_between_nodes_leaves_one_set_and_joins_the_other() {
        let f = fixture().await;
        let nodes = f.nodes(3).await;
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        f.update(|tx| {
            tx.create(secret("s1"))?;
            tx.create(task_with("t", a, TaskState::Assigned, &["s1"], &[]))
        })
        .await;
        let (_sa, mut on_a, complete) = f.agent(a).await;
        assert_eq!(
            summary(&complete.changes),
            vec![s("secret", "s1", "update"), s("task", "t", "update")]
        );
        let (_sb, mut on_b, complete) = f.agent(b).await;
        assert!(complete.changes.is_empty());
        let (_sc, mut on_c, _) = f.agent(c).await;
        f.update(|tx| {
            let mut t = (*tx.get::<Task>("t").unwrap()).clone();
            t.node_id = b.clone();
            tx.update(t)
        })
        .await;
        assert_eq!(
            changes(&mut on_a, 2).await,
            vec![s("secret", "s1", "remove"), s("task", "t", "remove")]
        );
        assert_eq!(
            changes(&mut on_b, 2).await,
            vec![s("secret", "s1", "update"), s("task", "t", "update")]
        );
        no_assignments(&mut on_c).await;
        // Unassigned: it leaves b's set.
        f.update(|tx| {
            let mut t = (*tx.get::<Task>("t").unwrap()).clone();
            t.node_id = String::new();
            tx.update(t)
        })
        .await;
        assert_eq!(
            changes(&mut on_b, 2).await,
            vec![s("secret", "s1", "remove"), s("task", "t", "remove")]
        );
        no_assignments(&mut on_a).await;
    }

    #[tokio::test]
    async fn a_stream_whose_events_were_lost_is_sent_its_complete_set_again() {
        let f = fixture().await;
        let node = f.node_id.clone();
        f.update(|tx| tx.create(task_with("t1", &node, TaskState::Assigned, &[], &[])))
            .await;
        let (_session, mut stream, complete) = f.agent(&node).await;
        assert_eq!(complete.results_in, "1");
        // As when the router's watch lags or the store is restored.
        f.dispatcher.inner.router.lag_all();
        f.update(|tx| tx.create(task_with("t2", &node, TaskState::Assigned, &[], &[])))
            .await;
        let m = next_assignments(&mut stream).await.unwrap().unwrap();
        assert_eq!(m.r#type, assignments_message::Type::Complete as i32);
        assert_eq!((m.applies_to.as_str(), m.results_in.as_str()), ("", "2"));
        // The complete set is read after the loss: it holds t2 if it was committed by then;
        // either way t2 comes exactly once.
        let mut t2 = summary(&m.changes).iter().filter(|c| c.1 == "t2").count();
        assert!(summary(&m.changes).contains(&s("task", "t1", "update")));
        if t2 == 0 {
            let m = next_assignments(&mut stream).await.unwrap().unwrap();
            assert_eq!(m.applies_to, "2");
            assert_eq!(summary(&m.changes), vec![s("task", "t2", "update")]);
            t2 += 1;
        }
        assert_eq!(t2, 1);
        no_assignments(&mut stream).await;
    }

    /// Waits until every node of `nodes` was written DOWN; the store version of each write.
    async fn downs(watch: &mut Subscription, nodes: &[String]) -> BTreeMap<String, u64> {
        let mut down = BTreeMap::new();
        while down.len() < nodes.len() {
            let (version, event) = timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("the nodes go DOWN")
                .unwrap();
            if let Object::Node(node) = &event.object
                && node.status.as_ref().is_some_and(|s| s.state == DOWN)
            {
                down.insert(node.meta.as_ref().unwrap().id.clone(), version);
            }
        }
        down
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_expired_by_the_same_round_go_down_in_one_write() {
        let f = fixture().await;
        let period = Duration::from_millis(100);
        f.set_period(period).await;
        // No periodic rounds: only the earliest deadline wakes the sweep.
        let task = f.dispatcher.start_with_interval(NEVER);
        f.swept(1).await;
        let nodes = f.nodes(6).await;
        let mut sessions = Vec::new();
        for node in &nodes {
            sessions.push(f.session_on(&f.dispatcher, node).await);
        }
        let mut watch = f.store.watch(Filter::all().kind(ObjectKind::Node));
        // Every deadline (the same one: the clock stood still) has passed.
        f.clock.advance(period * 3 + MS);
        let down = downs(&mut watch, &nodes).await;
        let versions: BTreeSet<u64> = down.values().copied().collect();
        assert_eq!(versions.len(), 1, "one write for all of them: {down:?}");
        for node in &nodes {
            assert_eq!(f.state(node), (DOWN, HEARTBEAT_FAILURE.to_string()));
        }
        for (mut stream, _) in sessions {
            let ended = next(&mut stream).await.unwrap().unwrap_err();
            assert!(ended.message().contains("expired"), "{}", ended.message());
        }
        task.stop().await;
    }

    #[tokio::test]
    async fn a_down_batch_writes_only_nodes_without_a_session_and_not_down_yet() {
        let f = fixture().await;
        let nodes = f.nodes(3).await;
        let (connected, silent, down) = (&nodes[0], &nodes[1], &nodes[2]);
        let _session = f.session_on(&f.dispatcher, connected).await;
        let id = down.clone();
        f.update(|tx| {
            let mut node = (*tx.get::<Node>(&id).unwrap()).clone();
            node.status.as_mut().unwrap().state = DOWN;
            tx.update(node)
        })
        .await;
        let mut watch = f.store.watch(Filter::all().kind(ObjectKind::Node));
        let ids = [
            connected.clone(),
            silent.clone(),
            down.clone(),
            "gone".into(),
        ];
        let written = f.dispatcher.inner.mark_all_down(&ids).await.unwrap();
        assert_eq!(written, vec![silent.clone()]);
        assert_eq!(f.state(silent), (DOWN, HEARTBEAT_FAILURE.to_string()));
        assert_eq!(f.state(connected).0, READY);
        let (_, event) = watch.next().await.unwrap();
        assert_eq!(event.object.id(), silent.as_str());
        assert!(watch.try_next().unwrap().is_none(), "nothing else written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_nodes_go_down_at_their_deadline_not_a_round_later() {
        let f = fixture().await;
        let period = Duration::from_millis(200);
        f.set_period(period).await;
        // On the real clock, with no periodic rounds: only the deadlines wake the sweep.
        let dispatcher = Dispatcher::with_leadership(
            f.store.clone(),
            f.raft.clone(),
            Authorizer::new(f.store.clone(), f.cluster.meta.as_ref().unwrap().id.clone()),
            Arc::new(shoal_api::clock::SystemClock),
        );
        let task = dispatcher.start_with_interval(NEVER);
        let mut rounds = dispatcher.inner.rounds.subscribe();
        timeout(Duration::from_secs(10), rounds.wait_for(|n| *n >= 1))
            .await
            .unwrap()
            .unwrap();
        let nodes = f.nodes(4).await;
        let mut watch = f.store.watch(Filter::all().kind(ObjectKind::Node));
        let mut opened = BTreeMap::new();
        let mut sessions = Vec::new();
        for node in &nodes {
            opened.insert(node.clone(), std::time::Instant::now());
            sessions.push(f.session_on(&dispatcher, node).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut seen = 0;
        while seen < nodes.len() {
            let (_, event) = timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("the nodes go DOWN")
                .unwrap();
            let Object::Node(node) = &event.object else {
                continue;
            };
            if node.status.as_ref().is_some_and(|s| s.state == DOWN) {
                let id = node.meta.as_ref().unwrap().id.clone();
                let after = opened[&id].elapsed();
                assert!(after > period * 3, "not before its deadline: {after:?}");
                assert!(
                    after < period * 3 + Duration::from_millis(500),
                    "at its deadline, not {after:?} after the session opened"
                );
                seen += 1;
            }
        }
        task.stop().await;
    }
}
