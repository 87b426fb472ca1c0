//! The process executor (runtime `process`): a task is a host process, supervised by a shim.
//!
//! What it does:
//! - `start` spawns the task's *shim* ([`shim`]: `shoal process-shim …`, configurable as
//!   [`ProcessConfig::shim`]) with the task's environment, in a session of its own
//!   (`setsid`), so the shim gets no signal meant for the daemon's terminal or group and keeps
//!   running when the daemon exits (`kill_on_drop` is off). The shim spawns the spec's
//!   command with its args, working directory and user, in a session of its own too (the
//!   task leads its own process group, which the shim is not in), reads its stdout and
//!   stderr, and answers on a pipe with the task's PID and start time (`/proc/<pid>/stat`
//!   field 22), or with the errno of a failed spawn, which becomes
//!   [`ExecutorError::Spawn`].
//! - It records that PID and start time (the *task's*, not the shim's). A later controller —
//!   after a daemon restart, from a fresh executor — *adopts* the task by that pair
//!   ([`ProcessExecutor::adopt`], or [`Executor::controller`] for a task whose status carries
//!   them); a PID now used by another process (other start time), a zombie, or a process
//!   that does not lead its own group is refused — unless the task's `exit` file says the
//!   task ended while no daemon watched: then the controller reports that exit.
//! - Each task has a directory, `<log_dir>/<task id>/`: `output.log` (and rotated
//!   `output.log.N`), the task's output as CRI records written and rotated by the shim (see
//!   [`logs`]); `exit`, its exit status, written by the shim once the task has ended and its
//!   output is all in the log; `shim.log`, the shim's own stderr.
//! - `wait` reports the exit from the `exit` file, for a task we started as for one we
//!   adopted: code 0 → COMPLETE, other codes → FAILED with the code, killed by a signal →
//!   FAILED naming the signal (the decision is [`crate::state`]'s). The file is looked for
//!   when our shim child exits and every `poll_interval`. [`Exit::Unknown`] is left only for
//!   a task whose process is gone and whose shim wrote no `exit` within [`EXIT_WAIT`] (the
//!   shim was killed): the state machine makes it FAILED ("unknown exit status") — we do not
//!   guess COMPLETE for a task that may have crashed.
//! - `logs` reads the task directory: rotated files oldest first, then the current one,
//!   filtered by stream and `since`, the last `tail` lines; with `follow` it keeps reading
//!   the current file (across rotations) until the `exit` file is there and all has been
//!   read.
//! - `shutdown` sends the task's stop signal (SIGTERM by default) to the task's whole group,
//!   waits up to the stop grace period (10 s by default) for every process of the group to
//!   end, then SIGKILLs the group. `terminate` SIGKILLs at once. `remove` kills, then deletes
//!   the task directory (logs and exit status with it) and its cgroup.
//!
//! Invariants: signals go only to a group that still has live members or whose leader is
//! the very process we started (PID + start time); Linux does not reuse a PID while a group
//! carries it as ID, so we never signal a stranger's group; and never to the shim, which
//! must live to record the exit. The task ID becomes a directory name, so only IDs of
//! letters and digits are accepted.
//!
//! CPU, memory and pids limits go through cgroups v2 ([`cgroup`]): the daemon creates the
//! task's cgroup and the shim puts the task into it between fork and exec; where that
//! hierarchy or its controllers are missing, the task runs without them and the controller
//! returns a warning ([`Controller::warnings`]) saying so, and logs it.
//!
//! Secrets and configs ([`crate::files`]): `prepare` writes the task's secrets and configs
//! into a directory of its own on a memory-backed filesystem,
//! `<secrets_dir>/<task id>/{secrets,configs}/<target>` (by default `secrets_dir` is
//! `/dev/shm/shoal-<hash of the log directory>`; the task's directory is 0700 and belongs to
//! the task's user when the daemon is root; secrets are 0400 and configs 0444 unless the
//! reference gives a mode, owned by the reference's uid/gid when given). The program finds
//! them through `SHOAL_SECRETS_DIR` and `SHOAL_CONFIGS_DIR` in its environment (set only for
//! tasks that reference any). Nothing of them is ever written under the state directory: a
//! node without a memory-backed `/dev/shm` refuses such tasks. The directory goes when the
//! program has ended (the watcher sees its exit) and in `remove`. Targets must be plain file
//! names. A task whose secrets did not come with it (not in the [`TaskDependencies`]) is
//! refused at `prepare`.
//!
//! Not done yet, and said so rather than ignored: user *group names* ("user:group" with a
//! non-numeric group) are refused with a "not implemented yet" error; health checks of a
//! `ProcessSpec` are ignored (another part of the issue).
//!
//! Departures from SwarmKit: SwarmKit only runs containers, through the Docker Engine, which
//! owns their lifetime (its containerd-shim is their parent); here the agent's host is the
//! runtime, so the shim, identity (PID + start time) and group-wide signalling are ours.
//!
//! The environment is exactly the spec's `env`, plus `PATH` (a standard one, unless the spec
//! sets it) — the daemon's own environment does not leak into tasks (nor into their shims).

