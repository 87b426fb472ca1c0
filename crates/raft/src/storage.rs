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
//! `raft-snapshot-install-*` around installing a snapshot received from the leader.
//!
//! Invariants: entries are contiguous; `first_index` is the first entry kept (entries up to
//! the snapshot may be kept for slow followers); the snapshot always covers every index
//! before `first_index`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{RaftError, Result};
use crate::failpoints::crash_point;

/// What a node had persisted, as loaded on start.
#[derive(Clone, Debug, Default)]
pub struct PersistedLog {
    pub hard_state: HardState,
    pub conf_state: ConfState,
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
    /// `entries`, and sets the hard state and configuration when given.
    fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        conf_state: Option<&ConfState>,
    ) -> Result<()>;

    /// Durably stores `snapshot` as the latest one and drops the entries before
    /// `first_kept` (all of them when the snapshot is newer than the log).
    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()>;
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
        conf_state: Option<&ConfState>,
    ) -> Result<()> {
        let mut state = self.state.lock().expect("memory log lock");
        if let Some(first) = entries.first() {
            state.entries.retain(|e| e.index < first.index);
            state.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            state.hard_state = hs.clone();
        }
        if let Some(cs) = conf_state {
            state.conf_state = cs.clone();
        }
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()> {
        let mut state = self.state.lock().expect("memory log lock");
        state.snapshot = snapshot.clone();
        state.entries.retain(|e| e.index >= first_kept);
        Ok(())
    }
}

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The log in a redb database, the snapshot in a file beside it.
pub struct RedbLog {
    db: redb::Database,
    dir: PathBuf,
}

impl RedbLog {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
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
        })
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }
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
            Ok(bytes) => log.snapshot = decode(&bytes, "the snapshot file")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RaftError::io("reading the snapshot", e)),
        }
        let read = self.db.begin_read().map_err(RaftError::storage)?;
        let meta = read.open_table(META).map_err(RaftError::storage)?;
        if let Some(v) = meta.get("hard_state").map_err(RaftError::storage)? {
            log.hard_state = decode(v.value(), "the hard state")?;
        }
        if let Some(v) = meta.get("conf_state").map_err(RaftError::storage)? {
            log.conf_state = decode(v.value(), "the configuration")?;
        }
        let entries = read.open_table(ENTRIES).map_err(RaftError::storage)?;
        for item in entries.iter().map_err(RaftError::storage)? {
            let (_, v) = item.map_err(RaftError::storage)?;
            log.entries.push(decode(v.value(), "a log entry")?);
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
        conf_state: Option<&ConfState>,
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
                        .insert(e.index, encode(e)?.as_slice())
                        .map_err(RaftError::storage)?;
                }
            }
            let mut meta = write.open_table(META).map_err(RaftError::storage)?;
            if let Some(hs) = hard_state {
                meta.insert("hard_state", encode(hs)?.as_slice())
                    .map_err(RaftError::storage)?;
            }
            if let Some(cs) = conf_state {
                meta.insert("conf_state", encode(cs)?.as_slice())
                    .map_err(RaftError::storage)?;
            }
        }
        crash_point!("raft-log-fsync-before");
        // Durability::Immediate (the default): commit returns after the data is on disk.
        write.commit().map_err(RaftError::storage)?;
        crash_point!("raft-log-fsync-after");
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &Snapshot, first_kept: u64) -> Result<()> {
        use std::io::Write;
        crash_point!("raft-snapshot-save-before");
        let bytes = encode(snapshot)?;
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| RaftError::io("writing the snapshot", e))?;
            f.write_all(&bytes)
                .map_err(|e| RaftError::io("writing the snapshot", e))?;
            f.sync_all()
                .map_err(|e| RaftError::io("syncing the snapshot", e))?;
        }
        std::fs::rename(&tmp, self.snapshot_path())
            .map_err(|e| RaftError::io("installing the snapshot", e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| RaftError::io("syncing the raft directory", e))?;
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
        let snapshot_index = log.snapshot.get_metadata().index;
        let mut entries = log.entries;
        // Keep the log contiguous: drop a prefix the snapshot makes unreachable.
        if entries
            .first()
            .is_some_and(|e| e.index > snapshot_index + 1)
        {
            entries.clear();
        }
        // The commit index is written lazily (with the next entries), so the one on disk may
        // be older than the snapshot; a snapshot only holds committed entries.
        let mut hard_state = log.hard_state;
        hard_state.commit = hard_state.commit.max(snapshot_index);
        let mut conf_state = log.conf_state;
        if conf_state.voters.is_empty() && log.snapshot.get_metadata().index > 0 {
            conf_state = log.snapshot.get_metadata().get_conf_state().clone();
        }
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

    /// Persists a new configuration (after a membership change is applied).
    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<()> {
        self.durability.append(&[], None, Some(&conf_state))?;
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
        hs.term = hs.term.max(meta.term);
        hs.commit = index;
        let conf_state = meta.get_conf_state().clone();
        // Snapshots this node took itself and is still writing must not land after this one.
        self.writer.flush();
        crash_point!("raft-snapshot-install-before");
        self.durability.save_snapshot(&snapshot, index + 1)?;
        self.durability.append(&[], Some(&hs), Some(&conf_state))?;
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
        log.set_conf_state(cs.clone()).unwrap();
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

    #[test]
    fn memory_log_keeps_what_was_persisted() {
        let shared = MemoryLog::new();
        check_durability(|| Box::new(shared.clone()));
    }

    #[test]
    fn redb_log_keeps_what_was_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        check_durability(|| Box::new(RedbLog::open(&path).unwrap()));
    }
}
