//! The broker over a real gRPC server on loopback, with the caller's identity given by the
//! test (an interceptor turns a `test-node` header into the certificate identity TLS would
//! have put there) and Raft's status stood in for.

use std::time::{Duration, SystemTime};

use shoal_api::v1::log_broker_client::LogBrokerClient;
use shoal_api::v1::log_broker_server::LogBrokerServer;
use shoal_api::v1::logs_client::LogsClient;
use shoal_api::v1::logs_server::LogsServer;
use shoal_api::v1::{LogContext, Meta, NodeRole, Task};
use shoal_ca::NodeIdentity;
use shoal_raft::RaftStatus;
use tokio::sync::watch;
use tokio::time::timeout;
use tonic::transport::Channel;

use super::*;

const LIMIT: Duration = Duration::from_secs(10);

struct FakeRaft(watch::Sender<RaftStatus>);

impl Leadership for FakeRaft {
    fn status(&self) -> RaftStatus {
        self.0.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<RaftStatus> {
        self.0.subscribe()
    }

    fn not_leader(&self) -> Status {
        Status::failed_precondition("this manager is not the leader; the leader is at 2")
    }
}

struct Fixture {
    broker: LogBroker,
    raft: Arc<FakeRaft>,
    channel: Channel,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn task(id: &str, service: &str, node: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        service_id: service.into(),
        node_id: node.into(),
        ..Default::default()
    }
}

/// A member node: the authorizer lets in only certificates of nodes the store holds.
fn node(id: &str) -> shoal_api::v1::Node {
    shoal_api::v1::Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A broker whose store holds nodes n1 and n2, tasks t1, t2 of service s1 on n1 and n2, t3 of
/// s1 on n1, and t9 not yet assigned.
async fn fixture() -> Fixture {
    let store = Store::new();
    let cluster = crate::cluster::new_cluster(SystemTime::now()).unwrap();
    let cluster_id = cluster.meta.as_ref().unwrap().id.clone();
    store
        .update(|tx| {
            tx.create(cluster)?;
            tx.create(node("n1"))?;
            tx.create(node("n2"))?;
            tx.create(task("t1", "s1", "n1"))?;
            tx.create(task("t2", "s1", "n2"))?;
            tx.create(task("t3", "s1", "n1"))?;
            tx.create(task("t9", "s1", ""))
        })
        .await
        .unwrap();
    let raft = Arc::new(FakeRaft(watch::Sender::new(RaftStatus {
        id: 1,
        leader: Some(1),
        term: 1,
        is_leader: true,
        ..Default::default()
    })));
    let broker = LogBroker::with_leadership(
        store.clone(),
        raft.clone(),
        Authorizer::new(store, cluster_id.clone()),
    );
    let identify = move |mut request: Request<()>| {
        if let Some(node) = request
            .metadata()
            .get("test-node")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        {
            request.extensions_mut().insert(shoal_tls::PeerInfo {
                remote_addr: None,
                identity: Some(NodeIdentity {
                    node_id: node,
                    role: NodeRole::Worker,
                    cluster_id: cluster_id.clone(),
                    not_before: SystemTime::UNIX_EPOCH,
                    not_after: SystemTime::now() + Duration::from_secs(3600),
                }),
            });
        }
        Ok(request)
    };
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(LogsServer::new(broker.clone()))
        .add_service(LogBrokerServer::with_interceptor(broker.clone(), identify))
        .serve_with_incoming(incoming);
    let server = tokio::spawn(async move {
        let _ = server.await;
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Fixture {
        broker,
        raft,
        channel,
        server,
    }
}

fn as_node<T>(message: T, node: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("test-node", node.parse().unwrap());
    request
}

fn line(node: &str, task: &str, data: &str) -> LogMessage {
    LogMessage {
        context: Some(LogContext {
            service_id: "s1".into(),
            node_id: node.into(),
            task_id: task.into(),
        }),
        timestamp: None,
        stream: LogStream::Stdout as i32,
        data: data.as_bytes().to_vec(),
    }
}

impl Fixture {
    async fn listen(&self, node: &str) -> Streaming<SubscriptionMessage> {
        LogBrokerClient::new(self.channel.clone())
            .listen_subscriptions(as_node(ListenSubscriptionsRequest {}, node))
            .await
            .unwrap()
            .into_inner()
    }

    async fn subscribe(
        &self,
        selector: LogSelector,
    ) -> Result<Streaming<SubscribeLogsMessage>, Status> {
        LogsClient::new(self.channel.clone())
            .subscribe_logs(SubscribeLogsRequest {
                selector: Some(selector),
                options: Some(LogSubscriptionOptions::default()),
            })
            .await
            .map(Response::into_inner)
    }

    /// Publishes `messages` as `node`, in one stream.
    async fn publish(
        &self,
        node: &str,
        messages: Vec<PublishLogsMessage>,
    ) -> Result<PublishLogsResponse, Status> {
        LogBrokerClient::new(self.channel.clone())
            .publish_logs(as_node(futures_util::stream::iter(messages), node))
            .await
            .map(Response::into_inner)
    }

    /// Waits until the broker has registered the listeners of `nodes`.
    async fn listening(&self, nodes: &[&str]) {
        timeout(LIMIT, async {
            while !nodes
                .iter()
                .all(|n| self.broker.inner.state().listeners.contains_key(*n))
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("listeners registered");
    }
}

fn tasks(ids: &[&str]) -> LogSelector {
    LogSelector {
        task_ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn next<T>(stream: &mut Streaming<T>) -> Option<Result<T, Status>> {
    timeout(LIMIT, stream.next()).await.expect("bounded")
}

/// Reads the subscriber's stream to its end: the data received and how it ended.
async fn drain(mut stream: Streaming<SubscribeLogsMessage>) -> (Vec<String>, Result<(), Status>) {
    let mut lines = Vec::new();
    loop {
        match next(&mut stream).await {
            None => return (lines, Ok(())),
            Some(Err(status)) => return (lines, Err(status)),
            Some(Ok(message)) => lines.extend(
                message
                    .messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.data).into_owned()),
            ),
        }
    }
}

fn publish(id: &str, messages: Vec<LogMessage>, close: bool) -> PublishLogsMessage {
    PublishLogsMessage {
        subscription_id: id.into(),
        messages,
        close,
        error: String::new(),
    }
}

#[tokio::test]
async fn logs_of_a_service_come_from_every_node_and_the_stream_ends_when_all_have_closed() {
    let f = fixture().await;
    let mut n1 = f.listen("n1").await;
    let mut n2 = f.listen("n2").await;
    f.listening(&["n1", "n2"]).await;
    let logs = f
        .subscribe(LogSelector {
            service_ids: vec!["s1".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let to_n1 = next(&mut n1).await.unwrap().unwrap();
    let to_n2 = next(&mut n2).await.unwrap().unwrap();
    assert_eq!(to_n1.id, to_n2.id);
    assert!(!to_n1.close);
    assert_eq!(to_n1.selector.unwrap().service_ids, vec!["s1"]);
    let id = to_n1.id;
    f.publish(
        "n1",
        vec![
            publish(&id, vec![line("n1", "t1", "one\n")], false),
            publish(&id, vec![line("n1", "t3", "three\n")], true),
        ],
    )
    .await
    .unwrap();
    assert_eq!(f.broker.subscriptions(), 1, "n2 has not closed yet");
    f.publish(
        "n2",
        vec![publish(&id, vec![line("n2", "t2", "two\n")], true)],
    )
    .await
    .unwrap();
    let (lines, end) = drain(logs).await;
    assert_eq!(lines, ["one\n", "three\n", "two\n"]);
    end.unwrap();
    assert_eq!(f.broker.subscriptions(), 0);

    // A node that could not read some of its logs says so when it closes.
    let logs = f.subscribe(tasks(&["t1"])).await.unwrap();
    let id = next(&mut n1).await.unwrap().unwrap().id;
    let mut close = publish(&id, vec![line("n1", "t1", "one\n")], true);
    close.error = "task t1: its log files are gone".into();
    f.publish("n1", vec![close]).await.unwrap();
    let (lines, end) = drain(logs).await;
    assert_eq!(lines, ["one\n"]);
    let status = end.unwrap_err();
    assert!(
        status
            .message()
            .contains("node n1: task t1: its log files are gone"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_node_that_is_not_connected_makes_the_stream_end_with_an_error_after_the_rest() {
    let f = fixture().await;
    let mut n1 = f.listen("n1").await;
    f.listening(&["n1"]).await;
    let logs = f.subscribe(tasks(&["t1", "t2"])).await.unwrap();
    let id = next(&mut n1).await.unwrap().unwrap().id;
    f.publish(
        "n1",
        vec![publish(&id, vec![line("n1", "t1", "one\n")], true)],
    )
    .await
    .unwrap();
    let (lines, end) = drain(logs).await;
    assert_eq!(lines, ["one\n"]);
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status
            .message()
            .contains("node n2: the node is not connected"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_node_publishes_only_its_own_selected_tasks_for_subscriptions_sent_to_it() {
    let f = fixture().await;
    let mut n1 = f.listen("n1").await;
    let _n2 = f.listen("n2").await;
    f.listening(&["n1", "n2"]).await;
    let logs = f.subscribe(tasks(&["t1"])).await.unwrap();
    let id = next(&mut n1).await.unwrap().unwrap().id;

    // n2 was not asked.
    let err = f
        .publish(
            "n2",
            vec![publish(&id, vec![line("n2", "t2", "x\n")], true)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // A refused stream counts as n1 having failed: the subscriber learns it, and no
    // refused line reached it.
    let refused = f
        .publish(
            "n1",
            vec![publish(&id, vec![line("n2", "t1", "x\n")], false)],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let (lines, end) = drain(logs).await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(end.unwrap_err().code(), tonic::Code::Unavailable);

    // Nor may n1 publish one of its tasks the subscription did not select.
    let _logs = f.subscribe(tasks(&["t1"])).await.unwrap();
    let id = next(&mut n1).await.unwrap().unwrap().id;
    let refused = f
        .publish(
            "n1",
            vec![publish(&id, vec![line("n1", "t3", "x\n")], false)],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

#[tokio::test]
async fn a_subscriber_that_goes_away_closes_the_subscription_on_its_nodes() {
    let f = fixture().await;
    let mut n1 = f.listen("n1").await;
    f.listening(&["n1"]).await;
    let logs = f.subscribe(tasks(&["t1"])).await.unwrap();
    let id = next(&mut n1).await.unwrap().unwrap().id;
    drop(logs);
    let close = next(&mut n1).await.unwrap().unwrap();
    assert_eq!((close.id.as_str(), close.close), (id.as_str(), true));
    assert_eq!(f.broker.subscriptions(), 0);
    let err = f
        .publish(
            "n1",
            vec![publish(&id, vec![line("n1", "t1", "x\n")], false)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_agent_that_disconnects_before_closing_ends_the_subscription_with_an_error() {
    let f = fixture().await;
    let mut n1 = f.listen("n1").await;
    f.listening(&["n1"]).await;
    let logs = f.subscribe(tasks(&["t1"])).await.unwrap();
    next(&mut n1).await.unwrap().unwrap();
    drop(n1);
    let (lines, end) = drain(logs).await;
    assert!(lines.is_empty());
    let status = end.unwrap_err();
    assert!(
        status.message().contains("agent disconnected"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_reconnecting_agent_is_sent_the_subscriptions_it_still_owes() {
    let f = fixture().await;
    let first = f.listen("n1").await;
    f.listening(&["n1"]).await;
    let second = f.listen("n1").await;
    // Wait until the second listener replaced the first.
    timeout(LIMIT, async {
        while f.broker.inner.state().listeners.get("n1").map(|l| l.id) == Some(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    drop(first); // the older stream going away does not unregister the newer one
    let mut second = second;
    let logs = f.subscribe(tasks(&["t1"])).await.unwrap();
    let sent = next(&mut second).await.unwrap().unwrap();
    let mut third = f.listen("n1").await;
    let resent = next(&mut third).await.unwrap().unwrap();
    assert_eq!(sent.id, resent.id);
    f.publish(
        "n1",
        vec![publish(&sent.id, vec![line("n1", "t1", "a\n")], true)],
    )
    .await
    .unwrap();
    let (lines, end) = drain(logs).await;
    assert_eq!(lines, ["a\n"]);
    end.unwrap();
}

#[tokio::test]
async fn bad_selectors_and_followers_are_refused() {
    let f = fixture().await;
    let code = |r: Result<_, Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(f.subscribe(LogSelector::default()).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(f.subscribe(tasks(&["nope"])).await),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(
            f.subscribe(LogSelector {
                service_ids: vec!["nope".into()],
                ..Default::default()
            })
            .await
        ),
        tonic::Code::NotFound
    );
    // A task not yet assigned: no node holds logs, the stream ends at once, empty.
    let (lines, end) = drain(f.subscribe(tasks(&["t9"])).await.unwrap()).await;
    assert!(lines.is_empty());
    end.unwrap();
    // Agents without a certificate are refused.
    let err = LogBrokerClient::new(f.channel.clone())
        .listen_subscriptions(ListenSubscriptionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    f.raft.0.send_modify(|s| s.is_leader = false);
    assert_eq!(
        code(f.subscribe(tasks(&["t1"])).await),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(f.broker.subscriptions(), 0);
}
