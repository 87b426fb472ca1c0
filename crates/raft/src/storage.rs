//! The Raft log: entries, hard state, configuration and the latest snapshot.
//!
//! [`LogStore`] keeps the log in memory (raft-rs reads it through the [`raft::Storage`]
//! trait, often, to build messages) and writes every change through a [`LogDurability`]
//! before it is used: entries and hard state go to disk in one durable write (fsync) before
//! any message that depends on them leaves the node. Two implementations:
//!
//! - [`RedbLog`]: a redb database (`<state>/raft/log.redb`, one write transaction per
//!   append, committed with an fsync) plus the latest snapshot in its own file, written to a
//!   temporary name, fsynced and renamed. redb's commit protocol (checksummed commit slots)
//!   means a write torn by a crash is never visible: on start the database opens at the last
//!   complete commit.
//! - [`MemoryLog`]: the same contract in memory, shared with the test that created it, so a
//!   test can "crash" a node (drop it) and restart it from what it had persisted.
//!
//! Crash points (`failpoints.rs`, only with the `failpoints` feature): `raft-log-append-*`
//! around every durable log write and `raft-log-fsync-*` around its commit; in
//! [`RedbLog::save_snapshot`], `raft-snapshot-save-*` around the snapshot file and
//! `raft-compact-*` around the commit that drops the entries it covers; and
//! `raft-snapshot-install-*` around installing a snapshot received from the leader, with
//! `raft-snapshot-install-saved` between its two writes.
//!
//! Invariants: entries are contiguous; `first_index` is the first entry kept (entries up to
//! the snapshot may be kept for slow followers); the snapshot always covers every index
//! before `first_index`, and the entries kept continue it (the log holds the snapshot's last
//! entry, or starts right after it); the configuration is the one that took effect last,
//! whether by a membership change in the log or by the snapshot.
//!
//! Installing a snapshot from the leader is two durable writes (the snapshot file, then the
//! log's database: no entries, the new hard state and configuration). A crash between them
//! leaves a new snapshot beside an old log, hard state and configuration; [`LogStore::open`]
//! reconciles them so that the node restarts as if the install had completed (or, if its old
//! log already continued the snapshot, as Raft allows, with that log): the configuration is
//! taken from the snapshot when the stored one is older (each records the index it took
//! effect at), entries that do not continue the snapshot are dropped, and the term is
//! raised to the snapshot's. Without this, a follower that missed a membership change while
//! it was behind, and crashed while catching up, would restart counting the old quorum.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::encryption::DataKeys;
use crate::error::{RaftError, Result};
use crate::failpoints::crash_point;

/// What a node had persisted, as loaded on start.
#[derive(Clone, Debug, Default)]
pub struct PersistedLog {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// The log index `conf_state` took effect at (the membership change applied last, or the
    /// snapshot installed last); `None` in a log written before it was recorded.
    pub conf_index: Option<u64>,
    /// The latest snapshot (metadata and data); empty if none was taken.
    pub snapshot: Snapshot,
    /// Entries kept, contiguous, in order.
    pub entries: Vec<Entry>,
}

/// Where the log is made durable.
pub trait LogDurability: Send + Sync + 'static {
    /// Everything persisted so far.
    fn load(&self) -> Result<PersistedLog>;

    /// Durably, in one atomic write: replaces the entries from `entries[0].index` on with
    /// `entries`, and sets the hard state and the configuration (with the log index it took
    /// effect at) when given.
    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<(&ConfState, u64)>,
    ) -> Result<()>;

    /// Durably stores `snapshot` (one this node took) as the latest one and drops the
    /// entries before `first_kept`.
    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()>;

    /// Durably replaces the whole log with `snapshot`, received from the leader: the snapshot,
    /// no entries, `hard_state`, and the snapshot's configuration at its index.
    ///
    /// A crash may leave the new snapshot on disk beside the old log, hard state and
    /// configuration (the snapshot file and the log are two writes); [`LogStore::open`]
    /// reconciles them (see there).
    fn install_snapshot(&self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()>;
}

/// A log shared with its owner (the daemon keeps the [`RedbLog`] to rotate its data key).
impl<T: LogDurability> LogDurability for Arc<T> {
    fn load(&self) -> Result<PersistedLog> {
        (**self).load()
    }

    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<(&ConfState, u64)>,
    ) -> Result<()> {
        (**self).append(entries, hard_state, conf_state)
    }

    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()> {
        (**self).save_snapshot(snapshot, first_kept)
    }

    fn install_snapshot(&self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()> {
        (**self).install_snapshot(snapshot, hard_state)
    }
}

/// The log kept in memory only; clones share it, so a test can restart a node from it.
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    state: Arc<Mutex<PersistedLog>>,
}

