use proptest::prelude::*;

use super::*;
use crate::v1::{
    Annotations, ContainerSpec, GenericResource, Mount, PortConfig, ProcessSpec, ReplicatedService,
    SecretReference, generic_resource,
};

fn process_service(name: &str) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            ..Default::default()
        }),
        task: Some(
            v1::TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sleep".into(),
                    args: vec!["1d".into()],
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 3,
        })),
        ..Default::default()
    }
}

fn container_service(name: &str) -> ServiceSpec {
    let mut spec = process_service(name);
    spec.task.as_mut().unwrap().runtime =
        Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        })));
    spec
}

fn field_of(spec: &ServiceSpec) -> String {
    validate_service_spec(spec)
        .expect_err("spec should be refused")
        .field
}

fn container(spec: &mut ServiceSpec) -> &mut ContainerSpec {
    match spec.task.as_mut().unwrap().runtime.as_mut().unwrap() {
        task_spec::Runtime::Container(c) => c,
        _ => panic!("not a container spec"),
    }
}

#[test]
fn valid_specs_pass() {
    validate_service_spec(&process_service("web")).unwrap();
    validate_service_spec(&container_service("web-1_a")).unwrap();
}

#[test]
fn names_are_checked() {
    assert_eq!(field_of(&process_service("")), "spec.annotations.name");
    assert_eq!(field_of(&process_service("-web")), "spec.annotations.name");
    assert_eq!(field_of(&process_service("web-")), "spec.annotations.name");
    assert_eq!(field_of(&process_service("we b")), "spec.annotations.name");
    assert_eq!(field_of(&process_service("web.1")), "spec.annotations.name");
    assert_eq!(
        field_of(&process_service(&"a".repeat(64))),
        "spec.annotations.name"
    );
    validate_service_spec(&process_service(&"a".repeat(63))).unwrap();
    let err = validate_service_spec(&process_service(&"a".repeat(64))).unwrap_err();
    assert!(err.to_string().contains("the limit is 63"), "{err}");
}

#[test]
fn negative_counts_are_refused() {
    let mut spec = process_service("web");
    spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: u64::MAX,
    }));
    assert_eq!(field_of(&spec), "spec.mode.replicated.replicas");
    spec.mode = Some(service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
        max_concurrent: 1,
        total_completions: (-5i64) as u64,
    }));
    assert_eq!(
        field_of(&spec),
        "spec.mode.replicated_job.total_completions"
    );
    spec.mode = None;
    assert_eq!(field_of(&spec), "spec.mode");
    let mut spec = process_service("web");
    spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: 0,
    }));
    validate_service_spec(&spec).unwrap();
}

