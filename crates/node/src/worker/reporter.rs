//! The status reporter: gets every task status the worker produces to the managers, the
//! latest one per task, until they acknowledge it.
//!
//! The worker calls [`StatusReporter::report`] (it never waits on the network); a background
//! task sends what is pending to a caller-supplied [`StatusSink`] — the agent implements it
//! with `Dispatcher.UpdateTaskStatus` on its current session — and retries with backoff until
//! the sink says the updates were taken.
//!
//! Invariants:
//! - **Only the latest status of a task matters**: a newer report for a task replaces the
//!   pending one (coalescing), so a burst of PREPARING, READY, STARTING, RUNNING that happens
//!   while the sink is slow or down reaches the manager as one RUNNING.
//! - **Nothing unacknowledged is dropped**: an update leaves the pending set only when a send
//!   that carried it succeeded, and only if no newer status for that task arrived meanwhile
//!   (generation numbers tell). A failing sink — a broken session — keeps everything pending;
//!   the next successful send (the new session) carries it all.
//! - **Nothing acknowledged is sent again** (unless reported again).
//! - Failures back off: 100 ms doubling up to 5 s, reset by a success.
//!
//! What is pending lives in memory: when the agent stops, unacknowledged statuses are not
//! lost for good — the worker wrote each to its task database before reporting it, and
//! reports the task's current state again when it comes back.
//!
//! Departures from SwarmKit: SwarmKit's `agent/reporter.go` also coalesces per task, but
//! drops a status that would move a task backwards, and the agent re-sends on session change
//! by itself; here the sink decides what a session is, and the reporter only knows "sent" or
//! "not yet". A send carries at most `TASK_STATUS_BATCH_MAX_ITEMS` updates (the dispatcher's
//! limit); the rest go in the next call, at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::TaskStatus;
use shoal_api::v1::update_task_status_request::TaskStatusUpdate;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Where status updates go (the agent: `UpdateTaskStatus` on its session).
pub trait StatusSink: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;

    /// Delivers `updates`; `Ok` means the receiver has them (they will not be sent again).
    fn send(
        &self,
        updates: Vec<TaskStatusUpdate>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Backoff of failed sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReporterBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for ReporterBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Task ID → (generation, status).
    latest: BTreeMap<String, (u64, TaskStatus)>,
    next_generation: u64,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Bumped after every acknowledged send.
    acked: watch::Sender<u64>,
}

/// Hands task statuses to a [`StatusSink`]. Cheap to clone; clones share the pending set and
/// the sending task, which ends when [`StatusReporter::stop`] is called or every clone is
/// dropped.
#[derive(Clone)]
pub struct StatusReporter {
    shared: Arc<Shared>,
    task: Arc<SenderTask>,
}

impl StatusReporter {
    /// Starts sending to `sink` with the default backoff.
    pub fn start<S: StatusSink>(sink: S) -> Self {
        Self::with_backoff(sink, ReporterBackoff::default())
    }

