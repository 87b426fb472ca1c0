//! What the control socket serves besides a manager's Control API: the node's own calls
//! (`Swarm`: who am I, leave, and on a manager `swarm init --force-new-cluster`) and, on a
//! node that is not a manager, a Control service that answers every call by saying where to
//! go instead.
//!
//! Calls that end the node's current run (leave, force a new cluster) are handed to the
//! daemon's serve loop as a [`LocalRequest`]: the caller is answered at once, then the daemon
//! stops and (but after leaving) starts again. [`SwarmInfoResponse::incarnation`] tells a
//! caller waiting for the restart which run answers.
//!
//! The socket is owner-only (0600) and trusted without TLS, as in SwarmKit: whoever can open
//! it already controls the node.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use shoal_api::v1::swarm_server::Swarm;
use shoal_api::v1::{
    BackupChunk, BackupRequest, InitSwarmRequest, InitSwarmResponse, JoinSwarmRequest,
    JoinSwarmResponse, LeaveSwarmRequest, LeaveSwarmResponse, NodeRole, SwarmInfoRequest,
    SwarmInfoResponse, UnlockSwarmRequest, UnlockSwarmResponse,
};
use shoal_tls::Credentials;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::keys::UnlockKey;
use crate::renewal::Managers;

/// The stream of a backup's bytes.
pub type BackupStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<BackupChunk, Status>> + Send + 'static>,
>;

/// Size of the chunks a backup is sent in.
const BACKUP_CHUNK: usize = 1 << 20;

fn chunked(bytes: Vec<u8>) -> BackupStream {
    let chunks: Vec<Result<BackupChunk, Status>> = bytes
        .chunks(BACKUP_CHUNK)
        .map(|c| Ok(BackupChunk { data: c.to_vec() }))
        .collect();
    Box::pin(tokio_stream::iter(chunks))
}

/// Answers every Control API call of a node that is not a manager, saying why.
#[derive(Clone, Copy, Debug)]
pub struct NotAManager {
    message: &'static str,
}

impl NotAManager {
    /// On a worker.
    pub const WORKER: NotAManager = NotAManager {
        message: "this node is a worker, not a manager: the Control API is served by managers; \
                  run the command on a manager (or promote this node with `shoal node promote` \
                  there)",
    };
    /// On a locked manager.
    pub const LOCKED: NotAManager = NotAManager {
        message: "this manager is locked (autolock): it serves nothing until it is given the \
                  cluster's unlock key; run `shoal swarm unlock` here (`shoal swarm unlock-key` \
                  on an unlocked manager shows the key)",
    };
    /// On a node that belongs to no cluster.
    pub const INACTIVE: NotAManager = NotAManager {
        message: "this node is not part of a cluster: create one with `shoal swarm init`, or \
                  join one with `shoal swarm join --token TOKEN MANAGER-ADDR`",
    };
}

impl NamedService for NotAManager {
    const NAME: &'static str = "shoal.v1.Control";
}

impl tower::Service<http::Request<tonic::body::Body>> for NotAManager {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(Status::failed_precondition(self.message).into_http()))
    }
}

/// A request to leave the cluster, for the daemon's serve loop.
#[derive(Debug)]
pub struct LeaveRequest {
    pub force: bool,
}

/// A request to restart this manager as the only member of a new cluster, keeping its data
/// (`swarm init --force-new-cluster`), optionally on other remote API addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewClusterRequest {
    /// The remote API's listen address, if the request names one.
    pub listen_addr: Option<SocketAddr>,
    pub advertise_addr: Option<String>,
}

/// What the local `Swarm` service asks of the daemon's serve loop: each ends this run of the
/// node.
#[derive(Debug)]
pub enum LocalRequest {
    Leave(LeaveRequest),
    ForceNewCluster(NewClusterRequest),
}

/// The `Swarm` service of the local socket.
pub struct LocalSwarm {
    credentials: Credentials,
    managers: Managers,
    /// What the node runs as now (its certificate may already say otherwise, until the
    /// daemon restarts it in its new role).
    running_as: NodeRole,
    /// This run of the daemon ([`SwarmInfoResponse::incarnation`]).
    incarnation: u64,
    requests: mpsc::Sender<LocalRequest>,
    /// On a manager: its store and Raft, for backups.
    store: Option<(shoal_store::Store, shoal_raft::RaftHandle)>,
}

impl LocalSwarm {
    pub fn new(
        credentials: Credentials,
        managers: Managers,
        running_as: NodeRole,
        incarnation: u64,
        requests: mpsc::Sender<LocalRequest>,
    ) -> Self {
        Self {
            credentials,
            managers,
            running_as,
            incarnation,
            requests,
            store: None,
        }
    }

    /// A manager's: it can take backups of `store`.
    pub fn with_store(mut self, store: shoal_store::Store, raft: shoal_raft::RaftHandle) -> Self {
        self.store = Some((store, raft));
        self
    }
}