#[test]
fn resources_have_minimums() {
    let mut spec = process_service("web");
    let task = spec.task.as_mut().unwrap();
    task.resources = Some(Box::new(ResourceRequirements {
        limits: Some(Resources {
            nano_cpus: 999_999,
            ..Default::default()
        }),
        ..Default::default()
    }));
    assert_eq!(field_of(&spec), "spec.task.resources.limits.nano_cpus");
    let task = spec.task.as_mut().unwrap();
    task.resources = Some(Box::new(ResourceRequirements {
        reservations: Some(Resources {
            memory_bytes: (4 << 20) - 1,
            ..Default::default()
        }),
        ..Default::default()
    }));
    let err = validate_service_spec(&spec).unwrap_err();
    assert_eq!(err.field, "spec.task.resources.reservations.memory_bytes");
    assert!(err.message.contains("at least 4MiB"), "{err}");
    let task = spec.task.as_mut().unwrap();
    task.resources = Some(Box::new(ResourceRequirements {
        limits: Some(Resources {
            nano_cpus: 1_000_000,
            memory_bytes: 4 << 20,
            ..Default::default()
        }),
        reservations: Some(Resources {
            generic: vec![GenericResource {
                resource: Some(generic_resource::Resource::Discrete(
                    v1::DiscreteGenericResource {
                        kind: "gpu".into(),
                        value: -1,
                    },
                )),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }));
    assert_eq!(
        field_of(&spec),
        "spec.task.resources.reservations.generic[0].value"
    );
}

#[test]
fn runtimes_need_an_image_or_a_command() {
    let mut spec = process_service("web");
    spec.task.as_mut().unwrap().runtime = None;
    assert_eq!(field_of(&spec), "spec.task.runtime");
    let mut spec = container_service("web");
    container(&mut spec).image = "".into();
    assert_eq!(field_of(&spec), "spec.task.container.image");
    let mut spec = process_service("web");
    if let Some(task_spec::Runtime::Process(p)) = spec.task.as_mut().unwrap().runtime.as_mut() {
        p.command = " ".into();
    }
    assert_eq!(field_of(&spec), "spec.task.process.command");
}

#[test]
fn duplicates_are_refused() {
    let mut spec = container_service("web");
    let mount = Mount {
        source: "/data".into(),
        target: "/data".into(),
        ..Default::default()
    };
    container(&mut spec).mounts = vec![mount.clone(), mount];
    assert_eq!(field_of(&spec), "spec.task.container.mounts[1].target");

    let mut spec = container_service("web");
    let port = PortConfig {
        target_port: 80,
        published_port: 8080,
        ..Default::default()
    };
    spec.endpoint = Some(EndpointSpec {
        ports: vec![port.clone(), port],
        ..Default::default()
    });
    let err = validate_service_spec(&spec).unwrap_err();
    assert_eq!(err.field, "spec.endpoint.ports[1].published_port");
    assert!(err.message.contains("8080/tcp"), "{err}");

    let mut spec = container_service("web");
    let secret = SecretReference {
        secret_id: "abc".into(),
        secret_name: "pw".into(),
        ..Default::default()
    };
    container(&mut spec).secrets = vec![secret.clone(), secret];
    assert_eq!(field_of(&spec), "spec.task.container.secrets[1].file.name");
}

#[test]
fn ingress_ports_cannot_use_dnsrr() {
    let mut spec = container_service("web");
    spec.endpoint = Some(EndpointSpec {
        mode: endpoint_spec::ResolutionMode::Dnsrr as i32,
        ports: vec![PortConfig {
            target_port: 80,
            ..Default::default()
        }],
    });
    assert_eq!(field_of(&spec), "spec.endpoint.ports[0].publish_mode");
}

#[test]
fn unknown_enum_values_are_refused() {
    let mut spec = process_service("web");
    spec.update = Some(UpdateConfig {
        failure_action: 9,
        ..Default::default()
    });
    let err = validate_service_spec(&spec).unwrap_err();
    assert_eq!(err.field, "spec.update.failure_action");
    assert!(err.message.contains("pause, continue, rollback"), "{err}");
    let node = NodeSpec {
        availability: 7,
        ..Default::default()
    };
    assert_eq!(
        validate_node_spec(&node).unwrap_err().field,
        "spec.availability"
    );
}

#[test]
fn update_config_ranges() {
    let mut spec = process_service("web");
    spec.rollback = Some(UpdateConfig {
        max_failure_ratio: 1.5,
        ..Default::default()
    });
    assert_eq!(field_of(&spec), "spec.rollback.max_failure_ratio");
    spec.rollback = Some(UpdateConfig {
        delay: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        ..Default::default()
    });
    assert_eq!(field_of(&spec), "spec.rollback.delay");
    let mut spec = process_service("web");
    spec.mode = Some(service_spec::Mode::GlobalJob(v1::GlobalJob {}));
    spec.update = Some(UpdateConfig::default());
    assert_eq!(field_of(&spec), "spec.update");
}

#[test]
fn healthchecks_need_at_least_a_millisecond() {
    let mut spec = container_service("web");
    container(&mut spec).healthcheck = Some(Box::new(HealthConfig {
        interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000,
        }),
        ..Default::default()
    }));
    assert_eq!(field_of(&spec), "spec.task.container.healthcheck.interval");
}

#[test]
fn constraints_are_parsed() {
    assert_eq!(
        parse_constraint("node.labels.zone == east").unwrap(),
        Constraint {
            key: "node.labels.zone".into(),
            equal: true,
            value: "east".into()
        }
    );
    assert!(!parse_constraint("node.role!=manager").unwrap().equal);
    assert!(parse_constraint("node.labels.zone").is_err());
    assert!(parse_constraint("node.color==red").is_err());
    assert!(parse_constraint("node.labels.==x").is_err());
    assert!(parse_constraint("node.id==").is_err());
    let mut spec = process_service("web");
    spec.task.as_mut().unwrap().placement = Some(Box::new(Placement {
        constraints: vec!["node.role==manager".into(), "nodes.role==x".into()],
        ..Default::default()
    }));
    assert_eq!(field_of(&spec), "spec.task.placement.constraints[1]");
}

#[test]
fn mode_and_name_are_immutable() {
    let old = process_service("web");
    let mut new = old.clone();
    new.mode = Some(service_spec::Mode::Global(v1::GlobalService {}));
    let err = validate_service_update(&old, &new).unwrap_err();
    assert!(
        err.message.contains("service mode change is not allowed"),
        "{err}"
    );
    let renamed = process_service("api");
    assert!(
        validate_service_update(&old, &renamed)
            .unwrap_err()
            .message
            .contains("renaming")
    );
    let mut scaled = old.clone();
    scaled.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: 9,
    }));
    validate_service_update(&old, &scaled).unwrap();
}