pub mod cgroup;
pub mod logs;
pub mod procfs;
pub mod shim;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_api::defaults;
use shoal_api::v1::{
    NodeDescription, Platform, ProcessSpec, ProcessStatus, ResourceRequirements, Resources, Task,
    task_spec, task_status,
};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::files::{self, TaskFile};
use crate::{
    Controller, Executor, ExecutorError, Exit, LogReader, LogsOptions, Result, TaskDependencies,
};
pub use logs::LogRotation;
pub use procfs::{parse_signal, signal_to_name};

/// The environment variables that tell a task where its secrets and configs are.
pub const SECRETS_DIR_ENV: &str = "SHOAL_SECRETS_DIR";
pub const CONFIGS_DIR_ENV: &str = "SHOAL_CONFIGS_DIR";

/// `PATH` of a task whose spec does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for a SIGKILLed group to disappear before reporting an error.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long the `exit` file may take to appear once the task process is gone (the shim
/// drains the pipes for up to [`shim::DRAIN`] first) before the exit is [`Exit::Unknown`].
pub const EXIT_WAIT: Duration = Duration::from_secs(5);

/// How long a shim may take to say whether the task started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The program that runs a task's shim, and the arguments that come before the shim's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The name of the shim binary installed beside `shoal`.
pub const SHIM_BINARY: &str = "shoal-process-shim";

impl ShimCommand {
    /// `<this executable> process-shim`: the `shoal` binary's hidden subcommand.
    pub fn current_exe() -> Self {
        Self {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("shoal")),
            args: vec!["process-shim".into()],
        }
    }

    /// The `shoal-process-shim` binary beside this executable when there is one (small: a
    /// task starts in about a millisecond), else [`ShimCommand::current_exe`] (the whole
    /// `shoal` binary loads for every task start).
    pub fn beside_current_exe() -> Self {
        let sibling = std::env::current_exe()
            .ok()
            .map(|exe| exe.with_file_name(SHIM_BINARY))
            .filter(|path| path.is_file());
        match sibling {
            Some(program) => Self {
                program,
                args: Vec::new(),
            },
            None => Self::current_exe(),
        }
    }
}

/// Settings of a [`ProcessExecutor`].
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// Where each task's directory (output log, exit status, shim log) is created.
    pub log_dir: PathBuf,
    pub rotation: LogRotation,
    /// How often adopted tasks, `exit` files and stopping groups are checked (default
    /// 100 ms).
    pub poll_interval: Duration,
    /// Where the cgroup v2 hierarchy is mounted (default `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The cgroup, under the root, that holds one cgroup per task with limits (`shoal`).
    pub cgroup_parent: String,
    /// What runs each task's shim (default [`ShimCommand::beside_current_exe`]).
    pub shim: ShimCommand,
    /// Where each task's secrets and configs directory is created: a directory of this node
    /// on a memory-backed filesystem (default `/dev/shm/shoal-<hash of log_dir>`, see
    /// [`files::node_root`]). Its parent must be tmpfs (or ramfs).
    pub secrets_dir: PathBuf,
}

