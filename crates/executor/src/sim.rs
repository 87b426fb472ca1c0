//! The sim executor: runs nothing, for scale tests and demonstrations (`--executor sim`).
//!
//! A task's controller prepares at once, `start` returns after a configurable delay (so the
//! task becomes RUNNING that much later), and `wait` returns when the task is shut down or
//! terminated — or, if configured, after a set run time with a set exit code. It costs one
//! small allocation per task and no process, so thousands of simulated tasks fit on one
//! machine.
//!
//! Invariants: `wait` before `start` is an error, as with a real runtime; the first ending
//! wins (a shutdown after the run time elapsed changes nothing).
//!
//! SwarmKit has no simulated executor in its agent (its tests mock the controller); ours is a
//! first-class executor so that whole clusters can be benchmarked without running tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_api::v1::{NodeDescription, Platform, Task};
use tokio::sync::watch;

use crate::{Controller, Executor, ExecutorError, Exit, LogReader, LogsOptions, Result};

/// Settings of a [`SimExecutor`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Time `start` takes.
    pub start_delay: Duration,
    /// End every task on its own after this long, with this exit code; run until shut down
    /// when `None`.
    pub exit_after: Option<(Duration, i32)>,
    /// Runtimes the simulated node claims to run.
    pub runtimes: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_millis(100),
            exit_after: None,
            runtimes: vec!["process".into(), "container".into()],
        }
    }
}

/// Runs nothing, convincingly.
#[derive(Clone, Debug, Default)]
pub struct SimExecutor {
    config: Arc<SimConfig>,
}

impl SimExecutor {
    pub fn new(config: SimConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

impl Executor for SimExecutor {
    fn describe(&self) -> NodeDescription {
        NodeDescription {
            platform: Some(Platform {
                architecture: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
            }),
            runtimes: self.config.runtimes.clone(),
            ..Default::default()
        }
    }

    fn controller(&self, _task: &Task) -> Result<Box<dyn Controller>> {
        Ok(Box::new(SimController::new(self.config.clone())))
    }
}

/// A simulated task.
#[derive(Clone)]
pub struct SimController {
    config: Arc<SimConfig>,
    started: Arc<AtomicBool>,
    exit: Arc<watch::Sender<Option<Exit>>>,
}

impl SimController {
    fn new(config: Arc<SimConfig>) -> Self {
        Self {
            config,
            started: Arc::new(AtomicBool::new(false)),
            exit: Arc::new(watch::channel(None).0),
        }
    }

    fn end(&self, exit: Exit) {
        self.exit.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(exit);
                true
            } else {
                false
            }
        });
    }
}

#[tonic::async_trait]
impl Controller for SimController {
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        if self.started.load(Ordering::SeqCst) {
            return Ok(());
        }
        tokio::time::sleep(self.config.start_delay).await;
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some((after, code)) = self.config.exit_after {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                this.end(Exit::Code(code));
            });
        }
        Ok(())
    }

    async fn wait(&self) -> Result<Exit> {
        if !self.started.load(Ordering::SeqCst) {
            return Err(ExecutorError::InvalidState(
                "the simulated task was never started".into(),
            ));
        }
        let mut exit = self.exit.subscribe();
        let exit = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecutorError::InvalidState("the simulated task is gone".into()))?;
        Ok(exit.expect("waited for Some"))
    }

    async fn shutdown(&self) -> Result<()> {
        self.end(Exit::Signal(libc::SIGTERM));
        Ok(())
    }

    async fn terminate(&self) -> Result<()> {
        self.end(Exit::Signal(libc::SIGKILL));
        Ok(())
    }

    async fn remove(&self) -> Result<()> {
        self.end(Exit::Signal(libc::SIGKILL));
        Ok(())
    }

    /// A simulated task prints nothing: the reader ends at once, even when following.
    async fn logs(&self, _options: LogsOptions) -> Result<LogReader> {
        Ok(tokio::sync::mpsc::channel(1).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Action, Event, TaskMachine};
    use shoal_api::v1::TaskState;

    /// Drives a controller with the state machine, as the worker will.
    async fn run_until_running(controller: &dyn Controller, machine: &mut TaskMachine) {
        assert_eq!(machine.begin().action, Action::Prepare);
        controller.prepare().await.unwrap();
        assert_eq!(machine.handle(Event::Prepared).action, Action::Start);
        controller.start().await.unwrap();
        assert_eq!(machine.handle(Event::Started).action, Action::Wait);
        assert_eq!(machine.state(), TaskState::Running);
    }

    #[tokio::test]
    async fn reaches_running_and_stops_on_shutdown() {
        let executor = SimExecutor::new(SimConfig {
            start_delay: Duration::from_millis(20),
            ..Default::default()
        });
        assert!(
            executor
                .describe()
                .runtimes
                .contains(&"process".to_string())
        );
        let controller: Arc<dyn Controller> = executor.controller(&Task::default()).unwrap().into();
        assert!(controller.wait().await.is_err(), "wait before start");
        let mut machine = TaskMachine::default();
        run_until_running(&*controller, &mut machine).await;

        let waiter = tokio::spawn({
            let controller = controller.clone();
            async move { controller.wait().await }
        });
        assert_eq!(
            machine.handle(Event::ShutdownRequested).action,
            Action::Shutdown
        );
        controller.shutdown().await.unwrap();
        let exit = waiter.await.unwrap().unwrap();
        assert_eq!(exit, Exit::Signal(libc::SIGTERM));
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Shutdown);
    }

    #[tokio::test]
    async fn can_end_on_its_own() {
        let executor = SimExecutor::new(SimConfig {
            start_delay: Duration::ZERO,
            exit_after: Some((Duration::from_millis(10), 3)),
            ..Default::default()
        });
        let controller = executor.controller(&Task::default()).unwrap();
        let mut machine = TaskMachine::default();
        run_until_running(&*controller, &mut machine).await;
        let exit = controller.wait().await.unwrap();
        assert_eq!(exit, Exit::Code(3));
        controller.shutdown().await.unwrap();
        assert_eq!(
            controller.wait().await.unwrap(),
            Exit::Code(3),
            "first ending wins"
        );
        machine.handle(Event::Exited(exit));
        assert_eq!(machine.state(), TaskState::Failed);
        assert_eq!(machine.message(), "exited with code 3");
    }
}