#[test]
fn secret_and_config_sizes() {
    let secret = |len: usize| SecretSpec {
        annotations: Some(Annotations {
            name: "db.password".into(),
            ..Default::default()
        }),
        data: vec![1; len],
        ..Default::default()
    };
    validate_secret_spec(&secret(1)).unwrap();
    validate_secret_spec(&secret(500 * 1024 - 1)).unwrap();
    let err = validate_secret_spec(&secret(500 * 1024)).unwrap_err();
    assert_eq!(err.field, "spec.data");
    assert!(err.message.contains("less than 500KiB"), "{err}");
    assert!(validate_secret_spec(&secret(0)).is_err());
    let config = |len: usize| ConfigSpec {
        annotations: Some(Annotations {
            name: "app.conf".into(),
            ..Default::default()
        }),
        data: vec![1; len],
        ..Default::default()
    };
    validate_config_spec(&config(1000 * 1024 - 1)).unwrap();
    assert!(validate_config_spec(&config(1000 * 1024)).is_err());
}

#[test]
fn networks_and_clusters() {
    let mut net = NetworkSpec {
        annotations: Some(Annotations {
            name: "backend".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    validate_network_spec(&net).unwrap();
    net.ipam = Some(v1::IpamOptions {
        configs: vec![v1::IpamConfig {
            subnet: "10.0.9.0/33".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(
        validate_network_spec(&net).unwrap_err().field,
        "spec.ipam.configs[0].subnet"
    );
    net.ipam = None;
    net.driver_config = Some(v1::Driver {
        name: "bridge".into(),
        ..Default::default()
    });
    assert_eq!(
        validate_network_spec(&net).unwrap_err().field,
        "spec.driver_config.name"
    );

    let cluster = ClusterSpec {
        ca_config: Some(v1::CaConfig {
            node_cert_expiry: Some(prost_types::Duration {
                seconds: 1800,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = validate_cluster_spec(&cluster).unwrap_err();
    assert_eq!(e.field, "spec.ca_config.node_cert_expiry");
    assert!(e.message.contains("at least 1 hour"), "{e}");
    // A lower minimum (a manager's test knob) accepts it, and says its own figure.
    validate_cluster_spec_with(&cluster, std::time::Duration::from_secs(5)).unwrap();
    let e =
        validate_cluster_spec_with(&cluster, std::time::Duration::from_secs(3 * 3600)).unwrap_err();
    assert!(e.message.contains("at least 3 hours"), "{e}");
    assert_eq!(
        spoken_duration(std::time::Duration::from_secs(5)),
        "5 seconds"
    );
    assert_eq!(
        spoken_duration(std::time::Duration::from_secs(90 * 60)),
        "90 minutes"
    );
    assert_eq!(
        spoken_duration(std::time::Duration::from_millis(1500)),
        "1.5 seconds"
    );
}

/// The name rule written as SwarmKit writes it: `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`, ≤ 63.
fn reference_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 63 || !b[0].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 1;
    while i < b.len() {
        while i < b.len() && (b[i] == b'-' || b[i] == b'_') {
            i += 1;
        }
        if i >= b.len() || !b[i].is_ascii_alphanumeric() {
            return false;
        }
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
    }
    true
}

proptest! {
    #[test]
    fn name_rule_matches_swarmkit(name in "[a-zA-Z0-9_.\\- ]{0,70}") {
        prop_assert_eq!(validate_name("n", &name).is_ok(), reference_name_ok(&name));
    }

    #[test]
    fn replicas_accepted_iff_they_fit_in_i64(replicas in any::<u64>()) {
        let mut spec = process_service("web");
        spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService { replicas }));
        prop_assert_eq!(validate_service_spec(&spec).is_ok(), replicas <= i64::MAX as u64);
    }

    #[test]
    fn resources_accepted_iff_zero_or_above_minimum(cpus in -10i64..3_000_000, mem in -10i64..(8 << 20)) {
        let mut spec = process_service("web");
        spec.task.as_mut().unwrap().resources = Some(Box::new(ResourceRequirements {
            limits: Some(Resources { nano_cpus: cpus, memory_bytes: mem, ..Default::default() }),
            ..Default::default()
        }));
        let ok = (cpus == 0 || cpus >= 1_000_000) && (mem == 0 || mem >= 4 << 20);
        prop_assert_eq!(validate_service_spec(&spec).is_ok(), ok);
    }

    /// Validation never panics, whatever the bytes decode to.
    #[test]
    fn arbitrary_specs_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use prost::Message;
        if let Ok(spec) = ServiceSpec::decode(bytes.as_slice()) {
            let _ = validate_service_spec(&spec);
            let _ = validate_service_update(&process_service("web"), &spec);
        }
    }
}
