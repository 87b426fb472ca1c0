//! The Docker executor (runtime `container`): a task is a container of the local Docker
//! Engine, driven through its HTTP API on a Unix socket.
//!
//! What it does:
//! - [`DockerExecutor::new`] connects to the engine (socket from [`DockerConfig`]: by default
//!   `DOCKER_HOST` when it is a `unix://` address, else `/var/run/docker.sock`), pins the API
//!   version (below) and reads the engine's description; [`Executor::describe`] returns that
//!   copy — runtime `container`, the engine's platform, CPUs and memory, version, labels and
//!   plugins — and [`DockerExecutor::refresh`] reads it again.
//! - [`Executor::controller`] plans the task's container without asking the engine anything
//!   ([`spec::plan`]: name, labels, the mapping of the spec, refusals and warnings), and the
//!   [`DockerController`] carries it out (see [`controller`] for each operation).
//! - Logs stay with the engine's log driver and are read through its logs API ([`logs`]).
//!
//! Invariants:
//! - A container is ours only if its `com.docker.swarm.task.id` label names the task: the
//!   executor never starts, stops or removes a container that merely has the expected name.
//! - Everything is found again from the task alone (name, then label), so a fresh executor
//!   after an agent restart *adopts* the containers of its tasks: `wait` waits on the
//!   running container, `start` leaves a running or exited container as it is, `prepare`
//!   reuses an existing one. The container's ID in the task's status
//!   ([`ContainerStatus`](shoal_api::v1::ContainerStatus)) is for people and tools; the name
//!   is what we look up.
//! - Engine errors are classified ([`error`]): unreachable engine, timeouts and 5xx are
//!   temporary (the task state machine retries them); 404 and 400 are fatal. An image that is
//!   missing and cannot be pulled is fatal and named in the message, so the task is REJECTED
//!   before anything runs.
//! - Every request is bounded by the client's `request_timeout`; a pull by `pull_timeout`;
//!   stops by the grace period plus the request timeout. Only `wait` and following logs may
//!   last as long as the container.
//!
//! The engine API: the client (`bollard`) would speak the newest API version it knows; we pin
//! 1.41 (Docker 20.10) and lower it further if the engine is older, so Docker 20.10 and
//! every later engine accept our requests. Fields a newer API added (a health check's
//! `start_interval`) are therefore not sent, and the spec's value is reported as a warning.
//! Replies are decoded leniently: unknown fields are ignored and missing ones are `None`.
//!
//! Departures from SwarmKit's `dockerapi` adapter:
//! - No network attachment or published ports yet: they are accepted with a warning (the
//!   container joins the engine's default bridge).
//! - Secrets and configs are files on the host's memory-backed filesystem
//!   ([`DockerConfig::secrets_dir`], `/dev/shm/shoal-…`: never on disk), written by `prepare`
//!   and bind-mounted read-only (see [`spec::file_mounts`]), where SwarmKit hands them to the
//!   engine's own secret store. A task whose secrets did not come with it is refused at
//!   `prepare`, as is a node without a memory-backed `/dev/shm`. They go with `remove`.
//! - SwarmKit waits for the container through the engine's event stream and treats a
//!   container found exited after a restart as a fresh exit; here `wait` is the engine's own
//!   wait call, which answers at once for a stopped container with its stored exit code.
//! - SwarmKit passes the spec's stop grace period to the engine's stop as seconds; so do we,
//!   rounded *up* (a 300 ms grace becomes 1 s rather than an immediate kill).
//! - An exit caused by a signal is reported as the engine reports it, code 128 + signal
//!   ([`Exit::Code`]), not as [`Exit::Signal`].
//! - The health check gates RUNNING in `start` (SwarmKit watches health events after
//!   start; the effect is the same: the task is RUNNING only once healthy).
//!
//! [`ContainerSpec`]: shoal_api::v1::ContainerSpec
//! [`Exit::Code`]: shoal_executor::Exit::Code
//! [`Exit::Signal`]: shoal_executor::Exit::Signal

