//! The store's state machine: seven tables, the store version, and `apply`.
//!
//! `apply` is the only way content changes. It takes a [`ChangeSet`] — a list of changes and
//! the versions the transaction relied on — and either applies all of it or none of it. The
//! decision depends only on the current content and the transaction, never on time or on who
//! proposed it, so every manager that applies the same log reaches the same state and the same
//! verdicts. This is what lets transactions be pipelined through Raft without a lock held across
//! the round trip (SwarmKit holds its update lock across the proposal, which serialises every
//! write in the cluster): a transaction that was built from data that changed before it was
//! applied is refused here, identically everywhere, with "update out of sequence".
//!
//! Each applied transaction raises the store version by one; every object it wrote takes that
//! version. Applying is done change by change with an undo log, so a refusal half-way restores
//! exactly the previous content.

use std::sync::Arc;

use shoal_api::v1::{ObjectKind, StoreSnapshot};

use crate::error::{Result, StoreError};
use crate::object::{Index, Object, StoreObject, kind_name};
use crate::table::Table;
use crate::transaction::{Change, ChangeSet};
use crate::watch::{Action, Event};

#[derive(Debug, Default)]
pub struct Tables {
    pub(crate) version: u64,
    pub(crate) nodes: Table<shoal_api::v1::Node>,
    pub(crate) services: Table<shoal_api::v1::Service>,
    pub(crate) tasks: Table<shoal_api::v1::Task>,
    pub(crate) networks: Table<shoal_api::v1::Network>,
    pub(crate) clusters: Table<shoal_api::v1::Cluster>,
    pub(crate) secrets: Table<shoal_api::v1::Secret>,
    pub(crate) configs: Table<shoal_api::v1::Config>,
}

/// Calls `$body` with `$t` bound to the table type of `$kind`.
macro_rules! with_kind {
    ($kind:expr, $T:ident => $body:expr) => {
        match $kind {
            ObjectKind::Node => {
                type $T = shoal_api::v1::Node;
                $body
            }
            ObjectKind::Service => {
                type $T = shoal_api::v1::Service;
                $body
            }
            ObjectKind::Task => {
                type $T = shoal_api::v1::Task;
                $body
            }
            ObjectKind::Network => {
                type $T = shoal_api::v1::Network;
                $body
            }
            ObjectKind::Cluster => {
                type $T = shoal_api::v1::Cluster;
                $body
            }
            ObjectKind::Secret => {
                type $T = shoal_api::v1::Secret;
                $body
            }
            ObjectKind::Config => {
                type $T = shoal_api::v1::Config;
                $body
            }
            ObjectKind::Unknown => unreachable!("callers reject unknown kinds"),
        }
    };
}

/// What to do to undo one applied change.
enum Undo {
    /// Put back the object that was replaced or removed.
    Restore(Object),
    /// Remove the object that was created.
    Remove(ObjectKind, String),
}

impl Tables {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of objects of every kind.
    pub fn object_count(&self) -> usize {
        self.nodes.len()
            + self.services.len()
            + self.tasks.len()
            + self.networks.len()
            + self.clusters.len()
            + self.secrets.len()
            + self.configs.len()
    }

    pub fn get<T: StoreObject>(&self, id: &str) -> Option<&Arc<T>> {
        T::table(self).get(id)
    }

    pub(crate) fn get_object(&self, kind: ObjectKind, id: &str) -> Option<Object> {
        if kind == ObjectKind::Unknown {
            return None;
        }
        with_kind!(kind, T => T::table(self).get(id).cloned().map(T::into_object))
    }

    /// The object of this kind holding `name` (case-insensitively), other than `except_id`.
    pub(crate) fn name_holder(
        &self,
        kind: ObjectKind,
        name: &str,
        except_id: &str,
    ) -> Option<String> {
        let key = name.to_lowercase().into_bytes();
        with_kind!(kind, T => T::table(self)
            .with_key(Index::Name, &key)
            .find(|o| o.id() != except_id)
            .map(|o| o.id().to_string()))
    }

    pub(crate) fn unique_names(kind: ObjectKind) -> bool {
        with_kind!(kind, T => T::UNIQUE_NAMES)
    }

