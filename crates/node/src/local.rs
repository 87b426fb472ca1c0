//! What the control socket serves besides a manager's Control API: the node's own calls
//! (`Swarm`: who am I, leave) and, on a node that is not a manager, a Control service that
//! answers every call by saying where to go instead.
//!
//! The socket is owner-only (0600) and trusted without TLS, as in SwarmKit: whoever can open
//! it already controls the node.

use std::convert::Infallible;
use std::task::{Context, Poll};

use shoal_api::v1::swarm_server::Swarm;
use shoal_api::v1::{
    LeaveSwarmRequest, LeaveSwarmResponse, NodeRole, SwarmInfoRequest, SwarmInfoResponse,
};
use shoal_tls::Credentials;
use tokio::sync::mpsc;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::renewal::Managers;

/// Answers every Control API call of a node that is not a manager.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotAManager;

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
        std::future::ready(Ok(Status::failed_precondition(
            "this node is a worker, not a manager: the Control API is served by managers; run \
             the command on a manager (or promote this node with `shoal node promote` there)",
        )
        .into_http()))
    }
}

/// A request to leave the cluster, for the daemon's serve loop.
#[derive(Debug)]
pub struct LeaveRequest {
    pub force: bool,
}

/// The `Swarm` service of the local socket.
pub struct LocalSwarm {
    credentials: Credentials,
    managers: Managers,
    leave: mpsc::Sender<LeaveRequest>,
}

impl LocalSwarm {
    pub fn new(
        credentials: Credentials,
        managers: Managers,
        leave: mpsc::Sender<LeaveRequest>,
    ) -> Self {
        Self {
            credentials,
            managers,
            leave,
        }
    }
}

#[tonic::async_trait]
impl Swarm for LocalSwarm {
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
        }))
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
        self.leave
            .send(LeaveRequest { force })
            .await
            .map_err(|_| Status::unavailable("this node is already stopping"))?;
        Ok(Response::new(LeaveSwarmResponse {}))
    }
}
