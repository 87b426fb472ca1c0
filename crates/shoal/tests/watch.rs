//! The Watch API served by real `shoal daemon` processes: a stream of committed changes over
//! the local control socket, in order and with versions; a client that disconnects and
//! resumes from the last version it saw gets exactly what it missed; a follower streams what
//! it has applied, at the same versions as the leader, over the remote API (mutual TLS).

mod support;

use std::time::Duration;

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::watch_client::WatchClient;
use shoal_api::v1::{
    Annotations, Config, CreateConfigRequest, GetConfigRequest, Label, ObjectKind,
    RemoveConfigRequest, UpdateConfigRequest, WatchAction, WatchEntry, WatchMessage, WatchRequest,
    stored_object,
};
use tonic::Streaming;
use tonic::transport::Channel;

/// A request for every change of configs, old objects included.
fn configs(resume_from: u64) -> WatchRequest {
    WatchRequest {
        entries: vec![WatchEntry {
            kind: ObjectKind::Config as i32,
            actions: 0,
            filters: Vec::new(),
        }],
        resume_from,
        include_old_object: true,
    }
}

/// What a test checks of an event: the action, the config's name, and whether the old
/// object came with it.
type Seen = (WatchAction, String, bool);

fn name(c: &Config) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

/// The next message of `stream`, within 10 s.
async fn next(stream: &mut Streaming<WatchMessage>) -> WatchMessage {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch message within 10 s")
        .expect("the stream goes on")
        .expect("the stream goes on")
}

/// The version and events of the next message.
async fn next_events(stream: &mut Streaming<WatchMessage>) -> (u64, Vec<Seen>) {
    let m = next(stream).await;
    assert!(!m.subscribed);
    let events = m
        .events
        .into_iter()
        .map(|e| {
            let Some(stored_object::Object::Config(c)) = e.object.and_then(|o| o.object) else {
                panic!("a config event");
            };
            (
                WatchAction::try_from(e.action).unwrap(),
                name(&c),
                e.old_object.is_some(),
            )
        })
        .collect();
    (m.version, events)
}

/// Opens a watch; returns the stream and the version it starts at.
async fn watch(channel: Channel, request: WatchRequest) -> (Streaming<WatchMessage>, u64) {
    let mut stream = WatchClient::new(channel)
        .watch(request)
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut stream).await;
    assert!(first.subscribed && first.events.is_empty(), "{first:?}");
    (stream, first.version)
}

async fn create(control: &mut ControlClient<Channel>, name: &str) -> String {
    control
        .create_config(CreateConfigRequest {
            spec: Some(support::config_spec(name)),
        })
        .await
        .expect("create config")
        .into_inner()
        .config
        .unwrap()
        .meta
        .unwrap()
        .id
}

