//! The Raft node: a synchronous state machine around raft-rs's `RawNode`.
//!
//! [`RaftNode`] takes inputs — ticks, messages from peers, proposals, read requests — and,
//! on [`RaftNode::process_ready`], does the work raft-rs asks for, in the order the protocol
//! requires: install a snapshot received from the leader; apply committed entries to the
//! store's state machine; persist new entries and the hard state (one durable write); then
//! hand back the messages to send and the outcomes of this node's proposals. It owns no
//! sockets, timers or tasks; the async driver (`driver.rs`) feeds it and does the I/O, and
//! the test harness feeds it by hand.
//!
//! What travels in the log:
//! - a normal entry carries one store transaction (`Transaction` of `store.proto`); its
//!   context tags the proposing manager and proposal, so that manager can answer its caller.
//!   The state machine decides every transaction's fate from the content alone, so every
//!   manager reaches the same verdict.
//! - a membership change carries a `ConfChangeContext`: the member joining or leaving, with
//!   its address, so every manager knows how to reach every other.
//!
//! Snapshots hold the store and the membership (`Snapshot` of `store.proto`); one is taken
//! every `snapshot_interval` applied entries, and the log keeps `keep_entries` entries before
//! it for followers a little behind (both follow the cluster spec's `raft` settings through
//! [`RaftNode::set_snapshot_policy`]).
//!
//! Crash points (`failpoints.rs`, only with the `failpoints` feature): `raft-apply-before` and
//! `raft-apply-after` bracket each batch of committed entries applied to the store, before any
//! of their proposers is answered.
//!
//! A new cluster starts from a snapshot at index 1 holding its one member, so the membership
//! always lives in the replicated state, and a manager that joins catches up by snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use shoal_api::v1::{self, ClusterMembership, ConfChangeContext, RaftMember};
use shoal_store::{ChangeSet, StateMachine, StoreError};

use crate::error::{RaftError, Result};
use crate::failpoints::crash_point;
use crate::storage::LogStore;

/// Identifies a proposal made on this node.
pub type ProposalId = u64;

/// Identifies a read request made on this node.
pub type ReadId = u64;

/// Settings of a Raft node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This member's Raft ID (non-zero).
    pub id: u64,
    /// Ticks without hearing from a leader before campaigning (randomised up to twice this).
    pub election_tick: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots.
    pub snapshot_interval: u64,
    /// Entries kept before a snapshot for followers a little behind.
    pub keep_entries: u64,
}

impl NodeConfig {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_tick: shoal_api::defaults::RAFT_ELECTION_TICK as usize,
            heartbeat_tick: shoal_api::defaults::RAFT_HEARTBEAT_TICK as usize,
            snapshot_interval: shoal_api::defaults::RAFT_SNAPSHOT_INTERVAL,
            keep_entries: shoal_api::defaults::RAFT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS,
        }
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: shoal_api::defaults::RAFT_MAX_INFLIGHT_MSGS,
            check_quorum: true,
            pre_vote: true,
            // etcd randomises the election timeout over [E, 2E) ticks; [E, 1.5E) keeps failover
            // under ~1.5 s at the default 100 ms tick while leaving five distinct timeouts, so
            // with pre-vote split votes stay rare.
            max_election_tick: self.election_tick + (self.election_tick / 2).max(2),
            // Reads are confirmed by a quorum round (ReadIndex), never by a lease that a
            // paused leader could overrun.
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        }
    }
}

/// What one round of [`RaftNode::process_ready`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send, each addressed by `msg.to`.
    pub messages: Vec<Message>,
    /// Outcomes of this node's proposals: the store version a transaction produced, or why
    /// it was refused.
    pub proposals: Vec<(ProposalId, std::result::Result<u64, ProposalError>)>,
    /// Read requests that may now be served from the local store (linearizable).
    pub reads: Vec<ReadId>,
    /// The membership changed.
    pub membership_changed: bool,
    /// This node was removed from the cluster.
    pub removed: bool,
}

