//! S5: a manager's memory per node and per task, its Raft snapshot (size, write, restore),
//! and a new manager joining and catching up on that state.
//!
//! **What is measured, and how.**
//!
//! 1. *Resident memory* (in this process, the `shoal` binary's allocator, mimalloc). A fresh
//!    store with the local proposer; the resident set (`/proc/self/statm`) is read before and
//!    after loading `--nodes` nodes, then 1,000 services, then `--tasks` tasks, built by the
//!    `store` scenario's builders (realistic content; tasks share their service's spec as the
//!    orchestrator's do) and created in store batches. Bytes per node and per task are the
//!    growth divided by the count, as `shoal-bench store` reports them: allocator overhead,
//!    indexes and everything the store keeps per object included. Peak RSS is `VmHWM`.
//! 2. *Snapshot*, through the functions a manager runs. Encoding: `StateMachine::
//!    encode_snapshot`, the store's part of the Raft snapshot data (`RaftNode`'s
//!    `snapshot_data` adds the membership and copies these bytes once). The real snapshot is
//!    made by `RaftNode::bootstrap` on a `RedbLog` in a temporary directory with the loaded
//!    state (encode, durable install, restore: timed as one figure). Writing:
//!    `RedbLog::save_snapshot` of that snapshot into a fresh log (what the manager's snapshot
//!    thread runs: temporary file, fsync, rename, directory fsync, then the log compaction
//!    commit). Restoring: what a restarting manager runs — `LogStore::open` of the log
//!    (reads and parses the snapshot file) and `RaftNode::restart` into an empty
//!    `StateMachine` (decodes the store and rebuilds tables and indexes); a follower that
//!    installs a snapshot from the leader runs the same `restore` plus one durable write. The
//!    bare protobuf decode of the store is timed apart, to split decode from rebuild. Bytes
//!    per task: the tasks' records in the snapshot (tag, length, message) over the task
//!    count. Each timing is the median of `--runs` runs.
//! 3. *Join and catch-up*, with real processes on loopback. `shoal daemon --init --executor
//!    sim --availability drain` (so no task can be placed and nothing runs) gets services of
//!    at most 10,000 replicas each, `--join-tasks` in all; the orchestrator creates the tasks,
//!    which stay PENDING. Their creation is counted on a Watch stream (task creates). Once
//!    the leader's store version has stayed still for a second, its version is the target;
//!    then a second `shoal daemon --join-addr … --join-token <manager token>` starts, and
//!    "caught up" is the first moment the joiner's own Watch API — served from its local
//!    store, with no forwarding to the leader — reports a store version at or past the
//!    target (store versions are the same on every manager: each applies the same
//!    transactions in the same order). The time runs from spawning the joiner process to
//!    that moment: process start, certificate from the CA, Raft join, snapshot transfer and
//!    install, entries after it. The leader's RSS per task is its growth from before the
//!    services to after the tasks, over the task count (`/proc/<pid>/status`).
//!
//! **What it leaves out.** The join scenario has two nodes (the two managers), not 10,000:
//! real nodes need a certificate each from the CA and a session, which `heartbeats` measures;
//! the in-process part carries the 10,000 nodes. Tasks in the join scenario are PENDING
//! process tasks, smaller than the in-process ones (no node, no container spec), so its
//! per-task figures are not the same as the in-process ones. RSS deltas include allocator
//! slack and pages freed but not yet returned; the figures are per object on average, not a
//! heap profile. The machine is shared with other builds: timings are provisional.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::v1::watch_client::WatchClient;
use shoal_api::v1::{ObjectKind, RaftMember, Service, Task, WatchAction, WatchEntry, WatchRequest};
use shoal_raft::{LogDurability, LogStore, NodeConfig, RaftNode, RedbLog};
use shoal_store::{By, DEFAULT_WATCH_CAPACITY, Reader, StateMachine, Store};
use shoal_tls::{Credentials, Dialer};
use tonic::transport::Channel;

use crate::report::Report;
use crate::simagent::{self, Control, Manager, progress};
use crate::store::{SERVICES, node, service, task};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Nodes in the in-process store.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Tasks in the in-process store. The default keeps a run under two minutes on a
    /// 2-core machine; the full S5 run is `--tasks 1000000 --join-tasks 1000000`.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Tasks the leader holds when the second manager joins (0: skip the join).
    #[arg(long, default_value_t = 100_000)]
    join_tasks: usize,
    /// Runs of each snapshot timing; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The `shoal` binary (default: next to this benchmark).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Bound on the join and catch-up, from the joiner's start.
    #[arg(long, default_value = "120s", value_parser = simagent::parse_duration)]
    join_deadline: Duration,
}

