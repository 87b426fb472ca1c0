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
//! - [`process`]: runtime `process`: a host process in its own session under a supervisor
//!   shim that outlives the daemon, logs its output (CRI format, rotated) and records its
//!   exit status; adoptable again after a daemon restart by PID + start time, limits through
//!   cgroups v2 (a warning, not silence, where they cannot be applied).
//! - [`runtimes`]: several executors behind one, each task going to the executor of its
//!   runtime (processes and containers on one node).
//! - [`sim`]: runs nothing; tasks become RUNNING after a delay and stop when told.
//! - [`error`]: [`ExecutorError`], which classifies itself as temporary or fatal.
//! - [`files`]: a task's secrets and configs ([`TaskDependencies`]) as files in a private
//!   directory on a memory-backed filesystem.
//!
//! Departures from SwarmKit: the controller reports a task's [`Exit`] (code, signal, or
//! "unknown" when nothing recorded how the program ended) instead of an error wrapping an
//! exit code; and controllers take `&self`, so one task can wait while another shuts down.

use std::time::SystemTime;

use shoal_api::v1::{Config, NodeDescription, Secret, Task, task_status};

pub mod error;
pub mod files;
pub mod process;
pub mod runtimes;
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
    /// It is gone but its status cannot be known: only a parent learns how its child ended,
    /// and the parent that records it (the process executor's shim) is gone too.
    Unknown,
}

/// Which output of a task a record comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One record of a task's output: a line with its newline, or a part of a line that was too
/// long (or had not ended when the program did), with the time the executor received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp: SystemTime,
    pub stream: LogStream,
    pub data: Vec<u8>,
}

/// What [`Controller::logs`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsOptions {
    /// Records of stdout.
    pub stdout: bool,
    /// Records of stderr.
    pub stderr: bool,
    /// Only the last this many records (of the selected streams); all that is kept when
    /// `None`.
    pub tail: Option<usize>,
    /// Only records received at or after this time.
    pub since: Option<SystemTime>,
    /// After what is kept, keep streaming new records until the program has ended and all
    /// its output has been read.
    pub follow: bool,
}

impl Default for LogsOptions {
    fn default() -> Self {
        Self {
            stdout: true,
            stderr: true,
            tail: None,
            since: None,
            follow: false,
        }
    }
}

impl LogsOptions {
    /// Whether records of `stream` are wanted.
    pub fn wants(&self, stream: LogStream) -> bool {
        match stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        }
    }
}

/// The records of [`Controller::logs`], oldest first. The channel closes after the last
/// record (at once after the kept ones without `follow`). Whatever reads the task's output
/// for it stops when the receiver is dropped, so dropping it is how a reader is cancelled.
pub type LogReader = tokio::sync::mpsc::Receiver<Result<LogRecord>>;

/// Reads a [`LogReader`] to its end and concatenates the data of its records: for tests and
/// for callers that want the bytes only.
pub async fn read_all(mut reader: LogReader) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(record) = reader.recv().await {
        out.extend_from_slice(&record?.data);
    }
    Ok(out)
}

/// The secrets and configs a task references, with their data, as the node received them in
/// its assignments (only those its tasks reference). Its `Debug` shows IDs only, never data.
#[derive(Clone, Default)]
pub struct TaskDependencies {
    pub secrets: Vec<Secret>,
    pub configs: Vec<Config>,
}

impl TaskDependencies {
    /// The secret with this ID.
    pub fn secret(&self, id: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.meta.as_ref().is_some_and(|m| m.id == id))
    }

    /// The config with this ID.
    pub fn config(&self, id: &str) -> Option<&Config> {
        self.configs
            .iter()
            .find(|c| c.meta.as_ref().is_some_and(|m| m.id == id))
    }
}

impl std::fmt::Debug for TaskDependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids = |metas: Vec<Option<&shoal_api::v1::Meta>>| -> Vec<String> {
            metas
                .into_iter()
                .map(|m| m.map(|m| m.id.clone()).unwrap_or_default())
                .collect()
        };
        f.debug_struct("TaskDependencies")
            .field(
                "secrets",
                &ids(self.secrets.iter().map(|s| s.meta.as_ref()).collect()),
            )
            .field(
                "configs",
                &ids(self.configs.iter().map(|c| c.meta.as_ref()).collect()),
            )
            .finish()
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

    /// A controller for `task`, given the secrets and configs it references (the worker
    /// calls this one). Executors that deliver them override it; by default (the sim
    /// executor) they are ignored. Through [`Executor::controller`], a task that references
    /// secrets or configs gets none, and an executor that delivers them refuses to prepare
    /// it.
    fn controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> Result<Box<dyn Controller>> {
        let _ = dependencies;
        self.controller(task)
    }
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
    /// The task's output, as kept by the executor, as a stream of records (see
    /// [`LogsOptions`] for the selection and [`LogReader`] for the end of the stream).
    async fn logs(&self, options: LogsOptions) -> Result<LogReader>;
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