/// Why a proposal did not produce a store version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// The state machine refused the transaction (a conflict, a taken name...).
    #[error(transparent)]
    Refused(#[from] StoreError),
    /// Leadership changed before the entry was known committed: it may still be applied.
    #[error(
        "the write's outcome is unknown: leadership changed before it was committed; read the \
         object again to see whether it was applied"
    )]
    Unknown,
    /// A membership change was refused.
    #[error("{0}")]
    Membership(String),
}

/// The tag in an entry's context: which manager proposed it, and which of its proposals.
fn tag(proposer: u64, id: ProposalId) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&proposer.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out
}

fn untag(context: &[u8]) -> Option<(u64, ProposalId)> {
    if context.len() != 16 {
        return None;
    }
    let proposer = u64::from_be_bytes(context[..8].try_into().ok()?);
    let id = u64::from_be_bytes(context[8..].try_into().ok()?);
    Some((proposer, id))
}

/// A proposal of this node waiting for its entry to apply.
struct Pending {
    /// Where its entry was appended: (index, term).
    at: (u64, u64),
    /// A store transaction's changes; `None` for a membership change.
    changes: Option<ChangeSet>,
}

/// A Raft member of the manager group.
pub struct RaftNode {
    raw: RawNode<LogStore>,
    config: NodeConfig,
    state: Arc<StateMachine>,
    members: BTreeMap<u64, RaftMember>,
    removed: BTreeSet<u64>,
    /// Proposals of this node not yet applied, with the log position their entry took:
    /// store transactions keep their changes, so the leader applies them without decoding
    /// its own entries. Proposal IDs start again at 1 when a node restarts, so an entry
    /// tagged with one of ours is ours only at that position (an entry from before a
    /// restart, committed later, carries the same tag).
    proposals: HashMap<ProposalId, Pending>,
    next_proposal: ProposalId,
    next_read: ReadId,
    /// Reads confirmed by the leader, waiting for the log to be applied up to their index.
    reads_waiting: Vec<(ReadId, u64)>,
    applied: u64,
    last_snapshot: u64,
    was_leader: bool,
}

/// Encodes the replicated state (store and membership) as snapshot data.
fn snapshot_data(
    state: &StateMachine,
    members: &BTreeMap<u64, RaftMember>,
    removed: &BTreeSet<u64>,
) -> Vec<u8> {
    // The `Snapshot` message written field by field, so the store's objects are encoded
    // from the store itself instead of being copied into a message first.
    use prost::encoding::{WireType, encode_key, encode_varint, message, uint32};
    let store = state.encode_snapshot();
    let membership = ClusterMembership {
        members: members.values().cloned().collect(),
        removed: removed.iter().copied().collect(),
    };
    let mut buf = Vec::with_capacity(store.len() + 64);
    uint32::encode(1, &1, &mut buf);
    message::encode(2, &membership, &mut buf);
    encode_key(3, WireType::LengthDelimited, &mut buf);
    encode_varint(store.len() as u64, &mut buf);
    buf.extend_from_slice(&store);
    buf
}

