//! The worker: makes the tasks running on this node match the tasks assigned to it.
//!
//! The agent feeds it the dispatcher's assignment stream — a COMPLETE set, then INCREMENTAL
//! changes (`AssignmentsMessage`) — through [`Worker::apply`]. The decision of what to do
//! with each task is synchronous and pure ([`plan`]: what is known about each task in, one
//! [`Decision`] per task out); the async shell carries the decisions out:
//!
//! - a **new** task is recorded in the [`TaskDb`] and gets a driver: its own tokio task,
//!   owning the task's `Controller` (from the [`Executor`]) and its [`TaskMachine`], which it
//!   drives through prepare → start → wait, performing each [`Action`] the machine asks
//!   for. Every state it enters is written to the database (with the controller's runtime
//!   data: PID and start time) *before* it goes to the [`StatusReporter`].
//! - a task whose **desired state** went to SHUTDOWN (or later) is told to stop: the machine
//!   turns that into a graceful shutdown, and the exit into SHUTDOWN.
//! - a task **removed** (an INCREMENTAL REMOVE, or absent from a COMPLETE set) is stopped the
//!   same way; once its final status is acknowledged by the sink, its controller frees what
//!   it holds (logs) and it leaves the database.
//! - after an agent restart, a task found in the database with a non-final status and
//!   runtime data is **adopted**: the executor's `controller()` gets the task with its
//!   recorded status, which for the process runtime finds the process again by PID + start
//!   time instead of starting a new one. If the process ended while the agent was down, its
//!   shim recorded how, and the adopted task reports that exit (COMPLETE, or FAILED with the
//!   code); a task whose program cannot be found at all is reported FAILED. A
//!   recorded task absent from the first COMPLETE set was removed while the agent was down:
//!   it is adopted only to be stopped, then forgotten.
//!
//! Invariants:
//! - At most one driver per task ID, and every driver is owned by the worker:
//!   [`Worker::shutdown`] aborts and awaits them all. Stopping the worker does **not** stop
//!   the programs: tasks outlive the agent, and the next worker on the same database adopts
//!   them.
//! - A task is in the database exactly while it is assigned (or being stopped after its
//!   removal); its status there is the last one the worker produced.
//! - A driver never starts a task whose desired state is below RUNNING (the machine's
//!   `begin` is held back, as `state.rs` requires), and never starts one twice.
//!
//! Departures from SwarmKit (`agent/worker.go`, `agent/task.go`):
//! - SwarmKit's task manager restarts `exec.Do` from the task's recorded state; here a task
//!   recorded without runtime data (it never reached STARTING, or its runtime keeps none, as
//!   the sim executor) is started afresh from ACCEPTED, and one with runtime data is adopted.
//! - Secrets and configs in assignments are kept in memory only (never in the database):
//!   the COMPLETE set replaces them, INCREMENTAL changes add and remove them, before the
//!   message's tasks are acted on. A task's driver gets those its spec references
//!   ([`TaskDependencies`]) when it makes the task's controller; the executor writes them
//!   where the task finds them (and removes them with the task).
//! - The controllers of driven tasks are shared with the agent's log publisher
//!   ([`TaskControllers`]), which reads their logs for the leader's subscriptions.
//! - Database writes run on the caller's thread (short redb commits), not a blocking pool.
//!
//! What the agent calls: [`TaskDb::open`] (`<state>/worker/tasks.redb`), a [`StatusReporter`]
//! over its [`StatusSink`], [`Worker::new`], then [`Worker::apply`] for every assignments
//! message, and [`Worker::shutdown`] when the node stops (then [`StatusReporter::stop`]: the
//! reporter belongs to the agent, whose session it reports on).