/// The addresses an `InitSwarmRequest` names, checked.
fn requested_addrs(request: &InitSwarmRequest) -> Result<NewClusterRequest, Status> {
    let listen_addr = match request.listen_addr.trim() {
        "" => None,
        addr => Some(addr.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "invalid listen_addr {addr:?}: write an IP address and a port, such as \
                 0.0.0.0:4242"
            ))
        })?),
    };
    let advertise_addr = match request.advertise_addr.trim() {
        "" => None,
        addr if addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
        {
            Some(addr.to_string())
        }
        addr => {
            return Err(Status::invalid_argument(format!(
                "invalid advertise_addr {addr:?}: write a host and a port, such as \
                 10.0.0.5:4242"
            )));
        }
    };
    Ok(NewClusterRequest {
        listen_addr,
        advertise_addr,
    })
}

impl LocalSwarm {
    fn already_member(&self) -> Status {
        let identity = self.credentials.identity();
        Status::failed_precondition(format!(
            "this node is already part of a cluster (node {}, a {}); leave it first with \
             `shoal swarm leave`",
            identity.node_id,
            if identity.role == NodeRole::Manager {
                "manager"
            } else {
                "worker"
            }
        ))
    }
}

#[tonic::async_trait]
impl Swarm for LocalSwarm {
    async fn init(
        &self,
        request: Request<InitSwarmRequest>,
    ) -> Result<Response<InitSwarmResponse>, Status> {
        let request = request.into_inner();
        if !request.force_new_cluster {
            return Err(self.already_member());
        }
        if self.running_as != NodeRole::Manager {
            return Err(Status::failed_precondition(format!(
                "only a manager can force a new cluster; this node ({}) is a worker: run \
                 `shoal swarm init --force-new-cluster` on a manager that holds the cluster's \
                 state",
                self.credentials.identity().node_id
            )));
        }
        let new_cluster = requested_addrs(&request)?;
        tracing::warn!(
            "asked to force a new cluster: restarting this manager as the only member, keeping \
             all data"
        );
        self.requests
            .send(LocalRequest::ForceNewCluster(new_cluster))
            .await
            .map_err(|_| Status::unavailable("this node is already stopping"))?;
        Ok(Response::new(InitSwarmResponse {}))
    }

    async fn join(
        &self,
        _request: Request<JoinSwarmRequest>,
    ) -> Result<Response<JoinSwarmResponse>, Status> {
        Err(self.already_member())
    }
    async fn info(
        &self,
        _request: Request<SwarmInfoRequest>,
    ) -> Result<Response<SwarmInfoResponse>, Status> {
        let identity = self.credentials.identity();
        Ok(Response::new(SwarmInfoResponse {
            node_id: identity.node_id,
            role: identity.role as i32,
            cluster_id: identity.cluster_id,
            managers: self.managers.get(),
            certificate_expiry: Some(identity.not_after.into()),
            incarnation: self.incarnation,
            locked: false,
        }))
    }

    async fn unlock(
        &self,
        _request: Request<UnlockSwarmRequest>,
    ) -> Result<Response<UnlockSwarmResponse>, Status> {
        Err(Status::failed_precondition(
            "this node is not locked: there is nothing to unlock",
        ))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let Some((store, raft)) = &self.store else {
            return Err(Status::failed_precondition(
                "this node is a worker: it holds no copy of the cluster state; run `shoal swarm \
                 backup` on a manager",
            ));
        };
        let node_id = self.credentials.identity().node_id;
        let (header, bytes) = crate::backup::take(store, raft, &node_id).await?;
        tracing::info!(
            store_version = header.store_version,
            sealed = header.sealed,
            "backup taken ({} bytes)",
            bytes.len()
        );
        Ok(Response::new(chunked(bytes)))
    }

    async fn leave(
        &self,
        request: Request<LeaveSwarmRequest>,
    ) -> Result<Response<LeaveSwarmResponse>, Status> {
        let force = request.into_inner().force;
        if self.credentials.identity().role == NodeRole::Manager && !force {
            return Err(Status::failed_precondition(
                "this node is a manager: leaving would take a member from the managers' quorum; \
                 demote it first (`shoal node demote` on a manager), or use --force",
            ));
        }
        self.requests
            .send(LocalRequest::Leave(LeaveRequest { force }))
            .await
            .map_err(|_| Status::unavailable("this node is already stopping"))?;
        Ok(Response::new(LeaveSwarmResponse {}))
    }
}

