//! What the store knows about each kind of object: its kind, how it is named, which indexes
//! it appears in, and how it travels inside a transaction or a snapshot.
//!
//! The seven kinds (node, service, task, network, cluster, secret, config) implement
//! [`StoreObject`]; generic code (tables, transactions, watch) is written once against it.

use std::borrow::Cow;
use std::sync::Arc;

use shoal_api::v1::{
    Cluster, Config, Meta, Network, Node, NodeRole, ObjectKind, Secret, Service, StoreSnapshot,
    Task, TaskState, node_spec, store_action, task_spec,
};

use crate::table::Table;
use crate::tables::Tables;

/// The indexes an object can be found by, beside its ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Index {
    /// Lower-cased name; unique for services, networks, secrets, configs and clusters.
    Name,
    /// Tasks by service ID.
    Service,
    /// Tasks by node ID.
    Node,
    /// Tasks by (service ID, slot).
    Slot,
    /// Tasks by desired state.
    DesiredState,
    /// Tasks by observed state.
    TaskState,
    /// Nodes by role.
    Role,
    /// Nodes by membership.
    Membership,
    /// Tasks by the secrets they reference.
    Secret,
    /// Tasks by the configs they reference.
    Config,
    /// Tasks and services by the networks they attach to.
    Network,
}

/// A stored object of any kind, shared: cloning it is cheap.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Node(Arc<Node>),
    Service(Arc<Service>),
    Task(Arc<Task>),
    Network(Arc<Network>),
    Cluster(Arc<Cluster>),
    Secret(Arc<Secret>),
    Config(Arc<Config>),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Node(_) => ObjectKind::Node,
            Object::Service(_) => ObjectKind::Service,
            Object::Task(_) => ObjectKind::Task,
            Object::Network(_) => ObjectKind::Network,
            Object::Cluster(_) => ObjectKind::Cluster,
            Object::Secret(_) => ObjectKind::Secret,
            Object::Config(_) => ObjectKind::Config,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Object::Node(o) => o.meta_ref(),
            Object::Service(o) => o.meta_ref(),
            Object::Task(o) => o.meta_ref(),
            Object::Network(o) => o.meta_ref(),
            Object::Cluster(o) => o.meta_ref(),
            Object::Secret(o) => o.meta_ref(),
            Object::Config(o) => o.meta_ref(),
        }
    }

    pub fn id(&self) -> &str {
        &self.meta().id
    }

    pub fn version(&self) -> u64 {
        self.meta().version
    }

    /// The object's name as shown to users.
    pub fn name(&self) -> Cow<'_, str> {
        match self {
            Object::Node(o) => o.name(),
            Object::Service(o) => o.name(),
            Object::Task(o) => o.name(),
            Object::Network(o) => o.name(),
            Object::Cluster(o) => o.name(),
            Object::Secret(o) => o.name(),
            Object::Config(o) => o.name(),
        }
    }

    /// Index keys of the object for `index` (empty if the kind has no such index).
    pub fn index_keys(&self, index: Index, out: &mut Keys) {
        match self {
            Object::Node(o) => o.index_keys(index, out),
            Object::Service(o) => o.index_keys(index, out),
            Object::Task(o) => o.index_keys(index, out),
            Object::Network(o) => o.index_keys(index, out),
            Object::Cluster(o) => o.index_keys(index, out),
            Object::Secret(o) => o.index_keys(index, out),
            Object::Config(o) => o.index_keys(index, out),
        }
    }

    /// The object as the target of a store action.
    pub fn to_target(&self) -> store_action::Target {
        match self {
            Object::Node(o) => store_action::Target::Node((**o).clone()),
            Object::Service(o) => store_action::Target::Service((**o).clone()),
            Object::Task(o) => store_action::Target::Task((**o).clone()),
            Object::Network(o) => store_action::Target::Network((**o).clone()),
            Object::Cluster(o) => store_action::Target::Cluster((**o).clone()),
            Object::Secret(o) => store_action::Target::Secret((**o).clone()),
            Object::Config(o) => store_action::Target::Config((**o).clone()),
        }
    }

    /// The object carried by a store action.
    pub fn from_target(target: store_action::Target) -> Object {
        match target {
            store_action::Target::Node(o) => Object::Node(Arc::new(o)),
            store_action::Target::Service(o) => Object::Service(Arc::new(o)),
            store_action::Target::Task(o) => Object::Task(Arc::new(o)),
            store_action::Target::Network(o) => Object::Network(Arc::new(o)),
            store_action::Target::Cluster(o) => Object::Cluster(Arc::new(o)),
            store_action::Target::Secret(o) => Object::Secret(Arc::new(o)),
            store_action::Target::Config(o) => Object::Config(Arc::new(o)),
        }
    }

    /// Encoded size of the object in bytes.
    pub fn encoded_len(&self) -> usize {
        use prost::Message;
        match self {
            Object::Node(o) => o.encoded_len(),
            Object::Service(o) => o.encoded_len(),
            Object::Task(o) => o.encoded_len(),
            Object::Network(o) => o.encoded_len(),
            Object::Cluster(o) => o.encoded_len(),
            Object::Secret(o) => o.encoded_len(),
            Object::Config(o) => o.encoded_len(),
        }
    }
}