    /// Makes a task share its spec with its service when they are equal. Tasks the
    /// orchestrator creates share it already; tasks that arrive encoded (Raft entries on
    /// followers, snapshots) carry a copy each, which this folds back into one.
    fn share_task_spec(&self, object: &mut Object) {
        let Object::Task(task) = object else { return };
        let Some(spec) = task.spec.as_ref() else {
            return;
        };
        let Some(service) = self.services.get(&task.service_id) else {
            return;
        };
        let candidates = [
            service.spec.as_ref().and_then(|s| s.task.as_ref()),
            service.previous_spec.as_ref().and_then(|s| s.task.as_ref()),
        ];
        for shared in candidates.into_iter().flatten() {
            if shoal_api::v1::TaskSpec::ptr_eq(spec, shared) {
                return;
            }
            if spec == shared {
                let shared = shared.clone();
                Arc::make_mut(task).spec = Some(shared);
                return;
            }
        }
    }

    fn put_object(&mut self, object: Object) -> Option<Object> {
        match object {
            Object::Node(o) => self.nodes.put(o).map(Object::Node),
            Object::Service(o) => self.services.put(o).map(Object::Service),
            Object::Task(o) => self.tasks.put(o).map(Object::Task),
            Object::Network(o) => self.networks.put(o).map(Object::Network),
            Object::Cluster(o) => self.clusters.put(o).map(Object::Cluster),
            Object::Secret(o) => self.secrets.put(o).map(Object::Secret),
            Object::Config(o) => self.configs.put(o).map(Object::Config),
        }
    }

    fn remove_object(&mut self, kind: ObjectKind, id: &str) -> Option<Object> {
        with_kind!(kind, T => T::table_mut(self).remove(id).map(T::into_object))
    }

    /// Applies `txn` whole or not at all. On success returns the new store version and the
    /// events describing the changes, in the transaction's order.
    pub fn apply(&mut self, txn: ChangeSet) -> Result<(u64, Vec<Event>)> {
        for read in &txn.reads {
            let kind = ObjectKind::try_from(read.kind).unwrap_or(ObjectKind::Unknown);
            if kind == ObjectKind::Unknown {
                return Err(StoreError::InvalidTransaction(format!(
                    "read of an unknown object kind {}",
                    read.kind
                )));
            }
            let current = self
                .get_object(kind, &read.id)
                .map(|o| o.version())
                .unwrap_or(0);
            if current != read.version {
                return Err(StoreError::SequenceConflict {
                    kind: kind_name(kind),
                    id: read.id.clone(),
                    read: read.version,
                    current,
                });
            }
        }
        let version = self.version + 1;
        let mut undo = Vec::with_capacity(txn.changes.len());
        let mut events = Vec::with_capacity(txn.changes.len());
        // Removals first, so that a name freed by a removal can be taken by a creation in the
        // same transaction whatever their order.
        let (removals, others): (Vec<Change>, Vec<Change>) = txn
            .changes
            .into_iter()
            .partition(|c| c.action == Action::Remove);
        for change in removals.into_iter().chain(others) {
            match self.apply_change(change, version) {
                Ok((u, event)) => {
                    undo.push(u);
                    events.push(event);
                }
                Err(e) => {
                    for u in undo.into_iter().rev() {
                        match u {
                            Undo::Restore(o) => {
                                self.put_object(o);
                            }
                            Undo::Remove(kind, id) => {
                                self.remove_object(kind, &id);
                            }
                        }
                    }
                    return Err(e);
                }
            }
        }
        self.version = version;
        Ok((version, events))
    }

