//! The daemon: start a manager from its state directory and serve until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::clock::SystemClock;
use shoal_api::v1::ca_server::CaServer;
use shoal_api::v1::control_server::ControlServer;
use shoal_api::v1::node_ca_server::NodeCaServer;
use shoal_api::v1::raft_membership_client::RaftMembershipClient;
use shoal_api::v1::raft_membership_server::RaftMembershipServer;
use shoal_api::v1::raft_server::RaftServer;
use shoal_api::v1::{JoinRequest, JoinResponse, RaftMember};
use shoal_manager::authorize::{Access, Authorizer};
use shoal_manager::ca_server::CaServer as CaServerImpl;
use shoal_manager::controlapi::ControlApi;
use shoal_raft::service::LEADER_ADDR_METADATA;
use shoal_raft::{
    DriverConfig, GrpcTransport, LogStore, NodeConfig, RaftDriver, RaftHandle, RaftNode,
    RaftProposer, RaftService, RedbLog,
};
use shoal_store::{DEFAULT_WATCH_CAPACITY, StateMachine, Store};
use shoal_tls::{Credentials, Dialer, NodeCertificates};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;

use crate::error::NodeError;
use crate::state_dir::{NodeIdentity, StateDir};

/// How to run a node (the `shoal daemon` flags).
#[derive(Clone, Debug)]
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
                "--join-addr needs --join-token: get one on a manager of the cluster with                  `shoal swarm join-token manager` (or worker)"
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
        Ok(())
    }
}

/// A node ready to serve.
pub struct Daemon {
    state_dir: StateDir,
    identity: NodeIdentity,
    listener: tokio::net::TcpListener,
    /// The local control socket: the Control API for this machine's users, trusted without
    /// TLS, reachable by the owner only (0600).
    control: tokio::net::UnixListener,
    driver: RaftDriver,
    transport: Arc<GrpcTransport>,
    store: Store,
    /// This node's certificates, shared by its server and its dialers; renewal swaps them.
    credentials: Credentials,
}