impl MemoryLog {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LogDurability for MemoryLog {
    fn load(&self) -> Result<PersistedLog> {
        Ok(self.state.lock().expect("memory log lock").clone())
    }

    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<(&ConfState, u64)>,
    ) -> Result<()> {
        let mut state = self.state.lock().expect("memory log lock");
        if let Some(first) = entries.first() {
            state.entries.retain(|e| e.index < first.index);
            state.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            state.hard_state = hs.clone();
        }
        if let Some((cs, index)) = conf_state {
            state.conf_state = cs.clone();
            state.conf_index = Some(index);
        }
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()> {
        let mut state = self.state.lock().expect("memory log lock");
        state.snapshot = snapshot.clone();
        state.entries.retain(|e| e.index >= first_kept);
        Ok(())
    }

    fn install_snapshot(&self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()> {
        let mut state = self.state.lock().expect("memory log lock");
        let meta = snapshot.get_metadata();
        state.snapshot = snapshot.clone();
        state.entries.clear();
        state.hard_state = hard_state.clone();
        state.conf_state = meta.get_conf_state().clone();
        state.conf_index = Some(meta.index);
        Ok(())
    }
}

impl MemoryLog {
    /// Stores `snapshot` as the latest one and nothing else: what a crash in the middle of
    /// [`LogDurability::install_snapshot`] leaves on a real disk (for tests).
    #[doc(hidden)]
    pub fn save_snapshot_file_only(&self, snapshot: &Snapshot) {
        self.state.lock().expect("memory log lock").snapshot = snapshot.clone();
    }
}

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The log in a redb database, the snapshot in a file beside it, every record sealed with the
/// manager's data keys (see [`crate::encryption`]).
pub struct RedbLog {
    db: redb::Database,
    dir: PathBuf,
    keys: std::sync::RwLock<DataKeys>,
    /// Held while the snapshot file is sealed and written, or re-sealed by a rotation: a
    /// snapshot sealed with a key the rotation is about to forget is never left behind.
    snapshot_file: Mutex<()>,
    /// One key rotation at a time.
    rotation: Mutex<()>,
}

/// Associated data of a log entry: its place in the log.
fn entry_context(index: u64) -> [u8; 19] {
    let mut context = [0u8; 19];
    context[..11].copy_from_slice(b"raft entry\0");
    context[11..].copy_from_slice(&index.to_be_bytes());
    context
}

/// Associated data of a value in the `meta` table.
fn meta_context(name: &str) -> Vec<u8> {
    [b"raft meta\0".as_slice(), name.as_bytes()].concat()
}

const SNAPSHOT_CONTEXT: &[u8] = b"raft snapshot";

impl RedbLog {
    /// Opens (or creates) the log in `dir`, its records sealed with `keys`.
    pub fn open(dir: &Path, keys: DataKeys) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RaftError::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("log.redb");
        let db = redb::Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                damaged(&path, &detail)
            }
            other => RaftError::storage(other),
        })?;
        let write = db.begin_write().map_err(RaftError::storage)?;
        write.open_table(ENTRIES).map_err(RaftError::storage)?;
        write.open_table(META).map_err(RaftError::storage)?;
        write.commit().map_err(RaftError::storage)?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            keys: std::sync::RwLock::new(keys),
            snapshot_file: Mutex::new(()),
            rotation: Mutex::new(()),
        })
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    fn keys(&self) -> DataKeys {
        self.keys.read().expect("data keys lock").clone()
    }

    /// The data keys the log is sealed with now.
    pub fn data_keys(&self) -> DataKeys {
        self.keys()
    }

    /// Rotates the data key, without stopping the log: a new key seals everything written
    /// from now on, and everything already on disk (entries, hard state, configuration,
    /// snapshot) is sealed again with it; then the old key is forgotten. `persist` stores a
    /// keyring durably (the node keeps it beside its TLS key); it is called twice — with the
    /// new key and the old ones before anything is sealed with the new key, and with the
    /// new key alone once nothing on disk needs the old ones — so a crash at any point leaves
    /// a keyring that opens every record. Returns the keyring now in use.
    pub fn rotate_data_key(&self, persist: &dyn Fn(&DataKeys) -> Result<()>) -> Result<DataKeys> {
        let _one_at_a_time = self.rotation.lock().expect("rotation lock");
        let rotated = self.keys().rotated();
        persist(&rotated)?;
        *self.keys.write().expect("data keys lock") = rotated.clone();
        // Writes that began before the switch sealed with the old key; this transaction
        // begins after them (redb has one writer at a time) and seals them again.
        let write = self.db.begin_write().map_err(RaftError::storage)?;
        {
            let mut entries = write.open_table(ENTRIES).map_err(RaftError::storage)?;
            let mut stale = Vec::new();
            for item in entries.iter().map_err(RaftError::storage)? {
                let (k, v) = item.map_err(RaftError::storage)?;
                if !rotated.is_current(v.value()) {
                    stale.push((k.value(), v.value().to_vec()));
                }
            }
            for (index, sealed) in stale {
                let context = entry_context(index);
                let plain = rotated
                    .open(&context, &sealed, &format!("log entry {index}"))
                    .map_err(sealing_error)?;
                entries
                    .insert(index, rotated.seal(&context, &plain).as_slice())
                    .map_err(RaftError::storage)?;
            }
            let mut meta = write.open_table(META).map_err(RaftError::storage)?;
            let mut stale = Vec::new();
            for item in meta.iter().map_err(RaftError::storage)? {
                let (k, v) = item.map_err(RaftError::storage)?;
                if !rotated.is_current(v.value()) {
                    stale.push((k.value().to_string(), v.value().to_vec()));
                }
            }
            for (name, sealed) in stale {
                let context = meta_context(&name);
                let plain = rotated
                    .open(&context, &sealed, &format!("the log's {name}"))
                    .map_err(sealing_error)?;
                meta.insert(name.as_str(), rotated.seal(&context, &plain).as_slice())
                    .map_err(RaftError::storage)?;
            }
        }
        write.commit().map_err(RaftError::storage)?;
        {
            let _file = self.snapshot_file.lock().expect("snapshot file lock");
            match std::fs::read(self.snapshot_path()) {
                Ok(sealed) if !rotated.is_current(&sealed) => {
                    let plain = rotated
                        .open(SNAPSHOT_CONTEXT, &sealed, "the snapshot file")
                        .map_err(sealing_error)?;
                    self.write_snapshot_bytes(&rotated.seal(SNAPSHOT_CONTEXT, &plain))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RaftError::io("reading the snapshot", e)),
            }
        }
        let done = rotated.only_current();
        persist(&done)?;
        *self.keys.write().expect("data keys lock") = done.clone();
        tracing::info!(
            key_id = done.current().id(),
            "rotated the raft data key; the log and snapshot are sealed with the new one"
        );
        Ok(done)
    }

    fn seal<M: protobuf::Message>(&self, m: &M, context: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .keys
            .read()
            .expect("data keys lock")
            .seal(context, &encode(m)?))
    }

    fn unseal<M: protobuf::Message>(&self, sealed: &[u8], context: &[u8], what: &str) -> Result<M> {
        let plain = self
            .keys
            .read()
            .expect("data keys lock")
            .open(context, sealed, what)
            .map_err(sealing_error)?;
        decode(&plain, what)
    }
}

