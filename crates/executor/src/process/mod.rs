//! The process executor (runtime `process`): a task is a host process.
//!
//! What it does:
//! - `start` spawns the spec's command with its args, environment, working directory and
//!   user, in a session of its own (`setsid`), so the process is the leader of its own
//!   process group, gets no signal meant for the daemon's terminal or group, and keeps
//!   running when the daemon exits (it is reparented; `kill_on_drop` is off).
//! - It records the PID and the process's start time (`/proc/<pid>/stat` field 22). A later
//!   controller — after a daemon restart, from a fresh executor — *adopts* the process by
//!   that pair ([`ProcessExecutor::adopt`], or [`Executor::controller`] for a task whose
//!   status carries them); a PID now used by another process (other start time), a zombie,
//!   or a process that does not lead its own group is refused.
//! - stdout and stderr go straight to `<log_dir>/<task id>/{stdout,stderr}.log`, rotated by
//!   size (see [`logs`] for the copy-truncate scheme and its limits).
//! - `wait` reports the exit: code 0 → COMPLETE, other codes → FAILED with the code, killed
//!   by a signal → FAILED naming the signal (the decision is [`crate::state`]'s).
//! - `shutdown` sends the task's stop signal (SIGTERM by default) to the whole group, waits
//!   up to the stop grace period (10 s by default) for every process of the group to end,
//!   then SIGKILLs the group. `terminate` SIGKILLs at once.
//!
//! Invariants: signals go only to a group that still has live members or whose leader is
//! the very process we started (PID + start time); Linux does not reuse a PID while a group
//! carries it as ID, so we never signal a stranger's group. The task ID becomes a directory
//! name, so only IDs of letters and digits are accepted.
//!
//! Adopted processes: they are not our children, and only a parent learns an exit status, so
//! `wait` polls `/proc/<pid>` (every `poll_interval`) until the process is gone or a zombie
//! and reports [`Exit::Unknown`], which the state machine turns into FAILED ("unknown exit
//! status") — unless a shutdown was asked for, then SHUTDOWN. We do not guess COMPLETE: a
//! task that may have crashed must not be reported as a success. The supervisor shim of the
//! design (`DESIGN.md`, "Tasks outlive the daemon") will record exit statuses; it is not
//! written yet.
//!
//! CPU, memory and pids limits go through cgroups v2 ([`cgroup`]); where that hierarchy or
//! its controllers are missing, the task runs without them and the controller returns a
//! warning ([`Controller::warnings`]) saying so, and logs it.
//!
//! Not done yet, and said so rather than ignored: user *group names* ("user:group" with a
//! non-numeric group) are refused with a "not implemented yet" error; following logs is
//! refused likewise; secrets, configs and health checks of a `ProcessSpec` are ignored
//! (another part of the issue).
//!
//! Departures from SwarmKit: SwarmKit only runs containers, through the Docker Engine, which
//! owns their lifetime; here the agent's host is the runtime, so identity (PID + start time)
//! and group-wide signalling are ours to get right.
//!
//! The environment is exactly the spec's `env`, plus `PATH` (a standard one, unless the spec
//! sets it) — the daemon's own environment does not leak into tasks.

pub mod cgroup;
pub mod logs;
pub mod procfs;

use std::os::unix::process::{CommandExt, ExitStatusExt};
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
use tokio::sync::watch;

use crate::{
    Controller, Executor, ExecutorError, Exit, LogReader, LogRecord, LogStream, LogsOptions, Result,
};
pub use logs::LogRotation;
pub use procfs::{parse_signal, signal_to_name};

/// `PATH` of a task whose spec does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long to wait for a SIGKILLed group to disappear before reporting an error.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Settings of a [`ProcessExecutor`].
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// Where each task's log directory is created.
    pub log_dir: PathBuf,
    pub rotation: LogRotation,
    /// How often adopted processes and stopping groups are checked (default 100 ms).
    pub poll_interval: Duration,
    /// Where the cgroup v2 hierarchy is mounted (default `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The cgroup, under the root, that holds one cgroup per task with limits (`shoal`).
    pub cgroup_parent: String,
}

