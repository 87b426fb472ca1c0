//! Crash consistency: a manager killed at each named crash point of the Raft log, apply and
//! snapshot paths (`crates/raft/src/failpoints.rs`) loses no acknowledged write, and starts
//! again after the end of its log file is damaged.
//!
//! Each test arms one point in a real `shoal daemon` through `FAILPOINTS` (the point aborts the
//! process, as `kill -9` would), writes configs through the Control API recording which writes
//! were acknowledged, waits for the crash, restarts the manager without the point, and checks
//! that every acknowledged write is there, nothing that was never attempted is, and the
//! cluster takes writes again.
//!
//! Only with the `failpoints` feature:
//! `cargo test -p shoal --features failpoints --test crash_points`.

#![cfg(feature = "failpoints")]

mod support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::v1::{CreateConfigRequest, ListClustersRequest, UpdateClusterRequest};
use support::{Manager, config_names, config_spec, create_config, eventually};

/// SIGABRT: what `std::process::abort()` ends the process with.
const SIGABRT: i32 = 6;

/// Writes that were attempted, and those acknowledged.
#[derive(Default)]
struct History {
    attempted: BTreeSet<String>,
    acknowledged: BTreeSet<String>,
}

/// Lowers the cluster's snapshot interval and the entries kept for slow followers, so
/// snapshots and compactions happen after a few writes.
async fn snapshot_often(addr: &str, interval: u64, keep: u64) {
    let mut control = support::client(addr).await.unwrap();
    let cluster = control
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0);
    let mut spec = cluster.spec.clone().unwrap();
    let raft = spec.raft.get_or_insert_with(Default::default);
    raft.snapshot_interval = interval;
    raft.log_entries_for_slow_followers = keep;
    let meta = cluster.meta.unwrap();
    control
        .update_cluster(UpdateClusterRequest {
            cluster_id: meta.id,
            cluster_version: meta.version,
            spec: Some(spec),
            rotation: None,
        })
        .await
        .unwrap();
}

/// Writes configs `<prefix><writer>-<n>` from `writers` concurrent clients of `addr` until
/// `stop` is set or `limit` writes were made; a failed write is retried under a new name after
/// a pause (the manager may still be electing itself).
fn start_writers(
    addr: &str,
    prefix: &str,
    writers: usize,
    limit: usize,
    history: &Arc<Mutex<History>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (addr, prefix) = (addr.to_string(), prefix.to_string());
            let (history, stop) = (history.clone(), stop.clone());
            tokio::spawn(async move {
                let mut client = None;
                for n in 0..limit / writers {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if client.is_none() {
                        client = support::client(&addr).await;
                    }
                    let Some(c) = client.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let name = format!("{prefix}{w}-{n:04}");
                    history.lock().unwrap().attempted.insert(name.clone());
                    let call = c.create_config(CreateConfigRequest {
                        spec: Some(config_spec(&name)),
                    });
                    match tokio::time::timeout(Duration::from_secs(5), call).await {
                        Ok(Ok(_)) => {
                            history.lock().unwrap().acknowledged.insert(name);
                        }
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        Err(_) => client = None,
                    }
                }
            })
        })
        .collect()
}

/// Waits (bounded) for `m` to crash at `point`: ended by SIGABRT, its log naming the point.
fn assert_crashed_at(m: &mut Manager, point: &str, limit: Duration) {
    let status = m.wait_status(limit);
    let logs = m.logs();
    let status = status.unwrap_or_else(|| {
        panic!("the daemon did not crash at {point} within {limit:?}; its log:\n{logs}")
    });
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the daemon ended otherwise than by the crash point ({status:?}); its log:\n{logs}"
    );
    assert!(
        logs.contains(&format!("failpoint {point}: crashing")),
        "the daemon crashed, but not at {point}; its log:\n{logs}"
    );
}

/// Checks (bounded) that the manager at `addr` holds every acknowledged write and nothing
/// that was never attempted.
async fn assert_kept(addr: &str, history: &Mutex<History>, what: &str) {
    let (acknowledged, attempted) = {
        let h = history.lock().unwrap();
        (h.acknowledged.clone(), h.attempted.clone())
    };
    let names: BTreeSet<String> = eventually(
        &format!("{what}: {addr} to serve reads with every acknowledged write"),
        Duration::from_secs(30),
        async || {
            let names: BTreeSet<String> = config_names(addr).await.ok()?.into_iter().collect();
            acknowledged.is_subset(&names).then_some(names)
        },
    )
    .await;
    let unknown: Vec<_> = names.difference(&attempted).collect();
    assert!(
        unknown.is_empty(),
        "{what}: writes nobody made: {unknown:?}"
    );
}