    fn apply_change(&mut self, change: Change, version: u64) -> Result<(Undo, Event)> {
        let Change { action, mut object } = change;
        let object_kind = object.kind();
        let id = object.id().to_string();
        if id.is_empty() {
            return Err(StoreError::InvalidTransaction(format!(
                "a {} without an ID",
                kind_name(object_kind)
            )));
        }
        let current = self.get_object(object_kind, &id);
        match action {
            Action::Create => {
                if current.is_some() {
                    return Err(StoreError::IdConflict {
                        kind: kind_name(object_kind),
                        id,
                    });
                }
                self.check_name(&object)?;
                self.share_task_spec(&mut object);
                set_version(&mut object, version, None);
                self.put_object(object.clone());
                Ok((
                    Undo::Remove(object_kind, id),
                    Event {
                        action: Action::Create,
                        object,
                        old: None,
                    },
                ))
            }
            Action::Update => {
                let current = current.ok_or_else(|| StoreError::NotFound {
                    kind: kind_name(object_kind),
                    what: id.clone(),
                })?;
                check_version(&current, &object)?;
                if Self::unique_names(object_kind) && current.name() != object.name() {
                    self.check_name(&object)?;
                }
                self.share_task_spec(&mut object);
                set_version(&mut object, version, current.meta().created_at);
                self.put_object(object.clone());
                Ok((
                    Undo::Restore(current.clone()),
                    Event {
                        action: Action::Update,
                        object,
                        old: Some(current),
                    },
                ))
            }
            Action::Remove => {
                let current = current.ok_or_else(|| StoreError::NotFound {
                    kind: kind_name(object_kind),
                    what: id.clone(),
                })?;
                check_version(&current, &object)?;
                self.remove_object(object_kind, &id);
                Ok((
                    Undo::Restore(current.clone()),
                    Event {
                        action: Action::Remove,
                        object: current,
                        old: None,
                    },
                ))
            }
        }
    }

    fn check_name(&self, object: &Object) -> Result<()> {
        let kind = object.kind();
        if !Self::unique_names(kind) {
            return Ok(());
        }
        let name = object.name();
        if name.is_empty() {
            return Err(StoreError::InvalidTransaction(format!(
                "a {} must have a name",
                kind_name(kind)
            )));
        }
        if self.name_holder(kind, &name, object.id()).is_some() {
            return Err(StoreError::NameConflict {
                kind: kind_name(kind),
                name: name.into_owned(),
            });
        }
        Ok(())
    }

    /// The snapshot encoded as a `StoreSnapshot` message, straight from the shared objects
    /// (no copy of them): the same bytes as `self.snapshot().encode_to_vec()`.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        use prost::encoding::{message, uint64};
        fn len<T: StoreObject>(tables: &Tables, tag: u32) -> usize {
            T::table(tables)
                .iter()
                .map(|o| message::encoded_len(tag, o.as_ref()))
                .sum()
        }
        fn put<T: StoreObject>(tables: &Tables, tag: u32, buf: &mut Vec<u8>) {
            for o in T::table(tables).iter() {
                message::encode(tag, o.as_ref(), buf);
            }
        }
        let version_len = if self.version != 0 {
            uint64::encoded_len(1, &self.version)
        } else {
            0
        };
        let total = version_len
            + len::<shoal_api::v1::Node>(self, 2)
            + len::<shoal_api::v1::Service>(self, 3)
            + len::<shoal_api::v1::Network>(self, 4)
            + len::<shoal_api::v1::Task>(self, 5)
            + len::<shoal_api::v1::Cluster>(self, 6)
            + len::<shoal_api::v1::Secret>(self, 7)
            + len::<shoal_api::v1::Config>(self, 8);
        let mut buf = Vec::with_capacity(total);
        if self.version != 0 {
            uint64::encode(1, &self.version, &mut buf);
        }
        put::<shoal_api::v1::Node>(self, 2, &mut buf);
        put::<shoal_api::v1::Service>(self, 3, &mut buf);
        put::<shoal_api::v1::Network>(self, 4, &mut buf);
        put::<shoal_api::v1::Task>(self, 5, &mut buf);
        put::<shoal_api::v1::Cluster>(self, 6, &mut buf);
        put::<shoal_api::v1::Secret>(self, 7, &mut buf);
        put::<shoal_api::v1::Config>(self, 8, &mut buf);
        buf
    }

    /// The whole content, objects sorted by ID: equal content gives equal bytes.
    pub fn snapshot(&self) -> StoreSnapshot {
        let mut snapshot = StoreSnapshot {
            version: self.version,
            ..Default::default()
        };
        fill::<shoal_api::v1::Node>(self, &mut snapshot);
        fill::<shoal_api::v1::Service>(self, &mut snapshot);
        fill::<shoal_api::v1::Task>(self, &mut snapshot);
        fill::<shoal_api::v1::Network>(self, &mut snapshot);
        fill::<shoal_api::v1::Cluster>(self, &mut snapshot);
        fill::<shoal_api::v1::Secret>(self, &mut snapshot);
        fill::<shoal_api::v1::Config>(self, &mut snapshot);
        snapshot
    }

    /// Tables holding exactly the content of `snapshot`. Refuses a snapshot with objects
    /// without IDs, duplicate IDs or duplicate unique names.
    pub fn from_snapshot(mut snapshot: StoreSnapshot) -> Result<Tables> {
        let mut tables = Tables {
            version: snapshot.version,
            ..Default::default()
        };
        load::<shoal_api::v1::Node>(&mut tables, &mut snapshot)?;
        load::<shoal_api::v1::Service>(&mut tables, &mut snapshot)?;
        load::<shoal_api::v1::Task>(&mut tables, &mut snapshot)?;
        load::<shoal_api::v1::Network>(&mut tables, &mut snapshot)?;
        load::<shoal_api::v1::Cluster>(&mut tables, &mut snapshot)?;
        load::<shoal_api::v1::Secret>(&mut tables, &mut snapshot)?;
        load::<shoal_api::v1::Config>(&mut tables, &mut snapshot)?;
        Ok(tables)
    }
}