/// A daemon serving in the background, for tests and embedding.
pub struct RunningDaemon {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
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
/// owner-only, and the socket is readable and writable by its owner only.
fn bind_control_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener, NodeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(NodeError::io(
                format!("removing the stale socket {}", path.display()),
                e,
            ));
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| NodeError::io(format!("listening on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| NodeError::io(format!("securing {}", path.display()), e))?;
    Ok(listener)
}

/// Commits this manager's new address: through the leader (or directly, when it leads).
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

impl Daemon {
    /// Prepares the node: state directory, identity, Raft. Must run inside a tokio runtime.
    pub async fn start(config: DaemonConfig) -> Result<Self, NodeError> {
        config.validate()?;
        let state_dir = StateDir::open(&config.state_dir)?;
        let listener = tokio::net::TcpListener::bind(config.listen_remote_api)
            .await
            .map_err(|e| NodeError::io(format!("listening on {}", config.listen_remote_api), e))?;
        let control =
            bind_control_socket(&config.listen_control_api.clone().unwrap_or_else(|| {
                state_dir
                    .path()
                    .join(shoal_api::defaults::CONTROL_SOCKET_NAME)
            }))?;
        let listen = listener
            .local_addr()
            .map_err(|e| NodeError::io("reading the listen address", e))?;
        let advertise = config.advertise(listen);
        let existing = state_dir.identity()?;
        let state = Arc::new(StateMachine::new(DEFAULT_WATCH_CAPACITY));
        let log = LogStore::open(Box::new(RedbLog::open(&state_dir.raft_dir())?))?;
        let node_config = |id: u64| NodeConfig {
            id,
            election_tick: config.election_tick as usize,
            heartbeat_tick: config.heartbeat_tick as usize,
            ..NodeConfig::new(id)
        };

        // A joining manager learns its peers from the join answer: it must be able to answer
        // the leader before the snapshot that carries the membership arrives.
        let mut initial_peers: Vec<RaftMember> = Vec::new();
        // Set when this manager restarts at another address than it had.
        let mut moved_from: Option<String> = None;
        let (identity, node, certificates) = match existing {
            Some(mut identity) => {
                if config.init || config.join_addr.is_some() {
                    return Err(NodeError::Config(format!(
                        "this node already belongs to a cluster (state in {}); start it without \
                         --init/--join-addr to resume, or use another --state-dir",
                        config.state_dir.display()
                    )));
                }
                moved_from =
                    (identity.advertise_addr != advertise).then(|| identity.advertise_addr.clone());
                let log = if config.force_new_cluster {
                    tracing::warn!(
                        "forcing a new cluster: this manager becomes the only member, keeping all data"
                    );
                    RaftNode::force_new_cluster(&node_config(identity.raft_id), log, state.clone())?
                } else {
                    log
                };
                identity.advertise_addr = advertise.clone();
                state_dir.save_identity(&identity)?;
                let node = RaftNode::restart(node_config(identity.raft_id), log, state.clone())?;
                let certificates =
                    crate::certificates::load(state_dir.path())?.ok_or_else(|| {
                        NodeError::StateDir(format!(
                            "{} has no certificates: this node cannot prove who it is; restore                              them from a backup, or leave the cluster and join again",
                            state_dir.path().join("certificates").display()
                        ))
                    })?;
                (identity, node, certificates)
            }
            None if config.init => {
                let identity = NodeIdentity {
                    node_id: shoal_api::id::new_id(),
                    raft_id: loop {
                        let id: u64 = rand::random();
                        if id != 0 {
                            break id;
                        }
                    },
                    advertise_addr: advertise.clone(),
                };
                let member = RaftMember {
                    raft_id: identity.raft_id,
                    node_id: identity.node_id.clone(),
                    addr: advertise.clone(),
                };
                // The cluster object (root CA, join tokens, default spec) is part of the
                // first snapshot, so every manager that ever joins has it.
                let now = std::time::SystemTime::now();
                let cluster = shoal_manager::cluster::new_cluster(now)
                    .map_err(|e| NodeError::Config(format!("creating the cluster CA: {e}")))?;
                let manager_token = cluster
                    .root_ca
                    .as_ref()
                    .and_then(|r| r.join_tokens.as_ref())
                    .map(|t| t.manager.clone())
                    .unwrap_or_default();
                // The first manager's certificate, from the new root, and its Node object.
                let (node_object, cert_pem, key_pem) = shoal_manager::cluster::first_manager(
                    &cluster,
                    &identity.node_id,
                    &config.hostname,
                    now,
                )
                .map_err(|e| {
                    NodeError::Config(format!("issuing this manager's certificate: {e}"))
                })?;
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
                crate::certificates::save(state_dir.path(), &issued)?;
                state
                    .apply(shoal_manager::cluster::initial_state(
                        cluster,
                        node_object,
                        now,
                    ))
                    .map_err(|e| NodeError::Config(format!("creating the cluster object: {e}")))?;
                let node =
                    RaftNode::bootstrap(node_config(identity.raft_id), log, state.clone(), member)?;
                state_dir.save_identity(&identity)?;
                // Like `docker swarm init`: say how to add to the new cluster.
                eprintln!(
                    "Cluster initialized: this node ({}) is now a manager.\n\nTo add a manager \
                     to this cluster, run on the other machine:\n\n    shoal daemon --join-addr \
                     {advertise} --join-token {manager_token}\n",
                    identity.node_id
                );
                (identity, node, issued.certificates())
            }
            None => match &config.join_addr {
                Some(join_addr) => {
                    // The CA decides the node ID and role first.
                    let (node_id, certificates) = match &config.join_token {
                        Some(token) => {
                            let issued = crate::certificates::obtain(join_addr, token).await?;
                            if issued.identity.role != shoal_api::v1::NodeRole::Manager {
                                return Err(NodeError::Join(format!(
                                    "the token admits this node as a worker (node ID {}); this \
                                     version of Shoal runs managers only — workers come with the \
                                     agent; use a manager token",
                                    issued.identity.node_id
                                )));
                            }
                            crate::certificates::save(state_dir.path(), &issued)?;
                            (issued.identity.node_id.clone(), issued.certificates())
                        }
                        None => unreachable!("validate() requires a join token"),
                    };
                    let dialer = Dialer::mutual(credentials_from(certificates.clone())?);
                    let response = join(&dialer, join_addr, &advertise, &node_id).await?;
                    initial_peers = response.members.clone();
                    let identity = NodeIdentity {
                        node_id,
                        raft_id: response.raft_id,
                        advertise_addr: advertise.clone(),
                    };
                    let node =
                        RaftNode::joining(node_config(identity.raft_id), log, state.clone())?;
                    state_dir.save_identity(&identity)?;
                    (identity, node, certificates)
                }
                None => {
                    return Err(NodeError::Config(format!(
                        "this node does not belong to a cluster yet (no state in {}): start it \
                         with --init to create one, or --join-addr ADDR to join one",
                        config.state_dir.display()
                    )));
                }
            },
        };

        let credentials = credentials_from(certificates)?;
        let transport = GrpcTransport::new(
            identity.raft_id,
            tokio::runtime::Handle::current(),
            Dialer::mutual(credentials.clone()),
        );
        let driver = RaftDriver::start(
            node,
            state.clone(),
            DriverConfig {
                node: node_config(identity.raft_id),
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
        if let Some(old) = moved_from {
            tracing::info!("this manager moved from {old} to {advertise}; telling the cluster");
            tokio::spawn(announce_address(
                driver.handle(),
                identity.clone(),
                Dialer::mutual(credentials.clone()),
            ));
        }
        tracing::info!(
            node_id = %identity.node_id,
            raft_id = %format!("{:x}", identity.raft_id),
            "manager listening on {listen}, advertised as {advertise}"
        );
        Ok(Self {
            state_dir,
            identity,
            listener,
            control,
            driver,
            transport,
            store,
            credentials,
        })
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then stops cleanly.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        let Daemon {
            state_dir,
            identity: _,
            listener,
            control,
            driver,
            transport,
            store,
            credentials,
        } = self;
        let authorizer = Authorizer::new(store.clone(), credentials.identity().cluster_id);
        let managers_only = || authorizer.interceptor(Access::Managers);

        let handle = driver.handle();
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let mut local_stopping = stopping.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
        };
        let local = tonic::transport::Server::builder()
            .add_service(ControlServer::new(ControlApi::new(
                store.clone(),
                handle.clone(),
            )))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(control),
                async move {
                    let _ = local_stopping.wait_for(|s| *s).await;
                },
            );
        let local = tokio::spawn(local);
        let raft = RaftService::new(handle.clone(), stopping);
        let ca = CaServerImpl::new(store.clone(), handle.clone(), authorizer.clone());
        let server = tonic::transport::Server::builder()
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
            .add_service(ControlServer::with_interceptor(
                ControlApi::new(store, handle),
                managers_only(),
            ))
            .serve_with_incoming_shutdown(shoal_tls::listen(listener, credentials), shutdown);
        let served = server.await.map_err(|e| NodeError::Serve(e.to_string()));
        let _ = local.await;
        transport.shutdown();
        // Joining the Raft thread blocks; do it off the async workers.
        let _ = tokio::task::spawn_blocking(move || driver.stop()).await;
        drop(state_dir);
        tracing::info!("stopped");
        served
    }

    /// Serves in the background; [`RunningDaemon::stop`] stops it.
    pub fn spawn(self) -> RunningDaemon {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = self.driver.handle();
        let store = self.store.clone();
        let addr = self.local_addr();
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

fn credentials_from(certificates: NodeCertificates) -> Result<Credentials, NodeError> {
    Credentials::new(certificates).map_err(|e| NodeError::StateDir(e.to_string()))
}
