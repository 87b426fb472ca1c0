//! The daemon: start a manager from its state directory and serve until told to stop.
//!
//! Each start is a new *incarnation* (a random value `Swarm.Info` reports), so that a client
//! that asked for a restart — `shoal swarm init --force-new-cluster` on a manager, answered by
//! [`Outcome::ForceNewCluster`] and a start with [`DaemonConfig::force_new_cluster`] — can
//! tell when the new run answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::clock::{Clock, SystemClock};
use shoal_api::v1::ca_server::CaServer;
use shoal_api::v1::control_server::ControlServer;
use shoal_api::v1::dispatcher_server::DispatcherServer;
use shoal_api::v1::log_broker_server::LogBrokerServer;
use shoal_api::v1::logs_server::LogsServer;
use shoal_api::v1::node_ca_server::NodeCaServer;
use shoal_api::v1::raft_membership_client::RaftMembershipClient;
use shoal_api::v1::raft_membership_server::RaftMembershipServer;
use shoal_api::v1::raft_server::RaftServer;
use shoal_api::v1::swarm_server::SwarmServer;
use shoal_api::v1::watch_server::WatchServer;
use shoal_api::v1::{JoinRequest, JoinResponse, NodeRole, RaftMember};
use shoal_manager::authorize::{Access, Authorizer};
use shoal_manager::ca_server::CaServer as CaServerImpl;
use shoal_manager::controlapi::ControlApi;
use shoal_manager::dispatcher::Dispatcher;
use shoal_manager::forward::ForwardToLeader;
use shoal_manager::logbroker::LogBroker;
use shoal_manager::orchestrator::Orchestrator;
use shoal_manager::watchapi::WatchApi;
use shoal_raft::service::LEADER_ADDR_METADATA;
use shoal_raft::{
    DriverConfig, GrpcTransport, LogStore, NodeConfig, RaftDriver, RaftHandle, RaftNode,
    RaftProposer, RaftService, RedbLog,
};
use shoal_store::{DEFAULT_WATCH_CAPACITY, StateMachine, Store};
use shoal_tls::{Credentials, Dialer, NodeCertificates};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::service::interceptor::InterceptedService;

use crate::agent::{Agent, AgentExit, SessionSink, SessionSlot};
use crate::error::NodeError;
use crate::keys::{NodeKeys, UnlockKey};
use crate::local::{LeaveRequest, LocalRequest, LocalSwarm, NewClusterRequest, NotAManager};
use crate::renewal::{Managers, Renewer};
use crate::state_dir::{NodeIdentity, StateDir};
use crate::worker::{StatusReporter, TaskDb, Worker};

/// How to run a node (the `shoal daemon` flags).
#[derive(Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub hostname: String,
    pub listen_remote_api: SocketAddr,
    pub advertise_remote_api: Option<String>,
    /// Start a new cluster.
    pub init: bool,
    /// Join the cluster of the manager at this address.
    pub join_addr: Option<String>,
    /// The join token: the node gets its certificate (and role) from the cluster CA first.
    pub join_token: Option<String>,
    /// Path of the local control socket (default: `<state-dir>/control.sock`).
    pub listen_control_api: Option<PathBuf>,
    /// Rewrite this manager's log into a one-member cluster, keeping all data.
    pub force_new_cluster: bool,
    pub tick_interval: Duration,
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    /// Where the node reads the time for certificate renewal (tests drive it).
    pub clock: Arc<dyn Clock>,
    /// How often the renewer looks at the clock.
    pub renewal_check: Duration,
    /// What runs this node's tasks.
    pub executor: ExecutorKind,
    /// What runs the shim of each process task; `None`: `<this executable> process-shim`,
    /// right for the `shoal` binary (tests that run a daemon inside a test binary name
    /// `shoal` here).
    pub process_shim: Option<shoal_executor::process::ShimCommand>,
    /// The node's availability when it joins or creates a cluster (`--availability`); later
    /// changes go through `shoal node update`.
    pub availability: shoal_api::v1::node_spec::Availability,
    /// Labels the node describes itself with (`--label`), matched by `engine.labels.*`
    /// constraints.
    pub labels: Vec<shoal_api::v1::Label>,
    /// The cluster's unlock key, for a manager whose keys are sealed with it (autolock): given
    /// by `shoal swarm unlock` to a locked daemon, kept in memory only.
    pub unlock_key: Option<UnlockKey>,
    /// Bring a cluster back from this backup (`shoal daemon --restore FILE
    /// --force-new-cluster`), as a new cluster whose only manager is this node.
    pub restore: Option<PathBuf>,
    /// With `init`: lock the new cluster's managers with an unlock key (`--autolock`).
    pub autolock: bool,
}

/// What runs a node's tasks (`--executor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Host processes (runtime `process`).
    #[default]
    Process,
    /// Containers on the local Docker Engine (runtime `container`); the engine must answer
    /// when the node starts.
    Docker,
    /// Nothing runs; tasks report RUNNING after a short delay (tests, benchmarks).
    Sim,
}

impl std::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("state_dir", &self.state_dir)
            .field("listen_remote_api", &self.listen_remote_api)
            .field("init", &self.init)
            .field("join_addr", &self.join_addr)
            .finish_non_exhaustive()
    }
}