fn fill<T: StoreObject>(tables: &Tables, snapshot: &mut StoreSnapshot) {
    let list = T::snapshot_list(snapshot);
    list.extend(T::table(tables).iter().map(|o| (**o).clone()));
}

fn load<T: StoreObject>(tables: &mut Tables, snapshot: &mut StoreSnapshot) -> Result<()> {
    if !T::UNIQUE_NAMES && T::table(tables).is_empty() {
        return load_bulk::<T>(tables, snapshot);
    }
    for object in std::mem::take(T::snapshot_list(snapshot)) {
        let kind = kind_name(T::KIND);
        if object.id().is_empty() {
            return Err(StoreError::InvalidTransaction(format!(
                "snapshot holds a {kind} without an ID"
            )));
        }
        if T::table(tables).get(object.id()).is_some() {
            return Err(StoreError::IdConflict {
                kind,
                id: object.id().to_string(),
            });
        }
        let mut wrapped = T::into_object(Arc::new(object));
        tables.check_name(&wrapped)?;
        tables.share_task_spec(&mut wrapped);
        tables.put_object(wrapped);
    }
    Ok(())
}

/// [`load`] for kinds without unique names (nodes, tasks: the bulk of a large snapshot),
/// whose objects need no check against each other but their IDs: the table is built at
/// once ([`Table::load`]) instead of object by object.
fn load_bulk<T: StoreObject>(tables: &mut Tables, snapshot: &mut StoreSnapshot) -> Result<()> {
    let kind = kind_name(T::KIND);
    let list = std::mem::take(T::snapshot_list(snapshot));
    let mut objects = Vec::with_capacity(list.len());
    for object in list {
        if object.id().is_empty() {
            return Err(StoreError::InvalidTransaction(format!(
                "snapshot holds a {kind} without an ID"
            )));
        }
        let mut wrapped = T::into_object(Arc::new(object));
        tables.share_task_spec(&mut wrapped);
        objects.push(
            T::from_object(&wrapped)
                .expect("the kind just wrapped")
                .clone(),
        );
    }
    T::table_mut(tables)
        .load(objects)
        .map_err(|id| StoreError::IdConflict { kind, id })
}

fn check_version(current: &Object, written: &Object) -> Result<()> {
    if current.version() != written.version() {
        return Err(StoreError::SequenceConflict {
            kind: kind_name(current.kind()),
            id: current.id().to_string(),
            read: written.version(),
            current: current.version(),
        });
    }
    Ok(())
}

/// Stamps the new version (and keeps the original creation time on updates).
fn set_version(object: &mut Object, version: u64, created_at: Option<prost_types::Timestamp>) {
    fn stamp<T: StoreObject>(
        o: &mut Arc<T>,
        version: u64,
        created_at: Option<prost_types::Timestamp>,
    ) {
        let meta = Arc::make_mut(o).meta_mut();
        meta.version = version;
        if created_at.is_some() {
            meta.created_at = created_at;
        }
    }
    match object {
        Object::Node(o) => stamp(o, version, created_at),
        Object::Service(o) => stamp(o, version, created_at),
        Object::Task(o) => stamp(o, version, created_at),
        Object::Network(o) => stamp(o, version, created_at),
        Object::Cluster(o) => stamp(o, version, created_at),
        Object::Secret(o) => stamp(o, version, created_at),
        Object::Config(o) => stamp(o, version, created_at),
    }
}
