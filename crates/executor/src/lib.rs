//! Executors: what runs a node's tasks.
//!
//! The agent's worker hands every task assigned to its node to an [`Executor`], which makes a
//! [`Controller`] for it; the worker then drives the controller through prepare → start →
//! wait (and shutdown / terminate / remove when told), feeding what happens into the
//! synchronous [`state::TaskMachine`], which decides the task's next state and the next
//! thing to do. This is SwarmKit's `agent/exec` split (Executor, Controller, `exec.Do`),
//! with the decision part kept pure so that it is tested with golden scripts.
//!
//! - [`state`]: the task state machine (ACCEPTED → … → COMPLETE / FAILED / SHUTDOWN /
//!   REJECTED), with bounded retries of temporary errors.
//! - [`process`]: runtime `process`: a host process in its own session, logs in rotated
//!   files, adoptable again after a daemon restart by PID + start time, limits through
//!   cgroups v2 (a warning, not silence, where they cannot be applied).
//! - [`sim`]: runs nothing; tasks become RUNNING after a delay and stop when told.
//! - [`error`]: [`ExecutorError`], which classifies itself as temporary or fatal.
//!
//! Departures from SwarmKit: the controller reports a task's [`Exit`] (code, signal, or
//! "unknown" for a process we adopted and did not parent) instead of an error wrapping an
//! exit code; and controllers take `&self`, so one task can wait while another shuts down.

use shoal_api::v1::{NodeDescription, Task, task_status};

pub mod error;
pub mod process;
pub mod sim;
pub mod state;

#[cfg(test)]
mod golden;

pub use error::{ErrorClass, ExecutorError, Result};

/// How a task's program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It is gone but its status cannot be known: a process adopted after a restart is not
    /// our child, and only a parent learns how its child ended.
    Unknown,
}

/// Which output of a task to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// What [`Controller::logs`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsOptions {
    pub stream: LogStream,
    /// Only the last this many lines; all that is kept when `None`.
    pub tail: Option<usize>,
    /// Keep streaming new output: not implemented yet (an error says so).
    pub follow: bool,
}

impl Default for LogsOptions {
    fn default() -> Self {
        Self {
            stream: LogStream::Stdout,
            tail: None,
            follow: false,
        }
    }
}

/// Runs the tasks of one node.
pub trait Executor: Send + Sync {
    /// What this executor offers the scheduler: the runtimes it runs (and whatever else it
    /// knows about the node; the agent fills in the rest).
    fn describe(&self) -> NodeDescription;

    /// A controller for `task`. Fails (fatally) when the task's runtime is not one this
    /// executor runs or its spec cannot be run.
    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>>;
}

/// Controls one task's program. Every operation is idempotent where that makes sense
/// (preparing twice, shutting down a stopped task), and all take `&self`: `wait` may be
/// pending in one place while `shutdown` is called from another.
#[tonic::async_trait]
pub trait Controller: Send + Sync {
    /// Gets everything ready to start (checks the spec, creates log files).
    async fn prepare(&self) -> Result<()>;
    /// Starts the program. Returns once it runs.
    async fn start(&self) -> Result<()>;
    /// Waits until the program ends and says how.
    async fn wait(&self) -> Result<Exit>;
    /// Stops the program gracefully: the stop signal, then a kill after the grace period.
    /// Returns once it has ended.
    async fn shutdown(&self) -> Result<()>;
    /// Kills the program at once.
    async fn terminate(&self) -> Result<()>;
    /// Frees what the task holds (its logs). Kills the program first if it still runs.
    async fn remove(&self) -> Result<()>;
    /// The task's output, as kept by the executor.
    async fn logs(&self, options: LogsOptions) -> Result<Vec<u8>>;
    /// Runtime details to record in the task's status (the process's PID and start time), so
    /// that a later controller can find the program again.
    fn runtime_status(&self) -> Option<task_status::RuntimeStatus> {
        None
    }
    /// Things the controller could not honour but did not refuse the task for (resource
    /// limits it cannot enforce, say). The worker puts them in the task's status message.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}