impl RaftNode {
    /// Starts a new cluster with this node as its only member, at address `addr`.
    pub fn bootstrap(
        config: NodeConfig,
        mut log: LogStore,
        state: Arc<StateMachine>,
        member: RaftMember,
    ) -> Result<Self> {
        if !log.is_empty() {
            return Err(RaftError::Membership(
                "this manager already belongs to a cluster; it cannot start a new one".into(),
            ));
        }
        let mut members = BTreeMap::new();
        members.insert(
            config.id,
            RaftMember {
                raft_id: config.id,
                ..member
            },
        );
        let cs = ConfState {
            voters: vec![config.id],
            ..Default::default()
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_data(snapshot_data(&state, &members, &BTreeSet::new()).into());
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(cs);
        log.install_snapshot(snapshot)?;
        Self::restart(config, log, state)
    }

    /// A node that will join an existing cluster: it waits, empty, for the leader to send it
    /// a snapshot once the membership change adding it is committed.
    pub fn joining(config: NodeConfig, log: LogStore, state: Arc<StateMachine>) -> Result<Self> {
        if !log.is_empty() {
            return Err(RaftError::Membership(
                "this manager already belongs to a cluster; it cannot join another".into(),
            ));
        }
        Self::start(config, log, state, BTreeMap::new(), BTreeSet::new(), 0)
    }

    /// Restarts a node from its persisted log: the store is rebuilt from the latest snapshot,
    /// and the committed entries after it are applied again as Raft hands them back.
    pub fn restart(config: NodeConfig, log: LogStore, state: Arc<StateMachine>) -> Result<Self> {
        let snapshot = log.latest_snapshot().clone();
        let (members, removed) = restore(&state, &snapshot)?;
        let applied = snapshot.get_metadata().index;
        Self::start(config, log, state, members, removed, applied)
    }

    /// Rewrites the persisted log so this node is the only member, keeping every committed
    /// entry (`--force-new-cluster`). Returns the rewritten log, to restart from.
    pub fn force_new_cluster(
        config: &NodeConfig,
        mut log: LogStore,
        state: Arc<StateMachine>,
    ) -> Result<LogStore> {
        let snapshot = log.latest_snapshot().clone();
        let (mut members, mut removed) = restore(&state, &snapshot)?;
        let mut applied = snapshot.get_metadata().index;
        // Apply every entry the log holds. The commit index on disk lags the real one (it is
        // written with the next entries, not on its own), so an entry past it may have been
        // committed and acknowledged; recovery keeps it rather than risk losing it.
        let commit = raft::Storage::last_index(&log)?;
        if commit > applied {
            let entries = raft::Storage::entries(
                &log,
                applied + 1,
                commit + 1,
                None,
                raft::GetEntriesContext::empty(false),
            )?;
            for entry in entries {
                match entry.get_entry_type() {
                    EntryType::EntryNormal if !entry.data.is_empty() => {
                        let _ = v1::Transaction::decode(entry.data.as_ref())
                            .map_err(|e| StoreError::InvalidTransaction(e.to_string()))
                            .and_then(ChangeSet::from_proto)
                            .and_then(|changes| state.apply(changes));
                    }
                    EntryType::EntryConfChange => {
                        let cc =
                            ConfChange::parse_from_bytes(entry.data.as_ref()).map_err(|e| {
                                RaftError::Corrupt(format!(
                                    "membership change {}: {e}",
                                    entry.index
                                ))
                            })?;
                        let context =
                            ConfChangeContext::decode(cc.context.as_ref()).unwrap_or_default();
                        match cc.get_change_type() {
                            ConfChangeType::RemoveNode => {
                                members.remove(&cc.node_id);
                                removed.insert(cc.node_id);
                            }
                            _ => {
                                let member = context.member.unwrap_or_default();
                                members.insert(
                                    cc.node_id,
                                    RaftMember {
                                        raft_id: cc.node_id,
                                        ..member
                                    },
                                );
                            }
                        }
                    }
                    _ => {}
                }
                applied = entry.index;
            }
        }
        let me = members.get(&config.id).cloned().unwrap_or(RaftMember {
            raft_id: config.id,
            ..Default::default()
        });
        removed.extend(members.keys().filter(|id| **id != config.id));
        let members = BTreeMap::from([(config.id, me)]);
        let cs = ConfState {
            voters: vec![config.id],
            ..Default::default()
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_data(snapshot_data(&state, &members, &removed).into());
        let meta = snapshot.mut_metadata();
        meta.index = applied.max(1);
        meta.term = log.hard_state().term.max(1);
        meta.set_conf_state(cs);
        log.install_snapshot(snapshot)?;
        Ok(log)
    }

    fn start(
        config: NodeConfig,
        log: LogStore,
        state: Arc<StateMachine>,
        members: BTreeMap<u64, RaftMember>,
        removed: BTreeSet<u64>,
        applied: u64,
    ) -> Result<Self> {
        let raft_config = config.raft_config(applied);
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, log, &crate::logger::logger())?;
        let last_snapshot = applied;
        Ok(Self {
            raw,
            config,
            state,
            members,
            removed,
            proposals: HashMap::new(),
            next_proposal: 1,
            next_read: 1,
            reads_waiting: Vec::new(),
            applied,
            last_snapshot,
            was_leader: false,
        })
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The log, as raft-rs holds it.
    pub fn raw_store(&self) -> &LogStore {
        self.raw.store()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Whether this node leads and has applied an entry of its own term (the empty entry a
    /// new leader appends): its store then holds every write committed before it was
    /// elected. Until then a new leader may still be applying its predecessor's last
    /// entries, and decisions made from its store (which tasks a slot has) may be stale.
    pub fn leader_caught_up(&self) -> bool {
        self.is_leader() && self.raw.raft.raft_log.term(self.applied).ok() == Some(self.term())
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The members as replicated, by Raft ID.
    pub fn members(&self) -> &BTreeMap<u64, RaftMember> {
        &self.members
    }

    pub fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }

    /// Voters that the leader heard from recently (all voters when not the leader: unknown).
    pub fn reachable_voters(&self) -> BTreeSet<u64> {
        let voters: BTreeSet<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        if !self.is_leader() {
            return voters;
        }
        voters
            .into_iter()
            .filter(|id| {
                *id == self.config.id
                    || self
                        .raw
                        .raft
                        .prs()
                        .get(*id)
                        .is_some_and(|p| p.recent_active)
            })
            .collect()
    }

    pub fn voters(&self) -> BTreeSet<u64> {
        self.raw.raft.prs().conf().voters().ids().iter().collect()
    }

    /// Test hook for the deterministic simulator (`shoal-sim`), not for production use:
    /// raft-rs draws each election timeout from its own thread RNG, which a replayable run
    /// must override from its seed after every input. `ticks` must lie in
    /// `[election_tick, max_election_tick)` (see `NodeConfig`), or raft-rs panics.
    #[doc(hidden)]
    pub fn set_randomized_election_timeout(&mut self, ticks: usize) {
        self.raw.raft.set_randomized_election_timeout(ticks);
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Takes a message from a peer. Messages from removed members are dropped.
    pub fn step(&mut self, msg: Message) -> Result<()> {
        if self.removed.contains(&msg.from) {
            return Ok(());
        }
        match self.raw.step(msg) {
            Ok(()) => Ok(()),
            // A message for a peer the configuration does not know (yet): harmless.
            Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn check_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(RaftError::NotLeader {
                leader: self.leader(),
            })
        }
    }

    /// Proposes a store transaction. Only the leader accepts proposals.
    pub fn propose(&mut self, changes: ChangeSet) -> Result<ProposalId> {
        self.check_leader()?;
        let id = self.next_proposal;
        self.next_proposal += 1;
        let data = changes.encode();
        self.raw.propose(tag(self.config.id, id), data)?;
        let at = self.last_appended();
        self.proposals.insert(
            id,
            Pending {
                at,
                changes: Some(changes),
            },
        );
        Ok(id)
    }

    /// The position of the entry this leader appended last.
    fn last_appended(&self) -> (u64, u64) {
        let log = &self.raw.raft.raft_log;
        let index = log.last_index();
        (index, log.term(index).unwrap_or(self.raw.raft.term))
    }

    /// Proposes adding a member (a manager joining).
    pub fn propose_add_member(&mut self, member: RaftMember) -> Result<ProposalId> {
        self.check_leader()?;
        if self.removed.contains(&member.raft_id) {
            return Err(RaftError::Membership(format!(
                "raft ID {:x} was removed from this cluster and cannot come back",
                member.raft_id
            )));
        }
        self.propose_conf_change(ConfChangeType::AddNode, member)
    }

    /// Proposes removing a member, refusing when the remaining reachable members would not
    /// be a quorum of the new configuration.
    pub fn propose_remove_member(&mut self, raft_id: u64) -> Result<ProposalId> {
        self.check_leader()?;
        let voters = self.voters();
        if !voters.contains(&raft_id) {
            return Err(RaftError::Membership(format!(
                "raft member {raft_id:x} is not a member"
            )));
        }
        if voters.len() == 1 {
            return Err(RaftError::Membership(
                "it is the last manager; a cluster needs at least one".into(),
            ));
        }
        let remaining = voters.len() - 1;
        let reachable = self
            .reachable_voters()
            .into_iter()
            .filter(|id| *id != raft_id)
            .count();
        if reachable < remaining / 2 + 1 {
            return Err(RaftError::Membership(format!(
                "removing it would lose quorum: {reachable} of the {remaining} remaining managers \
                 are reachable, {} are needed; bring managers back first",
                remaining / 2 + 1
            )));
        }
        let member = self.members.get(&raft_id).cloned().unwrap_or(RaftMember {
            raft_id,
            ..Default::default()
        });
        self.propose_conf_change(ConfChangeType::RemoveNode, member)
    }

    fn propose_conf_change(
        &mut self,
        change: ConfChangeType,
        member: RaftMember,
    ) -> Result<ProposalId> {
        let id = self.next_proposal;
        self.next_proposal += 1;
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = member.raft_id;
        let context = ConfChangeContext {
            member: Some(member),
            proposer: self.config.id,
            proposal: id,
        }
        .encode_to_vec();
        cc.context = context.clone().into();
        self.raw.propose_conf_change(context, cc)?;
        let at = self.last_appended();
        self.proposals.insert(id, Pending { at, changes: None });
        Ok(id)
    }

    /// Asks for a linearizable read: the returned ID comes back in [`Output::reads`] once a
    /// quorum confirmed this node's view and the store has applied up to it.
    pub fn read_index(&mut self) -> ReadId {
        let id = self.next_read;
        self.next_read += 1;
        self.raw.read_index(id.to_be_bytes().to_vec());
        id
    }

    /// Does the work raft-rs has ready, in protocol order; see the module documentation.
    /// Outgoing messages are collected in [`Output::messages`].
    pub fn process_ready(&mut self) -> Result<Output> {
        let mut messages = Vec::new();
        let mut out = self.process_ready_with(&mut |m| messages.push(m))?;
        out.messages = messages;
        Ok(out)
    }

    /// Like [`RaftNode::process_ready`], handing each outgoing message to `send` as soon as
    /// it may leave: the leader's appends go out before its own durable write, so followers
    /// write in parallel with it; everything that depends on this node's persisted state
    /// goes out after that write.
    pub fn process_ready_with(&mut self, send: &mut dyn FnMut(Message)) -> Result<Output> {
        let mut out = Output::default();
        if self.raw.has_ready() {
            let mut ready = self.raw.ready();
            for m in ready.take_messages() {
                send(m);
            }
            if !ready.snapshot().is_empty() {
                let snapshot = ready.snapshot().clone();
                self.install_snapshot(snapshot, &mut out)?;
            }
            let committed = ready.take_committed_entries();
            self.raw.mut_store().append(ready.entries(), ready.hs())?;
            for m in ready.take_persisted_messages() {
                send(m);
            }
            // Committed entries were persisted in earlier rounds; applying them after this
            // round's write keeps the write (and the followers) from waiting on the apply.
            self.apply_entries(committed, &mut out)?;
            for rs in ready.take_read_states() {
                if let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                    self.reads_waiting
                        .push((u64::from_be_bytes(bytes), rs.index));
                }
            }
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(commit);
            }
            for m in light.take_messages() {
                send(m);
            }
            let committed = light.take_committed_entries();
            self.apply_entries(committed, &mut out)?;
            self.raw.advance_apply();
        }
        self.track_leadership(&mut out);
        self.release_reads(&mut out);
        if self.raw.store().take_snapshot_wanted() {
            self.snapshot_now()?;
        }
        self.maybe_snapshot()?;
        Ok(out)
    }

    fn track_leadership(&mut self, out: &mut Output) {
        let leader = self.is_leader();
        if self.was_leader && !leader {
            // Entries proposed as leader may or may not be committed by the next leader.
            for (id, _) in self.proposals.drain() {
                out.proposals.push((id, Err(ProposalError::Unknown)));
            }
            // Reads waiting on a confirmation from this term will not get one.
            self.reads_waiting.clear();
        }
        self.was_leader = leader;
    }

    fn release_reads(&mut self, out: &mut Output) {
        let applied = self.applied;
        self.reads_waiting.retain(|(id, index)| {
            if *index <= applied {
                out.reads.push(*id);
                false
            } else {
                true
            }
        });
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, out: &mut Output) -> Result<()> {
        let index = snapshot.get_metadata().index;
        let (members, removed) = restore(&self.state, &snapshot)?;
        self.raw.mut_store().install_snapshot(snapshot)?;
        self.members = members;
        self.removed = removed;
        self.applied = index;
        self.last_snapshot = index;
        out.membership_changed = true;
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        crash_point!("raft-apply-before");
        self.apply_each(entries, out)?;
        crash_point!("raft-apply-after");
        Ok(())
    }

    fn apply_each(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<()> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry, out),
                EntryType::EntryConfChange => self.apply_conf_change(&entry, out)?,
                EntryType::EntryConfChangeV2 => {
                    return Err(RaftError::Corrupt(format!(
                        "entry {} is a joint membership change, which Shoal never proposes",
                        entry.index
                    )));
                }
            }
            self.applied = entry.index;
        }
        Ok(())
    }

