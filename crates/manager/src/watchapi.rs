//! The Watch API: a stream of committed object changes, filtered by kind, action and
//! selectors, resumable from a store version.
//!
//! A client sends a [`WatchRequest`]: a list of entries (an event matches if it matches any
//! entry; no entry matches every change), each naming a kind of object, the actions it wants
//! (a bitmask of create / update / remove; 0 means all) and selectors that must all match (ID,
//! ID prefix, name, name prefix, service, node, slot, desired state, role, referenced secret /
//! config / network). A selector that does not apply to the entry's kind (a slot for a node)
//! matches nothing. Names are compared without regard to case, as the store's name index
//! does; a task's name is its display name (`<service>.<slot>.<id>` unless set). Service IDs,
//! node IDs, slots and desired states select tasks; roles select nodes (by their observed
//! role, as SwarmKit does); referenced secrets and configs select tasks and services whose
//! task spec uses them, referenced networks tasks attached to them and services whose task
//! spec names them.
//!
//! The stream's first message carries no events and `subscribed` set: its `version` is where
//! the stream starts. Then comes one message per committed transaction that has matching
//! events, in commit order, carrying that transaction's store version; updates carry the old
//! object too when `include_old_object` is set.
//!
//! Invariants:
//! - **Order**: messages come in commit (store version) order, and a transaction's matching
//!   events all come in one message, in the order the store applied them.
//! - **No gap, no duplicate**: a stream started at version V delivers every matching change
//!   committed after V exactly once. `resume_from = V` replays the commits after V from the
//!   store's history and continues live; the replay is taken and the live subscription
//!   opened under one read lock of the store, and commits are published under its write lock,
//!   so nothing falls between the two and nothing is seen twice. A client that resumes from
//!   the version of the last message it received gets exactly what it missed.
//! - **No silent loss**: a stream that falls behind the store's watch ring (its reader is too
//!   slow) ends with RESOURCE_EXHAUSTED naming the version to resume from; a store replaced
//!   from a snapshot ends every stream with ABORTED (list again and watch anew); a manager
//!   shutting down ends its streams with UNAVAILABLE naming the version to resume from.
//! - **Secrets** never carry their data (`spec.data` is emptied) and internal secrets (the
//!   system's own) are not shown at all; clusters never carry the CA's private keys.
//!
//! **History bounds.** Resuming relies on the store's bounded history of recent commits
//! (`shoal_store::HistoryLimits`): by default the last 10,000 commits and at most 50,000
//! events. A `resume_from` older than the history, or from before the store was restored
//! from a snapshot (a follower catching up by snapshot, a restart from one: the history
//! starts over at the snapshot's version), is refused with OUT_OF_RANGE: the client lists the
//! objects again and watches anew (`resume_from = 0`), from the version that watch's first
//! message names. A `resume_from` ahead of this manager's store is refused with
//! FAILED_PRECONDITION (a follower that has not applied that far yet: retry, or watch the
//! manager that gave that version).
//!
//! **Followers.** The Watch service is served by every manager from its own store, with no
//! forwarding and no read barrier: a follower's store is a replica, so a follower streams
//! what it has applied, which may trail the leader by the replication delay. Store versions
//! are the same on every manager (each applies the same transactions in the same order, and
//! refuses the same ones), so a version seen on one manager can be resumed on another as long
//! as that one's history holds it.
//!
//! **Departures from SwarmKit.** SwarmKit resumes a watch from a version by reading the Raft
//! log (its store version is the Raft index) held in memory since the last snapshot. Here the
//! store keeps its own bounded history of decoded commits instead: store versions are not
//! Raft indexes (membership entries and refused transactions advance the log but not the
//! store), our log lives on disk and is compacted at snapshots, and replaying decoded
//! commits costs no decoding and no disk read, and works the same on a store with no Raft at
//! all. The history's reach is therefore set by its own bounds rather than by the snapshot
//! interval. SwarmKit has no first `subscribed` message; we add it so a client that starts
//! watching knows the version to resume from before any change arrives. Progress messages
//! for commits that match nothing are not sent: a very selective watch that stays idle
//! longer than the history reaches may have to list again when it resumes.

