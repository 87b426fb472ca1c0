//! Service shapes: the recorded request bodies of the docker CLI and docker-py decode, convert
//! and read back as sent; golden JSON of what clients read; bad input refused by name.

use serde_json::{Value, json};
use shoal_api::v1::{self, service_spec};

use super::spec::ServiceSpec;
use super::*;
use crate::lenient;

/// The CLI's `service create --name a busybox` body (engine-api.md §6).
const CLI_CREATE: &str = r#"{"Name":"a","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest","Init":false,"DNSConfig":{}},
     "Resources":{"Limits":{},"Reservations":{}},"Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip"}}"#;

/// docker-py's `create_service` body (engine-api.md §6).
const PY_CREATE: &str = r#"{"Name":"dockerpytest_1","TaskTemplate":{"ContainerSpec":{"Image":"alpine:3.10","Command":["echo","hello"],"Args":null},
   "RestartPolicy":{"Condition":"any","Delay":5,"MaxAttempts":5,"Window":0}},"Mode":{"replicated":{"Replicas":2}}}"#;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A stored service as the Control API would keep `spec`.
fn stored(spec: v1::ServiceSpec) -> v1::Service {
    let job = matches!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(_) | service_spec::Mode::GlobalJob(_))
    );
    v1::Service {
        meta: Some(v1::Meta {
            id: "8dlxcj4w0t7b1i3nsbgbv1dkq".into(),
            version: 12,
            created_at: ts(1_700_000_000),
            updated_at: ts(1_700_000_100),
        }),
        spec: Some(spec),
        spec_version: 1,
        endpoint: Some(v1::Endpoint {
            spec: Some(v1::EndpointSpec::default()),
            ..Default::default()
        }),
        job_status: job.then(|| v1::JobStatus {
            job_iteration: 0,
            last_execution: ts(1_700_000_000),
        }),
        ..Default::default()
    }
}

fn decode(body: &str) -> ServiceSpec {
    lenient::from_slice(body.as_bytes()).unwrap()
}

fn shape(body: &str) -> Service {
    Service::from_proto(&stored(decode(body).to_proto().unwrap()))
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

#[test]
fn the_clis_create_body_reads_back_with_one_replica() {
    let spec = decode(CLI_CREATE).to_proto().unwrap();
    assert_eq!(
        spec.mode,
        Some(service_spec::Mode::Replicated(v1::ReplicatedService {
            replicas: 1
        })),
        "\"Replicated\":{{}} is one replica"
    );
    insta::assert_snapshot!("cli_create_service", pretty(&shape(CLI_CREATE)));
}

#[test]
fn docker_pys_create_body_reads_back_as_sent() {
    let service = shape(PY_CREATE);
    let value = serde_json::to_value(&service).unwrap();
    assert_eq!(
        value["Spec"]["TaskTemplate"]["RestartPolicy"],
        json!({"Condition":"any","Delay":5,"MaxAttempts":5,"Window":0}),
        "docker-py compares the whole dict, explicit zero included"
    );
    assert_eq!(value["Spec"]["Mode"], json!({"Replicated":{"Replicas":2}}));
    assert_eq!(
        value["Spec"]["TaskTemplate"]["ContainerSpec"],
        json!({"Image":"alpine:3.10","Command":["echo","hello"],"Isolation":"default"})
    );
    assert!(value.get("ServiceStatus").is_none());
    assert!(value.get("JobStatus").is_none());
    insta::assert_snapshot!("docker_py_create_service", pretty(&service));
}

#[test]
fn insert_defaults_fills_what_swarmkit_would() {
    let mut service = shape(CLI_CREATE);
    assert!(service.spec.update_config.is_none());
    assert!(service.spec.rollback_config.is_none());
    service.spec.insert_defaults();
    let value = serde_json::to_value(&service.spec).unwrap();
    let defaults = json!({"Parallelism":1,"FailureAction":"pause","Monitor":5_000_000_000_i64,
        "MaxFailureRatio":0,"Order":"stop-first"});
    assert_eq!(value["UpdateConfig"], defaults);
    assert_eq!(value["RollbackConfig"], defaults);
    assert_eq!(
        value["TaskTemplate"]["RestartPolicy"],
        json!({"Condition":"any","Delay":5_000_000_000_i64,"MaxAttempts":0})
    );
    assert_eq!(
        value["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
        json!(10_000_000_000_i64)
    );
    insta::assert_snapshot!("cli_create_service_insert_defaults", pretty(&service));
    // What was set is kept.
    let mut py = shape(PY_CREATE);
    py.spec.insert_defaults();
    assert_eq!(
        serde_json::to_value(&py.spec).unwrap()["TaskTemplate"]["RestartPolicy"],
        json!({"Condition":"any","Delay":5,"MaxAttempts":5,"Window":0})
    );
}

#[test]
fn job_modes_get_dockers_defaults_and_a_job_status() {
    let spec = decode(
        r#"{"Name":"j","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"ReplicatedJob":{}}}"#,
    )
    .to_proto()
    .unwrap();
    assert_eq!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 1
        }))
    );
    let spec = decode(
        r#"{"Name":"j","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"ReplicatedJob":{"MaxConcurrent":3}}}"#,
    )
    .to_proto()
    .unwrap();
    assert_eq!(
        spec.mode,
        Some(service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
            max_concurrent: 3,
            total_completions: 3
        })),
        "TotalCompletions defaults to MaxConcurrent"
    );
    let job = shape(
        r#"{"Name":"j","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"ReplicatedJob":{"MaxConcurrent":2,"TotalCompletions":4}}}"#,
    );
    insta::assert_snapshot!("replicated_job_service", pretty(&job));
    let global_job = shape(
        r#"{"Name":"g","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"GlobalJob":{}}}"#,
    );
    let value = serde_json::to_value(&global_job).unwrap();
    assert_eq!(value["Spec"]["Mode"], json!({"GlobalJob":{}}));
    assert_eq!(
        value["JobStatus"],
        json!({"JobIteration":{},"LastExecution":"2023-11-14T22:13:20Z"}),
        "the first iteration's Index 0 is omitted, as in moby"
    );
    let global = shape(
        r#"{"Name":"g","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"global":{}}}"#,
    );
    assert_eq!(
        serde_json::to_value(&global).unwrap()["Spec"]["Mode"],
        json!({"Global":{}})
    );
}

