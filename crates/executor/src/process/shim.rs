//! The process shim: the small supervisor that is the parent of a process task, writes its
//! output log and records how it ended, so that the task outlives the daemon and a restarted
//! daemon still learns its exit status (`DESIGN.md`, "Tasks outlive the daemon").
//!
//! It runs as a process of its own: `shoal process-shim FLAGS -- COMMAND ARGS…` in
//! production (a hidden subcommand of the `shoal` binary), `shoal-process-shim FLAGS -- …`
//! (a bin target of this crate) in this crate's tests. It is synchronous: no runtime, one
//! thread.
//!
//! Flags (all written by [`ShimArgs::to_args`], read by [`ShimArgs::parse`]):
//!
//! | flag | meaning |
//! |---|---|
//! | `--dir PATH` | the task directory: `output.log` (and rotated `output.log.N`), `exit` |
//! | `--max-bytes N`, `--max-files N` | rotation of `output.log` (see [`super::logs`]) |
//! | `--cwd PATH` | the task's working directory (default: the shim's) |
//! | `--uid N --gid N` | the task's user and group (default: the shim's) |
//! | `--cgroup-procs PATH` | a `cgroup.procs` file the task joins before it runs |
//! | `--` | the command and its arguments follow |
//!
//! The shim's environment is the task's: the daemon spawns the shim with a cleared
//! environment plus the task's variables, and the shim passes it on unchanged.
//!
//! How the daemon runs it: stdin null, stdout a pipe (the *status channel*), stderr appended
//! to `<dir>/shim.log` (the shim's own complaints), in a session of its own (`setsid`), so
//! it gets no signal meant for the daemon's terminal or process group and keeps running
//! when the daemon exits. It ignores SIGPIPE and SIGHUP (and restores both to their default
//! for the task).
//!
//! What it does:
//! 1. Spawns the command in a session of its own (so the task leads its own process group,
//!    which the daemon signals as a whole — the shim is never in it), as the given user, in
//!    the given directory, having joined the cgroup, with stdin null and stdout and stderr
//!    pipes to the shim.
//! 2. Writes one line on its stdout and closes it: `started <pid> <start time>` (the start
//!    time is field 22 of `/proc/<pid>/stat`, as [`super::procfs`] reads it, so the daemon
//!    records the same identity it adopts by later), or `error <errno> <message>` when the
//!    program could not be started (the daemon turns the errno into
//!    [`crate::ExecutorError::Spawn`], classified by it).
//! 3. Reads both pipes and appends their data to `output.log` as CRI records, rotating it
//!    (see [`super::logs`]).
//! 4. When the task process (its child) has ended, reads the pipes until both are closed,
//!    but at most [`DRAIN`] longer (descendants of the task may hold them open), writes what
//!    remains of an unfinished line as a `P` record, then writes the exit status to
//!    `exit.tmp`, fsyncs it and renames it to `exit` — `code N` or `signal N` — and exits 0.
//!
//! Invariants: `exit` appears only complete (rename), and only after every record the shim
//! will ever write is in `output.log`: a reader that sees `exit` and then reads the log to
//! its end has read everything. The shim sends no signal; stopping the task is the daemon's
//! business (to the task's group).
//!
//! Departures: SwarmKit runs only containers, whose parent is the container runtime's own
//! shim (containerd-shim); this is that shim for host processes, closer to CRI-O's conmon
//! (which also writes the CRI log format and an exit file). Unlike both, there is no socket
//! or API to the shim: the daemon learns everything from the task directory (the log and
//! `exit`) and from `/proc`, so a restarted daemon needs nothing from the shim but its files.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::logs::{LogRotation, LogWriter, MAX_RECORD};
use super::procfs;
use crate::{Exit, LogStream};

/// The exit status file of a task directory.
pub const EXIT: &str = "exit";
/// Where the exit status is written before it is renamed to [`EXIT`].
pub const EXIT_TMP: &str = "exit.tmp";
/// The shim's own stderr.
pub const SHIM_LOG: &str = "shim.log";

/// How long the pipes are still read after the task process has ended.
pub const DRAIN: Duration = Duration::from_secs(1);

/// How often the shim checks whether its child has ended while the pipes are quiet, where
/// the kernel offers no pidfd to wait on (and while draining after the exit).
const CHILD_POLL: Duration = Duration::from_millis(50);

