//! One table: the objects of one kind, by ID and by each of the kind's indexes.
//!
//! Objects live in a slab of rows (`Vec<Option<Arc<T>>>`); the ID map and the indexes refer
//! to rows by a `u32`, so an index entry costs a few bytes rather than a copy of the ID, and a
//! lookup through an index reaches the object without a second search. The ID map is ordered
//! so that ID-prefix lookups are a range scan; so are the index maps, whose keys are bytes
//! (names, IDs, big-endian numbers) and therefore support prefix scans too.
//!
//! A table does no checking: the state machine (`tables.rs`) decides what may be written and
//! calls `put` / `remove` only for changes it has accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::object::{Index, Keys, StoreObject};

type IndexMap = BTreeMap<Box<[u8]>, Rows>;

/// The rows holding one index key. Most keys of unique-ish indexes (names, slots) hold one
/// row; keeping it inline saves a set allocation per object. The set is boxed so that a
/// `Rows` is 16 bytes rather than 32: every entry of every index map carries one.
#[derive(Debug)]
// The extra allocation is paid by keys holding several rows only (few: states, services,
// nodes); the 16 bytes are saved on every entry of every index.
#[allow(clippy::box_collection)]
enum Rows {
    One(u32),
    Many(Box<BTreeSet<u32>>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::One(_) => 1,
            Rows::Many(set) => set.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, many) = match self {
            Rows::One(row) => (Some(*row), None),
            Rows::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn insert(&mut self, row: u32) {
        match self {
            Rows::One(existing) if *existing == row => {}
            Rows::One(existing) => {
                *self = Rows::Many(Box::new(BTreeSet::from([*existing, row])));
            }
            Rows::Many(set) => {
                set.insert(row);
            }
        }
    }

    /// Removes `row`; returns whether no row is left.
    fn remove(&mut self, row: u32) -> bool {
        match self {
            Rows::One(existing) => *existing == row,
            Rows::Many(set) => {
                set.remove(&row);
                match set.len() {
                    0 => true,
                    1 => {
                        let only = *set.iter().next().expect("one row");
                        *self = Rows::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

fn add_entry(index: &mut IndexMap, key: &[u8], row: u32) {
    match index.get_mut(key) {
        Some(rows) => rows.insert(row),
        None => {
            index.insert(key.into(), Rows::One(row));
        }
    }
}

fn hash_id(id: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(id.as_bytes());
    h.finish()
}

/// Whether `row` holds the object with `id`.
fn holds<T: StoreObject>(rows: &[Option<Arc<T>>], row: u32, id: &str) -> bool {
    rows[row as usize].as_ref().is_some_and(|o| o.id() == id)
}

fn hash_row<T: StoreObject>(rows: &[Option<Arc<T>>], row: u32) -> u64 {
    hash_id(rows[row as usize].as_ref().map(|o| o.id()).unwrap_or(""))
}

#[derive(Debug)]
pub struct Table<T: StoreObject> {
    rows: Vec<Option<Arc<T>>>,
    free: Vec<u32>,
    /// ID → row, in ID order: iteration and prefix searches.
    by_id: BTreeMap<Box<str>, u32>,
    /// ID → row, hashed, for exact lookups (every read by ID, every write's existence
    /// check) without string comparisons down a tree. It stores rows only — the ID is the
    /// row's object's — so it costs about 5 bytes per object.
    row_of: HashTable<u32>,
    /// One map per entry of `T::INDEXES`, in the same order.
    indexes: Vec<IndexMap>,
    /// Reusable buffers for index keys.
    scratch: [Keys; 2],
}

impl<T: StoreObject> Default for Table<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            free: Vec::new(),
            by_id: BTreeMap::new(),
            row_of: HashTable::new(),
            indexes: T::INDEXES.iter().map(|_| IndexMap::new()).collect(),
            scratch: Default::default(),
        }
    }
}

impl<T: StoreObject> Table<T> {
    pub fn len(&self) -> usize {
        self.row_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_of.is_empty()
    }

    /// The row holding `id`.
    fn row(&self, id: &str) -> Option<u32> {
        let rows = &self.rows;
        self.row_of
            .find(hash_id(id), |&r| holds(rows, r, id))
            .copied()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<T>> {
        let row = self.row(id)?;
        self.rows[row as usize].as_ref()
    }

    /// All objects in ID order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> + '_ {
        self.by_id
            .values()
            .filter_map(|row| self.rows[*row as usize].as_ref())
    }

    /// Objects whose ID starts with `prefix`, in ID order.
    pub fn with_id_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        self.by_id
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(id, _)| id.starts_with(prefix))
            .filter_map(|(_, row)| self.rows[*row as usize].as_ref())
    }

    fn index_position(index: Index) -> Option<usize> {
        T::INDEXES.iter().position(|i| *i == index)
    }

    /// Whether this kind has `index`.
    pub fn has_index(index: Index) -> bool {
        Self::index_position(index).is_some()
    }

    /// Objects whose `index` key equals `key`, in row order.
    pub fn with_key<'a>(
        &'a self,
        index: Index,
        key: &[u8],
    ) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        let rows = Self::index_position(index).and_then(|p| self.indexes[p].get(key));
        rows.into_iter()
            .flat_map(Rows::iter)
            .filter_map(|row| self.rows[row as usize].as_ref())
    }

