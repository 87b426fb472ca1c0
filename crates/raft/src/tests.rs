//! An in-process cluster with a deterministic network: messages go through one queue that
//! the test delivers, drops (crashed nodes, cut links) and orders, and time is ticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::Message;
use shoal_api::v1::{Annotations, Config, ConfigSpec, Meta, RaftMember};
use shoal_store::{Action, Change, ChangeSet, Object, StateMachine};

use crate::RaftError;
use crate::node::{NodeConfig, ProposalError, ProposalId, RaftNode};
use crate::storage::{LogStore, MemoryLog};

struct Cluster {
    /// Percentage of messages lost, and of messages held back one round (reordered).
    drop_percent: u64,
    delay_percent: u64,
    rng: u64,
    held: Vec<Message>,
    nodes: BTreeMap<u64, RaftNode>,
    states: BTreeMap<u64, Arc<StateMachine>>,
    logs: BTreeMap<u64, MemoryLog>,
    cut: BTreeSet<(u64, u64)>,
    queue: VecDeque<Message>,
    results: BTreeMap<(u64, ProposalId), Result<u64, ProposalError>>,
    reads: BTreeMap<u64, Vec<u64>>,
    snapshot_interval: u64,
}

fn config_object(name: &str) -> ChangeSet {
    let object = Config {
        meta: Some(Meta {
            id: name.into(),
            ..Default::default()
        }),
        spec: Some(ConfigSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            data: name.as_bytes().to_vec(),
            ..Default::default()
        }),
    };
    ChangeSet {
        changes: vec![Change {
            action: Action::Create,
            object: Object::Config(Arc::new(object)),
        }],
        reads: vec![],
    }
}

