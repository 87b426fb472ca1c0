//! The agent's side of the log broker: reads the logs a subscription asks for from this
//! node's executor and publishes them to the leader.
//!
//! While a session is open the agent keeps a `ListenSubscriptions` stream open next to it.
//! Every subscription that arrives gets its own publishing task: it picks the tasks this
//! node drives that the subscription's selector names (by task, service or node), opens each
//! one's log reader ([`shoal_executor::Controller::logs`], with the subscription's streams,
//! tail, since and follow), merges the records as they come into one `PublishLogs` stream —
//! batched, at most [`BATCH_RECORDS`] records per message — and closes it when every reader
//! has ended (at once for past logs; when the tasks end, with follow). A task whose logs
//! cannot be opened is named in the close message's `error`, so the subscriber learns which
//! logs are missing rather than seeing less without a word.
//!
//! A `close` from the broker (the subscriber went away) aborts that subscription's task; the
//! end of the listening stream (the session broke) aborts them all. Every publishing task is
//! owned by the [`LogPublisher::serve`] call that spawned it (a `JoinSet`), so none outlives
//! its session.
//!
//! Departures from SwarmKit (`agent/session.go` logs, `agent/worker.go` Subscribe): SwarmKit
//! publishes each task's logs on its own, through one shared publisher per subscription;
//! here one task per subscription merges the readers, in the order the records arrive.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use shoal_api::v1::log_broker_client::LogBrokerClient;
use shoal_api::v1::{
    ListenSubscriptionsRequest, LogContext, LogMessage, LogSelector, LogStream,
    LogSubscriptionOptions, PublishLogsMessage, SubscriptionMessage, Task,
};
use shoal_executor::{LogRecord, LogsOptions};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::worker::{RegisteredTask, TaskControllers};

/// Records per `PublishLogs` message, at most.
pub const BATCH_RECORDS: usize = 100;

/// Publishes the logs of this node's tasks for the leader's subscriptions.
#[derive(Clone)]
pub struct LogPublisher {
    node_id: String,
    controllers: TaskControllers,
}

/// Whether `selector` names `task` (which runs on `node_id`).
pub fn selects(selector: &LogSelector, node_id: &str, task: &Task) -> bool {
    let id = task
        .meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default();
    selector.task_ids.iter().any(|t| t == id)
        || (!task.service_id.is_empty() && selector.service_ids.contains(&task.service_id))
        || selector.node_ids.iter().any(|n| n == node_id)
}

/// The executor's options for a subscription's.
pub fn options_of(options: &LogSubscriptionOptions) -> LogsOptions {
    let wants = |stream: LogStream| {
        options.streams.is_empty() || options.streams.contains(&(stream as i32))
    };
    LogsOptions {
        stdout: wants(LogStream::Stdout),
        stderr: wants(LogStream::Stderr),
        tail: usize::try_from(options.tail).ok(),
        since: options.since.as_ref().and_then(|t| {
            let seconds = u64::try_from(t.seconds).ok()?;
            let nanos = u32::try_from(t.nanos).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
        }),
        follow: options.follow,
    }
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    }
}

fn message_of(context: &LogContext, record: LogRecord) -> LogMessage {
    LogMessage {
        context: Some(context.clone()),
        timestamp: Some(timestamp(record.timestamp)),
        stream: match record.stream {
            shoal_executor::LogStream::Stdout => LogStream::Stdout as i32,
            shoal_executor::LogStream::Stderr => LogStream::Stderr as i32,
        },
        data: record.data,
    }
}

impl LogPublisher {
    pub fn new(node_id: String, controllers: TaskControllers) -> Self {
        Self {
            node_id,
            controllers,
        }
    }