pub mod db;
pub mod reporter;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_api::clock::{Clock, SystemClock};
use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    AssignmentChange, AssignmentsMessage, Config, Secret, Task, TaskState, TaskStatus, assignment,
    assignment_change::AssignmentAction, assignments_message, task_spec,
};
use shoal_executor::state::{Action, Event, Step, TaskMachine};
use shoal_executor::{Controller, Executor, ExecutorError, TaskDependencies};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use db::{DbError, StoredTask, TaskDb};
pub use reporter::{ReporterBackoff, StatusReporter, StatusSink};

/// Why the worker refused an assignments message.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("invalid assignments message: {0}")]
    Assignments(String),
}

/// What the worker wants of one task, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Desired {
    /// Assigned, desired state below RUNNING: keep it, do not start it yet.
    Hold,
    Run,
    /// Desired state SHUTDOWN or later: stop it, keep it recorded.
    Shutdown,
    /// No longer assigned: stop it, then forget it.
    Remove,
}

impl Desired {
    /// From the task's desired state.
    pub fn of(task: &Task) -> Desired {
        if task.desired_state >= TaskState::Shutdown as i32 {
            Desired::Shutdown
        } else if task.desired_state >= TaskState::Running as i32 {
            Desired::Run
        } else {
            Desired::Hold
        }
    }
}

/// What the worker knows of a task ID before a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// A driver owns it.
    Driven,
    /// Only in the database (from before a restart), with a final status or not.
    Stored { terminal: bool },
}

/// What to do with one task.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// New: record it and drive it from ACCEPTED.
    Start(Task),
    /// Recorded before a restart and not finished: record the new assignment, drive it from
    /// its recorded status (adopting its program).
    Resume(Task),
    /// Finished before a restart and still assigned: record it, report its final status again.
    Keep(Task),
    /// Driven already: record the new assignment, pass on its desired state.
    Update(Task),
    /// Driven and no longer assigned: stop it, then forget it.
    Stop(String),
    /// Recorded before a restart, not finished, no longer assigned: adopt it to stop it.
    StopStored(String),
    /// Recorded before a restart, finished, no longer assigned: forget it now.
    Forget(String),
}

fn id_of(task: &Task) -> &str {
    task.meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default()
}

/// The decisions for one assignments message, given what is known of each task. Pure.
/// Secrets and configs are skipped; a task without an ID is refused.
pub fn plan(
    known: &BTreeMap<String, Known>,
    message: &AssignmentsMessage,
) -> Result<Vec<Decision>, WorkerError> {
    let complete = match assignments_message::Type::try_from(message.r#type) {
        Ok(assignments_message::Type::Complete) => true,
        Ok(assignments_message::Type::Incremental) => false,
        Err(_) => {
            return Err(WorkerError::Assignments(format!(
                "unknown type {}",
                message.r#type
            )));
        }
    };
    let mut decisions = Vec::new();
    let mut mentioned = BTreeSet::new();
    for change in &message.changes {
        let AssignmentChange { assignment, action } = change;
        let Some(assignment::Item::Task(task)) = assignment.as_ref().and_then(|a| a.item.as_ref())
        else {
            continue;
        };
        let id = id_of(task);
        if id.is_empty() {
            return Err(WorkerError::Assignments("a task without an ID".into()));
        }
        if !mentioned.insert(id.to_string()) {
            return Err(WorkerError::Assignments(format!(
                "task {id} appears twice in one message"
            )));
        }
        let remove = match AssignmentAction::try_from(*action) {
            Ok(AssignmentAction::Update) => false,
            Ok(AssignmentAction::Remove) => true,
            Err(_) => {
                return Err(WorkerError::Assignments(format!(
                    "task {id}: unknown action {action}"
                )));
            }
        };
        if remove && complete {
            return Err(WorkerError::Assignments(format!(
                "task {id}: a COMPLETE set holds no removals"
            )));
        }
        let decision = match (known.get(id), remove) {
            (None, false) => Some(Decision::Start(task.clone())),
            (None, true) => None,
            (Some(Known::Driven), false) => Some(Decision::Update(task.clone())),
            (Some(Known::Driven), true) => Some(Decision::Stop(id.to_string())),
            (Some(Known::Stored { terminal: false }), false) => {
                Some(Decision::Resume(task.clone()))
            }
            (Some(Known::Stored { terminal: true }), false) => Some(Decision::Keep(task.clone())),
            (Some(Known::Stored { terminal: false }), true) => {
                Some(Decision::StopStored(id.to_string()))
            }
            (Some(Known::Stored { terminal: true }), true) => {
                Some(Decision::Forget(id.to_string()))
            }
        };
        decisions.extend(decision);
    }
    if complete {
        for (id, known) in known {
            if mentioned.contains(id) {
                continue;
            }
            decisions.push(match known {
                Known::Driven => Decision::Stop(id.clone()),
                Known::Stored { terminal: false } => Decision::StopStored(id.clone()),
                Known::Stored { terminal: true } => Decision::Forget(id.clone()),
            });
        }
    }
    Ok(decisions)
}