    /// Objects whose `index` key starts with `prefix`, by key, without duplicates.
    pub fn with_key_prefix<'a>(&'a self, index: Index, prefix: &'a [u8]) -> Vec<&'a Arc<T>> {
        let Some(p) = Self::index_position(index) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let range = self.indexes[p]
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (_, rows) in range {
            for row in rows.iter() {
                if seen.insert(row)
                    && let Some(o) = self.rows[row as usize].as_ref()
                {
                    out.push(o);
                }
            }
        }
        out
    }

    /// Number of objects whose `index` key equals `key`.
    pub fn count_key(&self, index: Index, key: &[u8]) -> usize {
        Self::index_position(index)
            .and_then(|p| self.indexes[p].get(key))
            .map(Rows::len)
            .unwrap_or(0)
    }

    /// Inserts or replaces the object with the same ID; returns the one replaced.
    pub fn put(&mut self, object: Arc<T>) -> Option<Arc<T>> {
        let [mut old_keys, mut new_keys] = std::mem::take(&mut self.scratch);
        let replaced = if let Some(row) = self.row(object.id()) {
            let old = self.rows[row as usize]
                .replace(object.clone())
                .expect("row of a live ID");
            for (p, index) in T::INDEXES.iter().enumerate() {
                old_keys.clear();
                new_keys.clear();
                old.index_keys(*index, &mut old_keys);
                object.index_keys(*index, &mut new_keys);
                if old_keys == new_keys {
                    continue;
                }
                for key in old_keys.iter() {
                    remove_entry(&mut self.indexes[p], key, row);
                }
                for key in new_keys.iter() {
                    add_entry(&mut self.indexes[p], key, row);
                }
            }
            Some(old)
        } else {
            let row = match self.free.pop() {
                Some(row) => {
                    self.rows[row as usize] = Some(object.clone());
                    row
                }
                None => {
                    self.rows.push(Some(object.clone()));
                    u32::try_from(self.rows.len() - 1).expect("fewer than 2^32 objects of a kind")
                }
            };
            self.by_id.insert(object.id().into(), row);
            let rows = &self.rows;
            self.row_of
                .insert_unique(hash_id(object.id()), row, |&r| hash_row(rows, r));
            for (p, index) in T::INDEXES.iter().enumerate() {
                new_keys.clear();
                object.index_keys(*index, &mut new_keys);
                for key in new_keys.iter() {
                    add_entry(&mut self.indexes[p], key, row);
                }
            }
            None
        };
        self.scratch = [old_keys, new_keys];
        replaced
    }