    pub fn with_backoff<S: StatusSink>(sink: S, backoff: ReporterBackoff) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            acked: watch::channel(0).0,
        });
        let task = tokio::spawn(run(shared.clone(), sink, backoff));
        Self {
            shared,
            task: Arc::new(SenderTask(Mutex::new(Some(task)))),
        }
    }

    /// Queues the latest status of task `task_id`, replacing any pending one.
    pub fn report(&self, task_id: &str, status: TaskStatus) {
        {
            let mut pending = self.shared.pending.lock().expect("reporter lock");
            pending.next_generation += 1;
            let generation = pending.next_generation;
            pending
                .latest
                .insert(task_id.to_string(), (generation, status));
        }
        self.shared.wake.notify_one();
    }

    /// Whether a status of `task_id` waits for acknowledgement.
    pub fn is_pending(&self, task_id: &str) -> bool {
        self.shared
            .pending
            .lock()
            .expect("reporter lock")
            .latest
            .contains_key(task_id)
    }

    /// How many tasks have a status waiting for acknowledgement.
    pub fn pending(&self) -> usize {
        self.shared
            .pending
            .lock()
            .expect("reporter lock")
            .latest
            .len()
    }

    /// Returns once no status of `task_id` is pending (at once if none is).
    pub async fn acknowledged(&self, task_id: &str) {
        let mut acked = self.shared.acked.subscribe();
        while self.is_pending(task_id) {
            if acked.changed().await.is_err() {
                // Cannot happen while `self` holds the sender; never claim an ack we lack.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops sending; what is still pending stays unsent.
    pub async fn stop(&self) {
        let task = self.task.0.lock().expect("reporter task lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn run<S: StatusSink>(shared: Arc<Shared>, sink: S, backoff: ReporterBackoff) {
    let mut delay = Duration::ZERO;
    loop {
        // Wait for something to send (a stored permit covers a report made while sending).
        let batch: Vec<(String, u64, TaskStatus)> = loop {
            let notified = shared.wake.notified();
            {
                let pending = shared.pending.lock().expect("reporter lock");
                if !pending.latest.is_empty() {
                    break pending
                        .latest
                        .iter()
                        .take(shoal_api::defaults::TASK_STATUS_BATCH_MAX_ITEMS)
                        .map(|(id, (generation, status))| (id.clone(), *generation, status.clone()))
                        .collect();
                }
            }
            notified.await;
        };
        let updates = batch
            .iter()
            .map(|(id, _, status)| TaskStatusUpdate {
                task_id: id.clone(),
                status: Some(status.clone()),
            })
            .collect();
        match sink.send(updates).await {
            Ok(()) => {
                delay = Duration::ZERO;
                {
                    let mut pending = shared.pending.lock().expect("reporter lock");
                    for (id, generation, _) in &batch {
                        if pending.latest.get(id).is_some_and(|(g, _)| g == generation) {
                            pending.latest.remove(id);
                        }
                    }
                }
                shared.acked.send_modify(|n| *n += 1);
            }
            Err(error) => {
                delay = (delay * 2).clamp(backoff.base, backoff.max);
                tracing::debug!(
                    updates = batch.len(),
                    %error,
                    "worker: status report failed; retrying in {delay:?}"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Aborts the sending task when the last handle goes.
struct SenderTask(Mutex<Option<JoinHandle<()>>>);

impl Drop for SenderTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.lock().expect("reporter task lock").take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use shoal_api::v1::TaskState;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    /// Fails the first `failures` sends, records the rest.
    #[derive(Clone)]
    struct FlakySink {
        failures: Arc<AtomicUsize>,
        attempts: Arc<AtomicUsize>,
        received: Arc<Mutex<Vec<Vec<TaskStatusUpdate>>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Default for FlakySink {
        fn default() -> Self {
            Self {
                failures: Arc::default(),
                attempts: Arc::default(),
                received: Arc::default(),
                // Closed until a test opens it.
                gate: Arc::new(tokio::sync::Semaphore::new(0)),
            }
        }
    }

    impl StatusSink for FlakySink {
        type Error = String;

        async fn send(&self, updates: Vec<TaskStatusUpdate>) -> Result<(), String> {
            let _permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("session broken".into());
            }
            self.received.lock().unwrap().push(updates);
            Ok(())
        }
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus {
            state: state as i32,
            ..Default::default()
        }
    }

    fn fast() -> ReporterBackoff {
        ReporterBackoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn two_statuses_of_one_task_become_one_update_with_the_latest() {
        let sink = FlakySink::default();
        // Both statuses are queued before the sender first runs (the test runtime has one
        // thread and nothing yields in between); the closed gate holds the sink shut anyway.
        let reporter = StatusReporter::with_backoff(sink.clone(), fast());
        reporter.report("t1", status(TaskState::Preparing));
        reporter.report("t1", status(TaskState::Running));
        sink.gate.add_permits(1000);
        tokio::time::timeout(LIMIT, reporter.acknowledged("t1"))
            .await
            .unwrap();
        let received = sink.received.lock().unwrap().clone();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].len(), 1);
        assert_eq!(received[0][0].task_id, "t1");
        assert_eq!(
            received[0][0].status.as_ref().unwrap().state,
            TaskState::Running as i32
        );
        reporter.stop().await;
    }

    #[tokio::test]
    async fn failures_are_retried_until_acknowledged() {
        let sink = FlakySink {
            failures: Arc::new(AtomicUsize::new(3)),
            ..Default::default()
        };
        sink.gate.add_permits(1000);
        let reporter = StatusReporter::with_backoff(sink.clone(), fast());
        reporter.report("a", status(TaskState::Running));
        reporter.report("b", status(TaskState::Complete));
        tokio::time::timeout(LIMIT, async {
            reporter.acknowledged("a").await;
            reporter.acknowledged("b").await;
        })
        .await
        .unwrap();
        assert_eq!(reporter.pending(), 0);
        assert!(sink.attempts.load(Ordering::SeqCst) >= 4);
        let received = sink.received.lock().unwrap().clone();
        let delivered: Vec<(String, i32)> = received
            .iter()
            .flatten()
            .map(|u| (u.task_id.clone(), u.status.as_ref().unwrap().state))
            .collect();
        assert_eq!(
            delivered,
            vec![
                ("a".to_string(), TaskState::Running as i32),
                ("b".to_string(), TaskState::Complete as i32)
            ],
            "each delivered once, after the failures"
        );

        // After the "session change", new reports flow and acknowledged ones are not resent.
        reporter.report("a", status(TaskState::Shutdown));
        tokio::time::timeout(LIMIT, reporter.acknowledged("a"))
            .await
            .unwrap();
        let received = sink.received.lock().unwrap().clone();
        let last = received.last().unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].task_id, "a");
        reporter.stop().await;
    }
}