/// Where a driver starts from.
enum Origin {
    /// A new task: from ACCEPTED.
    Fresh,
    /// Recorded with this status before a restart: adopt its program if the status says
    /// where it runs, otherwise start afresh.
    Resume(TaskStatus),
    /// Finished before a restart with this status: report it, wait for the removal.
    Finished(TaskStatus),
}

/// The controllers of the tasks the worker drives, shared with whoever reads their logs (the
/// agent's log publisher). A driver registers its task's controller once it has one and
/// takes it out before the task's leftovers are removed.
#[derive(Clone, Default)]
pub struct TaskControllers(Arc<std::sync::Mutex<BTreeMap<String, RegisteredTask>>>);

/// A task and its controller, as registered.
#[derive(Clone)]
pub struct RegisteredTask {
    pub task: Arc<Task>,
    pub controller: Arc<dyn Controller>,
}

impl TaskControllers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RegisteredTask>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, task: &Task, controller: Arc<dyn Controller>) {
        self.lock().insert(
            id_of(task).to_string(),
            RegisteredTask {
                task: Arc::new(task.clone()),
                controller,
            },
        );
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The registered tasks `matches` accepts, in task ID order.
    pub fn matching(&self, matches: impl Fn(&Task) -> bool) -> Vec<RegisteredTask> {
        self.lock()
            .values()
            .filter(|r| matches(&r.task))
            .cloned()
            .collect()
    }
}

struct DriverHandle {
    desired: watch::Sender<Desired>,
    join: JoinHandle<()>,
}

/// Reconciles the tasks assigned to this node with the ones running on it.
pub struct Worker {
    executor: Arc<dyn Executor>,
    db: Arc<TaskDb>,
    reporter: StatusReporter,
    drivers: BTreeMap<String, DriverHandle>,
    /// Recorded before a restart, not yet mentioned by an assignments message.
    stored: BTreeMap<String, StoredTask>,
    controllers: TaskControllers,
    /// The secrets and configs of the assignment set, by ID (in memory only).
    secrets: BTreeMap<String, Secret>,
    configs: BTreeMap<String, Config>,
}

impl Worker {
    /// A worker over `db`, which may hold tasks from before a restart: nothing is started,
    /// adopted or stopped until the first [`Worker::apply`] (the COMPLETE set) says what is
    /// still assigned.
    pub fn new(
        executor: Arc<dyn Executor>,
        db: TaskDb,
        reporter: StatusReporter,
    ) -> Result<Self, WorkerError> {
        let stored = db
            .load()?
            .into_iter()
            .map(|s| (id_of(&s.task).to_string(), s))
            .collect();
        Ok(Self {
            executor,
            db: Arc::new(db),
            reporter,
            drivers: BTreeMap::new(),
            stored,
            controllers: TaskControllers::default(),
            secrets: BTreeMap::new(),
            configs: BTreeMap::new(),
        })
    }