/// The noun users read for a kind ("service").
pub fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Unknown => "object",
        ObjectKind::Node => "node",
        ObjectKind::Service => "service",
        ObjectKind::Task => "task",
        ObjectKind::Network => "network",
        ObjectKind::Cluster => "cluster",
        ObjectKind::Secret => "secret",
        ObjectKind::Config => "config",
    }
}

/// One kind of stored object.
pub trait StoreObject:
    prost::Message + Clone + Default + PartialEq + Send + Sync + 'static
{
    const KIND: ObjectKind;
    /// Whether two objects of this kind may share a name (case-insensitively).
    const UNIQUE_NAMES: bool;
    /// The indexes objects of this kind are found by, besides ID.
    const INDEXES: &'static [Index];

    fn meta_ref(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;

    fn id(&self) -> &str {
        &self.meta_ref().id
    }

    fn version(&self) -> u64 {
        self.meta_ref().version
    }

    /// The name shown to users and found by the name index.
    fn name(&self) -> Cow<'_, str>;

    /// Keys of `index` for this object (non-name indexes).
    fn other_index_keys(&self, _index: Index, _out: &mut Keys) {}

    /// Keys of `index` for this object, appended to `out`.
    /// Whether some names of this kind are derived from other fields rather than stored
    /// (tasks: `<service>.<slot>.<id>`). Derived names are not kept in the name index, which
    /// saves an entry per object; lookups by name compute them instead.
    const DERIVED_NAMES: bool = false;

    /// The name kept in the name index, if any.
    fn indexed_name(&self) -> Cow<'_, str> {
        self.name()
    }

    fn index_keys(&self, index: Index, out: &mut Keys) {
        if index == Index::Name {
            let name = self.indexed_name();
            if !name.is_empty() {
                out.push_lowercase(&name);
            }
        } else {
            self.other_index_keys(index, out);
        }
    }

    fn into_object(this: Arc<Self>) -> Object;
    fn from_object(object: &Object) -> Option<&Arc<Self>>;
    fn table(tables: &Tables) -> &Table<Self>;
    fn table_mut(tables: &mut Tables) -> &mut Table<Self>;
    fn snapshot_list(snapshot: &mut StoreSnapshot) -> &mut Vec<Self>;
}

/// The index keys of one object for one index, kept in one reusable buffer so that computing
/// them allocates nothing once the buffer has grown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    /// Pushes `name` lower-cased: names are found without regard to case.
    pub fn push_lowercase(&mut self, name: &str) {
        if name.is_ascii() {
            self.bytes
                .extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        } else {
            self.bytes.extend_from_slice(name.to_lowercase().as_bytes());
        }
        self.ends.push(self.bytes.len());
    }

    pub fn push_int(&mut self, v: i64) {
        self.push(&int_key(v));
    }

    pub fn push_slot(&mut self, service_id: &str, slot: u64) {
        self.bytes.extend_from_slice(service_id.as_bytes());
        self.bytes.push(0);
        self.bytes.extend_from_slice(&slot.to_be_bytes());
        self.ends.push(self.bytes.len());
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let key = &self.bytes[start..end];
            start = end;
            key
        })
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.iter().any(|k| k == key)
    }
}

