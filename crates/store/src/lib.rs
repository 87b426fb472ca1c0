//! Shoal's object store: the cluster state every manager keeps in memory.
//!
//! The store holds seven kinds of objects — nodes, services, tasks, networks, clusters,
//! secrets and configs — in typed tables with indexes, and changes them only through
//! transactions. It does no I/O: durability and replication come from the [`Proposer`] a store
//! is built with (Raft, on managers) and from snapshots ([`Store::snapshot`]).
//!
//! ```text
//!   Store::update(|tx| ...)          Store::view(|tx| ...)      Store::watch(filter)
//!        │ closure runs on a view          │                          ▲ commits, in order
//!        ▼ + its own changes               ▼                          │
//!   ChangeSet ──► Proposer ──► StateMachine::apply ──► Tables ──► watch queue (bounded)
//!                 (local: at once;        all or nothing,
//!                  raft: via the log)     same verdict on every manager
//! ```
//!
//! Invariants:
//! - Every applied transaction raises the store version by one, and every object it wrote
//!   takes that version (`Meta.version`). Versions only grow.
//! - An update or removal names the version it read; if the object has changed since, the
//!   transaction fails with "update out of sequence" and writes nothing. Objects a write
//!   transaction read by ID are checked the same way.
//! - A transaction applies all of its changes or none.
//! - Watchers see committed changes in commit order. A watcher that falls behind the bounded
//!   queue is told it lagged, never silently skipped, and writers never wait for watchers.
//! - A watcher can resume after any version still in the bounded history of recent commits
//!   (`Store::watch_from`): it gets every commit after it, then the live ones, with no gap and
//!   no duplicate; a version older than the history, or from before a restore, is refused.
//! - A snapshot is the whole content at one version, objects sorted by ID: equal content
//!   encodes to equal bytes, and restoring it gives back equal content and indexes.
//!
//! Where this departs from SwarmKit's `MemoryStore` (go-memdb): SwarmKit holds one update lock
//! across each Raft round trip, which serialises every write in the cluster (about 1.5k
//! transactions/s whatever the concurrency). Here conflicts are decided when a transaction is
//! applied, from the versions it carries, so proposals pipeline and share fsyncs. Objects are
//! stored once, behind `Arc`; readers get cheap shared references and indexes refer to rows by
//! number, which keeps the memory per object small.

mod error;
mod object;
mod store;
mod table;
mod tables;
mod transaction;
mod tx;
mod watch;

pub use error::{ErrorClass, Result, StoreError};
pub use object::{Index, Object, StoreObject, kind_name};
pub use store::{
    Batch, DEFAULT_WATCH_CAPACITY, LocalProposer, ProposeFuture, Proposer, StateMachine, Store,
};
pub use table::Table;
pub use tables::Tables;
pub use transaction::{Change, ChangeSet};
pub use tx::{By, Mark, PendingChanges, ReadTx, Reader, WriteTx};
pub use watch::{
    Action, Commit, DEFAULT_HISTORY, Event, Filter, HistoryLimits, ResumeError, Subscription,
    WatchError,
};
#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
