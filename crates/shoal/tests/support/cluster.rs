//! A small cluster of real `shoal daemon` processes that run process tasks, driven with the
//! `shoal` binary as a user drives it: a manager (`m1`) and workers on 127.0.0.1, each with
//! its own state directory and hostname (its name), under one temporary directory.
//!
//! Task processes are found through `/proc`: the services a test creates with
//! [`Cluster::service_args`] carry `SHOAL_TEST_CLUSTER=<the cluster's directory>` in their
//! environment, which the shim and the task inherit; a task process's parent is its shim,
//! whose `--dir <state>/worker/logs/<task ID>` says on which node, and for which task, it
//! runs.
//!
//! Every wait is bounded ([`LIMIT`]) and fails showing `node ls`, `service ps` and the task
//! processes. Dropping the cluster kills its daemons, then every task process and shim it
//! left (also when the test panicked).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Manager;
use super::cli::{Run, finished};

/// How long any one wait may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A `shoal service ps --format json` row.
#[derive(Clone, Debug)]
pub struct TaskRow {
    pub id: String,
    /// `NAME.SLOT` (replicated), `NAME.NODE` (global).
    pub name: String,
    /// An older task of its slot (or node).
    pub history: bool,
    /// The node's hostname.
    pub node: String,
    pub desired: String,
    pub current: String,
    pub error: String,
}

impl TaskRow {
    /// Wanted running and running.
    pub fn running(&self) -> bool {
        self.desired == "Running" && self.current.starts_with("Running")
    }

    /// In a terminal state, as its node reported it.
    pub fn ended(&self) -> bool {
        [
            "Complete", "Shutdown", "Failed", "Rejected", "Orphaned", "Remove",
        ]
        .iter()
        .any(|s| self.current.starts_with(s))
    }

    /// Told to stop (or removed).
    pub fn stopping(&self) -> bool {
        self.desired == "Shutdown" || self.desired == "Remove"
    }
}

/// A `shoal node ls --format json` row.
#[derive(Clone, Debug)]
pub struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub status: String,
    pub availability: String,
}

/// A live task process of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    /// Its shim, if it still has one.
    pub shim: Option<i32>,
    /// The node (hostname) whose shim runs it, if it still has a shim.
    pub node: Option<String>,
    /// The task it runs, if it still has a shim.
    pub task_id: Option<String>,
}