/// Objects built outside the store to split object size from the store's overhead.
const SAMPLE: usize = 100_000;

/// Replicas per service in the join scenario.
const REPLICAS_PER_SERVICE: usize = 10_000;

/// Resident set size of this process in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used.
fn cpu_self() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Time to write one byte in every page of `bytes` of fresh anonymous memory (a mapping of
/// its own, unmapped after).
fn first_touch(bytes: usize) -> Duration {
    let len = bytes.max(4096);
    // SAFETY: a private anonymous mapping, written only within its length, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Duration::ZERO;
        }
        let start = Instant::now();
        let base = p.cast::<u8>();
        for offset in (0..len).step_by(4096) {
            std::ptr::write_volatile(base.add(offset), 1);
        }
        let elapsed = start.elapsed();
        libc::munmap(p, len);
        elapsed
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("[{lo:.0}–{hi:.0}]")
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("shoal-bench-memory-{what}-"))
        .tempdir()
        .expect("a temporary directory")
}

/// Creates `objects` through store batches, with a progress line every 2 s.
fn create<T: shoal_store::StoreObject>(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    what: &str,
    total: usize,
    objects: impl Iterator<Item = T>,
) {
    rt.block_on(async {
        let mut batch = store.batch();
        let mut shown = Instant::now();
        for (i, o) in objects.enumerate() {
            let mut o = Some(o);
            batch
                .update(|tx| tx.create(o.take().expect("objects are far below the size limit")))
                .await
                .expect("create");
            if shown.elapsed() >= Duration::from_secs(2) {
                progress(format!("loading {what}: {i}/{total}"));
                shown = Instant::now();
            }
        }
        batch.commit().await.expect("commit");
    });
}

pub fn run(args: Args) -> Report {
    let mut report = Report::new("S5 memory and snapshots");
    report.notes.push(format!(
        "in process: {} nodes, {} services, {} tasks (store builders of `shoal-bench store`), \
         mimalloc; snapshot timings: median of {} runs; join: {} PENDING tasks on a real \
         leader, 2 managers on loopback",
        args.nodes, SERVICES, args.tasks, args.runs, args.join_tasks
    ));
    report
        .notes
        .push("timings on a shared 2-core machine are provisional".into());
    in_process(&args, &mut report);
    if args.join_tasks > 0
        && let Err(e) = join(&args, &mut report)
    {
        report.notes.push(format!("join: FAILED: {e}"));
        eprintln!("join: {e}");
    }
    report
}

// --- 1 and 2: memory and snapshot, in this process ---------------------------------------

