//! Golden-script tests of the store: each file in `testscripts/` is one test.
//!
//! Commands (KIND is node, service, task, network, cluster, secret or config):
//!
//! - `create KIND ID [field=value]...` creates an object in its own transaction.
//! - `update KIND ID [version=V] [field=value]...` reads the object, changes the fields and
//!   writes it back; `version=` overrides the version the update claims to have read.
//! - `delete KIND ID [version=V]`
//! - `get KIND ID`, `find KIND [BY=VALUE]`, `lookup KIND REFERENCE`
//! - `begin` ... `commit`: the commands in between run in one write transaction when
//!   `commit` runs; `abort` drops them.
//! - `batch KIND COUNT [prefix=P]`: creates COUNT objects through a batch.
//! - `watch NAME [kind=K]... [action=A]... [service=S]` and `events NAME`.
//! - `count KIND [BY=VALUE]`, `snapshot`, `restore`, `dump`, `version`, `tick SECONDS`.
//!
//! Fields: `name`, `labels` (`k:v,k:v`); node `role`, `membership`, `availability`; service
//! `replicas`, `mode`, `network`; task `service`, `service_name`, `slot`, `node`, `desired`,
//! `state`, `secret`, `config`, `network`; secret and config `data`.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use shoal_api::clock::ManualClock;
use shoal_api::v1::{
    self, Annotations, Cluster, ClusterSpec, Config, ConfigSpec, Meta, Network, NetworkSpec, Node,
    NodeRole, NodeSpec, ObjectKind, Secret, SecretSpec, Service, ServiceSpec, Task, TaskSpec,
    TaskState, TaskStatus, node_spec, service_spec,
};

use crate::{
    Action, By, Filter, LocalProposer, Object, Reader, Store, StoreObject, Subscription, WriteTx,
};

type Res<T = String> = Result<T, Box<dyn Error>>;

struct Runner {
    store: Store,
    clock: Arc<ManualClock>,
    runtime: tokio::runtime::Runtime,
    txn: Option<Vec<goldenscript::Command>>,
    watches: BTreeMap<String, Subscription>,
    snapshot: Option<v1::StoreSnapshot>,
}

impl Runner {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::at_unix_seconds(1_000));
        let store = Store::with(Arc::new(LocalProposer), clock.clone(), 16);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        Self {
            store,
            clock,
            runtime,
            txn: None,
            watches: BTreeMap::new(),
            snapshot: None,
        }
    }
}

fn parse_kind(s: &str) -> Res<ObjectKind> {
    Ok(match s {
        "node" => ObjectKind::Node,
        "service" => ObjectKind::Service,
        "task" => ObjectKind::Task,
        "network" => ObjectKind::Network,
        "cluster" => ObjectKind::Cluster,
        "secret" => ObjectKind::Secret,
        "config" => ObjectKind::Config,
        other => return Err(format!("unknown kind {other}").into()),
    })
}

fn parse_state(s: &str) -> Res<TaskState> {
    TaskState::from_str_name(&format!("TASK_STATE_{}", s.to_uppercase()))
        .ok_or_else(|| format!("unknown task state {s}").into())
}

fn state_name(v: i32) -> &'static str {
    TaskState::try_from(v)
        .map(shoal_api::task_state::name)
        .unwrap_or("?")
}

fn annotations(a: &mut Option<Annotations>) -> &mut Annotations {
    a.get_or_insert_with(Annotations::default)
}

fn set_labels(a: &mut Annotations, value: &str) {
    a.labels = shoal_api::labels::labels(value.split(',').filter(|kv| !kv.is_empty()).map(|kv| {
        let (k, v) = kv.split_once(':').unwrap_or((kv, ""));
        (k.to_string(), v.to_string())
    }));
}