/// The raft-rs `Snapshot` bytes of a sealed snapshot file (`<state>/raft/snapshot.bin`), opened
/// with the manager's data keys — for tools that read a manager's snapshot beside it.
pub fn open_snapshot_file(
    sealed: &[u8],
    keys: &DataKeys,
) -> std::result::Result<Vec<u8>, crate::encryption::EncryptionError> {
    keys.open(SNAPSHOT_CONTEXT, sealed, "the snapshot file")
}

/// A record that does not open: the keyring does not match the log (another node's key file,
/// a restored key file without its log, or damage).
fn sealing_error(e: crate::encryption::EncryptionError) -> RaftError {
    RaftError::Corrupt(format!(
        "{e}. The raft log and its data keys (kept beside the node key, in \
         <state>/certificates/node.key) must come from the same manager; if they do, the log \
         is damaged: see the advice for a damaged log (demote, remove and join this manager \
         again, or restore from a backup)"
    ))
}

/// The refusal to start on a log file that redb cannot open (a damaged end, say): guessing
/// which entries it held could make this manager forget entries or votes it acknowledged,
/// and a quorum of such members can lose committed writes. Its peers hold the data.
fn damaged(path: &Path, detail: &str) -> RaftError {
    RaftError::Corrupt(format!(
        "{} is damaged ({detail}); this manager refuses to start rather than guess which \
         entries and votes it held. If the other managers still form a quorum, demote and \
         remove this node from another manager (`shoal node demote`, `shoal node rm`), \
         move this state directory aside and join again with a manager token: it catches \
         up from its peers. If this was the only copy of the cluster's state, keep the \
         file for recovery.",
        path.display()
    ))
}

fn encode<M: protobuf::Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| RaftError::Corrupt(format!("encoding: {e}")))
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M> {
    M::parse_from_bytes(bytes).map_err(|e| RaftError::Corrupt(format!("decoding {what}: {e}")))
}

