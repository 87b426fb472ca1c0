//! The watch queue: committed changes, in commit order, to every subscriber.
//!
//! Each applied transaction is published as one [`Commit`] holding its events, so a subscriber
//! sees whole transactions and the store version each one produced. Publishing never waits for
//! subscribers: the queue is a bounded ring (`tokio::sync::broadcast`) shared by all of them,
//! so fan-out costs one slot per commit whatever the number of subscribers. A subscriber that
//! falls further behind than the ring holds has missed changes; from then on it only gets
//! [`WatchError::Lagged`] and must read the store again and subscribe anew (level-triggered
//! consumers do exactly this). A restore from a snapshot also ends every subscription this way.
//!
//! Filtering by kind, action and predicate happens on the subscriber's side, so one slow or
//! expensive filter never delays the writer or other subscribers.
//!
//! **History.** Besides the ring, the store keeps the most recent commits in a bounded
//! history so that a watcher can *resume*: [`crate::Store::watch_from`] replays every
//! commit after a given version, then continues live, with no gap and no duplicate (the
//! replay is taken and the live subscription opened under one read lock, and commits are
//! published under the write lock). The history holds at most [`HistoryLimits::commits`]
//! commits and [`HistoryLimits::events`] events (by default 10,000 and 50,000), whichever
//! bound is reached first; older commits are dropped from the front. It is bounded by counts
//! rather than bytes because measuring bytes would cost an encode-length walk of every object
//! on the apply path. The objects are the store's shared ones, so the history costs about
//! 40 bytes per event plus the old versions of objects since updated or removed (which the
//! tables no longer hold) — the same order as the Raft log a manager keeps in memory between
//! snapshots. A restore from a snapshot empties the history: no resume reaches back across it.

use std::collections::VecDeque;
use std::sync::Arc;

use shoal_api::v1::ObjectKind;
use tokio::sync::broadcast;

use crate::object::Object;

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Update,
    Remove,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Remove => "remove",
        }
    }
}

/// One committed change. For updates `old` is the object before the change; for removals
/// `object` is the object as it was removed.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub action: Action,
    pub object: Object,
    pub old: Option<Object>,
}

/// The events of one applied transaction.
#[derive(Debug)]
pub struct Commit {
    /// The store version this commit produced.
    pub version: u64,
    pub events: Vec<Event>,
    /// Set when the whole store was replaced (restore from a snapshot).
    pub reset: bool,
}

/// Why a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("the watcher fell behind and missed changes; read the store again and resubscribe")]
    Lagged,
    #[error("the store was replaced from a snapshot; read it again and resubscribe")]
    Reset,
    #[error("the store was closed")]
    Closed,
}

type Predicate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// Which events a subscriber wants. The default matches every event.
#[derive(Clone, Default)]
pub struct Filter {
    kinds: Vec<ObjectKind>,
    actions: Vec<Action>,
    predicates: Vec<Predicate>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("kinds", &self.kinds)
            .field("actions", &self.actions)
            .field("predicates", &self.predicates.len())
            .finish()
    }
}

impl Filter {
    pub fn all() -> Self {
        Self::default()
    }

    /// Also match objects of `kind` (no kind named: every kind).
    pub fn kind(mut self, kind: ObjectKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Also match `action` (no action named: every action).
    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Only match events for which `predicate` holds.
    pub fn predicate(mut self, predicate: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.predicates.push(Arc::new(predicate));
        self
    }

    pub fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.object.kind()))
            && (self.actions.is_empty() || self.actions.contains(&event.action))
            && self.predicates.iter().all(|p| p(event))
    }
}

/// Why a watch cannot resume from the version it asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The commits right after `requested` are no longer held: the history was trimmed past
    /// them, or the store was restored from a snapshot since.
    #[error(
        "version {requested} is older than the watch history, which can resume from version {oldest} on"
    )]
    TooOld { requested: u64, oldest: u64 },
    /// The store has not reached `requested` (yet).
    #[error("version {requested} is ahead of this store, which is at version {current}")]
    Future { requested: u64, current: u64 },
}

