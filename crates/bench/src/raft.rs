//! `shoal-bench raft` (scenario S2): Raft-committed store writes and leader failover.
//!
//! Throughput and latency: three managers, each with its own log on disk (redb, fsync per
//! durable write). The leader runs inside this process so its store can be driven directly
//! (as SwarmKit's figures drive `MemoryStore.Update` on the leader); the two followers are
//! separate `shoal daemon` processes reached over gRPC on loopback. Writers each commit
//! single-object transactions (create a config) one after another; batched creates go
//! through `Store::batch` (200 objects per transaction).
//!
//! Failover: three `shoal daemon` processes; a client writes through the Control API;
//! the leader is killed with SIGKILL; the figure is the time from the kill to the first
//! write committed by the new leader. The killed manager is restarted and caught up before
//! the next round.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::{
    Annotations, Cluster, Config, ConfigSpec, CreateConfigRequest, ListClustersRequest,
    ListNodesRequest, Meta, NodeRole,
};
use shoal_node::{Daemon, DaemonConfig};
use shoal_store::{By, Reader, Store};
use shoal_tls::{Credentials, Dialer};

use crate::report::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent writers to measure, comma-separated.
    #[arg(long, default_value = "1,8,64,256", value_delimiter = ',')]
    writers: Vec<usize>,
    /// Seconds each writer level runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, default_value = "10000,50000", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Managers for the throughput figures (1 measures the leader alone, without replication).
    #[arg(long, default_value_t = 3)]
    managers: usize,
    /// Leader kills for the failover figure (0 to skip).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The `shoal` binary (default: next to this one).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Directory for the managers' state (default: a temporary directory under the current
    /// directory, so that fsync hits the same disk as the project).
    #[arg(long)]
    dir: Option<PathBuf>,
}

use crate::report::progress;

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

struct Process {
    child: Option<Child>,
    addr: String,
    state: PathBuf,
    bin: PathBuf,
}

impl Process {
    fn start(bin: &Path, state: PathBuf, addr: String, extra: &[&str]) -> Process {
        let mut p = Process {
            child: None,
            addr,
            state,
            bin: bin.to_path_buf(),
        };
        p.spawn(extra);
        p
    }