    /// Listens for subscriptions on `channel` and publishes for each, until the stream ends
    /// or fails (returned). Dropping the future aborts every publication in progress.
    pub async fn serve(&self, channel: Channel) -> Result<(), tonic::Status> {
        let mut client = LogBrokerClient::new(channel);
        let mut stream = client
            .listen_subscriptions(ListenSubscriptionsRequest {})
            .await?
            .into_inner();
        let mut publications = JoinSet::new();
        let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut ids: HashMap<tokio::task::Id, String> = HashMap::new();
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    None => return Ok(()),
                    Some(subscription) if subscription.close => {
                        if let Some(handle) = running.remove(&subscription.id) {
                            tracing::debug!(subscription = %subscription.id, "logs: subscription closed by the manager");
                            handle.abort();
                        }
                    }
                    Some(subscription) => {
                        if running.contains_key(&subscription.id) {
                            continue; // sent again after a reconnection; already publishing
                        }
                        let id = subscription.id.clone();
                        let handle =
                            publications.spawn(self.clone().publish(client.clone(), subscription));
                        ids.insert(handle.id(), id.clone());
                        running.insert(id, handle);
                    }
                },
                Some(done) = publications.join_next_with_id() => {
                    let task_id = match &done {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    if let Some(id) = ids.remove(&task_id) {
                        running.remove(&id);
                    }
                }
            }
        }
    }

    /// Publishes one subscription's logs, then closes it.
    async fn publish(
        self,
        mut client: LogBrokerClient<Channel>,
        subscription: SubscriptionMessage,
    ) {
        let id = subscription.id.clone();
        let selector = subscription.selector.unwrap_or_default();
        let options = options_of(&subscription.options.unwrap_or_default());
        let tasks = self
            .controllers
            .matching(|task| selects(&selector, &self.node_id, task));
        let (outgoing, requests) = mpsc::channel::<PublishLogsMessage>(4);
        let call = client.publish_logs(tokio_stream::wrappers::ReceiverStream::new(requests));
        let produce = self.produce(id.clone(), tasks, options, outgoing);
        tokio::pin!(call);
        // The call ends after the close, or early when the broker refuses (the subscriber
        // went away): then stop reading at once.
        let result = tokio::select! {
            result = &mut call => result,
            () = produce => call.await,
        };
        match result {
            Ok(_) => tracing::debug!(subscription = %id, "logs: published"),
            // The subscriber went away: nothing more to do.
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => {
                tracing::warn!(subscription = %id, "logs: publishing failed: {}", status.message())
            }
        }
    }

    /// Reads the tasks' logs and sends them, batched, then the close message.
    async fn produce(
        &self,
        id: String,
        tasks: Vec<RegisteredTask>,
        options: LogsOptions,
        outgoing: mpsc::Sender<PublishLogsMessage>,
    ) {
        let (records, mut merged) = mpsc::channel::<(LogContext, LogRecord)>(256);
        let mut readers = JoinSet::new();
        let mut failures = Vec::new();
        for registered in tasks {
            let task_id = registered
                .task
                .meta
                .as_ref()
                .map(|m| m.id.clone())
                .unwrap_or_default();
            let context = LogContext {
                service_id: registered.task.service_id.clone(),
                node_id: self.node_id.clone(),
                task_id: task_id.clone(),
            };
            match registered.controller.logs(options.clone()).await {
                Ok(mut reader) => {
                    let records = records.clone();
                    readers.spawn(async move {
                        while let Some(record) = reader.recv().await {
                            match record {
                                Ok(record) => {
                                    if records.send((context.clone(), record)).await.is_err() {
                                        return None;
                                    }
                                }
                                Err(e) => return Some(format!("task {task_id}: {e}")),
                            }
                        }
                        None
                    });
                }
                Err(e) => failures.push(format!("task {task_id}: {e}")),
            }
        }
        drop(records);
        loop {
            let Some(first) = merged.recv().await else {
                break;
            };
            let mut messages = vec![message_of(&first.0, first.1)];
            while messages.len() < BATCH_RECORDS {
                match merged.try_recv() {
                    Ok((context, record)) => messages.push(message_of(&context, record)),
                    Err(_) => break,
                }
            }
            let message = PublishLogsMessage {
                subscription_id: id.clone(),
                messages,
                close: false,
                error: String::new(),
            };
            if outgoing.send(message).await.is_err() {
                return; // the call ended (the subscription is gone)
            }
        }
        while let Some(done) = readers.join_next().await {
            if let Ok(Some(failure)) = done {
                failures.push(failure);
            }
        }
        let _ = outgoing
            .send(PublishLogsMessage {
                subscription_id: id,
                messages: Vec::new(),
                close: true,
                error: failures.join("; "),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::Meta;

    fn task(id: &str, service: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_name_tasks_by_id_service_or_node() {
        let by_task = LogSelector {
            task_ids: vec!["t1".into()],
            ..Default::default()
        };
        assert!(selects(&by_task, "n1", &task("t1", "s1")));
        assert!(!selects(&by_task, "n1", &task("t2", "s1")));
        let by_service = LogSelector {
            service_ids: vec!["s1".into()],
            ..Default::default()
        };
        assert!(selects(&by_service, "n1", &task("t2", "s1")));
        assert!(!selects(&by_service, "n1", &task("t3", "s2")));
        assert!(!selects(&by_service, "n1", &task("t4", "")));
        let by_node = LogSelector {
            node_ids: vec!["n1".into()],
            ..Default::default()
        };
        assert!(selects(&by_node, "n1", &task("t3", "s2")));
        assert!(!selects(&by_node, "n2", &task("t3", "s2")));
    }

    #[test]
    fn subscription_options_become_executor_options() {
        let all = options_of(&LogSubscriptionOptions {
            streams: Vec::new(),
            follow: true,
            tail: -1,
            since: None,
        });
        assert!(all.stdout && all.stderr && all.follow);
        assert_eq!(all.tail, None);
        let some = options_of(&LogSubscriptionOptions {
            streams: vec![LogStream::Stderr as i32],
            follow: false,
            tail: 5,
            since: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 5,
            }),
        });
        assert!(!some.stdout && some.stderr && !some.follow);
        assert_eq!(some.tail, Some(5));
        assert_eq!(
            some.since,
            Some(SystemTime::UNIX_EPOCH + Duration::new(10, 5))
        );
    }
}