impl ProcessConfig {
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        let log_dir: PathBuf = log_dir.into();
        Self {
            secrets_dir: files::node_root(Path::new(files::SHM_BASE), &log_dir),
            log_dir,
            rotation: LogRotation::default(),
            poll_interval: Duration::from_millis(100),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "shoal".into(),
            shim: ShimCommand::beside_current_exe(),
        }
    }
}

/// Runs tasks of runtime `process` as host processes.
#[derive(Clone, Debug)]
pub struct ProcessExecutor {
    config: Arc<ProcessConfig>,
}

impl ProcessExecutor {
    pub fn new(config: ProcessConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// A controller for a task that has not started yet.
    pub fn process_controller(&self, task: &Task) -> Result<ProcessController> {
        self.process_controller_with(task, &TaskDependencies::default())
    }

    /// A controller for a task that has not started yet, with the secrets and configs it
    /// references.
    pub fn process_controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> Result<ProcessController> {
        ProcessController::new(task, self.config.clone(), None, dependencies)
    }

    /// A controller for a task whose process runs already, started by an earlier controller
    /// (possibly in an earlier daemon): process `pid`, started at `start_time`.
    pub fn adopt(&self, task: &Task, pid: i32, start_time: u64) -> Result<ProcessController> {
        if pid <= 1 {
            return Err(ExecutorError::NotFound(format!("invalid PID {pid}")));
        }
        // The task ended while no daemon watched: its shim recorded how. The controller's
        // `wait` reports that exit at once, and nothing is signalled (the checks by PID and
        // start time find no process).
        let controller = ProcessController::new(
            task,
            self.config.clone(),
            Some((pid, start_time)),
            &TaskDependencies::default(),
        )?;
        if matches!(shim::read_exit(&controller.log_dir()), Ok(Some(_))) {
            return Ok(controller);
        }
        let stat = procfs::stat(pid)
            .map_err(|e| ExecutorError::io(format!("reading /proc/{pid}/stat"), e))?
            .ok_or_else(|| ExecutorError::NotFound(format!("process {pid} is gone")))?;
        if stat.start_time != start_time {
            return Err(ExecutorError::NotFound(format!(
                "PID {pid} belongs to another process now (started at {}, expected {start_time})",
                stat.start_time
            )));
        }
        if !stat.alive() {
            return Err(ExecutorError::NotFound(format!("process {pid} has ended")));
        }
        if stat.pgrp != pid {
            return Err(ExecutorError::NotFound(format!(
                "process {pid} does not lead its own process group: not started by this executor"
            )));
        }
        Ok(controller)
    }
}

impl Executor for ProcessExecutor {
    fn describe(&self) -> NodeDescription {
        NodeDescription {
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            platform: Some(Platform {
                architecture: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
            }),
            resources: Some(Resources {
                nano_cpus: std::thread::available_parallelism()
                    .map(|n| n.get() as i64 * 1_000_000_000)
                    .unwrap_or(0),
                memory_bytes: memory_total().unwrap_or(0),
                generic: Vec::new(),
            }),
            runtimes: vec!["process".into()],
            ..Default::default()
        }
    }

    /// Adopts the process when the task's status carries a PID and start time (the task was
    /// started before), otherwise makes a controller that will start one.
    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>> {
        self.controller_with(task, &TaskDependencies::default())
    }

