//! The controller of one container task.
//!
//! The container is found by its name (see [`crate::spec::container_name`]) and checked by its
//! task-ID label, every time an operation needs it and the controller does not know its ID
//! yet. So a controller made by a fresh executor — after an agent restart — finds the
//! container an earlier one created, and every operation is idempotent:
//!
//! - `prepare`: a container of this task exists → reused as it is; otherwise the image is
//!   looked up (and pulled, within `pull_timeout`, when missing) and the container created.
//!   An image that cannot be pulled is a fatal error naming the image (the task is
//!   REJECTED). A container with our name but another task's label is never touched: that is
//!   a fatal error.
//! - `start`: starts a created container; a running one is left alone, and an exited one is
//!   *not* restarted (it ran; `wait` reports how it ended). With a health check in the spec,
//!   `start` returns only once the engine reports the container healthy, and fails (fatally)
//!   if it reports it unhealthy or the container ends first.
//! - `wait`: the engine's wait (`condition=not-running`) → [`Exit::Code`]. The engine reports
//!   a container killed by a signal as code 128 + signal, and so do we (there is no way to
//!   tell it from a program that exits with that code). Waiting on a container that was
//!   never started is an error, not an exit 0.
//! - `shutdown`: the engine's stop, with the task's grace period in whole seconds (rounded
//!   up): the stop signal of the container (the spec's, or the image's, or SIGTERM), then
//!   SIGKILL. `terminate`: SIGKILL at once. Both accept a container that is gone or stopped.
//! - `remove`: force-removal with the container's anonymous volumes; a missing container is
//!   fine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use shoal_api::v1::{ContainerStatus, task_status};
use shoal_executor::files::TaskFile;
use shoal_executor::{Controller, ExecutorError, Exit, LogReader, LogsOptions, Result};

use crate::spec::{ContainerPlan, LABEL_TASK_ID, ceil_seconds, pull_reference};
use crate::{DockerConfig, error, logs};

/// How long a killed container may take to be reported as stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// A client timeout long enough for requests that last as long as the container (wait,
/// following logs): the engine sends their headers only when they end, or at once, by version.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Controls one task's container. Cheap to clone; clones share the task.
#[derive(Clone)]
pub struct DockerController {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    config: Arc<DockerConfig>,
    plan: ContainerPlan,
    observed: Mutex<Observed>,
    warnings: Mutex<Vec<String>>,
    /// The task's secret and config files (with their data: never logged), or why they
    /// cannot be had (refused at `prepare`).
    files: std::result::Result<Vec<TaskFile>, String>,
}

/// What was last seen of the container.
#[derive(Clone, Debug, Default)]
struct Observed {
    id: Option<String>,
    pid: i32,
    exit_code: i32,
}

/// The parts of an inspection the controller acts on.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    status: ContainerStateStatusEnum,
    exit_code: i64,
    health: Option<HealthStatusEnum>,
    health_output: String,
}

impl Seen {
    fn running(&self) -> bool {
        matches!(
            self.status,
            ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::RESTARTING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::STOPPING
        )
    }
}

impl DockerController {
    pub(crate) fn new(
        docker: Docker,
        config: Arc<DockerConfig>,
        plan: ContainerPlan,
        files: std::result::Result<Vec<TaskFile>, String>,
    ) -> Self {
        for warning in &plan.warnings {
            tracing::warn!(task = %plan.task_id, "{warning}");
        }
        let warnings = plan.warnings.clone();
        DockerController {
            inner: Arc::new(Inner {
                docker,
                config,
                plan,
                observed: Mutex::new(Observed::default()),
                warnings: Mutex::new(warnings),
                files,
            }),
        }
    }

    /// The task's secrets and configs directory on the host (there from `prepare` to
    /// `remove`, for a task that has any).
    pub fn secrets_dir(&self) -> std::path::PathBuf {
        self.inner.config.secrets_dir.join(&self.inner.plan.task_id)
    }

    fn remove_files(&self) -> Result<()> {
        shoal_executor::files::remove_task_dir(
            &self.inner.config.secrets_dir,
            &self.inner.plan.task_id,
        )
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.inner.plan.name
    }

    /// The container's ID, once created or found.
    pub fn container_id(&self) -> Option<String> {
        self.observed().id
    }

    fn observed(&self) -> Observed {
        self.inner.observed.lock().expect("observed lock").clone()
    }

