//! The agent's side of the dispatcher: a session with the leader, kept alive with
//! heartbeats (messages on a `HeartbeatStream` next to the session; unary calls with a
//! manager too old to have one).
//!
//! Every node — worker or manager — keeps one session open with the dispatcher of the Raft
//! leader (a follower answers with the leader's address, which the agent follows). The
//! session is how the cluster knows the node is up (READY), and how the node hears about
//! itself: the managers' addresses (kept in [`Managers`], used to reconnect and to renew),
//! the roots it must trust (passed to the renewer, which keeps them), and changes to its Node
//! object — a certificate marked `RENEW` (promote, demote) or `ROTATE` (a root rotation)
//! makes the node renew at once. When a session opens and the cluster's record of this
//! node's certificate is not the certificate the node holds (a renewal the CA recorded but
//! the node never saved: it crashed in between), the node renews at once too.
//!
//! The node's description carries what it holds ([`crate::renewal::tls_info`]): the roots it
//! trusts and who signed its certificate, which is how the leader learns that a node has
//! rotated. When the node's credentials change (a renewal, other roots to trust), the agent
//! re-registers shortly after (changes that come together make one registration): it opens
//! a new session with the new description *before* letting the current one go (the
//! dispatcher replaces the old session, so the node never looks disconnected); a new session
//! that cannot be opened (the dispatcher limits registrations to 3 in 8 s) leaves the current
//! one in use, and is tried again shortly. A root rotation costs a node two registrations:
//! one when it has the new roots and its new certificate, one when it trusts the new root
//! alone. The whole description is also checked every 20 s, as SwarmKit does, and a change
//! re-registers the same way.
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
    /// Replaced by a session already open (the node's description changed): go on with it.
    Replaced(Box<Opened>),
}

/// A session opened, before its first message is read: the description it was opened with,
/// its connection and its stream.
struct Opened {
    description: NodeDescription,
    channel: Channel,
    stream: Streaming<SessionMessage>,
}

/// How long the agent waits before trying again to re-register a changed description that
/// the manager refused (at most; it starts at a quarter of it and doubles).
const REREGISTER_RETRY_MAX: Duration = Duration::from_secs(8);