impl ProcessConfig {
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        Self {
            log_dir: log_dir.into(),
            rotation: LogRotation::default(),
            poll_interval: Duration::from_millis(100),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "shoal".into(),
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
        ProcessController::new(task, self.config.clone(), None)
    }

    /// A controller for a task whose process runs already, started by an earlier controller
    /// (possibly in an earlier daemon): process `pid`, started at `start_time`.
    pub fn adopt(&self, task: &Task, pid: i32, start_time: u64) -> Result<ProcessController> {
        if pid <= 1 {
            return Err(ExecutorError::NotFound(format!("invalid PID {pid}")));
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
        ProcessController::new(task, self.config.clone(), Some((pid, start_time)))
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
        let recorded = task.status.as_ref().and_then(|s| match &s.runtime_status {
            Some(task_status::RuntimeStatus::Process(p)) if p.pid > 0 => {
                Some((p.pid, p.start_time))
            }
            _ => None,
        });
        Ok(Box::new(match recorded {
            Some((pid, start_time)) => self.adopt(task, pid, start_time)?,
            None => self.process_controller(task)?,
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
    /// Our child, until the watcher takes it.
    child: Mutex<Option<tokio::process::Child>>,
    watching: AtomicBool,
    exit: watch::Sender<Option<Exit>>,
    rotation_lock: Arc<Mutex<()>>,
    warnings: Mutex<Vec<String>>,
    /// The task's cgroup, once prepared with limits it could apply.
    cgroup: Mutex<Option<PathBuf>>,
}

impl ProcessController {
    fn new(task: &Task, config: Arc<ProcessConfig>, adopted: Option<(i32, u64)>) -> Result<Self> {
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
                child: Mutex::new(None),
                watching: AtomicBool::new(false),
                exit,
                rotation_lock: Arc::new(Mutex::new(())),
                warnings: Mutex::new(Vec::new()),
                cgroup: Mutex::new(None),
            }),
        })
    }

    /// The process's PID and start time, once started or adopted.
    pub fn process(&self) -> Option<(i32, u64)> {
        *self.inner.process.lock().expect("process lock")
    }

    /// The task's log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.inner.config.log_dir.join(&self.inner.task_id)
    }

    /// The current log file of `stream`.
    pub fn log_path(&self, stream: LogStream) -> PathBuf {
        self.log_dir().join(match stream {
            LogStream::Stdout => "stdout.log",
            LogStream::Stderr => "stderr.log",
        })
    }

    fn exit_now(&self) -> Option<Exit> {
        *self.inner.exit.borrow()
    }

    /// Starts the watcher of the process (and the log rotation) once there is a process.
    fn ensure_watching(&self) {
        let Some((pid, start_time)) = self.process() else {
            return;
        };
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let child = self.inner.child.lock().expect("child lock").take();
        let this = self.clone();
        tokio::spawn(async move {
            let exit = match child {
                Some(mut child) => match child.wait().await {
                    Ok(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => Exit::Code(code),
                        (None, Some(signal)) => Exit::Signal(signal),
                        (None, None) => Exit::Unknown,
                    },
                    Err(error) => {
                        tracing::warn!(task = %this.inner.task_id, %error, "waiting on the process failed");
                        Exit::Unknown
                    }
                },
                None => {
                    while procfs::is_running(pid, start_time) {
                        tokio::time::sleep(this.inner.config.poll_interval).await;
                    }
                    Exit::Unknown
                }
            };
            // One last rotation, so the files are within bounds once the task has ended.
            this.rotate().await;
            this.inner.exit.send_replace(Some(exit));
        });
        let this = self.clone();
        tokio::spawn(async move {
            let mut exited = this.inner.exit.subscribe();
            let interval = this.inner.config.rotation.check_interval;
            while tokio::time::timeout(interval, exited.wait_for(Option::is_some))
                .await
                .is_err()
            {
                this.rotate().await;
            }
        });
    }