/// What the shim is told to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimArgs {
    pub dir: PathBuf,
    pub rotation: LogRotation,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, u32)>,
    pub cgroup_procs: Option<PathBuf>,
    pub command: OsString,
    pub args: Vec<OsString>,
}

impl ShimArgs {
    /// The command line of the shim, after its program and leading arguments.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["--dir".into(), self.dir.clone().into()];
        out.extend([
            "--max-bytes".into(),
            self.rotation.max_bytes.to_string().into(),
            "--max-files".into(),
            self.rotation.max_files.to_string().into(),
        ]);
        if let Some(cwd) = &self.cwd {
            out.extend(["--cwd".into(), cwd.clone().into()]);
        }
        if let Some((uid, gid)) = self.user {
            out.extend([
                "--uid".into(),
                uid.to_string().into(),
                "--gid".into(),
                gid.to_string().into(),
            ]);
        }
        if let Some(procs) = &self.cgroup_procs {
            out.extend(["--cgroup-procs".into(), procs.clone().into()]);
        }
        out.push("--".into());
        out.push(self.command.clone());
        out.extend(self.args.iter().cloned());
        out
    }

    /// Parses the shim's arguments (those after its program name).
    pub fn parse(args: Vec<OsString>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let mut dir = None;
        let mut rotation = LogRotation::default();
        let (mut cwd, mut uid, mut gid, mut cgroup_procs) = (None, None, None, None);
        loop {
            let Some(flag) = args.next() else {
                return Err("missing `-- COMMAND`".into());
            };
            if flag == "--" {
                break;
            }
            let mut value = || {
                args.next()
                    .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))
            };
            let number = |v: OsString| {
                v.to_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| format!("{}: not a number: {v:?}", flag.to_string_lossy()))
            };
            match flag.to_str() {
                Some("--dir") => dir = Some(PathBuf::from(value()?)),
                Some("--max-bytes") => rotation.max_bytes = number(value()?)?.max(1),
                Some("--max-files") => {
                    rotation.max_files = u32::try_from(number(value()?)?)
                        .map_err(|_| "--max-files is too big".to_string())?
                        .max(1)
                }
                Some("--cwd") => cwd = Some(PathBuf::from(value()?)),
                Some("--uid") => uid = Some(number(value()?)?),
                Some("--gid") => gid = Some(number(value()?)?),
                Some("--cgroup-procs") => cgroup_procs = Some(PathBuf::from(value()?)),
                _ => return Err(format!("unknown flag {flag:?}")),
            }
        }
        let command = args.next().ok_or("missing the command after `--`")?;
        let user = match (uid, gid) {
            (None, None) => None,
            (Some(uid), Some(gid)) => Some((
                u32::try_from(uid).map_err(|_| "--uid is too big")?,
                u32::try_from(gid).map_err(|_| "--gid is too big")?,
            )),
            _ => return Err("--uid and --gid go together".into()),
        };
        Ok(Self {
            dir: dir.ok_or("missing --dir")?,
            rotation,
            cwd,
            user,
            cgroup_procs,
            command,
            args: args.collect(),
        })
    }
}

/// The line the shim writes on its stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// `started <pid> <start time>`
    Started { pid: i32, start_time: u64 },
    /// `error <errno> <message>`
    Error { errno: i32, message: String },
}

impl Status {
    pub fn to_line(&self) -> String {
        match self {
            Status::Started { pid, start_time } => format!("started {pid} {start_time}\n"),
            Status::Error { errno, message } => {
                format!("error {errno} {}\n", message.replace('\n', " "))
            }
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.trim_end_matches('\n').splitn(3, ' ');
        match parts.next()? {
            "started" => Some(Status::Started {
                pid: parts.next()?.parse().ok()?,
                start_time: parts.next()?.parse().ok()?,
            }),
            "error" => Some(Status::Error {
                errno: parts.next()?.parse().ok()?,
                message: parts.next().unwrap_or_default().to_string(),
            }),
            _ => None,
        }
    }
}

/// The content of an exit file.
pub fn format_exit(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("code {code}\n"),
        Exit::Signal(signal) => format!("signal {signal}\n"),
        Exit::Unknown => "unknown\n".into(),
    }
}