/// A spec using every field Shoal keeps, in moby's canonical spelling: it must read back
/// exactly as sent.
const FULL: &str = r#"{
  "Name": "full",
  "Labels": {"tier": "front"},
  "TaskTemplate": {
    "ContainerSpec": {
      "Image": "busybox:1.36",
      "Labels": {"c": "1"},
      "Command": ["sh", "-c"],
      "Args": ["sleep 1d"],
      "Hostname": "h",
      "Env": ["A=1"],
      "Dir": "/tmp",
      "User": "nobody",
      "Groups": ["audio"],
      "Privileges": {
        "CredentialSpec": null,
        "SELinuxContext": {"Disable": true, "User": "", "Role": "", "Type": "", "Level": ""},
        "Seccomp": {"Mode": "unconfined"},
        "AppArmor": {"Mode": "disabled"},
        "NoNewPrivileges": true
      },
      "Init": true,
      "StopSignal": "SIGINT",
      "TTY": true,
      "OpenStdin": true,
      "ReadOnly": true,
      "Mounts": [
        {"Type": "volume", "Source": "data", "Target": "/data", "VolumeOptions": {"Labels": {"v": "1"}, "DriverConfig": {"Name": "local"}}},
        {"Type": "bind", "Source": "/etc", "Target": "/host-etc", "ReadOnly": true},
        {"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}}
      ],
      "StopGracePeriod": 3000000000,
      "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000, "Timeout": 2000000000, "StartPeriod": 3000000000, "Retries": 3},
      "Hosts": ["10.0.0.1 db"],
      "DNSConfig": {"Nameservers": ["1.1.1.1"], "Search": ["example.org"], "Options": ["ndots:2"]},
      "Secrets": [{"File": {"Name": "s", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "sid", "SecretName": "s"}],
      "Configs": [{"File": {"Name": "/c", "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": "cid", "ConfigName": "c"}],
      "Sysctls": {"net.core.somaxconn": "1024"},
      "CapabilityAdd": ["CAP_NET_ADMIN"],
      "CapabilityDrop": ["CAP_MKNOD"],
      "Ulimits": [{"Name": "nofile", "Hard": 200, "Soft": 100}],
      "Isolation": "default",
      "OomScoreAdj": 100
    },
    "Resources": {
      "Limits": {"NanoCPUs": 500000000, "MemoryBytes": 67108864, "Pids": 50},
      "Reservations": {"NanoCPUs": 100000000, "MemoryBytes": 1048576, "GenericResources": [
        {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}},
        {"NamedResourceSpec": {"Kind": "ssd", "Value": "a"}}
      ]},
      "SwapBytes": 0,
      "MemorySwappiness": 10
    },
    "RestartPolicy": {"Condition": "on-failure", "Delay": 1000000000, "MaxAttempts": 3, "Window": 60000000000},
    "Placement": {
      "Constraints": ["node.role==worker"],
      "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
      "MaxReplicas": 2,
      "Platforms": [{"Architecture": "x86_64", "OS": "linux"}]
    },
    "Networks": [{"Target": "netid", "Aliases": ["web"], "DriverOpts": {"o": "1"}}],
    "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}},
    "ForceUpdate": 7,
    "Runtime": "container"
  },
  "Mode": {"Replicated": {"Replicas": 3}},
  "UpdateConfig": {"Parallelism": 2, "Delay": 1000000000, "FailureAction": "rollback", "Monitor": 2000000000, "MaxFailureRatio": 0.5, "Order": "start-first"},
  "RollbackConfig": {"Parallelism": 0, "FailureAction": "continue", "MaxFailureRatio": 0, "Order": "stop-first"},
  "EndpointSpec": {"Mode": "dnsrr", "Ports": [{"Name": "http", "Protocol": "udp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]}
}"#;

#[test]
fn every_field_round_trips() {
    let sent: Value = serde_json::from_str(FULL).unwrap();
    let spec = decode(FULL);
    let read = ServiceSpec::from_proto(&spec.to_proto().unwrap());
    assert_eq!(serde_json::to_value(&read).unwrap(), sent);
    assert_eq!(read, spec);
}

#[test]
fn a_process_service_shows_as_a_container_spec_and_round_trips() {
    let proto = v1::ServiceSpec {
        annotations: Some(v1::Annotations {
            name: "p".into(),
            labels: Vec::new(),
        }),
        task: Some(
            v1::TaskSpecFields {
                runtime: Some(v1::task_spec::Runtime::Process(Box::new(v1::ProcessSpec {
                    command: "sh".into(),
                    args: vec!["-c".into(), "echo hi".into()],
                    env: vec!["A=1".into()],
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        mode: Some(service_spec::Mode::Replicated(v1::ReplicatedService {
            replicas: 2,
        })),
        ..Default::default()
    };
    let docker = ServiceSpec::from_proto(&proto);
    let value = serde_json::to_value(&docker).unwrap();
    assert_eq!(
        value["TaskTemplate"],
        json!({"ContainerSpec":{"Command":["sh"],"Args":["-c","echo hi"],"Env":["A=1"]},
               "ForceUpdate":0}),
        "no Runtime: the docker CLI refuses to update a service whose Runtime is not container"
    );
    // `docker service scale p=3` sends it back with another count.
    let mut scaled: ServiceSpec = lenient::from_value(value).unwrap();
    scaled.mode.replicated = Some(spec::ReplicatedService { replicas: Some(3) });
    let back = scaled.to_proto_for(true).unwrap();
    assert_eq!(back.task, proto.task);
    // Said explicitly, it is a process on create too.
    let mut explicit = docker.clone();
    explicit.task_template.runtime = "process".into();
    assert_eq!(explicit.to_proto().unwrap().task, proto.task);
    // Container fields do not apply.
    let mut wrong = docker.clone();
    wrong.task_template.container_spec.as_mut().unwrap().image = "busybox".into();
    let e = wrong.to_proto_for(true).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("ContainerSpec.Image"), "{e:?}");
}

#[test]
fn spec_level_networks_move_into_the_task_template() {
    let spec = decode(
        r#"{"Name":"n","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Networks":[{"Target":"net1"}]}"#,
    )
    .to_proto()
    .unwrap();
    assert_eq!(spec.task.unwrap().networks[0].target, "net1");
}

fn refused(body: &str) -> crate::error::EngineError {
    match lenient::from_slice::<ServiceSpec>(body.as_bytes()) {
        Err(e) => e,
        Ok(spec) => spec.to_proto().expect_err(body),
    }
}

#[test]
fn bad_specs_are_refused_naming_the_field() {
    let cases: &[(&str, u16, &str)] = &[
        ("{", 400, "invalid JSON"),
        (r#"{"Name":3}"#, 400, "invalid JSON"),
        (
            r#"{"Name":"x","Mode":{"Sometimes":{}}}"#,
            400,
            "unknown service mode",
        ),
        (
            r#"{"Name":"x","Mode":{"Replicated":{"Replicas":-1}}}"#,
            400,
            "Mode.Replicated.Replicas",
        ),
        (
            r#"{"Name":"x","Mode":{"Replicated":{"Replicas":"2"}}}"#,
            400,
            "Mode.Replicated",
        ),
        (
            r#"{"Name":"x","Mode":{"Global":{},"Replicated":{}}}"#,
            400,
            "only one",
        ),
        (
            r#"{"Name":"x","Mode":{"ReplicatedJob":{"MaxConcurrent":-2}}}"#,
            400,
            "Mode.ReplicatedJob.MaxConcurrent",
        ),
        (
            r#"{"TaskTemplate":{"RestartPolicy":{"Condition":"sometimes"}}}"#,
            400,
            "TaskTemplate.RestartPolicy.Condition",
        ),
        (
            r#"{"UpdateConfig":{"FailureAction":"explode"}}"#,
            400,
            "UpdateConfig.FailureAction",
        ),
        (
            r#"{"RollbackConfig":{"Order":"random"}}"#,
            400,
            "RollbackConfig.Order",
        ),
        (
            r#"{"EndpointSpec":{"Mode":"rr"}}"#,
            400,
            "EndpointSpec.Mode",
        ),
        (
            r#"{"EndpointSpec":{"Ports":[{"Protocol":"icmp"}]}}"#,
            400,
            "EndpointSpec.Ports[0].Protocol",
        ),
        (
            r#"{"TaskTemplate":{"ContainerSpec":{"Mounts":[{"Type":"nfs"}]}}}"#,
            400,
            "TaskTemplate.ContainerSpec.Mounts[0].Type",
        ),
        (
            r#"{"TaskTemplate":{"Runtime":"wasm"}}"#,
            400,
            "TaskTemplate.Runtime",
        ),
        (
            r#"{"TaskTemplate":{"PluginSpec":{"Name":"p"}}}"#,
            501,
            "PluginSpec",
        ),
        (
            r#"{"TaskTemplate":{"ContainerSpec":{"Isolation":"hyperv"}}}"#,
            501,
            "Isolation",
        ),
        (
            r#"{"TaskTemplate":{"ContainerSpec":{"Privileges":{"CredentialSpec":{"File":"x"}}}}}"#,
            501,
            "CredentialSpec",
        ),
        (
            r#"{"TaskTemplate":{"ContainerSpec":{"Mounts":[{"Type":"bind","BindOptions":{"Propagation":"rshared"}}]}}}"#,
            501,
            "BindOptions",
        ),
        (
            r#"{"TaskTemplate":{"ContainerSpec":{"Configs":[{"Runtime":{},"ConfigName":"c"}]}}}"#,
            501,
            "Configs[0].Runtime",
        ),
    ];
    for (body, status, words) in cases {
        let e = refused(body);
        assert_eq!(e.status, *status, "{body}: {e:?}");
        assert!(
            e.message.contains(words),
            "{body}: {e:?} should say {words}"
        );
    }
}

#[test]
fn update_statuses_and_endpoints_render_as_moby_does() {
    let mut service = stored(decode(CLI_CREATE).to_proto().unwrap());
    service.previous_spec = service.spec.clone().map(Box::new);
    service.update_status = Some(v1::UpdateStatus {
        state: v1::update_status::UpdateState::RollbackStarted as i32,
        started_at: ts(1_700_000_050),
        completed_at: None,
        message: "manually requested rollback".into(),
    });
    service.endpoint = Some(v1::Endpoint {
        spec: Some(v1::EndpointSpec {
            mode: 0,
            ports: vec![v1::PortConfig {
                target_port: 80,
                ..Default::default()
            }],
        }),
        ports: vec![v1::PortConfig {
            target_port: 80,
            published_port: 30000,
            ..Default::default()
        }],
        virtual_ips: vec![v1::VirtualIp {
            network_id: "ingressid".into(),
            addr: "10.0.0.2/24".into(),
        }],
    });
    insta::assert_snapshot!(
        "service_with_update_status",
        pretty(&Service::from_proto(&service))
    );
}

#[test]
fn a_service_status_is_sent_only_when_set() {
    let mut service = shape(CLI_CREATE);
    assert!(
        serde_json::to_value(&service)
            .unwrap()
            .get("ServiceStatus")
            .is_none()
    );
    service.service_status = Some(ServiceStatus {
        running_tasks: 2,
        desired_tasks: 3,
        completed_tasks: 0,
    });
    assert_eq!(
        serde_json::to_value(&service).unwrap()["ServiceStatus"],
        json!({"RunningTasks":2,"DesiredTasks":3,"CompletedTasks":0})
    );
}

#[test]
fn an_empty_stored_spec_still_has_a_container_spec() {
    let service = Service::from_proto(&v1::Service::default());
    let value = serde_json::to_value(&service).unwrap();
    assert_eq!(value["Spec"]["TaskTemplate"]["ContainerSpec"], json!({}));
}
