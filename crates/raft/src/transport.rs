//! Raft messages between managers over gRPC.
//!
//! Each peer has a queue and a task. The task keeps one client-streaming
//! `Raft.StreamRaftMessage` call open to the peer and writes every queued message into it;
//! a message larger than a chunk (snapshots) is split into chunks that the receiver joins, so
//! no message is ever limited by gRPC's message size. When the peer cannot be reached the
//! task reconnects with backoff and tells Raft, which then sends to it sparingly; a snapshot
//! that did not get through is reported as failed so Raft sends it again.
//!
//! Sending never blocks the Raft thread: a full queue drops the message (Raft retransmits).
//! Connections are mutual TLS, made by the node's [`Dialer`]: a peer must hold a manager
//! certificate of this cluster, and sees ours.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use shoal_api::v1::raft_client::RaftClient;
use shoal_api::v1::{RaftMember, StreamRaftMessageRequest};
use shoal_tls::Dialer;
use tokio::sync::mpsc;

use crate::driver::{RaftHandle, Transport};

/// Size of the chunks large messages are split into.
pub const CHUNK_BYTES: usize = 1 << 20;
/// HTTP/2 flow-control window for Raft streams, both ways.
pub use shoal_tls::WINDOW_BYTES;
/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 8192;

struct Peer {
    addr: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

/// The gRPC transport. Create it, start the driver with it, then [`GrpcTransport::attach`]
/// the driver's handle so the transport can report unreachable peers.
pub struct GrpcTransport {
    id: u64,
    runtime: tokio::runtime::Handle,
    dialer: Dialer,
    peers: Mutex<HashMap<u64, Peer>>,
    handle: Arc<OnceLock<RaftHandle>>,
}

impl GrpcTransport {
    /// A transport for member `id`, running its peer tasks on `runtime` and connecting with
    /// `dialer`.
    pub fn new(id: u64, runtime: tokio::runtime::Handle, dialer: Dialer) -> Arc<Self> {
        Arc::new(Self {
            id,
            runtime,
            dialer,
            peers: Mutex::new(HashMap::new()),
            handle: Arc::new(OnceLock::new()),
        })
    }

    pub fn attach(&self, handle: RaftHandle) {
        let _ = self.handle.set(handle);
    }

    /// Stops every peer task.
    pub fn shutdown(&self) {
        for (_, p) in self.peers.lock().expect("peers lock").drain() {
            p.task.abort();
        }
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msg: Message) {
        let peers = self.peers.lock().expect("peers lock");
        let Some(peer) = peers.get(&msg.to) else {
            return;
        };
        let to = msg.to;
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        if peer.queue.try_send(msg).is_err()
            && let Some(h) = self.handle.get()
        {
            h.report_unreachable(to);
            if snapshot {
                h.report_snapshot(to, false);
            }
        }
    }

    fn set_members(&self, members: &BTreeMap<u64, RaftMember>) {
        let mut peers = self.peers.lock().expect("peers lock");
        peers.retain(|id, p| {
            let keep = members.get(id).is_some_and(|m| m.addr == p.addr);
            if !keep {
                p.task.abort();
            }
            keep
        });
        for (id, member) in members {
            if *id == self.id || peers.contains_key(id) || member.addr.is_empty() {
                continue;
            }
            let (queue, rx) = mpsc::channel(QUEUE);
            let task = self.runtime.spawn(run_peer(
                *id,
                member.addr.clone(),
                self.dialer.clone(),
                rx,
                self.handle.clone(),
            ));
            peers.insert(
                *id,
                Peer {
                    addr: member.addr.clone(),
                    queue,
                    task,
                },
            );
        }
    }
}

fn chunks(msg: &Message) -> Vec<StreamRaftMessageRequest> {
    let bytes = match msg.write_to_bytes() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("raft: could not encode a message: {e}");
            return Vec::new();
        }
    };
    if bytes.len() <= CHUNK_BYTES {
        return vec![StreamRaftMessageRequest {
            chunk: bytes,
            last: true,
        }];
    }
    let n = bytes.len().div_ceil(CHUNK_BYTES);
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, c)| StreamRaftMessageRequest {
            chunk: c.to_vec(),
            last: i + 1 == n,
        })
        .collect()
}

async fn run_peer(
    id: u64,
    addr: String,
    dialer: Dialer,
    queue: mpsc::Receiver<Message>,
    handle: Arc<OnceLock<RaftHandle>>,
) {
    use futures_util::StreamExt;

    let report = {
        let handle = handle.clone();
        move |snapshot: bool| {
            if let Some(h) = handle.get() {
                h.report_unreachable(id);
                if snapshot {
                    h.report_snapshot(id, false);
                }
            }
        }
    };
    // The queue outlives each stream: a failed stream hands it back to the next one.
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let mut backoff = Duration::from_millis(50);
    loop {
        let channel = match dialer.connect(&addr).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("raft: cannot reach member {id:x} at {addr}: {e}");
                report(false);
                // Messages queued for an unreachable peer are stale by the time it is back.
                let mut q = queue.lock().await;
                while let Ok(m) = q.try_recv() {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        report(true);
                    }
                }
                drop(q);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        // The stream pulls straight from the queue: no task between Raft and the socket.
        let source = queue.clone();
        let snapshot_handle = handle.clone();
        let outgoing = futures_util::stream::unfold(source, move |source| async move {
            let msg = source.lock().await.recv().await?;
            Some((msg, source))
        })
        .flat_map(move |msg| {
            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            let parts = chunks(&msg);
            if snapshot && let Some(h) = snapshot_handle.get() {
                // Handed to the connection; a failure later is reported by the reconnect.
                h.report_snapshot(id, true);
            }
            futures_util::stream::iter(parts)
        });
        if let Err(e) = client.stream_raft_message(outgoing).await {
            tracing::debug!("raft: stream to member {id:x} ended: {e}");
        }
        report(false);
        tokio::time::sleep(backoff).await;
    }
}
