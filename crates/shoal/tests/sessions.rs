//! Agent sessions under faults, across real processes: a node that stops answering is marked
//! down and comes back, and a manager failover marks no live node down.

mod support;

use std::time::{Duration, Instant};

use shoal_api::v1::ListNodesRequest;
use shoal_api::v1::node_status::State;

fn node_id_of(state_dir: &std::path::Path) -> String {
    let certs = shoal_node::certificates::load(state_dir).unwrap().unwrap();
    shoal_ca::parse_node_certificate(&certs.cert_pem)
        .unwrap()
        .node_id
}

/// Each node's status as the managers at `addrs` report it (the first that answers).
async fn states(addrs: &[String]) -> Option<Vec<(String, i32)>> {
    for addr in addrs {
        let Some(mut c) = support::client(addr).await else {
            continue;
        };
        if let Ok(r) = c.list_nodes(ListNodesRequest::default()).await {
            return Some(
                r.into_inner()
                    .nodes
                    .into_iter()
                    .map(|n| {
                        (
                            n.meta.unwrap_or_default().id,
                            n.status.map(|s| s.state).unwrap_or_default(),
                        )
                    })
                    .collect(),
            );
        }
    }
    None
}

async fn state_of(addrs: &[String], node_id: &str) -> Option<i32> {
    states(addrs)
        .await?
        .into_iter()
        .find(|(id, _)| id == node_id)
        .map(|(_, s)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_goes_down_and_comes_back_ready() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    support::heartbeat_every_second(&m1.addr).await;
    let w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let id = node_id_of(&w1.state_dir);
    let managers = vec![m1.addr.clone()];
    support::eventually("w1 ready", Duration::from_secs(20), async || {
        (state_of(&managers, &id).await? == State::Ready as i32).then_some(())
    })
    .await;
    // SIGSTOP: no heartbeats, no clean close — the manager notices when they stop.
    w1.signal("STOP");
    support::eventually("w1 down", Duration::from_secs(30), async || {
        (state_of(&managers, &id).await? == State::Down as i32).then_some(())
    })
    .await;
    w1.signal("CONT");
    support::eventually("w1 ready again", Duration::from_secs(30), async || {
        (state_of(&managers, &id).await? == State::Ready as i32).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_marks_no_live_node_down() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    support::heartbeat_every_second(&m1.addr).await;
    let m2 = support::join_manager(dir.path(), "m2", &m1.addr).await;
    let m3 = support::join_manager(dir.path(), "m3", &m1.addr).await;
    let w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let mut managers = [m1, m2, m3];
    let addrs: Vec<String> = managers.iter().map(|m| m.addr.clone()).collect();
    let live: Vec<String> = managers
        .iter()
        .skip(1)
        .map(|m| node_id_of(&m.state_dir))
        .chain([node_id_of(&w1.state_dir)])
        .collect();
    support::eventually("every node ready", Duration::from_secs(30), async || {
        let states = states(&addrs).await?;
        (states.len() == 4 && states.iter().all(|(_, s)| *s == State::Ready as i32)).then_some(())
    })
    .await;

    // m1 leads (it created the cluster and nothing moved it): kill it.
    managers[0].kill();
    let survivors = addrs[1..].to_vec();
    support::eventually("a new leader", Duration::from_secs(30), async || {
        support::create_config(&survivors, "after-failover")
            .await
            .ok()
    })
    .await;
    // For eight heartbeat periods after the new leader took over, no live node is down.
    let until = Instant::now() + Duration::from_secs(8);
    let mut looked = 0;
    while Instant::now() < until {
        if let Some(states) = states(&survivors).await {
            looked += 1;
            for (id, state) in states {
                if live.contains(&id) {
                    assert_ne!(state, State::Down as i32, "live node {id} marked down");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(looked > 0, "no manager answered after the failover");
}
