//! Golden-script tests of the scheduler: each file in `testscripts/` is one test.
//! Regenerate with `UPDATE_GOLDENFILES=1 cargo test -p shoal-manager scheduler`.
//!
//! Commands (the runner keeps its own table of nodes and tasks, like the store, and feeds
//! every change to the scheduler):
//! - `node id=N [ready|down|disconnected|unknown] [active|pause|drain] [cpus=2] [memory=1G]
//!   [hostname=H] [role=worker|manager] [os=linux] [arch=amd64] [addr=IP]
//!   [runtimes=process,container] [label.K=V]... [engine.K=V]... [generic.KIND=N]...`:
//!   creates or replaces a node (defaults: ready, active, hostname = id, worker, linux,
//!   amd64, both runtimes, no resources).
//! - `node-remove N`
//! - `task id=T [service=S] [version=V] [runtime=process|container|none] [cpus=1]
//!   [memory=512M] [generic.KIND=N]... [constraint=EXPR]... [platform=OS/ARCH]...
//!   [max-replicas=N] [spread=DESCRIPTOR]... [publish=PORT[/udp]]... [ingress=PORT[/udp]]...
//!   [node=N] [state=STATE]`: creates or replaces a task (defaults: service s1, version 1,
//!   process runtime, no node, state PENDING). Tasks with the same service, version and
//!   options share one spec, as in the store. `publish` and `ingress` are published ports
//!   (host and ingress mode) of the task's endpoint, as the allocator sets it.
//! - `tasks prefix=P count=N [task options]`: tasks P1..PN.
//! - `state T STATE`: sets a task's status state.
//! - `task-remove T`
//! - `schedule [T...]`: schedules the given tasks, or every task without a node and with a
//!   non-terminal state, in creation order; prints the decisions and applies them (node set,
//!   state ASSIGNED).
//! - `reset`: rebuilds the scheduler from the runner's table.
//! - `load`: each node's load as the scheduler counts it.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;

use goldenscript::{Argument, Command, Context};
use shoal_api::task_state;
use shoal_api::v1::{
    Annotations, ContainerSpec, DiscreteGenericResource, Endpoint, EngineDescription,
    GenericResource, Label, Meta, Node, NodeDescription, NodeRole, NodeSpec, NodeStatus, Placement,
    PlacementPreference, Platform, PortConfig, ProcessSpec, ResourceRequirements, Resources,
    SpreadOver, Task, TaskSpec, TaskSpecFields, TaskState, TaskStatus, generic_resource, node_spec,
    node_status, placement_preference, port_config, task_spec,
};

use super::{Decision, Scheduler};

#[derive(Default)]
struct Runner {
    scheduler: Scheduler,
    nodes: BTreeMap<String, Arc<Node>>,
    /// Tasks in creation order.
    tasks: Vec<Arc<Task>>,
    specs: Vec<(String, u64, TaskSpec)>,
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

fn keys<'a>(command: &'a Command, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    command.args.iter().filter_map(move |a| match a {
        Argument::KeyValue(k, v) if k == name => Some(v.as_str()),
        _ => None,
    })
}

fn key<'a>(command: &'a Command, name: &'a str) -> Option<&'a str> {
    keys(command, name).last()
}

fn prefixed<'a>(command: &'a Command, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    command
        .args
        .iter()
        .filter_map(|a| match a {
            Argument::KeyValue(k, v) => Some((k.strip_prefix(prefix)?, v.as_str())),
            _ => None,
        })
        .collect()
}

fn parse_cpus(s: &str) -> Result<i64, Box<dyn Error>> {
    Ok((s.parse::<f64>()? * 1e9).round() as i64)
}

fn parse_bytes(s: &str) -> Result<i64, Box<dyn Error>> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: i64 = digits.parse()?;
    let factor = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("bad unit in {s}").into()),
    };
    Ok(n * factor)
}

