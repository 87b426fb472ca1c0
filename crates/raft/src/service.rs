//! The managers' side of the Raft transport and of membership, as gRPC services.
//!
//! `Raft.StreamRaftMessage` receives chunked messages and hands each whole one to the local
//! node. `RaftMembership.Join` adds a manager: only the leader does it (others answer
//! FailedPrecondition naming the leader's address, and the joining manager retries there);
//! it picks an unused Raft ID, commits the membership change, and returns the members.

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use shoal_api::v1::raft_membership_server::RaftMembership;
use shoal_api::v1::raft_server::Raft;
use shoal_api::v1::{
    JoinRequest, JoinResponse, LeaveRequest, LeaveResponse, ProcessRaftMessageRequest,
    ProcessRaftMessageResponse, RaftMember, ResolveAddressRequest, ResolveAddressResponse,
    StreamRaftMessageRequest, StreamRaftMessageResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::driver::RaftHandle;
use crate::error::RaftError;

/// Metadata key carrying the leader's address when a request must go to the leader.
pub const LEADER_ADDR_METADATA: &str = "shoal-leader-addr";

/// Serves `Raft` and `RaftMembership` for one node.
#[derive(Clone)]
pub struct RaftService {
    handle: RaftHandle,
    /// Becomes true when the server shuts down: peer streams, which never end on their own,
    /// are closed so a graceful shutdown does not wait for them.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl RaftService {
    pub fn new(handle: RaftHandle, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { handle, stopping }
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    Message::parse_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("raft message: {e}")))
}

/// The status to answer a request that only the leader can serve.
pub fn not_leader(handle: &RaftHandle) -> Status {
    let status = handle.status();
    let leader_addr = status
        .leader
        .and_then(|l| status.members.get(&l))
        .map(|m| m.addr.clone());
    match leader_addr {
        Some(addr) => {
            let mut s = Status::failed_precondition(format!(
                "this manager is not the leader; the leader is at {addr}"
            ));
            if let Ok(v) = addr.parse() {
                s.metadata_mut().insert(LEADER_ADDR_METADATA, v);
            }
            s
        }
        None if status.voters == 0 => Status::unavailable(
            "no leader known yet: this manager is still catching up with its cluster; retry shortly",
        ),
        None => Status::unavailable(crate::driver::no_leader_message(
            status.reachable,
            status.voters,
        )),
    }
}

/// Maps a Raft error to a gRPC status.
pub fn to_status(handle: &RaftHandle, e: RaftError) -> Status {
    match e {
        RaftError::NotLeader { .. } => not_leader(handle),
        RaftError::NoLeader(m) => Status::unavailable(m),
        RaftError::Membership(m) => Status::failed_precondition(m),
        RaftError::Unknown => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// The largest Raft message (a snapshot, in chunks) a stream may carry: a bound on what one
/// peer can make this manager buffer.
pub const MAX_MESSAGE_BYTES: usize = 2 << 30;

/// The node ID in the caller's certificate, when the call came over mutual TLS.
fn caller_node_id<T>(request: &Request<T>) -> Option<String> {
    shoal_tls::peer(request)
        .and_then(|p| p.identity.as_ref())
        .map(|i| i.node_id.clone())
}

impl RaftService {
    /// Whether a message from a stream opened by `caller` may be stepped. Proposals never
    /// travel between managers here (followers refuse writes instead of forwarding them), so
    /// a proposal from the network is dropped. A message must come from the member whose
    /// node ID the caller's certificate carries: one manager cannot speak for another. A
    /// manager that is still joining (no members known yet) cannot check, and accepts the
    /// stream's sender as it is.
    fn admit(&self, msg: &Message, caller: Option<&str>, sender: &mut Option<u64>) -> bool {
        if msg.get_msg_type() == MessageType::MsgPropose {
            tracing::warn!(
                "raft: dropped a proposal sent by {caller:?}: proposals are not forwarded"
            );
            return false;
        }
        let Some(caller) = caller else {
            return true;
        };
        if let Some(known) = *sender {
            return known == msg.from;
        }
        let status = self.handle.status();
        let admitted = match status.members.get(&msg.from) {
            Some(member) => member.node_id == caller,
            None => status.members.is_empty(),
        };
        if admitted {
            *sender = Some(msg.from);
        } else {
            tracing::debug!(
                "raft: dropped a message from member {:x} on a stream of node {caller}",
                msg.from
            );
        }
        admitted
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn process_raft_message(
        &self,
        request: Request<ProcessRaftMessageRequest>,
    ) -> Result<Response<ProcessRaftMessageResponse>, Status> {
        let caller = caller_node_id(&request);
        let msg = decode(&request.into_inner().message)?;
        if self.admit(&msg, caller.as_deref(), &mut None) {
            self.handle.step(msg);
        }
        Ok(Response::new(ProcessRaftMessageResponse {}))
    }

    async fn stream_raft_message(
        &self,
        request: Request<Streaming<StreamRaftMessageRequest>>,
    ) -> Result<Response<StreamRaftMessageResponse>, Status> {
        let caller = caller_node_id(&request);
        let mut stream = request.into_inner();
        let mut buffer: Vec<u8> = Vec::new();
        // The member this stream speaks for, once its first message proved it.
        let mut sender: Option<u64> = None;
        let mut stopping = self.stopping.clone();
        loop {
            let part = tokio::select! {
                part = stream.message() => part?,
                _ = stopping.wait_for(|s| *s) => None,
            };
            let Some(part) = part else { break };
            let msg = if buffer.is_empty() && part.last {
                decode(&part.chunk)?
            } else {
                if buffer.len() + part.chunk.len() > MAX_MESSAGE_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "a Raft message larger than {} MiB was refused",
                        MAX_MESSAGE_BYTES >> 20
                    )));
                }
                buffer.extend_from_slice(&part.chunk);
                if !part.last {
                    continue;
                }
                let msg = decode(&buffer)?;
                buffer = Vec::new();
                msg
            };
            if self.admit(&msg, caller.as_deref(), &mut sender) {
                self.handle.step(msg);
            }
        }
        Ok(Response::new(StreamRaftMessageResponse {}))
    }

    async fn resolve_address(
        &self,
        request: Request<ResolveAddressRequest>,
    ) -> Result<Response<ResolveAddressResponse>, Status> {
        let id = request.into_inner().raft_id;
        let status = self.handle.status();
        let member = status
            .members
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("raft member {id:x} is not a member")))?;
        Ok(Response::new(ResolveAddressResponse {
            addr: member.addr.clone(),
        }))
    }
}

