use super::*;
use shoal_api::v1::{
    Meta, NodeSpec, NodeStatus, ReplicatedService, RestartPolicy, ServiceSpec, TaskStatus,
};

fn service(replicas: u64, restart: Option<RestartPolicy>) -> Service {
    let task = shoal_api::shared::TaskSpecFields {
        restart,
        ..Default::default()
    };
    Service {
        meta: Some(Meta {
            id: "s1".into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            task: Some(task.into()),
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas,
            })),
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn task(id: &str, slot: u64, node: &str, state: TaskState, desired: TaskState) -> Arc<Task> {
    Arc::new(Task {
        meta: Some(Meta {
            id: id.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: id.len() as i64,
                nanos: 0,
            }),
            ..Default::default()
        }),
        service_id: "s1".into(),
        spec_version: 1,
        slot,
        node_id: node.into(),
        desired_state: desired as i32,
        status: Some(TaskStatus {
            state: state as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn node(id: &str, status: node_status::State, availability: node_spec::Availability) -> Arc<Node> {
    Arc::new(Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            availability: availability as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: status as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn nodes() -> HashMap<String, Arc<Node>> {
    use node_spec::Availability::*;
    use node_status::State::*;
    [
        node("up", Ready, Active),
        node("down", Down, Active),
        node("drained", Ready, Drain),
        node("paused", Ready, Pause),
    ]
    .into_iter()
    .map(|n| (n.meta.as_ref().unwrap().id.clone(), n))
    .collect()
}

fn create(slot: u64) -> Change {
    Change::Create {
        slot,
        delay: Duration::ZERO,
        attempts: Vec::new(),
    }
}

fn shutdowns(changes: &[Change]) -> Vec<&str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Shutdown { task_id, .. } => Some(task_id.as_str()),
            _ => None,
        })
        .collect()
}

fn creates(changes: &[Change]) -> Vec<(u64, Duration)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Create { slot, delay, .. } => Some((*slot, *delay)),
            _ => None,
        })
        .collect()
}

use TaskState::{Assigned, Complete, Failed, Running, Shutdown};

#[test]
fn a_new_service_gets_one_task_per_slot() {
    let changes = reconcile(&service(3, None), &[], &nodes());
    assert_eq!(changes, vec![create(1), create(2), create(3)]);
}

#[test]
fn running_tasks_hold_their_slots_and_missing_slots_are_filled() {
    let tasks = [
        task("a", 1, "up", Running, Running),
        task("b", 3, "up", Assigned, Running),
        // Told to stop already: it holds nothing.
        task("c", 2, "up", Running, Shutdown),
    ];
    assert_eq!(
        reconcile(&service(3, None), &tasks, &nodes()),
        vec![create(2)]
    );
}

#[test]
fn scaling_down_stops_the_highest_slots() {
    let tasks = [
        task("a", 1, "up", Running, Running),
        task("b", 2, "up", Running, Running),
        task("c", 3, "up", Running, Running),
        task("d", 4, "up", Failed, Running),
    ];
    let changes = reconcile(&service(2, None), &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["d", "c"]);
    assert!(creates(&changes).is_empty());
}

#[test]
fn tasks_on_down_drained_or_removed_nodes_are_replaced_at_once() {
    let tasks = [
        task("a", 1, "down", Running, Running),
        task("b", 2, "drained", Assigned, Running),
        task("c", 3, "gone", Running, Running),
        // Paused nodes keep their tasks.
        task("d", 4, "paused", Running, Running),
    ];
    let changes = reconcile(&service(4, None), &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["a", "b", "c"]);
    // Moved off lost nodes: no restart delay.
    assert_eq!(
        creates(&changes),
        [
            (1, Duration::ZERO),
            (2, Duration::ZERO),
            (3, Duration::ZERO)
        ]
    );
}