    fn spawn(&mut self, extra: &[&str]) {
        let child = Command::new(&self.bin)
            .args(["daemon", "--log-level", "warn", "--state-dir"])
            .arg(&self.state)
            .args(["--listen-remote-api", &self.addr])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting shoal daemon");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(name: &str) -> Config {
    Config {
        meta: Some(Meta {
            id: shoal_api::id::new_id(),
            ..Default::default()
        }),
        spec: Some(spec(name)),
    }
}

/// A small config (64 bytes of data) named `name`: the unit of write of the Raft scenarios.
pub fn spec(name: &str) -> ConfigSpec {
    ConfigSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        data: vec![b'x'; 64],
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_applied(store: &Store, handle: &shoal_raft::RaftHandle, name: &str) {
    // A write through the leader proves the cluster commits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = config(name);
        if handle.status().is_leader && store.update(|tx| tx.create(c)).await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("raft");
    let bin = match crate::simagent::shoal_bin(&args.shoal_bin) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    };
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-raft-")
        .tempdir_in(&base)
        .expect("a temporary directory");
    report.notes.push(format!(
        "{} managers, own redb log each with fsync, gRPC on loopback; leader in the bench process; state in {}",
        args.managers,
        base.display()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        throughput(&args, &bin, dir.path(), &mut report).await;
        if args.kills > 0 {
            failover(&args, &bin, dir.path(), &mut report).await;
        }
    });
    report
}

async fn throughput(args: &Args, bin: &Path, dir: &Path, report: &mut Report) {
    progress("starting the leader (in process) and two followers");
    let leader_addr = free_addr();
    let mut leader_config = DaemonConfig::new(dir.join("t-leader"));
    leader_config.listen_remote_api = leader_addr.parse().expect("address");
    leader_config.init = true;
    let daemon = Daemon::start(leader_config)
        .await
        .expect("starting the leader");
    let running = daemon.spawn();
    let store = running.store.clone();
    let handle = running.handle.clone();
    wait_applied(&store, &handle, "warmup-0").await;
    let token = store
        .view(|tx| tx.find::<Cluster>(By::All).pop())
        .and_then(|c| c.root_ca.clone())
        .and_then(|r| r.join_tokens)
        .expect("the cluster's join tokens")
        .manager;
    let _followers: Vec<Process> = (1..args.managers.max(1))
        .map(|i| {
            Process::start(
                bin,
                dir.join(format!("t-follower{i}")),
                free_addr(),
                &["--join-addr", &leader_addr, "--join-token", &token],
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let managers = args.managers.max(1);
    while handle.status().voters < managers || handle.status().reachable < managers {
        assert!(Instant::now() < deadline, "followers did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_applied(&store, &handle, "warmup-1").await;

    for &writers in &args.writers {
        progress(format!(
            "{writers} concurrent writers for {:.0} s",
            args.seconds
        ));
        let stop = Instant::now() + Duration::from_secs_f64(args.seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < stop {
                    let c = config(&format!("w{writers}-{w}-{i}"));
                    let t = Instant::now();
                    if store.update(|tx| tx.create(c)).await.is_ok() {
                        latencies.push(t.elapsed());
                    }
                    i += 1;
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("writer"));
        }
        let elapsed = started.elapsed();
        all.sort();
        let tps = all.len() as f64 / elapsed.as_secs_f64();
        let (anchor_tps, anchor_p50) = match writers {
            1 => (Some(1507.0), Some(0.57)),
            8 => (Some(1419.0), Some(4.9)),
            64 => (Some(1199.0), Some(45.6)),
            256 => (Some(1318.0), Some(175.0)),
            _ => (None, None),
        };
        report.row(
            format!("{writers} writers: transactions/s"),
            tps,
            "tx/s",
            anchor_tps,
            None,
        );
        report.row(
            format!("{writers} writers: commit latency p50"),
            percentile(&all, 0.5).as_secs_f64() * 1e3,
            "ms",
            anchor_p50,
            (writers == 1).then_some(0.35),
        );
        report.row(
            format!("{writers} writers: commit latency p99"),
            percentile(&all, 0.99).as_secs_f64() * 1e3,
            "ms",
            None,
            None,
        );
    }

    for &n in &args.batches {
        progress(format!("batch of {n} creates"));
        let started = Instant::now();
        let mut batch = store.batch();
        for i in 0..n {
            let mut c = Some(config(&format!("b{n}-{i}")));
            batch
                .update(|tx| tx.create(c.take().expect("configs are far below the size limit")))
                .await
                .expect("batch update");
        }
        batch.commit().await.expect("batch commit");
        let rate = n as f64 / started.elapsed().as_secs_f64();
        let anchor = if n >= 50_000 { 45_400.0 } else { 37_600.0 };
        report.row(
            format!("batched creates ({n}): objects/s"),
            rate,
            "obj/s",
            Some(anchor),
            None,
        );
    }
    running.stop().await.expect("stopping the leader");
}

async fn control(dialer: &Dialer, addr: &str) -> Option<ControlClient<tonic::transport::Channel>> {
    let channel = dialer.connect(addr).await.ok()?;
    Some(ControlClient::new(channel))
}

/// A client identity: the certificates of the manager whose state is in `state_dir`, once
/// it has written them.
async fn dialer_of(state_dir: &Path) -> Dialer {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(certificates)) = shoal_node::certificates::load(state_dir) {
            let credentials = Credentials::new(certificates).expect("usable certificates");
            return Dialer::mutual(credentials).with_request_timeout(Duration::from_millis(500));
        }
        assert!(
            Instant::now() < deadline,
            "the first manager wrote no certificates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The manager join token, from any of `addrs`.
async fn manager_token(dialer: &Dialer, addrs: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for a in addrs {
            if let Some(mut c) = control(dialer, a).await
                && let Ok(r) = c.list_clusters(ListClustersRequest::default()).await
                && let Some(t) = r
                    .into_inner()
                    .clusters
                    .pop()
                    .and_then(|c| c.root_ca)
                    .and_then(|r| r.join_tokens)
            {
                return t.manager;
            }
        }
        assert!(Instant::now() < deadline, "no manager gave a join token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes through whichever of `addrs` leads; Some(index) of the manager that took it.
async fn write_any(dialer: &Dialer, addrs: &[String], name: &str) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        let Some(mut c) = control(dialer, a).await else {
            continue;
        };
        if c.create_config(CreateConfigRequest {
            spec: Some(spec(name)),
        })
        .await
        .is_ok()
        {
            return Some(i);
        }
    }
    None
}

/// The index in `addrs` of the leader, once some manager's store lists every manager of
/// `addrs` as reachable and one of them as the leader.
async fn stable_leader(dialer: &Dialer, addrs: &[String]) -> Option<usize> {
    for a in addrs {
        let Some(mut c) = control(dialer, a).await else {
            continue;
        };
        let request = ListNodesRequest {
            roles: vec![NodeRole::Manager as i32],
            ..Default::default()
        };
        if let Ok(nodes) = c.list_nodes(request).await
            && let Ok(leader) = crate::failover::leader_index(&nodes.into_inner().nodes, addrs)
        {
            return Some(leader);
        }
    }
    None
}

async fn failover(args: &Args, bin: &Path, dir: &Path, report: &mut Report) {
    progress(format!(
        "failover: three manager processes, {} leader kills",
        args.kills
    ));
    let mut managers: Vec<Process> = Vec::new();
    let first = free_addr();
    managers.push(Process::start(
        bin,
        dir.join("f-1"),
        first.clone(),
        &["--init"],
    ));
    let addrs = |m: &Vec<Process>| m.iter().map(|p| p.addr.clone()).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dialer = dialer_of(&dir.join("f-1")).await;
    while write_any(&dialer, std::slice::from_ref(&first), "start")
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "the first manager did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = manager_token(&dialer, std::slice::from_ref(&first)).await;
    for i in 2..=3 {
        managers.push(Process::start(
            bin,
            dir.join(format!("f-{i}")),
            free_addr(),
            &["--join-addr", &first, "--join-token", &token],
        ));
    }
    let mut times = Vec::new();
    let mut seq = 0u64;
    for round in 0..args.kills {
        // Stable cluster: every manager running, a leader taking writes.
        let all = addrs(&managers);
        // (A follower takes a write too, forwarding it: the leader is asked for by name.)
        let mut leader = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while leader.is_none() {
            seq += 1;
            if write_any(&dialer, &all, &format!("f{seq}")).await.is_some() {
                leader = stable_leader(&dialer, &all).await;
            }
            assert!(Instant::now() < deadline, "no leader before round {round}");
            if leader.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let leader = leader.expect("leader");
        // Let the restarted member catch up so a quorum survives the kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let survivors: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, a)| a.clone())
            .collect();
        let killed_at = Instant::now();
        managers[leader].kill();
        loop {
            seq += 1;
            if write_any(&dialer, &survivors, &format!("f{seq}"))
                .await
                .is_some()
            {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(60),
                "no new leader after a kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed_at.elapsed();
        progress(format!(
            "round {}: new leader after {:.0} ms",
            round + 1,
            took.as_secs_f64() * 1e3
        ));
        times.push(took);
        managers[leader].spawn(&[]);
    }
    times.sort();
    report.row(
        "failover: kill -9 to first commit, p50",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "failover: kill -9 to first commit, p99",
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        "ms",
        Some(15_000.0),
        Some(1500.0),
    );
}
