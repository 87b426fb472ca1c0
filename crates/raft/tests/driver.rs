//! Raft drivers on real threads and real time, connected by an in-process transport.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use shoal_api::clock::SystemClock;
use shoal_api::v1::{Annotations, Config, ConfigSpec, Meta, RaftMember};
use shoal_raft::{
    DriverConfig, LogStore, MemoryLog, NodeConfig, RaftDriver, RaftHandle, RaftNode, RaftProposer,
    Transport,
};
use shoal_store::{Reader, StateMachine, Store};

/// Delivers messages between drivers of this process; links can be cut.
#[derive(Default)]
struct Network {
    handles: Mutex<BTreeMap<u64, RaftHandle>>,
    down: Mutex<Vec<u64>>,
}

struct Link {
    net: Arc<Network>,
}

impl Transport for Link {
    fn send(&self, msg: Message) {
        let down = self.net.down.lock().unwrap();
        if down.contains(&msg.to) || down.contains(&msg.from) {
            return;
        }
        if let Some(h) = self.net.handles.lock().unwrap().get(&msg.to) {
            h.step(msg);
        }
    }

    fn set_members(&self, _: &BTreeMap<u64, RaftMember>) {}
}

struct Manager {
    driver: Option<RaftDriver>,
    store: Store,
    log: MemoryLog,
}

fn config(id: u64) -> DriverConfig {
    DriverConfig {
        node: NodeConfig {
            id,
            ..NodeConfig::new(id)
        },
        tick: Duration::from_millis(10),
    }
}

fn start(
    net: &Arc<Network>,
    id: u64,
    node: RaftNode,
    state: Arc<StateMachine>,
    log: MemoryLog,
) -> Manager {
    let driver = RaftDriver::start(
        node,
        state.clone(),
        config(id),
        Arc::new(Link { net: net.clone() }),
    );
    let handle = driver.handle();
    net.handles.lock().unwrap().insert(id, handle.clone());
    let store = Store::with_state(
        state,
        Arc::new(RaftProposer::new(handle)),
        Arc::new(SystemClock),
    );
    Manager {
        driver: Some(driver),
        store,
        log,
    }
}