pub fn parse_exit(text: &str) -> Option<Exit> {
    let text = text.trim();
    if text == "unknown" {
        return Some(Exit::Unknown);
    }
    let (kind, value) = text.split_once(' ')?;
    let value: i32 = value.parse().ok()?;
    match kind {
        "code" => Some(Exit::Code(value)),
        "signal" => Some(Exit::Signal(value)),
        _ => None,
    }
}

/// The exit status recorded in `dir`, if the shim has written it.
pub fn read_exit(dir: &Path) -> io::Result<Option<Exit>> {
    match std::fs::read_to_string(dir.join(EXIT)) {
        Ok(text) => parse_exit(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {text:?}", dir.join(EXIT).display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `exit` atomically: `exit.tmp`, fsync, rename, fsync of the directory.
pub fn write_exit(dir: &Path, exit: Exit) -> io::Result<()> {
    let tmp = dir.join(EXIT_TMP);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format_exit(exit).as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(EXIT))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Runs the shim: `args` are its arguments after the program name. Exits 0 once the exit
/// status is written, 1 when the command could not be started, 2 on bad arguments.
pub fn main(args: Vec<OsString>) -> ExitCode {
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let args = match ShimArgs::parse(args) {
        Ok(args) => args,
        Err(message) => {
            complain(&format!("bad arguments: {message}"));
            report(&Status::Error {
                errno: libc::EINVAL,
                message: format!("process shim: {message}"),
            });
            return ExitCode::from(2);
        }
    };
    let Some(mut child) = start(&args) else {
        return ExitCode::from(1);
    };
    let mut writer = match LogWriter::open(&args.dir, args.rotation) {
        Ok(writer) => Some(writer),
        Err(error) => {
            complain(&format!(
                "cannot open the output log: {error}; output is dropped"
            ));
            None
        }
    };
    let status = pump(&mut child, &mut writer);
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        _ => Exit::Unknown,
    };
    if let Err(error) = write_exit(&args.dir, exit) {
        complain(&format!("cannot write the exit status {exit:?}: {error}"));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A line on the shim's stderr (`shim.log`). Failures to write it are ignored.
fn complain(message: &str) {
    let _ = writeln!(
        io::stderr(),
        "{} shoal process-shim[{}]: {message}",
        super::logs::format_timestamp(std::time::SystemTime::now()),
        std::process::id()
    );
}

/// Writes the status line and closes the status channel (stdout becomes /dev/null). A daemon
/// that has gone away meanwhile is no reason to stop.
fn report(status: &Status) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(status.to_line().as_bytes());
    let _ = stdout.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout; both descriptors are valid.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// Spawns the task and reports how that went.
fn start(args: &ShimArgs) -> Option<Child> {
    let failed = |error: io::Error, what: &str| {
        complain(&format!("{what}: {error}"));
        report(&Status::Error {
            errno: error.raw_os_error().unwrap_or(libc::EIO),
            message: format!("{what}: {error}"),
        });
        None
    };
    let procs = match &args.cgroup_procs {
        Some(path) => match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => Some(file),
            Err(error) => return failed(error, &format!("opening {}", path.display())),
        },
        None => None,
    };
    let mut command = std::process::Command::new(&args.command);
    command
        .args(&args.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &args.cwd {
        command.current_dir(cwd);
    }
    if let Some((uid, gid)) = args.user {
        command.uid(uid).gid(gid);
    }
    let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the closure runs in the child between fork and exec and calls only setsid,
    // write and signal, which are async-signal-safe; it allocates nothing. The cgroup
    // descriptor stays open in the shim until spawn has returned.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = procs_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(io::Error::last_os_error());
            }
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let what = format!("cannot start {:?}", args.command);
            return failed(error, &what);
        }
    };
    drop(procs);
    let pid = child.id() as i32;
    // Not reaped yet (we have not waited), so its stat is there even if it has ended.
    match procfs::stat(pid) {
        Ok(Some(stat)) => {
            report(&Status::Started {
                pid,
                start_time: stat.start_time,
            });
            Some(child)
        }
        other => {
            let _ = procfs::kill_group(pid, libc::SIGKILL);
            let _ = child.wait();
            let error = match other {
                Err(e) => e,
                _ => io::Error::from_raw_os_error(libc::ESRCH),
            };
            failed(error, &format!("reading /proc/{pid}/stat"))
        }
    }
}

/// Where one pipe's data goes: the bytes after its last newline wait for the rest of the
/// line.
struct Pipe {
    stream: LogStream,
    source: Option<Box<dyn AsRawFdRead>>,
    pending: Vec<u8>,
}

trait AsRawFdRead: Read + AsRawFd {}
impl<T: Read + AsRawFd> AsRawFdRead for T {}

impl Pipe {
    /// Takes `data` in and writes every record it completes.
    fn feed(&mut self, data: &[u8], writer: &mut Option<LogWriter>) {
        self.pending.extend_from_slice(data);
        let mut from = 0;
        loop {
            let rest = &self.pending[from..];
            let window = &rest[..rest.len().min(MAX_RECORD + 1)];
            if let Some(newline) = window.iter().position(|b| *b == b'\n') {
                write(writer, self.stream, true, &rest[..newline]);
                from += newline + 1;
            } else if rest.len() >= MAX_RECORD {
                write(writer, self.stream, false, &rest[..MAX_RECORD]);
                from += MAX_RECORD;
            } else {
                break;
            }
        }
        self.pending.drain(..from);
    }

    /// Writes what remains of an unfinished line.
    fn flush(&mut self, writer: &mut Option<LogWriter>) {
        if !self.pending.is_empty() {
            write(writer, self.stream, false, &self.pending);
            self.pending.clear();
        }
    }
}

fn write(writer: &mut Option<LogWriter>, stream: LogStream, full: bool, data: &[u8]) {
    if let Some(w) = writer
        && let Err(error) = w.write(stream, full, data)
    {
        // A full disk, say: say so once, and keep reading so the task never blocks on a
        // full pipe.
        complain(&format!(
            "cannot write the output log: {error}; output is dropped"
        ));
        *writer = None;
    }
}

/// A pidfd of `pid` (our child, not yet waited for, so its PID cannot have been reused), or
/// `None` where the kernel has no `pidfd_open`.
fn open_pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just opened and is owned by nobody else.
    Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as libc::c_int) })
}