    /// As [`Executor::controller`]; a task that has not started gets its secrets and configs
    /// from `dependencies` (an adopted one has them already).
    fn controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> Result<Box<dyn Controller>> {
        let recorded = task.status.as_ref().and_then(|s| match &s.runtime_status {
            Some(task_status::RuntimeStatus::Process(p)) if p.pid > 0 => {
                Some((p.pid, p.start_time))
            }
            _ => None,
        });
        Ok(Box::new(match recorded {
            Some((pid, start_time)) => self.adopt(task, pid, start_time)?,
            None => self.process_controller_with(task, dependencies)?,
        }))
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn memory_total() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Controls one process task. Cheap to clone; clones share the task.
#[derive(Clone)]
pub struct ProcessController {
    inner: Arc<Inner>,
}

struct Inner {
    task_id: String,
    spec: ProcessSpec,
    resources: Option<ResourceRequirements>,
    stop_signal: i32,
    grace: Duration,
    config: Arc<ProcessConfig>,
    /// PID and start time, once started or adopted.
    process: Mutex<Option<(i32, u64)>>,
    /// The shim we spawned (our child), until the watcher takes it.
    shim: Mutex<Option<tokio::process::Child>>,
    watching: AtomicBool,
    exit: watch::Sender<Option<Exit>>,
    warnings: Mutex<Vec<String>>,
    /// The task's cgroup, once prepared with limits it could apply.
    cgroup: Mutex<Option<PathBuf>>,
    /// The task's secret and config files (with their data: never logged), or why they
    /// cannot be had (refused at `prepare`).
    files: std::result::Result<Vec<TaskFile>, String>,
}

impl ProcessController {
    fn new(
        task: &Task,
        config: Arc<ProcessConfig>,
        adopted: Option<(i32, u64)>,
        dependencies: &TaskDependencies,
    ) -> Result<Self> {
        let task_id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        if task_id.is_empty() || !task_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ExecutorError::InvalidSpec(format!(
                "task ID {task_id:?} must be letters and digits"
            )));
        }
        let spec = task.spec.as_ref().and_then(|s| match &s.runtime {
            Some(task_spec::Runtime::Process(p)) => Some((**p).clone()),
            _ => None,
        });
        let Some(spec) = spec else {
            return Err(ExecutorError::Unsupported(
                "the process executor runs only tasks of runtime \"process\"".into(),
            ));
        };
        if spec.command.is_empty() {
            return Err(ExecutorError::InvalidSpec(
                "process.command is empty".into(),
            ));
        }
        let signal_text = if spec.stop_signal.is_empty() {
            defaults::STOP_SIGNAL
        } else {
            spec.stop_signal.as_str()
        };
        let stop_signal = parse_signal(signal_text).ok_or_else(|| {
            ExecutorError::InvalidSpec(format!(
                "process.stop_signal: unknown signal {signal_text:?}"
            ))
        })?;
        let grace = match &spec.stop_grace_period {
            None => defaults::STOP_GRACE_PERIOD,
            Some(d) => Duration::try_from(*d).map_err(|_| {
                ExecutorError::InvalidSpec("process.stop_grace_period must not be negative".into())
            })?,
        };
        let resources = task
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_deref().cloned());
        let files = files::task_files(task, dependencies)
            .and_then(|files| {
                files.iter().try_for_each(files::check_plain_name)?;
                Ok(files)
            })
            .map_err(|e| match e {
                ExecutorError::InvalidSpec(message) => message,
                e => e.to_string(),
            });
        let (exit, _) = watch::channel(None);
        Ok(Self {
            inner: Arc::new(Inner {
                task_id,
                spec,
                resources,
                stop_signal,
                grace,
                config,
                process: Mutex::new(adopted),
                shim: Mutex::new(None),
                watching: AtomicBool::new(false),
                exit,
                warnings: Mutex::new(Vec::new()),
                cgroup: Mutex::new(None),
                files,
            }),
        })
    }

    /// The task's secrets and configs directory (there only while the task has any and has
    /// not ended).
    pub fn secrets_dir(&self) -> PathBuf {
        self.inner.config.secrets_dir.join(&self.inner.task_id)
    }