fn handle(m: &Manager) -> RaftHandle {
    m.driver.as_ref().unwrap().handle()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn cluster(net: &Arc<Network>, n: u64) -> BTreeMap<u64, Manager> {
    let mut managers = BTreeMap::new();
    let log = MemoryLog::new();
    let state = Arc::new(StateMachine::new(64));
    let node = RaftNode::bootstrap(
        config(1).node,
        LogStore::open(Box::new(log.clone())).unwrap(),
        state.clone(),
        RaftMember {
            raft_id: 1,
            addr: "1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    managers.insert(1, start(net, 1, node, state, log));
    wait_for("a leader", || handle(&managers[&1]).status().is_leader).await;
    for id in 2..=n {
        let leader = handle(&managers[&1]);
        leader
            .add_member(RaftMember {
                raft_id: id,
                addr: id.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
        let log = MemoryLog::new();
        let state = Arc::new(StateMachine::new(64));
        let node = RaftNode::joining(
            config(id).node,
            LogStore::open(Box::new(log.clone())).unwrap(),
            state.clone(),
        )
        .unwrap();
        managers.insert(id, start(net, id, node, state, log));
    }
    let applied = handle(&managers[&1]).status().applied;
    wait_for("members to catch up", || {
        managers
            .values()
            .all(|m| handle(m).status().applied >= applied)
    })
    .await;
    managers
}

fn config_object(name: &str) -> Config {
    Config {
        meta: Some(Meta {
            id: name.into(),
            ..Default::default()
        }),
        spec: Some(ConfigSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            data: b"x".to_vec(),
            ..Default::default()
        }),
    }
}

fn leader(managers: &BTreeMap<u64, Manager>) -> Option<u64> {
    managers
        .iter()
        .filter(|(_, m)| m.driver.is_some())
        .find(|(_, m)| handle(m).status().is_leader)
        .map(|(id, _)| *id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_and_replicate() {
    let net = Arc::new(Network::default());
    let managers = cluster(&net, 3).await;
    let store = managers[&1].store.clone();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let name = format!("w{w:02}-{i:02}");
                store
                    .update(|tx| tx.create(config_object(&name)))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // (The status a handle reports is refreshed after the writers' answers go out: wait on
    // the data itself.)
    wait_for("replication", || {
        managers
            .values()
            .all(|m| m.store.view(|tx| tx.count::<Config>()) == 400)
    })
    .await;
    // A linearizable read through a follower sees everything acknowledged.
    handle(&managers[&3]).read_barrier().await.unwrap();
    assert_eq!(managers[&3].store.view(|tx| tx.count::<Config>()), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_follower_are_refused_with_the_leader_named() {
    let net = Arc::new(Network::default());
    let managers = cluster(&net, 3).await;
    let err = managers[&2]
        .store
        .update(|tx| tx.create(config_object("x")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not the leader"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    let net = Arc::new(Network::default());
    let mut managers = cluster(&net, 3).await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let name = format!("before{i}");
        managers[&1]
            .store
            .update(|tx| tx.create(config_object(&name)))
            .await
            .unwrap();
        acknowledged.push(name);
    }
    // Kill the leader: its thread stops and it stops receiving.
    let old = leader(&managers).unwrap();
    net.down.lock().unwrap().push(old);
    managers
        .get_mut(&old)
        .unwrap()
        .driver
        .take()
        .unwrap()
        .stop();
    let killed_at = Instant::now();
    wait_for("a new leader", || {
        leader(&managers).is_some_and(|l| l != old)
    })
    .await;
    let new = leader(&managers).unwrap();
    managers[&new]
        .store
        .update(|tx| tx.create(config_object("after")))
        .await
        .unwrap();
    let failover = killed_at.elapsed();
    assert!(failover < Duration::from_secs(10));
    for name in &acknowledged {
        assert!(
            managers[&new]
                .store
                .view(|tx| tx.get::<Config>(name).is_some()),
            "{name} lost"
        );
    }
    // The old leader comes back from its log and catches up.
    let state = Arc::new(StateMachine::new(64));
    let log = managers[&old].log.clone();
    let node = RaftNode::restart(
        config(old).node,
        LogStore::open(Box::new(log.clone())).unwrap(),
        state.clone(),
    )
    .unwrap();
    net.down.lock().unwrap().clear();
    managers.insert(old, start(&net, old, node, state, log));
    let applied = handle(&managers[&new]).status().applied;
    wait_for("the old leader to catch up", || {
        handle(&managers[&old]).status().applied >= applied
    })
    .await;
    assert_eq!(managers[&old].store.view(|tx| tx.count::<Config>()), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_a_write_fails_quickly_and_says_why() {
    let net = Arc::new(Network::default());
    let mut managers = cluster(&net, 3).await;
    let l = leader(&managers).unwrap();
    for id in [1, 2, 3] {
        if id != l {
            net.down.lock().unwrap().push(id);
            managers.get_mut(&id).unwrap().driver.take().unwrap().stop();
        }
    }
    // Check-quorum makes the leader step down after an election timeout (100 ms here).
    wait_for("the leader to step down", || {
        !handle(&managers[&l]).status().is_leader
    })
    .await;
    let start = Instant::now();
    let err = managers[&l]
        .store
        .update(|tx| tx.create(config_object("nope")))
        .await
        .unwrap_err();
    // Bounded, not a performance figure: the failure must come, not hang.
    assert!(start.elapsed() < Duration::from_secs(5));
    let text = err.to_string();
    assert!(
        text.contains("no leader: quorum lost (1 of 3 managers reachable)"),
        "{text}"
    );
    // Nothing was written.
    assert!(
        managers[&l]
            .store
            .view(|tx| tx.get::<Config>("nope").is_none())
    );
}