use std::pin::Pin;

use futures_util::Stream;
use shoal_api::v1::watch_server::Watch;
use shoal_api::v1::{
    NodeRole, ObjectKind, Secret, SelectBy, Service, StoredObject, Task, TaskState, WatchAction,
    WatchEntry, WatchEvent, WatchMessage, WatchRequest, select_by, stored_object, task_spec,
};
use shoal_store::{Action, Event, Filter, Object, ResumeError, Store, Subscription, WatchError};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::cluster::redacted;

/// The stream of a watch: a first `subscribed` message, then one message per commit.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMessage, Status>> + Send>>;

/// The Watch service of one manager, over its local store.
#[derive(Clone)]
pub struct WatchApi {
    store: Store,
    stopping: Option<watch::Receiver<bool>>,
}

impl WatchApi {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            stopping: None,
        }
    }

    /// Ends every stream once `stopping` turns true (or its sender goes away), so that a
    /// server's graceful shutdown does not wait for watches that never end.
    pub fn stop_on(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// Checks `request` and opens its stream.
    pub fn subscribe(&self, request: WatchRequest) -> Result<WatchStream, Status> {
        let entries = request
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Entry::parse(e).map_err(|m| Status::invalid_argument(format!("entries[{i}]: {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter =
            Filter::all().predicate(move |event| visible(event) && matches(&entries, event));
        let (version, subscription) = if request.resume_from == 0 {
            self.store.view_and_watch(filter, |tx| tx.version())
        } else {
            let sub = self
                .store
                .watch_from(request.resume_from, filter)
                .map_err(resume_refused)?;
            (request.resume_from, sub)
        };
        let pump = Pump {
            subscription,
            stopping: self.stopping.clone(),
            include_old: request.include_old_object,
            version,
            started: false,
            ended: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(pump, Pump::step)))
    }
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.subscribe(request.into_inner()).map(Response::new)
    }
}

fn resume_refused(e: ResumeError) -> Status {
    match e {
        ResumeError::TooOld { requested, oldest } => Status::out_of_range(format!(
            "cannot resume from version {requested}: this manager's watch history reaches back \
             to version {oldest} only (it keeps a bounded number of recent changes, and starts \
             over when its store is restored from a snapshot); list the objects again and watch \
             anew without resume_from, then resume from the versions that watch sends"
        )),
        ResumeError::Future { requested, current } => Status::failed_precondition(format!(
            "cannot resume from version {requested}: this manager's store is at version \
             {current} (a follower still catching up?); retry later, or watch the manager that \
             sent that version"
        )),
    }
}

/// Drives one stream: the `subscribed` message, then a message per matching commit.
struct Pump {
    subscription: Subscription,
    stopping: Option<watch::Receiver<bool>>,
    include_old: bool,
    /// The version of the last message sent: where the client resumes from.
    version: u64,
    started: bool,
    ended: bool,
}

impl Pump {
    async fn step(mut self) -> Option<(Result<WatchMessage, Status>, Pump)> {
        if self.ended {
            return None;
        }
        if !self.started {
            self.started = true;
            let first = WatchMessage {
                events: Vec::new(),
                version: self.version,
                subscribed: true,
            };
            return Some((Ok(first), self));
        }
        let next = match self.stopping.as_mut() {
            Some(stopping) => {
                let stopped = async {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                tokio::select! {
                    next = self.subscription.next_commit() => Some(next),
                    () = stopped => None,
                }
            }
            None => Some(self.subscription.next_commit().await),
        };
        let message = match next {
            Some(Ok((version, events))) => {
                self.version = version;
                Ok(WatchMessage {
                    events: events
                        .iter()
                        .map(|e| watch_event(e, self.include_old))
                        .collect(),
                    version,
                    subscribed: false,
                })
            }
            Some(Err(e)) => {
                self.ended = true;
                Err(ended(e, self.version))
            }
            None => {
                self.ended = true;
                Err(Status::unavailable(format!(
                    "the manager is shutting down; resume from version {} on another manager",
                    self.version
                )))
            }
        };
        Some((message, self))
    }
}

/// The status a stream ends with when its subscription ends, `version` being the last one
/// the client received.
fn ended(e: WatchError, version: u64) -> Status {
    match e {
        WatchError::Lagged => Status::resource_exhausted(format!(
            "this watch fell behind the manager's changes (its reader was too slow) and missed \
             some; resume from version {version}, the version of the last message received"
        )),
        WatchError::Reset => Status::aborted(
            "the manager's store was replaced from a snapshot; list the objects again and \
             watch anew",
        ),
        WatchError::Closed => Status::unavailable(format!(
            "the manager's store closed; resume from version {version} on another manager"
        )),
    }
}

/// Whether users may see the object of `event` at all: internal secrets are the system's.
fn visible(event: &Event) -> bool {
    !matches!(&event.object, Object::Secret(s) if s.internal)
}

/// A secret as users see it: without its data.
pub fn redact_secret(secret: &Secret) -> Secret {
    let mut s = secret.clone();
    if let Some(spec) = s.spec.as_mut() {
        spec.data = Vec::new();
    }
    s
}

/// An object as a watch message carries it: secrets without data, clusters without keys.
fn stored(object: &Object) -> StoredObject {
    let o = match object {
        Object::Node(n) => stored_object::Object::Node((**n).clone()),
        Object::Service(s) => stored_object::Object::Service((**s).clone()),
        Object::Task(t) => stored_object::Object::Task((**t).clone()),
        Object::Network(n) => stored_object::Object::Network((**n).clone()),
        Object::Cluster(c) => stored_object::Object::Cluster(redacted(c)),
        Object::Secret(s) => stored_object::Object::Secret(redact_secret(s)),
        Object::Config(c) => stored_object::Object::Config((**c).clone()),
    };
    StoredObject { object: Some(o) }
}

fn watch_action(action: Action) -> WatchAction {
    match action {
        Action::Create => WatchAction::Create,
        Action::Update => WatchAction::Update,
        Action::Remove => WatchAction::Remove,
    }
}

fn watch_event(event: &Event, include_old: bool) -> WatchEvent {
    WatchEvent {
        action: watch_action(event.action) as i32,
        object: Some(stored(&event.object)),
        old_object: if include_old {
            event.old.as_ref().map(stored)
        } else {
            None
        },
    }
}

/// Every action bit a request may set.
const ALL_ACTIONS: u32 =
    WatchAction::Create as u32 | WatchAction::Update as u32 | WatchAction::Remove as u32;

/// One checked entry of a request.
#[derive(Debug)]
struct Entry {
    kind: ObjectKind,
    /// Bitmask of [`WatchAction`]s; never 0 (0 in the request means all).
    actions: u32,
    selectors: Vec<Selector>,
}

/// One checked selector. Names and name prefixes are kept lower-cased.
#[derive(Debug)]
enum Selector {
    Id(String),
    IdPrefix(String),
    Name(String),
    NamePrefix(String),
    ServiceId(String),
    NodeId(String),
    Slot(u64),
    DesiredState(i32),
    Role(i32),
    Secret(String),
    Config(String),
    Network(String),
}

impl Entry {
    fn parse(entry: &WatchEntry) -> Result<Entry, String> {
        let kind = match ObjectKind::try_from(entry.kind) {
            Ok(ObjectKind::Unknown) => return Err("kind: name the kind of object to watch".into()),
            Ok(kind) => kind,
            Err(_) => return Err(format!("kind: unknown object kind {}", entry.kind)),
        };
        if entry.actions & !ALL_ACTIONS != 0 {
            return Err(format!(
                "actions: {:#x} has bits other than create (1), update (2) and remove (4)",
                entry.actions
            ));
        }
        let actions = if entry.actions == 0 {
            ALL_ACTIONS
        } else {
            entry.actions
        };
        let selectors = entry
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| Selector::parse(f).map_err(|m| format!("filters[{i}]: {m}")))
            .collect::<Result<_, _>>()?;
        Ok(Entry {
            kind,
            actions,
            selectors,
        })
    }

    fn matches(&self, event: &Event) -> bool {
        event.object.kind() == self.kind
            && self.actions & watch_action(event.action) as u32 != 0
            && self.selectors.iter().all(|s| s.matches(&event.object))
    }
}

impl Selector {
    fn parse(select: &SelectBy) -> Result<Selector, String> {
        use select_by::By;
        Ok(match select.by.as_ref() {
            None => return Err("empty selector: set one of its fields".into()),
            Some(By::Id(id)) => Selector::Id(id.clone()),
            Some(By::IdPrefix(p)) => Selector::IdPrefix(p.clone()),
            Some(By::Name(n)) => Selector::Name(n.to_lowercase()),
            Some(By::NamePrefix(p)) => Selector::NamePrefix(p.to_lowercase()),
            Some(By::ServiceId(id)) => Selector::ServiceId(id.clone()),
            Some(By::NodeId(id)) => Selector::NodeId(id.clone()),
            Some(By::Slot(slot)) => Selector::Slot(*slot),
            Some(By::DesiredState(s)) => {
                TaskState::try_from(*s)
                    .map_err(|_| format!("desired_state: unknown task state {s}"))?;
                Selector::DesiredState(*s)
            }
            Some(By::Role(r)) => {
                NodeRole::try_from(*r).map_err(|_| format!("role: unknown node role {r}"))?;
                Selector::Role(*r)
            }
            Some(By::ReferencedSecretId(id)) => Selector::Secret(id.clone()),
            Some(By::ReferencedConfigId(id)) => Selector::Config(id.clone()),
            Some(By::ReferencedNetworkId(id)) => Selector::Network(id.clone()),
        })
    }

    fn matches(&self, object: &Object) -> bool {
        match self {
            Selector::Id(id) => object.id() == id,
            Selector::IdPrefix(p) => object.id().starts_with(p.as_str()),
            Selector::Name(n) => object.name().to_lowercase() == *n,
            Selector::NamePrefix(p) => object.name().to_lowercase().starts_with(p.as_str()),
            Selector::ServiceId(id) => task(object).is_some_and(|t| t.service_id == *id),
            Selector::NodeId(id) => task(object).is_some_and(|t| t.node_id == *id),
            Selector::Slot(slot) => task(object).is_some_and(|t| t.slot == *slot),
            Selector::DesiredState(s) => task(object).is_some_and(|t| t.desired_state == *s),
            Selector::Role(r) => matches!(object, Object::Node(n) if n.role == *r),
            Selector::Secret(id) => runtime_of(object).is_some_and(|r| match r {
                task_spec::Runtime::Container(c) => c.secrets.iter().any(|s| s.secret_id == *id),
                task_spec::Runtime::Process(p) => p.secrets.iter().any(|s| s.secret_id == *id),
            }),
            Selector::Config(id) => runtime_of(object).is_some_and(|r| match r {
                task_spec::Runtime::Container(c) => c.configs.iter().any(|s| s.config_id == *id),
                task_spec::Runtime::Process(p) => p.configs.iter().any(|s| s.config_id == *id),
            }),
            Selector::Network(id) => match object {
                Object::Task(t) => t.networks.iter().any(|n| n.network_id == *id),
                Object::Service(s) => service_networks(s).any(|n| n == id),
                _ => false,
            },
        }
    }
}

fn task(object: &Object) -> Option<&Task> {
    match object {
        Object::Task(t) => Some(t),
        _ => None,
    }
}

/// The runtime of a task's spec, or of a service's task spec.
fn runtime_of(object: &Object) -> Option<&task_spec::Runtime> {
    match object {
        Object::Task(t) => t.spec.as_ref().and_then(|s| s.runtime.as_ref()),
        Object::Service(s) => s
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.runtime.as_ref()),
        _ => None,
    }
}