/// How long after the node's credentials change the agent re-registers: changes that come
/// together — the roots a root rotation names, then the certificate renewed under them — make
/// one registration (the dispatcher refuses more than 3 in 8 s).
const REREGISTER_SETTLE: Duration = Duration::from_millis(250);

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
        description.tls_info = Some(crate::renewal::tls_info(&self.credentials));
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
        let mut opened = None;
        loop {
            if *shutdown.borrow() {
                return AgentExit::Stopped;
            }
            let established = std::sync::atomic::AtomicBool::new(false);
            let end = self
                .session(&mut shutdown, &established, opened.take())
                .await;
            if let SessionEnd::Replaced(next) = end {
                // The next session is open already: no backoff, no gap.
                opened = Some(*next);
                continue;
            }
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
                SessionEnd::Replaced(_) => unreachable!("handled above"),
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Opens a session with the leader, trying every known manager.
    async fn open(&self, description: NodeDescription) -> Result<Opened, SessionEnd> {
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
                Ok(stream) => {
                    return Ok(Opened {
                        description,
                        channel,
                        stream: stream.into_inner(),
                    });
                }
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
        opened: Option<Opened>,
    ) -> SessionEnd {
        let stopping = async {
            let closed = shutdown.wait_for(|stop| *stop).await.is_err();
            if closed {
                // Nobody can tell the agent to stop any more: keep the session.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            end = self.serve(established, opened) => end,
            () = stopping => {
                // The session's stream and channel are dropped by now; let the connection's
                // task send the reset before the node goes on stopping.
                tokio::task::yield_now().await;
                SessionEnd::Stopped
            }
        }
    }

    /// Opens a session (unless `opened` is one already open) and keeps it alive with
    /// heartbeats until it breaks or is replaced.
    async fn serve(
        &self,
        established: &std::sync::atomic::AtomicBool,
        opened: Option<Opened>,
    ) -> SessionEnd {
        // Heard of from now on: a change made while the session opens is looked at once it is
        // open.
        let mut credentials = self.credentials.changes();
        let opened = match opened {
            Some(opened) => opened,
            None => match self.open(self.description().await).await {
                Ok(opened) => opened,
                Err(end) => return end,
            },
        };
        let Opened {
            description,
            channel,
            mut stream,
        } = opened;
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
        self.check_record(&first);
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
        // A changed description to re-register, and the wait after a refusal.
        let mut reregister: Option<tokio::time::Instant> = None;
        let mut reregister_wait = REREGISTER_RETRY_MAX / 4;
        // The credentials may have changed while the session opened.
        if credentials.has_changed().unwrap_or(false) {
            credentials.borrow_and_update();
            reregister = Some(tokio::time::Instant::now() + REREGISTER_SETTLE);
        }
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
                // (The agent holds the credentials, so their sender outlives this receiver.)
                Ok(()) = credentials.changed() => {
                    // What the node holds is in its description: re-register shortly, once
                    // the changes that come together (new roots to trust, then the
                    // certificate renewed under them) have all been made.
                    let settled = tokio::time::Instant::now() + REREGISTER_SETTLE;
                    reregister = Some(reregister.map_or(settled, |at| at.min(settled)));
                }
                () = tokio::time::sleep_until(next_check) => {
                    next_check += shoal_api::defaults::NODE_DESCRIPTION_CHECK_PERIOD;
                    reregister = Some(tokio::time::Instant::now());
                }
                () = async {
                    match reregister {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    reregister = None;
                    // SwarmKit re-registers a node whose description changed (resources,
                    // runtimes, hostname, the certificate it holds): so does this agent, with
                    // the new session open before the current one goes.
                    let fresh = self.description().await;
                    if fresh != description {
                        match tokio::time::timeout(
                            shoal_api::defaults::DISPATCHER_RPC_TIMEOUT,
                            self.open(fresh),
                        )
                        .await
                        {
                            Ok(Ok(next)) => {
                                tracing::info!(
                                    "agent: the node's description changed; re-registered"
                                );
                                return SessionEnd::Replaced(Box::new(next));
                            }
                            Ok(Err(SessionEnd::Removed(message))) => {
                                return SessionEnd::Removed(message);
                            }
                            Ok(Err(_)) | Err(_) => {
                                // Keep this session; try again a little later.
                                tracing::debug!(
                                    "agent: re-registering the changed description failed; \
                                     retrying in {reregister_wait:?}"
                                );
                                reregister = Some(tokio::time::Instant::now() + reregister_wait);
                                reregister_wait = (reregister_wait * 2).min(REREGISTER_RETRY_MAX);
                            }
                        }
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
        if !message.root_ca.is_empty() {
            let roots = String::from_utf8_lossy(&message.root_ca).into_owned();
            if roots != self.credentials.certificates().root_pem {
                tracing::info!("agent: the cluster names other roots to trust");
                self.renew.trust(roots);
            }
        }
        let certificate = message.node.as_ref().and_then(|n| n.certificate.as_ref());
        let renew = certificate
            .and_then(|c| c.status.as_ref())
            .is_some_and(|s| {
                s.state == issuance_status::State::Renew as i32
                    || s.state == issuance_status::State::Rotate as i32
            });
        if let Some(certificate) = certificate.filter(|_| renew) {
            // The mark is about the certificate recorded with it: once the node holds
            // another (it renewed), the mark is spent.
            let leaf = |pem: &str| {
                shoal_ca::certificates_der(pem)
                    .ok()
                    .map(|mut c| c.remove(0))
            };
            let about = String::from_utf8_lossy(&certificate.certificate).into_owned();
            let held = self.credentials.certificates().cert_pem;
            if about.is_empty() || leaf(&about) == leaf(&held) {
                tracing::info!("agent: the cluster asks this node to renew its certificate");
                self.renew.request_replacing(held);
            }
        }
    }

    /// At the start of a session: if the cluster recorded another certificate for this node
    /// than the one it holds (the CA signed a renewal this node never saved: it crashed in
    /// between), renew — the record is what the cluster goes by, and a mark (`ROTATE`,
    /// `RENEW`) on it is about it, not about what the node holds.
    fn check_record(&self, first: &SessionMessage) {
        let Some(certificate) = first.node.as_ref().and_then(|n| n.certificate.as_ref()) else {
            return;
        };
        let held = self.credentials.certificates().cert_pem;
        // The node's own certificates compared (the chain that came with one may have been
        // dropped since: see `renewal::trust`).
        let leaf = |pem: &str| {
            shoal_ca::certificates_der(pem)
                .ok()
                .map(|mut c| c.remove(0))
        };
        let recorded = String::from_utf8_lossy(&certificate.certificate);
        if !certificate.certificate.is_empty() && leaf(&recorded) != leaf(&held) {
            // Unless a renewal under way installs the recorded certificate first: the request
            // names the certificate held now.
            tracing::info!(
                "agent: the cluster recorded another certificate for this node than the one it \
                 holds; renewing unless a renewal under way brings it"
            );
            self.renew.request_replacing(held);
        }
    }
}