impl DaemonConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            hostname: String::new(),
            listen_remote_api: shoal_api::defaults::LISTEN_REMOTE_API
                .parse()
                .expect("default address"),
            advertise_remote_api: None,
            init: false,
            join_addr: None,
            join_token: None,
            listen_control_api: None,
            force_new_cluster: false,
            tick_interval: shoal_api::defaults::RAFT_TICK_INTERVAL,
            election_tick: shoal_api::defaults::RAFT_ELECTION_TICK,
            heartbeat_tick: shoal_api::defaults::RAFT_HEARTBEAT_TICK,
            clock: Arc::new(SystemClock),
            renewal_check: Duration::from_secs(10),
            executor: ExecutorKind::default(),
            process_shim: None,
            availability: shoal_api::v1::node_spec::Availability::Active,
            labels: Vec::new(),
            unlock_key: None,
            restore: None,
            autolock: false,
        }
    }

    fn advertise(&self, listen: SocketAddr) -> String {
        if let Some(a) = &self.advertise_remote_api {
            return a.clone();
        }
        if listen.ip().is_unspecified() {
            tracing::warn!(
                "advertising 127.0.0.1:{}: managers on other machines cannot reach this one; \
                 set --advertise-remote-api",
                listen.port()
            );
            return format!("127.0.0.1:{}", listen.port());
        }
        listen.to_string()
    }

    fn validate(&self) -> Result<(), NodeError> {
        if self.init && self.join_addr.is_some() {
            return Err(NodeError::Config(
                "--init and --join-addr exclude each other; choose one".into(),
            ));
        }
        if self.join_addr.is_some() && self.join_token.is_none() {
            return Err(NodeError::Config(
                "--join-addr needs --join-token: get one on a manager of the cluster with \
                 `shoal swarm join-token manager` (or worker)"
                    .into(),
            ));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(NodeError::Config(format!(
                "--election-tick ({}) must be larger than --heartbeat-tick ({})",
                self.election_tick, self.heartbeat_tick
            )));
        }
        if self.tick_interval.is_zero() {
            return Err(NodeError::Config("--tick-interval must be positive".into()));
        }
        if self.restore.is_some() && !self.force_new_cluster {
            return Err(NodeError::Config(
                "--restore needs --force-new-cluster: a restored cluster is a new cluster whose \
                 only manager is this node (add more with `shoal swarm join-token manager`)"
                    .into(),
            ));
        }
        if self.restore.is_some() && (self.init || self.join_addr.is_some()) {
            return Err(NodeError::Config(
                "--restore excludes --init and --join-addr: it starts the restored cluster itself"
                    .into(),
            ));
        }
        if self.autolock && !self.init {
            return Err(NodeError::Config(
                "--autolock goes with --init (a new cluster); for a running cluster use \
                 `shoal swarm update --autolock=true`"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A node ready to serve, as a manager or as a worker.
pub struct Daemon {
    config: DaemonConfig,
    state_dir: StateDir,
    identity: NodeIdentity,
    /// The local control socket: the Control API for this machine's users (on a manager),
    /// and the node's own calls; trusted without TLS, reachable by the owner only (0600).
    control: tokio::net::UnixListener,
    /// This node's certificates, shared by its server and its dialers; renewal swaps them.
    credentials: Credentials,
    /// The node's key file: TLS key, a manager's Raft data keys, autolock.
    keys: NodeKeys,
    /// The managers this node knows.
    managers: Managers,
    role: Role,
    /// This run of the node ([`Daemon::incarnation`]).
    incarnation: u64,
}

/// A new, non-zero incarnation.
fn new_incarnation() -> u64 {
    loop {
        let value: u64 = rand::random();
        if value != 0 {
            return value;
        }
    }
}

/// What a node runs besides its identity.
enum Role {
    Manager(Box<ManagerParts>),
    Worker,
}

struct ManagerParts {
    listener: tokio::net::TcpListener,
    driver: RaftDriver,
    transport: Arc<GrpcTransport>,
    store: Store,
    /// The Raft log, kept to rotate its data key.
    log: Arc<RedbLog>,
}

/// Why [`Daemon::serve`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Told to stop.
    Stopped,
    /// The node left the cluster (`shoal swarm leave`); its cluster state is gone.
    Left,
    /// The node's role changed (promoted or demoted): start it again to take the new role.
    RoleChanged(NodeRole),
    /// This manager was asked to force a new cluster (`shoal swarm init
    /// --force-new-cluster`): start it again with [`DaemonConfig::force_new_cluster`], on the
    /// remote API addresses the request names, if any.
    ForceNewCluster(NewClusterRequest),
}

/// A daemon serving in the background, for tests and embedding.
pub struct RunningDaemon {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Outcome, NodeError>>,
    pub handle: RaftHandle,
    pub store: Store,
    pub addr: SocketAddr,
}

impl RunningDaemon {
    /// Stops the daemon cleanly and waits for it.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
            .await
            .map_err(|e| NodeError::Serve(e.to_string()))?
            .map(|_| ())
    }
}

/// Asks the manager at `addr` to let this node join, following the leader's address when
/// the manager asked is not the leader.
async fn join(
    dialer: &Dialer,
    addr: &str,
    me: &str,
    node_id: &str,
) -> Result<JoinResponse, NodeError> {
    let mut target = addr.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last_error;
    loop {
        match dialer.connect(&target).await {
            Ok(channel) => {
                let mut client = RaftMembershipClient::new(channel);
                match client
                    .join(JoinRequest {
                        addr: me.to_string(),
                        node_id: node_id.to_string(),
                    })
                    .await
                {
                    Ok(resp) => return Ok(resp.into_inner()),
                    Err(status) => {
                        if status.code() == tonic::Code::FailedPrecondition
                            && let Some(leader) = status
                                .metadata()
                                .get(LEADER_ADDR_METADATA)
                                .and_then(|v| v.to_str().ok())
                        {
                            tracing::info!("{target} is not the leader; joining through {leader}");
                            target = leader.to_string();
                            continue;
                        }
                        if status.code() != tonic::Code::Unavailable {
                            return Err(NodeError::Join(format!(
                                "{target} refused: {}",
                                status.message()
                            )));
                        }
                        last_error = status.message().to_string();
                    }
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NodeError::Join(format!(
                "{last_error}; check the address and that a quorum of managers is up"
            )));
        }
        tracing::info!("joining through {target} failed ({last_error}); retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Binds the control socket: a stale socket file is replaced, the directory is created
/// owner-only, and the socket is readable and writable by its owner only — from the start:
/// it is bound in a private directory, restricted, then moved into place, so it is never
/// reachable with looser permissions, even in a shared directory.
pub(crate) fn bind_control_socket(
    path: &std::path::Path,
) -> Result<tokio::net::UnixListener, NodeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    let private = dir.join(format!(".control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| NodeError::io(format!("creating {}", private.display()), e))?;
    let staged = private.join("control.sock");
    let bound = (|| {
        let listener = tokio::net::UnixListener::bind(&staged)
            .map_err(|e| NodeError::io(format!("listening on {}", path.display()), e))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| NodeError::io(format!("securing {}", path.display()), e))?;
        // Replaces a stale socket of an earlier run in one step.
        std::fs::rename(&staged, path)
            .map_err(|e| NodeError::io(format!("placing the socket at {}", path.display()), e))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Commits this manager's new address: through the leader (or directly, when it leads).
/// Keeps the Raft node's snapshot interval and the entries it keeps for slow followers equal
/// to the cluster spec's (`raft.snapshot_interval`, `raft.log_entries_for_slow_followers`), now
/// and after every change of the cluster object, until the Raft driver stops.
async fn follow_snapshot_policy(store: Store, raft: RaftHandle) {
    use shoal_store::{By, Filter, Reader};
    let mut stopped = raft.watch_status();
    loop {
        let (raft_spec, mut changes) = store.view_and_watch(
            Filter::all().kind(shoal_api::v1::ObjectKind::Cluster),
            |tx| {
                tx.find::<shoal_api::v1::Cluster>(By::All)
                    .into_iter()
                    .next()
                    .and_then(|c| c.spec.as_ref().and_then(|s| s.raft))
            },
        );
        let (interval, keep) = match raft_spec {
            Some(r) => (r.snapshot_interval, r.log_entries_for_slow_followers),
            None => (0, shoal_api::defaults::RAFT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS),
        };
        if raft.set_snapshot_policy(interval, keep).is_err() {
            return;
        }
        tokio::select! {
            // A change, or a lagged / reset watch: read the spec again.
            next = changes.next() => {
                if matches!(next, Err(shoal_store::WatchError::Closed)) {
                    return;
                }
            }
            // The driver's status only ends when the driver does.
            () = async { while stopped.changed().await.is_ok() {} } => return,
        }
    }
}

/// Keeps this manager's key file sealed as the cluster says: with the cluster's unlock key
/// while autolock is on, in clear while it is off. When a key is set or changes (autolock
/// turned on, the key rotated, or rotated while this manager was down), the file is sealed
/// with the new key first and then the Raft data key rotates: the data keys used from then on
/// were never on disk in clear or under an old unlock key. Until the store holds the cluster
/// object (a manager still joining), nothing changes.
async fn follow_autolock(
    store: Store,
    keys: NodeKeys,
    log: Arc<RedbLog>,
    mut stopping: watch::Receiver<bool>,
) {
    use shoal_store::{By, Filter, Reader};
    loop {
        let (wanted, mut changes) = store.view_and_watch(
            Filter::all().kind(shoal_api::v1::ObjectKind::Cluster),
            |tx| {
                tx.find::<shoal_api::v1::Cluster>(By::All)
                    .first()
                    .map(|c| shoal_manager::cluster::unlock_key(c).and_then(UnlockKey::from_bytes))
            },
        );
        if let Some(wanted) = wanted
            && wanted != keys.unlock_key()
        {
            let result = follow_unlock_key(&keys, &log, wanted).await;
            if let Err(e) = result {
                tracing::warn!(
                    "sealing this manager's keys as the cluster asks failed: {e}; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        }
        tokio::select! {
            next = changes.next() => {
                if matches!(next, Err(shoal_store::WatchError::Closed)) {
                    return;
                }
            }
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// Seals the key file with `wanted` (or in clear), then rotates the data key if a key was set.
async fn follow_unlock_key(
    keys: &NodeKeys,
    log: &Arc<RedbLog>,
    wanted: Option<UnlockKey>,
) -> Result<(), NodeError> {
    let locking = wanted.is_some();
    let keys = keys.clone();
    let log = log.clone();
    tokio::task::spawn_blocking(move || -> Result<(), NodeError> {
        keys.set_unlock_key(wanted)?;
        if locking {
            tracing::info!(
                "autolock: this manager's keys are sealed with the cluster's unlock key; \
                 rotating the raft data key"
            );
            log.rotate_data_key(&|k| {
                keys.set_raft_keys(Some(k.clone()))
                    .map_err(|e| shoal_raft::RaftError::Storage(e.to_string()))
            })?;
        } else {
            tracing::info!("autolock is off: this manager's keys are no longer sealed");
        }
        Ok(())
    })
    .await
    .map_err(|e| NodeError::Serve(e.to_string()))?
}

async fn announce_address(handle: RaftHandle, identity: NodeIdentity, dialer: Dialer) {
    let me = RaftMember {
        raft_id: identity.raft_id,
        node_id: identity.node_id.clone(),
        addr: identity.advertise_addr.clone(),
    };
    for _ in 0..120 {
        let status = handle.status();
        if status
            .members
            .get(&identity.raft_id)
            .is_some_and(|m| m.addr == me.addr)
        {
            return;
        }
        let done = if status.is_leader {
            handle.add_member(me.clone()).await.is_ok()
        } else {
            let mut ok = false;
            for m in status
                .members
                .values()
                .filter(|m| m.raft_id != identity.raft_id)
            {
                if join(&dialer, &m.addr, &me.addr, &me.node_id).await.is_ok() {
                    ok = true;
                    break;
                }
            }
            ok
        };
        if done {
            tracing::info!("the cluster knows this manager at {}", me.addr);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!(
        "could not tell the cluster this manager's new address {}",
        me.addr
    );
}

pub(crate) fn control_path(config: &DaemonConfig, state_dir: &StateDir) -> PathBuf {
    config.listen_control_api.clone().unwrap_or_else(|| {
        state_dir
            .path()
            .join(shoal_api::defaults::CONTROL_SOCKET_NAME)
    })
}

/// Gets this node a certificate (and so an ID and a role) from the CA at `addr` with
/// `token`, and records both in the state directory. Refusals are final and say why.
pub(crate) async fn join_cluster(
    state_dir: &StateDir,
    addr: &str,
    token: &str,
    availability: shoal_api::v1::node_spec::Availability,
) -> Result<(NodeIdentity, crate::certificates::Issued), NodeError> {
    let issued = crate::certificates::obtain_with(addr, token, availability).await?;
    crate::certificates::save(&NodeKeys::new(state_dir.path()), &issued)?;
    let identity = NodeIdentity {
        node_id: issued.identity.node_id.clone(),
        raft_id: 0,
        advertise_addr: String::new(),
        managers: vec![addr.to_string()],
    };
    state_dir.save_identity(&identity)?;
    tracing::info!(
        node_id = %identity.node_id,
        "joined the cluster as a {}",
        role_name(issued.identity.role)
    );
    Ok((identity, issued))
}

/// Asks each of `managers` in turn to let this node join Raft; the first that agrees wins.
async fn join_any(
    dialer: &Dialer,
    managers: &[String],
    me: &str,
    node_id: &str,
) -> Result<JoinResponse, NodeError> {
    let mut last = NodeError::Join("no manager is known to join through".into());
    for addr in managers {
        match join(dialer, addr, me, node_id).await {
            Ok(response) => return Ok(response),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Daemon {
    /// Prepares the node: state directory, identity, certificates, and — for a manager —
    /// Raft. Must run inside a tokio runtime.
    pub async fn start(config: DaemonConfig) -> Result<Self, NodeError> {
        config.validate()?;
        let state_dir = StateDir::open(&config.state_dir)?;
        // A certificate that expired while the node was off: join again with the token, or
        // refuse to start saying what to do, before anything changes (see `expiry`).
        let expiry = crate::expiry::on_start(&config, &state_dir).await?;
        let control = bind_control_socket(&control_path(&config, &state_dir))?;
        match state_dir.identity()? {
            Some(identity) => {
                let joining = config.join_addr.is_some() || config.join_token.is_some();
                if config.init
                    || config.restore.is_some()
                    || (joining && expiry != crate::expiry::Expiry::Rejoined)
                {
                    return Err(NodeError::Config(format!(
                        "this node already belongs to a cluster (state in {}); start it without \
                         --init/--join-addr/--join-token/--restore to resume, or use another \
                         (empty) --state-dir",
                        config.state_dir.display()
                    )));
                }
                let no_certificates = || {
                    NodeError::StateDir(format!(
                        "{} has no certificates: this node cannot prove who it is; restore \
                         them from a backup, or leave the cluster and join again",
                        state_dir.path().join("certificates").display()
                    ))
                };
                let keys = NodeKeys::open(state_dir.path(), config.unlock_key.as_ref())?
                    .ok_or_else(no_certificates)?;
                let certificates =
                    crate::certificates::load_with(&keys)?.ok_or_else(no_certificates)?;
                let credentials = credentials_from(certificates)?;
                let managers = Managers::new(identity.managers.clone());
                let node = NodeParts {
                    state_dir,
                    control,
                    identity,
                    credentials,
                    keys,
                    managers,
                };
                match node.credentials.identity().role {
                    NodeRole::Manager => Self::manager(config, node).await,
                    NodeRole::Worker => Self::worker(config, node),
                }
            }
            None if config.restore.is_some() => Self::restore(config, state_dir, control).await,
            None if config.init => Self::init(config, state_dir, control).await,
            None => {
                let (Some(join_addr), Some(token)) = (&config.join_addr, &config.join_token) else {
                    return Err(NodeError::Config(format!(
                        "this node does not belong to a cluster yet (no state in {}): start it \
                         with --init to create one, or --join-addr ADDR --join-token TOKEN to \
                         join one",
                        config.state_dir.display()
                    )));
                };
                let (identity, issued) =
                    join_cluster(&state_dir, join_addr, token, config.availability).await?;
                let credentials = credentials_from(issued.certificates())?;
                let managers = Managers::new(identity.managers.clone());
                let keys = NodeKeys::open(state_dir.path(), None)?
                    .unwrap_or_else(|| NodeKeys::new(state_dir.path()));
                let node = NodeParts {
                    state_dir,
                    control,
                    identity,
                    credentials,
                    keys,
                    managers,
                };
                match issued.identity.role {
                    NodeRole::Manager => Self::manager(config, node).await,
                    NodeRole::Worker => Self::worker(config, node),
                }
            }
        }
    }

    fn node_config(config: &DaemonConfig, id: u64) -> NodeConfig {
        NodeConfig {
            id,
            election_tick: config.election_tick as usize,
            heartbeat_tick: config.heartbeat_tick as usize,
            ..NodeConfig::new(id)
        }
    }

    async fn bind_remote(
        config: &DaemonConfig,
    ) -> Result<(tokio::net::TcpListener, String), NodeError> {
        let addr = config.listen_remote_api;
        let listening = |e| NodeError::io(format!("listening on {addr}"), e);
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(listening)?;
        // As `TcpListener::bind` does, so a restarted daemon can take its port back at once.
        socket.set_reuseaddr(true).map_err(listening)?;
        socket.bind(addr).map_err(listening)?;
        // A deep accept queue (the kernel caps it at net.core.somaxconn): after a failover
        // every agent of the cluster connects within a second or two, and connections the
        // queue cannot hold are dropped and retried by the client a second later.
        let listener = socket.listen(REMOTE_API_BACKLOG).map_err(listening)?;
        let listen = listener
            .local_addr()
            .map_err(|e| NodeError::io("reading the listen address", e))?;
        let advertise = config.advertise(listen);
        Ok((listener, advertise))
    }

    /// A new cluster, with this node as its first manager.
    async fn init(
        config: DaemonConfig,
        state_dir: StateDir,
        control: tokio::net::UnixListener,
    ) -> Result<Self, NodeError> {
        let (listener, advertise) = Self::bind_remote(&config).await?;
        let state = Arc::new(StateMachine::new(DEFAULT_WATCH_CAPACITY));
        // The cluster object (root CA, join tokens, default spec) is part of the first
        // snapshot, so every manager that ever joins has it.
        let now = std::time::SystemTime::now();
        let mut cluster = shoal_manager::cluster::new_cluster(now)
            .map_err(|e| NodeError::Config(format!("creating the cluster CA: {e}")))?;
        if config.autolock {
            cluster
                .spec
                .get_or_insert_with(Default::default)
                .encryption_config
                .get_or_insert_with(Default::default)
                .auto_lock_managers = true;
            shoal_manager::cluster::reconcile_unlock_key(&mut cluster, false)
                .map_err(NodeError::Config)?;
        }
        let autolocked = shoal_manager::cluster::unlock_key(&cluster).is_some();
        let tokens = cluster
            .root_ca
            .as_ref()
            .and_then(|r| r.join_tokens.clone())
            .unwrap_or_default();
        let first = FirstManager::new(&config, &state_dir, &cluster, &advertise, now)?;
        state
            .apply(shoal_manager::cluster::initial_state(
                cluster,
                first.node_object.clone(),
                now,
            ))
            .map_err(|e| NodeError::Config(format!("creating the cluster object: {e}")))?;
        Self::bootstrap(
            config,
            state_dir,
            control,
            listener,
            state,
            first,
            |identity| {
                // Like `docker swarm init`: say how to add to the new cluster. Neither the
                // manager token nor the unlock key is printed: logs are read by more people
                // than should hold them.
                eprintln!(
                    "Cluster initialized: this node ({}) is now a manager.\n\nTo add a worker to \
                     this cluster, run on the other machine:\n\n    shoal daemon --join-addr \
                     {advertise} --join-token {}\n\nTo add a manager, run `shoal swarm \
                     join-token manager` here and follow the instructions.\n",
                    identity.node_id, tokens.worker
                );
                if autolocked {
                    eprintln!(
                        "The managers of this cluster are autolocked: a restarted manager serves \
                         nothing until it is given the unlock key with `shoal swarm unlock`. Run \
                         `shoal swarm unlock-key` here to see the key, and keep it safe.\n"
                    );
                }
            },
        )
    }

    /// A cluster brought back from a backup (`--restore FILE --force-new-cluster`): the
    /// store as the backup holds it — same cluster ID, root CA, join tokens, unlock key,
    /// nodes, services, tasks, networks, secrets and configs — in a new Raft cluster whose only
    /// member is this node, a new manager with a new node ID and a certificate from the
    /// backup's root CA. The nodes of the old cluster stay in the store (workers whose
    /// certificates are still valid can reconnect once they can reach this manager; the old
    /// managers are no members: remove them with `shoal node rm`). A backup sealed with
    /// the unlock key needs it ([`NodeError::Locked`] until it is given), and this manager is
    /// autolocked from its first write, as the cluster was.
    async fn restore(
        config: DaemonConfig,
        state_dir: StateDir,
        control: tokio::net::UnixListener,
    ) -> Result<Self, NodeError> {
        use prost::Message;
        let path = config.restore.clone().expect("restore was asked for");
        let bytes = std::fs::read(&path)
            .map_err(|e| NodeError::io(format!("reading the backup {}", path.display()), e))?;
        let backup = crate::backup::Backup::parse(bytes, &path.display().to_string())?;
        let content = backup.open(config.unlock_key.as_ref())?;
        let snapshot = shoal_api::v1::StoreSnapshot::decode(content.as_slice()).map_err(|e| {
            NodeError::Config(format!(
                "{} does not hold a store snapshot this Shoal reads ({e})",
                path.display()
            ))
        })?;
        let cluster = snapshot.clusters.first().cloned().ok_or_else(|| {
            NodeError::Config(format!(
                "{} holds no cluster object (no root CA to start from); it is not a backup of \
                 a cluster",
                path.display()
            ))
        })?;
        let (listener, advertise) = Self::bind_remote(&config).await?;
        let state = Arc::new(StateMachine::new(DEFAULT_WATCH_CAPACITY));
        state.restore(snapshot).map_err(|e| {
            NodeError::Config(format!(
                "the state in {} is refused ({e}); nothing was written",
                path.display()
            ))
        })?;
        let now = std::time::SystemTime::now();
        let first = FirstManager::new(&config, &state_dir, &cluster, &advertise, now)?;
        let mut node_object = first.node_object.clone();
        let meta = node_object.meta.get_or_insert_with(Default::default);
        meta.created_at = Some(now.into());
        meta.updated_at = Some(now.into());
        state
            .apply(shoal_store::ChangeSet {
                changes: vec![shoal_store::Change {
                    action: shoal_store::Action::Create,
                    object: shoal_store::Object::Node(Arc::new(node_object)),
                }],
                reads: vec![],
            })
            .map_err(|e| NodeError::Config(format!("recording this manager: {e}")))?;
        let header = backup.header;
        Self::bootstrap(
            config,
            state_dir,
            control,
            listener,
            state,
            first,
            |identity| {
                tracing::warn!(
                    cluster_id = %header.cluster_id,
                    "restored the cluster from {} (taken {} on node {} at store version {}: \
                     {}); this node ({}) is its only manager",
                    path.display(),
                    header.taken_at,
                    header.taken_on,
                    header.store_version,
                    header.contents(),
                    identity.node_id,
                );
            },
        )
    }

    /// Starts Raft as the only member of a cluster whose store `state` holds, then serves:
    /// `announce` runs once the node's identity is saved.
    fn bootstrap(
        config: DaemonConfig,
        state_dir: StateDir,
        control: tokio::net::UnixListener,
        listener: tokio::net::TcpListener,
        state: Arc<StateMachine>,
        first: FirstManager,
        announce: impl FnOnce(&NodeIdentity),
    ) -> Result<Self, NodeError> {
        let FirstManager {
            identity,
            node_object: _,
            issued,
            keys,
            log,
            raft_log,
        } = first;
        let member = RaftMember {
            raft_id: identity.raft_id,
            node_id: identity.node_id.clone(),
            addr: identity.advertise_addr.clone(),
        };
        let node = RaftNode::bootstrap(
            Self::node_config(&config, identity.raft_id),
            log,
            state.clone(),
            member,
        )?;
        state_dir.save_identity(&identity)?;
        announce(&identity);
        let credentials = credentials_from(issued.certificates())?;
        Self::start_raft(
            config,
            NodeParts {
                state_dir,
                control,
                identity,
                credentials,
                keys,
                managers: Managers::default(),
            },
            RaftStart {
                listener,
                node,
                state,
                log: raft_log,
                initial_peers: Vec::new(),
                moved_from: None,
            },
        )
    }

    /// A manager: resumes its Raft log, or — new to Raft (just joined with a manager token,
    /// or promoted) — joins Raft through the managers it knows.
    async fn manager(config: DaemonConfig, node: NodeParts) -> Result<Self, NodeError> {
        let NodeParts {
            state_dir,
            control,
            mut identity,
            credentials,
            keys,
            managers,
        } = node;
        let (listener, advertise) = Self::bind_remote(&config).await?;
        let state = Arc::new(StateMachine::new(DEFAULT_WATCH_CAPACITY));
        let mut initial_peers = Vec::new();
        let mut moved_from = None;
        let raft_log;
        let node = if identity.raft_id == 0 {
            // Whatever an earlier membership left behind is stale.
            state_dir.remove_raft()?;
            let (log, opened) = open_log(&state_dir, &keys, true)?;
            raft_log = opened;
            let dialer = Dialer::mutual(credentials.clone());
            let response = match join_any(&dialer, &managers.get(), &advertise, &identity.node_id)
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    // Demoted again before it could join: the cluster wants a worker.
                    if let Ok(renewed) = crate::renewal::renew(&keys, &credentials, &managers).await
                        && renewed.role == NodeRole::Worker
                    {
                        tracing::info!(
                            "joining Raft was refused ({e}); the cluster has this node as a \
                                 worker now"
                        );
                        drop(listener);
                        return Self::worker(
                            config,
                            NodeParts {
                                state_dir,
                                control,
                                identity,
                                credentials,
                                keys,
                                managers,
                            },
                        );
                    }
                    return Err(e);
                }
            };
            // A joining manager learns its peers from the answer: it must be able to answer
            // the leader before the snapshot that carries the membership arrives.
            initial_peers = response.members.clone();
            identity.raft_id = response.raft_id;
            identity.advertise_addr = advertise.clone();
            RaftNode::joining(
                Self::node_config(&config, identity.raft_id),
                log,
                state.clone(),
            )?
        } else {
            let (log, opened) = open_log(&state_dir, &keys, false)?;
            raft_log = opened;
            let advertise = resumed_advertise(&config, &identity.advertise_addr, advertise);
            moved_from =
                (identity.advertise_addr != advertise).then(|| identity.advertise_addr.clone());
            let log = if config.force_new_cluster {
                tracing::warn!(
                    "forcing a new cluster: this manager becomes the only member, keeping all data"
                );
                RaftNode::force_new_cluster(
                    &Self::node_config(&config, identity.raft_id),
                    log,
                    state.clone(),
                )?
            } else {
                log
            };
            identity.advertise_addr = advertise.clone();
            RaftNode::restart(
                Self::node_config(&config, identity.raft_id),
                log,
                state.clone(),
            )?
        };
        // Forcing a new cluster with a certificate that expired while this manager was off:
        // a new one from the cluster's root CA in the store just loaded (see `expiry`).
        let reissued = if config.force_new_cluster {
            crate::expiry::reissue_if_expired(&config, &keys, &state, &credentials)?
        } else {
            None
        };
        state_dir.save_identity(&identity)?;
        let daemon = Self::start_raft(
            config,
            NodeParts {
                state_dir,
                control,
                identity,
                credentials,
                keys,
                managers,
            },
            RaftStart {
                listener,
                node,
                state,
                log: raft_log,
                initial_peers,
                moved_from,
            },
        )?;
        if let (Some(record), Role::Manager(parts)) = (reissued, &daemon.role) {
            tokio::spawn(crate::expiry::record_certificate(
                parts.store.clone(),
                parts.driver.handle(),
                daemon.identity.node_id.clone(),
                record,
            ));
        }
        Ok(daemon)
    }

    fn start_raft(
        config: DaemonConfig,
        node_parts: NodeParts,
        raft: RaftStart,
    ) -> Result<Self, NodeError> {
        let NodeParts {
            state_dir,
            control,
            identity,
            credentials,
            keys,
            managers,
        } = node_parts;
        let RaftStart {
            listener,
            node,
            state,
            log,
            initial_peers,
            moved_from,
        } = raft;
        let transport = GrpcTransport::new(
            identity.raft_id,
            tokio::runtime::Handle::current(),
            Dialer::mutual(credentials.clone()),
        );
        let driver = RaftDriver::start(
            node,
            state.clone(),
            DriverConfig {
                node: Self::node_config(&config, identity.raft_id),
                tick: config.tick_interval,
            },
            transport.clone(),
        );
        transport.attach(driver.handle());
        if !initial_peers.is_empty() {
            use shoal_raft::Transport;
            transport.set_members(&initial_peers.into_iter().map(|m| (m.raft_id, m)).collect());
        }
        let store = Store::with_state(
            state,
            Arc::new(RaftProposer::new(driver.handle())),
            Arc::new(SystemClock),
        );
        tokio::spawn(follow_snapshot_policy(store.clone(), driver.handle()));
        if let Some(old) = moved_from {
            tracing::info!(
                "this manager moved from {old} to {}; telling the cluster",
                identity.advertise_addr
            );
            tokio::spawn(announce_address(
                driver.handle(),
                identity.clone(),
                Dialer::mutual(credentials.clone()),
            ));
        }
        tracing::info!(
            node_id = %identity.node_id,
            raft_id = %format!("{:x}", identity.raft_id),
            "manager listening on {}, advertised as {}",
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            identity.advertise_addr
        );
        Ok(Self {
            config,
            state_dir,
            identity,
            control,
            credentials,
            keys,
            managers,
            role: Role::Manager(Box::new(ManagerParts {
                listener,
                driver,
                transport,
                store,
                log,
            })),
            incarnation: new_incarnation(),
        })
    }

    /// A worker: holds its certificate and renews it. (Running tasks comes with the agent.)
    fn worker(config: DaemonConfig, node: NodeParts) -> Result<Self, NodeError> {
        let NodeParts {
            state_dir,
            control,
            mut identity,
            credentials,
            keys,
            managers,
        } = node;
        if identity.raft_id != 0 || keys.raft_keys().is_some() {
            // A demoted manager: its Raft state belongs to a membership it no longer has.
            state_dir.remove_raft()?;
            keys.set_raft_keys(None)?;
            identity.raft_id = 0;
            state_dir.save_identity(&identity)?;
        }
        // Workers are never locked (as in SwarmKit): a demoted autolocked manager's key file
        // goes back to clear, or it would wait for an unlock key at its next start.
        if keys.unlock_key().is_some() {
            keys.set_unlock_key(None)?;
        }
        if managers.get().is_empty() {
            return Err(NodeError::StateDir(format!(
                "{} names no manager to reach; leave the cluster and join again",
                state_dir.path().join("node.json").display()
            )));
        }
        tracing::info!(node_id = %identity.node_id, "worker started; managers: {:?}", managers.get());
        Ok(Self {
            config,
            state_dir,
            identity,
            control,
            credentials,
            keys,
            managers,
            role: Role::Worker,
            incarnation: new_incarnation(),
        })
    }

    /// The node's key file (shared: it follows unlock-key changes while the node runs).
    pub fn keys(&self) -> NodeKeys {
        self.keys.clone()
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// This run of the node: a new non-zero value at each start, which `Swarm.Info` reports.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The role this node runs as.
    pub fn role(&self) -> NodeRole {
        match self.role {
            Role::Manager(_) => NodeRole::Manager,
            Role::Worker => NodeRole::Worker,
        }
    }

    /// The remote API's address (managers only).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.role {
            Role::Manager(parts) => parts.listener.local_addr().ok(),
            Role::Worker => None,
        }
    }

    /// Serves until `shutdown` resolves, the node leaves, its role changes, or (a manager) it
    /// is asked to force a new cluster; then stops cleanly and says which.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Outcome, NodeError> {
        let Daemon {
            config,
            state_dir,
            identity,
            control,
            credentials,
            keys,
            managers,
            role,
            incarnation,
        } = self;
        // `stopping` stops every server and loop of this node; `shutdown` is one reason.
        let (stopping_tx, stopping) = watch::channel(false);
        let (local_tx, mut local_rx) = mpsc::channel::<LocalRequest>(1);
        let (role_tx, mut role_rx) = mpsc::channel::<NodeRole>(1);
        let renewer = Renewer::new(
            keys.clone(),
            credentials.clone(),
            managers.clone(),
            config.clock.clone(),
            config.renewal_check,
        );
        let session = SessionSlot::default();
        let reporter = StatusReporter::start(SessionSink(session.clone()));
        let worker = Worker::new(
            executor(&config, &state_dir, &identity.node_id).await?,
            task_db(&state_dir)?,
            reporter.clone(),
        )
        .map_err(|e| NodeError::StateDir(format!("starting the worker: {e}")))?;
        let agent = Agent::new(
            credentials.clone(),
            managers.clone(),
            renewer.requester(),
            config.hostname.clone(),
            worker,
            session,
        )
        .with_labels(config.labels.clone());
        let renewer = tokio::spawn(renewer.run(stopping.clone(), role_tx));
        let mut agent = tokio::spawn(agent.run(stopping.clone()));
        let running_as = match role {
            Role::Manager(_) => NodeRole::Manager,
            Role::Worker => NodeRole::Worker,
        };
        let local_swarm = LocalSwarm::new(
            credentials.clone(),
            managers.clone(),
            running_as,
            incarnation,
            local_tx,
        );
        let until_stopping = |mut s: watch::Receiver<bool>| async move {
            let _ = s.wait_for(|s| *s).await;
        };
        let shutdown = tokio::spawn(shutdown);

        let (outcome, served) = match role {
            Role::Worker => {
                let local = tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(NotAManager::WORKER)
                        .add_service(SwarmServer::new(local_swarm))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::UnixListenerStream::new(control),
                            until_stopping(stopping.clone()),
                        ),
                );
                let outcome = tokio::select! {
                    _ = shutdown => Reason::Stop,
                    Some(request) = local_rx.recv() => Reason::from(request),
                    Some(role) = role_rx.recv() => Reason::Role(role),
                    Ok(AgentExit::Removed(message)) = &mut agent => Reason::Removed(message),
                };
                let _ = stopping_tx.send(true);
                let served = local.await.map_err(|e| NodeError::Serve(e.to_string()))?;
                (outcome, served.map_err(|e| NodeError::Serve(e.to_string())))
            }
            Role::Manager(parts) => {
                let ManagerParts {
                    listener,
                    driver,
                    transport,
                    store,
                    log,
                } = *parts;
                let autolock = tokio::spawn(follow_autolock(
                    store.clone(),
                    keys.clone(),
                    log,
                    stopping.clone(),
                ));
                let handle = driver.handle();
                let authorizer = Authorizer::new(store.clone(), credentials.identity().cluster_id)
                    .with_raft(handle.clone());
                let managers_only = || authorizer.interceptor(Access::Managers);
                let log_broker = LogBroker::new(store.clone(), handle.clone(), authorizer.clone());
                // Control calls reaching this manager while it follows go to the leader,
                // bounded in time, over a connection pinged every second: a call in flight
                // when the leader is cut off (a partition that drops packets, not resets)
                // fails (UNAVAILABLE, outcome unknown) within about two seconds, instead of
                // waiting for the forwarding deadline or the caller's.
                let forwarding = |api: ControlApi| {
                    ForwardToLeader::new(
                        ControlServer::new(api),
                        handle.clone(),
                        shoal_tls::Dialer::mutual(credentials.clone())
                            .with_request_timeout(FORWARD_TIMEOUT)
                            .with_keep_alive(FORWARD_PING, FORWARD_PING),
                        &credentials.identity().node_id,
                    )
                };
                let local = tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(forwarding(ControlApi::new(store.clone(), handle.clone())))
                        .add_service(LogsServer::new(log_broker.clone()))
                        .add_service(WatchServer::new(
                            WatchApi::new(store.clone()).stop_on(stopping.clone()),
                        ))
                        .add_service(SwarmServer::new(
                            local_swarm.with_store(store.clone(), handle.clone()),
                        ))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::UnixListenerStream::new(control),
                            until_stopping(stopping.clone()),
                        ),
                );
                let raft = RaftService::new(handle.clone(), stopping.clone());
                let ca = CaServerImpl::new(store.clone(), handle.clone(), authorizer.clone());
                let dispatcher = Dispatcher::new(
                    store.clone(),
                    handle.clone(),
                    authorizer.clone(),
                    Arc::new(SystemClock),
                );
                let dispatcher_task = dispatcher.start();
                // Services into tasks on nodes, while this manager leads.
                let orchestrator = Orchestrator::new(store.clone(), handle.clone()).start();
                // Root CA rotations carried to their end, while this manager leads.
                let root_rotation = shoal_manager::root_rotation::RootRotationReconciler::new(
                    store.clone(),
                    handle.clone(),
                )
                .start();
                // Session streams stay open until the dispatcher ends them: stop it when the
                // server is told to stop, so the graceful shutdown can finish.
                let server_stopping = {
                    let stopping = stopping.clone();
                    async move {
                        until_stopping(stopping).await;
                        dispatcher_task.stop().await;
                    }
                };
                let remote = tokio::spawn(
                    tonic::transport::Server::builder()
                        .initial_stream_window_size(Some(shoal_raft::transport::WINDOW_BYTES))
                        .initial_connection_window_size(Some(shoal_raft::transport::WINDOW_BYTES))
                        .add_service(InterceptedService::new(
                            RaftServer::new(raft.clone())
                                .max_decoding_message_size(usize::MAX)
                                .max_encoding_message_size(usize::MAX),
                            managers_only(),
                        ))
                        .add_service(RaftMembershipServer::with_interceptor(
                            raft,
                            managers_only(),
                        ))
                        .add_service(CaServer::new(ca.clone()))
                        .add_service(NodeCaServer::new(ca))
                        .add_service(DispatcherServer::new(dispatcher))
                        // Agents: the broker checks their node certificates itself.
                        .add_service(LogBrokerServer::new(log_broker.clone()))
                        .add_service(LogsServer::with_interceptor(log_broker, managers_only()))
                        .add_service(WatchServer::with_interceptor(
                            WatchApi::new(store.clone()).stop_on(stopping.clone()),
                            managers_only(),
                        ))
                        .add_service(InterceptedService::new(
                            forwarding(ControlApi::new(store, handle.clone())),
                            managers_only(),
                        ))
                        .serve_with_incoming_shutdown(
                            shoal_tls::listen(listener, credentials.clone()),
                            server_stopping,
                        ),
                );
                // The managers this node renews its certificate with: the Raft members.
                let follow_members = tokio::spawn(follow_members(handle.clone(), managers.clone()));
                let mut status = handle.watch_status();
                let outcome = tokio::select! {
                    _ = shutdown => Reason::Stop,
                    Some(request) = local_rx.recv() => Reason::from(request),
                    Some(role) = role_rx.recv() => Reason::Role(role),
                    _ = status.wait_for(|s| s.removed) => Reason::RemovedFromRaft,
                };
                if let Reason::Leave(LeaveRequest { force: true }) = &outcome {
                    leave_raft(&handle, &identity, &credentials, &managers).await;
                }
                let _ = stopping_tx.send(true);
                orchestrator.stop().await;
                root_rotation.stop().await;
                follow_members.abort();
                let _ = autolock.await;
                let served = remote.await.map_err(|e| NodeError::Serve(e.to_string()))?;
                let _ = local.await;
                transport.shutdown();
                // Joining the Raft thread blocks; do it off the async workers.
                let _ = tokio::task::spawn_blocking(move || driver.stop()).await;
                (outcome, served.map_err(|e| NodeError::Serve(e.to_string())))
            }
        };
        let _ = stopping_tx.send(true);
        let _ = renewer.await;
        if !agent.is_finished() {
            let _ = agent.await;
        }
        reporter.stop().await;
        served?;
        // Remember the managers the node learned, for its next start.
        if !matches!(outcome, Reason::Leave(_) | Reason::Removed(_)) {
            let mut identity = identity.clone();
            identity.managers = managers.get();
            state_dir.save_identity(&identity)?;
        }
        let outcome = match outcome {
            Reason::Stop => Outcome::Stopped,
            Reason::Leave(_) => {
                state_dir.forget_cluster()?;
                tracing::info!("left the cluster; the node's cluster state is gone");
                Outcome::Left
            }
            Reason::Role(role) => {
                tracing::info!("this node is now a {}; restarting as one", role_name(role));
                Outcome::RoleChanged(role)
            }
            Reason::ForceNewCluster(request) => {
                tracing::info!("restarting this manager as the only member of a new cluster");
                Outcome::ForceNewCluster(request)
            }
            Reason::Removed(message) => {
                state_dir.forget_cluster()?;
                return Err(NodeError::Refused(format!(
                    "this node was removed from the cluster ({message}); it has forgotten the \
                     cluster: to come back, join again with a token"
                )));
            }
            Reason::RemovedFromRaft => {
                tracing::info!(
                    "this manager was removed from Raft (demoted); getting a worker certificate"
                );
                demoted(&keys, &credentials, &managers).await?;
                Outcome::RoleChanged(NodeRole::Worker)
            }
        };
        drop(state_dir);
        tracing::info!("stopped");
        Ok(outcome)
    }

    /// Serves a manager in the background; [`RunningDaemon::stop`] stops it.
    pub fn spawn(self) -> RunningDaemon {
        let Role::Manager(parts) = &self.role else {
            panic!("Daemon::spawn serves managers only");
        };
        let handle = parts.driver.handle();
        let store = parts.store.clone();
        let addr = parts.listener.local_addr().expect("bound listener");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = stopped.await;
        }));
        RunningDaemon {
            stop: Some(stop),
            task,
            handle,
            store,
            addr,
        }
    }
}

/// Why the serve loop ended.
enum Reason {
    Stop,
    Leave(LeaveRequest),
    Role(NodeRole),
    ForceNewCluster(NewClusterRequest),
    RemovedFromRaft,
    /// The cluster removed this node.
    Removed(String),
}

impl From<LocalRequest> for Reason {
    fn from(request: LocalRequest) -> Self {
        match request {
            LocalRequest::Leave(leave) => Reason::Leave(leave),
            LocalRequest::ForceNewCluster(new_cluster) => Reason::ForceNewCluster(new_cluster),
        }
    }
}

/// What a new manager needs to start Raft.
/// The only manager of a cluster that starts on this node (a new one, or one restored from a
/// backup): a new identity, its certificate from the cluster's root CA and its Node object,
/// its key file — sealed from the first byte written when the cluster is autolocked, so
/// neither its TLS key nor its data keys are ever on disk in clear — and a fresh Raft log.
struct FirstManager {
    identity: NodeIdentity,
    node_object: shoal_api::v1::Node,
    issued: crate::certificates::Issued,
    keys: NodeKeys,
    log: LogStore,
    raft_log: Arc<RedbLog>,
}

impl FirstManager {
    fn new(
        config: &DaemonConfig,
        state_dir: &StateDir,
        cluster: &shoal_api::v1::Cluster,
        advertise: &str,
        now: std::time::SystemTime,
    ) -> Result<Self, NodeError> {
        let identity = NodeIdentity {
            node_id: shoal_api::id::new_id(),
            raft_id: loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            },
            advertise_addr: advertise.to_string(),
            managers: Vec::new(),
        };
        let (mut node_object, cert_pem, key_pem) = shoal_manager::cluster::first_manager(
            cluster,
            &identity.node_id,
            &config.hostname,
            now,
        )
        .map_err(|e| NodeError::Config(format!("issuing this manager's certificate: {e}")))?;
        node_object
            .spec
            .get_or_insert_with(Default::default)
            .availability = config.availability as i32;
        let root_pem = cluster
            .root_ca
            .as_ref()
            .map(|r| String::from_utf8_lossy(&r.ca_cert).into_owned())
            .unwrap_or_default();
        let cert_identity = shoal_ca::parse_node_certificate(&cert_pem)
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let issued = crate::certificates::Issued {
            root_pem,
            cert_pem,
            key_pem,
            identity: cert_identity,
        };
        let keys = NodeKeys::new(state_dir.path());
        let unlock_key =
            shoal_manager::cluster::unlock_key(cluster).and_then(UnlockKey::from_bytes);
        if unlock_key.is_some() {
            keys.set_unlock_key(unlock_key)?;
        }
        crate::certificates::save(&keys, &issued)?;
        let (log, raft_log) = open_log(state_dir, &keys, true)?;
        Ok(Self {
            identity,
            node_object,
            issued,
            keys,
            log,
            raft_log,
        })
    }
}

/// What every active node starts with.
struct NodeParts {
    state_dir: StateDir,
    control: tokio::net::UnixListener,
    identity: NodeIdentity,
    credentials: Credentials,
    keys: NodeKeys,
    managers: Managers,
}

/// Opens the Raft log in the state directory, sealed with the node's data keys: a manager
/// new to Raft (`fresh`) gets new keys, written before anything is sealed with them; one that
/// resumes its log uses the keys beside its TLS key, and has none only if the log is empty.
fn open_log(
    state_dir: &StateDir,
    keys: &NodeKeys,
    fresh: bool,
) -> Result<(LogStore, Arc<RedbLog>), NodeError> {
    let data_keys = match keys.raft_keys() {
        Some(k) if !fresh => k,
        _ => {
            if !fresh && state_dir.raft_dir().join("log.redb").exists() {
                return Err(NodeError::StateDir(format!(
                    "{} holds a Raft log but {} holds no data keys to open it (it was written \
                     by another node, or by a Shoal from before encryption at rest); move the \
                     state directory aside and join the cluster again, or restore from a backup",
                    state_dir.raft_dir().display(),
                    state_dir.path().join("certificates/node.key").display()
                )));
            }
            let k = shoal_raft::DataKeys::generate();
            keys.set_raft_keys(Some(k.clone()))?;
            k
        }
    };
    let log = Arc::new(RedbLog::open(&state_dir.raft_dir(), data_keys)?);
    Ok((LogStore::open(Box::new(log.clone()))?, log))
}

struct RaftStart {
    log: Arc<RedbLog>,
    listener: tokio::net::TcpListener,
    node: RaftNode,
    state: Arc<StateMachine>,
    initial_peers: Vec<RaftMember>,
    moved_from: Option<String>,
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

/// Keeps `managers` equal to the Raft members' addresses, the leader first.
async fn follow_members(handle: RaftHandle, managers: Managers) {
    let mut status = handle.watch_status();
    loop {
        let addrs = {
            let s = status.borrow_and_update();
            let mut members: Vec<&RaftMember> = s.members.values().collect();
            members.sort_by_key(|m| Some(m.raft_id) != s.leader);
            members
                .into_iter()
                .filter(|m| !m.addr.is_empty())
                .map(|m| m.addr.clone())
                .collect::<Vec<_>>()
        };
        managers.set(addrs);
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// A manager leaving by force takes itself out of Raft first when it can, so the others do
/// not count a member that will never come back.
async fn leave_raft(
    handle: &RaftHandle,
    identity: &NodeIdentity,
    credentials: &Credentials,
    managers: &Managers,
) {
    let attempt = async {
        if handle.status().is_leader {
            handle
                .remove_member(identity.raft_id)
                .await
                .map_err(|e| NodeError::Refused(e.to_string()))
        } else {
            let others = Managers::new(
                managers
                    .get()
                    .into_iter()
                    .filter(|a| *a != identity.advertise_addr)
                    .collect(),
            );
            crate::renewal::call_leader(&Dialer::mutual(credentials.clone()), &others, |ch| {
                let member = RaftMember {
                    raft_id: identity.raft_id,
                    node_id: identity.node_id.clone(),
                    addr: identity.advertise_addr.clone(),
                };
                async move {
                    RaftMembershipClient::new(ch)
                        .leave(shoal_api::v1::LeaveRequest { node: Some(member) })
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(())) => tracing::info!("removed this manager from Raft"),
        Ok(Err(e)) => tracing::warn!("could not remove this manager from Raft: {e}"),
        Err(_) => tracing::warn!("could not remove this manager from Raft in time"),
    }
}

/// After removal from Raft: renews until the CA hands out a worker certificate.
async fn demoted(
    keys: &NodeKeys,
    credentials: &Credentials,
    managers: &Managers,
) -> Result<(), NodeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match crate::renewal::renew(keys, credentials, managers).await {
            Ok(identity) if identity.role == NodeRole::Worker => return Ok(()),
            Ok(_) => tracing::info!("the CA still has this node as a manager; retrying"),
            Err(e) => tracing::warn!("getting a worker certificate failed: {e}; retrying"),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NodeError::Refused(
                "this manager was removed from Raft but the cluster still has it as a manager \
                 (the demotion was cut short): run `shoal node demote <this node>` again on a \
                 manager, then restart this node"
                    .into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The executor `config` asks for; process tasks log under `<state>/worker/logs`.
async fn executor(
    config: &DaemonConfig,
    state_dir: &StateDir,
    node_id: &str,
) -> Result<Arc<dyn shoal_executor::Executor>, NodeError> {
    Ok(match config.executor {
        ExecutorKind::Process => {
            let mut process =
                shoal_executor::process::ProcessConfig::new(state_dir.path().join("worker/logs"));
            if let Some(shim) = &config.process_shim {
                process.shim = shim.clone();
            }
            Arc::new(shoal_executor::process::ProcessExecutor::new(process))
        }
        ExecutorKind::Docker => {
            let docker = shoal_executor_docker::DockerConfig::new(node_id);
            let socket = docker.socket.display().to_string();
            let connected = tokio::time::timeout(
                DOCKER_CONNECT_TIMEOUT,
                shoal_executor_docker::DockerExecutor::new(docker),
            )
            .await
            .map_err(|_| format!("the engine did not answer within {DOCKER_CONNECT_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
            match connected {
                Ok(docker) => {
                    tracing::info!("running container tasks on the Docker Engine at {socket}");
                    Arc::new(docker)
                }
                Err(why) => {
                    return Err(NodeError::Config(format!(
                        "--executor docker: cannot use the Docker Engine at {socket}: {why} \
                         (start the engine, set DOCKER_HOST=unix://PATH, or use --executor \
                         process)"
                    )));
                }
            }
        }
        ExecutorKind::Sim => Arc::new(shoal_executor::sim::SimExecutor::new(
            shoal_executor::sim::SimConfig {
                start_delay: Duration::from_millis(100),
                exit_after: None,
                runtimes: vec!["process".into(), "container".into()],
            },
        )),
    })
}

/// The address a restarting manager advertises. Without `--advertise-remote-api`, and
/// listening on every interface (`0.0.0.0`), the fresh guess is loopback, which would tell
/// the cluster the manager moved to an address no other machine reaches: the address it
/// advertised before is kept instead, as long as it listens on the same port.
fn resumed_advertise(config: &DaemonConfig, recorded: &str, fresh: String) -> String {
    let guessed =
        config.advertise_remote_api.is_none() && config.listen_remote_api.ip().is_unspecified();
    let same_port = recorded
        .rsplit_once(':')
        .is_some_and(|(_, port)| fresh.rsplit_once(':').is_some_and(|(_, p)| p == port));
    if guessed && same_port && !recorded.is_empty() {
        recorded.to_string()
    } else {
        fresh
    }
}

/// Connections the remote API's listener queues before they are accepted (tokio's `bind`
/// queues 1,024).
const REMOTE_API_BACKLOG: u32 = 8192;

/// How long a control call forwarded to the leader may take before it fails.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The forwarding connection's ping period, and how long a ping may go unanswered.
const FORWARD_PING: Duration = Duration::from_secs(1);

/// How long the Docker Engine has to answer when a node with `--executor docker` starts.
const DOCKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The worker's task database, `<state>/worker/tasks.redb`.
fn task_db(state_dir: &StateDir) -> Result<TaskDb, NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = state_dir.path().join("worker");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    TaskDb::open(&dir.join("tasks.redb"))
        .map_err(|e| NodeError::StateDir(format!("opening the worker's task db: {e}")))
}

fn credentials_from(certificates: NodeCertificates) -> Result<Credentials, NodeError> {
    Credentials::new(certificates).map_err(|e| NodeError::StateDir(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_manager_keeps_its_address_unless_told_otherwise() {
        let mut config = DaemonConfig::new(std::path::PathBuf::from("/tmp/x"));
        config.listen_remote_api = "0.0.0.0:4242".parse().unwrap();
        let fresh = || "127.0.0.1:4242".to_string();
        assert_eq!(
            resumed_advertise(&config, "10.0.0.5:4242", fresh()),
            "10.0.0.5:4242"
        );
        // Another port: it did move.
        assert_eq!(
            resumed_advertise(&config, "10.0.0.5:4243", fresh()),
            "127.0.0.1:4242"
        );
        // Told where: it moves there.
        config.advertise_remote_api = Some("10.0.0.9:4242".into());
        assert_eq!(
            resumed_advertise(&config, "10.0.0.5:4242", "10.0.0.9:4242".into()),
            "10.0.0.9:4242"
        );
        // A specific listen address is an explicit choice too.
        config.advertise_remote_api = None;
        config.listen_remote_api = "127.0.0.1:4242".parse().unwrap();
        assert_eq!(
            resumed_advertise(&config, "10.0.0.5:4242", fresh()),
            "127.0.0.1:4242"
        );
    }
}
