use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use shoal_api::v1::{
    Annotations, Driver, EndpointSpec, IpamConfig, IpamOptions, Meta, Network,
    NetworkAttachmentConfig, NetworkSpec, PortConfig, Service, ServiceSpec, Task, TaskSpecFields,
    TaskState, TaskStatus, endpoint_spec, port_config,
};

use super::*;

const TCP: i32 = port_config::Protocol::Tcp as i32;
const UDP: i32 = port_config::Protocol::Udp as i32;

fn port(published: u32, target: u32) -> PortConfig {
    PortConfig {
        protocol: TCP,
        target_port: target,
        published_port: published,
        ..Default::default()
    }
}

fn host_port(published: u32, target: u32) -> PortConfig {
    PortConfig {
        publish_mode: port_config::PublishMode::Host as i32,
        ..port(published, target)
    }
}

fn endpoint(ports: Vec<PortConfig>) -> EndpointSpec {
    EndpointSpec {
        mode: endpoint_spec::ResolutionMode::Vip as i32,
        ports,
    }
}

fn network_spec(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: Vec::new(),
        }),
        ipam: (!subnet.is_empty()).then(|| IpamOptions {
            driver: None,
            configs: vec![IpamConfig {
                subnet: subnet.into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

/// A network object as the Control API stores it.
fn network(a: &mut Allocations, id: &str, name: &str, subnet: &str) -> Arc<Network> {
    let spec = network_spec(name, subnet);
    let ipam = a.allocate_network(id, &spec).unwrap();
    Arc::new(Network {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(spec),
        driver_state: None,
        ipam: Some(ipam),
        pending_delete: false,
    })
}

fn service(id: &str, name: &str, networks: &[&str], ports: Vec<PortConfig>) -> Service {
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: Vec::new(),
            }),
            task: Some(
                TaskSpecFields {
                    networks: networks
                        .iter()
                        .map(|n| NetworkAttachmentConfig {
                            target: n.to_string(),
                            aliases: vec![name.to_string()],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
                .into(),
            ),
            endpoint: Some(endpoint(ports)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(id: &str, service_id: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        service_id: service_id.into(),
        status: Some(TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn published(s: &Service) -> Vec<u32> {
    s.endpoint
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| p.published_port)
        .collect()
}

#[test]
fn ingress_ports_are_unique_and_dynamic_ones_come_from_30000() {
    let mut a = Allocations::new();
    let mut web = service("w1", "web", &[], vec![port(8080, 80), port(0, 443)]);
    a.allocate_service(&mut web).unwrap();
    assert_eq!(published(&web), [8080, 30000]);

    // The same port published by another service: refused, naming the holder.
    let mut api = service("a1", "api", &[], vec![port(0, 80), port(8080, 8080)]);
    let e = a.allocate_service(&mut api).unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::FailedPrecondition);
    assert_eq!(
        e.to_string(),
        "port 8080/tcp is already published by service web (ID w1); choose another published \
         port, or leave it out to get a free one"
    );
    assert!(api.endpoint.is_none(), "a refusal changes nothing");
    // ... nothing at all: 30001 is still the next dynamic port.
    let mut api = service("a1", "api", &[], vec![port(0, 80)]);
    a.allocate_service(&mut api).unwrap();
    assert_eq!(published(&api), [30001]);

    // The same number over UDP is another port.
    let mut dns = service(
        "d1",
        "dns",
        &[],
        vec![PortConfig {
            protocol: UDP,
            ..port(8080, 53)
        }],
    );
    a.allocate_service(&mut dns).unwrap();
    assert_eq!(published(&dns), [8080]);
    assert_eq!(a.port_holder(UDP, 8080), Some("d1"));
    assert_eq!(a.port_holder(TCP, 8080), Some("w1"));
}

#[test]
fn an_update_keeps_the_ports_a_service_holds() {
    let mut a = Allocations::new();
    let mut web = service("w1", "web", &[], vec![port(0, 80), port(0, 443)]);
    a.allocate_service(&mut web).unwrap();
    assert_eq!(published(&web), [30000, 30001]);
    let mut other = service("o1", "other", &[], vec![port(0, 80)]);
    a.allocate_service(&mut other).unwrap();
    assert_eq!(published(&other), [30002]);

    // Rebuilt from the objects (a new transaction), the update keeps 30001 for 443 and
    // frees 30000, which the new target gets.
    let services = [Arc::new(web.clone()), Arc::new(other.clone())];
    let mut a = Allocations::from_objects([], &services, []);
    let mut updated = service("w1", "web", &[], vec![port(0, 443), port(0, 8443)]);
    updated.endpoint = web.endpoint.clone();
    a.allocate_service(&mut updated).unwrap();
    assert_eq!(published(&updated), [30001, 30000]);

    // Publishing its own port again explicitly is no conflict.
    let mut again = service("w1", "web", &[], vec![port(30001, 443)]);
    a.allocate_service(&mut again).unwrap();
    assert_eq!(published(&again), [30001]);
    // Ports it gave up are free for others.
    let mut taker = service("t1", "taker", &[], vec![port(30000, 1)]);
    a.allocate_service(&mut taker).unwrap();
}

#[test]
fn duplicates_dnsrr_and_exhaustion_are_refused() {
    let mut a = Allocations::new();
    let mut dup = service("s1", "dup", &[], vec![port(8080, 80), port(8080, 81)]);
    let e = a.allocate_service(&mut dup).unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::InvalidArgument);
    assert!(
        e.to_string()
            .contains("port 8080/tcp is published more than once")
    );
    // A host port and an ingress port on the same number clash on every node.
    let mut dup = service("s1", "dup", &[], vec![port(8080, 80), host_port(8080, 81)]);
    assert!(a.allocate_service(&mut dup).is_err());

    let mut rr = service("s2", "rr", &[], vec![port(0, 80)]);
    rr.spec.as_mut().unwrap().endpoint.as_mut().unwrap().mode =
        endpoint_spec::ResolutionMode::Dnsrr as i32;
    assert_eq!(
        a.allocate_service(&mut rr).unwrap_err(),
        AllocError::IngressWithDnsrr
    );

    let range = (DYNAMIC_PORT_END - DYNAMIC_PORT_START + 1) as usize;
    let mut big = service("b1", "big", &[], vec![]);
    big.spec.as_mut().unwrap().endpoint = Some(endpoint(
        (0..range as u32).map(|i| port(0, i + 1)).collect(),
    ));
    a.allocate_service(&mut big).unwrap();
    assert_eq!(published(&big).last(), Some(&DYNAMIC_PORT_END));
    let mut one_more = service("m1", "more", &[], vec![port(0, 80)]);
    let e = a.allocate_service(&mut one_more).unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::ResourceExhausted);
    assert!(e.to_string().contains("no free tcp port left"), "{e}");
    // Given ports outside the range still work.
    let mut fixed = service("m1", "more", &[], vec![port(80, 80)]);
    a.allocate_service(&mut fixed).unwrap();
}

#[test]
fn host_mode_ports_are_not_allocated_cluster_wide() {
    let mut a = Allocations::new();
    let mut one = service("s1", "one", &[], vec![host_port(8080, 80)]);
    let mut two = service(
        "s2",
        "two",
        &[],
        vec![host_port(8080, 80), host_port(0, 81)],
    );
    a.allocate_service(&mut one).unwrap();
    a.allocate_service(&mut two).unwrap();
    assert_eq!(published(&two), [8080, 0]);
    assert_eq!(a.port_holder(TCP, 8080), None);
    // And an ingress port on the number a host port uses elsewhere is the scheduler's
    // business (it keeps such tasks apart), not a cluster-wide conflict.
    let mut three = service("s3", "three", &[], vec![port(8080, 80)]);
    a.allocate_service(&mut three).unwrap();
}

#[test]
fn networks_take_free_subnets_and_refuse_overlaps() {
    let mut a = Allocations::new();
    let first = a.allocate_network("n1", &network_spec("one", "")).unwrap();
    assert_eq!(first.configs[0].subnet, "10.0.0.0/24");
    assert_eq!(first.configs[0].gateway, "10.0.0.1");
    a.allocate_network("n2", &network_spec("two", "10.0.1.0/24"))
        .unwrap();
    let big = a
        .allocate_network("n3", &network_spec("big", "10.0.4.0/22"))
        .unwrap();
    assert_eq!(big.configs[0].gateway, "10.0.4.1");
    let next = a.allocate_network("n4", &network_spec("four", "")).unwrap();
    assert_eq!(next.configs[0].subnet, "10.0.2.0/24");
    a.allocate_network("n5", &network_spec("five", "")).unwrap();
    let skip = a.allocate_network("n6", &network_spec("six", "")).unwrap();
    assert_eq!(skip.configs[0].subnet, "10.0.8.0/24", "past the /22");
    let outside = a
        .allocate_network("n7", &network_spec("outside", "192.168.5.0/24"))
        .unwrap();
    assert_eq!(outside.configs[0].gateway, "192.168.5.1");

    let e = a
        .allocate_network("x", &network_spec("x", "10.0.5.128/25"))
        .unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::FailedPrecondition);
    assert_eq!(
        e.to_string(),
        "subnet 10.0.5.128/25 overlaps subnet 10.0.4.0/22 of network big; choose another subnet"
    );
    let e = a
        .allocate_network("x", &network_spec("x", "10.0.0.0/8"))
        .unwrap_err();
    assert!(matches!(e, AllocError::SubnetOverlap { .. }));

    let mut spec = network_spec("x", "");
    spec.driver_config = Some(Driver {
        name: "bridge".into(),
        options: Default::default(),
    });
    let e = a.allocate_network("x", &spec).unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::InvalidArgument);
    assert!(e.to_string().contains("\"bridge\" is not supported"), "{e}");
    let mut spec = network_spec("x", "");
    spec.ipv6_enabled = true;
    assert!(a.allocate_network("x", &spec).is_err());
    for bad in ["10.9.0.1/24", "fd00::/64", "nonsense"] {
        let e = a
            .allocate_network("x", &network_spec("x", bad))
            .unwrap_err();
        assert_eq!(e.class(), AllocErrorClass::InvalidArgument, "{bad}: {e}");
    }
    let mut spec = network_spec("x", "10.9.0.0/24");
    spec.ipam.as_mut().unwrap().configs[0].gateway = "10.9.1.1".into();
    assert!(a.allocate_network("x", &spec).is_err());
    // None of the refusals took a subnet.
    let after = a
        .allocate_network("n8", &network_spec("eight", ""))
        .unwrap();
    assert_eq!(after.configs[0].subnet, "10.0.9.0/24");
    // A removed network's subnet is free again.
    a.release_network("n1");
    let again = a.allocate_network("n9", &network_spec("nine", "")).unwrap();
    assert_eq!(again.configs[0].subnet, "10.0.0.0/24");
}

#[test]
fn services_get_a_vip_and_tasks_an_address_per_network() {
    let mut a = Allocations::new();
    let front = network(&mut a, "nf", "front", "10.0.9.0/24");
    let back = network(&mut a, "nb", "back", "");
    let mut web = service("w1", "web", &["nf", "nb"], vec![]);
    a.allocate_service(&mut web).unwrap();
    let vips = &web.endpoint.as_ref().unwrap().virtual_ips;
    assert_eq!(
        vips.iter()
            .map(|v| (v.network_id.as_str(), v.addr.as_str()))
            .collect::<Vec<_>>(),
        [("nf", "10.0.9.2/24"), ("nb", "10.0.0.2/24")]
    );
    let mut t1 = task("t1", "w1");
    a.allocate_task(&web, &mut t1).unwrap();
    assert_eq!(t1.networks.len(), 2);
    assert_eq!(t1.networks[0].network_id, "nf");
    assert_eq!(t1.networks[0].addresses, ["10.0.9.3/24"]);
    assert_eq!(t1.networks[0].aliases, ["web"]);
    assert_eq!(t1.networks[1].addresses, ["10.0.0.3/24"]);
    assert_eq!(t1.endpoint.as_deref(), web.endpoint.as_ref());
    // Allocating again keeps what the task holds.
    a.allocate_task(&web, &mut t1).unwrap();
    assert_eq!(t1.networks[0].addresses, ["10.0.9.3/24"]);
    let mut t2 = task("t2", "w1");
    a.allocate_task(&web, &mut t2).unwrap();
    assert_eq!(t2.networks[0].addresses, ["10.0.9.4/24"]);

    // Rebuilt from the store: t1 was removed, t2 ended (its address is free too), so the
    // next task gets the lowest address again; the gateway and the VIP stay taken.
    let mut ended = t2.clone();
    ended.status.as_mut().unwrap().state = TaskState::Failed as i32;
    let mut a = Allocations::from_objects(
        &[front.clone(), back.clone()],
        &[Arc::new(web.clone())],
        &[Arc::new(ended)],
    );
    assert_eq!(a.addresses_in_use("nf"), 2);
    let mut t3 = task("t3", "w1");
    a.allocate_task(&web, &mut t3).unwrap();
    assert_eq!(t3.networks[0].addresses, ["10.0.9.3/24"]);
    assert_eq!(a.guards().len(), 2, "both networks were allocated from");

    // DNS round-robin services have no VIP; their tasks still get addresses.
    let mut rr = service("r1", "rr", &["nf"], vec![]);
    rr.spec.as_mut().unwrap().endpoint.as_mut().unwrap().mode =
        endpoint_spec::ResolutionMode::Dnsrr as i32;
    a.allocate_service(&mut rr).unwrap();
    assert!(rr.endpoint.as_ref().unwrap().virtual_ips.is_empty());

    // A service leaving a network releases its VIP there.
    let mut moved = service("w1", "web", &["nb"], vec![]);
    moved.endpoint = web.endpoint.clone();
    a.allocate_service(&mut moved).unwrap();
    assert_eq!(moved.endpoint.as_ref().unwrap().virtual_ips.len(), 1);
    assert_eq!(
        moved.endpoint.as_ref().unwrap().virtual_ips[0].addr,
        "10.0.0.2/24"
    );

    let mut lost = service("l1", "lost", &["nope"], vec![]);
    let e = a.allocate_service(&mut lost).unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::NotFound);
}

#[test]
fn a_full_network_refuses_and_changes_nothing() {
    let mut a = Allocations::new();
    network(&mut a, "big", "big", "10.1.0.0/24");
    network(&mut a, "tiny", "tiny", "10.2.0.0/30");
    let mut s = service("s1", "s", &["big", "tiny"], vec![port(0, 80)]);
    a.allocate_service(&mut s).unwrap();
    // The gateway and the VIP fill the /30.
    let before = a.addresses_in_use("big");
    let mut t = task("t1", "s1");
    let e = a.allocate_task(&s, &mut t).unwrap_err();
    assert_eq!(e.class(), AllocErrorClass::ResourceExhausted);
    assert_eq!(
        e.to_string(),
        "no free address left in network tiny (subnet 10.2.0.0/30)"
    );
    assert!(t.networks.is_empty());
    assert_eq!(a.addresses_in_use("big"), before, "nothing taken on big");
    // A second service cannot get a VIP there either, and keeps no port.
    let mut s2 = service("s2", "s2", &["tiny"], vec![port(0, 80)]);
    assert!(a.allocate_service(&mut s2).is_err());
    assert_eq!(a.port_holder(TCP, 30001), None);
}

#[test]
fn the_ingress_network_is_created_once_and_guards_ports() {
    let mut a = Allocations::new();
    let spec = service("w1", "web", &[], vec![port(8080, 80)])
        .spec
        .unwrap();
    let ingress = ensure_ingress(&mut a, &spec).unwrap().unwrap();
    let ingress = Arc::new(ingress);
    assert_eq!(network_name(&ingress), INGRESS_NETWORK);
    assert!(ensure_ingress(&mut a, &spec).unwrap().is_none());
    let no_ports = service("x", "x", &[], vec![host_port(80, 80)])
        .spec
        .unwrap();
    let mut fresh = Allocations::new();
    assert!(ensure_ingress(&mut fresh, &no_ports).unwrap().is_none());

    // In a later transaction: the service gets a VIP on ingress, its tasks an address, and
    // the ingress network is a guard.
    let mut a = Allocations::from_objects(std::slice::from_ref(&ingress), [], []);
    let mut web = service("w1", "web", &[], vec![port(8080, 80)]);
    a.allocate_service(&mut web).unwrap();
    let vips = &web.endpoint.as_ref().unwrap().virtual_ips;
    assert_eq!(vips.len(), 1);
    assert_eq!(vips[0].addr, "10.0.0.2/24");
    let mut t = task("t1", "w1");
    a.allocate_task(&web, &mut t).unwrap();
    assert_eq!(t.networks[0].network_id, ingress.meta.as_ref().unwrap().id);
    assert_eq!(a.guards().len(), 1);
    // A user network never takes the ingress subnet.
    let n = a.allocate_network("n1", &network_spec("n", "")).unwrap();
    assert_eq!(n.configs[0].subnet, "10.0.1.0/24");
}

// --- Random sequences ----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Allocate (or re-allocate) service `s` with these ports (0 = dynamic) on these networks.
    Service(u8, Vec<u32>, Vec<u8>),
    RemoveService(u8),
    /// A task of service `s`.
    Task(u8, u8),
    RemoveTask(u8),
    /// Rebuild from the objects (a new transaction, or a new leader).
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    // Few services, ports and networks, so that conflicts and reuse are frequent.
    let ports = prop::collection::vec(prop_oneof![Just(0u32), 8080u32..8084], 0..3);
    let networks = prop::collection::vec(0u8..3, 0..3);
    prop_oneof![
        4 => (0u8..4, ports, networks).prop_map(|(s, p, n)| Op::Service(s, p, n)),
        1 => (0u8..4).prop_map(Op::RemoveService),
        6 => (0u8..4, 0u8..24).prop_map(|(s, t)| Op::Task(s, t)),
        2 => (0u8..24).prop_map(Op::RemoveTask),
        1 => Just(Op::Rebuild),
    ]
}

/// The model "store": the objects as written after each successful allocation.
#[derive(Default)]
struct World {
    networks: Vec<Arc<Network>>,
    services: BTreeMap<String, Service>,
    tasks: BTreeMap<String, Task>,
}

impl World {
    fn check(&self) {
        let mut ports = HashSet::new();
        for s in self.services.values() {
            for p in &s.endpoint.as_ref().unwrap().ports {
                if is_ingress(p) {
                    assert!(
                        (p.published_port != 0) && ports.insert((p.protocol, p.published_port)),
                        "port {} handed out twice",
                        p.published_port
                    );
                }
            }
        }
        let mut addrs = HashSet::new();
        for s in self.services.values() {
            for v in &s.endpoint.as_ref().unwrap().virtual_ips {
                assert!(
                    addrs.insert((v.network_id.clone(), v.addr.clone())),
                    "{v:?} twice"
                );
            }
        }
        for t in self.tasks.values() {
            for n in &t.networks {
                for addr in &n.addresses {
                    assert!(
                        addrs.insert((n.network_id.clone(), addr.clone())),
                        "{addr} on {} twice",
                        n.network_id
                    );
                    // Never the gateway (the first address) nor outside the subnet.
                    assert!(
                        !["10.0.0.1/27", "10.0.0.33/27", "10.0.0.65/27"].contains(&addr.as_str()),
                        "{addr} is a gateway"
                    );
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn random_sequences_never_hand_out_a_port_or_address_twice(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let mut world = World::default();
        let mut a = Allocations::new();
        // Small subnets, so that they fill up: a /27 has 30 host addresses.
        for (i, subnet) in ["10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27"].iter().enumerate() {
            world.networks.push(network(&mut a, &format!("n{i}"), &format!("net{i}"), subnet));
        }
        for op in ops {
            match op {
                Op::Service(s, ports, networks) => {
                    let id = format!("s{s}");
                    let nets: Vec<String> = networks.iter().map(|n| format!("n{n}")).collect();
                    let nets: Vec<&str> = {
                        let mut seen = Vec::new();
                        for n in &nets {
                            if !seen.contains(&n.as_str()) {
                                seen.push(n.as_str());
                            }
                        }
                        seen
                    };
                    let ports = ports.iter().enumerate().map(|(i, &p)| port(p, 80 + i as u32)).collect();
                    let mut next = service(&id, &id, &nets, ports);
                    next.endpoint = world.services.get(&id).and_then(|s| s.endpoint.clone());
                    if a.allocate_service(&mut next).is_ok() {
                        world.services.insert(id, next);
                    }
                }
                Op::RemoveService(s) => {
                    let id = format!("s{s}");
                    if world.services.remove(&id).is_some() {
                        a.release_service(&id);
                    }
                }
                Op::Task(s, t) => {
                    let id = format!("t{t}");
                    let Some(service) = world.services.get(&format!("s{s}")) else { continue };
                    if world.tasks.contains_key(&id) {
                        continue;
                    }
                    let mut task = task(&id, &format!("s{s}"));
                    if a.allocate_task(service, &mut task).is_ok() {
                        world.tasks.insert(id, task);
                    } else {
                        prop_assert!(task.networks.is_empty());
                    }
                }
                Op::RemoveTask(t) => {
                    let id = format!("t{t}");
                    if world.tasks.remove(&id).is_some() {
                        a.release_task(&id);
                    }
                }
                Op::Rebuild => {
                    let services: Vec<Arc<Service>> =
                        world.services.values().cloned().map(Arc::new).collect();
                    let tasks: Vec<Arc<Task>> =
                        world.tasks.values().cloned().map(Arc::new).collect();
                    a = Allocations::from_objects(&world.networks, &services, &tasks);
                    prop_assert!(a.inconsistencies().is_empty(), "{:?}", a.inconsistencies());
                }
            }
            world.check();
        }
    }
}
