//! Golden-script tests of the allocator: each file in `testscripts/` is one test.
//! Regenerate with `UPDATE_GOLDENFILES=1 cargo test -p shoal-manager allocator`.
//!
//! The runner keeps the objects a store would hold (networks, services, tasks as last
//! allocated) and one [`Allocations`] working on them, as a Control API transaction does.
//! Commands:
//! - `network id=N [subnet=CIDR] [gateway=IP] [driver=D]`: allocates a network named N;
//!   prints its subnet and gateway.
//! - `network-remove N`
//! - `service id=S [port=[P:]T[/udp]]... [host=P:T[/udp]]... [net=N]... [dnsrr]`:
//!   allocates (or re-allocates, as an update) service S; prints its ports and VIPs. (Values
//!   with a colon are quoted: `port='8080:80'`.)
//! - `service-remove S`
//! - `task id=T service=S`: allocates a new task of S; prints its addresses.
//! - `task-remove T`, `task-end T` (its status becomes FAILED: it holds nothing).
//! - `rebuild`: builds the allocations again from the objects (a new transaction or leader).
//! - `ingress`: creates the ingress network if none exists and a service needs it.
//!
//! A refused allocation prints `error (CLASS): message` and changes nothing.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;

use goldenscript::{Argument, Command, Context};
use shoal_api::v1::{
    Annotations, Driver, EndpointSpec, IpamConfig, IpamOptions, Meta, Network,
    NetworkAttachmentConfig, NetworkSpec, PortConfig, Service, ServiceSpec, Task, TaskSpecFields,
    TaskState, TaskStatus, endpoint_spec, port_config,
};

use super::{AllocError, Allocations, ensure_ingress, port_name};

#[derive(Default)]
struct Runner {
    allocations: Allocations,
    networks: BTreeMap<String, Arc<Network>>,
    services: BTreeMap<String, Service>,
    tasks: BTreeMap<String, Task>,
}

fn keys<'a>(command: &'a Command, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    command.args.iter().filter_map(move |a| match a {
        Argument::KeyValue(k, v) if k == name => Some(v.as_str()),
        _ => None,
    })
}

fn key<'a>(command: &'a Command, name: &'a str) -> Option<&'a str> {
    keys(command, name).last()
}

fn flag(command: &Command, name: &str) -> bool {
    command
        .args
        .iter()
        .any(|a| matches!(a, Argument::Positional(v) if v == name))
}