/// Applies `field=value` settings to an object of any kind.
fn set_fields(object: &mut Object, fields: &[(String, String)]) -> Res<()> {
    for (key, value) in fields {
        let value = value.as_str();
        match object {
            Object::Node(n) => {
                let n = Arc::make_mut(n);
                let spec = n.spec.get_or_insert_with(NodeSpec::default);
                match key.as_str() {
                    "name" => annotations(&mut spec.annotations).name = value.into(),
                    "labels" => set_labels(annotations(&mut spec.annotations), value),
                    "hostname" => {
                        n.description.get_or_insert_with(Default::default).hostname = value.into()
                    }
                    "role" => {
                        spec.desired_role = match value {
                            "manager" => NodeRole::Manager,
                            _ => NodeRole::Worker,
                        } as i32
                    }
                    "membership" => {
                        spec.membership = match value {
                            "accepted" => node_spec::Membership::Accepted,
                            _ => node_spec::Membership::Pending,
                        } as i32
                    }
                    "availability" => {
                        spec.availability =
                            node_spec::Availability::from_str_name(&value.to_uppercase())
                                .ok_or("unknown availability")? as i32
                    }
                    k => return Err(format!("unknown node field {k}").into()),
                }
            }
            Object::Service(s) => {
                let s = Arc::make_mut(s);
                let spec = s.spec.get_or_insert_with(ServiceSpec::default);
                match key.as_str() {
                    "name" => annotations(&mut spec.annotations).name = value.into(),
                    "labels" => set_labels(annotations(&mut spec.annotations), value),
                    "replicas" => {
                        spec.mode = Some(service_spec::Mode::Replicated(v1::ReplicatedService {
                            replicas: value.parse()?,
                        }))
                    }
                    "mode" if value == "global" => {
                        spec.mode = Some(service_spec::Mode::Global(v1::GlobalService {}))
                    }
                    "network" => spec
                        .task
                        .get_or_insert_with(TaskSpec::default)
                        .networks
                        .push(v1::NetworkAttachmentConfig {
                            target: value.into(),
                            ..Default::default()
                        }),
                    k => return Err(format!("unknown service field {k}").into()),
                }
            }
            Object::Task(t) => {
                let t = Arc::make_mut(t);
                match key.as_str() {
                    "name" => {
                        t.annotations.get_or_insert_with(Default::default).name = value.into()
                    }
                    "service" => t.service_id = value.into(),
                    "service_name" => {
                        t.service_annotations
                            .get_or_insert_with(Default::default)
                            .name = value.into()
                    }
                    "slot" => t.slot = value.parse()?,
                    "node" => t.node_id = value.into(),
                    "desired" => t.desired_state = parse_state(value)? as i32,
                    "state" => {
                        t.status.get_or_insert_with(TaskStatus::default).state =
                            parse_state(value)? as i32
                    }
                    "secret" | "config" => {
                        let spec = t.spec.get_or_insert_with(Default::default);
                        let process = match spec
                            .runtime
                            .get_or_insert_with(|| v1::task_spec::Runtime::Process(Box::default()))
                        {
                            v1::task_spec::Runtime::Process(p) => p,
                            _ => return Err("not a process task".into()),
                        };
                        if key == "secret" {
                            process.secrets.push(v1::SecretReference {
                                secret_id: value.into(),
                                ..Default::default()
                            });
                        } else {
                            process.configs.push(v1::ConfigReference {
                                config_id: value.into(),
                                ..Default::default()
                            });
                        }
                    }
                    "network" => t.networks.push(v1::NetworkAttachment {
                        network_id: value.into(),
                        ..Default::default()
                    }),
                    k => return Err(format!("unknown task field {k}").into()),
                }
            }
            Object::Network(o) => {
                let spec = Arc::make_mut(o)
                    .spec
                    .get_or_insert_with(NetworkSpec::default);
                match key.as_str() {
                    "name" => annotations(&mut spec.annotations).name = value.into(),
                    "labels" => set_labels(annotations(&mut spec.annotations), value),
                    k => return Err(format!("unknown network field {k}").into()),
                }
            }
            Object::Cluster(o) => {
                let spec = Arc::make_mut(o)
                    .spec
                    .get_or_insert_with(ClusterSpec::default);
                match key.as_str() {
                    "name" => annotations(&mut spec.annotations).name = value.into(),
                    k => return Err(format!("unknown cluster field {k}").into()),
                }
            }
            Object::Secret(o) => {
                let spec = Arc::make_mut(o)
                    .spec
                    .get_or_insert_with(SecretSpec::default);
                match key.as_str() {
                    "name" => annotations(&mut spec.annotations).name = value.into(),
                    "labels" => set_labels(annotations(&mut spec.annotations), value),
                    "data" => spec.data = value.as_bytes().to_vec(),
                    k => return Err(format!("unknown secret field {k}").into()),
                }
            }
            Object::Config(o) => {
                let spec = Arc::make_mut(o)
                    .spec
                    .get_or_insert_with(ConfigSpec::default);
                match key.as_str() {
                    "name" => annotations(&mut spec.annotations).name = value.into(),
                    "labels" => set_labels(annotations(&mut spec.annotations), value),
                    "data" => spec.data = value.as_bytes().to_vec(),
                    k => return Err(format!("unknown config field {k}").into()),
                }
            }
        }
    }
    Ok(())
}

