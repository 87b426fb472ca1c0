//! Real `shoal daemon` processes on 127.0.0.1 for tests: started on free ports, killed (or
//! stopped with SIGTERM) on demand, always killed when the test ends.

#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod engine;
pub mod in_process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::{Annotations, ConfigSpec, CreateConfigRequest, ListConfigsRequest};
use tonic::transport::Channel;

/// Runs `shoal daemon --state-dir DIR` on a free port with `extra` flags, to completion.
pub fn daemon_once(state_dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["daemon", "--state-dir"])
        .arg(state_dir)
        .args(["--listen-remote-api", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .output()
        .expect("run shoal daemon")
}

/// The state directory of the daemon at each address: a client presents that node's own
/// certificate (mutual TLS), as a manager's local administrator would.
static STATE_DIRS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// A dialer with the certificates of the node at `addr`, once it has them.
pub fn dialer(addr: &str) -> Option<shoal_tls::Dialer> {
    let state_dir = STATE_DIRS.lock().unwrap().get(addr).cloned()?;
    let certificates = shoal_node::certificates::load(&state_dir).ok()??;
    let credentials = shoal_tls::Credentials::new(certificates).ok()?;
    Some(shoal_tls::Dialer::mutual(credentials).with_request_timeout(Duration::from_secs(5)))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Manager {
    pub addr: String,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Manager {
    /// Starts `shoal daemon` with `extra` flags.
    pub fn start(dir: &Path, name: &str, extra: &[&str]) -> Manager {
        Manager::start_with_env(dir, name, extra, &[])
    }

    /// Starts `shoal daemon` with `extra` flags and `env` added to its environment (this run
    /// only: a restart starts without it).
    pub fn start_with_env(dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Manager {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let state_dir = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut m = Manager {
            addr,
            state_dir,
            log,
            child: None,
        };
        m.spawn_with_env(extra, env);
        m
    }

    fn spawn(&mut self, extra: &[&str]) {
        self.spawn_with_env(extra, &[]);
    }

    fn spawn_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        STATE_DIRS
            .lock()
            .unwrap()
            .insert(self.addr.clone(), self.state_dir.clone());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("daemon")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--listen-remote-api")
            .arg(&self.addr)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start shoal daemon");
        self.child = Some(child);
    }

    /// Starts it again on the same address and state.
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "still running");
        self.spawn(extra);
    }

    /// Starts it again on the same address and state, with `env` added to its environment.
    pub fn restart_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "still running");
        self.spawn_with_env(extra, env);
    }

    /// Waits up to `limit` for the process to end by itself; returns how it ended, or None
    /// (after killing it) if it was still running.
    pub fn wait_status(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on a new address, same state.
    pub fn restart_at_new_address(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "still running");
        self.addr = format!("127.0.0.1:{}", free_port());
        self.spawn(extra);
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; returns its exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let pid = self.child.as_ref()?.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the daemon.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Control API client of the manager at `addr`, over mutual TLS with its certificate.
pub async fn client(addr: &str) -> Option<ControlClient<Channel>> {
    let channel = dialer(addr)?.connect(addr).await.ok()?;
    Some(ControlClient::new(channel))
}

/// The cluster's join tokens, as the manager at `addr` knows them.
pub async fn join_tokens(addr: &str) -> shoal_api::v1::JoinTokens {
    eventually("the join tokens", Duration::from_secs(20), async || {
        client(addr)
            .await?
            .list_clusters(shoal_api::v1::ListClustersRequest::default())
            .await
            .ok()?
            .into_inner()
            .clusters
            .pop()?
            .root_ca?
            .join_tokens
    })
    .await
}

/// Starts a manager that joins through `leader` with the manager token.
pub async fn start_joining(dir: &Path, name: &str, leader: &str) -> Manager {
    let token = join_tokens(leader).await.manager;
    Manager::start(dir, name, &["--join-addr", leader, "--join-token", &token])
}

pub fn big_config_spec(name: &str, bytes: usize) -> ConfigSpec {
    ConfigSpec {
        data: vec![b'z'; bytes],
        ..config_spec(name)
    }
}

pub fn config_spec(name: &str) -> ConfigSpec {
    ConfigSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        data: name.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Creates config `name` on whichever manager is the leader. Returns the error of the last
/// attempt if no manager took it.
pub async fn create_config(addrs: &[String], name: &str) -> Result<(), String> {
    let mut last = String::from("no manager reachable");
    for addr in addrs {
        let Some(mut c) = client(addr).await else {
            last = format!("{addr} unreachable");
            continue;
        };
        match c
            .create_config(CreateConfigRequest {
                spec: Some(config_spec(name)),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    || s.code() == tonic::Code::Unavailable =>
            {
                last = format!("{addr}: {}", s.message());
            }
            Err(s) => return Err(format!("{addr}: {:?} {}", s.code(), s.message())),
        }
    }
    Err(last)
}

/// Config names as a manager sees them (a linearizable read).
pub async fn config_names(addr: &str) -> Result<Vec<String>, String> {
    let mut c = client(addr)
        .await
        .ok_or_else(|| format!("{addr} unreachable"))?;
    let resp = c
        .list_configs(ListConfigsRequest::default())
        .await
        .map_err(|s| format!("{addr}: {}", s.message()))?;
    let mut names: Vec<String> = resp
        .into_inner()
        .configs
        .into_iter()
        .map(|c| {
            c.spec
                .unwrap_or_default()
                .annotations
                .unwrap_or_default()
                .name
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The address of the leader, as the manager at `addr` sees it (`ListNodes`' manager
/// status). Control calls reach the leader from any manager, so a write accepted says
/// nothing about who leads.
pub async fn leader_addr(addr: &str) -> Result<String, String> {
    let mut c = client(addr)
        .await
        .ok_or_else(|| format!("{addr} unreachable"))?;
    let nodes = c
        .list_nodes(shoal_api::v1::ListNodesRequest::default())
        .await
        .map_err(|s| format!("{addr}: {}", s.message()))?
        .into_inner()
        .nodes;
    nodes
        .iter()
        .filter_map(|n| n.manager_status.as_ref())
        .find(|m| m.leader)
        .map(|m| m.addr.clone())
        .ok_or_else(|| format!("{addr} knows no leader"))
}

/// Polls `f` until it returns Some, for at most `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a manager that creates a cluster, once it has committed config "one".
pub async fn init_manager(dir: &Path, name: &str) -> Manager {
    let m = Manager::start(dir, name, &["--init"]);
    let addr = m.addr.clone();
    eventually(
        &format!("{name} to lead"),
        Duration::from_secs(20),
        async || create_config(std::slice::from_ref(&addr), "one").await.ok(),
    )
    .await;
    m
}

/// Starts a manager that joins through `leader`, once it has caught up with config "one".
pub async fn join_manager(dir: &Path, name: &str, leader: &str) -> Manager {
    let m = start_joining(dir, name, leader).await;
    let addr = m.addr.clone();
    eventually(
        &format!("{name} to catch up"),
        Duration::from_secs(20),
        async || {
            config_names(&addr)
                .await
                .ok()?
                .contains(&"one".to_string())
                .then_some(())
        },
    )
    .await;
    m
}

/// A channel to a node's local control socket.
pub async fn local_channel(socket: &Path) -> Channel {
    try_local_channel(socket)
        .await
        .expect("connect to the control socket")
}

/// A channel to a node's local control socket, if it serves.
pub async fn try_local_channel(socket: &Path) -> Option<Channel> {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .ok()
}

/// A Control API client over a node's local control socket.
pub async fn local_client(socket: &Path) -> ControlClient<Channel> {
    ControlClient::new(local_channel(socket).await)
}

/// Starts a worker that joins through `manager` with the worker token, once it has its
/// certificate.
pub async fn join_worker(dir: &Path, name: &str, manager: &str) -> Manager {
    let token = join_tokens(manager).await.worker;
    let w = Manager::start(dir, name, &["--join-addr", manager, "--join-token", &token]);
    let certs = w.state_dir.join("certificates/node.crt");
    eventually(
        &format!("{name} to get its certificate"),
        Duration::from_secs(20),
        async || certs.exists().then_some(()),
    )
    .await;
    w
}

/// Heartbeats every second, so a silent node is down after three.
pub async fn heartbeat_every_second(addr: &str) {
    let mut control = client(addr).await.unwrap();
    let cluster = control
        .list_clusters(shoal_api::v1::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0);
    let mut spec = cluster.spec.clone().unwrap();
    spec.dispatcher = Some(shoal_api::v1::DispatcherConfig {
        heartbeat_period: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
    });
    let meta = cluster.meta.unwrap();
    control
        .update_cluster(shoal_api::v1::UpdateClusterRequest {
            cluster_id: meta.id,
            cluster_version: meta.version,
            spec: Some(spec),
            rotation: None,
        })
        .await
        .unwrap();
}

/// Waits until `path` exists (a socket a daemon binds), for at most `limit`.
pub fn wait_for_path(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < limit,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir` (recursively) whose bytes hold `needle`.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            hits.extend(files_holding(&path, needle));
        } else if kind.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path);
        }
    }
    hits
}
