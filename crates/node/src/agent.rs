//! The agent's side of the dispatcher: a session with the leader, kept alive with
//! heartbeats (messages on a `HeartbeatStream` next to the session; unary calls with a
//! manager too old to have one).
//!
//! Every node — worker or manager — keeps one session open with the dispatcher of the Raft
//! leader (a follower answers with the leader's address, which the agent follows). The
//! session is how the cluster knows the node is up (READY), and how the node hears about
//! itself: the managers' addresses (kept in [`Managers`], used to reconnect and to renew),
//! and changes to its Node object — a certificate marked `RENEW` (promote, demote) makes the
//! node renew at once.
//!
//! When the session breaks the agent reconnects with backoff — min(100 ms + 2 × previous,
//! 8 s), waiting a random part of it, starting afresh after a session that was up, as
//! SwarmKit — trying every manager it knows. A refusal that says the node was removed is
//! final: the agent stops and the node reports it, instead of retrying forever. Every other
//! refusal is retried with the backoff — among them the leader's UNAVAILABLE "re-registering
//! too often; backing off" (more than 3 sessions within 8 s), which is no removal.
//!
//! On shutdown the agent closes its session: it drops the stream (and the connection) at
//! once, even in the middle of a heartbeat or of opening a session, so the dispatcher sees
//! the stream go and writes the node DISCONNECTED right away rather than DOWN three heartbeat
//! periods later.
//!
//! Next to the session the agent keeps the session's assignments stream open and hands every
//! message to the [`Worker`], which runs the tasks; the worker's status reports go back
//! through `UpdateTaskStatus` on the open session ([`SessionSink`]), waiting while there is
//! none.

use std::time::Duration;

use shoal_api::v1::dispatcher_client::DispatcherClient;
use std::sync::{Arc, Mutex};

use shoal_api::v1::update_task_status_request::TaskStatusUpdate;
use shoal_api::v1::{
    AssignmentsRequest, HeartbeatRequest, NodeDescription, Platform, SessionMessage,
    SessionRequest, UpdateTaskStatusRequest, issuance_status,
};
use shoal_tls::{Credentials, Dialer};
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::logs::LogPublisher;
use crate::renewal::{Managers, RenewalRequest};
use crate::worker::{StatusSink, Worker};

/// Why the agent stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum AgentExit {
    /// Told to stop.
    Stopped,
    /// The cluster removed this node; the message says so.
    Removed(String),
}

/// The session side of a node.
pub struct Agent {
    credentials: Credentials,
    managers: Managers,
    renew: RenewalRequest,
    hostname: String,
    /// Runs what the session assigns to this node.
    worker: tokio::sync::Mutex<Worker>,
    /// The session status reports go through, while one is open.
    session: SessionSlot,
    /// Publishes the logs the leader's subscriptions ask for.
    logs: LogPublisher,
    /// The daemon's `--label`s, added to the engine labels the executor reports.
    labels: Vec<shoal_api::v1::Label>,
}

/// Empties the slot when the session it holds ends.
struct ClearOnDrop<'a>(&'a SessionSlot);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// The open session (a dispatcher client and the session ID), shared with the status sink.
#[derive(Clone, Default)]
pub struct SessionSlot(Arc<Mutex<Option<OpenSession>>>);

/// A dispatcher client and the ID of the session open through it.
type OpenSession = (DispatcherClient<Channel>, String);

impl SessionSlot {
    fn set(&self, session: Option<OpenSession>) {
        *self.0.lock().expect("session slot") = session;
    }

    fn get(&self) -> Option<OpenSession> {
        self.0.lock().expect("session slot").clone()
    }
}

/// Task status reports through the open session's `UpdateTaskStatus`; without a session
/// they wait (the reporter retries).
pub struct SessionSink(pub SessionSlot);

impl StatusSink for SessionSink {
    type Error = String;