    /// The controllers of the tasks being driven, for reading their logs.
    pub fn controllers(&self) -> TaskControllers {
        self.controllers.clone()
    }

    /// What this node can run, as its executor describes it.
    pub fn describe(&self) -> shoal_api::v1::NodeDescription {
        self.executor.describe()
    }

    /// The IDs of the tasks the worker drives (assigned, or stopping after removal).
    pub fn tasks(&self) -> Vec<String> {
        self.drivers.keys().cloned().collect()
    }

    /// Applies one assignments message: starts, adopts, updates and stops tasks. Must be
    /// called within a tokio runtime (drivers are spawned on it). A message [`plan`] refuses
    /// changes nothing; a database error stops it midway (what was done stays done, and the
    /// next COMPLETE set puts everything right).
    pub fn apply(&mut self, message: &AssignmentsMessage) -> Result<(), WorkerError> {
        // Drivers of removed tasks that have finished leave.
        self.drivers.retain(|_, d| !d.join.is_finished());
        let mut known: BTreeMap<String, Known> = self
            .drivers
            .keys()
            .map(|id| (id.clone(), Known::Driven))
            .collect();
        for (id, stored) in &self.stored {
            let terminal = stored
                .status
                .as_ref()
                .is_some_and(|s| is_terminal(state_of(s)));
            known.insert(id.clone(), Known::Stored { terminal });
        }
        let decisions = plan(&known, message)?;
        self.apply_dependencies(message);
        for decision in decisions {
            self.carry_out(decision)?;
        }
        Ok(())
    }