/// A running task as a test sees it: its row in `service ps` and its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub name: String,
    pub task_id: String,
    pub node: String,
    pub pid: i32,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    /// The manager's control socket.
    pub socket: PathBuf,
    manager_addr: String,
    /// The daemons by name (`m1`, the workers).
    daemons: BTreeMap<String, Manager>,
    /// Flags every daemon of the cluster starts with (see [`Cluster::start_with`]).
    extra: Vec<String>,
    /// Environment every daemon of the cluster starts with (see [`Cluster::start_with_env`]).
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts a manager `m1` that creates the cluster, then a worker for each name, and
    /// waits until every node is READY.
    pub fn start(workers: &[&str]) -> Cluster {
        Cluster::start_with(workers, &[])
    }

    /// [`Cluster::start`] with `extra_daemon_flags` given to every daemon, the workers that
    /// join later included (e.g. `["--executor", "sim"]`).
    pub fn start_with(workers: &[&str], extra_daemon_flags: &[&str]) -> Cluster {
        Cluster::start_with_env(workers, extra_daemon_flags, &[])
    }

    /// [`Cluster::start_with`], every daemon (the workers that join later included) started
    /// with `env` added to its environment (a daemon restarted later starts without it).
    pub fn start_with_env(
        workers: &[&str],
        extra_daemon_flags: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = vec!["--init", "--hostname", "m1"];
        flags.extend_from_slice(extra_daemon_flags);
        let m1 = Manager::start_with_env(dir.path(), "m1", &flags, env);
        let socket = m1.state_dir.join("control.sock");
        let manager_addr = m1.addr.clone();
        let mut cluster = Cluster {
            dir,
            socket,
            manager_addr,
            daemons: BTreeMap::from([("m1".to_string(), m1)]),
            extra: extra_daemon_flags.iter().map(|f| f.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        cluster.wait_ready("m1");
        for name in workers {
            cluster.join_worker(name);
        }
        cluster
    }

    /// The directory everything lives under.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Starts a worker named `name` that joins with the worker token; waits until READY.
    pub fn join_worker(&mut self, name: &str) {
        let token = self
            .shoal(&["swarm", "join-token", "-q", "worker"])
            .ok()
            .trim()
            .to_string();
        let worker = Manager::start_with_env(
            self.dir.path(),
            name,
            &[
                "--join-addr",
                &self.manager_addr,
                "--join-token",
                &token,
                "--hostname",
                name,
            ]
            .into_iter()
            .chain(self.extra.iter().map(String::as_str))
            .collect::<Vec<_>>(),
            &self.env(),
        );
        self.daemons.insert(name.to_string(), worker);
        self.wait_ready(name);
    }

    /// Starts a manager named `name` that joins with the manager token; waits until READY.
    pub fn join_manager(&mut self, name: &str) {
        let token = self
            .shoal(&["swarm", "join-token", "-q", "manager"])
            .ok()
            .trim()
            .to_string();
        let manager = Manager::start_with_env(
            self.dir.path(),
            name,
            &[
                "--join-addr",
                &self.manager_addr,
                "--join-token",
                &token,
                "--hostname",
                name,
            ]
            .into_iter()
            .chain(self.extra.iter().map(String::as_str))
            .collect::<Vec<_>>(),
            &self.env(),
        );
        self.daemons.insert(name.to_string(), manager);
        self.wait_ready(name);
    }

    /// The Docker Engine API socket of node `name`.
    pub fn engine_socket_of(&self, name: &str) -> PathBuf {
        self.daemons[name].state_dir.join("docker.sock")
    }

    /// The control socket of node `name`.
    pub fn socket_of(&self, name: &str) -> PathBuf {
        self.daemons[name].state_dir.join("control.sock")
    }

    fn wait_ready(&self, name: &str) {
        self.wait(&format!("{name} to be READY"), &[], |c| {
            c.node(name).filter(|n| n.status == "Ready").map(|_| ())
        });
    }

    /// The daemon of node `name`.
    pub fn daemon(&mut self, name: &str) -> &mut Manager {
        self.daemons.get_mut(name).expect("a node of the cluster")
    }

    /// `shoal -s SOCKET args…` against the manager, bounded by [`LIMIT`].
    pub fn shoal(&self, args: &[&str]) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .env_remove("SHOAL_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal");
        // Read the pipes while waiting, so a long output cannot block the child.
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let read = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let out = read(Box::new(stdout));
        let err = read(Box::new(stderr));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shoal {args:?} did not finish within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        finished(std::process::Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        })
    }

    /// The arguments of `shoal service create` for a service `name` of long-running process
    /// tasks (`sleep 1000`) this cluster can find, with `flags` before the command.
    pub fn service_args(&self, name: &str, flags: &[&str]) -> Vec<String> {
        self.command_service_args(name, flags, &["sleep", "1000"])
    }

    /// The arguments of `shoal service create` for a service `name` of process tasks that run
    /// `command`, which this cluster can find, with `flags` before the command.
    pub fn command_service_args(
        &self,
        name: &str,
        flags: &[&str],
        command: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = ["service", "create", "--name", name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push("--env".into());
        args.push(format!("SHOAL_TEST_CLUSTER={}", self.dir.path().display()));
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.extend(command.iter().map(|s| s.to_string()));
        args
    }

    /// `shoal service create` with [`Cluster::command_service_args`], as it ended (it may be
    /// given `-d`, or fail).
    pub fn create_command_service(&self, name: &str, flags: &[&str], command: &[&str]) -> Run {
        let args = self.command_service_args(name, flags, command);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.shoal(&args)
    }

    /// `shoal service inspect service`: the service as JSON.
    pub fn inspect(&self, service: &str) -> serde_json::Value {
        let out = self.shoal(&["service", "inspect", service]).ok();
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0].clone()
    }

    /// Creates a service with [`Cluster::service_args`], waiting (as `service create` does)
    /// until it has converged.
    pub fn create_service(&self, name: &str, flags: &[&str]) -> String {
        let args = self.service_args(name, flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.shoal(&args).ok()
    }

    /// The tasks of `service`, history included, or `None` if `service ps` fails.
    pub fn try_ps(&self, service: &str) -> Option<Vec<TaskRow>> {
        let run = self.shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
        if run.code != Some(0) {
            return None;
        }
        Some(
            json_lines(&run.stdout)
                .iter()
                .map(|v| TaskRow {
                    id: text(v, "ID"),
                    name: text(v, "Name"),
                    history: v["History"].as_bool().unwrap_or(false),
                    node: text(v, "Node"),
                    desired: text(v, "DesiredState"),
                    current: text(v, "CurrentState"),
                    error: text(v, "Error"),
                })
                .collect(),
        )
    }

    /// The tasks of `service`, history included.
    pub fn ps(&self, service: &str) -> Vec<TaskRow> {
        self.try_ps(service)
            .unwrap_or_else(|| panic!("service ps {service} failed\n{}", self.describe(&[])))
    }

    /// The nodes, or `None` if `node ls` fails.
    pub fn nodes(&self) -> Option<Vec<NodeRow>> {
        let run = self.shoal(&["node", "ls", "--format", "json"]);
        if run.code != Some(0) {
            return None;
        }
        Some(
            json_lines(&run.stdout)
                .iter()
                .map(|v| NodeRow {
                    id: text(v, "ID"),
                    hostname: text(v, "Hostname"),
                    status: text(v, "Status"),
                    availability: text(v, "Availability"),
                })
                .collect(),
        )
    }

    /// Node `hostname` as `node ls` shows it.
    pub fn node(&self, hostname: &str) -> Option<NodeRow> {
        self.nodes()?.into_iter().find(|n| n.hostname == hostname)
    }

    /// Every live task process of the cluster (any service it created).
    pub fn processes(&self) -> Vec<Process> {
        let marker = format!("SHOAL_TEST_CLUSTER={}", self.dir.path().display());
        let mut out = Vec::new();
        for pid in marked_pids(&marker) {
            let Some(cmdline) = cmdline(pid) else {
                continue;
            };
            if cmdline.iter().any(|a| a == "--dir") {
                continue; // a shim
            }
            let shim = parent(pid).filter(|p| cmdline_of_shim(*p).is_some());
            let (node, task_id) = match shim.and_then(cmdline_of_shim) {
                Some((node, task)) => (Some(node), Some(task)),
                None => (None, None),
            };
            out.push(Process {
                pid,
                shim,
                node,
                task_id,
            });
        }
        out.sort_by_key(|p| p.pid);
        out
    }

    /// Kills `-9` every task process node `name` runs, and their shims (as a machine that
    /// dies takes them with it).
    pub fn kill_tasks_on(&self, name: &str) {
        for p in self.processes() {
            if p.node.as_deref() == Some(name) {
                kill(p.pid);
                if let Some(shim) = p.shim {
                    kill(shim);
                }
            }
        }
    }

    /// The running tasks of `service`, once it is *settled*: every task meant to run runs,
    /// with exactly one live process on the node `service ps` names, and no task told to stop
    /// still has a process. `None` while it is not.
    pub fn settled(&self, service: &str) -> Option<Vec<Placed>> {
        let rows = self.try_ps(service)?;
        let processes = self.processes();
        // Any process of this service's tasks, or one that lost its shim: it must belong to
        // a running task.
        let mut placed = Vec::new();
        for row in &rows {
            let mine: Vec<&Process> = processes
                .iter()
                .filter(|p| p.task_id.as_deref() == Some(row.id.as_str()))
                .collect();
            if row.stopping() {
                if !mine.is_empty() {
                    return None;
                }
                continue;
            }
            if !row.running() || mine.len() != 1 || mine[0].node.as_deref() != Some(&row.node) {
                return None;
            }
            placed.push(Placed {
                name: row.name.clone(),
                task_id: row.id.clone(),
                node: row.node.clone(),
                pid: mine[0].pid,
            });
        }
        if processes.iter().any(|p| p.task_id.is_none()) {
            return None; // an orphan: some task's process outlived its shim
        }
        placed.sort_by(|a, b| a.name.cmp(&b.name));
        Some(placed)
    }

    /// Waits until `service` is settled with tasks for which `check` holds; returns them.
    pub fn wait_settled(
        &self,
        what: &str,
        service: &str,
        mut check: impl FnMut(&[Placed]) -> bool,
    ) -> Vec<Placed> {
        self.wait(what, &[service], |c| {
            c.settled(service).filter(|placed| check(placed))
        })
    }

    /// Polls `f` until it gives a value, for at most [`LIMIT`]; on timeout, fails showing the
    /// cluster and `services`.
    pub fn wait<T>(
        &self,
        what: &str,
        services: &[&str],
        mut f: impl FnMut(&Cluster) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if start.elapsed() > LIMIT {
                panic!(
                    "timed out after {LIMIT:?} waiting for {what}\n{}",
                    self.describe(services)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `node ls`, `service ps` of `services`, the task processes and the end of the
    /// manager's log: what a failed wait shows.
    pub fn describe(&self, services: &[&str]) -> String {
        let run = |args: &[&str]| {
            let r = self.shoal(args);
            format!("$ shoal {}\n{}{}", args.join(" "), r.stdout, r.stderr)
        };
        let mut out = run(&["node", "ls"]);
        for s in services {
            out.push_str(&run(&["service", "ps", "--no-trunc", s]));
        }
        out.push_str("task processes:\n");
        for p in self.processes() {
            out.push_str(&format!("  {p:?}\n"));
        }
        if let Some(m1) = self.daemons.get("m1") {
            let logs = m1.logs();
            let lines: Vec<&str> = logs.lines().collect();
            out.push_str("m1's log (end):\n");
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for daemon in self.daemons.values_mut() {
            daemon.kill();
        }
        // Then what they left: the tasks, then their shims (which end with their tasks).
        let marker = format!("SHOAL_TEST_CLUSTER={}", self.dir.path().display());
        for _ in 0..3 {
            let pids = marked_pids(&marker);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                kill(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Tasks of services created without the marker (the README's, say): the shims whose
        // `--dir` lies in the cluster's directory, and their children.
        let dir = self.dir.path().display().to_string();
        let all: Vec<i32> = std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .collect()
            })
            .unwrap_or_default();
        let shims: Vec<i32> = all
            .iter()
            .copied()
            .filter(|pid| {
                cmdline(*pid).is_some_and(|args| {
                    args.iter()
                        .skip_while(|a| *a != "--dir")
                        .nth(1)
                        .is_some_and(|d| d.starts_with(&dir))
                })
            })
            .collect();
        for pid in &all {
            if parent(*pid).is_some_and(|p| shims.contains(&p)) {
                kill(*pid);
            }
        }
        for pid in shims {
            kill(pid);
        }
    }
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn kill(pid: i32) {
    // SAFETY: kill with a PID and a signal number.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Live (not zombie) processes whose environment holds `marker`.
fn marked_pids(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == marker.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// The value of the environment variable `key` of process `pid` (as it started), if it is set
/// and the process still lives.
pub fn env_of(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// (node, task ID) of the shim with this PID: from its `--dir <node's state
/// dir>/worker/logs/<task ID>`.
fn cmdline_of_shim(pid: i32) -> Option<(String, String)> {
    let args = cmdline(pid)?;
    let dir = args.iter().skip_while(|a| *a != "--dir").nth(1)?;
    let parts: Vec<&str> = Path::new(dir)
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    let at = parts.windows(2).rposition(|w| w == ["worker", "logs"])?;
    let node = *parts.get(at.checked_sub(1)?)?;
    let task = *parts.get(at + 2)?;
    Some((node.to_string(), task.to_string()))
}