    /// Whether the task references secrets or configs.
    fn has_files(&self) -> bool {
        self.inner.files.as_ref().is_ok_and(|f| !f.is_empty())
    }

    /// Removes the task's secrets and configs directory, saying so when that fails.
    fn remove_secrets(&self) -> Result<()> {
        files::remove_task_dir(&self.inner.config.secrets_dir, &self.inner.task_id)
    }

    /// The process's PID and start time, once started or adopted.
    pub fn process(&self) -> Option<(i32, u64)> {
        *self.inner.process.lock().expect("process lock")
    }

    /// The task's directory: output log, exit status, shim log.
    pub fn log_dir(&self) -> PathBuf {
        self.inner.config.log_dir.join(&self.inner.task_id)
    }

    /// The task's current output log.
    pub fn output_path(&self) -> PathBuf {
        self.log_dir().join(logs::OUTPUT)
    }

    fn exit_now(&self) -> Option<Exit> {
        *self.inner.exit.borrow()
    }

    /// Starts the watcher of the task once there is one: it publishes the exit.
    fn ensure_watching(&self) {
        let Some((pid, start_time)) = self.process() else {
            return;
        };
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let shim = self.inner.shim.lock().expect("shim lock").take();
        let this = self.clone();
        tokio::spawn(async move {
            let exit = this.watch(pid, start_time, shim).await;
            // The program has ended and a task never starts again: its secrets go now.
            if let Err(error) = this.remove_secrets() {
                tracing::warn!(task = %this.inner.task_id, %error, "removing the task's secrets failed");
            }
            this.inner.exit.send_replace(Some(exit));
        });
    }

    /// Waits for the `exit` file. Gives up with [`Exit::Unknown`] once the task process is
    /// gone and either our shim has exited without writing it or [`EXIT_WAIT`] has passed.
    async fn watch(
        &self,
        pid: i32,
        start_time: u64,
        mut shim: Option<tokio::process::Child>,
    ) -> Exit {
        let dir = self.log_dir();
        let task = &self.inner.task_id;
        let poll = self.inner.config.poll_interval;
        let mut shim_gone = false;
        let mut gone_since: Option<Instant> = None;
        loop {
            match shim::read_exit(&dir) {
                Ok(Some(exit)) => {
                    // Reap our shim, which exits right after writing the file.
                    if let Some(mut child) = shim.take() {
                        let _ = tokio::time::timeout(EXIT_WAIT, child.wait()).await;
                    }
                    return exit;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%task, %error, "unreadable exit status");
                    return Exit::Unknown;
                }
            }
            if procfs::is_running(pid, start_time) {
                gone_since = None;
            } else {
                let since = *gone_since.get_or_insert_with(Instant::now);
                if shim_gone || since.elapsed() >= EXIT_WAIT {
                    tracing::warn!(%task, pid, shim = %dir.join(shim::SHIM_LOG).display(),
                        "the task has ended but its shim recorded no exit status");
                    return Exit::Unknown;
                }
            }
            match shim.as_mut() {
                Some(child) => {
                    tokio::select! {
                        status = child.wait() => {
                            if let Ok(status) = &status && !status.success() {
                                tracing::warn!(%task, %status, "the process shim failed");
                            }
                            shim = None;
                            shim_gone = true;
                        }
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                None => tokio::time::sleep(poll).await,
            }
        }
    }

    /// Whether the process (or another member of its group) may still run.
    fn group_alive(&self, pid: i32, start_time: u64) -> bool {
        procfs::is_running(pid, start_time) || procfs::group_alive(pid)
    }

    /// Waits until the process has ended and its group is empty, at most `limit`.
    async fn wait_gone(&self, pid: i32, start_time: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.exit_now().is_some() && !self.group_alive(pid, start_time) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(self.inner.config.poll_interval.min(limit)).await;
        }
    }

