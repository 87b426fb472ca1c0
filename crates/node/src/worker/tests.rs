//! Tests of the worker with the sim executor. Every wait is bounded;
//! nothing asserts on timing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::update_task_status_request::TaskStatusUpdate;
use shoal_api::v1::{
    Assignment, AssignmentChange, AssignmentsMessage, Meta, Task, TaskState, TaskStatus,
    assignment, assignment_change::AssignmentAction, assignments_message,
};
use shoal_executor::Executor;
use shoal_executor::sim::{SimConfig, SimExecutor};
use tokio::sync::watch;

use super::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Records the latest status of every task; can be told to fail.
#[derive(Clone)]
struct TestSink {
    latest: Arc<watch::Sender<BTreeMap<String, TaskStatus>>>,
    /// Every delivered (task, state), in order.
    history: Arc<Mutex<Vec<(String, i32)>>>,
    failing: Arc<Mutex<bool>>,
}

impl TestSink {
    fn new() -> Self {
        Self {
            latest: Arc::new(watch::channel(BTreeMap::new()).0),
            history: Arc::default(),
            failing: Arc::new(Mutex::new(false)),
        }
    }

    /// Waits (bounded) until task `id` was reported in `state`; returns that status.
    async fn wait_for(&self, id: &str, state: TaskState) -> TaskStatus {
        let mut rx = self.latest.subscribe();
        let found = tokio::time::timeout(
            LIMIT,
            rx.wait_for(|m| m.get(id).is_some_and(|s| s.state == state as i32)),
        )
        .await;
        match found {
            Ok(Ok(map)) => map[id].clone(),
            _ => panic!(
                "task {id} never reported {state:?}; last: {:?}",
                self.latest.borrow().get(id)
            ),
        }
    }
}

impl StatusSink for TestSink {
    type Error = String;

    async fn send(&self, updates: Vec<TaskStatusUpdate>) -> Result<(), String> {
        if *self.failing.lock().unwrap() {
            return Err("no session".into());
        }
        self.history.lock().unwrap().extend(
            updates
                .iter()
                .map(|u| (u.task_id.clone(), u.status.as_ref().map_or(0, |s| s.state))),
        );
        self.latest.send_modify(|m| {
            for u in updates {
                m.insert(u.task_id, u.status.unwrap_or_default());
            }
        });
        Ok(())
    }
}

fn fast_reporter(sink: TestSink) -> StatusReporter {
    StatusReporter::with_backoff(
        sink,
        ReporterBackoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
    )
}

fn sim_task(id: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

fn change(task: &Task, action: AssignmentAction) -> AssignmentChange {
    AssignmentChange {
        assignment: Some(Assignment {
            item: Some(assignment::Item::Task(task.clone())),
        }),
        action: action as i32,
    }
}

fn complete(tasks: &[&Task]) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: assignments_message::Type::Complete as i32,
        changes: tasks
            .iter()
            .map(|t| change(t, AssignmentAction::Update))
            .collect(),
        ..Default::default()
    }
}

fn incremental(changes: Vec<AssignmentChange>) -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: assignments_message::Type::Incremental as i32,
        changes,
        ..Default::default()
    }
}

fn sim() -> Arc<dyn Executor> {
    Arc::new(SimExecutor::new(SimConfig {
        start_delay: Duration::from_millis(10),
        ..Default::default()
    }))
}

fn db_path(dir: &Path) -> std::path::PathBuf {
    dir.join("worker").join("tasks.redb")
}

