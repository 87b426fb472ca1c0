//! Read and write transactions.
//!
//! A [`ReadTx`] is a view of one store version: it borrows the tables under a read lock, so
//! everything read through it is consistent. A [`WriteTx`] is a view plus the transaction's
//! own changes, which it sees as if they were applied (read-your-writes), including through
//! indexes. It checks each change as it is made (the object exists, the version read is the
//! current one, names stay unique) so mistakes fail early with a precise error; the same
//! checks run again, definitively, when the state machine applies the transaction.
//!
//! Objects read by ID through a `WriteTx` are remembered with their version: if any of them
//! changes before the transaction is applied, the transaction conflicts instead of acting on
//! stale data. Reads through indexes (`find`) are not remembered; code that depends on what a
//! scan returned re-reads or is level-triggered (it looks again when things change).

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::sync::Arc;

use shoal_api::v1::{NodeRole, ObjectKind, ObjectVersion, TaskState, node_spec};

use crate::error::{Result, StoreError};
use crate::object::{Index, Keys, Object, StoreObject, int_key, kind_name, slot_key, string_key};
use crate::tables::Tables;
use crate::transaction::{Change, ChangeSet};
use crate::watch::Action;

/// How to find objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By<'a> {
    /// Every object of the kind, in ID order.
    All,
    /// Objects whose ID starts with the prefix, in ID order.
    IdPrefix(&'a str),
    /// Objects with this name (case-insensitive).
    Name(&'a str),
    /// Objects whose name starts with the prefix (case-insensitive).
    NamePrefix(&'a str),
    /// Tasks of a service.
    Service(&'a str),
    /// Tasks assigned to a node.
    Node(&'a str),
    /// Tasks of one slot of a service.
    Slot(&'a str, u64),
    /// Tasks by desired state.
    DesiredState(TaskState),
    /// Tasks by observed state.
    TaskState(TaskState),
    /// Nodes by role.
    Role(NodeRole),
    /// Nodes by membership.
    Membership(node_spec::Membership),
    /// Tasks referencing a secret.
    ReferencedSecret(&'a str),
    /// Tasks referencing a config.
    ReferencedConfig(&'a str),
    /// Tasks and services attached to a network.
    ReferencedNetwork(&'a str),
}

impl By<'_> {
    /// The index, key and whether the key is a prefix; `None` for `All` and `IdPrefix`.
    fn index_key(&self) -> Option<(Index, Vec<u8>, bool)> {
        Some(match *self {
            By::All | By::IdPrefix(_) => return None,
            By::Name(n) => (Index::Name, n.to_lowercase().into_bytes(), false),
            By::NamePrefix(n) => (Index::Name, n.to_lowercase().into_bytes(), true),
            By::Service(id) => (Index::Service, string_key(id), false),
            By::Node(id) => (Index::Node, string_key(id), false),
            By::Slot(id, slot) => (Index::Slot, slot_key(id, slot), false),
            By::DesiredState(s) => (Index::DesiredState, int_key(s as i64).to_vec(), false),
            By::TaskState(s) => (Index::TaskState, int_key(s as i64).to_vec(), false),
            By::Role(r) => (Index::Role, int_key(r as i64).to_vec(), false),
            By::Membership(m) => (Index::Membership, int_key(m as i64).to_vec(), false),
            By::ReferencedSecret(id) => (Index::Secret, string_key(id), false),
            By::ReferencedConfig(id) => (Index::Config, string_key(id), false),
            By::ReferencedNetwork(id) => (Index::Network, string_key(id), false),
        })
    }

    /// Whether `object` is found by this query.
    pub fn matches<T: StoreObject>(&self, object: &T) -> bool {
        match self.index_key() {
            None => match self {
                By::IdPrefix(p) => object.id().starts_with(p),
                _ => true,
            },
            Some((Index::Name, key, prefix)) => {
                let name = object.name().to_lowercase().into_bytes();
                if prefix {
                    name.starts_with(&key)
                } else {
                    name == key
                }
            }
            Some((index, key, prefix)) => {
                let mut keys = Keys::default();
                object.index_keys(index, &mut keys);
                keys.iter().any(|k| {
                    if prefix {
                        k.starts_with(&key)
                    } else {
                        k == key.as_slice()
                    }
                })
            }
        }
    }
}

/// Reading operations shared by read and write transactions.
pub trait Reader {
    /// The object of kind `T` with this exact ID.
    fn get<T: StoreObject>(&self, id: &str) -> Option<Arc<T>>;

    /// The objects of kind `T` found by `by`.
    fn find<T: StoreObject>(&self, by: By<'_>) -> Vec<Arc<T>>;

    /// The object a user means by `reference`: an exact ID, else an exact name, else a unique
    /// ID prefix. Fails with NotFound, or Ambiguous when a prefix matches several objects.
    fn lookup<T: StoreObject>(&self, reference: &str) -> Result<Arc<T>> {
        let kind = kind_name(T::KIND);
        if reference.is_empty() {
            return Err(StoreError::NotFound {
                kind,
                what: "\"\"".into(),
            });
        }
        if let Some(o) = self.get::<T>(reference) {
            return Ok(o);
        }
        let by_name = self.find::<T>(By::Name(reference));
        match by_name.len() {
            1 => return Ok(by_name.into_iter().next().expect("one element")),
            0 => {}
            n => {
                return Err(StoreError::Ambiguous {
                    kind,
                    what: reference.into(),
                    matches: n,
                });
            }
        }
        let by_prefix = self.find::<T>(By::IdPrefix(reference));
        match by_prefix.len() {
            0 => Err(StoreError::NotFound {
                kind,
                what: reference.into(),
            }),
            1 => Ok(by_prefix.into_iter().next().expect("one element")),
            n => Err(StoreError::Ambiguous {
                kind,
                what: reference.into(),
                matches: n,
            }),
        }
    }
}

fn find_in_tables<T: StoreObject>(tables: &Tables, by: By<'_>) -> Vec<Arc<T>> {
    let table = T::table(tables);
    if T::DERIVED_NAMES {
        match by {
            By::Name(name) => {
                // Explicit names through the index, derived ones through the ID they end with.
                let key = name.to_lowercase();
                let mut found: Vec<Arc<T>> = table
                    .with_key(Index::Name, key.as_bytes())
                    .cloned()
                    .collect();
                if let Some((_, id)) = key.rsplit_once('.')
                    && let Some(o) = table.get(id)
                    && o.indexed_name().is_empty()
                    && o.name().to_lowercase() == key
                {
                    found.push(o.clone());
                }
                return found;
            }
            By::NamePrefix(prefix) => {
                // Derived names have no index: a scan.
                let prefix = prefix.to_lowercase();
                return table
                    .iter()
                    .filter(|o| o.name().to_lowercase().starts_with(&prefix))
                    .cloned()
                    .collect();
            }
            _ => {}
        }
    }
    match by.index_key() {
        None => match by {
            By::IdPrefix(p) => table.with_id_prefix(p).cloned().collect(),
            _ => table.iter().cloned().collect(),
        },
        Some((index, key, prefix)) => {
            if prefix {
                table
                    .with_key_prefix(index, &key)
                    .into_iter()
                    .cloned()
                    .collect()
            } else {
                table.with_key(index, &key).cloned().collect()
            }
        }
    }
}

/// A consistent view of one store version.
pub struct ReadTx<'a> {
    pub(crate) tables: &'a Tables,
}

impl ReadTx<'_> {
    /// The store version this view shows.
    pub fn version(&self) -> u64 {
        self.tables.version()
    }

    /// Number of objects of kind `T`.
    pub fn count<T: StoreObject>(&self) -> usize {
        T::table(self.tables).len()
    }

    /// Number of objects of kind `T` found by `by`, without collecting them.
    pub fn count_by<T: StoreObject>(&self, by: By<'_>) -> usize {
        match by.index_key() {
            Some((index, key, false)) if index != Index::Name => {
                T::table(self.tables).count_key(index, &key)
            }
            _ => self.find::<T>(by).len(),
        }
    }

    /// Calls `f` for each object found by `by`, without collecting them.
    pub fn for_each<T: StoreObject>(&self, by: By<'_>, mut f: impl FnMut(&Arc<T>)) {
        let table = T::table(self.tables);
        match by.index_key() {
            None => match by {
                By::IdPrefix(p) => table.with_id_prefix(p).for_each(f),
                _ => table.iter().for_each(f),
            },
            Some((Index::Name, _, _)) => find_in_tables::<T>(self.tables, by).iter().for_each(f),
            Some((index, key, false)) => table.with_key(index, &key).for_each(f),
            Some((index, key, true)) => table
                .with_key_prefix(index, &key)
                .into_iter()
                .for_each(&mut f),
        }
    }
}

impl Reader for ReadTx<'_> {
    fn get<T: StoreObject>(&self, id: &str) -> Option<Arc<T>> {
        T::table(self.tables).get(id).cloned()
    }

    fn find<T: StoreObject>(&self, by: By<'_>) -> Vec<Arc<T>> {
        find_in_tables(self.tables, by)
    }
}

type Key = (ObjectKind, String);

#[derive(Clone, Debug)]
struct Pending {
    action: Action,
    /// The object as it will be written; for removals, as it was read.
    object: Object,
    /// Encoded size of `object`.
    bytes: usize,
}

/// The changes a transaction has made so far. Owned separately from the view so that a batch
/// can keep them between closures without holding the store's lock.
#[derive(Debug, Default)]
pub struct PendingChanges {
    order: Vec<Key>,
    /// Changed objects, one map per kind (indexed by `ObjectKind as usize`), so that lookups
    /// by `&str` need no allocation.
    entries: [HashMap<String, Pending>; 8],
    /// For kinds with unique names: lower-cased name → ID of the pending objects holding it,
    /// so a name check does not scan every pending change.
    names: [HashMap<String, String>; 8],
    len: usize,
    /// Versions of the objects read by ID, one map per kind.
    reads: RefCell<[HashMap<String, u64>; 8]>,
    /// The same reads in the order they were first made, so that a batch can check the
    /// reads made since a mark without going through all of them.
    read_order: RefCell<Vec<(ObjectKind, String)>>,
    bytes: usize,
    /// Undo records: the key and its previous entry, for rolling back to a mark. Kept only
    /// when `journaling` (in batches), since a plain transaction is dropped whole on error.
    journal: Vec<(Key, Option<Pending>, usize)>,
    journaling: bool,
}

/// A position in a transaction's changes to roll back to.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    journal: usize,
    order: usize,
    reads: usize,
}

impl PendingChanges {
    /// Number of changed objects.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn entry(&self, kind: ObjectKind, id: &str) -> Option<&Pending> {
        self.entries[kind as usize].get(id)
    }

    fn index_name(&mut self, kind: ObjectKind, p: &Pending, add: bool) {
        if !Tables::unique_names(kind) || p.action == Action::Remove {
            return;
        }
        let name = p.object.name();
        if name.is_empty() {
            return;
        }
        let names = &mut self.names[kind as usize];
        let lower = name.to_lowercase();
        if add {
            names.insert(lower, p.object.id().to_string());
        } else if names.get(&lower).is_some_and(|id| id == p.object.id()) {
            names.remove(&lower);
        }
    }

    /// The ID of the pending object of `kind` named `name` (lower-cased), if any.
    fn pending_name(&self, kind: ObjectKind, lower_name: &str) -> Option<&str> {
        self.names[kind as usize]
            .get(lower_name)
            .map(String::as_str)
    }

    fn insert(&mut self, key: &Key, p: Pending) -> Option<Pending> {
        self.index_name(key.0, &p, true);
        let previous = self.entries[key.0 as usize].insert(key.1.clone(), p);
        match &previous {
            None => self.len += 1,
            Some(old) => self.reindex_after_replace(key.0, old),
        }
        previous
    }

    /// After an entry was replaced: drop the old name unless the new entry holds it too.
    fn reindex_after_replace(&mut self, kind: ObjectKind, old: &Pending) {
        self.index_name(kind, old, false);
        if let Some(current) = self.entries[kind as usize].get(old.object.id()).cloned() {
            self.index_name(kind, &current, true);
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Pending> {
        let previous = self.entries[key.0 as usize].remove(&key.1);
        if let Some(p) = &previous {
            self.len -= 1;
            self.index_name(key.0, p, false);
        }
        previous
    }

    /// Encoded size of the changed objects.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Changes that can be rolled back to a mark.
    pub fn journaled() -> Self {
        Self {
            journaling: true,
            ..Self::default()
        }
    }

    /// Whether the changes made since `mark` write, or this transaction read by ID, any of
    /// `objects`.
    pub fn touches_since(
        &self,
        mark: Mark,
        objects: &std::collections::HashSet<(ObjectKind, String)>,
    ) -> bool {
        let new = &self.order[mark.order.min(self.order.len())..];
        if new.iter().any(|key| objects.contains(key)) {
            return true;
        }
        // Only the reads made since the mark: earlier ones were checked when they were made.
        // (Reads undone by a rollback stay recorded; every rollback of a batch is followed by
        // waiting for the transactions in flight, so none is left to check them against.)
        let reads = self.read_order.borrow();
        reads[mark.reads.min(reads.len())..]
            .iter()
            .any(|key| objects.contains(key))
    }

    pub fn mark(&self) -> Mark {
        Mark {
            journal: self.journal.len(),
            order: self.order.len(),
            reads: self.read_order.borrow().len(),
        }
    }

    /// Undoes every change made after `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        debug_assert!(self.journaling, "rollback needs a journaled PendingChanges");
        while self.journal.len() > mark.journal {
            let (key, previous, order_len) = self.journal.pop().expect("journal entry");
            if let Some(p) = self.remove(&key) {
                self.bytes -= p.bytes;
            }
            if let Some(p) = previous {
                self.bytes += p.bytes;
                self.insert(&key, p);
            }
            self.order.truncate(order_len);
        }
    }

    fn set(&mut self, key: Key, entry: Option<Pending>) {
        let order_len = self.order.len();
        let previous = match entry {
            Some(p) => {
                self.bytes += p.bytes;
                let map = &mut self.entries[key.0 as usize];
                match map.get_mut(key.1.as_str()) {
                    Some(slot) => {
                        let old = std::mem::replace(slot, p);
                        self.reindex_after_replace(key.0, &old);
                        Some(old)
                    }
                    None => {
                        map.insert(key.1.clone(), p);
                        self.order.push(key.clone());
                        self.len += 1;
                        if let Some(added) =
                            self.entries[key.0 as usize].get(key.1.as_str()).cloned()
                        {
                            self.index_name(key.0, &added, true);
                        }
                        None
                    }
                }
            }
            None => self.remove(&key),
        };
        if let Some(p) = &previous {
            self.bytes -= p.bytes;
        }
        if self.journaling {
            self.journal.push((key, previous, order_len));
        }
    }

    /// The transaction to propose. Changes come in the order objects were first touched.
    pub fn take(&mut self) -> ChangeSet {
        // Objects the transaction writes are checked through their own version; the other
        // reads are carried as guards.
        let mut reads: Vec<ObjectVersion> = Vec::new();
        self.read_order.get_mut().clear();
        for (kind, map) in std::mem::take(self.reads.get_mut()).into_iter().enumerate() {
            let start = reads.len();
            reads.extend(
                map.into_iter()
                    .filter(|(id, _)| !self.entries[kind].contains_key(id))
                    .map(|(id, version)| ObjectVersion {
                        kind: kind as i32,
                        id,
                        version,
                    }),
            );
            reads[start..].sort_by(|a, b| a.id.cmp(&b.id));
        }
        let mut changes = Vec::with_capacity(self.len);
        for key in std::mem::take(&mut self.order) {
            if let Some(p) = self.remove(&key) {
                changes.push(Change {
                    action: p.action,
                    object: p.object,
                });
            }
        }
        self.bytes = 0;
        self.journal.clear();
        ChangeSet { changes, reads }
    }
}

/// A view plus the changes of a transaction being built.
pub struct WriteTx<'a> {
    tables: &'a Tables,
    pending: &'a mut PendingChanges,
    now: prost_types::Timestamp,
}

impl<'a> WriteTx<'a> {
    pub(crate) fn new(
        tables: &'a Tables,
        pending: &'a mut PendingChanges,
        now: prost_types::Timestamp,
    ) -> Self {
        Self {
            tables,
            pending,
            now,
        }
    }

    /// The time stamped on objects written by this transaction.
    pub fn now(&self) -> prost_types::Timestamp {
        self.now
    }

    /// The store version the view is based on.
    pub fn base_version(&self) -> u64 {
        self.tables.version()
    }

    fn key<T: StoreObject>(id: &str) -> Key {
        (T::KIND, id.to_string())
    }

    /// The object as this transaction sees it: `Some(None)` if the transaction removed it,
    /// `None` if the transaction has not touched it.
    fn pending_view<T: StoreObject>(&self, id: &str) -> Option<Option<Arc<T>>> {
        let entry = self.pending.entry(T::KIND, id)?;
        Some(match entry.action {
            Action::Remove => None,
            _ => T::from_object(&entry.object).cloned(),
        })
    }

    fn view_get<T: StoreObject>(&self, id: &str) -> Option<Arc<T>> {
        match self.pending_view::<T>(id) {
            Some(view) => view,
            None => T::table(self.tables).get(id).cloned(),
        }
    }

    fn check_name_free<T: StoreObject>(&self, object: &T) -> Result<()> {
        if !T::UNIQUE_NAMES {
            return Ok(());
        }
        let name = object.name();
        if name.is_empty() {
            return Err(StoreError::InvalidTransaction(format!(
                "a {} must have a name",
                kind_name(T::KIND)
            )));
        }
        let holders = self.find::<T>(By::Name(&name));
        if holders.iter().any(|o| o.id() != object.id()) {
            return Err(StoreError::NameConflict {
                kind: kind_name(T::KIND),
                name: name.into_owned(),
            });
        }
        Ok(())
    }

    /// Creates `object`. Its ID must be set and unused; for kinds with unique names, its name
    /// must be free. Creation and update times are stamped.
    pub fn create<T: StoreObject>(&mut self, mut object: T) -> Result<()> {
        let kind = kind_name(T::KIND);
        if object.id().is_empty() {
            return Err(StoreError::InvalidTransaction(format!(
                "a new {kind} needs an ID"
            )));
        }
        let key = Self::key::<T>(object.id());
        let id = key.1.as_str();
        if self.pending.entry(T::KIND, id).map(|p| p.action) == Some(Action::Remove) {
            return Err(StoreError::InvalidTransaction(format!(
                "{kind} {id} was removed in this transaction and cannot be created again in it"
            )));
        }
        if self.view_get::<T>(id).is_some() {
            return Err(StoreError::IdConflict {
                kind,
                id: id.to_string(),
            });
        }
        self.check_name_free(&object)?;
        let meta = object.meta_mut();
        meta.version = 0;
        meta.created_at = Some(self.now);
        meta.updated_at = Some(self.now);
        let bytes = object.encoded_len();
        let object = T::into_object(Arc::new(object));
        self.pending.set(
            key,
            Some(Pending {
                action: Action::Create,
                object,
                bytes,
            }),
        );
        Ok(())
    }

    /// Updates `object`, whose `meta.version` must be the version it was read at.
    pub fn update<T: StoreObject>(&mut self, mut object: T) -> Result<()> {
        let kind = kind_name(T::KIND);
        let key = Self::key::<T>(object.id());
        let id = key.1.as_str();
        let current = self.view_get::<T>(id).ok_or_else(|| StoreError::NotFound {
            kind,
            what: id.to_string(),
        })?;
        if current.version() != object.version() {
            return Err(StoreError::SequenceConflict {
                kind,
                id: id.to_string(),
                read: object.version(),
                current: current.version(),
            });
        }
        if current.name() != object.name() {
            self.check_name_free(&object)?;
        }
        let action = match self.pending.entry(T::KIND, id) {
            Some(p) if p.action == Action::Create => Action::Create,
            _ => Action::Update,
        };
        let meta = object.meta_mut();
        meta.created_at = current.meta_ref().created_at;
        meta.updated_at = Some(self.now);
        let bytes = object.encoded_len();
        let object = T::into_object(Arc::new(object));
        self.pending.set(
            key,
            Some(Pending {
                action,
                object,
                bytes,
            }),
        );
        Ok(())
    }

    /// Removes the object of kind `T` with this ID.
    pub fn delete<T: StoreObject>(&mut self, id: &str) -> Result<()> {
        let kind = kind_name(T::KIND);
        let key = Self::key::<T>(id);
        let current = self.view_get::<T>(id).ok_or_else(|| StoreError::NotFound {
            kind,
            what: id.to_string(),
        })?;
        match self.pending.entry(T::KIND, id).map(|p| p.action) {
            Some(Action::Create) => self.pending.set(key, None),
            _ => {
                // Remove what was read from the store, at the version read from the store.
                let base = T::table(self.tables).get(id).cloned().unwrap_or(current);
                let bytes = base.encoded_len();
                let object = T::into_object(base);
                self.pending.set(
                    key,
                    Some(Pending {
                        action: Action::Remove,
                        object,
                        bytes,
                    }),
                );
            }
        }
        Ok(())
    }
}

impl Reader for WriteTx<'_> {
    fn get<T: StoreObject>(&self, id: &str) -> Option<Arc<T>> {
        if let Some(view) = self.pending_view::<T>(id) {
            return view;
        }
        let found = T::table(self.tables).get(id).cloned();
        // The first read of an object is the one the transaction relies on.
        let version = found.as_ref().map(|o| o.version()).unwrap_or(0);
        let mut reads = self.pending.reads.borrow_mut();
        let reads = &mut reads[T::KIND as usize];
        if !reads.contains_key(id) {
            reads.insert(id.to_string(), version);
            self.pending
                .read_order
                .borrow_mut()
                .push((T::KIND, id.to_string()));
        }
        found
    }

    fn find<T: StoreObject>(&self, by: By<'_>) -> Vec<Arc<T>> {
        let mut found: Vec<Arc<T>> = find_in_tables::<T>(self.tables, by)
            .into_iter()
            .filter(|o| self.pending.entry(T::KIND, o.id()).is_none())
            .collect();
        if let (true, By::Name(name)) = (T::UNIQUE_NAMES, by) {
            if let Some(id) = self.pending.pending_name(T::KIND, &name.to_lowercase())
                && let Some(Some(o)) = self.pending_view::<T>(id)
            {
                found.push(o);
            }
            return found;
        }
        for key in &self.pending.order {
            if key.0 != T::KIND {
                continue;
            }
            if let Some(Some(o)) = self.pending_view::<T>(&key.1)
                && by.matches(&*o)
            {
                found.push(o);
            }
        }
        found
    }
}