pub mod controller;
pub mod error;
pub mod logs;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use shoal_api::labels::labels;
use shoal_api::v1::{
    EngineDescription, NodeDescription, Platform, PluginDescription, Resources, Task,
};
use shoal_executor::{Controller, Executor, ExecutorError, Result, TaskDependencies};

pub use bollard;
pub use controller::DockerController;

/// The runtime this executor runs.
pub const RUNTIME: &str = "container";
/// Where the engine listens when `DOCKER_HOST` does not say.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The engine API version we speak (Docker 20.10); lowered for older engines.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Settings of a [`DockerExecutor`].
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// The engine's Unix socket.
    pub socket: PathBuf,
    /// This node's ID: the `com.docker.swarm.node.id` label of tasks that lack one, and part
    /// of the names of global tasks.
    pub node_id: String,
    /// How long pulling a missing image may take.
    pub pull_timeout: Duration,
    /// How often health and stopping are polled (default 100 ms).
    pub poll_interval: Duration,
    /// How long one engine request may take to answer (default 60 s).
    pub request_timeout: Duration,
    /// Where each task's secret and config files are written, to be bind-mounted into its
    /// container: a directory of this node on a memory-backed filesystem (default
    /// `/dev/shm/shoal-<hash of "docker/<node id>">`). The engine must see the host's
    /// filesystem (a local engine).
    pub secrets_dir: PathBuf,
}