/// What a node that belongs to no cluster is asked to do.
pub enum InactiveRequest {
    Init {
        /// The remote API's listen address, if the request names one.
        listen_addr: Option<SocketAddr>,
        advertise_addr: Option<String>,
        /// Lock the new cluster's managers (`--autolock`).
        autolock: bool,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Join {
        remote_addr: String,
        join_token: String,
        reply: oneshot::Sender<Result<JoinSwarmResponse, Status>>,
    },
}

/// The `Swarm` service of a node that belongs to no cluster: init and join go to the
/// daemon, which answers once it has done them (or why it could not). With no cluster to
/// force anything on, `init --force-new-cluster` is a normal init.
pub struct InactiveSwarm {
    requests: mpsc::Sender<InactiveRequest>,
}

impl InactiveSwarm {
    pub fn new(requests: mpsc::Sender<InactiveRequest>) -> Self {
        Self { requests }
    }
}

fn not_in_a_cluster() -> Status {
    Status::failed_precondition(
        "this node is not part of a cluster: create one with `shoal swarm init`, or join one \
         with `shoal swarm join --token TOKEN MANAGER-ADDR`",
    )
}

#[tonic::async_trait]
impl Swarm for InactiveSwarm {
    async fn init(
        &self,
        request: Request<InitSwarmRequest>,
    ) -> Result<Response<InitSwarmResponse>, Status> {
        let request = request.into_inner();
        let NewClusterRequest {
            listen_addr,
            advertise_addr,
        } = requested_addrs(&request)?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(InactiveRequest::Init {
                listen_addr,
                advertise_addr,
                autolock: request.autolock,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("this node is stopping"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("this node is stopping"))??;
        Ok(Response::new(InitSwarmResponse {}))
    }

    async fn join(
        &self,
        request: Request<JoinSwarmRequest>,
    ) -> Result<Response<JoinSwarmResponse>, Status> {
        let request = request.into_inner();
        if request.remote_addr.is_empty() || request.join_token.is_empty() {
            return Err(Status::invalid_argument(
                "joining needs a manager address and a join token: `shoal swarm join --token \
                 TOKEN MANAGER-ADDR`",
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(InactiveRequest::Join {
                remote_addr: request.remote_addr,
                join_token: request.join_token,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("this node is stopping"))?;
        Ok(Response::new(answer.await.map_err(|_| {
            Status::unavailable("this node is stopping")
        })??))
    }

    async fn info(
        &self,
        _request: Request<SwarmInfoRequest>,
    ) -> Result<Response<SwarmInfoResponse>, Status> {
        Err(not_in_a_cluster())
    }

    async fn leave(
        &self,
        _request: Request<LeaveSwarmRequest>,
    ) -> Result<Response<LeaveSwarmResponse>, Status> {
        Err(not_in_a_cluster())
    }

    async fn unlock(
        &self,
        _request: Request<UnlockSwarmRequest>,
    ) -> Result<Response<UnlockSwarmResponse>, Status> {
        Err(not_in_a_cluster())
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Err(not_in_a_cluster())
    }
}

/// An unlock key given to a locked node, for the supervisor to try.
pub struct UnlockAttempt {
    pub key: UnlockKey,
    /// `Ok` once the key opened the node's keys; the refusal otherwise.
    pub reply: oneshot::Sender<Result<(), Status>>,
}

/// The `Swarm` service of a locked manager: `Unlock`, and `Info` saying it is locked;
/// everything else is refused until it is unlocked.
pub struct LockedSwarm {
    node_id: String,
    attempts: mpsc::Sender<UnlockAttempt>,
}

impl LockedSwarm {
    pub fn new(node_id: String, attempts: mpsc::Sender<UnlockAttempt>) -> Self {
        Self { node_id, attempts }
    }
}

fn locked() -> Status {
    Status::failed_precondition(NotAManager::LOCKED.message)
}

#[tonic::async_trait]
impl Swarm for LockedSwarm {
    async fn init(
        &self,
        _request: Request<InitSwarmRequest>,
    ) -> Result<Response<InitSwarmResponse>, Status> {
        Err(locked())
    }

    async fn join(
        &self,
        _request: Request<JoinSwarmRequest>,
    ) -> Result<Response<JoinSwarmResponse>, Status> {
        Err(locked())
    }

    async fn info(
        &self,
        _request: Request<SwarmInfoRequest>,
    ) -> Result<Response<SwarmInfoResponse>, Status> {
        Ok(Response::new(SwarmInfoResponse {
            node_id: self.node_id.clone(),
            role: NodeRole::Manager as i32,
            locked: true,
            ..Default::default()
        }))
    }

    async fn leave(
        &self,
        _request: Request<LeaveSwarmRequest>,
    ) -> Result<Response<LeaveSwarmResponse>, Status> {
        Err(locked())
    }

    async fn unlock(
        &self,
        request: Request<UnlockSwarmRequest>,
    ) -> Result<Response<UnlockSwarmResponse>, Status> {
        let key =
            UnlockKey::parse(&request.into_inner().unlock_key).map_err(Status::invalid_argument)?;
        let (reply, answer) = oneshot::channel();
        self.attempts
            .send(UnlockAttempt { key, reply })
            .await
            .map_err(|_| Status::unavailable("this node is stopping"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("this node is stopping"))??;
        Ok(Response::new(UnlockSwarmResponse {}))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Err(locked())
    }
}