    async fn kill_now(&self, pid: i32, start_time: u64) -> Result<()> {
        if self.group_alive(pid, start_time) {
            procfs::kill_group(pid, libc::SIGKILL)
                .map_err(|e| ExecutorError::io(format!("SIGKILL to process group {pid}"), e))?;
        }
        if self.wait_gone(pid, start_time, KILL_WAIT).await {
            Ok(())
        } else {
            Err(ExecutorError::io(
                format!("process group {pid} still has live members after SIGKILL"),
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ))
        }
    }

    fn user(&self) -> Result<Option<(u32, u32)>> {
        resolve_user(&self.inner.spec.user)
    }

    /// The command that runs the task's shim.
    fn shim_command(&self) -> Result<tokio::process::Command> {
        let spec = &self.inner.spec;
        let config = &self.inner.config;
        let args = shim::ShimArgs {
            dir: self.log_dir(),
            rotation: config.rotation,
            cwd: (!spec.dir.is_empty()).then(|| PathBuf::from(&spec.dir)),
            user: self.user()?,
            cgroup_procs: self
                .inner
                .cgroup
                .lock()
                .expect("cgroup lock")
                .as_ref()
                .map(|dir| dir.join("cgroup.procs")),
            command: spec.command.clone().into(),
            args: spec.args.iter().map(OsString::from).collect(),
        };
        let mut command = std::process::Command::new(&config.shim.program);
        command
            .args(&config.shim.args)
            .args(args.to_args())
            .env_clear();
        if !spec.env.iter().any(|e| e.starts_with("PATH=")) {
            command.env("PATH", DEFAULT_PATH);
        }
        for entry in &spec.env {
            let (key, value) = entry
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    ExecutorError::InvalidSpec(format!("process.env: {entry:?} is not KEY=VALUE"))
                })?;
            command.env(key, value);
        }
        if self.has_files() {
            let dir = self.secrets_dir();
            command.env(SECRETS_DIR_ENV, dir.join(files::SECRETS));
            command.env(CONFIGS_DIR_ENV, dir.join(files::CONFIGS));
        }
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir().join(shim::SHIM_LOG))
            .map_err(|e| ExecutorError::io("opening the shim log", e))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log);
        // SAFETY: the closure runs in the child between fork and exec and calls only setsid,
        // which is async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(false);
        Ok(command)
    }
}

/// Sends what is appended to the task's log until the task has ended (its exit is known, so
/// its `exit` file is written or will never be) and everything has been read, or until the
/// receiver is dropped.
fn follow(
    mut follower: logs::Follower,
    dir: &Path,
    options: &LogsOptions,
    sender: &tokio::sync::mpsc::Sender<Result<crate::LogRecord>>,
    exited: watch::Receiver<Option<Exit>>,
    poll: Duration,
) {
    loop {
        // Looked at before reading: if the task had ended by now, this read gets the rest.
        let ended = exited.borrow().is_some() || dir.join(shim::EXIT).exists();
        match follower.poll() {
            Ok(entries) => {
                for entry in entries.into_iter().filter(|e| logs::wanted(e, options)) {
                    if sender.blocking_send(Ok(entry.into_record())).is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                let _ = sender.blocking_send(Err(ExecutorError::io(
                    format!("following the logs in {}", dir.display()),
                    error,
                )));
                return;
            }
        }
        if ended || sender.is_closed() {
            return;
        }
        std::thread::sleep(poll);
    }
}

/// "" → run as the daemon's user; "name", "uid", "name:gid", "uid:gid" → (uid, gid), the gid
/// being the user's primary group when not given.
fn resolve_user(user: &str) -> Result<Option<(u32, u32)>> {
    if user.is_empty() {
        return Ok(None);
    }
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = if let Ok(uid) = name.parse::<u32>() {
        passwd_by_uid(uid).or(Some((uid, uid)))
    } else {
        passwd_by_name(name)
    };
    let Some((uid, primary_gid)) = entry else {
        return Err(ExecutorError::InvalidSpec(format!(
            "process.user: no user {name:?}"
        )));
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                return Err(ExecutorError::NotImplemented(
                    "group names in process.user (give a numeric gid)",
                ));
            }
        },
    };
    Ok(Some((uid, gid)))
}

