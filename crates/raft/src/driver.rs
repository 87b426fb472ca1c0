//! The driver: one thread that owns the [`RaftNode`] and does its I/O.
//!
//! Everything that reaches the node — peer messages, proposals, read and membership
//! requests, ticks — comes through one channel, in arrival order. Each round the driver
//! takes every input already waiting (so many proposals share one Ready and therefore one
//! fsync: group commit), lets the node process them, hands the outgoing messages to the
//! [`Transport`], and answers the callers whose proposals were applied. The thread runs
//! synchronous code only: the durable write inside `process_ready` blocks it, not an async
//! executor.
//!
//! Callers hold a [`RaftHandle`]. Proposals made on a node that is not the leader fail at
//! once (the Control API forwards to the leader); with no leader at all they fail with the
//! quorum explanation. A proposal that is not applied within two election timeouts fails
//! with an "outcome unknown" error rather than hang.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use shoal_api::v1::RaftMember;
use shoal_store::{ChangeSet, ProposeFuture, Proposer, StateMachine, StoreError};
use tokio::sync::{oneshot, watch};

use crate::error::{RaftError, Result};
use crate::node::{NodeConfig, ProposalError, ProposalId, RaftNode, ReadId};

/// Sends Raft messages to peers. Implementations must not block.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msg` for `msg.to`.
    fn send(&self, msg: Message);
    /// The members changed: connect to new ones, forget removed ones.
    fn set_members(&self, members: &BTreeMap<u64, RaftMember>);
}

/// What the driver knows about the cluster, published after every round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub is_leader: bool,
    /// This node leads and has applied an entry of its own term: its store holds every write
    /// committed before it was elected ([`RaftNode::leader_caught_up`]). What a new leader's
    /// first decisions from its store must wait for.
    pub leader_caught_up: bool,
    pub applied: u64,
    pub members: BTreeMap<u64, RaftMember>,
    /// Voters heard from within the last election timeout (this node included).
    pub reachable: usize,
    pub voters: usize,
    /// Set once this node has been removed from the cluster.
    pub removed: bool,
}

enum Input {
    Message(Message),
    Propose(
        ChangeSet,
        oneshot::Sender<std::result::Result<u64, StoreError>>,
    ),
    Read(oneshot::Sender<Result<()>>),
    AddMember(
        RaftMember,
        oneshot::Sender<Result<BTreeMap<u64, RaftMember>>>,
    ),
    RemoveMember(u64, oneshot::Sender<Result<()>>),
    Unreachable(u64),
    SnapshotStatus(u64, bool),
    TransferLeadership(oneshot::Sender<Result<()>>),
    /// A member says it is now reached at another address (not yet committed).
    PeerAddress(u64, String),
    /// The cluster spec's snapshot interval and entries kept for slow followers.
    SnapshotPolicy(u64, u64),
    Stop,
}

/// How the driver was started.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub node: NodeConfig,
    pub tick: Duration,
}

impl DriverConfig {
    fn election_timeout(&self) -> Duration {
        self.tick * self.node.election_tick as u32
    }
}

/// A handle to a running Raft driver. Cheap to clone.
#[derive(Clone)]
pub struct RaftHandle {
    inputs: mpsc::Sender<Input>,
    status: watch::Receiver<RaftStatus>,
    state: Arc<StateMachine>,
}

/// Owns the driver thread; stopping it joins the thread.
pub struct RaftDriver {
    handle: RaftHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Waiting<T> {
    reply: oneshot::Sender<T>,
    deadline: Instant,
}

struct Loop {
    node: RaftNode,
    config: DriverConfig,
    transport: Arc<dyn Transport>,
    status: watch::Sender<RaftStatus>,
    proposals: HashMap<ProposalId, Waiting<std::result::Result<u64, StoreError>>>,
    members_changes: HashMap<ProposalId, Waiting<Result<BTreeMap<u64, RaftMember>>>>,
    removals: HashMap<ProposalId, Waiting<Result<()>>>,
    reads: HashMap<ReadId, Waiting<Result<()>>>,
    heard: HashMap<u64, Instant>,
    last_members: BTreeMap<u64, RaftMember>,
}

impl RaftDriver {
    /// Starts the driver thread for `node`.
    pub fn start(
        node: RaftNode,
        state: Arc<StateMachine>,
        config: DriverConfig,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let (inputs, receiver) = mpsc::channel();
        let (status_tx, status) = watch::channel(RaftStatus {
            id: node.id(),
            ..Default::default()
        });
        transport.set_members(node.members());
        let mut state_loop = Loop {
            last_members: node.members().clone(),
            node,
            config,
            transport,
            status: status_tx,
            proposals: HashMap::new(),
            members_changes: HashMap::new(),
            removals: HashMap::new(),
            reads: HashMap::new(),
            heard: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || state_loop.run(receiver))
            .expect("spawning the raft thread");
        Self {
            handle: RaftHandle {
                inputs,
                status,
                state,
            },
            thread: Some(thread),
        }
    }

