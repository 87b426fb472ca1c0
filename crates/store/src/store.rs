//! The store handle: views, write transactions, batches, watches, snapshots.
//!
//! A [`Store`] pairs the [`StateMachine`] (the tables behind a read-write lock, plus the watch
//! queue) with a [`Proposer`] that decides how a transaction gets committed. A write runs the
//! caller's closure against a consistent view, collects its changes, releases the lock and
//! hands the changes to the proposer; the call returns once the changes are applied locally.
//!
//! - With the [`LocalProposer`] the changes are applied at once: a single-node store.
//! - With Raft (a later crate) the proposer appends the transaction to the replicated log; the
//!   Raft driver applies committed entries to the same state machine on every manager.
//!
//! No lock is held while a proposal is in flight, so concurrent transactions pipeline; the
//! state machine's `apply` refuses the ones that were built from data that changed meanwhile.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use shoal_api::clock::{Clock, SystemClock};
use shoal_api::defaults::{MAX_CHANGES_PER_TRANSACTION, MAX_TRANSACTION_BYTES};
use shoal_api::v1::{ObjectKind, StoreSnapshot};
use tokio::sync::broadcast;

use crate::error::{Result, StoreError};
use crate::tables::Tables;
use crate::transaction::ChangeSet;
use crate::tx::{PendingChanges, ReadTx, WriteTx};
use crate::watch::{Commit, Filter, History, HistoryLimits, ResumeError, Subscription};

/// Commits the watch queue holds before a slow subscriber is told it lagged.
pub const DEFAULT_WATCH_CAPACITY: usize = 4096;

/// The store's content and its watch queue. Raft applies committed entries here.
pub struct StateMachine {
    tables: RwLock<Tables>,
    events: broadcast::Sender<Arc<Commit>>,
    /// Recent commits, for watches that resume. Changed only under the tables' write lock
    /// (lock order: tables, then history).
    history: Mutex<History>,
}

impl StateMachine {
    /// A state machine with the default watch history ([`crate::watch::DEFAULT_HISTORY`]).
    pub fn new(watch_capacity: usize) -> Self {
        Self::with_history(watch_capacity, HistoryLimits::default())
    }

    /// A state machine keeping `history` of recent commits for watches that resume.
    pub fn with_history(watch_capacity: usize, history: HistoryLimits) -> Self {
        let (events, _) = broadcast::channel(watch_capacity.max(1));
        Self {
            tables: RwLock::new(Tables::default()),
            events,
            history: Mutex::new(History::new(history)),
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .expect("watch history lock poisoned: a panic happened while applying")
    }

    /// The oldest version a watch can resume from.
    pub fn history_floor(&self) -> u64 {
        let _tables = self.read();
        self.history().floor()
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables
            .read()
            .expect("store lock poisoned: a panic happened while applying")
    }

    /// Applies a transaction whole or not at all and publishes its events. Returns the new
    /// store version.
    pub fn apply(&self, changes: ChangeSet) -> Result<u64> {
        let mut tables = self
            .tables
            .write()
            .expect("store lock poisoned: a panic happened while applying");
        let (version, events) = tables.apply(changes)?;
        // Published under the write lock, so subscribers see commits in version order and a
        // subscription taken under a read lock starts exactly after the version it viewed.
        let commit = Arc::new(Commit {
            version,
            events,
            reset: false,
        });
        self.history().push(commit.clone());
        let _ = self.events.send(commit);
        Ok(version)
    }

    /// Replaces the whole content with `snapshot`. Every subscription ends with `Reset`.
    pub fn restore(&self, snapshot: StoreSnapshot) -> Result<()> {
        let restored = Tables::from_snapshot(snapshot)?;
        let mut tables = self
            .tables
            .write()
            .expect("store lock poisoned: a panic happened while applying");
        *tables = restored;
        self.history().reset(tables.version());
        let _ = self.events.send(Arc::new(Commit {
            version: tables.version(),
            events: Vec::new(),
            reset: true,
        }));
        Ok(())
    }

    /// The whole content at one version, objects sorted by ID.
    pub fn snapshot(&self) -> StoreSnapshot {
        self.read().snapshot()
    }

    /// The whole content at one version, encoded as a `StoreSnapshot` without copying the
    /// objects.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.read().encode_snapshot()
    }

    pub fn version(&self) -> u64 {
        self.read().version()
    }

    /// Number of objects in the store.
    pub fn object_count(&self) -> usize {
        self.read().object_count()
    }
}

/// A future resolving once a proposal is applied locally, to the store version it produced.
pub type ProposeFuture = Pin<Box<dyn Future<Output = Result<u64>> + Send>>;