#[tonic::async_trait]
impl RaftMembership for RaftService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let caller = caller_node_id(&request);
        let request = request.into_inner();
        if let Some(caller) = caller
            && caller != request.node_id
        {
            return Err(Status::permission_denied(format!(
                "node {caller} cannot join Raft as node {}: a manager joins as itself",
                request.node_id
            )));
        }
        if request.addr.is_empty() {
            return Err(Status::invalid_argument(
                "a joining manager must give the address it is reached at",
            ));
        }
        let status = self.handle.status();
        if !status.is_leader {
            return Err(not_leader(&self.handle));
        }
        // A manager that joins again (a retry after a lost answer, or a restart at a new
        // address) keeps its Raft ID; a new address is committed like any membership change.
        if let Some(m) = status
            .members
            .values()
            .find(|m| !m.node_id.is_empty() && m.node_id == request.node_id)
            .cloned()
        {
            let members = if m.addr == request.addr {
                status.members.clone()
            } else {
                let moved = RaftMember {
                    addr: request.addr.clone(),
                    ..m.clone()
                };
                self.handle.hint_address(m.raft_id, request.addr.clone());
                self.handle
                    .add_member(moved)
                    .await
                    .map_err(|e| to_status(&self.handle, e))?
            };
            return Ok(Response::new(JoinResponse {
                raft_id: m.raft_id,
                members: members.into_values().collect(),
                removed_members: vec![],
            }));
        }
        let raft_id = loop {
            let id: u64 = rand::random();
            if id != 0 && !status.members.contains_key(&id) {
                break id;
            }
        };
        let member = RaftMember {
            raft_id,
            node_id: request.node_id.clone(),
            addr: request.addr,
        };
        let members = self
            .handle
            .add_member(member)
            .await
            .map_err(|e| to_status(&self.handle, e))?;
        Ok(Response::new(JoinResponse {
            raft_id,
            members: members.into_values().collect(),
            removed_members: vec![],
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let caller = caller_node_id(&request);
        let node = request.into_inner().node.unwrap_or_default();
        let status = self.handle.status();
        if !status.is_leader {
            return Err(not_leader(&self.handle));
        }
        if let Some(caller) = caller
            && status
                .members
                .get(&node.raft_id)
                .is_some_and(|m| m.node_id != caller)
        {
            return Err(Status::permission_denied(
                "a manager can only take itself out of Raft; to remove another manager, demote \
                 it with `shoal node demote` on a manager",
            ));
        }
        self.handle
            .remove_member(node.raft_id)
            .await
            .map_err(|e| to_status(&self.handle, e))?;
        Ok(Response::new(LeaveResponse {}))
    }
}