/// Key of a string-valued index.
pub fn string_key(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Key of an integer-valued index: big-endian, so byte order is numeric order.
pub fn int_key(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Key of the slot index: service ID, a separator, then the slot.
pub fn slot_key(service_id: &str, slot: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(service_id.len() + 9);
    key.extend_from_slice(service_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&slot.to_be_bytes());
    key
}

macro_rules! store_object {
    ($ty:ident, $variant:ident, $kind:ident, $field:ident, $unique:expr, [$($index:ident),*] $(, $extra:item)*) => {
        impl StoreObject for $ty {
            $($extra)*
            const KIND: ObjectKind = ObjectKind::$kind;
            const UNIQUE_NAMES: bool = $unique;
            const INDEXES: &'static [Index] = &[$(Index::$index),*];

            fn meta_ref(&self) -> &Meta {
                static EMPTY: Meta = Meta { id: String::new(), version: 0, created_at: None, updated_at: None };
                self.meta.as_ref().unwrap_or(&EMPTY)
            }

            fn meta_mut(&mut self) -> &mut Meta {
                self.meta.get_or_insert_with(Meta::default)
            }

            fn name(&self) -> Cow<'_, str> {
                self.display_name()
            }

            fn other_index_keys(&self, index: Index, out: &mut Keys) {
                other_keys(self, index, out)
            }

            fn into_object(this: Arc<Self>) -> Object {
                Object::$variant(this)
            }

            fn from_object(object: &Object) -> Option<&Arc<Self>> {
                match object {
                    Object::$variant(o) => Some(o),
                    _ => None,
                }
            }

            fn table(tables: &Tables) -> &Table<Self> {
                &tables.$field
            }

            fn table_mut(tables: &mut Tables) -> &mut Table<Self> {
                &mut tables.$field
            }

            fn snapshot_list(snapshot: &mut StoreSnapshot) -> &mut Vec<Self> {
                &mut snapshot.$field
            }
        }
    };
}

store_object!(Node, Node, Node, nodes, false, [Name, Role, Membership]);
store_object!(Service, Service, Service, services, true, [Name, Network]);
store_object!(
    Task,
    Task,
    Task,
    tasks,
    false,
    [
        Name,
        Service,
        Node,
        Slot,
        DesiredState,
        TaskState,
        Secret,
        Config,
        Network
    ],
    const DERIVED_NAMES: bool = true;,
    fn indexed_name(&self) -> Cow<'_, str> {
        annotation_name(self.annotations.as_deref()).into()
    }
);
store_object!(Network, Network, Network, networks, true, [Name]);
store_object!(Cluster, Cluster, Cluster, clusters, true, [Name]);
store_object!(Secret, Secret, Secret, secrets, true, [Name]);
store_object!(Config, Config, Config, configs, true, [Name]);

/// How each kind is named.
trait Named {
    fn display_name(&self) -> Cow<'_, str>;
}

fn annotation_name(a: Option<&shoal_api::v1::Annotations>) -> &str {
    a.map(|a| a.name.as_str()).unwrap_or("")
}

impl Named for Node {
    /// A node is named by its spec, else by its hostname.
    fn display_name(&self) -> Cow<'_, str> {
        let name = annotation_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref()));
        if !name.is_empty() {
            return name.into();
        }
        self.description
            .as_ref()
            .map(|d| d.hostname.as_str())
            .unwrap_or("")
            .into()
    }
}

impl Named for Service {
    fn display_name(&self) -> Cow<'_, str> {
        annotation_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref())).into()
    }
}

impl Named for Task {
    /// A task is named by its annotations, else `<service>.<slot>.<id>` (`<service>.<node>.<id>`
    /// for global services), as Docker names task containers.
    fn display_name(&self) -> Cow<'_, str> {
        let name = annotation_name(self.annotations.as_deref());
        if !name.is_empty() {
            return name.into();
        }
        let service = self
            .service_annotations
            .as_ref()
            .map(|a| a.name.as_str())
            .unwrap_or("");
        if service.is_empty() {
            return "".into();
        }
        let id = self.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
        if self.slot != 0 {
            format!("{service}.{}.{id}", self.slot).into()
        } else {
            format!("{service}.{}.{id}", self.node_id).into()
        }
    }
}