/// Waits (bounded) until the worker's database no longer holds task `id`.
async fn wait_forgotten(worker: &Worker, id: &str) {
    tokio::time::timeout(LIMIT, async {
        while worker.db.get(id).unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("task {id} never left the database"));
}

#[test]
fn plan_starts_updates_and_stops() {
    let known = BTreeMap::from([
        ("driven".to_string(), Known::Driven),
        ("gone".to_string(), Known::Driven),
        ("old".to_string(), Known::Stored { terminal: false }),
        ("oldgone".to_string(), Known::Stored { terminal: false }),
        ("done".to_string(), Known::Stored { terminal: true }),
    ]);
    let decisions = plan(
        &known,
        &complete(&[&sim_task("new"), &sim_task("driven"), &sim_task("old")]),
    )
    .unwrap();
    assert_eq!(
        decisions,
        vec![
            Decision::Start(sim_task("new")),
            Decision::Update(sim_task("driven")),
            Decision::Resume(sim_task("old")),
            Decision::Forget("done".into()),
            Decision::Stop("gone".into()),
            Decision::StopStored("oldgone".into()),
        ]
    );
    let decisions = plan(
        &known,
        &incremental(vec![
            change(&sim_task("driven"), AssignmentAction::Remove),
            change(&sim_task("unknown"), AssignmentAction::Remove),
        ]),
    )
    .unwrap();
    assert_eq!(decisions, vec![Decision::Stop("driven".into())]);
    assert!(
        plan(
            &known,
            &incremental(vec![
                change(&sim_task("x"), AssignmentAction::Update),
                change(&sim_task("x"), AssignmentAction::Remove),
            ])
        )
        .is_err(),
        "a task twice in one message"
    );
    assert!(plan(&known, &complete(&[&sim_task("")])).is_err());
}

#[tokio::test]
async fn a_complete_set_runs_its_tasks_and_a_removal_stops_one() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TestSink::new();
    let db = TaskDb::open(&db_path(dir.path())).unwrap();
    let mut worker = Worker::new(sim(), db, fast_reporter(sink.clone())).unwrap();
    let (a, b) = (sim_task("a"), sim_task("b"));
    worker.apply(&complete(&[&a, &b])).unwrap();
    sink.wait_for("a", TaskState::Running).await;
    sink.wait_for("b", TaskState::Running).await;

    worker
        .apply(&incremental(vec![change(&b, AssignmentAction::Remove)]))
        .unwrap();
    let status = sink.wait_for("b", TaskState::Shutdown).await;
    assert_eq!(status.message, "shutdown");
    wait_forgotten(&worker, "b").await;
    assert!(worker.db.get("a").unwrap().is_some());
    assert_eq!(
        sink.latest.borrow()["a"].state,
        TaskState::Running as i32,
        "the other task runs on"
    );

    // A desired state of SHUTDOWN stops a task but keeps it recorded.
    let mut stopping = a.clone();
    stopping.desired_state = TaskState::Shutdown as i32;
    worker
        .apply(&incremental(vec![change(
            &stopping,
            AssignmentAction::Update,
        )]))
        .unwrap();
    sink.wait_for("a", TaskState::Shutdown).await;
    assert!(worker.db.get("a").unwrap().is_some());
    worker.apply(&complete(&[])).unwrap();
    wait_forgotten(&worker, "a").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn statuses_reach_the_sink_after_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sink = TestSink::new();
    *sink.failing.lock().unwrap() = true;
    let db = TaskDb::open(&db_path(dir.path())).unwrap();
    let reporter = fast_reporter(sink.clone());
    let mut worker = Worker::new(sim(), db, reporter.clone()).unwrap();
    worker.apply(&complete(&[&sim_task("a")])).unwrap();
    // The task runs although nothing can be reported; its status waits.
    tokio::time::timeout(LIMIT, async {
        while worker.db.get("a").unwrap().unwrap().status.map(|s| s.state)
            != Some(TaskState::Running as i32)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(reporter.is_pending("a"));
    *sink.failing.lock().unwrap() = false;
    sink.wait_for("a", TaskState::Running).await;
    worker.shutdown().await;
}

// Adoption of real processes after an agent restart (same PIDs, removed tasks stopped, the
// exit status of a task that ended meanwhile) needs the `shoal process-shim` binary: it is
// tested end to end in `crates/shoal/tests/agent_restart.rs`.

#[tokio::test]
async fn a_task_finished_before_a_restart_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let task = sim_task("job");
    let ending: Arc<dyn Executor> = Arc::new(SimExecutor::new(SimConfig {
        start_delay: Duration::ZERO,
        exit_after: Some((Duration::from_millis(10), 0)),
        ..Default::default()
    }));
    {
        let sink = TestSink::new();
        let db = TaskDb::open(&db_path(dir.path())).unwrap();
        let mut worker = Worker::new(ending.clone(), db, fast_reporter(sink.clone())).unwrap();
        worker.apply(&complete(&[&task])).unwrap();
        sink.wait_for("job", TaskState::Complete).await;
        worker.shutdown().await;
    }
    let sink = TestSink::new();
    let db = TaskDb::open(&db_path(dir.path())).unwrap();
    let mut worker = Worker::new(ending, db, fast_reporter(sink.clone())).unwrap();
    worker.apply(&complete(&[&task])).unwrap();
    sink.wait_for("job", TaskState::Complete).await;
    assert_eq!(
        *sink.history.lock().unwrap(),
        vec![("job".to_string(), TaskState::Complete as i32)],
        "its final status is reported again, and nothing else"
    );
    worker.shutdown().await;
}

/// The secret and config IDs each task's controller was given, by task ID.
type Given = Arc<Mutex<BTreeMap<String, (Vec<String>, Vec<String>)>>>;

/// The sim executor, recording the secrets and configs each controller was given.
struct Recording {
    sim: Arc<dyn Executor>,
    given: Given,
}

impl Executor for Recording {
    fn describe(&self) -> shoal_api::v1::NodeDescription {
        self.sim.describe()
    }

    fn controller(&self, task: &Task) -> shoal_executor::Result<Box<dyn Controller>> {
        self.sim.controller(task)
    }

    fn controller_with(
        &self,
        task: &Task,
        dependencies: &TaskDependencies,
    ) -> shoal_executor::Result<Box<dyn Controller>> {
        let ids = |metas: Vec<Option<&Meta>>| -> Vec<String> {
            metas.into_iter().flatten().map(|m| m.id.clone()).collect()
        };
        self.given.lock().unwrap().insert(
            id_of(task).to_string(),
            (
                ids(dependencies
                    .secrets
                    .iter()
                    .map(|s| s.meta.as_ref())
                    .collect()),
                ids(dependencies
                    .configs
                    .iter()
                    .map(|c| c.meta.as_ref())
                    .collect()),
            ),
        );
        self.sim.controller(task)
    }
}

#[tokio::test]
async fn tasks_get_the_secrets_and_configs_they_reference_from_the_assignments() {
    use shoal_api::v1::{Config, ConfigReference, ProcessSpec, Secret, SecretReference};
    let dir = tempfile::tempdir().unwrap();
    let sink = TestSink::new();
    let db = TaskDb::open(&db_path(dir.path())).unwrap();
    let given = Arc::new(Mutex::new(BTreeMap::new()));
    let executor = Arc::new(Recording {
        sim: sim(),
        given: given.clone(),
    });
    let mut worker = Worker::new(executor, db, fast_reporter(sink.clone())).unwrap();
    let meta = |id: &str| {
        Some(Meta {
            id: id.into(),
            ..Default::default()
        })
    };
    let secret = |id: &str| AssignmentChange {
        assignment: Some(Assignment {
            item: Some(assignment::Item::Secret(Secret {
                meta: meta(id),
                ..Default::default()
            })),
        }),
        action: AssignmentAction::Update as i32,
    };
    let config = |id: &str| AssignmentChange {
        assignment: Some(Assignment {
            item: Some(assignment::Item::Config(Config {
                meta: meta(id),
                ..Default::default()
            })),
        }),
        action: AssignmentAction::Update as i32,
    };
    let using = |id: &str, secrets: &[&str], configs: &[&str]| {
        let mut task = sim_task(id);
        task.spec = Some(
            shoal_api::v1::TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "true".into(),
                    secrets: secrets
                        .iter()
                        .map(|s| SecretReference {
                            secret_id: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    configs: configs
                        .iter()
                        .map(|c| ConfigReference {
                            config_id: c.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        );
        task
    };
    let (a, b) = (using("a", &["s1"], &["c1"]), using("b", &["s2"], &[]));
    // The COMPLETE set: dependencies first, then the tasks; each task gets only its own.
    let mut first = complete(&[&a]);
    first.changes.insert(0, secret("s1"));
    first.changes.insert(0, secret("s2"));
    first.changes.insert(0, config("c1"));
    worker.apply(&first).unwrap();
    sink.wait_for("a", TaskState::Running).await;
    // An INCREMENTAL message: the secret removed before b comes is not given to it.
    worker
        .apply(&incremental(vec![
            AssignmentChange {
                action: AssignmentAction::Remove as i32,
                ..secret("s2")
            },
            change(&b, AssignmentAction::Update),
        ]))
        .unwrap();
    sink.wait_for("b", TaskState::Running).await;
    let given = given.lock().unwrap().clone();
    assert_eq!(given["a"], (vec!["s1".to_string()], vec!["c1".to_string()]));
    assert_eq!(given["b"], (vec![], vec![]));
    // A new COMPLETE set replaces what was kept.
    worker.apply(&complete(&[&a, &b])).unwrap();
    assert!(worker.secrets.is_empty() && worker.configs.is_empty());
    worker.shutdown().await;
}
