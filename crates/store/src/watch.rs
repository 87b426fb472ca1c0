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

/// A subscriber's end of the watch queue.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Commit>>,
    filter: Filter,
    /// Matching events of the commit being read, and that commit's version.
    pending: VecDeque<(u64, Event)>,
    ended: Option<WatchError>,
}

impl Subscription {
    pub(crate) fn new(receiver: broadcast::Receiver<Arc<Commit>>, filter: Filter) -> Self {
        Self {
            receiver,
            filter,
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
}