fn in_process(args: &Args, report: &mut Report) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // The objects alone, outside any store (a sample, kept alive through the load so that
    // the store's growth is not served from pages they freed): what the store adds on top of
    // the objects themselves is the difference.
    let sample = SAMPLE.min(args.tasks);
    let services: Vec<Service> = (0..SERVICES).map(service).collect();
    let before_sample = rss();
    let sample_nodes: Vec<Arc<shoal_api::v1::Node>> = (0..args.nodes.min(SAMPLE))
        .map(|i| Arc::new(node(i)))
        .collect();
    let after_sample_nodes = rss();
    let sample_tasks: Vec<Arc<Task>> = (0..sample)
        .map(|i| Arc::new(task(i, &services, args.nodes)))
        .collect();
    let after_sample_tasks = rss();
    drop(services);
    let node_alone =
        after_sample_nodes.saturating_sub(before_sample) as f64 / sample_nodes.len().max(1) as f64;
    let task_alone =
        after_sample_tasks.saturating_sub(after_sample_nodes) as f64 / sample.max(1) as f64;

    let store = Store::new();
    let cpu_start = cpu_self();
    let start = Instant::now();
    let before = rss();
    progress(format!("loading {} nodes", args.nodes));
    create(&rt, &store, "nodes", args.nodes, (0..args.nodes).map(node));
    let after_nodes = rss();
    let services: Vec<Service> = (0..SERVICES).map(service).collect();
    create(&rt, &store, "services", SERVICES, services.iter().cloned());
    let after_services = rss();
    progress(format!("loading {} tasks", args.tasks));
    create(
        &rt,
        &store,
        "tasks",
        args.tasks,
        (0..args.tasks).map(|i| task(i, &services, args.nodes)),
    );
    let after_tasks = rss();
    let load_time = start.elapsed();
    let load_cpu = cpu_self().saturating_sub(cpu_start);
    let peak_load = status_kib("self", "VmHWM:") as f64 * 1024.0;
    drop(services);
    drop(sample_nodes);
    drop(sample_tasks);

    let node_bytes = after_nodes.saturating_sub(before) as f64 / args.nodes.max(1) as f64;
    let task_bytes = after_tasks.saturating_sub(after_services) as f64 / args.tasks.max(1) as f64;
    report.row(
        "resident memory per node",
        node_bytes,
        "B",
        Some(2550.0),
        Some(1024.0),
    );
    report.row(
        "resident memory per task",
        task_bytes,
        "B",
        Some(4500.0),
        Some(1024.0),
    );
    report.row(
        "  objects alone, per node (Arc<Node>, outside a store)",
        node_alone,
        "B",
        None,
        None,
    );
    report.row(
        "  objects alone, per task (Arc<Task>, outside a store)",
        task_alone,
        "B",
        None,
        None,
    );
    report.row(
        format!("store RSS ({} nodes + {} tasks)", args.nodes, args.tasks),
        mib(after_tasks.saturating_sub(before) as f64),
        "MiB",
        None,
        None,
    );
    report.row(
        "load: wall time (batched creates)",
        load_time.as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row("load: CPU time", load_cpu.as_secs_f64(), "s", None, None);
    report.row(
        "load: peak RSS of the process",
        mib(peak_load),
        "MiB",
        None,
        None,
    );

    // Snapshot size: the tasks' records (tag, length, message), as the snapshot holds them.
    let state = store.state_machine().clone();
    let task_record_bytes: usize = store.view(|tx| {
        tx.find::<Task>(By::All)
            .iter()
            .map(|t| prost::encoding::message::encoded_len(5, t.as_ref()))
            .sum()
    });

    // Encode, as `snapshot_data` does first.
    let mut encode_ms = Vec::new();
    let mut store_bytes = 0;
    for r in 0..args.runs.max(1) {
        progress(format!("snapshot encode, run {}", r + 1));
        let start = Instant::now();
        let bytes = state.encode_snapshot();
        encode_ms.push(start.elapsed().as_secs_f64() * 1e3);
        store_bytes = bytes.len();
    }
    // Decode alone (the first half of every restore).
    let bytes = state.encode_snapshot();
    let mut decode_ms = Vec::new();
    for r in 0..args.runs.max(1) {
        progress(format!("snapshot decode (protobuf only), run {}", r + 1));
        let start = Instant::now();
        let decoded: shoal_api::v1::StoreSnapshot =
            prost::Message::decode(bytes.as_slice()).expect("decode");
        decode_ms.push(start.elapsed().as_secs_f64() * 1e3);
        drop(decoded);
    }
    drop(bytes);

    // The real Raft snapshot: bootstrap a one-member log with the loaded state.
    let dir_a = temp_dir("bootstrap");
    progress("RaftNode::bootstrap with the loaded state (encode, durable install, restore)");
    let start = Instant::now();
    // One keyring for every log of this run: the restore below opens the same log again.
    let keys = shoal_raft::DataKeys::generate();
    let log = LogStore::open(Box::new(
        RedbLog::open(dir_a.path(), keys.clone()).expect("opening the log"),
    ))
    .expect("log store");
    let member = RaftMember {
        raft_id: 1,
        node_id: "bench".into(),
        addr: "127.0.0.1:1".into(),
    };
    let bootstrapped =
        RaftNode::bootstrap(NodeConfig::new(1), log, state.clone(), member).expect("bootstrap");
    let bootstrap_time = start.elapsed();
    let snapshot = bootstrapped.raw_store().latest_snapshot().clone();
    let snapshot_index = snapshot.get_metadata().index;
    drop(bootstrapped);
    let file_bytes = std::fs::metadata(dir_a.path().join("snapshot.bin"))
        .map(|m| m.len())
        .unwrap_or(0);

    // Durable write, as the manager's snapshot thread does.
    let mut write_ms = Vec::new();
    for r in 0..args.runs.max(1) {
        progress(format!("snapshot durable write, run {}", r + 1));
        let dir = temp_dir("write");
        let log = RedbLog::open(dir.path(), keys.clone()).expect("opening the log");
        let start = Instant::now();
        log.save_snapshot(&snapshot, snapshot_index + 1)
            .expect("saving the snapshot");
        write_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    drop(snapshot);

    // Restore, as a restarting manager does: open the log, restart into an empty store.
    drop(store);
    drop(state);
    let mut read_ms = Vec::new();
    let mut restore_ms = Vec::new();
    let mut restore_cpu = Vec::new();
    let mut restored_objects = 0;
    for r in 0..args.runs.max(1) {
        progress(format!(
            "snapshot restore (restart from the log), run {}",
            r + 1
        ));
        let cpu = cpu_self();
        let start = Instant::now();
        let log = LogStore::open(Box::new(
            RedbLog::open(dir_a.path(), keys.clone()).expect("opening the log"),
        ))
        .expect("log store");
        let read = start.elapsed();
        let fresh = Arc::new(StateMachine::new(DEFAULT_WATCH_CAPACITY));
        let node = RaftNode::restart(NodeConfig::new(1), log, fresh.clone()).expect("restart");
        let total = start.elapsed();
        restore_cpu.push(cpu_self().saturating_sub(cpu).as_secs_f64());
        read_ms.push(read.as_secs_f64() * 1e3);
        restore_ms.push(total.as_secs_f64() * 1e3);
        restored_objects = fresh.object_count();
        drop(node);
        drop(fresh);
    }
    let peak_all = status_kib("self", "VmHWM:") as f64 * 1024.0;
    // The machine's floor for a restore: touching as much fresh memory as the loaded store
    // occupies (a restarting manager's process gets every page of its store new from the
    // kernel; on a virtual machine each first touch may also fault in the host).
    let store_rss = after_tasks.saturating_sub(before);
    let mut touch_ms = Vec::new();
    for _ in 0..args.runs.max(1) {
        touch_ms.push(first_touch(store_rss).as_secs_f64() * 1e3);
    }
    assert_eq!(
        restored_objects,
        args.nodes + SERVICES + args.tasks,
        "the restored store holds every object"
    );

    report.row(
        "snapshot bytes per task",
        task_record_bytes as f64 / args.tasks.max(1) as f64,
        "B",
        None,
        Some(300.0),
    );
    report.row(
        "  whole store snapshot / tasks (nodes and services included)",
        store_bytes as f64 / args.tasks.max(1) as f64,
        "B",
        None,
        None,
    );
    report.row(
        "snapshot file (raft snapshot.bin)",
        file_bytes as f64 / 1e6,
        "MB",
        None,
        None,
    );
    let encode = median(encode_ms.clone());
    let write = median(write_ms.clone());
    report.row(
        format!(
            "snapshot write: encode + durable write {} {}",
            range(&encode_ms),
            range(&write_ms)
        ),
        encode + write,
        "ms",
        None,
        Some(2000.0),
    );
    report.row(
        "  of which encode (StateMachine::encode_snapshot)",
        encode,
        "ms",
        None,
        None,
    );
    report.row(
        "  of which durable write (RedbLog::save_snapshot)",
        write,
        "ms",
        None,
        None,
    );
    report.row(
        format!(
            "snapshot restore (LogStore::open + RaftNode::restart) {}",
            range(&restore_ms)
        ),
        median(restore_ms),
        "ms",
        None,
        Some(2000.0),
    );
    report.row(
        "  of which reading the snapshot file (LogStore::open)",
        median(read_ms),
        "ms",
        None,
        None,
    );
    report.row(
        "  for comparison: bare protobuf decode of the store",
        median(decode_ms),
        "ms",
        None,
        None,
    );
    report.row(
        format!(
            "  machine floor: first touch of {:.0} MiB of fresh memory (the store's RSS)",
            mib(store_rss as f64)
        ),
        median(touch_ms),
        "ms",
        None,
        None,
    );
    report.row(
        "snapshot restore: CPU time",
        median(restore_cpu),
        "s",
        None,
        None,
    );
    report.row(
        "RaftNode::bootstrap with the state (encode + install + restore)",
        bootstrap_time.as_secs_f64() * 1e3,
        "ms",
        None,
        None,
    );
    report.row(
        "peak RSS of the process (whole in-process part)",
        mib(peak_all),
        "MiB",
        None,
        None,
    );
}

// --- 3: join and catch-up, real processes -------------------------------------------------

/// A mutual-TLS channel to `addr` with the certificates in `state`.
async fn channel(state: &Path, addr: &str) -> Result<Channel, String> {
    let certificates = shoal_node::certificates::load(state)
        .map_err(|e| e.to_string())?
        .ok_or("no certificates yet")?;
    let credentials = Credentials::new(certificates).map_err(|e| e.to_string())?;
    Dialer::mutual(credentials)
        .with_request_timeout(Duration::from_secs(30))
        .connect(addr)
        .await
        .map_err(|e| e.to_string())
}

/// The store version of the manager behind `channel`: the first message of a watch.
async fn store_version(channel: Channel) -> Result<u64, String> {
    let mut client = WatchClient::new(channel);
    let mut stream = client
        .watch(WatchRequest::default())
        .await
        .map_err(|s| format!("Watch: {}", s.message()))?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| "no first watch message in 10 s".to_string())?
        .map_err(|s| format!("Watch: {}", s.message()))?
        .ok_or("the watch closed at once")?;
    Ok(first.version)
}

