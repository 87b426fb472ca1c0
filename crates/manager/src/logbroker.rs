//! The log broker: task logs travel from the agents that hold them, through the leader, to
//! whoever asked.
//!
//! A client (the `shoal` command line, later the Engine API) calls `Logs.SubscribeLogs` with a
//! selector — services, nodes, tasks — and options (streams, tail, since, follow). The leader
//! resolves the selector against the store into the tasks it covers and the nodes they are
//! assigned to, gives the subscription an ID, and sends it down the `ListenSubscriptions`
//! stream of every one of those nodes' agents. Each agent reads its tasks' logs from its
//! executor and sends them back on a `PublishLogs` stream tagged with the subscription ID,
//! then closes it; the broker hands the messages to the subscriber as they come, and ends the
//! subscriber's stream once every node has closed. With `follow`, an agent closes only when
//! the tasks it follows have ended (or when the subscriber goes away and the broker tells the
//! agent so with a `close` message).
//!
//! Invariants:
//! - A node publishes only for a subscription that was sent to it, and only logs of the tasks
//!   the subscription selected on that node (checked against the node's certificate): a
//!   worker cannot inject lines into another node's logs.
//! - A subscription never hangs on a node that cannot answer: a node with no agent listening
//!   when the subscription starts, or whose listener or publish stream goes away before it
//!   closed, counts as done, and the subscriber's stream ends with an UNAVAILABLE error naming
//!   those nodes — after everything the other nodes sent, so what could be read is shown.
//! - When the subscriber goes away (its stream is dropped), the subscription is removed and
//!   every node still publishing is told to close, so no agent reads logs for nobody.
//! - The broker's lock is never held across an await: messages are forwarded with a cloned
//!   sender, so a slow subscriber slows only its own publishers (back-pressure through the
//!   bounded channel and HTTP/2 flow control), never other subscriptions.
//!
//! Runs on the leader only, as the dispatcher does (agents keep their sessions with the
//! leader): a follower answers FAILED_PRECONDITION naming the leader.
//!
//! Departures from SwarmKit (`manager/logbroker`): SwarmKit also sends a follow subscription
//! to nodes that receive matching tasks after it began (a service scaled up); here the set of
//! nodes is fixed when the subscription starts. SwarmKit reports unavailable nodes as
//! warnings inside the stream; the proto here has no such field, so they end the stream as an
//! error after the logs that did arrive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use shoal_api::v1::{
    ListenSubscriptionsRequest, LogMessage, LogSelector, LogStream, LogSubscriptionOptions,
    PublishLogsMessage, PublishLogsResponse, Service, SubscribeLogsMessage, SubscribeLogsRequest,
    SubscriptionMessage, Task, log_broker_server, logs_server,
};
use shoal_store::{By, Reader, Store};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::authorize::{Access, Authorizer};
use crate::dispatcher::Leadership;

/// Messages buffered towards one subscriber before its publishers wait.
const SUBSCRIBER_BUFFER: usize = 64;
/// Subscription messages buffered towards one agent.
const LISTENER_BUFFER: usize = 256;

/// The log broker of one manager: serves `Logs` (clients) and `LogBroker` (agents).
#[derive(Clone)]
pub struct LogBroker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    leadership: Arc<dyn Leadership>,
    /// Checks agents' certificates.
    authorizer: Authorizer,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The agent listening for subscriptions on each node.
    listeners: HashMap<String, Listener>,
    subscriptions: HashMap<String, Subscription>,
}

struct Listener {
    id: u64,
    sender: mpsc::Sender<Result<SubscriptionMessage, Status>>,
}

struct Subscription {
    message: SubscriptionMessage,
    sender: mpsc::Sender<Result<SubscribeLogsMessage, Status>>,
    /// The tasks whose logs each node may publish for this subscription.
    tasks: HashMap<String, BTreeSet<String>>,
    /// Nodes that have not closed yet.
    pending: BTreeSet<String>,
    /// Nodes whose logs could not be had, and why.
    unavailable: BTreeMap<String, String>,
}