fn positional(command: &Command) -> Vec<&str> {
    command
        .args
        .iter()
        .filter_map(|a| match a {
            Argument::Positional(v) => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

fn refusal(e: &AllocError) -> String {
    format!("error ({:?}): {e}\n", e.class())
}

/// `[P:]T[/proto]`.
fn parse_port(s: &str, mode: port_config::PublishMode) -> Result<PortConfig, Box<dyn Error>> {
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let protocol = match proto {
        "tcp" => port_config::Protocol::Tcp,
        "udp" => port_config::Protocol::Udp,
        other => return Err(format!("unknown protocol {other}").into()),
    };
    let (published, target) = ports.split_once(':').unwrap_or(("0", ports));
    Ok(PortConfig {
        protocol: protocol as i32,
        target_port: target.parse()?,
        published_port: published.parse()?,
        publish_mode: mode as i32,
        ..Default::default()
    })
}

fn show_ports(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .map(|p| {
            let mode = if p.publish_mode == port_config::PublishMode::Host as i32 {
                " host"
            } else {
                ""
            };
            format!(
                "{}→{}{mode}",
                port_name(p.protocol, p.published_port),
                p.target_port
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Runner {
    fn network_name(&self, id: &str) -> String {
        self.networks
            .get(id)
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    fn service_spec(&self, command: &Command) -> Result<ServiceSpec, Box<dyn Error>> {
        let mut ports = Vec::new();
        for p in keys(command, "port") {
            ports.push(parse_port(p, port_config::PublishMode::Ingress)?);
        }
        for p in keys(command, "host") {
            ports.push(parse_port(p, port_config::PublishMode::Host)?);
        }
        let mode = if flag(command, "dnsrr") {
            endpoint_spec::ResolutionMode::Dnsrr
        } else {
            endpoint_spec::ResolutionMode::Vip
        };
        let id = key(command, "id").ok_or("service needs id=")?;
        Ok(ServiceSpec {
            annotations: Some(Annotations {
                name: id.into(),
                labels: Vec::new(),
            }),
            task: Some(
                TaskSpecFields {
                    networks: keys(command, "net")
                        .map(|n| NetworkAttachmentConfig {
                            target: n.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
                .into(),
            ),
            endpoint: Some(EndpointSpec {
                mode: mode as i32,
                ports,
            }),
            ..Default::default()
        })
    }

    fn show_service(&self, s: &Service) -> String {
        let endpoint = s.endpoint.clone().unwrap_or_default();
        let mut out = String::new();
        if !endpoint.ports.is_empty() {
            let _ = write!(out, "ports: {}", show_ports(&endpoint.ports));
        }
        for v in &endpoint.virtual_ips {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "vip {} {}", self.network_name(&v.network_id), v.addr);
        }
        if out.is_empty() {
            out.push_str("nothing allocated");
        }
        out.push('\n');
        out
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _: &Context) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        match command.name.as_str() {
            "network" => {
                let id = key(command, "id").ok_or("network needs id=")?.to_string();
                let spec = NetworkSpec {
                    annotations: Some(Annotations {
                        name: id.clone(),
                        labels: Vec::new(),
                    }),
                    driver_config: key(command, "driver").map(|d| Driver {
                        name: d.into(),
                        options: Default::default(),
                    }),
                    ipam: key(command, "subnet").map(|subnet| IpamOptions {
                        driver: None,
                        configs: vec![IpamConfig {
                            subnet: subnet.into(),
                            gateway: key(command, "gateway").unwrap_or("").into(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                };
                match self.allocations.allocate_network(&id, &spec) {
                    Ok(ipam) => {
                        let c = &ipam.configs[0];
                        writeln!(out, "{id}: subnet {} gateway {}", c.subnet, c.gateway)?;
                        self.networks.insert(
                            id.clone(),
                            Arc::new(Network {
                                meta: Some(Meta {
                                    id,
                                    ..Default::default()
                                }),
                                spec: Some(spec),
                                ipam: Some(ipam),
                                ..Default::default()
                            }),
                        );
                    }
                    Err(e) => out.push_str(&refusal(&e)),
                }
            }
            "network-remove" => {
                for id in positional(command) {
                    self.networks.remove(id);
                    self.allocations.release_network(id);
                }
            }
            "ingress" => {
                let spec = self
                    .services
                    .values()
                    .filter_map(|s| s.spec.clone())
                    .find(|s| super::publishes_ingress(s.endpoint.as_ref()))
                    .ok_or("no service publishes an ingress port")?;
                match ensure_ingress(&mut self.allocations, &spec) {
                    Ok(Some(network)) => {
                        let c = &network.ipam.as_ref().unwrap().configs[0];
                        writeln!(out, "ingress: subnet {} gateway {}", c.subnet, c.gateway)?;
                        let id = network.meta.as_ref().unwrap().id.clone();
                        // A readable ID for the scripts.
                        let mut network = network;
                        network.meta.as_mut().unwrap().id = "ingress".into();
                        self.allocations.release_network(&id);
                        self.networks.insert("ingress".into(), Arc::new(network));
                        self.rebuild();
                    }
                    Ok(None) => out.push_str("ingress exists\n"),
                    Err(e) => out.push_str(&refusal(&e)),
                }
            }
            "service" => {
                let id = key(command, "id").ok_or("service needs id=")?.to_string();
                let mut service = self.services.get(&id).cloned().unwrap_or_else(|| Service {
                    meta: Some(Meta {
                        id: id.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                service.spec = Some(self.service_spec(command)?);
                match self.allocations.allocate_service(&mut service) {
                    Ok(()) => {
                        write!(out, "{id}: {}", self.show_service(&service))?;
                        self.services.insert(id, service);
                    }
                    Err(e) => out.push_str(&refusal(&e)),
                }
            }
            "service-remove" => {
                for id in positional(command) {
                    self.services.remove(id);
                    self.allocations.release_service(id);
                }
            }
            "task" => {
                let id = key(command, "id").ok_or("task needs id=")?.to_string();
                let service_id = key(command, "service").ok_or("task needs service=")?;
                let service = self
                    .services
                    .get(service_id)
                    .ok_or_else(|| format!("no service {service_id}"))?;
                let mut task = Task {
                    meta: Some(Meta {
                        id: id.clone(),
                        ..Default::default()
                    }),
                    service_id: service_id.into(),
                    status: Some(TaskStatus {
                        state: TaskState::Running as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                match self.allocations.allocate_task(service, &mut task) {
                    Ok(()) => {
                        let addrs: Vec<String> = task
                            .networks
                            .iter()
                            .map(|n| {
                                format!(
                                    "{} {}",
                                    self.network_name(&n.network_id),
                                    n.addresses.join(",")
                                )
                            })
                            .collect();
                        if addrs.is_empty() {
                            writeln!(out, "{id}: no networks")?;
                        } else {
                            writeln!(out, "{id}: {}", addrs.join("; "))?;
                        }
                        self.tasks.insert(id, task);
                    }
                    Err(e) => out.push_str(&refusal(&e)),
                }
            }
            "task-remove" => {
                for id in positional(command) {
                    self.tasks.remove(id);
                    self.allocations.release_task(id);
                }
            }
            "task-end" => {
                for id in positional(command) {
                    let task = self
                        .tasks
                        .get_mut(id)
                        .ok_or_else(|| format!("no task {id}"))?;
                    task.status.get_or_insert_default().state = TaskState::Failed as i32;
                }
                // Ended tasks are seen as such by the next build.
                self.rebuild();
            }
            "rebuild" => self.rebuild(),
            other => return Err(format!("unknown command {other}").into()),
        }
        Ok(out)
    }
}

impl Runner {
    fn rebuild(&mut self) {
        let networks: Vec<Arc<Network>> = self.networks.values().cloned().collect();
        let services: Vec<Arc<Service>> = self.services.values().cloned().map(Arc::new).collect();
        let tasks: Vec<Arc<Task>> = self.tasks.values().cloned().map(Arc::new).collect();
        self.allocations = Allocations::from_objects(&networks, &services, &tasks);
        assert!(
            self.allocations.inconsistencies().is_empty(),
            "{:?}",
            self.allocations.inconsistencies()
        );
    }
}

test_each_file::test_each_path! { in "crates/manager/src/allocator/testscripts" as scripts => test_goldenscript }

fn test_goldenscript(path: &std::path::Path) {
    goldenscript::run(&mut Runner::default(), path).expect("goldenscript failed")
}