    pub fn handle(&self) -> RaftHandle {
        self.handle.clone()
    }

    /// Stops the driver and waits for its thread to end.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.handle.inputs.send(Input::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RaftDriver {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

impl Loop {
    fn run(&mut self, receiver: mpsc::Receiver<Input>) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick += self.config.tick;
                if next_tick < now {
                    // The thread was starved; do not replay missed ticks in a burst.
                    next_tick = now + self.config.tick;
                }
            } else {
                match receiver.recv_timeout(next_tick - now) {
                    Ok(input) => {
                        if !self.take(input) {
                            return;
                        }
                        // Group commit: everything already queued joins this round.
                        for _ in 0..4096 {
                            match receiver.try_recv() {
                                Ok(input) => {
                                    if !self.take(input) {
                                        return;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if let Err(e) = self.round() {
                tracing::error!("raft: {e}; this manager stops taking part in the cluster");
                self.fail_all(|| RaftError::Stopped);
                return;
            }
        }
    }

    /// Takes one input; returns false to stop.
    fn take(&mut self, input: Input) -> bool {
        let deadline = Instant::now() + self.config.election_timeout() * 2;
        match input {
            Input::Message(msg) => {
                self.heard.insert(msg.from, Instant::now());
                if let Err(e) = self.node.step(msg) {
                    tracing::debug!("raft: dropped a message: {e}");
                }
            }
            Input::Propose(changes, reply) => match self.node.propose(changes) {
                Ok(id) => {
                    self.proposals.insert(id, Waiting { reply, deadline });
                }
                Err(e) => {
                    let _ = reply.send(Err(self.explain(e).into()));
                }
            },
            Input::Read(reply) => {
                if self.node.leader().is_none() {
                    let _ = reply.send(Err(self.no_leader()));
                } else {
                    let id = self.node.read_index();
                    self.reads.insert(id, Waiting { reply, deadline });
                }
            }
            Input::AddMember(member, reply) => match self.node.propose_add_member(member) {
                Ok(id) => {
                    self.members_changes.insert(id, Waiting { reply, deadline });
                }
                Err(e) => {
                    let _ = reply.send(Err(self.explain(e)));
                }
            },
            Input::RemoveMember(raft_id, reply) => match self.node.propose_remove_member(raft_id) {
                Ok(id) => {
                    self.removals.insert(id, Waiting { reply, deadline });
                }
                Err(e) => {
                    let _ = reply.send(Err(self.explain(e)));
                }
            },
            Input::Unreachable(id) => self.node.report_unreachable(id),
            Input::PeerAddress(id, addr) => {
                // Reach the member at its new address at once: the change that records the
                // address may need that member's vote to commit.
                if let Some(m) = self.last_members.get_mut(&id) {
                    m.addr = addr;
                    self.transport.set_members(&self.last_members);
                }
            }
            Input::SnapshotStatus(id, ok) => self.node.report_snapshot(id, ok),
            Input::SnapshotPolicy(interval, keep) => self.node.set_snapshot_policy(interval, keep),
            Input::TransferLeadership(reply) => {
                let target = self
                    .node
                    .voters()
                    .into_iter()
                    .filter(|id| *id != self.node.id())
                    .max_by_key(|id| self.heard.get(id).copied());
                match target {
                    Some(t) if self.node.is_leader() => {
                        self.node.transfer_leader(t);
                        let _ = reply.send(Ok(()));
                    }
                    _ => {
                        let _ = reply.send(Err(RaftError::NotLeader {
                            leader: self.node.leader(),
                        }));
                    }
                }
            }
            Input::Stop => {
                self.fail_all(|| RaftError::Stopped);
                return false;
            }
        }
        true
    }

    fn reachable(&self) -> usize {
        let window = self.config.election_timeout();
        let now = Instant::now();
        1 + self
            .node
            .voters()
            .into_iter()
            .filter(|id| *id != self.node.id())
            .filter(|id| {
                self.heard
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) <= window)
            })
            .count()
    }

    fn no_leader(&self) -> RaftError {
        let voters = self.node.voters().len();
        if voters == 0 {
            return RaftError::NoLeader(
                "no leader known yet: this manager is still catching up with its cluster; retry shortly"
                    .into(),
            );
        }
        RaftError::NoLeader(no_leader_message(self.reachable(), voters))
    }

    /// Turns "not the leader, none known" into the quorum explanation.
    fn explain(&self, e: RaftError) -> RaftError {
        match e {
            RaftError::NotLeader { leader: None } => self.no_leader(),
            other => other,
        }
    }

    fn round(&mut self) -> Result<()> {
        let transport = self.transport.clone();
        let out = self
            .node
            .process_ready_with(&mut |msg| transport.send(msg))?;
        for (id, result) in out.proposals {
            if let Some(w) = self.proposals.remove(&id) {
                let _ = w.reply.send(result.map_err(|e| match e {
                    ProposalError::Refused(e) => e,
                    other => StoreError::Unavailable(other.to_string()),
                }));
            } else if let Some(w) = self.members_changes.remove(&id) {
                let _ = w.reply.send(match result {
                    Ok(_) => Ok(self.node.members().clone()),
                    Err(e) => Err(RaftError::Membership(e.to_string())),
                });
            } else if let Some(w) = self.removals.remove(&id) {
                let _ = w.reply.send(
                    result
                        .map(|_| ())
                        .map_err(|e| RaftError::Membership(e.to_string())),
                );
            }
        }
        for id in out.reads {
            if let Some(w) = self.reads.remove(&id) {
                let _ = w.reply.send(Ok(()));
            }
        }
        if out.membership_changed && self.node.members() != &self.last_members {
            self.last_members = self.node.members().clone();
            self.transport.set_members(&self.last_members);
        }
        self.expire();
        let status = RaftStatus {
            id: self.node.id(),
            leader: self.node.leader(),
            term: self.node.term(),
            is_leader: self.node.is_leader(),
            leader_caught_up: self.node.leader_caught_up(),
            applied: self.node.applied(),
            members: self.node.members().clone(),
            reachable: self.reachable(),
            voters: self.node.voters().len(),
            removed: out.removed || self.node.removed().contains(&self.node.id()),
        };
        self.status.send_if_modified(|s| {
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
        Ok(())
    }

    /// Fails requests that waited past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        expire(&mut self.proposals, now, || {
            Err(StoreError::Unavailable(
                "the write's outcome is unknown: it was not committed within two election \
                 timeouts (is a quorum of managers reachable?); read the object again to see \
                 whether it was applied"
                    .into(),
            ))
        });
        let no_leader = self.no_leader().to_string();
        expire(&mut self.reads, now, || {
            Err(RaftError::NoLeader(format!(
                "a read could not be confirmed by a quorum in time ({no_leader})"
            )))
        });
        expire(&mut self.members_changes, now, || Err(RaftError::Unknown));
        expire(&mut self.removals, now, || Err(RaftError::Unknown));
    }

    fn fail_all(&mut self, error: impl Fn() -> RaftError) {
        for (_, w) in self.proposals.drain() {
            let _ = w.reply.send(Err(error().into()));
        }
        for (_, w) in self.reads.drain() {
            let _ = w.reply.send(Err(error()));
        }
        for (_, w) in self.members_changes.drain() {
            let _ = w.reply.send(Err(error()));
        }
        for (_, w) in self.removals.drain() {
            let _ = w.reply.send(Err(error()));
        }
    }
}

/// Answers, with `error()`, every request in `waiting` whose deadline has passed.
/// Why there is no leader, seen from a manager that hears `reachable` of the `voters`
/// managers (itself included), and what to do.
pub(crate) fn no_leader_message(reachable: usize, voters: usize) -> String {
    let reachable = reachable.min(voters.max(1));
    if reachable > voters / 2 {
        // A quorum is reachable from here: an election is under way, or this manager is cut
        // off from the leader while others still hear it.
        format!(
            "no leader known to this manager right now ({reachable} of {voters} managers \
             reachable: an election is under way, or this manager is cut off from the \
             leader); retry shortly, or call another manager"
        )
    } else {
        // Followers of a live leader are silent to each other, so "not heard" is either
        // "down" or "up but cut off from here": the advice covers both.
        format!(
            "no leader: quorum lost ({reachable} of {voters} managers reachable); if the \
             other managers are down, bring them back (or run `shoal swarm init \
             --force-new-cluster` on one to continue from its data); if they are running, \
             this manager is cut off from them: call another manager"
        )
    }
}

fn expire<T>(waiting: &mut HashMap<u64, Waiting<T>>, now: Instant, error: impl Fn() -> T) {
    for (_, w) in waiting.extract_if(|_, w| now >= w.deadline) {
        let _ = w.reply.send(error());
    }
}

impl RaftHandle {
    fn send(&self, input: Input) -> Result<()> {
        self.inputs.send(input).map_err(|_| RaftError::Stopped)
    }

    /// Hands a message from a peer to the node.
    pub fn step(&self, msg: Message) {
        let _ = self.send(Input::Message(msg));
    }

    /// Tells the transport that member `id` is now at `addr`, before the membership change
    /// recording it is committed.
    pub fn hint_address(&self, id: u64, addr: String) {
        let _ = self.send(Input::PeerAddress(id, addr));
    }

    /// Reports that a peer could not be reached.
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.send(Input::Unreachable(id));
    }

    /// Reports whether a snapshot reached its follower.
    pub fn report_snapshot(&self, id: u64, delivered: bool) {
        let _ = self.send(Input::SnapshotStatus(id, delivered));
    }

    /// Applied entries between snapshots (0: the default) and entries a snapshot leaves in
    /// the log for slow followers, from the cluster spec (see `RaftNode::set_snapshot_policy`).
    pub fn set_snapshot_policy(&self, interval: u64, keep_entries: u64) -> Result<()> {
        self.send(Input::SnapshotPolicy(interval, keep_entries))
    }

    /// Proposes a transaction; resolves once it is applied locally, to the store version.
    pub async fn propose(&self, changes: ChangeSet) -> std::result::Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Propose(changes, tx))?;
        rx.await.map_err(|_| StoreError::from(RaftError::Stopped))?
    }