/// Gets transactions committed.
pub trait Proposer: Send + Sync + 'static {
    /// Commits `changes` and resolves once they are applied to `state` (or refused).
    fn propose(&self, state: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture;
}

/// Commits by applying at once: a store on one node, without replication.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalProposer;

impl Proposer for LocalProposer {
    fn propose(&self, state: &Arc<StateMachine>, changes: ChangeSet) -> ProposeFuture {
        let result = state.apply(changes);
        Box::pin(std::future::ready(result))
    }
}

/// A handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    state: Arc<StateMachine>,
    proposer: Arc<dyn Proposer>,
    clock: Arc<dyn Clock>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A single-node store on the system clock.
    pub fn new() -> Self {
        Self::with(
            Arc::new(LocalProposer),
            Arc::new(SystemClock),
            DEFAULT_WATCH_CAPACITY,
        )
    }

    pub fn with(proposer: Arc<dyn Proposer>, clock: Arc<dyn Clock>, watch_capacity: usize) -> Self {
        Self {
            state: Arc::new(StateMachine::new(watch_capacity)),
            proposer,
            clock,
        }
    }

    /// A store over an existing state machine (the one a Raft node applies to).
    pub fn with_state(
        state: Arc<StateMachine>,
        proposer: Arc<dyn Proposer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            state,
            proposer,
            clock,
        }
    }

    /// The state machine, for the replication layer to apply committed entries to.
    pub fn state_machine(&self) -> &Arc<StateMachine> {
        &self.state
    }

    /// The current store version.
    pub fn version(&self) -> u64 {
        self.state.version()
    }

    /// Runs `f` on a consistent view of the store.
    pub fn view<R>(&self, f: impl FnOnce(&ReadTx<'_>) -> R) -> R {
        let tables = self.state.read();
        f(&ReadTx { tables: &tables })
    }

    /// Subscribes to the changes committed from now on.
    pub fn watch(&self, filter: Filter) -> Subscription {
        Subscription::new(self.state.events.subscribe(), filter)
    }

    /// Subscribes to every change committed after store version `version`: first the ones
    /// already committed (from the history), then the live ones, with no gap and no
    /// duplicate. Refused if the history no longer holds the commits right after `version`
    /// (or the store was restored from a snapshot since), or if the store has not reached
    /// `version`.
    pub fn watch_from(
        &self,
        version: u64,
        filter: Filter,
    ) -> std::result::Result<Subscription, ResumeError> {
        // Under the read lock no commit is applied or published: the replay ends exactly
        // where the live subscription starts.
        let tables = self.state.read();
        let replay = self.state.history().since(version, tables.version())?;
        Ok(Subscription::resumed(
            self.state.events.subscribe(),
            filter,
            replay,
        ))
    }

    /// Runs `f` on a view and subscribes to the changes after that view, atomically: no change
    /// is missed between the two, and none is seen twice.
    pub fn view_and_watch<R>(
        &self,
        filter: Filter,
        f: impl FnOnce(&ReadTx<'_>) -> R,
    ) -> (R, Subscription) {
        let tables = self.state.read();
        let subscription = Subscription::new(self.state.events.subscribe(), filter);
        (f(&ReadTx { tables: &tables }), subscription)
    }

    fn build<R>(
        &self,
        pending: &mut PendingChanges,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<R>,
    ) -> Result<R> {
        let tables = self.state.read();
        let mut tx = WriteTx::new(&tables, pending, self.clock.timestamp());
        f(&mut tx)
    }

    async fn commit(&self, changes: ChangeSet) -> Result<u64> {
        self.proposer.propose(&self.state, changes).await
    }

    /// Runs `f` in a write transaction and commits its changes, all or nothing. If `f` fails,
    /// nothing is written. A transaction that changes nothing commits nothing.
    pub async fn update<R>(&self, f: impl FnOnce(&mut WriteTx<'_>) -> Result<R>) -> Result<R> {
        let mut pending = PendingChanges::default();
        let result = self.build(&mut pending, f)?;
        if pending.is_empty() {
            return Ok(result);
        }
        if pending.bytes() > MAX_TRANSACTION_BYTES {
            return Err(StoreError::TooLarge {
                bytes: pending.bytes(),
                limit: MAX_TRANSACTION_BYTES,
            });
        }
        self.commit(pending.take()).await?;
        Ok(result)
    }

    /// A batch: many small updates committed as few transactions as the size limits allow.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            pending: PendingChanges::journaled(),
            transactions: 0,
            inflight: Default::default(),
        }
    }

    /// The whole content at one version.
    pub fn snapshot(&self) -> StoreSnapshot {
        self.state.snapshot()
    }

    /// Replaces the whole content with `snapshot`.
    pub fn restore(&self, snapshot: StoreSnapshot) -> Result<()> {
        self.state.restore(snapshot)
    }
}