    /// Removes the object with `id`; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Arc<T>> {
        let rows = &self.rows;
        let row = self
            .row_of
            .find_entry(hash_id(id), |&r| holds(rows, r, id))
            .ok()?
            .remove()
            .0;
        self.by_id.remove(id);
        let old = self.rows[row as usize].take().expect("row of a live ID");
        let mut keys = std::mem::take(&mut self.scratch[0]);
        for (p, index) in T::INDEXES.iter().enumerate() {
            keys.clear();
            old.index_keys(*index, &mut keys);
            for key in keys.iter() {
                remove_entry(&mut self.indexes[p], key, row);
            }
        }
        self.scratch[0] = keys;
        self.free.push(row);
        Some(old)
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Fills this empty table with `objects` at once (a snapshot being restored): the same
    /// content and indexes as putting them one by one, but the ID map and every index are
    /// built from sorted runs (packed B-tree nodes, no search per entry), and the row and
    /// hash tables are sized once. If two objects share an ID, returns that ID and leaves
    /// the table empty.
    pub(crate) fn load(&mut self, objects: Vec<Arc<T>>) -> std::result::Result<(), String> {
        debug_assert!(self.is_empty(), "load fills an empty table");
        let count = objects.len();
        u32::try_from(count).expect("fewer than 2^32 objects of a kind");
        let mut rows: Vec<Option<Arc<T>>> = Vec::with_capacity(count);
        rows.extend(objects.into_iter().map(Some));
        let mut row_of = HashTable::with_capacity(count);
        for row in 0..count as u32 {
            let id = rows[row as usize].as_ref().expect("loaded row").id();
            let hash = hash_id(id);
            if row_of.find(hash, |&r| holds(&rows, r, id)).is_some() {
                return Err(id.to_string());
            }
            row_of.insert_unique(hash, row, |&r| hash_row(&rows, r));
        }
        // Snapshots list objects in ID order, so this sort only checks the order; the map is
        // then built bottom-up.
        let mut ids: Vec<(Box<str>, u32)> = rows
            .iter()
            .enumerate()
            .map(|(row, o)| (o.as_ref().expect("loaded row").id().into(), row as u32))
            .collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.by_id = ids.into_iter().collect();
        let mut keys = std::mem::take(&mut self.scratch[0]);
        for (p, index) in T::INDEXES.iter().enumerate() {
            self.indexes[p] = build_index(&rows, *index, &mut keys);
        }
        self.scratch[0] = keys;
        self.rows = rows;
        self.row_of = row_of;
        self.free.clear();
        Ok(())
    }
}

/// The rows of one key while an index is built: ascending, without duplicates.
enum Group {
    One(u32),
    Many(Vec<u32>),
}

/// One index over `rows`, built in bulk: rows grouped by key (in row order, so each group is
/// sorted), keys sorted, then the map and each multi-row set built from sorted input.
fn build_index<T: StoreObject>(rows: &[Option<Arc<T>>], index: Index, keys: &mut Keys) -> IndexMap {
    let mut groups: rustc_hash::FxHashMap<Box<[u8]>, Group> = Default::default();
    for (row, object) in rows.iter().enumerate() {
        let Some(object) = object else { continue };
        let row = row as u32;
        keys.clear();
        object.index_keys(index, keys);
        for key in keys.iter() {
            match groups.get_mut(key) {
                Some(group) => match group {
                    Group::One(first) if *first != row => *group = Group::Many(vec![*first, row]),
                    Group::One(_) => {}
                    Group::Many(list) => {
                        if list.last() != Some(&row) {
                            list.push(row);
                        }
                    }
                },
                None => {
                    groups.insert(key.into(), Group::One(row));
                }
            }
        }
    }
    let mut entries: Vec<(Box<[u8]>, Rows)> = groups
        .into_iter()
        .map(|(key, group)| {
            let rows = match group {
                Group::One(row) => Rows::One(row),
                Group::Many(list) => Rows::Many(Box::new(list.into_iter().collect())),
            };
            (key, rows)
        })
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().collect()
}

fn remove_entry(index: &mut IndexMap, key: &[u8], row: u32) {
    if let Some(rows) = index.get_mut(key)
        && rows.remove(row)
    {
        index.remove(key);
    }
}