impl LogDurability for RedbLog {
    fn load(&self) -> Result<PersistedLog> {
        let mut log = PersistedLog::default();
        match std::fs::read(self.snapshot_path()) {
            Ok(bytes) => {
                log.snapshot = self.unseal(&bytes, SNAPSHOT_CONTEXT, "the snapshot file")?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RaftError::io("reading the snapshot", e)),
        }
        let read = self.db.begin_read().map_err(RaftError::storage)?;
        let meta = read.open_table(META).map_err(RaftError::storage)?;
        if let Some(v) = meta.get("hard_state").map_err(RaftError::storage)? {
            log.hard_state =
                self.unseal(v.value(), &meta_context("hard_state"), "the hard state")?;
        }
        if let Some(v) = meta.get("conf_state").map_err(RaftError::storage)? {
            log.conf_state =
                self.unseal(v.value(), &meta_context("conf_state"), "the configuration")?;
        }
        if let Some(v) = meta.get("conf_index").map_err(RaftError::storage)? {
            let plain = self
                .keys()
                .open(
                    &meta_context("conf_index"),
                    v.value(),
                    "the configuration's index",
                )
                .map_err(sealing_error)?;
            let bytes = <[u8; 8]>::try_from(plain.as_slice()).map_err(|_| {
                RaftError::Corrupt("decoding the configuration's index: not 8 bytes".into())
            })?;
            log.conf_index = Some(u64::from_be_bytes(bytes));
        }
        let entries = read.open_table(ENTRIES).map_err(RaftError::storage)?;
        for item in entries.iter().map_err(RaftError::storage)? {
            let (k, v) = item.map_err(RaftError::storage)?;
            let index = k.value();
            log.entries.push(self.unseal(
                v.value(),
                &entry_context(index),
                &format!("log entry {index}"),
            )?);
        }
        // A crash between writing a snapshot and compacting the log leaves entries the
        // snapshot already covers in front; they are harmless but keep the log contiguous
        // with what the snapshot promises.
        let snapshot_index = log.snapshot.get_metadata().index;
        if log
            .entries
            .first()
            .is_some_and(|e| e.index > snapshot_index + 1)
        {
            return Err(RaftError::Corrupt(format!(
                "the log starts at index {} but the snapshot ends at {}: entries are missing",
                log.entries[0].index, snapshot_index
            )));
        }
        Ok(log)
    }

    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<(&ConfState, u64)>,
    ) -> Result<()> {
        crash_point!("raft-log-append-before");
        let write = self.db.begin_write().map_err(RaftError::storage)?;
        {
            let mut table = write.open_table(ENTRIES).map_err(RaftError::storage)?;
            if let Some(first) = entries.first() {
                // Entries from `first.index` on are replaced (a new leader overwrote them).
                table
                    .retain_in(first.index.., |_, _| false)
                    .map_err(RaftError::storage)?;
                for e in entries {
                    table
                        .insert(e.index, self.seal(e, &entry_context(e.index))?.as_slice())
                        .map_err(RaftError::storage)?;
                }
            }
            let mut meta = write.open_table(META).map_err(RaftError::storage)?;
            if let Some(hs) = hard_state {
                meta.insert(
                    "hard_state",
                    self.seal(hs, &meta_context("hard_state"))?.as_slice(),
                )
                .map_err(RaftError::storage)?;
            }
            if let Some((cs, index)) = conf_state {
                self.insert_conf(&mut meta, cs, index)?;
            }
        }
        crash_point!("raft-log-fsync-before");
        // Durability::Immediate (the default): commit returns after the data is on disk.
        write.commit().map_err(RaftError::storage)?;
        crash_point!("raft-log-fsync-after");
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()> {
        crash_point!("raft-snapshot-save-before");
        self.write_snapshot_file(snapshot)?;
        crash_point!("raft-snapshot-save-after");
        let write = self.db.begin_write().map_err(RaftError::storage)?;
        {
            let mut table = write.open_table(ENTRIES).map_err(RaftError::storage)?;
            table
                .retain_in(..first_kept, |_, _| false)
                .map_err(RaftError::storage)?;
        }
        crash_point!("raft-compact-before");
        write.commit().map_err(RaftError::storage)?;
        crash_point!("raft-compact-after");
        Ok(())
    }

    fn install_snapshot(&self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()> {
        self.write_snapshot_file(snapshot)?;
        crash_point!("raft-snapshot-install-saved");
        let meta = snapshot.get_metadata();
        let write = self.db.begin_write().map_err(RaftError::storage)?;
        {
            let mut table = write.open_table(ENTRIES).map_err(RaftError::storage)?;
            table
                .retain_in(0u64.., |_, _| false)
                .map_err(RaftError::storage)?;
            let mut table = write.open_table(META).map_err(RaftError::storage)?;
            table
                .insert(
                    "hard_state",
                    self.seal(hard_state, &meta_context("hard_state"))?
                        .as_slice(),
                )
                .map_err(RaftError::storage)?;
            self.insert_conf(&mut table, meta.get_conf_state(), meta.index)?;
        }
        write.commit().map_err(RaftError::storage)?;
        Ok(())
    }
}

impl RedbLog {
    /// The configuration and the index it took effect at, into the `meta` table.
    fn insert_conf(
        &self,
        meta: &mut redb::Table<&str, &[u8]>,
        conf_state: &ConfState,
        index: u64,
    ) -> Result<()> {
        meta.insert(
            "conf_state",
            self.seal(conf_state, &meta_context("conf_state"))?
                .as_slice(),
        )
        .map_err(RaftError::storage)?;
        let index = self
            .keys()
            .seal(&meta_context("conf_index"), &index.to_be_bytes());
        meta.insert("conf_index", index.as_slice())
            .map_err(RaftError::storage)?;
        Ok(())
    }

    /// Seals `snapshot` and writes it to a temporary file, syncs it, and renames it into place.
    fn write_snapshot_file(&self, snapshot: &Snapshot) -> Result<()> {
        let _file = self.snapshot_file.lock().expect("snapshot file lock");
        let sealed = self.seal(snapshot, SNAPSHOT_CONTEXT)?;
        self.write_snapshot_bytes(&sealed)
    }

    /// Writes `bytes` to a temporary file, syncs it, and renames it into place (the caller
    /// holds `snapshot_file`).
    fn write_snapshot_bytes(&self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| RaftError::io("writing the snapshot", e))?;
            f.write_all(bytes)
                .map_err(|e| RaftError::io("writing the snapshot", e))?;
            f.sync_all()
                .map_err(|e| RaftError::io("syncing the snapshot", e))?;
        }
        std::fs::rename(&tmp, self.snapshot_path())
            .map_err(|e| RaftError::io("installing the snapshot", e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| RaftError::io("syncing the raft directory", e))?;
        Ok(())
    }
}