    fn warn(&self, warning: String) {
        tracing::warn!(task = %self.inner.plan.task_id, "{warning}");
        let mut warnings = self.inner.warnings.lock().expect("warnings lock");
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// A client whose requests may last `limit` longer than the usual timeout.
    fn client_for(&self, limit: Duration) -> Docker {
        self.inner
            .docker
            .clone()
            .with_timeout(self.inner.config.request_timeout.saturating_add(limit))
    }

    /// Finds the task's container (by the ID we know, else by name), checks that it is ours,
    /// and records what it shows. `None` if there is none.
    async fn locate(&self) -> Result<Option<Seen>> {
        let plan = &self.inner.plan;
        let key = self.observed().id.unwrap_or_else(|| plan.name.clone());
        let inspected = self
            .inner
            .docker
            .inspect_container(&key, None::<InspectContainerOptions>)
            .await;
        let info = match inspected {
            Ok(info) => info,
            Err(e) if error::is_not_found(&e) => {
                let forgot = {
                    let mut observed = self.inner.observed.lock().expect("observed lock");
                    let known = observed.id.as_deref() == Some(key.as_str());
                    if known {
                        observed.id = None;
                    }
                    known
                };
                if forgot {
                    // The one we knew is gone; look by name again (once: the ID is forgotten).
                    return Box::pin(self.locate()).await;
                }
                return Ok(None);
            }
            Err(e) => {
                return Err(error::classify(
                    format!("inspecting container {:?}", plan.name),
                    e,
                ));
            }
        };
        self.seen(info).map(Some)
    }

    fn seen(&self, info: ContainerInspectResponse) -> Result<Seen> {
        let plan = &self.inner.plan;
        let owner = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_TASK_ID))
            .cloned()
            .unwrap_or_default();
        if owner != plan.task_id {
            return Err(ExecutorError::InvalidState(format!(
                "a container named {:?} exists but belongs to task {owner:?}, not {:?}; it is left alone",
                plan.name, plan.task_id
            )));
        }
        let id = info.id.clone().unwrap_or_default();
        let state = info.state.unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let exit_code = state.exit_code.unwrap_or(0);
        let (health, health_output) = match state.health {
            Some(h) => (
                h.status,
                h.log
                    .and_then(|log| log.last().and_then(|r| r.output.clone()))
                    .unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        let mut observed = self.inner.observed.lock().expect("observed lock");
        observed.id = Some(id.clone());
        observed.pid = state.pid.unwrap_or(0) as i32;
        if matches!(
            status,
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD
        ) {
            observed.exit_code = exit_code as i32;
        }
        Ok(Seen {
            id,
            status,
            exit_code,
            health,
            health_output,
        })
    }

    /// Makes sure the image is on the node, pulling it if it is not.
    async fn ensure_image(&self) -> Result<()> {
        let image = &self.inner.plan.image;
        match self.inner.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if error::is_not_found(&e) => {}
            Err(e) => return Err(error::classify(format!("inspecting image {image:?}"), e)),
        }
        let reference = pull_reference(image);
        tracing::info!(task = %self.inner.plan.task_id, %reference, "pulling image");
        let timeout = self.inner.config.pull_timeout;
        let docker = self.client_for(timeout);
        let pull = async {
            let options = CreateImageOptions {
                from_image: Some(reference.clone()),
                ..Default::default()
            };
            let mut progress = docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                item.map_err(|e| error::message(&e))?;
            }
            Ok::<_, String>(())
        };
        let reason = match tokio::time::timeout(timeout, pull).await {
            Ok(Ok(())) => match self.inner.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) => format!("pulled {reference:?}, yet: {}", error::message(&e)),
            },
            Ok(Err(reason)) => reason,
            Err(_) => format!("the pull did not finish within {timeout:?}"),
        };
        Err(error::fatal(
            format!("image {image:?} is not on this node and could not be pulled"),
            reason,
        ))
    }

    /// Creates the container (the image being there). A container of the same name created
    /// meanwhile is taken if it is ours.
    async fn create(&self) -> Result<Seen> {
        let plan = &self.inner.plan;
        let options = CreateContainerOptions {
            name: Some(plan.name.clone()),
            ..Default::default()
        };
        match self
            .inner
            .docker
            .create_container(Some(options), plan.body.clone())
            .await
        {
            Ok(created) => {
                for warning in created.warnings.into_iter().filter(|w| !w.is_empty()) {
                    self.warn(format!("engine: {warning}"));
                }
                tracing::debug!(task = %plan.task_id, id = %created.id, name = %plan.name, "container created");
                self.inner.observed.lock().expect("observed lock").id = Some(created.id);
            }
            Err(e) if error::is_conflict(&e) => {
                tracing::debug!(task = %plan.task_id, "container created meanwhile: {e}");
            }
            Err(e) => {
                return Err(error::classify(
                    format!("creating container {:?}", plan.name),
                    e,
                ));
            }
        }
        self.locate().await?.ok_or_else(|| {
            ExecutorError::NotFound(format!(
                "container {:?} vanished right after its creation",
                plan.name
            ))
        })
    }

    /// Waits until the engine reports the container healthy.
    async fn wait_healthy(&self) -> Result<()> {
        let name = &self.inner.plan.name;
        loop {
            let Some(seen) = self.locate().await? else {
                return Err(ExecutorError::NotFound(format!(
                    "container {name:?} was removed before it became healthy"
                )));
            };
            if !seen.running() {
                return Err(error::fatal(
                    format!("container {name:?}"),
                    format!(
                        "ended (exit code {}) before it became healthy",
                        seen.exit_code
                    ),
                ));
            }
            match seen.health {
                Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    return Err(error::fatal(
                        format!("container {name:?}"),
                        format!(
                            "unhealthy; last health check output: {:?}",
                            seen.health_output.trim_end()
                        ),
                    ));
                }
                None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => {
                    // No health check after all (the engine ignored it): nothing to wait for.
                    self.warn(format!(
                        "container {name:?} reports no health status; not waiting for health"
                    ));
                    return Ok(());
                }
                Some(HealthStatusEnum::STARTING) => {}
            }
            tokio::time::sleep(self.inner.config.poll_interval).await;
        }
    }

    /// Polls until the container has stopped, at most `limit`.
    async fn wait_stopped(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.locate().await? {
                Some(seen) if seen.running() => {}
                _ => return Ok(()),
            }
            if Instant::now() >= deadline {
                return Err(error::temporary(
                    format!("container {:?}", self.inner.plan.name),
                    std::io::ErrorKind::TimedOut,
                    format!("still running {limit:?} after SIGKILL"),
                ));
            }
            tokio::time::sleep(self.inner.config.poll_interval).await;
        }
    }

    fn missing(&self) -> ExecutorError {
        ExecutorError::NotFound(format!(
            "container {:?} of task {} does not exist",
            self.inner.plan.name, self.inner.plan.task_id
        ))
    }

    /// The exit code of a stopped container, by inspection.
    async fn inspected_exit(&self) -> Result<Exit> {
        let seen = self.locate().await?.ok_or_else(|| self.missing())?;
        if seen.running() {
            return Err(error::temporary(
                format!("waiting for container {:?}", self.inner.plan.name),
                std::io::ErrorKind::Interrupted,
                "the engine ended the wait while the container still runs".into(),
            ));
        }
        Ok(Exit::Code(seen.exit_code as i32))
    }
}