/// The joining manager's process; killed and reaped on drop.
struct Joiner(Child);

impl Joiner {
    fn start(
        bin: &Path,
        state: &Path,
        addr: &str,
        join: &str,
        token: &str,
    ) -> Result<Self, String> {
        let mut command = Command::new(bin);
        command
            .args([
                "daemon",
                "--log-level",
                "warn",
                "--hostname",
                "bench-joiner",
            ])
            .args(["--executor", "sim", "--availability", "drain"])
            .arg("--state-dir")
            .arg(state)
            .args(["--listen-remote-api", addr, "--join-addr", join])
            .args(["--join-token", token])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(path) = std::env::var_os("SHOAL_BENCH_JOINER_LOG") {
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("{}: {e}", Path::new(&path).display()))?;
            command.stderr(file);
        }
        // The joiner dies with this benchmark.
        simagent::die_with_this_process(&mut command);
        command
            .spawn()
            .map(Joiner)
            .map_err(|e| format!("starting {}: {e}", bin.display()))
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn join(args: &Args, report: &mut Report) -> Result<(), String> {
    let bin = simagent::shoal_bin(&args.shoal_bin)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(join_async(args, &bin, report))
}

async fn join_async(args: &Args, bin: &Path, report: &mut Report) -> Result<(), String> {
    let leader_dir = temp_dir("leader");
    let joiner_dir = temp_dir("joiner");
    let leader_addr = simagent::free_addr();
    progress(format!("starting the leader on {leader_addr}"));
    let mut leader = Manager::start(
        bin,
        leader_dir.path(),
        &leader_addr,
        &["--executor", "sim", "--availability", "drain"],
    )?;
    let mut control = Control::connect(leader_dir.path(), &leader_addr, &mut leader).await?;
    let leader_channel = channel(leader_dir.path(), &leader_addr).await?;
    let tasks = args.join_tasks;

    // Count task creates on a watch opened before the services.
    let mut stream = WatchClient::new(leader_channel.clone())
        .watch(WatchRequest {
            entries: vec![WatchEntry {
                kind: ObjectKind::Task as i32,
                actions: WatchAction::Create as u32,
                filters: Vec::new(),
            }],
            ..Default::default()
        })
        .await
        .map_err(|s| format!("Watch: {}", s.message()))?
        .into_inner();
    let rss_before = simagent::rss_kib(leader.pid) as f64 * 1024.0;
    let cpu_before = simagent::thread_cpu(leader.pid);
    let start = Instant::now();
    let mut left = tasks;
    let mut services = 0;
    while left > 0 {
        let replicas = left.min(REPLICAS_PER_SERVICE);
        control
            .create_service(&format!("mem-{services}"), replicas as u64)
            .await?;
        left -= replicas;
        services += 1;
    }
    let create_deadline = Duration::from_secs(60) + Duration::from_micros(300) * tasks as u32;
    let mut created = 0usize;
    let mut shown = Instant::now();
    while created < tasks {
        let left = create_deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "the leader created {created} of {tasks} tasks in {:.0} s",
                create_deadline.as_secs_f64()
            ));
        }
        match tokio::time::timeout(left, stream.message()).await {
            Err(_) => continue,
            Ok(Err(s)) => return Err(format!("Watch: {}", s.message())),
            Ok(Ok(None)) => return Err("the leader closed the watch".into()),
            Ok(Ok(Some(m))) => created += m.events.len(),
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(format!(
                "leader: {created}/{tasks} tasks created ({:.0}/s)",
                created as f64 / start.elapsed().as_secs_f64()
            ));
            shown = Instant::now();
        }
    }
    let created_in = start.elapsed();
    drop(stream);

    // Settle: the store version still for a second.
    let mut version = store_version(leader_channel.clone()).await?;
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = store_version(leader_channel.clone()).await?;
        if now == version {
            break;
        }
        if Instant::now() > settle_deadline {
            return Err(format!(
                "the leader's store kept changing for 60 s after the tasks (version {now})"
            ));
        }
        version = now;
    }
    let leader_cpu = simagent::cpu_between(&cpu_before, &simagent::thread_cpu(leader.pid));
    let rss_after = simagent::rss_kib(leader.pid) as f64 * 1024.0;
    let leader_hwm = status_kib(&leader.pid.to_string(), "VmHWM:") as f64 * 1024.0;
    let token = control
        .cluster()
        .await?
        .root_ca
        .and_then(|r| r.join_tokens)
        .map(|t| t.manager)
        .filter(|t| !t.is_empty())
        .ok_or("the cluster has no manager join token")?;

    // The joiner.
    let joiner_addr = simagent::free_addr();
    progress(format!(
        "starting a manager joining on {joiner_addr}; leader at store version {version}"
    ));
    let start = Instant::now();
    let mut joiner = Joiner::start(bin, joiner_dir.path(), &joiner_addr, &leader_addr, &token)?;
    let pid = joiner.0.id();
    let mut answered = None;
    let mut first_state = None;
    let mut last = String::from("not answering yet");
    let mut shown = Instant::now();
    let caught_up = loop {
        if !joiner.alive() {
            return Err("the joining manager exited".into());
        }
        if start.elapsed() > args.join_deadline {
            return Err(format!(
                "the joining manager did not catch up in {} ({last})",
                simagent::show(args.join_deadline)
            ));
        }
        // The leader's certificate: the joiner's Watch API wants a manager's.
        match channel(leader_dir.path(), &joiner_addr).await {
            Ok(c) => match store_version(c).await {
                Ok(v) => {
                    answered.get_or_insert(start.elapsed());
                    if v > 0 {
                        first_state.get_or_insert(start.elapsed());
                    }
                    if v >= version {
                        break start.elapsed();
                    }
                    last = format!("store version {v} of {version}");
                }
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(format!(
                "joiner: {last} after {:.1} s",
                start.elapsed().as_secs_f64()
            ));
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let joiner_cpu = simagent::cpu_between(&Default::default(), &simagent::thread_cpu(pid));
    let joiner_rss = simagent::rss_kib(pid) as f64 * 1024.0;
    let joiner_hwm = status_kib(&pid.to_string(), "VmHWM:") as f64 * 1024.0;

    report.row(
        format!("join + catch-up ({tasks} tasks, spawn → joiner's store at leader's version)"),
        caught_up.as_secs_f64(),
        "s",
        None,
        Some(5.0),
    );
    report.row(
        "  joiner first answers its Watch API",
        answered.unwrap_or_default().as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        "  joiner's store first non-empty (snapshot installed)",
        first_state.unwrap_or_default().as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        "  joiner: CPU time until caught up (all threads)",
        joiner_cpu.as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        "  joiner: RSS when caught up",
        mib(joiner_rss),
        "MiB",
        None,
        None,
    );
    report.row("  joiner: peak RSS", mib(joiner_hwm), "MiB", None, None);
    report.row(
        format!("leader: resident memory per task ({services} services)"),
        (rss_after - rss_before).max(0.0) / tasks as f64,
        "B",
        Some(4500.0),
        Some(1024.0),
    );
    report.row(
        "leader: RSS with the tasks",
        mib(rss_after),
        "MiB",
        None,
        None,
    );
    report.row("leader: peak RSS", mib(leader_hwm), "MiB", None, None);
    report.row(
        format!("leader: {tasks} tasks created by the orchestrator"),
        created_in.as_secs_f64(),
        "s",
        None,
        None,
    );
    report.row(
        "leader: CPU time, services created → settled",
        leader_cpu.as_secs_f64(),
        "s",
        None,
        None,
    );
    drop(joiner);
    leader.kill();
    Ok(())
}