impl Named for Network {
    fn display_name(&self) -> Cow<'_, str> {
        annotation_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref())).into()
    }
}

impl Named for Cluster {
    fn display_name(&self) -> Cow<'_, str> {
        annotation_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref())).into()
    }
}

impl Named for Secret {
    fn display_name(&self) -> Cow<'_, str> {
        annotation_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref())).into()
    }
}

impl Named for Config {
    fn display_name(&self) -> Cow<'_, str> {
        annotation_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref())).into()
    }
}

/// Keys of the indexes other than the name index.
trait OtherKeys {
    fn keys(&self, index: Index, out: &mut Keys);
}

fn other_keys<T: OtherKeys>(o: &T, index: Index, out: &mut Keys) {
    o.keys(index, out)
}

impl OtherKeys for Node {
    fn keys(&self, index: Index, out: &mut Keys) {
        match index {
            Index::Role => {
                let role = self
                    .spec
                    .as_ref()
                    .map(|s| s.desired_role)
                    .unwrap_or(NodeRole::Worker as i32);
                out.push_int(role as i64);
            }
            Index::Membership => {
                let m = self
                    .spec
                    .as_ref()
                    .map(|s| s.membership)
                    .unwrap_or(node_spec::Membership::Pending as i32);
                out.push_int(m as i64);
            }
            _ => {}
        }
    }
}

impl OtherKeys for Service {
    fn keys(&self, index: Index, out: &mut Keys) {
        if index == Index::Network
            && let Some(task) = self.spec.as_ref().and_then(|s| s.task.as_ref())
        {
            for n in &task.networks {
                out.push(n.target.as_bytes());
            }
        }
    }
}

impl OtherKeys for Task {
    fn keys(&self, index: Index, out: &mut Keys) {
        match index {
            Index::Service if !self.service_id.is_empty() => {
                out.push(self.service_id.as_bytes());
            }
            Index::Node if !self.node_id.is_empty() => out.push(self.node_id.as_bytes()),
            Index::Slot if !self.service_id.is_empty() => {
                out.push_slot(&self.service_id, self.slot);
            }
            Index::DesiredState => out.push_int(self.desired_state as i64),
            Index::TaskState => {
                let state = self
                    .status
                    .as_ref()
                    .map(|s| s.state)
                    .unwrap_or(TaskState::New as i32);
                out.push_int(state as i64);
            }
            Index::Secret => {
                for s in task_secrets(self) {
                    out.push(s.as_bytes());
                }
            }
            Index::Config => {
                for c in task_configs(self) {
                    out.push(c.as_bytes());
                }
            }
            Index::Network => {
                for n in &self.networks {
                    out.push(n.network_id.as_bytes());
                }
            }
            _ => {}
        }
    }
}

fn task_secrets(task: &Task) -> Vec<&str> {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => {
            c.secrets.iter().map(|s| s.secret_id.as_str()).collect()
        }
        Some(task_spec::Runtime::Process(p)) => {
            p.secrets.iter().map(|s| s.secret_id.as_str()).collect()
        }
        None => Vec::new(),
    }
}

fn task_configs(task: &Task) -> Vec<&str> {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => {
            c.configs.iter().map(|s| s.config_id.as_str()).collect()
        }
        Some(task_spec::Runtime::Process(p)) => {
            p.configs.iter().map(|s| s.config_id.as_str()).collect()
        }
        None => Vec::new(),
    }
}

impl OtherKeys for Network {
    fn keys(&self, _: Index, _: &mut Keys) {}
}
impl OtherKeys for Cluster {
    fn keys(&self, _: Index, _: &mut Keys) {}
}
impl OtherKeys for Secret {
    fn keys(&self, _: Index, _: &mut Keys) {}
}
impl OtherKeys for Config {
    fn keys(&self, _: Index, _: &mut Keys) {}
}