    async fn send(&self, updates: Vec<TaskStatusUpdate>) -> Result<(), String> {
        let Some((mut client, session_id)) = self.0.get() else {
            return Err("no session with a manager yet".into());
        };
        tokio::time::timeout(
            shoal_api::defaults::DISPATCHER_RPC_TIMEOUT,
            client.update_task_status(UpdateTaskStatusRequest {
                session_id,
                updates,
            }),
        )
        .await
        .map_err(|_| "reporting task statuses timed out".to_string())?
        .map(|_| ())
        .map_err(|s| s.message().to_string())
    }
}

/// How a session ended.
enum SessionEnd {
    Stopped,
    Removed(String),
    /// Broken or refused for a reason worth retrying; `String` says why.
    Retry(String),
}

fn removed(status: &tonic::Status) -> Option<String> {
    (status.code() == tonic::Code::PermissionDenied
        && (status.message().contains("removed") || status.message().contains("revoked")))
    .then(|| status.message().to_string())
}

impl Agent {
    pub fn new(
        credentials: Credentials,
        managers: Managers,
        renew: RenewalRequest,
        hostname: String,
        worker: Worker,
        session: SessionSlot,
    ) -> Self {
        let logs = LogPublisher::new(credentials.identity().node_id, worker.controllers());
        Self {
            credentials,
            managers,
            renew,
            hostname,
            worker: tokio::sync::Mutex::new(worker),
            session,
            logs,
            labels: Vec::new(),
        }
    }

    /// Describes the node with `labels` too (`engine.labels.*` constraints match them).
    pub fn with_labels(mut self, labels: Vec<shoal_api::v1::Label>) -> Self {
        self.labels = labels;
        self
    }

    /// The node as the executor describes it (platform, resources, runtimes), under the
    /// node's configured hostname.
    async fn description(&self) -> NodeDescription {
        let mut description = self.worker.lock().await.describe();
        if !self.hostname.is_empty() {
            description.hostname = self.hostname.clone();
        }
        if !self.labels.is_empty() {
            let engine = description.engine.get_or_insert_with(Default::default);
            for label in &self.labels {
                engine.labels.retain(|l| l.key != label.key);
                engine.labels.push(label.clone());
            }
            shoal_api::labels::Labels::normalize_labels(&mut engine.labels);
        }
        if description.platform.is_none() {
            description.platform = Some(Platform {
                architecture: std::env::consts::ARCH.to_string(),
                os: std::env::consts::OS.to_string(),
            });
        }
        description
    }