fn new_object(kind: ObjectKind, id: &str) -> Object {
    let meta = Some(Meta {
        id: id.into(),
        ..Default::default()
    });
    match kind {
        ObjectKind::Node => Object::Node(Arc::new(Node {
            meta,
            ..Default::default()
        })),
        ObjectKind::Service => Object::Service(Arc::new(Service {
            meta,
            ..Default::default()
        })),
        ObjectKind::Task => Object::Task(Arc::new(Task {
            meta,
            ..Default::default()
        })),
        ObjectKind::Network => Object::Network(Arc::new(Network {
            meta,
            ..Default::default()
        })),
        ObjectKind::Cluster => Object::Cluster(Arc::new(Cluster {
            meta,
            ..Default::default()
        })),
        ObjectKind::Secret => Object::Secret(Arc::new(Secret {
            meta,
            ..Default::default()
        })),
        ObjectKind::Config => Object::Config(Arc::new(Config {
            meta,
            ..Default::default()
        })),
        ObjectKind::Unknown => unreachable!(),
    }
}

/// One line describing an object: kind, ID, version, name and the fields tests care about.
fn describe(object: &Object) -> String {
    let mut out = format!(
        "{} {} v{}",
        crate::kind_name(object.kind()),
        object.id(),
        object.version()
    );
    let name = object.name();
    if !name.is_empty() {
        write!(out, " name={name}").unwrap();
    }
    match object {
        Object::Node(n) => {
            let spec = n.spec.clone().unwrap_or_default();
            write!(
                out,
                " role={} membership={} availability={}",
                if spec.desired_role == NodeRole::Manager as i32 {
                    "manager"
                } else {
                    "worker"
                },
                if spec.membership == 1 {
                    "accepted"
                } else {
                    "pending"
                },
                node_spec::Availability::try_from(spec.availability)
                    .map(|a| a.as_str_name().to_lowercase())
                    .unwrap_or_default()
            )
            .unwrap();
        }
        Object::Service(s) => match s.spec.as_ref().and_then(|s| s.mode.as_ref()) {
            Some(service_spec::Mode::Replicated(r)) => {
                write!(out, " replicas={}", r.replicas).unwrap()
            }
            Some(service_spec::Mode::Global(_)) => write!(out, " mode=global").unwrap(),
            _ => {}
        },
        Object::Task(t) => {
            write!(
                out,
                " service={} slot={} node={} desired={} state={}",
                t.service_id,
                t.slot,
                if t.node_id.is_empty() {
                    "-"
                } else {
                    &t.node_id
                },
                state_name(t.desired_state),
                state_name(t.status.as_ref().map(|s| s.state).unwrap_or(0)),
            )
            .unwrap();
        }
        Object::Secret(s) => write!(
            out,
            " data={}B",
            s.spec.as_ref().map(|s| s.data.len()).unwrap_or(0)
        )
        .unwrap(),
        Object::Config(c) => write!(
            out,
            " data={}B",
            c.spec.as_ref().map(|s| s.data.len()).unwrap_or(0)
        )
        .unwrap(),
        Object::Network(_) | Object::Cluster(_) => {}
    }
    let labels = match object {
        Object::Node(n) => n
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| &a.labels),
        Object::Service(s) => s
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| &a.labels),
        _ => None,
    };
    if let Some(labels) = labels.filter(|l| !l.is_empty()) {
        let l: Vec<String> = labels
            .iter()
            .map(|l| format!("{}:{}", l.key, l.value))
            .collect();
        write!(out, " labels={}", l.join(",")).unwrap();
    }
    out
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map(|t| t.seconds).unwrap_or(0)
}