impl Cluster {
    fn config(&self, id: u64) -> NodeConfig {
        NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            snapshot_interval: self.snapshot_interval,
            keep_entries: 5,
        }
    }

    fn empty(snapshot_interval: u64) -> Self {
        Self {
            drop_percent: 0,
            delay_percent: 0,
            rng: 0x2545f4914f6cdd1d,
            held: Vec::new(),
            nodes: BTreeMap::new(),
            states: BTreeMap::new(),
            logs: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            results: BTreeMap::new(),
            reads: BTreeMap::new(),
            snapshot_interval,
        }
    }

    /// A cluster of `n` members: node 1 bootstraps, the others join one by one.
    fn new(n: u64) -> Self {
        Self::with_snapshot_interval(n, 10_000)
    }

    fn with_snapshot_interval(n: u64, snapshot_interval: u64) -> Self {
        let mut c = Self::empty(snapshot_interval);
        let log = MemoryLog::new();
        let state = Arc::new(StateMachine::new(16));
        let node = RaftNode::bootstrap(
            c.config(1),
            LogStore::open(Box::new(log.clone())).unwrap(),
            state.clone(),
            RaftMember {
                raft_id: 1,
                node_id: "node1".into(),
                addr: "addr1".into(),
            },
        )
        .unwrap();
        c.nodes.insert(1, node);
        c.states.insert(1, state);
        c.logs.insert(1, log);
        c.elect();
        for id in 2..=n {
            c.add(id);
        }
        c
    }

    /// Adds member `id` through the leader and starts it.
    fn add(&mut self, id: u64) {
        let leader = self.leader().expect("a leader");
        let member = RaftMember {
            raft_id: id,
            node_id: format!("node{id}"),
            addr: format!("addr{id}"),
        };
        let p = self
            .nodes
            .get_mut(&leader)
            .unwrap()
            .propose_add_member(member)
            .unwrap();
        self.stabilize();
        assert!(
            self.results.contains_key(&(leader, p)),
            "membership change applied"
        );
        let log = MemoryLog::new();
        let state = Arc::new(StateMachine::new(16));
        let node = RaftNode::joining(
            self.config(id),
            LogStore::open(Box::new(log.clone())).unwrap(),
            state.clone(),
        )
        .unwrap();
        self.nodes.insert(id, node);
        self.states.insert(id, state);
        self.logs.insert(id, log);
        self.tick(3);
    }

    fn up(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Runs ready processing and delivers messages until nothing moves.
    fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for id in self.up() {
                let out = self.nodes.get_mut(&id).unwrap().process_ready().unwrap();
                if !out.messages.is_empty() || !out.proposals.is_empty() || !out.reads.is_empty() {
                    moved = true;
                }
                self.queue.extend(out.messages);
                for (p, r) in out.proposals {
                    self.results.insert((id, p), r);
                }
                self.reads.entry(id).or_default().extend(out.reads);
            }
            // Messages held back last round go out now, after newer ones: reordering.
            let held = std::mem::take(&mut self.held);
            self.queue.extend(held);
            while let Some(msg) = self.queue.pop_front() {
                if self.cut.contains(&(msg.from, msg.to)) {
                    continue;
                }
                let roll = self.roll();
                if roll < self.drop_percent {
                    continue;
                }
                if roll < self.drop_percent + self.delay_percent {
                    self.held.push(msg);
                    moved = true;
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&msg.to) {
                    node.step(msg).unwrap();
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    /// A deterministic roll in 0..100.
    fn roll(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.stabilize();
        }
    }

    /// The leader of the highest term among running nodes.
    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_leader())
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Ticks until a leader is elected that a majority of running nodes follows.
    fn elect(&mut self) -> u64 {
        for _ in 0..200 {
            self.tick(1);
            if let Some(l) = self.leader() {
                let followers = self
                    .nodes
                    .values()
                    .filter(|n| n.leader() == Some(l))
                    .count();
                if followers * 2 > self.nodes.len().max(1) || self.nodes.len() == 1 {
                    return l;
                }
            }
        }
        panic!("no leader elected");
    }

    /// Ticks until `done` holds, at most `limit` ticks.
    fn tick_until(&mut self, limit: usize, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..limit {
            if done(self) {
                return;
            }
            self.tick(1);
        }
        assert!(done(self), "condition not reached in {limit} ticks");
    }

    fn propose(&mut self, on: u64, name: &str) -> Result<ProposalId, RaftError> {
        self.nodes
            .get_mut(&on)
            .unwrap()
            .propose(config_object(name))
    }

    /// Proposes on the leader and waits for the outcome.
    fn write(&mut self, name: &str) -> Result<u64, ProposalError> {
        let leader = self.leader().expect("a leader");
        let p = self
            .propose(leader, name)
            .expect("the leader accepts proposals");
        self.stabilize();
        self.results.remove(&(leader, p)).expect("an outcome")
    }

    fn crash(&mut self, id: u64) {
        self.nodes.remove(&id);
        self.states.remove(&id);
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    fn restart(&mut self, id: u64) {
        let state = Arc::new(StateMachine::new(16));
        let log = LogStore::open(Box::new(self.logs[&id].clone())).unwrap();
        let node = RaftNode::restart(self.config(id), log, state.clone()).unwrap();
        self.nodes.insert(id, node);
        self.states.insert(id, state);
    }

    /// Cuts every link between `group` and the other nodes, both ways.
    fn partition(&mut self, group: &[u64]) {
        let all: Vec<u64> = self.logs.keys().copied().collect();
        for a in group {
            for b in &all {
                if !group.contains(b) {
                    self.cut.insert((*a, *b));
                    self.cut.insert((*b, *a));
                }
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn names(&self, id: u64) -> BTreeSet<String> {
        let snapshot = self.states[&id].snapshot();
        snapshot
            .configs
            .iter()
            .map(|c| c.meta.as_ref().unwrap().id.clone())
            .collect()
    }

    /// Every running node has applied the same log and holds the same store, byte for byte.
    fn assert_consistent(&self) {
        let mut reference: Option<(u64, Vec<u8>)> = None;
        for (id, state) in &self.states {
            let bytes = state.snapshot().encode_to_vec();
            match &reference {
                None => reference = Some((*id, bytes)),
                Some((rid, rbytes)) => {
                    assert_eq!(&bytes, rbytes, "node {id} differs from node {rid}");
                }
            }
        }
    }
}

#[test]
fn a_new_cluster_elects_its_only_member() {
    let mut c = Cluster::new(1);
    assert_eq!(c.leader(), Some(1));
    assert!(c.write("a").is_ok());
    assert_eq!(c.names(1), BTreeSet::from(["a".to_string()]));
}

#[test]
fn three_members_replicate_every_write() {
    let mut c = Cluster::new(3);
    for i in 0..20 {
        c.write(&format!("w{i:02}")).unwrap();
    }
    c.tick(2);
    c.assert_consistent();
    assert_eq!(c.names(3).len(), 20);
    assert_eq!(c.nodes[&1].members().len(), 3);
    assert_eq!(c.nodes[&3].members()[&2].addr, "addr2");
}

#[test]
fn refused_transactions_are_refused_everywhere() {
    let mut c = Cluster::new(3);
    c.write("dup").unwrap();
    let err = c.write("dup").unwrap_err();
    assert!(matches!(err, ProposalError::Refused(_)), "{err}");
    c.tick(2);
    c.assert_consistent();
}

#[test]
fn leader_loss_elects_a_new_leader_that_has_every_acknowledged_write() {
    let mut c = Cluster::new(3);
    for i in 0..5 {
        c.write(&format!("before{i}")).unwrap();
    }
    let old = c.leader().unwrap();
    c.crash(old);
    let new = c.elect();
    assert_ne!(new, old);
    assert_eq!(c.names(new).len(), 5);
    c.write("after").unwrap();
    c.restart(old);
    c.tick(5);
    c.assert_consistent();
    assert_eq!(c.names(old).len(), 6);
}

#[test]
fn follower_loss_does_not_stop_writes() {
    let mut c = Cluster::new(3);
    let leader = c.leader().unwrap();
    let follower = c.up().into_iter().find(|id| *id != leader).unwrap();
    c.crash(follower);
    for i in 0..5 {
        c.write(&format!("w{i}")).unwrap();
    }
    c.restart(follower);
    c.tick(5);
    c.assert_consistent();
    assert_eq!(c.names(follower).len(), 5);
}

#[test]
fn an_isolated_leader_steps_down_and_the_majority_moves_on() {
    let mut c = Cluster::new(3);
    c.write("a").unwrap();
    let old = c.leader().unwrap();
    // A proposal in flight when the leader is cut off.
    let p = c.propose(old, "lost").unwrap();
    c.partition(&[old]);
    // Check-quorum: the isolated leader stops believing it leads; the others elect one.
    // (Ticks are synchronous here, so elections may split a few times: bounded retries.)
    c.tick_until(200, |c| {
        !c.nodes[&old].is_leader() && c.leader().is_some_and(|l| l != old)
    });
    assert!(!c.nodes[&old].is_leader());
    assert!(matches!(
        c.propose(old, "x"),
        Err(RaftError::NotLeader { .. })
    ));
    assert_eq!(c.results.get(&(old, p)), Some(&Err(ProposalError::Unknown)));
    let new = c.leader().unwrap();
    assert_ne!(new, old);
    c.write("b").unwrap();
    c.heal();
    c.tick(10);
    c.assert_consistent();
    assert!(c.names(old).contains("b"));
}

#[test]
fn quorum_loss_refuses_writes_and_recovery_keeps_the_data() {
    let mut c = Cluster::new(3);
    c.write("kept").unwrap();
    let leader = c.leader().unwrap();
    let others: Vec<u64> = c.up().into_iter().filter(|id| *id != leader).collect();
    for id in &others {
        c.crash(*id);
    }
    c.tick(25);
    assert!(c.leader().is_none(), "no leader without a quorum");
    assert!(matches!(
        c.propose(leader, "no"),
        Err(RaftError::NotLeader { leader: None })
    ));
    c.restart(others[0]);
    c.elect();
    c.write("again").unwrap();
    c.restart(others[1]);
    c.tick(5);
    c.assert_consistent();
    assert_eq!(
        c.names(others[1]),
        BTreeSet::from(["kept".to_string(), "again".to_string()])
    );
}

#[test]
fn restarting_every_member_at_once_keeps_the_committed_state() {
    let mut c = Cluster::new(3);
    for i in 0..10 {
        c.write(&format!("w{i}")).unwrap();
    }
    for id in [1, 2, 3] {
        c.crash(id);
    }
    for id in [1, 2, 3] {
        c.restart(id);
    }
    c.elect();
    c.write("after").unwrap();
    c.tick(3);
    c.assert_consistent();
    assert_eq!(c.names(2).len(), 11);
}

#[test]
fn a_lagging_member_catches_up_from_a_snapshot() {
    let mut c = Cluster::with_snapshot_interval(3, 20);
    let leader = c.leader().unwrap();
    let follower = c.up().into_iter().find(|id| *id != leader).unwrap();
    c.crash(follower);
    for i in 0..100 {
        c.write(&format!("w{i:03}")).unwrap();
    }
    // The leader compacted its log past what the follower has.
    let first = raft::Storage::first_index(c.nodes[&leader].raw_store()).unwrap();
    assert!(first > 20, "log compacted (first index {first})");
    c.restart(follower);
    c.tick(10);
    c.assert_consistent();
    assert_eq!(c.names(follower).len(), 100);
}

#[test]
fn a_new_member_gets_the_whole_state() {
    let mut c = Cluster::with_snapshot_interval(1, 30);
    for i in 0..80 {
        c.write(&format!("w{i:02}")).unwrap();
    }
    c.add(2);
    c.add(3);
    c.tick(5);
    c.assert_consistent();
    assert_eq!(c.names(3).len(), 80);
    // And it takes part in later writes.
    c.write("later").unwrap();
    c.tick(2);
    assert!(c.names(3).contains("later"));
}

#[test]
fn force_new_cluster_keeps_the_data_and_accepts_new_members() {
    let mut c = Cluster::new(3);
    for i in 0..5 {
        c.write(&format!("w{i}")).unwrap();
    }
    for id in [1, 2, 3] {
        c.crash(id);
    }
    let log = LogStore::open(Box::new(c.logs[&2].clone())).unwrap();
    let state = Arc::new(StateMachine::new(16));
    RaftNode::force_new_cluster(&c.config(2), log, state).unwrap();
    c.restart(2);
    assert_eq!(c.elect(), 2);
    assert_eq!(c.nodes[&2].voters(), BTreeSet::from([2]));
    assert_eq!(c.names(2).len(), 5);
    c.write("alone").unwrap();
    c.add(4);
    c.tick(5);
    c.assert_consistent();
    assert_eq!(c.names(4).len(), 6);
    // The old members are out for good.
    assert!(c.nodes[&2].removed().contains(&1));
}

#[test]
fn removing_a_member_is_refused_when_it_would_lose_quorum() {
    let mut c = Cluster::new(3);
    let leader = c.leader().unwrap();
    let followers: Vec<u64> = c.up().into_iter().filter(|id| *id != leader).collect();
    c.crash(followers[0]);
    c.tick(25);
    let err = c
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_remove_member(followers[1])
        .unwrap_err();
    assert!(err.to_string().contains("would lose quorum"), "{err}");
    // Removing the crashed one is fine: the two remaining are both reachable.
    let p = c
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_remove_member(followers[0])
        .unwrap();
    c.stabilize();
    assert!(c.results[&(leader, p)].is_ok());
    assert_eq!(c.nodes[&leader].voters().len(), 2);
    c.write("two").unwrap();
}

#[test]
fn a_removed_member_learns_it_and_cannot_come_back() {
    let mut c = Cluster::new(3);
    let leader = c.leader().unwrap();
    let gone = c.up().into_iter().find(|id| *id != leader).unwrap();
    let p = c
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_remove_member(gone)
        .unwrap();
    c.stabilize();
    assert!(c.results[&(leader, p)].is_ok());
    c.tick(3);
    assert!(!c.nodes[&leader].voters().contains(&gone));
    let err = c
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_add_member(RaftMember {
            raft_id: gone,
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("was removed"), "{err}");
}

#[test]
fn five_members_survive_a_minority_partition_and_block_in_a_minority() {
    let mut c = Cluster::new(5);
    c.write("a").unwrap();
    let leader = c.leader().unwrap();
    let others: Vec<u64> = c.up().into_iter().filter(|id| *id != leader).collect();
    // The leader and one follower are cut off from the other three.
    c.partition(&[leader, others[0]]);
    let mut new = None;
    for _ in 0..200 {
        c.tick(1);
        new = c.leader().filter(|l| others[1..].contains(l));
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("the majority side elects a leader");
    assert!(
        others[1..].contains(&new),
        "the majority side elected {new}"
    );
    c.write("b").unwrap();
    // Check-quorum: the old leader steps down within an election timeout of losing contact.
    for _ in 0..30 {
        if !c.nodes[&leader].is_leader() {
            break;
        }
        c.tick(1);
    }
    assert!(
        !c.nodes[&leader].is_leader(),
        "the minority side has no leader"
    );
    c.heal();
    c.tick(10);
    c.assert_consistent();
}

#[test]
fn writes_survive_message_loss_and_reordering() {
    let mut c = Cluster::new(3);
    c.drop_percent = 20;
    c.delay_percent = 20;
    let mut acknowledged = BTreeSet::new();
    for i in 0..60 {
        let name = format!("w{i:02}");
        if c.leader().is_none() {
            c.elect();
        }
        let leader = c.leader().unwrap();
        if let Ok(p) = c.propose(leader, &name) {
            c.tick(3);
            if let Some(Ok(_)) = c.results.get(&(leader, p)) {
                acknowledged.insert(name);
            }
        }
    }
    // Heal the network: everything converges, and nothing acknowledged is missing.
    c.drop_percent = 0;
    c.delay_percent = 0;
    c.tick(30);
    c.assert_consistent();
    let names = c.names(1);
    assert!(acknowledged.is_subset(&names));
    assert!(
        acknowledged.len() > 30,
        "{} acknowledged",
        acknowledged.len()
    );
}

#[test]
fn reads_are_confirmed_by_a_quorum() {
    let mut c = Cluster::new(3);
    c.write("a").unwrap();
    let leader = c.leader().unwrap();
    let r = c.nodes.get_mut(&leader).unwrap().read_index();
    c.stabilize();
    assert!(c.reads[&leader].contains(&r));
    // An isolated leader cannot confirm a read.
    c.partition(&[leader]);
    let r2 = c.nodes.get_mut(&leader).unwrap().read_index();
    c.tick(3);
    assert!(!c.reads[&leader].contains(&r2));
}

/// Many rounds of writes while members crash and restart at random (seeded): afterwards
/// every member holds the same state, every acknowledged write is there, and nothing
/// appears that was not proposed.
#[test]
fn stress_writes_through_crashes() {
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut c = Cluster::new(5);
    let mut acknowledged = BTreeSet::new();
    let mut proposed = BTreeSet::new();
    let mut down: Vec<u64> = Vec::new();
    for round in 0..150 {
        match next() % 10 {
            0 if down.len() < 2 => {
                let victim = c.up()[(next() % c.up().len() as u64) as usize];
                c.crash(victim);
                down.push(victim);
            }
            1 if !down.is_empty() => {
                let back = down.remove(0);
                c.restart(back);
            }
            _ => {}
        }
        if c.leader().is_none() {
            c.elect();
        }
        let leader = c.leader().unwrap();
        let name = format!("r{round:03}");
        proposed.insert(name.clone());
        if let Ok(p) = c.propose(leader, &name) {
            c.tick(1);
            if let Some(Ok(_)) = c.results.get(&(leader, p)) {
                acknowledged.insert(name);
            }
        }
    }
    for id in down.drain(..) {
        c.restart(id);
    }
    c.elect();
    c.tick(20);
    c.assert_consistent();
    let names = c.names(1);
    assert!(
        acknowledged.is_subset(&names),
        "an acknowledged write was lost"
    );
    assert!(
        names.is_subset(&proposed),
        "a write appeared that was never proposed"
    );
    assert!(
        acknowledged.len() > 100,
        "most writes were acknowledged ({})",
        acknowledged.len()
    );
}

#[test]
fn force_new_cluster_after_a_restart_without_quorum_keeps_every_write() {
    let mut c = Cluster::new(2);
    c.write("one").unwrap();
    c.write("two").unwrap();
    c.crash(2);
    c.crash(1);
    c.restart(1);
    c.tick(40);
    c.crash(1);
    let log = LogStore::open(Box::new(c.logs[&1].clone())).unwrap();
    let state = Arc::new(StateMachine::new(16));
    RaftNode::force_new_cluster(&c.config(1), log, state).unwrap();
    c.restart(1);
    c.elect();
    assert_eq!(
        c.names(1),
        BTreeSet::from(["one".to_string(), "two".to_string()])
    );
}
