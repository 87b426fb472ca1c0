//! `shoal daemon`: run a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_api::v1::node_spec;
use shoal_node::{DaemonConfig, ExecutorKind, default_state_dir};

/// Arguments of `shoal daemon`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the node's state (default: /var/lib/shoal as root, else
    /// $XDG_DATA_HOME/shoal or ~/.local/share/shoal)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Name of this node (default: the machine's hostname)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Address the remote API (Raft, membership, Control) listens on
    #[arg(long, value_name = "ADDR", default_value = shoal_api::defaults::LISTEN_REMOTE_API)]
    pub listen_remote_api: SocketAddr,
    /// Address other managers reach this one at (default: the listen address)
    #[arg(long, value_name = "ADDR")]
    pub advertise_remote_api: Option<String>,
    /// Path of the local control socket (default: <state-dir>/control.sock)
    #[arg(long, value_name = "PATH")]
    pub listen_control_api: Option<PathBuf>,
    /// Path of the Docker Engine API socket, for `docker` and docker-py (default:
    /// <state-dir>/docker.sock); `off` serves none
    #[arg(long, value_name = "PATH|off")]
    pub listen_engine_api: Option<PathBuf>,
    /// Start a new cluster with this node as its first manager
    #[arg(long, conflicts_with = "join_addr")]
    pub init: bool,
    /// Join the cluster of the manager at this address
    #[arg(long, value_name = "ADDR")]
    pub join_addr: Option<String>,
    /// Join token (`shoal swarm join-token manager` on a manager prints one); also brings
    /// back a node whose certificate expired while it was off, as a new node
    #[arg(long, value_name = "TOKEN")]
    pub join_token: Option<String>,
    /// Make this manager the only member of its cluster, keeping all its data
    #[arg(long)]
    pub force_new_cluster: bool,
    /// With --init: lock the managers with a key (`shoal swarm unlock-key` shows it)
    #[arg(long, requires = "init")]
    pub autolock: bool,
    /// Bring a cluster back from a backup (`shoal swarm backup`), with this node as its
    /// only manager; needs --force-new-cluster and an empty state directory
    #[arg(long, value_name = "FILE", requires = "force_new_cluster", conflicts_with_all = ["init", "join_addr"])]
    pub restore: Option<PathBuf>,
    /// Raft tick interval, e.g. 100ms
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub tick_interval: Duration,
    /// Ticks without a leader before an election
    #[arg(long, value_name = "N", default_value_t = shoal_api::defaults::RAFT_ELECTION_TICK)]
    pub election_tick: u32,
    /// Ticks between leader heartbeats
    #[arg(long, value_name = "N", default_value_t = shoal_api::defaults::RAFT_HEARTBEAT_TICK)]
    pub heartbeat_tick: u32,
    /// What runs tasks: process (host processes), docker (containers on the local Docker
    /// Engine) or sim (nothing runs; for tests and benchmarks)
    #[arg(long, value_name = "EXECUTOR", default_value = "process", value_parser = parse_executor)]
    pub executor: ExecutorKind,
    /// The node's availability when it creates or joins a cluster: active, pause or drain
    /// (later: `shoal node update --availability`)
    #[arg(
        long,
        value_enum,
        value_name = "AVAILABILITY",
        default_value = "active"
    )]
    pub availability: super::node::update::Availability,
    /// A label describing this node (KEY=VALUE, repeatable), matched by `engine.labels.KEY`
    /// constraints
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::node::update::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter)
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Parses durations written like `100ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 100ms, 5s, 1m"))?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit; use ns, us, ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_executor(s: &str) -> Result<ExecutorKind, String> {
    match s {
        "process" => Ok(ExecutorKind::Process),
        "docker" => Ok(ExecutorKind::Docker),
        "sim" => Ok(ExecutorKind::Sim),
        other => Err(format!(
            "unknown executor {other:?}; use process, docker or sim"
        )),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    crate::logging::init(&args.log_level)?;
    // Crash points named in FAILPOINTS, for the crash tests (only in a build with the
    // `failpoints` feature; otherwise nothing).
    let _failpoints = shoal_node::failpoints::setup();
    let mut config = DaemonConfig::new(args.state_dir.unwrap_or_else(default_state_dir));
    config.hostname = args.hostname.unwrap_or_else(machine_hostname);
    config.listen_remote_api = args.listen_remote_api;
    config.advertise_remote_api = args.advertise_remote_api;
    config.init = args.init;
    config.join_addr = args.join_addr;
    config.join_token = args.join_token;
    config.listen_control_api = args.listen_control_api;
    config.force_new_cluster = args.force_new_cluster;
    config.autolock = args.autolock;
    config.restore = args.restore;
    config.tick_interval = args.tick_interval;
    config.election_tick = args.election_tick;
    config.heartbeat_tick = args.heartbeat_tick;
    config.executor = args.executor;
    config.availability = match args.availability {
        super::node::update::Availability::Active => node_spec::Availability::Active,
        super::node::update::Availability::Pause => node_spec::Availability::Pause,
        super::node::update::Availability::Drain => node_spec::Availability::Drain,
    };
    config.labels = args
        .labels
        .into_iter()
        .map(|(key, value)| shoal_api::v1::Label { key, value })
        .collect();
    let control_socket = config.listen_control_api.clone().unwrap_or_else(|| {
        config
            .state_dir
            .join(shoal_api::defaults::CONTROL_SOCKET_NAME)
    });
    let engine_socket = match args.listen_engine_api {
        Some(path) if path.as_os_str() == "off" => None,
        Some(path) => Some(path),
        None => Some(config.state_dir.join(ENGINE_SOCKET_NAME)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        // Refuse a second daemon on this state directory before touching its sockets.
        drop(shoal_node::StateDir::open(&config.state_dir).map_err(|e| e.to_string())?);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        // The Engine API outlives the node's phases; it stops once the node has stopped.
        let (engine_stop_tx, engine_stop) = tokio::sync::watch::channel(false);
        let engine_api = match engine_socket {
            Some(path) => {
                let listener = shoal_engine_api::bind(&path).map_err(|e| {
                    format!(
                        "cannot listen for the Docker Engine API on {}: {e} (choose another \
                         path with --listen-engine-api, or turn it off with \
                         --listen-engine-api off)",
                        path.display()
                    )
                })?;
                tracing::info!("Docker Engine API on unix://{}", path.display());
                Some(tokio::spawn(shoal_engine_api::serve(
                    listener,
                    shoal_engine_api::Backend::new(&control_socket),
                    engine_stop,
                )))
            }
            None => None,
        };
        let result = shoal_node::supervisor::run(config, stop)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = engine_stop_tx.send(true);
        if let Some(engine_api) = engine_api {
            let _ = engine_api.await;
        }
        result
    })
}

/// The Docker Engine API socket's name in the state directory.
const ENGINE_SOCKET_NAME: &str = "docker.sock";

/// The machine's hostname (Linux: /proc/sys/kernel/hostname), or "localhost".
fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }
}