/// Writes snapshots on a thread of their own, in the order they were taken.
struct SnapshotWriter {
    jobs: Option<std::sync::mpsc::Sender<(Snapshot, u64)>>,
    pending: Arc<(Mutex<usize>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SnapshotWriter {
    fn start(durability: Arc<dyn LogDurability>) -> Self {
        let (jobs, rx) = std::sync::mpsc::channel::<(Snapshot, u64)>();
        let pending = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let done = pending.clone();
        let thread = std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                for (snapshot, first_kept) in rx {
                    if let Err(e) = durability.save_snapshot(&snapshot, first_kept) {
                        // The previous snapshot and the entries since stay on disk: nothing is
                        // lost, the log is only longer until the next snapshot succeeds.
                        tracing::error!("raft: writing a snapshot failed: {e}");
                    }
                    let (count, cvar) = &*done;
                    *count.lock().expect("snapshot counter") -= 1;
                    cvar.notify_all();
                }
            })
            .expect("starting the snapshot thread");
        Self {
            jobs: Some(jobs),
            pending,
            thread: Some(thread),
        }
    }

    fn submit(&self, snapshot: Snapshot, first_kept: u64) {
        *self.pending.0.lock().expect("snapshot counter") += 1;
        if let Some(jobs) = &self.jobs
            && jobs.send((snapshot, first_kept)).is_err()
        {
            *self.pending.0.lock().expect("snapshot counter") -= 1;
        }
    }