fn show_bytes(n: i64) -> String {
    for (unit, factor) in [("G", 1i64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if n != 0 && n % factor == 0 {
            return format!("{}{unit}", n / factor);
        }
    }
    n.to_string()
}

fn show_cpus(nano: i64) -> String {
    format!("{}", nano as f64 / 1e9)
}

fn generic(amounts: &[(&str, &str)]) -> Result<Vec<GenericResource>, Box<dyn Error>> {
    amounts
        .iter()
        .map(|(kind, n)| {
            Ok(GenericResource {
                resource: Some(generic_resource::Resource::Discrete(
                    DiscreteGenericResource {
                        kind: kind.to_string(),
                        value: n.parse()?,
                    },
                )),
            })
        })
        .collect()
}

fn label_list(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut labels: Vec<Label> = pairs
        .iter()
        .map(|(k, v)| Label {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect();
    labels.sort_by(|a, b| a.key.cmp(&b.key));
    labels
}

fn parse_state(s: &str) -> Result<TaskState, Box<dyn Error>> {
    TaskState::from_str_name(&format!("TASK_STATE_{}", s.to_uppercase()))
        .ok_or_else(|| format!("unknown task state {s}").into())
}

fn build_node(command: &Command) -> Result<Node, Box<dyn Error>> {
    let id = key(command, "id").ok_or("node needs id=")?;
    let mut state = node_status::State::Ready;
    let mut availability = node_spec::Availability::Active;
    for word in positional(command) {
        match word {
            "ready" => state = node_status::State::Ready,
            "down" => state = node_status::State::Down,
            "disconnected" => state = node_status::State::Disconnected,
            "unknown" => state = node_status::State::Unknown,
            "active" => availability = node_spec::Availability::Active,
            "pause" => availability = node_spec::Availability::Pause,
            "drain" => availability = node_spec::Availability::Drain,
            other => return Err(format!("unknown node word {other}").into()),
        }
    }
    let role = match key(command, "role").unwrap_or("worker") {
        "worker" => NodeRole::Worker,
        "manager" => NodeRole::Manager,
        other => return Err(format!("unknown role {other}").into()),
    };
    let runtimes = key(command, "runtimes")
        .unwrap_or("process,container")
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Node {
        meta: Some(Meta {
            id: id.to_string(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: String::new(),
                labels: label_list(&prefixed(command, "label.")),
            }),
            availability: availability as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: key(command, "hostname").unwrap_or(id).to_string(),
            platform: Some(Platform {
                architecture: key(command, "arch").unwrap_or("amd64").to_string(),
                os: key(command, "os").unwrap_or("linux").to_string(),
            }),
            resources: Some(Resources {
                nano_cpus: key(command, "cpus")
                    .map(parse_cpus)
                    .transpose()?
                    .unwrap_or(0),
                memory_bytes: key(command, "memory")
                    .map(parse_bytes)
                    .transpose()?
                    .unwrap_or(0),
                generic: generic(&prefixed(command, "generic."))?,
            }),
            engine: Some(EngineDescription {
                labels: label_list(&prefixed(command, "engine.")),
                ..Default::default()
            }),
            runtimes,
            ..Default::default()
        })),
        status: Some(NodeStatus {
            state: state as i32,
            message: String::new(),
            addr: key(command, "addr").unwrap_or("").to_string(),
        }),
        role: role as i32,
        ..Default::default()
    })
}