    /// Our pending proposal `id`, if `entry` is the one it appended (same index and term).
    fn take_proposal(&mut self, id: ProposalId, entry: &Entry) -> Option<Pending> {
        match self.proposals.get(&id) {
            Some(p) if p.at == (entry.index, entry.term) => self.proposals.remove(&id),
            _ => None,
        }
    }

    fn apply_normal(&mut self, entry: &Entry, out: &mut Output) {
        if entry.data.is_empty() {
            return; // A new leader's empty entry.
        }
        let own = untag(entry.context.as_ref())
            .filter(|(proposer, _)| *proposer == self.config.id)
            .and_then(|(_, id)| self.take_proposal(id, entry).map(|p| (id, p.changes)));
        let (own_id, cached) = match own {
            Some((id, changes)) => (Some(id), changes),
            None => (None, None),
        };
        let changes = match cached {
            // Our own proposal: the same changes the entry encodes, already decoded.
            Some(changes) => Ok(changes),
            None => v1::Transaction::decode(entry.data.as_ref())
                .map_err(|e| StoreError::InvalidTransaction(format!("undecodable entry: {e}")))
                .and_then(ChangeSet::from_proto),
        };
        let result = changes.and_then(|changes| self.state.apply(changes));
        if let Some(id) = own_id {
            out.proposals
                .push((id, result.map_err(ProposalError::Refused)));
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry, out: &mut Output) -> Result<()> {
        let cc = ConfChange::parse_from_bytes(entry.data.as_ref())
            .map_err(|e| RaftError::Corrupt(format!("membership change {}: {e}", entry.index)))?;
        let context = ConfChangeContext::decode(cc.context.as_ref()).unwrap_or_default();
        let cs = self.raw.apply_conf_change(&cc)?;
        self.raw.mut_store().set_conf_state(cs, entry.index)?;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let member = context.member.unwrap_or(RaftMember {
                    raft_id: cc.node_id,
                    ..Default::default()
                });
                self.members.insert(
                    cc.node_id,
                    RaftMember {
                        raft_id: cc.node_id,
                        ..member
                    },
                );
            }
            ConfChangeType::RemoveNode => {
                self.members.remove(&cc.node_id);
                self.removed.insert(cc.node_id);
                if cc.node_id == self.config.id {
                    out.removed = true;
                }
            }
        }
        out.membership_changed = true;
        if context.proposer == self.config.id
            && self.take_proposal(context.proposal, entry).is_some()
        {
            out.proposals
                .push((context.proposal, Ok(self.state.version())));
        }
        Ok(())
    }

    /// A snapshot is due every `snapshot_interval` entries — or, for a store larger than twice
    /// that, every (objects / 2) entries: a snapshot costs time in proportion to the store, so
    /// spacing them with its size keeps their cost per entry constant (with a fixed interval,
    /// throughput fell as the store grew: 34k → 19k transactions/s from 0 to 170k objects).
    fn maybe_snapshot(&mut self) -> Result<()> {
        let interval = self.config.snapshot_interval;
        if self.applied < self.last_snapshot + interval {
            return Ok(());
        }
        let scaled = (self.state.object_count() / 2) as u64;
        if self.applied < self.last_snapshot + scaled {
            return Ok(());
        }
        self.snapshot_now()
    }

    /// Sets how many applied entries separate snapshots (0: the default) and how many entries
    /// a snapshot leaves in the log for followers a little behind: the cluster spec's
    /// `raft.snapshot_interval` and `raft.log_entries_for_slow_followers`, as SwarmKit reads
    /// them. Takes effect at the next round.
    pub fn set_snapshot_policy(&mut self, interval: u64, keep_entries: u64) {
        self.config.snapshot_interval = match interval {
            0 => shoal_api::defaults::RAFT_SNAPSHOT_INTERVAL,
            n => n,
        };
        self.config.keep_entries = keep_entries;
    }

    /// Takes a snapshot at the applied index now.
    pub fn snapshot_now(&mut self) -> Result<()> {
        if self.applied <= self.last_snapshot {
            return Ok(());
        }
        let data = snapshot_data(&self.state, &self.members, &self.removed);
        let cs = self.raw.store().conf_state().clone();
        let keep = self.config.keep_entries;
        self.raw.mut_store().compact(self.applied, cs, data, keep)?;
        self.last_snapshot = self.applied;
        Ok(())
    }

    /// Tells raft-rs that a peer could not be reached, so it backs off sending to it.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Tells raft-rs whether a snapshot reached its follower.
    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    /// Hands leadership to `id` (used before a leader leaves).
    pub fn transfer_leader(&mut self, id: u64) {
        self.raw.transfer_leader(id);
    }

    /// Starts an election now.
    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raw.campaign()?)
    }
}

/// Restores the store and membership from a snapshot's data.
fn restore(
    state: &StateMachine,
    snapshot: &Snapshot,
) -> Result<(BTreeMap<u64, RaftMember>, BTreeSet<u64>)> {
    if snapshot.get_metadata().index == 0 {
        return Ok((BTreeMap::new(), BTreeSet::new()));
    }
    let data = v1::Snapshot::decode(snapshot.get_data())
        .map_err(|e| RaftError::Corrupt(format!("snapshot data: {e}")))?;
    state
        .restore(data.store.unwrap_or_default())
        .map_err(|e| RaftError::Corrupt(format!("snapshot refused by the store: {e}")))?;
    let membership = data.membership.unwrap_or_default();
    let members = membership
        .members
        .into_iter()
        .map(|m| (m.raft_id, m))
        .collect();
    Ok((members, membership.removed.into_iter().collect()))
}