impl DockerConfig {
    /// Defaults for node `node_id`, with the socket of [`default_socket`].
    pub fn new(node_id: impl Into<String>) -> Self {
        let node_id: String = node_id.into();
        Self {
            secrets_dir: shoal_executor::files::node_root(
                Path::new(shoal_executor::files::SHM_BASE),
                Path::new(&format!("docker/{node_id}")),
            ),
            socket: default_socket(),
            node_id,
            pull_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(100),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// `DOCKER_HOST` if it is a `unix://` address, else [`DEFAULT_SOCKET`]. Another kind of
/// `DOCKER_HOST` (tcp, ssh) is not used, with a warning: this executor speaks to a local
/// engine only.
pub fn default_socket() -> PathBuf {
    socket_from(std::env::var("DOCKER_HOST").ok().as_deref())
}

fn socket_from(docker_host: Option<&str>) -> PathBuf {
    match docker_host.filter(|h| !h.is_empty()) {
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => {
                tracing::warn!(
                    docker_host = host,
                    "DOCKER_HOST is not a unix:// socket; using {DEFAULT_SOCKET}"
                );
                PathBuf::from(DEFAULT_SOCKET)
            }
        },
        None => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Runs tasks of runtime `container` on the local Docker Engine.
#[derive(Clone)]
pub struct DockerExecutor {
    docker: Docker,
    config: Arc<DockerConfig>,
    description: Arc<RwLock<NodeDescription>>,
}

impl DockerExecutor {
    /// Connects to the engine and reads its description. Fails (temporarily) when the engine
    /// does not answer.
    pub async fn new(config: DockerConfig) -> Result<Self> {
        let docker = connect(&config.socket, config.request_timeout).await?;
        let executor = Self {
            docker,
            config: Arc::new(config),
            description: Arc::new(RwLock::new(NodeDescription::default())),
        };
        executor.refresh().await?;
        Ok(executor)
    }

    /// Reads the engine's description again (what [`Executor::describe`] returns).
    pub async fn refresh(&self) -> Result<()> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| error::classify("reading the engine's description", e))?;
        let mut engine_labels = Vec::new();
        for label in info.labels.unwrap_or_default() {
            let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
            engine_labels.push((key.to_string(), value.to_string()));
        }
        let mut plugins = Vec::new();
        if let Some(p) = info.plugins {
            for (kind, names) in [
                ("Volume", p.volume),
                ("Network", p.network),
                ("Authorization", p.authorization),
                ("Log", p.log),
            ] {
                for name in names.unwrap_or_default() {
                    plugins.push(PluginDescription {
                        r#type: kind.into(),
                        name,
                    });
                }
            }
        }
        let description = NodeDescription {
            hostname: info.name.unwrap_or_default(),
            platform: Some(Platform {
                architecture: info
                    .architecture
                    .unwrap_or_else(|| std::env::consts::ARCH.into()),
                os: info.os_type.unwrap_or_else(|| std::env::consts::OS.into()),
            }),
            resources: Some(Resources {
                nano_cpus: info.ncpu.unwrap_or(0).saturating_mul(1_000_000_000),
                memory_bytes: info.mem_total.unwrap_or(0),
                generic: Vec::new(),
            }),
            engine: Some(EngineDescription {
                engine_version: info.server_version.unwrap_or_default(),
                labels: labels(engine_labels),
                plugins,
            }),
            runtimes: vec![RUNTIME.into()],
            ..Default::default()
        };
        *self.description.write().expect("description lock") = description;
        Ok(())
    }

    /// The engine client, for callers that need more of the engine (tests, diagnostics).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// A controller for `task`, typed.
    pub fn docker_controller(&self, task: &Task) -> Result<DockerController> {
        self.docker_controller_with(task, &TaskDependencies::default())
    }

    /// A controller for `task`, typed, with the secrets and configs it references (bind
    /// mounts of files its `prepare` writes; a missing one refuses `prepare`).
    pub fn docker_controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> Result<DockerController> {
        let mut plan = spec::plan(task, &self.config.node_id)?;
        let files = match shoal_executor::files::task_files(task, dependencies) {
            Ok(files) => {
                let mounts = spec::file_mounts(&plan, &files, &self.config.secrets_dir)?;
                if !mounts.is_empty() {
                    plan.body
                        .host_config
                        .get_or_insert_with(Default::default)
                        .mounts
                        .get_or_insert_with(Vec::new)
                        .extend(mounts);
                }
                Ok(files)
            }
            Err(ExecutorError::InvalidSpec(message)) => Err(message),
            Err(e) => Err(e.to_string()),
        };
        Ok(DockerController::new(
            self.docker.clone(),
            self.config.clone(),
            plan,
            files,
        ))
    }
}

/// Connects to the engine at `socket` and settles the API version.
async fn connect(socket: &Path, timeout: Duration) -> Result<Docker> {
    let path = socket.to_str().ok_or_else(|| {
        ExecutorError::InvalidSpec(format!("socket path {} is not UTF-8", socket.display()))
    })?;
    let context = || format!("connecting to the Docker Engine at {path}");
    if !socket.exists() {
        return Err(error::temporary(
            context(),
            std::io::ErrorKind::WouldBlock,
            "the socket does not exist".into(),
        ));
    }
    let docker = Docker::connect_with_unix(path, timeout.as_secs().max(1), &API_VERSION)
        .map_err(|e| error::classify(context(), e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| error::classify(context(), e))
}

impl Executor for DockerExecutor {
    fn describe(&self) -> NodeDescription {
        self.description.read().expect("description lock").clone()
    }

    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>> {
        Ok(Box::new(self.docker_controller(task)?))
    }

    fn controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> Result<Box<dyn Controller>> {
        Ok(Box::new(self.docker_controller_with(task, dependencies)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_comes_from_docker_host_when_it_is_a_unix_one() {
        assert_eq!(socket_from(None), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(socket_from(Some("")), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_from(Some("unix:///run/user/1000/docker.sock")),
            PathBuf::from("/run/user/1000/docker.sock")
        );
        assert_eq!(
            socket_from(Some("tcp://10.0.0.1:2375")),
            PathBuf::from(DEFAULT_SOCKET)
        );
    }

    #[tokio::test]
    async fn an_engine_that_is_not_there_is_a_temporary_error() {
        let mut config = DockerConfig::new("n");
        config.socket = PathBuf::from("/nonexistent/docker.sock");
        let error = DockerExecutor::new(config).await.err().expect("no engine");
        assert!(error.is_temporary(), "{error}");
        assert!(
            error.to_string().contains("/nonexistent/docker.sock"),
            "{error}"
        );

        // A path that exists but where nothing listens.
        let mut config = DockerConfig::new("n");
        config.socket = PathBuf::from("/dev/null");
        config.request_timeout = std::time::Duration::from_secs(2);
        let error = DockerExecutor::new(config).await.err().expect("no engine");
        assert!(error.is_temporary(), "{error}");
    }
}