/// How much of the recent past the store keeps for watchers to resume from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many commits.
    pub commits: usize,
    /// At most this many events across the commits held.
    pub events: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        DEFAULT_HISTORY
    }
}

/// The default history: the last 10,000 commits (SwarmKit's default snapshot interval, in
/// Raft entries), and at most 50,000 events.
pub const DEFAULT_HISTORY: HistoryLimits = HistoryLimits {
    commits: 10_000,
    events: 50_000,
};

/// The most recent commits, oldest first. Versions in it are consecutive: `floor + 1` up to
/// the store's version.
#[derive(Debug)]
pub(crate) struct History {
    commits: VecDeque<Arc<Commit>>,
    events: usize,
    /// Every commit after this version is held.
    floor: u64,
    limits: HistoryLimits,
}

impl History {
    pub(crate) fn new(limits: HistoryLimits) -> Self {
        Self {
            commits: VecDeque::new(),
            events: 0,
            floor: 0,
            limits,
        }
    }

    /// Records a commit applied on top of the ones held.
    pub(crate) fn push(&mut self, commit: Arc<Commit>) {
        self.events += commit.events.len();
        self.commits.push_back(commit);
        while self.commits.len() > self.limits.commits || self.events > self.limits.events {
            let Some(oldest) = self.commits.pop_front() else {
                break;
            };
            self.events -= oldest.events.len();
            self.floor = oldest.version;
        }
    }

    /// Forgets everything: the store now holds other content, at `version`.
    pub(crate) fn reset(&mut self, version: u64) {
        self.commits.clear();
        self.events = 0;
        self.floor = version;
    }

    /// The oldest version a watch can resume from.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// The commits after `version`, for a store now at `current`.
    pub(crate) fn since(
        &self,
        version: u64,
        current: u64,
    ) -> Result<VecDeque<Arc<Commit>>, ResumeError> {
        if version > current {
            return Err(ResumeError::Future {
                requested: version,
                current,
            });
        }
        if version < self.floor {
            return Err(ResumeError::TooOld {
                requested: version,
                oldest: self.floor,
            });
        }
        let start = self.commits.partition_point(|c| c.version <= version);
        Ok(self.commits.range(start..).cloned().collect())
    }
}

/// A subscriber's end of the watch queue.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Commit>>,
    filter: Filter,
    /// Commits from the history still to read, before the live ones (a resumed watch).
    replay: VecDeque<Arc<Commit>>,
    /// Matching events of the commit being read, and that commit's version.
    pending: VecDeque<(u64, Event)>,
    ended: Option<WatchError>,
}

impl Subscription {
    pub(crate) fn new(receiver: broadcast::Receiver<Arc<Commit>>, filter: Filter) -> Self {
        Self::resumed(receiver, filter, VecDeque::new())
    }

    /// A subscription that reads `replay` first, then the live commits of `receiver`.
    pub(crate) fn resumed(
        receiver: broadcast::Receiver<Arc<Commit>>,
        filter: Filter,
        replay: VecDeque<Arc<Commit>>,
    ) -> Self {
        Self {
            receiver,
            filter,
            replay,
            pending: VecDeque::new(),
            ended: None,
        }
    }

    fn take(&mut self, commit: &Commit) -> Result<(), WatchError> {
        if commit.reset {
            self.ended = Some(WatchError::Reset);
            return Err(WatchError::Reset);
        }
        self.pending.extend(
            commit
                .events
                .iter()
                .filter(|e| self.filter.matches(e))
                .map(|e| (commit.version, e.clone())),
        );
        Ok(())
    }

    fn fail(&mut self, err: broadcast::error::RecvError) -> WatchError {
        let e = match err {
            broadcast::error::RecvError::Lagged(_) => WatchError::Lagged,
            broadcast::error::RecvError::Closed => WatchError::Closed,
        };
        self.ended = Some(e);
        e
    }