#[tonic::async_trait]
impl Controller for DockerController {
    async fn prepare(&self) -> Result<()> {
        // The files first: the container's bind mounts need them (again after a reboot).
        match &self.inner.files {
            Err(message) => return Err(ExecutorError::InvalidSpec(message.clone())),
            Ok(task_files) if !task_files.is_empty() => {
                shoal_executor::files::write_task_dir(
                    &self.inner.config.secrets_dir,
                    &self.inner.plan.task_id,
                    task_files,
                    None,
                    |i, _| crate::spec::host_file_name(i),
                )?;
            }
            Ok(_) => {}
        }
        if self.locate().await?.is_some() {
            return Ok(());
        }
        self.ensure_image().await?;
        self.create().await.map(drop)
    }

    async fn start(&self) -> Result<()> {
        let seen = match self.locate().await? {
            Some(seen) => seen,
            None => {
                self.prepare().await?;
                self.locate().await?.ok_or_else(|| self.missing())?
            }
        };
        if seen.status == ContainerStateStatusEnum::CREATED {
            self.inner
                .docker
                .start_container(
                    &seen.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| {
                    error::classify(format!("starting container {:?}", self.inner.plan.name), e)
                })?;
            tracing::debug!(task = %self.inner.plan.task_id, id = %seen.id, "container started");
        } else if !seen.running() {
            // It ran already (before a restart of the agent, say): do not run it twice.
            return Ok(());
        }
        if self.inner.plan.healthcheck {
            self.wait_healthy().await?;
        } else {
            self.locate().await?;
        }
        Ok(())
    }