fn service_networks(service: &Service) -> impl Iterator<Item = &String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .into_iter()
        .flat_map(|t| t.networks.iter().map(|n| &n.target))
}

/// Whether `event` matches any of `entries` (no entry: every event).
fn matches(entries: &[Entry], event: &Event) -> bool {
    entries.is_empty() || entries.iter().any(|e| e.matches(event))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use shoal_api::clock::SystemClock;
    use shoal_api::v1::{
        Annotations, Cluster, Config, ConfigReference, ConfigSpec, ContainerSpec, Meta,
        NetworkAttachment, NetworkAttachmentConfig, Node, RootCa, SecretReference, SecretSpec,
        ServiceSpec, TaskSpec, TaskSpecFields,
    };
    use shoal_store::{HistoryLimits, LocalProposer, Reader, StateMachine};

    use super::*;

    fn meta(id: &str) -> Option<Meta> {
        Some(Meta {
            id: id.into(),
            ..Default::default()
        })
    }

    fn annotations(name: &str) -> Option<Annotations> {
        Some(Annotations {
            name: name.into(),
            ..Default::default()
        })
    }

    fn spec_using(secret: &str, config: &str, network: &str) -> TaskSpec {
        TaskSpec::from(TaskSpecFields {
            runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                secrets: vec![SecretReference {
                    secret_id: secret.into(),
                    ..Default::default()
                }],
                configs: vec![ConfigReference {
                    config_id: config.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }))),
            networks: vec![NetworkAttachmentConfig {
                target: network.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn a_task() -> Object {
        Object::Task(Arc::new(Task {
            meta: meta("task00001"),
            service_id: "svc1".into(),
            node_id: "node1".into(),
            slot: 3,
            desired_state: TaskState::Running as i32,
            annotations: annotations("Web.3").map(Box::new),
            spec: Some(spec_using("sec1", "cfg1", "net1")),
            networks: vec![NetworkAttachment {
                network_id: "net1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }))
    }

    fn a_service() -> Object {
        Object::Service(Arc::new(Service {
            meta: meta("svc1"),
            spec: Some(ServiceSpec {
                annotations: annotations("web"),
                task: Some(spec_using("sec1", "cfg1", "net1")),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    fn a_node() -> Object {
        Object::Node(Arc::new(Node {
            meta: meta("node1"),
            role: NodeRole::Manager as i32,
            ..Default::default()
        }))
    }

    fn event(action: Action, object: Object) -> Event {
        Event {
            action,
            object,
            old: None,
        }
    }

    fn entry(kind: ObjectKind, actions: u32, by: Vec<select_by::By>) -> WatchEntry {
        WatchEntry {
            kind: kind as i32,
            actions,
            filters: by.into_iter().map(|b| SelectBy { by: Some(b) }).collect(),
        }
    }

    fn select(kind: ObjectKind, by: select_by::By, object: &Object) -> bool {
        let e = Entry::parse(&entry(kind, 0, vec![by])).unwrap();
        e.matches(&event(Action::Create, object.clone()))
    }

    #[test]
    fn each_selector_matches_what_it_names_and_nothing_else() {
        use select_by::By;
        let (task, service, node) = (a_task(), a_service(), a_node());
        let t = ObjectKind::Task;
        assert!(select(t, By::Id("task00001".into()), &task));
        assert!(!select(t, By::Id("task0000".into()), &task));
        assert!(select(t, By::IdPrefix("task0".into()), &task));
        assert!(!select(t, By::IdPrefix("x".into()), &task));
        assert!(
            select(t, By::Name("web.3".into()), &task),
            "names ignore case"
        );
        assert!(select(t, By::NamePrefix("WEB".into()), &task));
        assert!(!select(t, By::Name("web".into()), &task));
        assert!(select(t, By::ServiceId("svc1".into()), &task));
        assert!(!select(t, By::ServiceId("svc2".into()), &task));
        assert!(select(t, By::NodeId("node1".into()), &task));
        assert!(!select(t, By::NodeId("node2".into()), &task));
        assert!(select(t, By::Slot(3), &task));
        assert!(!select(t, By::Slot(4), &task));
        assert!(select(
            t,
            By::DesiredState(TaskState::Running as i32),
            &task
        ));
        assert!(!select(
            t,
            By::DesiredState(TaskState::Shutdown as i32),
            &task
        ));
        assert!(select(t, By::ReferencedSecretId("sec1".into()), &task));
        assert!(!select(t, By::ReferencedSecretId("sec2".into()), &task));
        assert!(select(t, By::ReferencedConfigId("cfg1".into()), &task));
        assert!(!select(t, By::ReferencedConfigId("cfg2".into()), &task));
        assert!(select(t, By::ReferencedNetworkId("net1".into()), &task));
        assert!(!select(t, By::ReferencedNetworkId("net2".into()), &task));
        assert!(!select(t, By::Role(NodeRole::Manager as i32), &task));

        let s = ObjectKind::Service;
        assert!(select(s, By::Name("WEB".into()), &service));
        assert!(select(s, By::ReferencedSecretId("sec1".into()), &service));
        assert!(select(s, By::ReferencedConfigId("cfg1".into()), &service));
        assert!(select(s, By::ReferencedNetworkId("net1".into()), &service));
        assert!(!select(s, By::ReferencedNetworkId("net2".into()), &service));
        // Selectors of tasks do not apply to services: they match nothing.
        assert!(!select(s, By::ServiceId("svc1".into()), &service));
        assert!(!select(s, By::Slot(0), &service));
        assert!(!select(s, By::DesiredState(0), &service));

        let n = ObjectKind::Node;
        assert!(select(n, By::Role(NodeRole::Manager as i32), &node));
        assert!(!select(n, By::Role(NodeRole::Worker as i32), &node));
        assert!(!select(n, By::NodeId("node1".into()), &node));
        assert!(!select(n, By::ReferencedNetworkId("net1".into()), &node));
        // An entry for another kind matches nothing.
        assert!(!select(s, By::Id("task00001".into()), &task));
    }

    #[test]
    fn entries_are_ored_their_selectors_anded_and_actions_masked() {
        use select_by::By;
        let entries = vec![
            Entry::parse(&entry(
                ObjectKind::Task,
                WatchAction::Update as u32 | WatchAction::Remove as u32,
                vec![By::ServiceId("svc1".into()), By::Slot(3)],
            ))
            .unwrap(),
            Entry::parse(&entry(ObjectKind::Node, 0, vec![])).unwrap(),
        ];
        assert!(!matches(&entries, &event(Action::Create, a_task())));
        assert!(matches(&entries, &event(Action::Update, a_task())));
        assert!(matches(&entries, &event(Action::Remove, a_task())));
        for action in [Action::Create, Action::Update, Action::Remove] {
            assert!(matches(&entries, &event(action, a_node())));
            assert!(!matches(&entries, &event(action, a_service())));
        }
        let slot4 = Entry::parse(&entry(
            ObjectKind::Task,
            0,
            vec![By::ServiceId("svc1".into()), By::Slot(4)],
        ))
        .unwrap();
        assert!(!slot4.matches(&event(Action::Update, a_task())));
        assert!(matches(&[], &event(Action::Create, a_service())));
    }

    #[test]
    fn bad_entries_are_refused_naming_the_field() {
        let api = WatchApi::new(Store::new());
        let refused = |entries: Vec<WatchEntry>| {
            let e = api
                .subscribe(WatchRequest {
                    entries,
                    ..Default::default()
                })
                .err()
                .expect("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            e.message().to_string()
        };
        assert!(refused(vec![entry(ObjectKind::Unknown, 0, vec![])]).contains("entries[0]: kind"));
        assert!(refused(vec![entry(ObjectKind::Task, 8, vec![])]).contains("actions"));
        let mut empty = entry(ObjectKind::Task, 0, vec![]);
        empty.filters.push(SelectBy { by: None });
        assert!(refused(vec![empty]).contains("filters[0]"));
        assert!(
            refused(vec![entry(
                ObjectKind::Task,
                0,
                vec![select_by::By::DesiredState(5)]
            )])
            .contains("desired_state")
        );
        assert!(
            refused(vec![entry(
                ObjectKind::Node,
                0,
                vec![select_by::By::Role(7)]
            )])
            .contains("role")
        );
    }

    #[test]
    fn secrets_never_carry_their_data_nor_clusters_their_keys() {
        let secret = Object::Secret(Arc::new(Secret {
            meta: meta("sec1"),
            spec: Some(SecretSpec {
                annotations: annotations("password"),
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
            internal: false,
        }));
        let mut updated = event(Action::Update, secret.clone());
        updated.old = Some(secret.clone());
        let shown = watch_event(&updated, true);
        for o in [shown.object, shown.old_object] {
            let Some(stored_object::Object::Secret(s)) = o.and_then(|o| o.object) else {
                panic!("a secret");
            };
            let spec = s.spec.unwrap();
            assert!(spec.data.is_empty());
            assert_eq!(spec.annotations.unwrap().name, "password");
        }
        let internal = Object::Secret(Arc::new(Secret {
            internal: true,
            ..Secret::default()
        }));
        assert!(!visible(&event(Action::Create, internal)));
        assert!(visible(&event(Action::Create, secret)));

        let cluster = Object::Cluster(Arc::new(Cluster {
            meta: meta("c1"),
            root_ca: Some(RootCa {
                ca_key: b"private".to_vec(),
                ca_cert: b"public".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let Some(stored_object::Object::Cluster(c)) = stored(&cluster).object else {
            panic!("a cluster");
        };
        let root = c.root_ca.unwrap();
        assert!(root.ca_key.is_empty());
        assert_eq!(root.ca_cert, b"public");
    }

    fn config(id: &str, name: &str) -> Config {
        Config {
            meta: meta(id),
            spec: Some(ConfigSpec {
                annotations: annotations(name),
                data: b"x".to_vec(),
                ..Default::default()
            }),
        }
    }

    async fn create(store: &Store, id: &str) {
        store.update(|tx| tx.create(config(id, id))).await.unwrap();
    }

    async fn change(store: &Store, id: &str) {
        store
            .update(|tx| {
                let mut c = (*tx.get::<Config>(id).unwrap()).clone();
                c.spec.as_mut().unwrap().data = b"y".to_vec();
                tx.update(c)
            })
            .await
            .unwrap();
    }

    /// (version, action, id, whether the old object came) of each event of the next message.
    async fn next(stream: &mut WatchStream) -> (u64, Vec<(WatchAction, String, bool)>) {
        let m = stream.next().await.unwrap().unwrap();
        let events = m
            .events
            .into_iter()
            .map(|e| {
                let Some(stored_object::Object::Config(c)) = e.object.unwrap().object else {
                    panic!("a config");
                };
                (
                    WatchAction::try_from(e.action).unwrap(),
                    c.meta.unwrap().id,
                    e.old_object.is_some(),
                )
            })
            .collect();
        (m.version, events)
    }

    fn configs(resume_from: u64, include_old_object: bool) -> WatchRequest {
        WatchRequest {
            entries: vec![entry(ObjectKind::Config, 0, vec![])],
            resume_from,
            include_old_object,
        }
    }

    #[tokio::test]
    async fn a_stream_starts_with_its_version_then_one_message_per_matching_commit() {
        let store = Store::new();
        create(&store, "a").await;
        let api = WatchApi::new(store.clone());
        let mut stream = api.subscribe(configs(0, true)).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.subscribed && first.events.is_empty());
        assert_eq!(first.version, 1);
        change(&store, "a").await;
        store
            .update(|tx| {
                tx.create(shoal_api::v1::Network {
                    meta: meta("n1"),
                    spec: Some(shoal_api::v1::NetworkSpec {
                        annotations: annotations("n1"),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
            .await
            .unwrap();
        store.update(|tx| tx.delete::<Config>("a")).await.unwrap();
        assert_eq!(
            next(&mut stream).await,
            (2, vec![(WatchAction::Update, "a".into(), true)])
        );
        // Version 3 (a network) matches nothing.
        assert_eq!(
            next(&mut stream).await,
            (4, vec![(WatchAction::Remove, "a".into(), false)])
        );
    }

    #[tokio::test]
    async fn resuming_gives_exactly_the_missed_changes_then_live_ones() {
        let store = Store::new();
        let api = WatchApi::new(store.clone());
        for id in ["a", "b", "c"] {
            create(&store, id).await;
        }
        let mut stream = api.subscribe(configs(1, false)).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.subscribed, first.version), (true, 1));
        assert_eq!(
            next(&mut stream).await,
            (2, vec![(WatchAction::Create, "b".into(), false)])
        );
        assert_eq!(
            next(&mut stream).await,
            (3, vec![(WatchAction::Create, "c".into(), false)])
        );
        change(&store, "b").await;
        assert_eq!(
            next(&mut stream).await,
            (4, vec![(WatchAction::Update, "b".into(), false)])
        );

        // From the current version: only what comes next.
        let mut now = api.subscribe(configs(4, false)).unwrap();
        assert_eq!(now.next().await.unwrap().unwrap().version, 4);
        create(&store, "d").await;
        assert_eq!(
            next(&mut now).await,
            (5, vec![(WatchAction::Create, "d".into(), false)])
        );

        // Ahead of the store: refused.
        let e = api.subscribe(configs(9, false)).err().unwrap();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    }

    #[tokio::test]
    async fn a_version_older_than_the_history_is_refused_telling_what_to_do() {
        let state = StateMachine::with_history(
            64,
            HistoryLimits {
                commits: 2,
                events: 100,
            },
        );
        let store = Store::with_state(
            Arc::new(state),
            Arc::new(LocalProposer),
            Arc::new(SystemClock),
        );
        for id in ["a", "b", "c", "d"] {
            create(&store, id).await;
        }
        let api = WatchApi::new(store.clone());
        let e = api.subscribe(configs(1, false)).err().unwrap();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("list the objects again"), "{e:?}");
        let mut stream = api.subscribe(configs(2, false)).unwrap();
        stream.next().await.unwrap().unwrap();
        assert_eq!(next(&mut stream).await.0, 3);
        assert_eq!(next(&mut stream).await.0, 4);
    }

    #[tokio::test]
    async fn a_reader_that_lags_past_the_ring_gets_an_error_naming_where_to_resume() {
        let store = Store::with(Arc::new(LocalProposer), Arc::new(SystemClock), 4);
        let api = WatchApi::new(store.clone());
        let mut stream = api.subscribe(configs(0, false)).unwrap();
        stream.next().await.unwrap().unwrap();
        create(&store, "a").await;
        assert_eq!(next(&mut stream).await.0, 1);
        for i in 0..10 {
            create(&store, &format!("x{i}")).await;
        }
        let e = stream.next().await.unwrap().expect_err("lagged");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("resume from version 1"), "{e:?}");
        assert!(stream.next().await.is_none(), "the stream ends");
        // Resuming from there gives exactly what was missed.
        let mut resumed = api.subscribe(configs(1, false)).unwrap();
        resumed.next().await.unwrap().unwrap();
        for v in 2..=11 {
            assert_eq!(next(&mut resumed).await.0, v);
        }
    }

    #[tokio::test]
    async fn streams_end_when_the_manager_stops() {
        let store = Store::new();
        let (stop, stopping) = watch::channel(false);
        let api = WatchApi::new(store.clone()).stop_on(stopping);
        let mut stream = api.subscribe(configs(0, false)).unwrap();
        stream.next().await.unwrap().unwrap();
        create(&store, "a").await;
        assert_eq!(next(&mut stream).await.0, 1);
        stop.send(true).unwrap();
        let e = stream.next().await.unwrap().err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("resume from version 1"), "{e:?}");
        assert!(stream.next().await.is_none());
    }
}
