//! Several executors behind one: each task goes to the executor that runs its runtime.
//!
//! A node usually runs host processes (the process executor) and, where a Docker Engine is
//! there, containers (the docker executor). The worker wants one [`Executor`]; this one hands
//! each task to the executor registered for the task's runtime (`process`, `container`), and
//! describes the node as the union of what its executors offer: every runtime, the first
//! description's platform and resources, and the engine of the one that has an engine.
//!
//! Invariant: a runtime is served by exactly one executor (the first registered for it); a
//! task whose runtime none serves is refused with an error naming what the node does run, so
//! the task is REJECTED rather than left waiting.

use std::sync::Arc;

use shoal_api::v1::{NodeDescription, Task, task_spec};

use crate::{Controller, Executor, ExecutorError, Result, TaskDependencies};

/// The runtime a task asks for: `process`, `container`, or `""` without one.
pub fn runtime_of(task: &Task) -> &'static str {
    match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Process(_)) => "process",
        Some(task_spec::Runtime::Container(_)) => "container",
        None => "",
    }
}

/// Routes tasks to executors by runtime.
#[derive(Clone, Default)]
pub struct Runtimes {
    executors: Vec<(String, Arc<dyn Executor>)>,
}

impl Runtimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `executor` for every runtime it describes that no earlier executor serves.
    pub fn with(mut self, executor: Arc<dyn Executor>) -> Self {
        for runtime in executor.describe().runtimes {
            if !self.executors.iter().any(|(r, _)| *r == runtime) {
                self.executors.push((runtime, executor.clone()));
            }
        }
        self
    }

    /// The runtimes served, in registration order.
    pub fn runtimes(&self) -> Vec<String> {
        self.executors.iter().map(|(r, _)| r.clone()).collect()
    }
}

impl Executor for Runtimes {
    fn describe(&self) -> NodeDescription {
        let mut description: Option<NodeDescription> = None;
        let mut seen: Vec<*const ()> = Vec::new();
        for (_, executor) in &self.executors {
            let key = Arc::as_ptr(executor) as *const ();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let next = executor.describe();
            match &mut description {
                None => description = Some(next),
                Some(d) => {
                    if d.engine.is_none() {
                        d.engine = next.engine;
                    }
                    if d.platform.is_none() {
                        d.platform = next.platform;
                    }
                    if d.resources.is_none() {
                        d.resources = next.resources;
                    }
                }
            }
        }
        let mut description = description.unwrap_or_default();
        description.runtimes = self.runtimes();
        description
    }

    fn controller(&self, task: &Task) -> Result<Box<dyn Controller>> {
        self.controller_with(task, &TaskDependencies::default())
    }

    fn controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> Result<Box<dyn Controller>> {
        let runtime = runtime_of(task);
        match self.executors.iter().find(|(r, _)| r == runtime) {
            Some((_, executor)) => executor.controller_with(task, dependencies),
            None => Err(ExecutorError::Unsupported(format!(
                "this node does not run {} tasks (it runs: {})",
                if runtime.is_empty() {
                    "runtime-less"
                } else {
                    runtime
                },
                self.runtimes().join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, SimExecutor};
    use shoal_api::shared::TaskSpecFields;

    fn sim(runtimes: &[&str]) -> Arc<dyn Executor> {
        Arc::new(SimExecutor::new(SimConfig {
            start_delay: std::time::Duration::ZERO,
            exit_after: None,
            runtimes: runtimes.iter().map(|r| r.to_string()).collect(),
        }))
    }

    fn task(runtime: Option<task_spec::Runtime>) -> Task {
        Task {
            spec: Some(
                TaskSpecFields {
                    runtime,
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn tasks_go_to_the_executor_of_their_runtime_and_others_are_refused() {
        let process = Some(task_spec::Runtime::Process(Box::default()));
        let container = Some(task_spec::Runtime::Container(Box::default()));
        let only_process = Runtimes::new().with(sim(&["process"]));
        assert_eq!(only_process.describe().runtimes, ["process"]);
        assert!(only_process.controller(&task(process.clone())).is_ok());
        let refused = only_process
            .controller(&task(container.clone()))
            .err()
            .unwrap();
        assert!(!refused.is_temporary());
        assert_eq!(
            refused.to_string(),
            "unsupported runtime: this node does not run container tasks (it runs: process)"
        );
        assert!(only_process.controller(&task(None)).is_err());

        let both = Runtimes::new()
            .with(sim(&["process"]))
            .with(sim(&["container", "process"]));
        assert_eq!(both.describe().runtimes, ["process", "container"]);
        assert!(both.controller(&task(container)).is_ok());
    }
}