    /// Waits until the local store reflects every write committed before the call, as
    /// confirmed by a quorum (ReadIndex): reads after it are linearizable.
    pub async fn read_barrier(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Read(tx))?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Adds a manager; resolves to the membership once the change is committed.
    pub async fn add_member(&self, member: RaftMember) -> Result<BTreeMap<u64, RaftMember>> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::AddMember(member, tx))?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Removes a manager (refused if it would lose quorum).
    pub async fn remove_member(&self, raft_id: u64) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::RemoveMember(raft_id, tx))?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Asks the leader to hand leadership to another member.
    pub async fn transfer_leadership(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::TransferLeadership(tx))?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// The latest status.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// The state machine the node applies to.
    pub fn state_machine(&self) -> &Arc<StateMachine> {
        &self.state
    }
}

/// Commits store transactions through Raft: the store's [`Proposer`] on managers.
#[derive(Clone)]
pub struct RaftProposer {
    handle: RaftHandle,
}

impl RaftProposer {
    pub fn new(handle: RaftHandle) -> Self {
        Self { handle }
    }
}

impl Proposer for RaftProposer {
    fn propose(&self, _state: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture {
        // Sent now, awaited later: a batch keeps several proposals in flight, in order.
        let (tx, rx) = oneshot::channel();
        let sent = self.handle.send(Input::Propose(changes, tx));
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| StoreError::from(RaftError::Stopped))?
        })
    }
}