impl State {
    /// Marks `node` done for subscription `id` (with the reason it could not deliver, if
    /// any); ends the subscription when no node is left.
    fn node_done(&mut self, id: &str, node: &str, failure: Option<String>) {
        let Some(subscription) = self.subscriptions.get_mut(id) else {
            return;
        };
        if !subscription.pending.remove(node) {
            return;
        }
        if let Some(reason) = failure {
            subscription.unavailable.insert(node.to_string(), reason);
        }
        if subscription.pending.is_empty() {
            let subscription = self.subscriptions.remove(id).expect("present");
            finish(subscription);
        }
    }
}

/// Ends a subscriber's stream: cleanly, or with an error naming the nodes that could not
/// deliver.
fn finish(subscription: Subscription) {
    if subscription.unavailable.is_empty() {
        return;
    }
    let reasons: Vec<String> = subscription
        .unavailable
        .iter()
        .map(|(node, reason)| format!("node {node}: {reason}"))
        .collect();
    let status = Status::unavailable(format!(
        "incomplete logs: {} (the logs of tasks on those nodes are missing; try again once the \
         nodes are up)",
        reasons.join("; ")
    ));
    // The subscriber may be behind: queue the error after what it has not read yet. The send
    // ends when the subscriber reads it or goes away.
    if let Err(mpsc::error::TrySendError::Full(status)) = subscription.sender.try_send(Err(status))
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let sender = subscription.sender;
        runtime.spawn(async move {
            let _ = sender.send(status).await;
        });
    }
}

impl LogBroker {
    pub fn new(store: Store, raft: shoal_raft::RaftHandle, authorizer: Authorizer) -> Self {
        Self::with_leadership(store, Arc::new(raft), authorizer)
    }

    pub(crate) fn with_leadership(
        store: Store,
        leadership: Arc<dyn Leadership>,
        authorizer: Authorizer,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                leadership,
                authorizer,
                next_id: AtomicU64::new(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Subscriptions in progress (for tests and diagnostics).
    pub fn subscriptions(&self) -> usize {
        self.inner.state().subscriptions.len()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn require_leader(&self) -> Result<(), Status> {
        if self.leadership.status().is_leader {
            Ok(())
        } else {
            Err(self.leadership.not_leader())
        }
    }

    /// The node calling, from its certificate.
    fn caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.authorizer
            .check(request, Access::Nodes)?
            .map(|identity| identity.node_id)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no client certificate: the log broker needs a node certificate of this \
                     cluster",
                )
            })
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The tasks `selector` covers, by node. Unknown services and tasks are refused.
    fn resolve(&self, selector: &LogSelector) -> Result<HashMap<String, BTreeSet<String>>, Status> {
        if selector.service_ids.is_empty()
            && selector.node_ids.is_empty()
            && selector.task_ids.is_empty()
        {
            return Err(Status::invalid_argument(
                "selector: name at least one service, node or task whose logs to read",
            ));
        }
        self.store.view(|tx| {
            let mut tasks: Vec<Arc<Task>> = Vec::new();
            for id in &selector.service_ids {
                let found = tx.find::<Task>(By::Service(id));
                if found.is_empty() && tx.get::<Service>(id).is_none() {
                    return Err(Status::not_found(format!("service {id} not found")));
                }
                tasks.extend(found);
            }
            for id in &selector.task_ids {
                let task = tx
                    .get::<Task>(id)
                    .ok_or_else(|| Status::not_found(format!("task {id} not found")))?;
                tasks.push(task);
            }
            for id in &selector.node_ids {
                tasks.extend(tx.find::<Task>(By::Node(id)));
            }
            let mut by_node: HashMap<String, BTreeSet<String>> = HashMap::new();
            for task in tasks {
                // A task not yet assigned has no logs anywhere.
                if task.node_id.is_empty() {
                    continue;
                }
                let id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
                by_node.entry(task.node_id.clone()).or_default().insert(id);
            }
            Ok(by_node)
        })
    }
}