/// One manager: restarted with `point` armed as `action`, written to until it crashes there,
/// restarted without it.
async fn crash_one_manager(point: &str, action: &str, snapshots: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut m = support::init_manager(dir.path(), "m1").await;
    let addr = m.addr.clone();
    let history = Arc::new(Mutex::new(History::default()));
    {
        let mut h = history.lock().unwrap();
        h.attempted.insert("one".into());
        h.acknowledged.insert("one".into());
    }
    if snapshots {
        // A snapshot every 20 entries, keeping 5 before it: compactions drop entries.
        snapshot_often(&addr, 20, 5).await;
    }
    // Writes the log holds before the crash run, some of them behind a snapshot.
    let stop = Arc::new(AtomicBool::new(false));
    for w in start_writers(&addr, "before-", 2, 40, &history, &stop) {
        w.await.unwrap();
    }
    let acknowledged = history.lock().unwrap().acknowledged.len();
    assert!(acknowledged > 30, "only {acknowledged} writes acknowledged");

    m.kill();
    let armed = format!("{point}={action}");
    m.restart_with_env(&[], &[("FAILPOINTS", armed.as_str())]);
    let writers = start_writers(&addr, "during-", 4, 2000, &history, &stop);
    tokio::task::block_in_place(|| assert_crashed_at(&mut m, point, Duration::from_secs(60)));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let during = history
        .lock()
        .unwrap()
        .acknowledged
        .iter()
        .filter(|n| n.starts_with("during-"))
        .count();

    m.restart(&[]);
    assert_kept(&addr, &history, point).await;
    eventually(
        &format!("{point}: a write after the restart"),
        Duration::from_secs(30),
        async || {
            create_config(std::slice::from_ref(&addr), "after")
                .await
                .ok()
        },
    )
    .await;
    eprintln!(
        "{point}: crashed after {during} acknowledged writes; none lost ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_a_log_append() {
    crash_one_manager("raft-log-append-before", "20*off->return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_the_log_fsync() {
    crash_one_manager("raft-log-fsync-before", "20*off->return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_log_fsync() {
    crash_one_manager("raft-log-fsync-after", "20*off->return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_log_append() {
    crash_one_manager("raft-log-append-after", "20*off->return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_applying() {
    crash_one_manager("raft-apply-before", "20*off->return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_applying() {
    crash_one_manager("raft-apply-after", "20*off->return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_saving_a_snapshot() {
    crash_one_manager("raft-snapshot-save-before", "return", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_saving_a_snapshot() {
    crash_one_manager("raft-snapshot-save-after", "return", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_a_compaction_commits() {
    crash_one_manager("raft-compact-before", "return", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_compaction() {
    // The second compaction after the restart: the first may drop nothing new.
    crash_one_manager("raft-compact-after", "1*off->return", true).await;
}

/// Three managers: the third falls behind the leader's compacted log while stopped, then is
/// restarted with `point` armed; it must crash there while catching up by snapshot, and catch
/// up when restarted without it.
///
/// With `membership_change`, a fourth manager joins while the third is stopped, so the
/// snapshot it catches up from brings a configuration it has never seen. After it has caught
/// up, the first and fourth managers are killed: the two left are 2 of 4, no quorum, and
/// must take no write. (A restarted member that kept the old configuration, {m1, m2, m3},
/// would count 2 of 3 and commit writes a quorum of the real configuration never saw.)
async fn crash_a_follower_catching_up(point: &str, membership_change: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut m1 = support::init_manager(dir.path(), "m1").await;
    let a1 = m1.addr.clone();
    snapshot_often(&a1, 20, 5).await;
    let m2 = support::join_manager(dir.path(), "m2", &a1).await;
    let mut m3 = support::join_manager(dir.path(), "m3", &a1).await;
    let a3 = m3.addr.clone();
    let history = Arc::new(Mutex::new(History::default()));
    {
        let mut h = history.lock().unwrap();
        h.attempted.insert("one".into());
        h.acknowledged.insert("one".into());
    }
    m3.kill();
    let mut m4 = if membership_change {
        Some(support::join_manager(dir.path(), "m4", &a1).await)
    } else {
        None
    };
    // 80 entries: the leader's log now starts long after m3's last entry.
    let stop = Arc::new(AtomicBool::new(false));
    for w in start_writers(&a1, "behind-", 2, 80, &history, &stop) {
        w.await.unwrap();
    }
    let acknowledged = history.lock().unwrap().acknowledged.len();
    assert!(acknowledged > 60, "only {acknowledged} writes acknowledged");

    let armed = format!("{point}=return");
    m3.restart_with_env(&[], &[("FAILPOINTS", armed.as_str())]);
    let writers = start_writers(&a1, "during-", 2, 400, &history, &stop);
    tokio::task::block_in_place(|| assert_crashed_at(&mut m3, point, Duration::from_secs(60)));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    m3.restart(&[]);
    assert_kept(&a3, &history, point).await;
    assert_kept(&a1, &history, point).await;
    if let Some(m4) = m4.as_mut() {
        m1.kill();
        m4.kill();
        // Several election timeouts: m3 (or m2) would have been elected by now.
        let survivors = [m2.addr.clone(), a3.clone()];
        let until = Instant::now() + Duration::from_secs(6);
        let mut n = 0;
        while Instant::now() < until {
            let name = format!("minority-{n}");
            n += 1;
            history.lock().unwrap().attempted.insert(name.clone());
            let write = create_config(&survivors, &name);
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(3), write).await {
                panic!(
                    "{point}: m2 and m3, 2 of 4 managers, acknowledged a write ({name}): \
                     m3 restarted with the configuration it had before it caught up"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        m1.restart(&[]);
        m4.restart(&[]);
    }
    // The cluster takes writes again (once the restarted managers have elected a leader).
    let all = [a1.clone(), m2.addr.clone(), a3.clone()];
    history.lock().unwrap().attempted.insert("after".into());
    eventually(
        &format!("{point}: the cluster to take writes again"),
        Duration::from_secs(30),
        async || match create_config(&all, "after").await {
            Ok(()) => Some(()),
            // An earlier try that timed out was committed after all.
            Err(e) if e.contains("AlreadyExists") => Some(()),
            Err(_) => None,
        },
    )
    .await;
    history.lock().unwrap().acknowledged.insert("after".into());
    assert_kept(&a3, &history, point).await;
    eprintln!(
        "{point} on a follower: no write lost ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_installing_a_snapshot() {
    crash_a_follower_catching_up("raft-snapshot-install-before", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_installing_a_snapshot() {
    crash_a_follower_catching_up("raft-snapshot-install-after", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inside_a_snapshot_install() {
    // The received snapshot's file is on disk; the old log, hard state and configuration
    // are still in the log's database.
    crash_a_follower_catching_up("raft-snapshot-install-saved", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inside_a_snapshot_install_that_changes_the_membership() {
    crash_a_follower_catching_up("raft-snapshot-install-saved", true).await;
}

/// A manager killed (`kill -9`) while writing, the end of its log file then damaged by
/// `damage`: it must refuse to start, saying what is damaged and what to do, rather than
/// guess which entries it held (see `RedbLog::open`).
async fn refuses_a_damaged_tail(how: &str, damage: impl FnOnce(&std::fs::File)) {
    let dir = tempfile::tempdir().unwrap();
    let mut m = support::init_manager(dir.path(), "m1").await;
    let addr = m.addr.clone();
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&addr, "w", 4, 4000, &history, &stop);
    eventually("100 writes", Duration::from_secs(30), async || {
        (history.lock().unwrap().acknowledged.len() >= 100).then_some(())
    })
    .await;
    m.kill();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let log = m.state_dir.join("raft/log.redb");
    damage(&std::fs::OpenOptions::new().write(true).open(&log).unwrap());

    m.restart(&[]);
    let code = tokio::task::block_in_place(|| m.wait_exit(Duration::from_secs(30)));
    let logs = m.logs();
    assert_eq!(
        code,
        Some(1),
        "{how}: the daemon did not refuse; its log:\n{logs}"
    );
    let refusal = logs
        .lines()
        .find(|l| l.contains("is damaged"))
        .unwrap_or_else(|| panic!("{how}: no refusal naming the damage; its log:\n{logs}"));
    assert!(
        refusal.contains(&log.display().to_string())
            && refusal.contains("refuses to start")
            && refusal.contains("join again"),
        "{how}: {refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_tail_is_refused_with_a_clear_error() {
    refuses_a_damaged_tail("last 100 bytes cut", |f| {
        let len = f.metadata().unwrap().len();
        f.set_len(len - 100).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_log_tail_is_refused_with_a_clear_error() {
    refuses_a_damaged_tail("3000 bytes of garbage appended", |mut f| {
        use std::io::{Seek, Write};
        f.seek(std::io::SeekFrom::End(0)).unwrap();
        f.write_all(&[0xa5; 3000]).unwrap();
    })
    .await;
}