/// Groups many updates into transactions of at most [`MAX_CHANGES_PER_TRANSACTION`] changes
/// and [`MAX_TRANSACTION_BYTES`] bytes. Each `update` is atomic on its own; the batch as a
/// whole is not (as with SwarmKit's `Batch`): after an error, the transactions proposed
/// before it — including ones still in flight when the error is returned — may commit.
pub struct Batch<'s> {
    store: &'s Store,
    pending: PendingChanges,
    transactions: usize,
    /// Transactions proposed but not yet known applied, oldest first, with the objects they
    /// write: a batch keeps a few in flight so that replication overlaps with building the
    /// next one.
    inflight: std::collections::VecDeque<(ProposeFuture, HashSet<(ObjectKind, String)>)>,
}

/// Transactions of one batch in flight at once.
const MAX_INFLIGHT: usize = 8;

impl Batch<'_> {
    /// Adds the changes made by `f`. A full transaction is proposed before `f` runs; if `f`
    /// itself overflows a transaction that already holds changes, those are proposed and `f`
    /// runs again on a fresh view (so `f` may run twice). If `f` touches an object that a
    /// transaction still in flight writes, `f` runs again once those are applied, so it never
    /// acts on a view that misses the batch's own earlier writes.
    ///
    /// An error of a transaction in flight is returned by a later `update` or by `commit`.
    pub async fn update(
        &mut self,
        mut f: impl FnMut(&mut WriteTx<'_>) -> Result<()>,
    ) -> Result<()> {
        if self.pending.len() >= MAX_CHANGES_PER_TRANSACTION
            || self.pending.bytes() >= MAX_TRANSACTION_BYTES
        {
            self.flush().await?;
        }
        let mark = self.pending.mark();
        let had_changes = !self.pending.is_empty();
        let built = self.store.build(&mut self.pending, &mut f);
        // Whether it succeeded or not, an update that touched objects of a transaction in
        // flight saw a view without them: wait for them and run it again.
        if !self.inflight.is_empty() && self.touches_inflight(mark) {
            self.pending.rollback(mark);
            self.drain().await?;
            let mark = self.pending.mark();
            if let Err(e) = self.store.build(&mut self.pending, &mut f) {
                self.pending.rollback(mark);
                return Err(e);
            }
        } else if let Err(e) = built {
            self.pending.rollback(mark);
            return Err(e);
        }
        let over = self.pending.len() > MAX_CHANGES_PER_TRANSACTION
            || self.pending.bytes() > MAX_TRANSACTION_BYTES;
        if !over {
            return Ok(());
        }
        if had_changes {
            self.pending.rollback(mark);
            self.flush().await?;
            self.drain().await?;
            let mark = self.pending.mark();
            if let Err(e) = self.store.build(&mut self.pending, &mut f) {
                self.pending.rollback(mark);
                return Err(e);
            }
        }
        if self.pending.bytes() > MAX_TRANSACTION_BYTES {
            let bytes = self.pending.bytes();
            self.pending = PendingChanges::journaled();
            return Err(StoreError::TooLarge {
                bytes,
                limit: MAX_TRANSACTION_BYTES,
            });
        }
        // A single update with more changes than the limit is committed whole: splitting it
        // would break its atomicity.
        Ok(())
    }

    /// Whether the changes made since `mark` touch what a transaction in flight writes.
    /// (Objects an update modifies after touching them in an earlier update of the same
    /// pending transaction were already checked then.)
    fn touches_inflight(&self, mark: crate::tx::Mark) -> bool {
        self.inflight
            .iter()
            .any(|(_, written)| self.pending.touches_since(mark, written))
    }

    /// Proposes what is pending without waiting for it, keeping at most `MAX_INFLIGHT`
    /// transactions in flight.
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let changes = self.pending.take();
        let written = changes
            .changes
            .iter()
            .map(|c| (c.object.kind(), c.object.id().to_string()))
            .collect();
        self.transactions += 1;
        let future = self.store.proposer.propose(&self.store.state, changes);
        self.inflight.push_back((future, written));
        while self.inflight.len() > MAX_INFLIGHT {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<()> {
        if let Some((future, _)) = self.inflight.pop_front() {
            future.await?;
        }
        Ok(())
    }

    /// Waits for every transaction in flight.
    async fn drain(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    /// Commits what is pending; returns the number of transactions the batch committed.
    pub async fn commit(mut self) -> Result<usize> {
        self.flush().await?;
        self.drain().await?;
        Ok(self.transactions)
    }
}