fn validate(options: &LogSubscriptionOptions) -> Result<(), Status> {
    for stream in &options.streams {
        if !matches!(
            LogStream::try_from(*stream),
            Ok(LogStream::Stdout | LogStream::Stderr)
        ) {
            return Err(Status::invalid_argument(format!(
                "options.streams: {stream} is not stdout (1) or stderr (2)"
            )));
        }
    }
    if let Some(since) = &options.since
        && !(0..1_000_000_000).contains(&since.nanos)
    {
        return Err(Status::invalid_argument(
            "options.since: nanos must be within 0..1e9",
        ));
    }
    Ok(())
}

/// The subscriber's stream: ends the subscription when dropped.
pub struct SubscriberStream {
    receiver: mpsc::Receiver<Result<SubscribeLogsMessage, Status>>,
    inner: Arc<Inner>,
    id: String,
}

impl Stream for SubscriberStream {
    type Item = Result<SubscribeLogsMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for SubscriberStream {
    fn drop(&mut self) {
        let mut state = self.inner.state();
        let Some(subscription) = state.subscriptions.remove(&self.id) else {
            return;
        };
        // Tell the nodes still publishing to stop.
        for node in &subscription.pending {
            if let Some(listener) = state.listeners.get(node) {
                let _ = listener.sender.try_send(Ok(SubscriptionMessage {
                    id: self.id.clone(),
                    close: true,
                    ..Default::default()
                }));
            }
        }
        tracing::debug!(subscription = %self.id, "log subscription ended by its subscriber");
    }
}

/// An agent's subscription stream: unregisters the listener when dropped.
pub struct ListenerStream {
    receiver: mpsc::Receiver<Result<SubscriptionMessage, Status>>,
    inner: Arc<Inner>,
    node: String,
    id: u64,
}

impl Stream for ListenerStream {
    type Item = Result<SubscriptionMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for ListenerStream {
    fn drop(&mut self) {
        let mut state = self.inner.state();
        if state
            .listeners
            .get(&self.node)
            .is_none_or(|l| l.id != self.id)
        {
            // A newer listener of the same node took over; its subscriptions stay.
            return;
        }
        state.listeners.remove(&self.node);
        let waiting: Vec<String> = state
            .subscriptions
            .iter()
            .filter(|(_, s)| s.pending.contains(&self.node))
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            state.node_done(
                &id,
                &self.node,
                Some("the node's agent disconnected".into()),
            );
        }
    }
}

#[tonic::async_trait]
impl logs_server::Logs for LogBroker {
    type SubscribeLogsStream = SubscriberStream;

    async fn subscribe_logs(
        &self,
        request: Request<SubscribeLogsRequest>,
    ) -> Result<Response<SubscriberStream>, Status> {
        let inner = &self.inner;
        inner.require_leader()?;
        let request = request.into_inner();
        let selector = request.selector.unwrap_or_default();
        let options = request.options.unwrap_or_default();
        validate(&options)?;
        let tasks = inner.resolve(&selector)?;
        let id = format!("logs-{}", inner.next_id());
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let message = SubscriptionMessage {
            id: id.clone(),
            selector: Some(selector),
            options: Some(options),
            close: false,
        };
        let mut subscription = Subscription {
            message: message.clone(),
            sender,
            pending: tasks.keys().cloned().collect(),
            tasks,
            unavailable: BTreeMap::new(),
        };
        let mut state = inner.state();
        for node in subscription.pending.clone() {
            let sent = state
                .listeners
                .get(&node)
                .is_some_and(|l| l.sender.try_send(Ok(message.clone())).is_ok());
            if !sent {
                subscription.pending.remove(&node);
                subscription
                    .unavailable
                    .insert(node, "the node is not connected".into());
            }
        }
        tracing::debug!(
            subscription = %id,
            nodes = subscription.pending.len(),
            unavailable = subscription.unavailable.len(),
            "log subscription started"
        );
        if subscription.pending.is_empty() {
            finish(subscription);
        } else {
            state.subscriptions.insert(id.clone(), subscription);
        }
        drop(state);
        Ok(Response::new(SubscriberStream {
            receiver,
            inner: inner.clone(),
            id,
        }))
    }
}

#[tonic::async_trait]
impl log_broker_server::LogBroker for LogBroker {
    type ListenSubscriptionsStream = ListenerStream;