#[test]
fn ended_tasks_restart_as_the_policy_says() {
    let ended = [
        task("ok", 1, "up", Complete, Running),
        task("bad", 2, "up", Failed, Running),
    ];
    // Default: any, 5 s.
    let changes = reconcile(&service(2, None), &ended, &nodes());
    assert_eq!(shutdowns(&changes), ["ok", "bad"]);
    assert_eq!(
        creates(&changes),
        [(1, DEFAULT_RESTART_DELAY), (2, DEFAULT_RESTART_DELAY)]
    );
    let policy = |condition: restart_policy::Condition| {
        Some(RestartPolicy {
            condition: condition as i32,
            delay: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
    };
    // On failure: the completed task keeps its slot as it is.
    let changes = reconcile(
        &service(2, policy(restart_policy::Condition::OnFailure)),
        &ended,
        &nodes(),
    );
    assert_eq!(shutdowns(&changes), ["bad"]);
    assert_eq!(creates(&changes), [(2, Duration::from_secs(1))]);
    // None: nothing restarts, and nothing is created on later rounds either.
    let changes = reconcile(
        &service(2, policy(restart_policy::Condition::None)),
        &ended,
        &nodes(),
    );
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn a_slot_with_two_holders_keeps_the_newest() {
    let tasks = [
        task("old", 1, "up", Running, Running),
        task("newer", 1, "up", Assigned, Running),
    ];
    let changes = reconcile(&service(1, None), &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["old"]);
    assert!(creates(&changes).is_empty());
}

#[test]
fn other_modes_are_left_alone() {
    let mut global = service(1, None);
    global.spec.as_mut().unwrap().mode = Some(service_spec::Mode::Global(Default::default()));
    assert!(reconcile(&global, &[], &nodes()).is_empty());
}

fn version(task: Arc<Task>, v: u64) -> Arc<Task> {
    let mut t = (*task).clone();
    t.spec_version = v;
    Arc::new(t)
}

fn updated(replicas: u64, parallelism: Option<u64>, order: update_config::UpdateOrder) -> Service {
    let mut s = service(replicas, None);
    s.spec_version = 2;
    if let Some(parallelism) = parallelism {
        s.spec.as_mut().unwrap().update = Some(shoal_api::v1::UpdateConfig {
            parallelism,
            order: order as i32,
            ..Default::default()
        });
    }
    s
}

#[test]
fn an_update_replaces_old_tasks_one_slot_at_a_time_by_default() {
    let tasks = [
        task("a", 1, "up", Running, Running),
        task("b", 2, "up", Running, Running),
        task("c", 3, "up", Running, Running),
    ];
    let service = updated(3, None, update_config::UpdateOrder::StopFirst);
    let changes = reconcile(&service, &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["a"]);
    assert_eq!(creates(&changes), [(1, Duration::ZERO)]);
    // Slot 1's new task does not run yet: nothing else starts.
    let tasks = [
        version(task("new1", 1, "up", Assigned, Running), 2),
        task("b", 2, "up", Running, Running),
        task("c", 3, "up", Running, Running),
    ];
    assert!(reconcile(&service, &tasks, &nodes()).is_empty());
    // Once it runs, slot 2 goes.
    let tasks = [
        version(task("new1", 1, "up", Running, Running), 2),
        task("b", 2, "up", Running, Running),
        task("c", 3, "up", Running, Running),
    ];
    let changes = reconcile(&service, &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["b"]);
    assert_eq!(creates(&changes), [(2, Duration::ZERO)]);
}

#[test]
fn parallelism_zero_updates_every_slot_at_once() {
    let tasks = [
        task("a", 1, "up", Running, Running),
        task("b", 2, "up", Running, Running),
    ];
    let service = updated(2, Some(0), update_config::UpdateOrder::StopFirst);
    let changes = reconcile(&service, &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["a", "b"]);
    assert_eq!(creates(&changes).len(), 2);
}

#[test]
fn start_first_keeps_the_old_task_until_the_new_one_runs() {
    let service = updated(1, Some(1), update_config::UpdateOrder::StartFirst);
    let changes = reconcile(&service, &[task("a", 1, "up", Running, Running)], &nodes());
    assert!(shutdowns(&changes).is_empty());
    assert_eq!(creates(&changes), [(1, Duration::ZERO)]);
    // Both hold the slot while the new one starts...
    let both = [
        task("a", 1, "up", Running, Running),
        version(task("new", 1, "up", Assigned, Running), 2),
    ];
    assert!(reconcile(&service, &both, &nodes()).is_empty());
    // ...and the old one stops once the new one runs.
    let both = [
        task("a", 1, "up", Running, Running),
        version(task("new", 1, "up", Running, Running), 2),
    ];
    let changes = reconcile(&service, &both, &nodes());
    assert_eq!(shutdowns(&changes), ["a"]);
    assert!(creates(&changes).is_empty());
}

#[test]
fn a_new_spec_version_with_the_same_task_spec_redeploys_nothing() {
    // Scaling raises the spec version but leaves the task spec as it was.
    let mut scaled = service(3, None);
    scaled.spec_version = 2;
    let spec = scaled.spec.as_ref().unwrap().task.clone();
    let same = |id: &str, slot: u64| {
        let mut t = (*task(id, slot, "up", TaskState::Running, TaskState::Running)).clone();
        t.spec = spec.clone();
        Arc::new(t)
    };
    let tasks = [same("a", 1), same("b", 2)];
    let changes = reconcile(&scaled, &tasks, &nodes());
    assert_eq!(changes, [create(3)], "only the new slot");
    // A forced update changes the task spec: both are replaced, one at a time.
    scaled
        .spec
        .as_mut()
        .unwrap()
        .task
        .as_mut()
        .unwrap()
        .force_update += 1;
    let changes = reconcile(&scaled, &tasks, &nodes());
    assert_eq!(shutdowns(&changes), ["a"]);
}

fn limited(max_attempts: u64, window: u64) -> Service {
    service(
        1,
        Some(RestartPolicy {
            condition: restart_policy::Condition::Any as i32,
            delay: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            max_attempts,
            window: Some(prost_types::Duration {
                seconds: window as i64,
                nanos: 0,
            }),
        }),
    )
}

/// Fails the slot's task at `now` and returns what the plan creates: (delay, attempts).
fn fail_once(
    service: &Service,
    attempts: &[prost_types::Timestamp],
    now: SystemTime,
) -> Option<(Duration, Vec<prost_types::Timestamp>)> {
    let mut failed = (*task("t", 1, "up", TaskState::Failed, TaskState::Running)).clone();
    failed.restart_attempts = attempts.to_vec();
    plan(service, &[Arc::new(failed)], &nodes(), now)
        .changes
        .into_iter()
        .find_map(|c| match c {
            Change::Create {
                delay, attempts, ..
            } => Some((delay, attempts)),
            _ => None,
        })
}

#[test]
fn max_attempts_without_a_window_stops_restarting_for_good() {
    let svc = limited(2, 0);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let (delay, first) = fail_once(&svc, &[], t0).expect("first restart");
    assert_eq!(delay, Duration::from_secs(1));
    assert_eq!(first.len(), 1);
    let (_, second) = fail_once(&svc, &first, t0 + Duration::from_secs(10)).expect("second");
    assert_eq!(second.len(), 2);
    assert_eq!(
        fail_once(&svc, &second, t0 + Duration::from_secs(20)),
        None,
        "two restarts were allowed; the slot keeps its failed task"
    );
    // Attempts of an earlier spec version do not count.
    let mut updated = svc.clone();
    updated.spec_version = 2;
    let mut old = (*task("t", 1, "up", TaskState::Failed, TaskState::Running)).clone();
    old.restart_attempts = second;
    let restart = super::restart(
        &restart_policy(&updated),
        &updated,
        &old,
        t0 + Duration::from_secs(20),
    );
    assert_eq!(restart.map(|(_, a)| a.len()), Some(1));
}

#[test]
fn max_attempts_within_a_window_waits_for_the_window_to_pass() {
    let svc = limited(2, 60);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let (_, first) = fail_once(&svc, &[], t0).unwrap();
    let (_, second) = fail_once(&svc, &first, t0 + Duration::from_secs(5)).unwrap();
    // The third failure within the window: the restart waits until the first attempt (at
    // t0 + 1 s) is 60 s old.
    let (delay, third) = fail_once(&svc, &second, t0 + Duration::from_secs(10)).unwrap();
    assert_eq!(delay, Duration::from_secs(51));
    assert_eq!(
        third.len(),
        2,
        "only the attempts within the window are kept"
    );
    // Long after, attempts have left the window: the usual delay.
    let (delay, later) = fail_once(&svc, &third, t0 + Duration::from_secs(1_000)).unwrap();
    assert_eq!(delay, Duration::from_secs(1));
    assert_eq!(later.len(), 1);
}
