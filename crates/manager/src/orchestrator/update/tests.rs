use super::*;
use shoal_api::v1::{Meta, ServiceSpec, TaskStatus, UpdateConfig};

const NOW: u64 = 1_000_000;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn service(config: Option<UpdateConfig>, state: Option<UpdateState>) -> Service {
    Service {
        meta: Some(Meta {
            id: "s1".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            task: Some(spec_of(2)),
            update: config,
            rollback: config,
            ..Default::default()
        }),
        previous_spec: Some(Box::default()),
        spec_version: 2,
        update_status: state.map(|s| UpdateStatus {
            state: s as i32,
            started_at: Some(at(NOW - 100).into()),
            completed_at: None,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// The task spec of spec version `version` (each version a different one).
fn spec_of(version: u64) -> shoal_api::v1::TaskSpec {
    shoal_api::shared::TaskSpecFields {
        force_update: version,
        ..Default::default()
    }
    .into()
}

/// A task of spec version `version` in `state` since `since` seconds before now.
fn task(id: &str, version: u64, state: TaskState, since: u64) -> Arc<Task> {
    Arc::new(Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec_version: version,
        spec: Some(spec_of(version)),
        desired_state: TaskState::Running as i32,
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: Some(at(NOW - since).into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn config(parallelism: u64, delay: u64, monitor: u64, action: FailureAction) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        delay: Some(prost_types::Duration {
            seconds: delay as i64,
            nanos: 0,
        }),
        monitor: Some(prost_types::Duration {
            seconds: monitor as i64,
            nanos: 0,
        }),
        failure_action: action as i32,
        ..Default::default()
    }
}

fn units(outdated: usize, total: usize) -> Units {
    Units {
        total,
        outdated,
        missing: 0,
    }
}

fn state_of(s: &Supervision) -> Option<UpdateState> {
    s.status
        .as_ref()
        .map(|s| UpdateState::try_from(s.state).unwrap())
}

#[test]
fn an_update_starts_when_a_unit_is_outdated() {
    let svc = service(None, None);
    let tasks = [task("a", 1, TaskState::Running, 50)];
    let s = supervise(&svc, &tasks, units(1, 1), at(NOW));
    assert_eq!(state_of(&s), Some(UpdateState::Updating));
    assert_eq!(s.status.as_ref().unwrap().message, "update in progress");
    assert_eq!(s.allowed, 1, "the default parallelism is one");
    assert!(!s.rollback);
}

#[test]
fn a_service_without_an_update_is_left_alone() {
    let svc = service(None, None);
    let tasks = [task("a", 2, TaskState::Running, 50)];
    assert_eq!(
        supervise(&svc, &tasks, units(0, 1), at(NOW)),
        Supervision::default()
    );
}

#[test]
fn parallelism_counts_tasks_not_running_yet_and_within_their_delay() {
    let svc = service(
        Some(config(2, 10, 5, FailureAction::Pause)),
        Some(UpdateState::Updating),
    );
    // One new task starting, one running for 3 s (delay 10 s): both in flight.
    let tasks = [
        task("new1", 2, TaskState::Starting, 1),
        task("new2", 2, TaskState::Running, 3),
        task("old", 1, TaskState::Running, 500),
    ];
    let s = supervise(&svc, &tasks, units(1, 3), at(NOW));
    assert_eq!(s.allowed, 0);
    assert_eq!(
        s.wake,
        Some(Duration::from_secs(7)),
        "when new2's delay ends"
    );
    assert_eq!(s.status, None);
    // Once new2 has run for the delay, one more slot may go.
    let tasks = [
        task("new1", 2, TaskState::Starting, 1),
        task("new2", 2, TaskState::Running, 10),
        task("old", 1, TaskState::Running, 500),
    ];
    assert_eq!(supervise(&svc, &tasks, units(1, 3), at(NOW)).allowed, 1);
}

#[test]
fn parallelism_zero_means_all_at_once() {
    let svc = service(
        Some(config(0, 0, 5, FailureAction::Pause)),
        Some(UpdateState::Updating),
    );
    let tasks = [task("old", 1, TaskState::Running, 500)];
    assert_eq!(
        supervise(&svc, &tasks, units(7, 7), at(NOW)).allowed,
        usize::MAX
    );
}

#[test]
fn an_update_completes_after_the_monitor_period() {
    let svc = service(
        Some(config(1, 0, 5, FailureAction::Pause)),
        Some(UpdateState::Updating),
    );
    let tasks = [task("new", 2, TaskState::Running, 2)];
    let s = supervise(&svc, &tasks, units(0, 1), at(NOW));
    assert_eq!(s.status, None, "still monitoring");
    assert_eq!(s.wake, Some(Duration::from_secs(3)));
    let tasks = [task("new", 2, TaskState::Running, 5)];
    let s = supervise(&svc, &tasks, units(0, 1), at(NOW));
    assert_eq!(state_of(&s), Some(UpdateState::Completed));
    let status = s.status.unwrap();
    assert_eq!(status.message, "update completed");
    assert!(status.completed_at.is_some());
    assert_eq!(status.started_at, Some(at(NOW - 100).into()), "kept");
}

#[test]
fn a_failure_pauses_the_update_by_default() {
    let svc = service(None, Some(UpdateState::Updating));
    let tasks = [
        task("bad", 2, TaskState::Failed, 1),
        task("old", 1, TaskState::Running, 500),
    ];
    let s = supervise(&svc, &tasks, units(1, 2), at(NOW));
    assert_eq!(state_of(&s), Some(UpdateState::Paused));
    assert_eq!(
        s.status.unwrap().message,
        "update paused due to failure or early termination of task bad"
    );
    assert_eq!(s.allowed, 0);
    // A paused update replaces nothing more.
    let paused = service(None, Some(UpdateState::Paused));
    assert_eq!(
        supervise(&paused, &tasks, units(1, 2), at(NOW)),
        Supervision::default()
    );
}

#[test]
fn early_termination_counts_as_a_failure_but_a_stopped_task_does_not() {
    let svc = service(None, Some(UpdateState::Updating));
    let stopped = [task("stopped", 2, TaskState::Shutdown, 1)];
    assert_eq!(supervise(&svc, &stopped, units(1, 2), at(NOW)).status, None);
    let finished = [task("finished", 2, TaskState::Complete, 1)];
    assert_eq!(
        state_of(&supervise(&svc, &finished, units(1, 2), at(NOW))),
        Some(UpdateState::Paused)
    );
}

#[test]
fn failures_within_the_ratio_are_tolerated() {
    let mut c = config(1, 0, 5, FailureAction::Pause);
    c.max_failure_ratio = 0.5;
    let svc = service(Some(c), Some(UpdateState::Updating));
    let one = [task("bad", 2, TaskState::Failed, 1)];
    assert_eq!(
        supervise(&svc, &one, units(2, 4), at(NOW)).status,
        None,
        "1/4 ≤ 0.5"
    );
    let three = [
        task("bad1", 2, TaskState::Failed, 1),
        task("bad2", 2, TaskState::Rejected, 1),
        task("bad3", 2, TaskState::Failed, 1),
    ];
    assert_eq!(
        state_of(&supervise(&svc, &three, units(2, 4), at(NOW))),
        Some(UpdateState::Paused),
        "3/4 > 0.5"
    );
}

#[test]
fn continue_ignores_failures() {
    let svc = service(
        Some(config(1, 0, 5, FailureAction::Continue)),
        Some(UpdateState::Updating),
    );
    let tasks = [task("bad", 2, TaskState::Failed, 1)];
    let s = supervise(&svc, &tasks, units(1, 2), at(NOW));
    assert_eq!(s.status, None);
    assert_eq!(s.allowed, 1);
}

#[test]
fn rollback_on_failure_swaps_the_specs_and_a_failing_rollback_pauses() {
    let svc = service(
        Some(config(1, 0, 5, FailureAction::Rollback)),
        Some(UpdateState::Updating),
    );
    let tasks = [task("bad", 2, TaskState::Failed, 1)];
    let s = supervise(&svc, &tasks, units(1, 2), at(NOW));
    assert!(s.rollback);
    let status = s.status.clone().unwrap();
    assert_eq!(status.state, UpdateState::RollbackStarted as i32);
    assert_eq!(
        status.message,
        "update rolled back due to failure or early termination of task bad"
    );
    let back = rolled_back(&svc, status).unwrap();
    assert_eq!(back.spec_version, 3);
    assert_eq!(back.previous_spec_version, 2);
    assert_eq!(back.previous_spec, svc.spec.clone().map(Box::new));
    assert_eq!(back.spec, Some(ServiceSpec::default()));

    // The rollback's own failure: its config says rollback, which a rollback cannot do, so
    // it pauses.
    let rolling_back = service(
        Some(config(1, 0, 5, FailureAction::Rollback)),
        Some(UpdateState::RollbackStarted),
    );
    let tasks = [task("bad-again", 2, TaskState::Failed, 1)];
    let s = supervise(&rolling_back, &tasks, units(1, 2), at(NOW));
    assert!(!s.rollback);
    assert_eq!(state_of(&s), Some(UpdateState::RollbackPaused));
    assert_eq!(
        s.status.unwrap().message,
        "rollback paused due to failure or early termination of task bad-again"
    );
}

#[test]
fn a_rollback_completes_as_rollback_completed() {
    let svc = service(None, Some(UpdateState::RollbackStarted));
    let tasks = [task("back", 2, TaskState::Running, 60)];
    let s = supervise(&svc, &tasks, units(0, 1), at(NOW));
    assert_eq!(state_of(&s), Some(UpdateState::RollbackCompleted));
    assert_eq!(s.status.unwrap().message, "rollback completed");
}

#[test]
fn without_a_previous_spec_rollback_pauses() {
    let mut svc = service(
        Some(config(1, 0, 5, FailureAction::Rollback)),
        Some(UpdateState::Updating),
    );
    svc.previous_spec = None;
    let tasks = [task("bad", 2, TaskState::Failed, 1)];
    let s = supervise(&svc, &tasks, units(1, 2), at(NOW));
    assert!(!s.rollback);
    assert_eq!(state_of(&s), Some(UpdateState::Paused));
}

#[test]
fn an_update_is_not_complete_while_a_unit_has_no_task() {
    let svc = service(None, Some(UpdateState::RollbackStarted));
    let tasks = [task("back", 2, TaskState::Running, 60)];
    let waiting = Units {
        total: 2,
        outdated: 0,
        missing: 1,
    };
    assert_eq!(supervise(&svc, &tasks, waiting, at(NOW)).status, None);
}
