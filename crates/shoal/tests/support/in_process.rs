//! Daemons inside the test process, for tests that need a manager's store at hand (to write
//! the tasks the orchestrator would, or to read what the dispatcher recorded): free
//! addresses, the process shim to run tasks under, bounded polling, and a worker daemon that
//! can be stopped and started again on its state directory.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::v1::{Cluster, JoinTokens};
use shoal_executor::process::ShimCommand;
use shoal_node::{Daemon, DaemonConfig, NodeError, Outcome, RunningDaemon};
use shoal_store::{By, Reader, Store};

/// `shoal process-shim`: the shim as the `shoal` binary runs it (this test binary is no
/// `shoal`, so daemons inside it must be told).
pub fn shim() -> Option<ShimCommand> {
    Some(ShimCommand {
        program: env!("CARGO_BIN_EXE_shoal").into(),
        args: vec!["process-shim".into()],
    })
}

/// The small `shoal-process-shim` binary the `shoal` package ships beside `shoal`.
pub fn small_shim() -> Option<ShimCommand> {
    Some(ShimCommand {
        program: env!("CARGO_BIN_EXE_shoal-process-shim").into(),
        args: Vec::new(),
    })
}

pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `f` every 50 ms until it gives a value, for at most `limit`.
pub async fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cluster's join tokens, from a manager's store.
pub fn join_tokens(store: &Store) -> JoinTokens {
    store
        .view(|tx| tx.find::<Cluster>(By::All).pop())
        .and_then(|c| c.root_ca.clone())
        .and_then(|r| r.join_tokens)
        .expect("the cluster object holds the join tokens")
}

/// Starts a manager in `dir/name` that creates a cluster (`--init`), once it leads.
pub async fn init_manager(dir: &Path, name: &str, shim: Option<ShimCommand>) -> RunningDaemon {
    let mut config = DaemonConfig::new(dir.join(name));
    config.listen_remote_api = free_addr();
    config.init = true;
    config.process_shim = shim;
    let manager = Daemon::start(config).await.unwrap().spawn();
    until("the manager to lead", Duration::from_secs(20), || {
        manager.handle.status().is_leader.then_some(())
    })
    .await;
    manager
}

/// A daemon serving in a task of this process, stopped on demand.
pub struct Served {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<Outcome, NodeError>>,
}

impl Served {
    /// Starts a daemon with `config` (a worker joining, or one resuming its state
    /// directory); returns it and its node ID.
    pub async fn start(config: DaemonConfig) -> (Served, String) {
        let daemon = Daemon::start(config).await.unwrap();
        let id = daemon.identity().node_id.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(daemon.serve(async move {
            let _ = stopped.await;
        }));
        (Served { stop, served }, id)
    }

    /// Stops it cleanly and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
    }
}

/// The configuration of a worker in `dir/name` that joins the manager at `manager` with
/// `token` (`None`: it resumes its state directory).
pub fn worker_config(
    dir: &Path,
    name: &str,
    join: Option<(String, String)>,
    shim: Option<ShimCommand>,
) -> DaemonConfig {
    let mut config = DaemonConfig::new(dir.join(name));
    config.listen_remote_api = free_addr();
    if let Some((manager, token)) = join {
        config.join_addr = Some(manager);
        config.join_token = Some(token);
    }
    config.process_shim = shim;
    config
}