/// Runs `f` with `T` bound to the type of `kind`.
macro_rules! typed {
    ($kind:expr, $T:ident => $body:expr) => {
        match $kind {
            ObjectKind::Node => {
                type $T = Node;
                $body
            }
            ObjectKind::Service => {
                type $T = Service;
                $body
            }
            ObjectKind::Task => {
                type $T = Task;
                $body
            }
            ObjectKind::Network => {
                type $T = Network;
                $body
            }
            ObjectKind::Cluster => {
                type $T = Cluster;
                $body
            }
            ObjectKind::Secret => {
                type $T = Secret;
                $body
            }
            ObjectKind::Config => {
                type $T = Config;
                $body
            }
            ObjectKind::Unknown => unreachable!(),
        }
    };
}

fn parse_by<'a>(key: &str, value: &'a str) -> Res<By<'a>> {
    Ok(match key {
        "id_prefix" => By::IdPrefix(value),
        "name" => By::Name(value),
        "name_prefix" => By::NamePrefix(value),
        "service" => By::Service(value),
        "node" => By::Node(value),
        "slot" => {
            let (service, slot) = value.split_once(':').ok_or("slot=SERVICE:SLOT")?;
            By::Slot(service, slot.parse()?)
        }
        "desired" => By::DesiredState(parse_state(value)?),
        "state" => By::TaskState(parse_state(value)?),
        "role" => By::Role(if value == "manager" {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        }),
        "membership" => By::Membership(if value == "accepted" {
            node_spec::Membership::Accepted
        } else {
            node_spec::Membership::Pending
        }),
        "secret" => By::ReferencedSecret(value),
        "config" => By::ReferencedConfig(value),
        "network" => By::ReferencedNetwork(value),
        k => return Err(format!("unknown query {k}").into()),
    })
}

fn key_values(command: &goldenscript::Command, skip_pos: usize) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    for arg in command.args.iter().skip(skip_pos) {
        match arg {
            goldenscript::Argument::KeyValue(k, v) => out.push((k.clone(), v.clone())),
            other => return Err(format!("expected key=value, got {other}").into()),
        }
    }
    Ok(out)
}

fn pos(command: &goldenscript::Command, i: usize) -> Res<&str> {
    match command.args.get(i) {
        Some(goldenscript::Argument::Positional(v)) => Some(v.as_str()),
        _ => None,
    }
    .ok_or_else(|| format!("{}: argument {} missing", command.name, i + 1).into())
}

/// Runs one object command inside a write transaction.
fn run_in_tx(tx: &mut WriteTx<'_>, command: &goldenscript::Command) -> crate::Result<String> {
    let fail = |e: Box<dyn Error>| crate::StoreError::InvalidTransaction(e.to_string());
    let kind = parse_kind(pos(command, 0).map_err(fail)?).map_err(fail)?;
    match command.name.as_str() {
        "create" => {
            let id = pos(command, 1).map_err(fail)?;
            let mut object = new_object(kind, id);
            set_fields(&mut object, &key_values(command, 2).map_err(fail)?).map_err(fail)?;
            typed!(kind, T => tx.create((**T::from_object(&object).unwrap()).clone()))?;
            Ok(String::new())
        }
        "update" => {
            let id = pos(command, 1).map_err(fail)?;
            let mut fields = key_values(command, 2).map_err(fail)?;
            let version = fields
                .iter()
                .position(|(k, _)| k == "version")
                .map(|i| fields.remove(i).1.parse::<u64>())
                .transpose()
                .map_err(|e| fail(e.into()))?;
            let current =
                typed!(kind, T => tx.get::<T>(id).map(T::into_object)).ok_or_else(|| {
                    crate::StoreError::NotFound {
                        kind: crate::kind_name(kind),
                        what: id.into(),
                    }
                })?;
            let mut object = current.clone();
            set_fields(&mut object, &fields).map_err(fail)?;
            typed!(kind, T => {
                let mut o = (**T::from_object(&object).unwrap()).clone();
                if let Some(v) = version {
                    o.meta_mut().version = v;
                }
                tx.update(o)
            })?;
            Ok(String::new())
        }
        "delete" => {
            let id = pos(command, 1).map_err(fail)?;
            typed!(kind, T => tx.delete::<T>(id))?;
            Ok(String::new())
        }
        "get" => {
            let id = pos(command, 1).map_err(fail)?;
            Ok(
                typed!(kind, T => tx.get::<T>(id).map(|o| describe(&T::into_object(o))))
                    .unwrap_or_else(|| format!("{} {id} not found", crate::kind_name(kind))),
            )
        }
        "find" => {
            let fields = key_values(command, 1).map_err(fail)?;
            let by = match fields.first() {
                Some((k, v)) => parse_by(k, v).map_err(fail)?,
                None => By::All,
            };
            let found = typed!(kind, T => tx.find::<T>(by).into_iter().map(T::into_object).collect::<Vec<_>>());
            Ok(format!("{command}:\n{}", list(found)))
        }
        other => Err(fail(format!("{other} cannot run in a transaction").into())),
    }
}