    /// Keeps a session open until `shutdown` turns true or the node is removed. Tasks keep
    /// running when the agent stops: the next agent adopts them.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> AgentExit {
        let exit = self.sessions(shutdown).await;
        self.session.set(None);
        self.worker.into_inner().shutdown().await;
        exit
    }

    async fn sessions(&self, mut shutdown: watch::Receiver<bool>) -> AgentExit {
        let base = shoal_api::defaults::SESSION_BACKOFF_BASE;
        let max = shoal_api::defaults::SESSION_BACKOFF_MAX;
        let mut backoff = Duration::ZERO;
        loop {
            if *shutdown.borrow() {
                return AgentExit::Stopped;
            }
            let established = std::sync::atomic::AtomicBool::new(false);
            let end = self.session(&mut shutdown, &established).await;
            // A session that was up starts the backoff afresh.
            if established.load(std::sync::atomic::Ordering::Relaxed) {
                backoff = Duration::ZERO;
            }
            // As SwarmKit: min(base + 2 × previous, max), waiting a random part of it so
            // that agents cut off together do not come back together.
            backoff = (base + backoff * 2).min(max);
            let wait = backoff.mul_f64(rand::random_range(0.0..=1.0));
            match end {
                SessionEnd::Stopped => return AgentExit::Stopped,
                SessionEnd::Removed(message) => return AgentExit::Removed(message),
                SessionEnd::Retry(why) => {
                    tracing::debug!("agent: session ended ({why}); reconnecting in {wait:?}");
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Opens a session with the leader, trying every known manager.
    async fn open(
        &self,
        description: &NodeDescription,
    ) -> Result<(Channel, Streaming<SessionMessage>), SessionEnd> {
        // No request timeout: the session stream lives as long as the session; heartbeats
        // carry their own.
        let dialer = Dialer::mutual(self.credentials.clone());
        let mut targets = self.managers.get();
        let mut last = String::from("no manager is known");
        let mut hops = 0;
        while !targets.is_empty() {
            let target = targets.remove(0);
            let channel = match dialer.connect(&target).await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut client = DispatcherClient::new(channel.clone());
            match client
                .session(SessionRequest {
                    description: Some(description.clone()),
                    session_id: String::new(),
                })
                .await
            {
                Ok(stream) => return Ok((channel, stream.into_inner())),
                Err(status) => {
                    if let Some(message) = removed(&status) {
                        return Err(SessionEnd::Removed(message));
                    }
                    if let Some(leader) = crate::certificates::leader_of(&status)
                        && hops < 3
                    {
                        hops += 1;
                        targets.insert(0, leader);
                        continue;
                    }
                    last = format!("{target}: {}", status.message());
                }
            }
        }
        Err(SessionEnd::Retry(last))
    }

    /// One session, until it breaks or `shutdown` turns true. On shutdown the session's
    /// future is dropped, and with it its stream and connection: the dispatcher notices the
    /// stream go (the client resets it) and writes the node DISCONNECTED at once.
    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        established: &std::sync::atomic::AtomicBool,
    ) -> SessionEnd {
        let stopping = async {
            let closed = shutdown.wait_for(|stop| *stop).await.is_err();
            if closed {
                // Nobody can tell the agent to stop any more: keep the session.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            end = self.serve(established) => end,
            () = stopping => {
                // The session's stream and channel are dropped by now; let the connection's
                // task send the reset before the node goes on stopping.
                tokio::task::yield_now().await;
                SessionEnd::Stopped
            }
        }
    }

    /// Opens a session and keeps it alive with heartbeats until it breaks.
    async fn serve(&self, established: &std::sync::atomic::AtomicBool) -> SessionEnd {
        let description = self.description().await;
        let (channel, mut stream) = match self.open(&description).await {
            Ok(s) => s,
            Err(end) => return end,
        };
        let mut client = DispatcherClient::new(channel.clone());
        let first = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return SessionEnd::Retry("the session closed at once".into()),
            Err(status) => {
                return removed(&status)
                    .map(SessionEnd::Removed)
                    .unwrap_or_else(|| SessionEnd::Retry(status.message().to_string()));
            }
        };
        let session_id = first.session_id.clone();
        established.store(true, std::sync::atomic::Ordering::Relaxed);
        self.learn(&first);
        let mut assignments = match client
            .assignments(AssignmentsRequest {
                session_id: session_id.clone(),
            })
            .await
        {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                return removed(&status)
                    .map(SessionEnd::Removed)
                    .unwrap_or_else(|| SessionEnd::Retry(status.message().to_string()));
            }
        };
        // Heartbeats go as messages on one stream (a managers of an older version without it
        // gets unary calls).
        let (beats, beat_requests) = tokio::sync::mpsc::channel::<HeartbeatRequest>(1);
        let mut answers = match client
            .heartbeat_stream(tokio_stream::wrappers::ReceiverStream::new(beat_requests))
            .await
        {
            Ok(stream) => Some(stream.into_inner()),
            Err(status) if status.code() == tonic::Code::Unimplemented => None,
            Err(status) => {
                return removed(&status)
                    .map(SessionEnd::Removed)
                    .unwrap_or_else(|| SessionEnd::Retry(status.message().to_string()));
            }
        };
        self.session.set(Some((client.clone(), session_id.clone())));
        // Whatever ends this session, status reports wait for the next one.
        let _clear = ClearOnDrop(&self.session);
        tracing::info!("agent: session {session_id} open");
        // The first heartbeat goes at once: its answer tells the period the cluster wants,
        // which may be shorter than the default (a deadline is three periods).
        let mut period = Duration::ZERO;
        // Deadlines, not sleeps restarted on every message: a busy assignments stream must
        // not hold heartbeats back.
        let mut next_beat = tokio::time::Instant::now();
        let mut next_check =
            tokio::time::Instant::now() + shoal_api::defaults::NODE_DESCRIPTION_CHECK_PERIOD;
        // Log subscriptions, on the same connection; their end does not end the session.
        let logs = self.logs.serve(channel);
        tokio::pin!(logs);
        let mut logs_open = true;
        loop {
            tokio::select! {
                ended = &mut logs, if logs_open => {
                    logs_open = false;
                    match ended {
                        Ok(()) => tracing::debug!("agent: the log subscription stream ended"),
                        Err(status) => tracing::warn!(
                            "agent: cannot listen for log subscriptions: {}",
                            status.message()
                        ),
                    }
                }
                message = stream.message() => match message {
                    Ok(Some(m)) => self.learn(&m),
                    Ok(None) => return SessionEnd::Retry("the manager ended the session".into()),
                    Err(status) => {
                        return removed(&status)
                            .map(SessionEnd::Removed)
                            .unwrap_or_else(|| SessionEnd::Retry(status.message().to_string()));
                    }
                },
                message = assignments.message() => match message {
                    Ok(Some(m)) => {
                        if let Err(e) = self.worker.lock().await.apply(&m) {
                            // A set the worker cannot take (a gap in versions): start over
                            // with a new session and a complete set.
                            return SessionEnd::Retry(format!("assignments: {e}"));
                        }
                    }
                    Ok(None) => return SessionEnd::Retry("the manager ended the assignments".into()),
                    Err(status) => {
                        return removed(&status)
                            .map(SessionEnd::Removed)
                            .unwrap_or_else(|| SessionEnd::Retry(status.message().to_string()));
                    }
                },
                () = tokio::time::sleep_until(next_check) => {
                    next_check += shoal_api::defaults::NODE_DESCRIPTION_CHECK_PERIOD;
                    // SwarmKit re-registers a node whose description changed (resources,
                    // runtimes, hostname): so does this agent.
                    if self.description().await != description {
                        return SessionEnd::Retry("the node's description changed".into());
                    }
                }
                () = tokio::time::sleep_until(next_beat) => {
                    let request = HeartbeatRequest { session_id: session_id.clone() };
                    let beat = tokio::time::timeout(
                        shoal_api::defaults::DISPATCHER_RPC_TIMEOUT,
                        async {
                            let Some(answers) = &mut answers else {
                                return client.heartbeat(request).await.map(|r| r.into_inner());
                            };
                            if beats.send(request).await.is_err() {
                                return Err(tonic::Status::unavailable("the heartbeat stream closed"));
                            }
                            match answers.message().await {
                                Ok(Some(response)) => Ok(response),
                                Ok(None) => Err(tonic::Status::unavailable(
                                    "the manager closed the heartbeat stream",
                                )),
                                Err(status) => Err(status),
                            }
                        },
                    )
                    .await;
                    match beat {
                        Ok(Ok(response)) => {
                            if let Some(p) = response.period {
                                period = shoal_api::validation::to_std_duration(&p)
                                    .max(Duration::from_millis(100));
                            }
                            next_beat = tokio::time::Instant::now() + period;
                        }
                        Ok(Err(status)) => {
                            return removed(&status)
                                .map(SessionEnd::Removed)
                                .unwrap_or_else(|| SessionEnd::Retry(status.message().to_string()));
                        }
                        Err(_) => return SessionEnd::Retry("a heartbeat timed out".into()),
                    }
                }
            }
        }
    }

    /// Takes in what a session message says about the cluster and this node.
    fn learn(&self, message: &SessionMessage) {
        let addrs: Vec<String> = message
            .managers
            .iter()
            .filter(|m| !m.addr.is_empty())
            .map(|m| m.addr.clone())
            .collect();
        self.managers.set(addrs);
        let renew = message
            .node
            .as_ref()
            .and_then(|n| n.certificate.as_ref())
            .and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.state == issuance_status::State::Renew as i32);
        if renew {
            tracing::info!("agent: the cluster asks this node to renew its certificate");
            self.renew.request();
        }
    }
}