impl Runner {
    fn spec(&mut self, command: &Command) -> Result<(String, u64, TaskSpec), Box<dyn Error>> {
        let service = key(command, "service").unwrap_or("s1").to_string();
        let version: u64 = key(command, "version").unwrap_or("1").parse()?;
        let runtime = match key(command, "runtime").unwrap_or("process") {
            "process" => Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                command: "sleep".into(),
                ..Default::default()
            }))),
            "container" => Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            }))),
            "none" => None,
            other => return Err(format!("unknown runtime {other}").into()),
        };
        let cpus = key(command, "cpus").map(parse_cpus).transpose()?;
        let memory = key(command, "memory").map(parse_bytes).transpose()?;
        let generic = generic(&prefixed(command, "generic."))?;
        let resources = (cpus.is_some() || memory.is_some() || !generic.is_empty()).then(|| {
            Box::new(ResourceRequirements {
                reservations: Some(Resources {
                    nano_cpus: cpus.unwrap_or(0),
                    memory_bytes: memory.unwrap_or(0),
                    generic,
                }),
                ..Default::default()
            })
        });
        let platforms = keys(command, "platform")
            .map(|p| {
                let (os, arch) = p.split_once('/').unwrap_or((p, ""));
                Platform {
                    architecture: arch.to_string(),
                    os: os.to_string(),
                }
            })
            .collect();
        let placement = Placement {
            constraints: keys(command, "constraint").map(str::to_string).collect(),
            preferences: keys(command, "spread")
                .map(|d| PlacementPreference {
                    preference: Some(placement_preference::Preference::Spread(SpreadOver {
                        spread_descriptor: d.to_string(),
                    })),
                })
                .collect(),
            platforms,
            max_replicas: key(command, "max-replicas").unwrap_or("0").parse()?,
        };
        let fields = TaskSpecFields {
            runtime,
            resources,
            placement: (placement != Placement::default()).then(|| Box::new(placement)),
            ..Default::default()
        };
        // Share the spec with earlier tasks of the same service version, as the store does.
        let spec = match self
            .specs
            .iter()
            .find(|(s, v, spec)| *s == service && *v == version && **spec == fields)
        {
            Some((_, _, spec)) => spec.clone(),
            None => {
                let spec = TaskSpec::from(fields);
                self.specs.push((service.clone(), version, spec.clone()));
                spec
            }
        };
        Ok((service, version, spec))
    }

    fn put_task(&mut self, task: Arc<Task>) {
        let id = super::task_id(&task);
        match self.tasks.iter_mut().find(|t| super::task_id(t) == id) {
            Some(t) => *t = task.clone(),
            None => self.tasks.push(task.clone()),
        }
        self.scheduler.task_changed(task);
    }

    fn task(&self, id: &str) -> Result<Arc<Task>, Box<dyn Error>> {
        self.tasks
            .iter()
            .find(|t| super::task_id(t) == id)
            .cloned()
            .ok_or_else(|| format!("no task {id}").into())
    }

    fn create_tasks(&mut self, command: &Command, ids: Vec<String>) -> Result<(), Box<dyn Error>> {
        let (service, version, spec) = self.spec(command)?;
        let state = parse_state(key(command, "state").unwrap_or("pending"))?;
        for id in ids {
            let task = Task {
                meta: Some(Meta {
                    id,
                    ..Default::default()
                }),
                spec: Some(spec.clone()),
                spec_version: version,
                service_id: service.clone(),
                node_id: key(command, "node").unwrap_or("").to_string(),
                status: Some(TaskStatus {
                    state: state as i32,
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                endpoint: endpoint(command)?,
                ..Default::default()
            };
            self.put_task(Arc::new(task));
        }
        Ok(())
    }
}

/// The task's endpoint: `publish=8080[/udp]` (host mode), `ingress=8080[/udp]`.
fn endpoint(command: &Command) -> Result<Option<Box<Endpoint>>, Box<dyn Error>> {
    let mut ports = Vec::new();
    for (key_name, mode) in [
        ("publish", port_config::PublishMode::Host),
        ("ingress", port_config::PublishMode::Ingress),
    ] {
        for p in keys(command, key_name) {
            let (port, protocol) = p.split_once('/').unwrap_or((p, "tcp"));
            let protocol = match protocol {
                "tcp" => port_config::Protocol::Tcp,
                "udp" => port_config::Protocol::Udp,
                "sctp" => port_config::Protocol::Sctp,
                other => return Err(format!("unknown protocol {other}").into()),
            };
            ports.push(PortConfig {
                protocol: protocol as i32,
                target_port: 80,
                published_port: port.parse()?,
                publish_mode: mode as i32,
                ..Default::default()
            });
        }
    }
    Ok((!ports.is_empty()).then(|| {
        Box::new(Endpoint {
            ports,
            ..Default::default()
        })
    }))
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _: &Context) -> Result<String, Box<dyn Error>> {
        let args = positional(command);
        let mut out = String::new();
        match command.name.as_str() {
            "node" => {
                let node = Arc::new(build_node(command)?);
                self.nodes
                    .insert(super::node_id(&node).to_string(), node.clone());
                self.scheduler.node_changed(node);
            }
            "node-remove" => {
                for id in args {
                    self.nodes.remove(id);
                    self.scheduler.node_removed(id);
                }
            }
            "task" => {
                let id = key(command, "id").ok_or("task needs id=")?.to_string();
                self.create_tasks(command, vec![id])?;
            }
            "tasks" => {
                let prefix = key(command, "prefix").ok_or("tasks needs prefix=")?;
                let count: usize = key(command, "count").ok_or("tasks needs count=")?.parse()?;
                let ids = (1..=count).map(|i| format!("{prefix}{i}")).collect();
                self.create_tasks(command, ids)?;
            }
            "state" => {
                let [id, state] = args[..] else {
                    return Err("state T STATE".into());
                };
                let mut task = (*self.task(id)?).clone();
                task.status.get_or_insert_default().state = parse_state(state)? as i32;
                self.put_task(Arc::new(task));
            }
            "task-remove" => {
                for id in args {
                    self.tasks.retain(|t| super::task_id(t) != id);
                    self.scheduler.task_removed(id);
                }
            }
            "schedule" => {
                let pending: Vec<Arc<Task>> = if args.is_empty() {
                    self.tasks
                        .iter()
                        .filter(|t| {
                            let state =
                                TaskState::try_from(t.status.as_ref().map_or(0, |s| s.state))
                                    .unwrap_or(TaskState::New);
                            t.node_id.is_empty() && !task_state::is_terminal(state)
                        })
                        .cloned()
                        .collect()
                } else {
                    args.iter()
                        .map(|id| self.task(id))
                        .collect::<Result<_, _>>()?
                };
                for decision in self.scheduler.schedule(&pending) {
                    match decision {
                        Decision::Assign { task_id, node_id } => {
                            writeln!(out, "{task_id} → {node_id}")?;
                            let mut task = (*self.task(&task_id)?).clone();
                            task.node_id = node_id;
                            task.status.get_or_insert_default().state = TaskState::Assigned as i32;
                            self.put_task(Arc::new(task));
                        }
                        Decision::NoSuitableNode { task_id, reason } => {
                            writeln!(out, "{task_id}: {reason}")?;
                        }
                    }
                }
            }
            "reset" => {
                self.scheduler.reset(
                    self.nodes.values().cloned().collect::<Vec<_>>(),
                    self.tasks.clone(),
                );
            }
            "load" => {
                let mut services: Vec<&str> =
                    self.tasks.iter().map(|t| t.service_id.as_str()).collect();
                services.sort();
                services.dedup();
                for id in self.nodes.keys() {
                    let load = self.scheduler.node_load(id).unwrap_or_default();
                    write!(
                        out,
                        "{id}: tasks={} cpus={} memory={}",
                        load.tasks,
                        show_cpus(load.nano_cpus),
                        show_bytes(load.memory_bytes)
                    )?;
                    for service in &services {
                        let n = self.scheduler.service_tasks(id, service);
                        if n > 0 {
                            write!(out, " {service}={n}")?;
                        }
                    }
                    out.push('\n');
                }
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        Ok(out)
    }
}

test_each_file::test_each_path! { in "crates/manager/src/scheduler/testscripts" as scripts => test_goldenscript }

fn test_goldenscript(path: &std::path::Path) {
    goldenscript::run(&mut Runner::default(), path).expect("goldenscript failed")
}