    async fn listen_subscriptions(
        &self,
        request: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<ListenerStream>, Status> {
        let inner = &self.inner;
        let node = inner.caller(&request)?;
        inner.require_leader()?;
        let (sender, receiver) = mpsc::channel(LISTENER_BUFFER);
        let id = inner.next_id();
        let mut state = inner.state();
        // Subscriptions this node still owes (it reconnected while they ran).
        for subscription in state.subscriptions.values() {
            if subscription.pending.contains(&node) {
                let _ = sender.try_send(Ok(subscription.message.clone()));
            }
        }
        // A newer stream replaces an older one of the same node; the older one ends.
        state
            .listeners
            .insert(node.clone(), Listener { id, sender });
        drop(state);
        tracing::debug!(node = %node, "agent listening for log subscriptions");
        Ok(Response::new(ListenerStream {
            receiver,
            inner: inner.clone(),
            node,
            id,
        }))
    }

    async fn publish_logs(
        &self,
        request: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let inner = &self.inner;
        let node = inner.caller(&request)?;
        let mut stream = request.into_inner();
        let mut current: Option<String> = None;
        let outcome = loop {
            let message = match stream.next().await {
                None => break Ok(()),
                Some(Err(status)) => break Err(status),
                Some(Ok(message)) => message,
            };
            let id = message.subscription_id.clone();
            match &current {
                Some(c) if *c != id => {
                    break Err(Status::invalid_argument(format!(
                        "one PublishLogs stream carries one subscription: {c}, then {id}"
                    )));
                }
                _ => current = Some(id.clone()),
            }
            // Check under the lock, forward without it.
            let sender = {
                let state = inner.state();
                let Some(subscription) = state.subscriptions.get(&id) else {
                    // The subscriber went away (or never was): tell the agent to stop.
                    break Err(Status::not_found(format!(
                        "log subscription {id} has ended"
                    )));
                };
                let Some(allowed) = subscription.tasks.get(&node) else {
                    break Err(Status::permission_denied(format!(
                        "log subscription {id} was not sent to node {node}"
                    )));
                };
                if let Some(bad) = message.messages.iter().find(|m| {
                    let context = m.context.clone().unwrap_or_default();
                    context.node_id != node || !allowed.contains(&context.task_id)
                }) {
                    let context = bad.context.clone().unwrap_or_default();
                    break Err(Status::permission_denied(format!(
                        "node {node} may not publish logs of task {} (node {}) for subscription \
                         {id}",
                        context.task_id, context.node_id
                    )));
                }
                subscription.sender.clone()
            };
            if !message.messages.is_empty() {
                let messages: Vec<LogMessage> = message.messages;
                if sender
                    .send(Ok(SubscribeLogsMessage { messages }))
                    .await
                    .is_err()
                {
                    break Err(Status::not_found(format!(
                        "log subscription {id} has ended"
                    )));
                }
            }
            if message.close {
                let failure = (!message.error.is_empty()).then_some(message.error);
                inner.state().node_done(&id, &node, failure);
                current = None;
                break Ok(());
            }
        };
        // A stream that broke before its close leaves the subscription without this node.
        if let Some(id) = current {
            let reason = match &outcome {
                Ok(()) => "the node stopped publishing before the end".to_string(),
                Err(status) => format!("publishing failed: {}", status.message()),
            };
            inner.state().node_done(&id, &node, Some(reason));
        }
        outcome.map(|()| Response::new(PublishLogsResponse {}))
    }
}

#[cfg(test)]
mod tests;