    /// Waits until every submitted snapshot is on disk.
    fn flush(&self) {
        let (count, cvar) = &*self.pending;
        let mut n = count.lock().expect("snapshot counter");
        while *n > 0 {
            n = cvar.wait(n).expect("snapshot counter");
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.flush();
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log as raft-rs sees it, backed by a [`LogDurability`].
pub struct LogStore {
    /// Set when raft-rs asked for a snapshot newer than the latest one (a member that was
    /// added after it, or one further behind): the node takes a fresh one.
    snapshot_wanted: std::cell::Cell<bool>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    durability: Arc<dyn LogDurability>,
    writer: SnapshotWriter,
}

impl LogStore {
    /// Loads what `durability` holds.
    pub fn open(durability: Box<dyn LogDurability>) -> Result<Self> {
        let durability: Arc<dyn LogDurability> = Arc::from(durability);
        let log = durability.load()?;
        let meta = log.snapshot.get_metadata();
        let (snapshot_index, snapshot_term) = (meta.index, meta.term);
        let mut entries = log.entries;
        // Keep the log contiguous: drop a prefix the snapshot makes unreachable.
        if entries
            .first()
            .is_some_and(|e| e.index > snapshot_index + 1)
        {
            entries.clear();
        }
        // Keep entries only if they continue the snapshot: the log holds the snapshot's own
        // last entry (same index and term), or starts right after it. Anything else is the
        // log a crash left behind in the middle of installing a snapshot from the leader
        // (`LogDurability::install_snapshot`), which may have diverged from the history the
        // snapshot holds: Raft discards it, as this node had begun to.
        let continues = |entries: &[Entry]| match entries.first() {
            None => true,
            Some(first) if first.index == snapshot_index + 1 => true,
            Some(first) => entries
                .get((snapshot_index - first.index) as usize)
                .is_some_and(|e| e.index == snapshot_index && e.term == snapshot_term),
        };
        if snapshot_index > 0 && !continues(&entries) {
            entries.clear();
        }
        // The commit index is written lazily (with the next entries), so the one on disk may
        // be older than the snapshot; a snapshot only holds committed entries.
        let mut hard_state = log.hard_state;
        hard_state.commit = hard_state.commit.max(snapshot_index);
        // The same interrupted install may leave the hard state of an older term: this node
        // was in at least the snapshot's term. It had cast no vote in that term (a vote is
        // written before it is sent, and the hard state is older than that).
        if hard_state.term < snapshot_term {
            hard_state.term = snapshot_term;
            hard_state.vote = 0;
        }
        // The configuration is the one that took effect last: the stored one, unless the
        // snapshot is newer (an interrupted install again, whose snapshot may add or remove
        // members). A stale configuration would make this node count the wrong quorum.
        let conf_state = match log.conf_index {
            Some(index) if index >= snapshot_index => log.conf_state,
            Some(_) => meta.get_conf_state().clone(),
            // A log written before the configuration's index was recorded.
            None if log.conf_state.voters.is_empty() && snapshot_index > 0 => {
                meta.get_conf_state().clone()
            }
            None => log.conf_state,
        };
        Ok(Self {
            snapshot_wanted: std::cell::Cell::new(false),
            hard_state,
            conf_state,
            snapshot: log.snapshot,
            entries,
            writer: SnapshotWriter::start(durability.clone()),
            durability,
        })
    }

    /// Whether nothing was ever persisted (a node that never joined a cluster).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.snapshot.get_metadata().index == 0
            && self.conf_state.voters.is_empty()
            && self.hard_state.term == 0
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Whether a newer snapshot was asked for since the last call.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// The latest snapshot (empty if none).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn first(&self) -> u64 {
        match self.entries.first() {
            Some(e) => e.index,
            None => self.snapshot.get_metadata().index + 1,
        }
    }

    fn last(&self) -> u64 {
        match self.entries.last() {
            Some(e) => e.index,
            None => self.snapshot.get_metadata().index,
        }
    }

    /// Persists entries and hard state, then makes them visible.
    ///
    /// A hard state that only advances the commit index, with no entries, is kept in memory:
    /// it reaches disk with the next write (see [`LogStore::set_commit`]). Only a new term
    /// or vote needs its own durable write — so a commit costs the leader no extra fsync.
    pub fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        if entries.is_empty()
            && let Some(hs) = hard_state
            && hs.term == self.hard_state.term
            && hs.vote == self.hard_state.vote
        {
            self.set_commit(hs.commit);
            return Ok(());
        }
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        if let Some(first) = entries.first()
            && (first.index < self.first() || first.index > self.last() + 1)
        {
            return Err(RaftError::Corrupt(format!(
                "append at index {} outside the log [{}, {}]",
                first.index,
                self.first(),
                self.last() + 1
            )));
        }
        self.durability.append(entries, hard_state, None)?;
        if let Some(first) = entries.first() {
            let keep = (first.index - self.first()) as usize;
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        crash_point!("raft-log-append-after");
        Ok(())
    }

    /// Persists a new configuration (after the membership change at `index` is applied).
    pub fn set_conf_state(&mut self, conf_state: ConfState, index: u64) -> Result<()> {
        self.durability
            .append(&[], None, Some((&conf_state, index)))?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Records the commit index learned without new entries.
    ///
    /// Kept in memory only: it reaches disk with the next hard state. Losing it in a crash
    /// is safe — a restarted node applies from its snapshot, and learns the commit index
    /// again from the leader (or, alone, commits its log again when it is elected).
    pub fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
        }
    }

    /// Installs a snapshot received from the leader: it replaces the whole log.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        if meta.index < self.snapshot.get_metadata().index {
            return Err(RaftError::Corrupt(format!(
                "snapshot at index {} is older than the one installed ({})",
                meta.index,
                self.snapshot.get_metadata().index
            )));
        }
        let index = meta.index;
        let mut hs = self.hard_state.clone();
        if hs.term < meta.term {
            // A vote cast in an older term is not one in this term.
            hs.term = meta.term;
            hs.vote = 0;
        }
        hs.commit = index;
        let conf_state = meta.get_conf_state().clone();
        // Snapshots this node took itself and is still writing must not land after this one.
        self.writer.flush();
        crash_point!("raft-snapshot-install-before");
        self.durability.install_snapshot(&snapshot, &hs)?;
        crash_point!("raft-snapshot-install-after");
        self.entries.clear();
        self.snapshot = snapshot;
        self.hard_state = hs;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Takes a snapshot at `index` (applied) with `data`, then drops entries older than
    /// `index - keep` (kept for followers a little behind).
    pub fn compact(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
        keep: u64,
    ) -> Result<()> {
        let term = raft::Storage::term(self, index)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        let first_kept = index.saturating_sub(keep).max(self.first()) + 1;
        let first_kept = first_kept.min(index + 1);
        // Written and synced by the snapshot thread, so the Raft thread does not wait for it.
        // Until it is on disk, the disk still holds the previous snapshot and every entry since,
        // which is just as good after a crash; raft-rs reads this one from memory meanwhile.
        self.writer.submit(snapshot.clone(), first_kept);
        let drop = first_kept.saturating_sub(self.first()) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = snapshot;
        Ok(())
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut out = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot.get_metadata();
        let conf = meta.get_conf_state();
        let knows_peer = conf.voters.contains(&to) || conf.learners.contains(&to);
        if meta.index < request_index || !knows_peer {
            // A peer added after the latest snapshot cannot restore it; ask for a new one.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        }
    }

    /// Writes through a log, reopening it from its durability after each step (the log in
    /// use is closed first, as a restarted process would find it).
    fn check_durability(mut make: impl FnMut() -> Box<dyn LogDurability>) {
        let mut log = LogStore::open(make()).unwrap();
        assert!(log.is_empty());
        let hs = HardState {
            term: 1,
            commit: 2,
            ..Default::default()
        };
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], Some(&hs))
            .unwrap();
        // A new leader overwrites index 3.
        log.append(&[entry(3, 2), entry(4, 2)], None).unwrap();
        drop(log);
        let mut log = LogStore::open(make()).unwrap();
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.term(3).unwrap(), 2);
        assert_eq!(log.hard_state().commit, 2);

        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        log.set_conf_state(cs.clone(), 2).unwrap();
        log.compact(3, cs.clone(), b"state at 3".to_vec(), 1)
            .unwrap();
        assert_eq!(log.first_index().unwrap(), 3);
        assert_eq!(log.term(3).unwrap(), 2);
        drop(log);
        let mut log = LogStore::open(make()).unwrap();
        assert_eq!(log.first_index().unwrap(), 3);
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(log.snapshot(3, 1).unwrap().get_data(), b"state at 3");
        // A peer the snapshot does not know needs a newer one.
        assert!(log.snapshot(3, 9).is_err());
        assert!(log.take_snapshot_wanted());
        assert!(matches!(
            log.entries(1, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));

        // A snapshot from the leader replaces the whole log.
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 10;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().set_conf_state(cs);
        snap.set_data(b"state at 10".to_vec().into());
        log.install_snapshot(snap).unwrap();
        drop(log);
        let log = LogStore::open(make()).unwrap();
        assert_eq!(log.first_index().unwrap(), 11);
        assert_eq!(log.last_index().unwrap(), 10);
        assert_eq!(log.hard_state().commit, 10);
        assert_eq!(log.term(10).unwrap(), 3);
    }

    fn voters(ids: &[u64]) -> ConfState {
        ConfState {
            voters: ids.to_vec(),
            ..Default::default()
        }
    }

    fn snapshot_at(index: u64, term: u64, conf: ConfState) -> Snapshot {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = index;
        snap.mut_metadata().term = term;
        snap.mut_metadata().set_conf_state(conf);
        snap.set_data(format!("state at {index}").into_bytes().into());
        snap
    }

    /// A log's durability, fresh for each case: opens it again (as a restarted process
    /// would), and writes only a snapshot file (what a crash in the middle of
    /// [`LogDurability::install_snapshot`] leaves).
    trait Disk {
        fn open(&self) -> Box<dyn LogDurability>;
        fn leave_snapshot_only(&self, snapshot: &Snapshot);
    }

    impl Disk for MemoryLog {
        fn open(&self) -> Box<dyn LogDurability> {
            Box::new(self.clone())
        }
        fn leave_snapshot_only(&self, snapshot: &Snapshot) {
            self.save_snapshot_file_only(snapshot);
        }
    }

    impl Disk for PathBuf {
        fn open(&self) -> Box<dyn LogDurability> {
            Box::new(RedbLog::open(self, test_keys()).unwrap())
        }
        fn leave_snapshot_only(&self, snapshot: &Snapshot) {
            RedbLog::open(self, test_keys())
                .unwrap()
                .write_snapshot_file(snapshot)
                .unwrap();
        }
    }

    /// A follower that missed a membership change while it was behind ({1,2,3} → {1,2,3,4})
    /// held `old_log` and crashed in the middle of installing the leader's `snapshot`.
    fn interrupted_install(disk: &dyn Disk, old_log: &[Entry], snapshot: Snapshot) -> LogStore {
        let mut log = LogStore::open(disk.open()).unwrap();
        let hs = HardState {
            term: 2,
            vote: 3,
            commit: 2,
            ..Default::default()
        };
        log.append(old_log, Some(&hs)).unwrap();
        log.set_conf_state(voters(&[1, 2, 3]), 2).unwrap();
        drop(log);
        disk.leave_snapshot_only(&snapshot);
        LogStore::open(disk.open()).unwrap()
    }

    /// Each case on a fresh disk from `fresh`.
    fn check_interrupted_installs(fresh: &mut dyn FnMut() -> Box<dyn Disk>) {
        // The old log diverged from the snapshot's history (its entry 5 is of term 2, the
        // snapshot's of term 4): dropped; the snapshot's configuration and term win.
        let old: Vec<Entry> = (1..=6).map(|i| entry(i, 2)).collect();
        let log = interrupted_install(&*fresh(), &old, snapshot_at(5, 4, voters(&[1, 2, 3, 4])));
        assert_eq!(log.conf_state().voters, vec![1, 2, 3, 4]);
        assert_eq!(log.first_index().unwrap(), 6);
        assert_eq!(log.last_index().unwrap(), 5);
        assert_eq!(log.term(5).unwrap(), 4);
        let hs = log.hard_state();
        assert_eq!((hs.term, hs.vote, hs.commit), (4, 0, 5));
        drop(log);

        // The old log ended before the snapshot: nothing of it continues the snapshot.
        let old: Vec<Entry> = (1..=3).map(|i| entry(i, 2)).collect();
        let log = interrupted_install(&*fresh(), &old, snapshot_at(9, 4, voters(&[1, 2, 3, 4])));
        assert_eq!(log.conf_state().voters, vec![1, 2, 3, 4]);
        assert_eq!(log.first_index().unwrap(), 10);
        assert_eq!(log.last_index().unwrap(), 9);
        drop(log);

        // The old log held the snapshot's last entry: Raft keeps what follows it.
        let old: Vec<Entry> = (1..=7)
            .map(|i| entry(i, if i <= 5 { 2 } else { 3 }))
            .collect();
        let log = interrupted_install(&*fresh(), &old, snapshot_at(5, 2, voters(&[1, 2, 3, 4])));
        assert_eq!(log.last_index().unwrap(), 7);
        assert_eq!(log.term(7).unwrap(), 3);
        assert_eq!(log.conf_state().voters, vec![1, 2, 3, 4]);
        assert_eq!(log.hard_state().term, 2);
    }

    #[test]
    fn memory_log_recovers_an_interrupted_snapshot_install() {
        check_interrupted_installs(&mut || Box::new(MemoryLog::new()));
    }

    #[test]
    fn redb_log_recovers_an_interrupted_snapshot_install() {
        let dir = tempfile::tempdir().unwrap();
        let mut case = 0;
        check_interrupted_installs(&mut || {
            case += 1;
            Box::new(dir.path().join(format!("raft-{case}")))
        });
    }

    /// A membership change applied after the latest snapshot is kept over the snapshot's.
    #[test]
    fn a_configuration_newer_than_the_snapshot_is_kept() {
        let shared = MemoryLog::new();
        let mut log = LogStore::open(Box::new(shared.clone())).unwrap();
        let hs = HardState {
            term: 1,
            commit: 4,
            ..Default::default()
        };
        let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1)).collect();
        log.append(&entries, Some(&hs)).unwrap();
        log.set_conf_state(voters(&[1, 2]), 1).unwrap();
        log.compact(3, voters(&[1, 2]), b"state at 3".to_vec(), 0)
            .unwrap();
        log.set_conf_state(voters(&[1, 2, 3]), 4).unwrap();
        drop(log);
        let log = LogStore::open(Box::new(shared)).unwrap();
        assert_eq!(log.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(log.last_index().unwrap(), 4);
    }

    #[test]
    fn memory_log_keeps_what_was_persisted() {
        let shared = MemoryLog::new();
        check_durability(|| Box::new(shared.clone()));
    }

    #[test]
    fn redb_log_keeps_what_was_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        check_durability(|| Box::new(RedbLog::open(&path, test_keys()).unwrap()));
    }

    /// The same keyring each time a test opens a log again.
    fn test_keys() -> DataKeys {
        DataKeys::single(crate::encryption::DataKey::from_bytes(1, [7; 32]))
    }

    /// Every file under `dir`, read whole.
    fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn canary_entry(index: u64, canary: &[u8]) -> Entry {
        let mut e = entry(index, 1);
        e.set_data(canary.to_vec().into());
        e
    }

    #[test]
    fn nothing_the_log_holds_is_on_disk_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let canary = b"canary-5f1d2e-never-on-disk";
        let log = RedbLog::open(dir.path(), test_keys()).unwrap();
        let entries: Vec<Entry> = (1..=50).map(|i| canary_entry(i, canary)).collect();
        log.append(
            &entries,
            Some(&HardState::default()),
            Some((&voters(&[1]), 1)),
        )
        .unwrap();
        let mut snap = snapshot_at(40, 1, voters(&[1]));
        snap.set_data(canary.to_vec().into());
        log.save_snapshot(&snap, 30).unwrap();
        drop(log);
        let files = files_under(dir.path());
        assert!(files.iter().any(|(p, _)| p.ends_with(SNAPSHOT_FILE)));
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary),
                "{} holds the canary in clear",
                path.display()
            );
        }
        // And it all reads back.
        let log = RedbLog::open(dir.path(), test_keys())
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(log.entries.len(), 21);
        assert_eq!(log.entries[0].get_data(), canary);
        assert_eq!(log.snapshot.get_data(), canary);
    }

    #[test]
    fn a_log_does_not_open_with_another_managers_keys() {
        let dir = tempfile::tempdir().unwrap();
        let log = RedbLog::open(dir.path(), test_keys()).unwrap();
        log.append(&[entry(1, 1)], Some(&HardState::default()), None)
            .unwrap();
        drop(log);
        let other = DataKeys::single(crate::encryption::DataKey::from_bytes(1, [8; 32]));
        let err = RedbLog::open(dir.path(), other)
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("must come from the same manager"), "{err}");
    }

    #[test]
    fn a_data_key_rotates_while_the_log_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(RedbLog::open(dir.path(), test_keys()).unwrap());
        log.append(&[entry(1, 1)], Some(&HardState::default()), None)
            .unwrap();
        log.save_snapshot(&snapshot_at(1, 1, voters(&[1])), 2)
            .unwrap();
        let persisted: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        // Appends go on while the key rotates (bounded: 300 entries).
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 2..=300 {
                    log.append(&[entry(i, 1)], None, None).unwrap();
                }
            })
        };
        let recorded = persisted.clone();
        let keys = log
            .rotate_data_key(&|k: &DataKeys| {
                recorded.lock().unwrap().push(k.ids());
                Ok(())
            })
            .unwrap();
        writer.join().unwrap();
        // First the new key with the old one, then the new key alone.
        assert_eq!(*persisted.lock().unwrap(), vec![vec![2, 1], vec![2]]);
        assert_eq!(keys.ids(), vec![2]);
        drop(log);
        // The new key alone opens everything, the old one nothing.
        let loaded = RedbLog::open(dir.path(), keys).unwrap().load().unwrap();
        assert_eq!(loaded.entries.len(), 299);
        assert_eq!(loaded.snapshot.get_metadata().index, 1);
        assert!(
            RedbLog::open(dir.path(), test_keys())
                .unwrap()
                .load()
                .is_err()
        );
    }
}