    async fn wait(&self) -> Result<Exit> {
        let seen = self.locate().await?.ok_or_else(|| self.missing())?;
        if seen.status == ContainerStateStatusEnum::CREATED {
            return Err(ExecutorError::InvalidState(format!(
                "container {:?} was never started",
                self.inner.plan.name
            )));
        }
        let docker = self.client_for(FOREVER);
        let mut waiting = docker.wait_container(
            &seen.id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let exit = match waiting.next().await {
            Some(Ok(response)) => Exit::Code(response.status_code as i32),
            Some(Err(EngineError::DockerContainerWaitError { error, code }))
                if error.is_empty() =>
            {
                Exit::Code(code as i32)
            }
            Some(Err(EngineError::DockerContainerWaitError { .. })) => {
                self.inspected_exit().await?
            }
            Some(Err(e)) => {
                return Err(error::classify(
                    format!("waiting for container {:?}", self.inner.plan.name),
                    e,
                ));
            }
            None => self.inspected_exit().await?,
        };
        if let Exit::Code(code) = exit {
            self.inner.observed.lock().expect("observed lock").exit_code = code;
        }
        Ok(exit)
    }

    async fn shutdown(&self) -> Result<()> {
        let Some(seen) = self.locate().await? else {
            return Ok(());
        };
        if !seen.running() {
            return Ok(());
        }
        let grace = self.inner.plan.grace;
        let options = StopContainerOptions {
            t: Some(ceil_seconds(grace).min(i64::from(i32::MAX)) as i32),
            signal: None,
        };
        match self
            .client_for(grace)
            .stop_container(&seen.id, Some(options))
            .await
        {
            Ok(()) => {}
            Err(e) if error::is_not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(error::classify(
                    format!("stopping container {:?}", self.inner.plan.name),
                    e,
                ));
            }
        }
        self.wait_stopped(KILL_WAIT).await
    }

    async fn terminate(&self) -> Result<()> {
        let Some(seen) = self.locate().await? else {
            return Ok(());
        };
        if !seen.running() {
            return Ok(());
        }
        match self
            .inner
            .docker
            .kill_container(
                &seen.id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
        {
            Ok(()) => {}
            // 409: it stopped in between.
            Err(e) if error::is_not_found(&e) || error::is_conflict(&e) => {}
            Err(e) => {
                return Err(error::classify(
                    format!("killing container {:?}", self.inner.plan.name),
                    e,
                ));
            }
        }
        self.wait_stopped(KILL_WAIT).await
    }

    async fn remove(&self) -> Result<()> {
        let key = self
            .observed()
            .id
            .unwrap_or_else(|| self.inner.plan.name.clone());
        // Make sure a container found by name is ours before removing it.
        if self.locate().await?.is_none() {
            return self.remove_files();
        }
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self
            .client_for(KILL_WAIT)
            .remove_container(&key, Some(options))
            .await
        {
            Ok(()) => {}
            Err(e) if error::is_not_found(&e) => {}
            Err(e) => {
                return Err(error::classify(
                    format!("removing container {:?}", self.inner.plan.name),
                    e,
                ));
            }
        }
        tracing::debug!(task = %self.inner.plan.task_id, "container removed");
        self.remove_files()
    }

    async fn logs(&self, options: LogsOptions) -> Result<LogReader> {
        let seen = self.locate().await?.ok_or_else(|| self.missing())?;
        let docker = if options.follow {
            self.client_for(FOREVER)
        } else {
            self.inner.docker.clone()
        };
        Ok(logs::read(docker, seen.id, options))
    }

    fn runtime_status(&self) -> Option<task_status::RuntimeStatus> {
        let observed = self.observed();
        let container_id = observed.id?;
        Some(task_status::RuntimeStatus::Container(Box::new(
            ContainerStatus {
                container_id,
                pid: observed.pid,
                exit_code: observed.exit_code,
            },
        )))
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.lock().expect("warnings lock").clone()
    }
}