    /// Takes in the message's secrets and configs: a COMPLETE set replaces those kept, an
    /// INCREMENTAL message updates and removes. (Drivers already running keep what they
    /// were given.)
    fn apply_dependencies(&mut self, message: &AssignmentsMessage) {
        if message.r#type == assignments_message::Type::Complete as i32 {
            self.secrets.clear();
            self.configs.clear();
        }
        for change in &message.changes {
            let remove = change.action == AssignmentAction::Remove as i32;
            match change.assignment.as_ref().and_then(|a| a.item.as_ref()) {
                Some(assignment::Item::Secret(secret)) => {
                    let id = secret
                        .meta
                        .as_ref()
                        .map(|m| m.id.clone())
                        .unwrap_or_default();
                    if remove {
                        self.secrets.remove(&id);
                    } else if !id.is_empty() {
                        self.secrets.insert(id, secret.clone());
                    }
                }
                Some(assignment::Item::Config(config)) => {
                    let id = config
                        .meta
                        .as_ref()
                        .map(|m| m.id.clone())
                        .unwrap_or_default();
                    if remove {
                        self.configs.remove(&id);
                    } else if !id.is_empty() {
                        self.configs.insert(id, config.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// The secrets and configs of the assignment set that `task` references.
    fn dependencies_of(&self, task: &Task) -> TaskDependencies {
        let (secrets, configs) = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
            Some(task_spec::Runtime::Container(c)) => (&c.secrets, &c.configs),
            Some(task_spec::Runtime::Process(p)) => (&p.secrets, &p.configs),
            None => return TaskDependencies::default(),
        };
        TaskDependencies {
            secrets: secrets
                .iter()
                .filter_map(|r| self.secrets.get(&r.secret_id).cloned())
                .collect(),
            configs: configs
                .iter()
                .filter_map(|r| self.configs.get(&r.config_id).cloned())
                .collect(),
        }
    }

    fn carry_out(&mut self, decision: Decision) -> Result<(), WorkerError> {
        match decision {
            Decision::Start(task) => {
                self.db.put_task(&task)?;
                let desired = Desired::of(&task);
                self.spawn(task, Origin::Fresh, desired);
            }
            Decision::Resume(task) => {
                let stored = self.stored.remove(id_of(&task));
                self.db.put_task(&task)?;
                let desired = Desired::of(&task);
                let origin = match stored.and_then(|s| s.status) {
                    Some(status) => Origin::Resume(status),
                    None => Origin::Fresh,
                };
                self.spawn(task, origin, desired);
            }
            Decision::Keep(task) => {
                let stored = self.stored.remove(id_of(&task));
                self.db.put_task(&task)?;
                let desired = Desired::of(&task);
                let status = stored.and_then(|s| s.status).unwrap_or_default();
                self.spawn(task, Origin::Finished(status), desired);
            }
            Decision::Update(task) => {
                self.db.put_task(&task)?;
                let desired = Desired::of(&task);
                if let Some(driver) = self.drivers.get(id_of(&task)) {
                    driver.desired.send_if_modified(|current| {
                        // Only forward: a task told to stop is not started again.
                        if desired > *current {
                            *current = desired;
                            true
                        } else {
                            false
                        }
                    });
                }
            }
            Decision::Stop(id) => {
                if let Some(driver) = self.drivers.get(&id) {
                    driver.desired.send_replace(Desired::Remove);
                }
            }
            Decision::StopStored(id) => {
                if let Some(stored) = self.stored.remove(&id) {
                    let origin = match stored.status {
                        Some(status) => Origin::Resume(status),
                        None => Origin::Fresh,
                    };
                    self.spawn(stored.task, origin, Desired::Remove);
                }
            }
            Decision::Forget(id) => {
                self.stored.remove(&id);
                self.db.remove(&id)?;
            }
        }
        Ok(())
    }

    fn spawn(&mut self, task: Task, origin: Origin, desired: Desired) {
        let id = id_of(&task).to_string();
        let (sender, receiver) = watch::channel(desired);
        let driver = Driver {
            dependencies: self.dependencies_of(&task),
            id: id.clone(),
            executor: self.executor.clone(),
            db: self.db.clone(),
            reporter: self.reporter.clone(),
            desired: receiver,
            controllers: self.controllers.clone(),
        };
        let join = tokio::spawn(driver.run(task, origin));
        if let Some(old) = self.drivers.insert(
            id,
            DriverHandle {
                desired: sender,
                join,
            },
        ) {
            // plan() never starts a driven task again; should it, the old one must not linger.
            old.join.abort();
        }
    }

    /// Stops every driver (and waits for them). The tasks' programs keep running, to be
    /// adopted by the next worker on the same database; the database closes once the last
    /// driver is gone.
    pub async fn shutdown(self) {
        for driver in self.drivers.values() {
            driver.join.abort();
        }
        for (_, driver) in self.drivers {
            let _ = driver.join.await;
        }
    }
}

fn state_of(status: &TaskStatus) -> TaskState {
    TaskState::try_from(status.state).unwrap_or(TaskState::New)
}

/// One task's driver: performs what its state machine asks, until the task is removed.
struct Driver {
    id: String,
    /// The secrets and configs the task references, for its controller.
    dependencies: TaskDependencies,
    executor: Arc<dyn Executor>,
    db: Arc<TaskDb>,
    reporter: StatusReporter,
    desired: watch::Receiver<Desired>,
    controllers: TaskControllers,
}

fn error_event(error: ExecutorError) -> Event {
    Event::Error {
        class: error.class(),
        message: error.to_string(),
    }
}

impl Driver {
    async fn run(mut self, mut task: Task, origin: Origin) {
        let (controller, machine) = match origin {
            Origin::Finished(status) => {
                self.publish(status);
                self.until(Desired::Remove).await;
                self.forget(None).await;
                return;
            }
            Origin::Resume(status) if status.runtime_status.is_some() => {
                task.status = Some(status);
                self.adopt(&task)
            }
            Origin::Resume(_) | Origin::Fresh => {
                // Start from scratch: the executor must not take an old status for a program
                // to adopt.
                task.status = None;
                self.fresh(&task).await
            }
        };
        let controller: Option<Arc<dyn Controller>> = controller.map(Arc::from);
        if let Some(controller) = &controller {
            self.controllers.insert(&task, controller.clone());
        }
        let controller = self.drive(controller, machine).await;
        self.until(Desired::Remove).await;
        self.forget(controller).await;
    }

    /// The controller of a task recorded with runtime data, and a machine at RUNNING (or
    /// FAILED when the program is gone).
    fn adopt(&mut self, task: &Task) -> (Option<Box<dyn Controller>>, TaskMachine) {
        let mut machine = TaskMachine::default();
        machine.begin();
        machine.handle(Event::Prepared);
        machine.handle(Event::Started);
        // The controller keeps what it needs; the driver holds no secret after this.
        let dependencies = std::mem::take(&mut self.dependencies);
        match self.executor.controller_with(task, &dependencies) {
            Ok(controller) => {
                tracing::info!(task = %self.id, "worker: adopted the task's running program");
                self.publish_machine(
                    &machine,
                    "running (adopted after an agent restart)",
                    Some(&*controller),
                );
                (Some(controller), machine)
            }
            Err(error) => {
                let step = machine.handle(Event::Error {
                    class: shoal_executor::ErrorClass::Fatal,
                    message: format!(
                        "the task's program could not be found again after an agent restart: {error}"
                    ),
                });
                self.publish_step(&machine, &step, None);
                (None, machine)
            }
        }
    }

    /// A controller for a new task, and a machine at ACCEPTED (or REJECTED).
    async fn fresh(&mut self, task: &Task) -> (Option<Box<dyn Controller>>, TaskMachine) {
        let mut machine = TaskMachine::default();
        // The controller keeps what it needs; the driver holds no secret after this.
        let dependencies = std::mem::take(&mut self.dependencies);
        match self.executor.controller_with(task, &dependencies) {
            Ok(controller) => {
                self.publish_machine(&machine, machine.message(), Some(&*controller));
                (Some(controller), machine)
            }
            Err(error) => {
                // No controller, nothing to retry with: the task cannot run here.
                machine.begin();
                let step = machine.handle(Event::Error {
                    class: shoal_executor::ErrorClass::Fatal,
                    message: error.to_string(),
                });
                self.publish_step(&machine, &step, None);
                (None, machine)
            }
        }
    }

    /// Drives the machine until the task is final. Returns the controller, for removal.
    async fn drive(
        &mut self,
        controller: Option<Arc<dyn Controller>>,
        mut machine: TaskMachine,
    ) -> Option<Arc<dyn Controller>> {
        let controller = controller?;
        let mut step = if machine.state() == TaskState::Accepted {
            // Not before the task is wanted running (or wanted stopped).
            if self
                .desired
                .wait_for(|d| *d != Desired::Hold)
                .await
                .is_err()
            {
                // The worker is gone: start nothing.
                std::future::pending::<()>().await;
            }
            if self.wants_stop() {
                machine.handle(Event::ShutdownRequested)
            } else {
                machine.begin()
            }
        } else {
            // Adopted: the program runs; wait on it.
            Step {
                entered: Vec::new(),
                action: Action::Wait,
                delay: std::time::Duration::ZERO,
                ignored: false,
            }
        };
        let mut stop_fed = machine.state() == TaskState::Shutdown;
        loop {
            self.publish_step(&machine, &step, Some(&*controller));
            if is_terminal(machine.state()) {
                return Some(controller);
            }
            if !stop_fed && self.wants_stop() {
                stop_fed = true;
                let next = machine.handle(Event::ShutdownRequested);
                if !next.ignored {
                    step = next;
                    continue;
                }
            }
            if !step.delay.is_zero() {
                let delay = step.delay;
                step.delay = std::time::Duration::ZERO;
                if stop_fed {
                    tokio::time::sleep(delay).await;
                } else {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = Self::stop_requested(&mut self.desired) => continue,
                    }
                }
            }
            let event = match step.action {
                Action::None => {
                    if stop_fed {
                        // Nothing left to do but the machine is not final: cannot happen
                        // with the machine's rules; do not spin.
                        tracing::warn!(task = %self.id, state = ?machine.state(), "worker: task stuck");
                        std::future::pending::<()>().await;
                    }
                    Self::stop_requested(&mut self.desired).await;
                    continue;
                }
                Action::Prepare => match controller.prepare().await {
                    Ok(()) => Event::Prepared,
                    Err(e) => error_event(e),
                },
                Action::Start => match controller.start().await {
                    Ok(()) => Event::Started,
                    Err(e) => error_event(e),
                },
                Action::Wait => {
                    if stop_fed {
                        exited(controller.wait().await)
                    } else {
                        tokio::select! {
                            result = controller.wait() => exited(result),
                            () = Self::stop_requested(&mut self.desired) => continue,
                        }
                    }
                }
                Action::Shutdown => match controller.shutdown().await {
                    Ok(()) => exited(controller.wait().await),
                    Err(e) => error_event(e),
                },
                Action::Terminate => match controller.terminate().await {
                    Ok(()) => exited(controller.wait().await),
                    Err(e) => error_event(e),
                },
            };
            step = machine.handle(event);
        }
    }

    fn wants_stop(&self) -> bool {
        *self.desired.borrow() >= Desired::Shutdown
    }

    /// Returns once the task is to stop; never if the worker is gone.
    async fn stop_requested(desired: &mut watch::Receiver<Desired>) {
        if desired.wait_for(|d| *d >= Desired::Shutdown).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once the desired state is `at_least`; never if the worker is gone.
    async fn until(&mut self, at_least: Desired) {
        if self.desired.wait_for(|d| *d >= at_least).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The task is removed and final: once its last status is acknowledged, free what the
    /// controller holds and forget the task.
    async fn forget(&mut self, controller: Option<Arc<dyn Controller>>) {
        self.reporter.acknowledged(&self.id).await;
        self.controllers.remove(&self.id);
        if let Some(controller) = controller
            && let Err(error) = controller.remove().await
        {
            tracing::warn!(task = %self.id, %error, "worker: removing the task's leftovers failed");
        }
        if let Err(error) = self.db.remove(&self.id) {
            tracing::warn!(task = %self.id, %error, "worker: forgetting the task failed");
        }
    }

    /// Reports the last state a step entered, if any.
    fn publish_step(
        &self,
        machine: &TaskMachine,
        step: &Step,
        controller: Option<&dyn Controller>,
    ) {
        // Intermediate states would be coalesced by the reporter anyway.
        if let Some((_, message)) = step.entered.last() {
            self.publish_machine(machine, message, controller);
        }
    }

    fn publish_machine(
        &self,
        machine: &TaskMachine,
        message: &str,
        controller: Option<&dyn Controller>,
    ) {
        let mut message = message.to_string();
        if let Some(controller) = controller {
            for warning in controller.warnings() {
                message.push_str("; warning: ");
                message.push_str(&warning);
            }
        }
        self.publish(TaskStatus {
            timestamp: Some(SystemClock.timestamp()),
            state: machine.state() as i32,
            message,
            err: machine.err().to_string(),
            runtime_status: controller.and_then(|c| c.runtime_status()),
            ..Default::default()
        });
    }

    /// Records `status`, then hands it to the reporter.
    fn publish(&self, status: TaskStatus) {
        if let Err(error) = self.db.put_status(&self.id, &status) {
            tracing::warn!(task = %self.id, %error, "worker: recording the task's status failed");
        }
        self.reporter.report(&self.id, status);
    }
}

fn exited(result: shoal_executor::Result<shoal_executor::Exit>) -> Event {
    match result {
        Ok(exit) => Event::Exited(exit),
        Err(e) => error_event(e),
    }
}