    async fn rotate(&self) {
        let lock = self.inner.rotation_lock.clone();
        let rotation = self.inner.config.rotation;
        let paths = [
            self.log_path(LogStream::Stdout),
            self.log_path(LogStream::Stderr),
        ];
        let task = self.inner.task_id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().expect("rotation lock");
            for path in paths {
                if let Err(error) = logs::rotate_if_needed(&path, &rotation) {
                    tracing::warn!(%task, path = %path.display(), %error, "log rotation failed");
                }
            }
        })
        .await;
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

    /// The command to spawn, and the task's `cgroup.procs` if it has a cgroup (it must stay
    /// open until the child has been spawned).
    fn command(&self) -> Result<(std::process::Command, Option<std::fs::File>)> {
        let spec = &self.inner.spec;
        let mut command = std::process::Command::new(&spec.command);
        command.args(&spec.args).env_clear();
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
        if !spec.dir.is_empty() {
            command.current_dir(&spec.dir);
        }
        if let Some((uid, gid)) = self.user()? {
            command.uid(uid).gid(gid);
        }
        let stdout = logs::open_for_append(&self.log_path(LogStream::Stdout))
            .map_err(|e| ExecutorError::io("opening the stdout log", e))?;
        let stderr = logs::open_for_append(&self.log_path(LogStream::Stderr))
            .map_err(|e| ExecutorError::io("opening the stderr log", e))?;
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let cgroup = self.inner.cgroup.lock().expect("cgroup lock").clone();
        let procs = match cgroup {
            Some(dir) => Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
                    .map_err(|e| ExecutorError::io(format!("opening {}", dir.display()), e))?,
            ),
            None => None,
        };
        let procs_fd = procs.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: the closure runs in the child between fork and exec and calls only setsid
        // and write, which are async-signal-safe; it allocates nothing. The descriptor stays
        // open in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = procs_fd
                    && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok((command, procs))
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
        self.user()?;
        let spec = &self.inner.spec;
        if !spec.dir.is_empty() && !Path::new(&spec.dir).is_dir() {
            return Err(ExecutorError::InvalidSpec(format!(
                "process.dir: {} is not a directory",
                spec.dir
            )));
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
        let (command, procs) = self.command()?;
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(false);
        let child = command.spawn().map_err(|source| ExecutorError::Spawn {
            command: self.inner.spec.command.clone(),
            source,
        })?;
        drop(procs);
        let pid = child.id().expect("a child not yet waited on has a PID") as i32;
        // The child cannot have been reaped yet (we hold it), so its stat is readable. Should
        // that fail anyway, the process is killed rather than left running untracked.
        let stat = match procfs::stat(pid) {
            Ok(Some(stat)) => stat,
            failure => {
                let _ = procfs::kill_group(pid, libc::SIGKILL);
                return Err(match failure {
                    Err(e) => ExecutorError::io(format!("reading /proc/{pid}/stat"), e),
                    _ => ExecutorError::NotFound(format!("process {pid} vanished at start")),
                });
            }
        };
        *self.inner.process.lock().expect("process lock") = Some((pid, stat.start_time));
        *self.inner.child.lock().expect("child lock") = Some(child);
        tracing::debug!(task = %self.inner.task_id, pid, start_time = stat.start_time, "started");
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
        if options.follow {
            return Err(ExecutorError::NotImplemented(
                "following a process task's logs",
            ));
        }
        let streams: Vec<_> = [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .filter(|s| options.wants(*s))
            .map(|s| (s, self.log_path(s)))
            .collect();
        let max_files = self.inner.config.rotation.max_files;
        let lock = self.inner.rotation_lock.clone();
        let records = tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().expect("rotation lock");
            let mut records = Vec::new();
            for (stream, path) in streams {
                let timestamp = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                let bytes = logs::read(&path, max_files, options.tail)?;
                records.extend(
                    bytes
                        .split_inclusive(|b| *b == b'\n')
                        .map(|line| LogRecord {
                            timestamp,
                            stream,
                            data: line.to_vec(),
                        }),
                );
            }
            Ok::<_, std::io::Error>(records)
        })
        .await
        .map_err(|e| ExecutorError::io("reading logs", std::io::Error::other(e)))?
        .map_err(|e| ExecutorError::io("reading logs", e))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(records.len().max(1));
        for record in records {
            let _ = sender.try_send(Ok(record));
        }
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