    /// The next matching event and the store version of its commit.
    pub async fn next(&mut self) -> Result<(u64, Event), WatchError> {
        loop {
            if let Some(e) = self.ended {
                return Err(e);
            }
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if let Some(commit) = self.replay.pop_front() {
                self.take(&commit)?;
                continue;
            }
            match self.receiver.recv().await {
                Ok(commit) => self.take(&commit)?,
                Err(err) => return Err(self.fail(err)),
            }
        }
    }

    /// The next matching event if one is already queued.
    pub fn try_next(&mut self) -> Result<Option<(u64, Event)>, WatchError> {
        loop {
            if let Some(e) = self.ended {
                return Err(e);
            }
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if let Some(commit) = self.replay.pop_front() {
                self.take(&commit)?;
                continue;
            }
            match self.receiver.try_recv() {
                Ok(commit) => self.take(&commit)?,
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    return Err(self.fail(broadcast::error::RecvError::Lagged(n)));
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    return Err(self.fail(broadcast::error::RecvError::Closed));
                }
            }
        }
    }

    /// The matching events of the next commit that has any, and that commit's version. A
    /// commit is never split: every event of it that matches comes in one answer.
    pub async fn next_commit(&mut self) -> Result<(u64, Vec<Event>), WatchError> {
        loop {
            if let Some(e) = self.ended {
                return Err(e);
            }
            if let Some(&(version, _)) = self.pending.front() {
                let mut events = Vec::new();
                while let Some((v, _)) = self.pending.front() {
                    if *v != version {
                        break;
                    }
                    events.extend(self.pending.pop_front().map(|(_, e)| e));
                }
                return Ok((version, events));
            }
            if let Some(commit) = self.replay.pop_front() {
                self.take(&commit)?;
                continue;
            }
            match self.receiver.recv().await {
                Ok(commit) => self.take(&commit)?,
                Err(err) => return Err(self.fail(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shoal_api::clock::SystemClock;
    use shoal_api::v1::{Meta, Task};

    use super::*;
    use crate::{LocalProposer, StateMachine, Store};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    fn store_with(limits: HistoryLimits) -> Store {
        Store::with_state(
            Arc::new(StateMachine::with_history(64, limits)),
            Arc::new(LocalProposer),
            Arc::new(SystemClock),
        )
    }

    fn task(id: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: "s".into(),
            ..Default::default()
        }
    }

    /// Creates tasks `ids`, one per transaction.
    fn create(rt: &tokio::runtime::Runtime, store: &Store, ids: &[&str]) {
        for id in ids {
            rt.block_on(store.update(|tx| tx.create(task(id)))).unwrap();
        }
    }

    fn drain(sub: &mut Subscription) -> Vec<(u64, String)> {
        let mut seen = Vec::new();
        while let Some((v, e)) = sub.try_next().unwrap() {
            seen.push((v, e.object.id().to_string()));
        }
        seen
    }

    #[test]
    fn resuming_within_the_history_replays_exactly_the_commits_after_the_version() {
        let rt = runtime();
        let store = store_with(DEFAULT_HISTORY);
        create(&rt, &store, &["a", "b", "c", "d"]);
        assert_eq!(store.version(), 4);
        let mut sub = store.watch_from(2, Filter::all()).unwrap();
        create(&rt, &store, &["e"]);
        assert_eq!(
            drain(&mut sub),
            vec![(3, "c".into()), (4, "d".into()), (5, "e".into())]
        );
    }

    #[test]
    fn resuming_from_the_current_version_sees_only_new_commits() {
        let rt = runtime();
        let store = store_with(DEFAULT_HISTORY);
        create(&rt, &store, &["a", "b"]);
        let mut sub = store.watch_from(2, Filter::all()).unwrap();
        assert!(sub.try_next().unwrap().is_none());
        create(&rt, &store, &["c"]);
        assert_eq!(drain(&mut sub), vec![(3, "c".into())]);
    }

    #[test]
    fn a_version_older_than_the_history_or_ahead_of_the_store_is_refused() {
        let rt = runtime();
        let store = store_with(HistoryLimits {
            commits: 3,
            events: 100,
        });
        create(&rt, &store, &["a", "b", "c", "d", "e"]);
        assert_eq!(store.state_machine().history_floor(), 2);
        assert_eq!(
            store.watch_from(1, Filter::all()).err(),
            Some(ResumeError::TooOld {
                requested: 1,
                oldest: 2
            })
        );
        let mut sub = store.watch_from(2, Filter::all()).unwrap();
        assert_eq!(
            drain(&mut sub),
            vec![(3, "c".into()), (4, "d".into()), (5, "e".into())]
        );
        assert_eq!(
            store.watch_from(6, Filter::all()).err(),
            Some(ResumeError::Future {
                requested: 6,
                current: 5
            })
        );
    }

    #[test]
    fn the_history_is_bounded_by_events_too() {
        let rt = runtime();
        let store = store_with(HistoryLimits {
            commits: 100,
            events: 5,
        });
        // Two commits of three events: the first no longer fits.
        for ids in [["a", "b", "c"], ["d", "e", "f"]] {
            rt.block_on(store.update(|tx| {
                for id in ids {
                    tx.create(task(id))?;
                }
                Ok(())
            }))
            .unwrap();
        }
        assert_eq!(store.state_machine().history_floor(), 1);
        assert!(store.watch_from(0, Filter::all()).is_err());
        let mut sub = store.watch_from(1, Filter::all()).unwrap();
        assert_eq!(drain(&mut sub).len(), 3);
    }

    #[test]
    fn a_restore_empties_the_history() {
        let rt = runtime();
        let store = store_with(DEFAULT_HISTORY);
        create(&rt, &store, &["a", "b", "c"]);
        let snapshot = store.snapshot();
        let mut live = store.watch_from(1, Filter::all()).unwrap();
        store.restore(snapshot).unwrap();
        assert_eq!(store.state_machine().history_floor(), 3);
        assert!(matches!(
            store.watch_from(2, Filter::all()),
            Err(ResumeError::TooOld {
                requested: 2,
                oldest: 3
            })
        ));
        // The open subscription replays what it had, then ends with Reset.
        assert_eq!(live.try_next().unwrap().map(|(v, _)| v), Some(2));
        assert_eq!(live.try_next().unwrap().map(|(v, _)| v), Some(3));
        assert_eq!(live.try_next().err(), Some(WatchError::Reset));
        let mut sub = store.watch_from(3, Filter::all()).unwrap();
        create(&rt, &store, &["d"]);
        assert_eq!(drain(&mut sub), vec![(4, "d".into())]);
    }

    #[test]
    fn next_commit_groups_the_matching_events_of_a_commit() {
        let rt = runtime();
        let store = store_with(DEFAULT_HISTORY);
        let mut sub = store.watch(Filter::all().predicate(|e| e.object.id() != "b"));
        rt.block_on(store.update(|tx| {
            for id in ["a", "b", "c"] {
                tx.create(task(id))?;
            }
            Ok(())
        }))
        .unwrap();
        create(&rt, &store, &["b2", "d"]);
        let (v, events) = rt.block_on(sub.next_commit()).unwrap();
        assert_eq!(v, 1);
        let ids: Vec<_> = events.iter().map(|e| e.object.id().to_string()).collect();
        assert_eq!(ids, ["a", "c"]);
        let (v, events) = rt.block_on(sub.next_commit()).unwrap();
        assert_eq!((v, events.len()), (2, 1));
        let (v, _) = rt.block_on(sub.next_commit()).unwrap();
        assert_eq!(v, 3);
        assert_eq!(store.view(|tx| tx.count::<Task>()), 5);
    }
}
