//! Task shapes: golden JSON of replicated, job and process tasks; states and filters.

use std::collections::BTreeMap;

use serde_json::json;
use shoal_api::v1::{self, TaskState};

use super::*;
use crate::service::spec::ServiceSpec;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn container_spec() -> v1::TaskSpec {
    let spec: ServiceSpec = crate::lenient::from_slice(
        br#"{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest","Args":["sleep","1d"],"Init":false,"DNSConfig":{}},
            "Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0}}"#,
    )
    .unwrap();
    spec.to_proto().unwrap().task.unwrap()
}

fn task(slot: u64, state: TaskState, desired: TaskState) -> v1::Task {
    v1::Task {
        meta: Some(v1::Meta {
            id: "x1y2z3a4b5c6d7e8f9g0h1i2j".into(),
            version: 30,
            created_at: ts(1_700_000_000),
            updated_at: ts(1_700_000_002),
        }),
        spec: Some(container_spec()),
        spec_version: 1,
        service_id: "8dlxcj4w0t7b1i3nsbgbv1dkq".into(),
        slot,
        node_id: "n0d3n0d3n0d3n0d3n0d3n0d3n".into(),
        status: Some(v1::TaskStatus {
            timestamp: ts(1_700_000_002),
            state: state as i32,
            message: "started".into(),
            runtime_status: Some(v1::task_status::RuntimeStatus::Container(Box::new(
                v1::ContainerStatus {
                    container_id: "c0ffee".into(),
                    pid: 4242,
                    exit_code: 0,
                },
            ))),
            ..Default::default()
        }),
        desired_state: desired as i32,
        ..Default::default()
    }
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

#[test]
fn a_replicated_task_renders_as_moby_does() {
    let t = Task::from_proto(
        &task(1, TaskState::Running, TaskState::Running),
        false,
        &BTreeMap::new(),
    );
    let value = serde_json::to_value(&t).unwrap();
    assert_eq!(value["Slot"], json!(1));
    assert_eq!(value["Status"]["State"], "running");
    assert_eq!(value["DesiredState"], "running");
    assert_eq!(value["Status"]["PortStatus"], json!({}));
    assert!(value.get("JobIteration").is_none());
    insta::assert_snapshot!("replicated_task", pretty(&t));
}

#[test]
fn a_job_task_has_its_iteration_and_slot_zero_is_left_out() {
    let mut t = task(0, TaskState::Complete, TaskState::Running);
    t.job_iteration = 2;
    let shape = Task::from_proto(&t, true, &BTreeMap::new());
    let value = serde_json::to_value(&shape).unwrap();
    assert!(value.get("Slot").is_none(), "slot 0 is omitted, as in moby");
    assert_eq!(value["JobIteration"], json!({"Index": 2}));
    assert_eq!(value["DesiredState"], "complete");
    insta::assert_snapshot!("job_task", pretty(&shape));
}

#[test]
fn a_process_task_shows_its_pid_and_exit_code() {
    let mut t = task(2, TaskState::Failed, TaskState::Shutdown);
    t.spec = Some(
        v1::TaskSpecFields {
            runtime: Some(v1::task_spec::Runtime::Process(Box::new(v1::ProcessSpec {
                command: "sleep".into(),
                args: vec!["1000".into()],
                ..Default::default()
            }))),
            ..Default::default()
        }
        .into(),
    );
    let status = t.status.as_mut().unwrap();
    status.err = "exit status 3".into();
    status.runtime_status = Some(v1::task_status::RuntimeStatus::Process(Box::new(
        v1::ProcessStatus {
            pid: 77,
            exit_code: 3,
            ..Default::default()
        },
    )));
    let value = serde_json::to_value(Task::from_proto(&t, false, &BTreeMap::new())).unwrap();
    assert_eq!(
        value["Spec"]["ContainerSpec"],
        json!({"Command":["sleep"],"Args":["1000"]})
    );
    assert!(value["Spec"].get("Runtime").is_none());
    assert_eq!(
        value["Status"]["ContainerStatus"],
        json!({"PID":77,"ExitCode":3})
    );
    assert_eq!(value["Status"]["Err"], "exit status 3");
    assert_eq!(value["Status"]["State"], "failed");
    assert_eq!(value["DesiredState"], "shutdown");
}

#[test]
fn a_task_without_spec_or_status_still_has_a_container_spec() {
    let value = serde_json::to_value(Task::from_proto(
        &v1::Task::default(),
        false,
        &BTreeMap::new(),
    ))
    .unwrap();
    assert_eq!(value["Spec"]["ContainerSpec"], json!({}));
    assert_eq!(value["Status"]["Timestamp"], "0001-01-01T00:00:00Z");
    assert_eq!(value["DesiredState"], "new");
}

#[test]
fn network_attachments_show_the_network() {
    let mut t = task(1, TaskState::Running, TaskState::Running);
    t.networks = vec![v1::NetworkAttachment {
        network_id: "netid".into(),
        addresses: vec!["10.0.1.3/24".into()],
        ..Default::default()
    }];
    let network = v1::Network {
        meta: Some(v1::Meta {
            id: "netid".into(),
            version: 5,
            created_at: ts(1_600_000_000),
            updated_at: ts(1_600_000_000),
        }),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations {
                name: "net1".into(),
                labels: Vec::new(),
            }),
            driver_config: Some(v1::Driver {
                name: "overlay".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let networks = BTreeMap::from([("netid".to_string(), network)]);
    let value = serde_json::to_value(Task::from_proto(&t, false, &networks)).unwrap();
    assert_eq!(
        value["NetworksAttachments"],
        json!([{
            "Network": {
                "ID": "netid",
                "Version": {"Index": 5},
                "CreatedAt": "2020-09-13T12:26:40Z",
                "UpdatedAt": "2020-09-13T12:26:40Z",
                "Spec": {"Name": "net1", "Labels": {}, "DriverConfiguration": {"Name": "overlay"},
                         "Scope": "swarm"},
                "DriverState": {}
            },
            "Addresses": ["10.0.1.3/24"]
        }])
    );
}

#[test]
fn states_are_spelled_as_docker_spells_them() {
    assert_eq!(state_name(TaskState::Pending as i32), "pending");
    assert_eq!(state_name(TaskState::Orphaned as i32), "orphaned");
    assert_eq!(parse_state("running"), Some(TaskState::Running));
    assert_eq!(parse_state("Shutdown"), Some(TaskState::Shutdown));
    assert_eq!(parse_state("sleeping"), None);
}

#[test]
fn up_to_date_follows_the_orchestrators_rule() {
    let spec = container_spec();
    let mut service = v1::Service {
        spec: Some(v1::ServiceSpec {
            task: Some(spec.clone()),
            ..Default::default()
        }),
        spec_version: 2,
        ..Default::default()
    };
    let mut t = task(1, TaskState::Running, TaskState::Running);
    t.spec_version = 1;
    assert!(
        list::is_up_to_date(&t, &service),
        "a scale changes the version, not the task spec"
    );
    let mut changed: v1::TaskSpecFields = (*spec).clone();
    changed.force_update = 1;
    service.spec.as_mut().unwrap().task = Some(changed.into());
    assert!(!list::is_up_to_date(&t, &service));
    t.spec_version = 2;
    assert!(list::is_up_to_date(&t, &service));
}