async fn label(control: &mut ControlClient<Channel>, id: &str) {
    let config = control
        .get_config(GetConfigRequest {
            config_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let mut spec = config.spec.clone().unwrap();
    spec.annotations = Some(Annotations {
        labels: vec![Label {
            key: "tier".into(),
            value: "front".into(),
        }],
        ..spec.annotations.unwrap()
    });
    control
        .update_config(UpdateConfigRequest {
            config_id: id.into(),
            config_version: config.meta.unwrap().version,
            spec: Some(spec),
        })
        .await
        .expect("update config");
}

async fn remove(control: &mut ControlClient<Channel>, id: &str) {
    control
        .remove_config(RemoveConfigRequest {
            config_id: id.into(),
        })
        .await
        .expect("remove config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_in_order_and_resumes_exactly_where_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let socket = m1.state_dir.join("control.sock");
    let channel = support::local_channel(&socket).await;
    let mut control = ControlClient::new(channel.clone());

    let (mut stream, start) = watch(channel.clone(), configs(0)).await;
    let alpha = create(&mut control, "alpha").await;
    label(&mut control, &alpha).await;
    remove(&mut control, &alpha).await;
    let (v1, e1) = next_events(&mut stream).await;
    let (v2, e2) = next_events(&mut stream).await;
    let (v3, e3) = next_events(&mut stream).await;
    assert_eq!(e1, [(WatchAction::Create, "alpha".to_string(), false)]);
    assert_eq!(e2, [(WatchAction::Update, "alpha".to_string(), true)]);
    assert_eq!(e3, [(WatchAction::Remove, "alpha".to_string(), false)]);
    assert!(start < v1 && v1 < v2 && v2 < v3, "{start} {v1} {v2} {v3}");

    // Disconnect, change more, resume from the last version seen: exactly the missed changes.
    drop(stream);
    let beta = create(&mut control, "beta").await;
    create(&mut control, "gamma").await;
    remove(&mut control, &beta).await;
    let (mut resumed, from) = watch(channel.clone(), configs(v3)).await;
    assert_eq!(from, v3);
    let mut missed = Vec::new();
    let mut last = v3;
    for _ in 0..3 {
        let (v, events) = next_events(&mut resumed).await;
        assert!(v > last, "versions grow: {last} then {v}");
        last = v;
        missed.extend(events);
    }
    assert_eq!(
        missed,
        [
            (WatchAction::Create, "beta".to_string(), false),
            (WatchAction::Create, "gamma".to_string(), false),
            (WatchAction::Remove, "beta".to_string(), false),
        ]
    );
    // Then live changes, and nothing twice.
    create(&mut control, "delta").await;
    let (v, events) = next_events(&mut resumed).await;
    assert!(v > last);
    assert_eq!(events, [(WatchAction::Create, "delta".to_string(), false)]);

    // A version this manager has not reached is refused, saying why.
    let e = WatchClient::new(channel)
        .watch(configs(v + 1_000_000))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    // An open watch does not hold up the daemon's shutdown: it ends, naming where to resume.
    let mut m1 = m1;
    assert_eq!(
        m1.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        m1.logs()
    );
    let end = tokio::time::timeout(Duration::from_secs(5), resumed.message())
        .await
        .expect("the stream ends");
    let e = end.expect_err("ended with an error");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains(&format!("resume from version {v}")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_what_it_applied_at_the_leaders_versions() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = support::init_manager(dir.path(), "m1").await;
    let m2 = support::join_manager(dir.path(), "m2", &m1.addr).await;
    let leader = support::local_channel(&m1.state_dir.join("control.sock")).await;
    let mut control = ControlClient::new(leader.clone());
    // The follower's remote API, over mutual TLS with a manager's certificate.
    let follower = support::dialer(&m2.addr)
        .expect("m2's certificates")
        .connect(&m2.addr)
        .await
        .expect("connect to m2");

    let (mut on_leader, _) = watch(leader, configs(0)).await;
    let (mut on_follower, _) = watch(follower.clone(), configs(0)).await;
    let id = create(&mut control, "shared").await;
    let (v, events) = next_events(&mut on_leader).await;
    assert_eq!(events, [(WatchAction::Create, "shared".to_string(), false)]);
    assert_eq!(next_events(&mut on_follower).await, (v, events.clone()));

    // A version seen on the leader resumes on the follower.
    remove(&mut control, &id).await;
    let (v2, _) = next_events(&mut on_leader).await;
    let (mut resumed, _) = support::eventually(
        "the follower to resume from the leader's version",
        Duration::from_secs(10),
        async || {
            let s = WatchClient::new(follower.clone())
                .watch(configs(v))
                .await
                .ok()?
                .into_inner();
            Some((s, ()))
        },
    )
    .await;
    let first = next(&mut resumed).await;
    assert_eq!((first.subscribed, first.version), (true, v));
    assert_eq!(
        next_events(&mut resumed).await,
        (v2, vec![(WatchAction::Remove, "shared".to_string(), false)])
    );
}