fn passwd_by_name(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    passwd_lookup(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call; buf is the buffer's length.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

fn passwd_by_uid(uid: u32) -> Option<(u32, u32)> {
    passwd_lookup(|pwd, buf, result| {
        // SAFETY: as above.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

fn passwd_lookup(
    call: impl Fn(*mut libc::passwd, &mut [libc::c_char], *mut *mut libc::passwd) -> libc::c_int,
) -> Option<(u32, u32)> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: passwd is plain data; zeroes are a valid value to be overwritten.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pwd, &mut buf, &mut result);
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

#[tonic::async_trait]
impl Controller for ProcessController {
    async fn prepare(&self) -> Result<()> {
        let dir = self.log_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| ExecutorError::io(format!("creating {}", dir.display()), e))?;
        let user = self.user()?;
        let spec = &self.inner.spec;
        if !spec.dir.is_empty() && !Path::new(&spec.dir).is_dir() {
            return Err(ExecutorError::InvalidSpec(format!(
                "process.dir: {} is not a directory",
                spec.dir
            )));
        }
        match &self.inner.files {
            Err(message) => return Err(ExecutorError::InvalidSpec(message.clone())),
            Ok(task_files) if !task_files.is_empty() => {
                files::write_task_dir(
                    &self.inner.config.secrets_dir,
                    &self.inner.task_id,
                    task_files,
                    user,
                    |_, f| f.target.clone(),
                )?;
            }
            Ok(_) => {}
        }
        let files = cgroup::limit_files(self.inner.resources.as_ref());
        if !files.is_empty() && self.inner.cgroup.lock().expect("cgroup lock").is_none() {
            let config = &self.inner.config;
            match cgroup::create(
                &config.cgroup_root,
                &config.cgroup_parent,
                &self.inner.task_id,
                &files,
            ) {
                Ok(dir) => *self.inner.cgroup.lock().expect("cgroup lock") = Some(dir),
                Err(error) => {
                    let limits: Vec<String> =
                        files.iter().map(|(f, v)| format!("{f}={v}")).collect();
                    let warning = format!(
                        "resource limits ({}) are not enforced: {error}; the task runs without them",
                        limits.join(", ")
                    );
                    tracing::warn!(task = %self.inner.task_id, "{warning}");
                    let mut warnings = self.inner.warnings.lock().expect("warnings lock");
                    if !warnings.contains(&warning) {
                        warnings.push(warning);
                    }
                }
            }
        }
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        if self.process().is_some() {
            return Ok(());
        }
        self.prepare().await?;
        let program = &self.inner.config.shim.program;
        let mut child = self.shim_command()?.spawn().map_err(|e| {
            ExecutorError::io(
                format!("starting the process shim {}", program.display()),
                e,
            )
        })?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let read = tokio::time::timeout(
            START_TIMEOUT,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let status = match read {
            Ok(Ok(_)) => shim::Status::parse(&line),
            _ => None,
        };
        let (pid, start_time) = match status {
            Some(shim::Status::Started { pid, start_time }) => (pid, start_time),
            Some(shim::Status::Error { errno, message }) => {
                let _ = tokio::time::timeout(START_TIMEOUT, child.wait()).await;
                tracing::debug!(task = %self.inner.task_id, %message, "the program did not start");
                return Err(ExecutorError::Spawn {
                    command: self.inner.spec.command.clone(),
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            None => {
                // No answer: the shim is broken (or the wrong program). It has not said it
                // started anything, so killing it leaves nothing behind.
                let _ = child.start_kill();
                let _ = tokio::time::timeout(START_TIMEOUT, child.wait()).await;
                return Err(ExecutorError::io(
                    format!(
                        "the process shim {} gave no valid status (got {line:?}; see {})",
                        program.display(),
                        self.log_dir().join(shim::SHIM_LOG).display()
                    ),
                    std::io::Error::from_raw_os_error(libc::EPROTO),
                ));
            }
        };
        *self.inner.process.lock().expect("process lock") = Some((pid, start_time));
        *self.inner.shim.lock().expect("shim lock") = Some(child);
        tracing::debug!(task = %self.inner.task_id, pid, start_time, "started");
        self.ensure_watching();
        Ok(())
    }

    async fn wait(&self) -> Result<Exit> {
        if self.process().is_none() {
            return Err(ExecutorError::InvalidState(
                "the task's process was never started".into(),
            ));
        }
        self.ensure_watching();
        let mut exit = self.inner.exit.subscribe();
        let exit = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecutorError::InvalidState("the process watcher is gone".into()))?;
        Ok(exit.expect("waited for Some"))
    }

    async fn shutdown(&self) -> Result<()> {
        let Some((pid, start_time)) = self.process() else {
            return Ok(());
        };
        self.ensure_watching();
        if self.group_alive(pid, start_time) {
            procfs::kill_group(pid, self.inner.stop_signal)
                .map_err(|e| ExecutorError::io(format!("stop signal to process group {pid}"), e))?;
            if self.wait_gone(pid, start_time, self.inner.grace).await {
                return Ok(());
            }
            tracing::info!(task = %self.inner.task_id, pid, "still running after the grace period: SIGKILL");
        }
        self.kill_now(pid, start_time).await
    }

    async fn terminate(&self) -> Result<()> {
        let Some((pid, start_time)) = self.process() else {
            return Ok(());
        };
        self.ensure_watching();
        self.kill_now(pid, start_time).await
    }

    async fn remove(&self) -> Result<()> {
        self.terminate().await?;
        self.remove_secrets()?;
        let config = &self.inner.config;
        let cgroup_dir = config
            .cgroup_root
            .join(&config.cgroup_parent)
            .join(&self.inner.task_id);
        cgroup::remove(&cgroup_dir)
            .map_err(|e| ExecutorError::io(format!("removing {}", cgroup_dir.display()), e))?;
        let dir = self.log_dir();
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ExecutorError::io(format!("removing {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    async fn logs(&self, options: LogsOptions) -> Result<LogReader> {
        let dir = self.log_dir();
        let reading = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || logs::read_history(&dir))
        };
        let (history, follower) = reading
            .await
            .map_err(|e| ExecutorError::io("reading logs", std::io::Error::other(e)))?
            .map_err(|e| ExecutorError::io(format!("reading the logs in {}", dir.display()), e))?;
        let history = logs::select(history, &options);
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        if options.follow {
            // The watcher says when the task has ended: after the exit file (or never, for
            // a task that has not started; the reader then stops when dropped).
            self.ensure_watching();
        }
        let exited = self.inner.exit.subscribe();
        let poll = self.inner.config.poll_interval;
        tokio::task::spawn_blocking(move || {
            for entry in history {
                if sender.blocking_send(Ok(entry.into_record())).is_err() {
                    return;
                }
            }
            if options.follow {
                follow(follower, &dir, &options, &sender, exited, poll);
            }
        });
        Ok(receiver)
    }

    fn runtime_status(&self) -> Option<task_status::RuntimeStatus> {
        let (pid, start_time) = self.process()?;
        let (exit_code, signal) = match self.exit_now() {
            Some(Exit::Code(code)) => (code, 0),
            Some(Exit::Signal(signal)) => (0, signal),
            _ => (0, 0),
        };
        Some(task_status::RuntimeStatus::Process(Box::new(
            ProcessStatus {
                pid,
                start_time,
                exit_code,
                signal,
            },
        )))
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.lock().expect("warnings lock").clone()
    }
}

#[cfg(test)]
mod tests;