fn list(mut objects: Vec<Object>) -> String {
    objects.sort_by(|a, b| a.id().cmp(b.id()));
    if objects.is_empty() {
        return "  (none)".into();
    }
    objects
        .iter()
        .map(|o| format!("  {}", describe(o)))
        .collect::<Vec<_>>()
        .join("\n")
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(&mut self, command: &goldenscript::Command, _: &goldenscript::Context) -> Res {
        let name = command.name.as_str();
        if let Some(ops) = &mut self.txn
            && matches!(name, "create" | "update" | "delete" | "get" | "find")
        {
            ops.push(command.clone());
            return Ok(String::new());
        }
        match name {
            "create" | "update" | "delete" => {
                let store = self.store.clone();
                let out = self
                    .runtime
                    .block_on(store.update(|tx| run_in_tx(tx, command)))?;
                Ok(out)
            }
            "get" | "find" => {
                // Reads run in a write transaction that changes nothing: same code path as
                // reads inside transactions, and nothing is committed.
                let store = self.store.clone();
                Ok(self
                    .runtime
                    .block_on(store.update(|tx| run_in_tx(tx, command)))?)
            }
            "lookup" => {
                let kind = parse_kind(pos(command, 0)?)?;
                let reference = pos(command, 1)?;
                let found = self
                    .store
                    .view(|tx| typed!(kind, T => tx.lookup::<T>(reference).map(T::into_object)))?;
                Ok(describe(&found))
            }
            "begin" => {
                self.txn = Some(Vec::new());
                Ok(String::new())
            }
            "abort" => {
                self.txn = None;
                Ok(String::new())
            }
            "commit" => {
                let ops = self.txn.take().ok_or("no transaction begun")?;
                let store = self.store.clone();
                let out = self.runtime.block_on(store.update(|tx| {
                    let mut out = Vec::new();
                    for op in &ops {
                        let o = run_in_tx(tx, op)?;
                        if !o.is_empty() {
                            out.push(o);
                        }
                    }
                    Ok(out.join("\n"))
                }))?;
                Ok(
                    format!("{out}\ncommitted at version {}", self.store.version())
                        .trim_start()
                        .to_string(),
                )
            }
            "batch" => {
                let kind = parse_kind(pos(command, 0)?)?;
                let count: usize = pos(command, 1)?.parse()?;
                let fields = key_values(command, 2)?;
                let prefix = fields
                    .iter()
                    .find(|(k, _)| k == "prefix")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| "b".into());
                let store = self.store.clone();
                let before = store.version();
                let transactions = self.runtime.block_on(async {
                    let mut batch = store.batch();
                    for i in 0..count {
                        let id = format!("{prefix}{i:05}");
                        batch
                            .update(|tx| {
                                let mut object = new_object(kind, &id);
                                if kind != ObjectKind::Task && kind != ObjectKind::Node {
                                    set_fields(&mut object, &[("name".into(), id.clone())]).expect("name");
                                }
                                typed!(kind, T => tx.create((**T::from_object(&object).unwrap()).clone()))
                            })
                            .await?;
                    }
                    batch.commit().await
                })?;
                Ok(format!(
                    "{count} objects in {transactions} transactions, version {before} → {}",
                    store.version()
                ))
            }
            "watch" => {
                let watch_name = pos(command, 0)?.to_string();
                let mut filter = Filter::all();
                for (k, v) in key_values(command, 1)? {
                    filter = match k.as_str() {
                        "kind" => filter.kind(parse_kind(&v)?),
                        "action" => filter.action(match v.as_str() {
                            "create" => Action::Create,
                            "update" => Action::Update,
                            "remove" => Action::Remove,
                            _ => return Err(format!("unknown action {v}").into()),
                        }),
                        "service" => filter.predicate(move |e| match &e.object {
                            Object::Task(t) => t.service_id == v,
                            _ => false,
                        }),
                        _ => return Err(format!("unknown filter {k}").into()),
                    };
                }
                let sub = self.store.watch(filter);
                self.watches.insert(watch_name, sub);
                Ok(String::new())
            }
            "events" => {
                let sub = self
                    .watches
                    .get_mut(pos(command, 0)?)
                    .ok_or("no such watch")?;
                let mut out = Vec::new();
                loop {
                    match sub.try_next() {
                        Ok(Some((version, event))) => {
                            let mut line = format!(
                                "@{version} {} {}",
                                event.action.name(),
                                describe(&event.object)
                            );
                            if let Some(old) = &event.old {
                                write!(line, " (was v{})", old.version()).unwrap();
                            }
                            out.push(line);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            out.push(format!("watch ended: {e}"));
                            break;
                        }
                    }
                }
                Ok(if out.is_empty() {
                    "(no events)".into()
                } else {
                    out.join("\n")
                })
            }
            "snapshot" => {
                let snapshot = self.store.snapshot();
                let bytes = snapshot.encode_to_vec();
                let out = format!(
                    "snapshot at version {}: {} bytes, fnv {:016x}",
                    snapshot.version,
                    bytes.len(),
                    fnv(&bytes)
                );
                self.snapshot = Some(snapshot);
                Ok(out)
            }
            "restore" => {
                let snapshot = self.snapshot.clone().ok_or("no snapshot taken")?;
                self.store.restore(snapshot)?;
                Ok(format!("restored version {}", self.store.version()))
            }
            "restore_bytes" => {
                // Restores a snapshot with a duplicate, to check that bad snapshots are refused.
                let mut snapshot = self.store.snapshot();
                if let Some(first) = snapshot.services.first().cloned() {
                    snapshot.services.push(first);
                }
                self.store.restore(snapshot)?;
                Ok(String::new())
            }
            "dump" => {
                let out = self.store.view(|tx| {
                    let mut objects = Vec::new();
                    for kind in [
                        ObjectKind::Cluster,
                        ObjectKind::Node,
                        ObjectKind::Network,
                        ObjectKind::Secret,
                        ObjectKind::Config,
                        ObjectKind::Service,
                        ObjectKind::Task,
                    ] {
                        let mut these =
                            typed!(kind, T => tx.find::<T>(By::All).into_iter().map(T::into_object).collect::<Vec<_>>());
                        objects.append(&mut these);
                    }
                    objects
                });
                Ok(if out.is_empty() {
                    "(empty)".into()
                } else {
                    out.iter().map(describe).collect::<Vec<_>>().join("\n")
                })
            }
            "times" => {
                let kind = parse_kind(pos(command, 0)?)?;
                let id = pos(command, 1)?;
                let o = self
                    .store
                    .view(|tx| typed!(kind, T => tx.get::<T>(id).map(T::into_object)))
                    .ok_or("not found")?;
                Ok(format!(
                    "created={} updated={}",
                    seconds(&o.meta().created_at),
                    seconds(&o.meta().updated_at)
                ))
            }
            "version" => Ok(format!("version {}", self.store.version())),
            "count" => {
                let kind = parse_kind(pos(command, 0)?)?;
                let fields = key_values(command, 1)?;
                let by = match fields.first() {
                    Some((k, v)) => parse_by(k, v)?,
                    None => By::All,
                };
                let n = self
                    .store
                    .view(|tx| typed!(kind, T => tx.count_by::<T>(by)));
                Ok(format!("{n}"))
            }
            "tick" => {
                self.clock
                    .advance(Duration::from_secs(pos(command, 0)?.parse()?));
                Ok(String::new())
            }
            other => Err(format!("unknown command {other}").into()),
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

test_each_file::test_each_path! { in "crates/store/src/testscripts" as scripts => test_goldenscript }

fn test_goldenscript(path: &std::path::Path) {
    goldenscript::run(&mut Runner::new(), path).expect("goldenscript failed")
}