/// Copies the task's output into the log until the task has ended and its pipes are closed
/// (or [`DRAIN`] has passed since it ended). Returns how it ended.
fn pump(child: &mut Child, writer: &mut Option<LogWriter>) -> ExitStatus {
    let mut pipes = [
        Pipe {
            stream: LogStream::Stdout,
            source: child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsRawFdRead>),
            pending: Vec::new(),
        },
        Pipe {
            stream: LogStream::Stderr,
            source: child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsRawFdRead>),
            pending: Vec::new(),
        },
    ];
    let mut buf = vec![0u8; 64 << 10];
    // A pidfd becomes readable when the task exits: the shim then sleeps in poll until there
    // is output or an exit, instead of waking every CHILD_POLL (kernels before 5.3 have none,
    // and get the polling).
    let pidfd = open_pidfd(child.id());
    let mut status: Option<ExitStatus> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        if status.is_none() {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    deadline = Some(Instant::now() + DRAIN);
                }
                Ok(None) => {}
                Err(error) => {
                    complain(&format!("waiting for the task: {error}"));
                    std::thread::sleep(CHILD_POLL);
                }
            }
        }
        let open: Vec<usize> = (0..2).filter(|i| pipes[*i].source.is_some()).collect();
        if open.is_empty() {
            break;
        }
        let timeout = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.min(CHILD_POLL).as_millis() as libc::c_int
            }
            None if pidfd.is_some() => -1,
            None => CHILD_POLL.as_millis() as libc::c_int,
        };
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|i| libc::pollfd {
                fd: pipes[*i].source.as_ref().expect("open").as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if status.is_none()
            && let Some(pidfd) = &pidfd
        {
            fds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of fds.len() pollfd structures.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                complain(&format!("poll: {error}"));
                std::thread::sleep(CHILD_POLL);
            }
            continue;
        }
        for (fd, i) in fds.iter().zip(open) {
            if fd.revents == 0 {
                continue;
            }
            let pipe = &mut pipes[i];
            let source = pipe.source.as_mut().expect("open");
            match source.read(&mut buf) {
                Ok(0) => pipe.source = None,
                Ok(n) => pipe.feed(&buf[..n], writer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    complain(&format!("reading the task's {:?}: {error}", pipe.stream));
                    pipe.source = None;
                }
            }
        }
    }
    for pipe in &mut pipes {
        pipe.flush(writer);
    }
    match status {
        Some(status) => status,
        // Both pipes closed before the task ended: nothing more to read, wait for it.
        None => loop {
            match child.wait() {
                Ok(status) => break status,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    complain(&format!("waiting for the task: {error}"));
                    break ExitStatus::from_raw(0x7f00);
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        s.into()
    }

    #[test]
    fn arguments_round_trip() {
        let args = ShimArgs {
            dir: "/state/worker/logs/t1".into(),
            rotation: LogRotation {
                max_bytes: 1000,
                max_files: 4,
            },
            cwd: Some("/tmp".into()),
            user: Some((1000, 100)),
            cgroup_procs: Some("/sys/fs/cgroup/shoal/t1/cgroup.procs".into()),
            command: os("sh"),
            args: vec![os("-c"), os("echo --dir; exit 3"), os("--")],
        };
        assert_eq!(ShimArgs::parse(args.to_args()).unwrap(), args);
        let minimal = ShimArgs::parse(vec![os("--dir"), os("d"), os("--"), os("true")]).unwrap();
        assert_eq!(minimal.rotation, LogRotation::default());
        assert_eq!((minimal.cwd, minimal.user), (None, None));
        for bad in [
            vec![os("--dir"), os("d")],
            vec![os("--dir"), os("d"), os("--")],
            vec![os("--"), os("true")],
            vec![
                os("--dir"),
                os("d"),
                os("--uid"),
                os("1"),
                os("--"),
                os("true"),
            ],
            vec![os("--bogus"), os("--"), os("true")],
            vec![
                os("--dir"),
                os("d"),
                os("--max-bytes"),
                os("x"),
                os("--"),
                os("true"),
            ],
        ] {
            assert!(ShimArgs::parse(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_lines_and_exit_files() {
        for status in [
            Status::Started {
                pid: 42,
                start_time: 123456,
            },
            Status::Error {
                errno: libc::ENOENT,
                message: "cannot start \"x\": No such file".into(),
            },
        ] {
            assert_eq!(Status::parse(&status.to_line()), Some(status));
        }
        assert_eq!(Status::parse("running 1 2\n"), None);
        assert_eq!(Status::parse(""), None);

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit(dir.path()).unwrap(), None);
        for exit in [Exit::Code(7), Exit::Signal(9), Exit::Unknown] {
            write_exit(dir.path(), exit).unwrap();
            assert_eq!(read_exit(dir.path()).unwrap(), Some(exit));
        }
        assert!(!dir.path().join(EXIT_TMP).exists());
        std::fs::write(dir.path().join(EXIT), "bogus").unwrap();
        assert!(read_exit(dir.path()).is_err());
    }

    #[test]
    fn long_lines_become_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Some(LogWriter::open(dir.path(), LogRotation::default()).unwrap());
        let mut pipe = Pipe {
            stream: LogStream::Stdout,
            source: None,
            pending: Vec::new(),
        };
        let long = vec![b'x'; MAX_RECORD * 2 + 10];
        // Fed in odd pieces, as a pipe delivers them.
        let mut input = b"short\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nexact");
        input.extend_from_slice(&vec![b'y'; MAX_RECORD - 5]);
        input.extend_from_slice(b"\nunfinished");
        for piece in input.chunks(7000) {
            pipe.feed(piece, &mut writer);
        }
        pipe.flush(&mut writer);
        let (entries, _) = super::super::logs::read_history(dir.path()).unwrap();
        let shape: Vec<(bool, usize)> = entries.iter().map(|e| (e.full, e.data.len())).collect();
        assert_eq!(
            shape,
            vec![
                (true, 5),
                (false, MAX_RECORD),
                (false, MAX_RECORD),
                (true, 10),
                (true, MAX_RECORD),
                (false, 10),
            ]
        );
        let joined: Vec<u8> = entries
            .into_iter()
            .flat_map(|e| e.into_record().data)
            .collect();
        assert_eq!(joined, input, "the records put together are the output");
    }
}
