//! The filters: what a group of tasks requires, and whether a node offers it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use shoal_api::labels;
use shoal_api::v1::{
    GenericResource, Node, NodeRole, Platform, Task, generic_resource, node_spec, node_status,
    placement_preference, port_config, task_spec,
};
use shoal_api::validation::{Constraint, parse_cidr, parse_constraint};

use super::Slot;
use crate::allocator::port_name;

/// The filters, in pipeline order. A node that fails is counted under the first it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filter {
    Available,
    Resources,
    Runtime,
    Constraints,
    Platform,
    HostPort,
    MaxReplicas,
}

impl Filter {
    pub const COUNT: usize = 7;
    pub const ALL: [Filter; Self::COUNT] = [
        Filter::Available,
        Filter::Resources,
        Filter::Runtime,
        Filter::Constraints,
        Filter::Platform,
        Filter::HostPort,
        Filter::MaxReplicas,
    ];

    /// Why `n` nodes fail this filter, as it reads in a task's status.
    pub fn explain(self, n: usize, requirement: &Requirement) -> String {
        let nodes = if n == 1 { "node" } else { "nodes" };
        match self {
            Filter::Available => format!("{n} {nodes} not available for new tasks"),
            Filter::Resources => format!("insufficient resources on {n} {nodes}"),
            Filter::Runtime => format!(
                "runtime {} not supported on {n} {nodes}",
                requirement.runtime.unwrap_or("?")
            ),
            Filter::Constraints => format!("scheduling constraints not satisfied on {n} {nodes}"),
            Filter::Platform => format!("unsupported platform on {n} {nodes}"),
            Filter::HostPort => {
                let ports = &requirement.reservation.host_ports;
                let list: Vec<String> = ports
                    .iter()
                    .map(|&(protocol, port, _)| port_name(protocol, port))
                    .collect();
                let s = if ports.len() == 1 { "" } else { "s" };
                format!(
                    "host-mode port{s} {} in use on {n} {nodes}",
                    list.join(", ")
                )
            }
            Filter::MaxReplicas => {
                format!("max replicas per node limit exceeded on {n} {nodes}")
            }
        }
    }
}

/// Resources a task reserves, or a node's tasks reserve together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Reservation {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    /// Generic resources by kind (few: a list beats a map).
    pub generic: Vec<(String, i64)>,
    /// Host-mode published ports (protocol, port) and how many tasks publish each: a node's
    /// tasks may not publish the same one twice.
    pub host_ports: Vec<(i32, u32, i64)>,
}

impl Reservation {
    pub fn of_task(task: &Task) -> Self {
        let mut out = Reservation::default();
        // The ports as allocated: the allocator copies the service's endpoint into the task.
        for p in task.endpoint.iter().flat_map(|e| e.ports.iter()) {
            if p.publish_mode == port_config::PublishMode::Host as i32 && p.published_port != 0 {
                out.add_host_port(p.protocol, p.published_port, 1);
            }
        }
        let Some(r) = task
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.reservations.as_ref())
        else {
            return out;
        };
        out.nano_cpus = r.nano_cpus.max(0);
        out.memory_bytes = r.memory_bytes.max(0);
        for (kind, n) in generic_amounts(&r.generic) {
            out.add_generic(&kind, n);
        }
        out
    }

    fn add_host_port(&mut self, protocol: i32, port: u32, n: i64) {
        match self
            .host_ports
            .iter_mut()
            .find(|(p, q, _)| *p == protocol && *q == port)
        {
            Some((_, _, v)) => *v += n,
            None => self.host_ports.push((protocol, port, n)),
        }
    }

    fn host_port_used(&self, protocol: i32, port: u32) -> bool {
        self.host_ports
            .iter()
            .any(|&(p, q, n)| p == protocol && q == port && n > 0)
    }

    fn add_generic(&mut self, kind: &str, n: i64) {
        match self.generic.iter_mut().find(|(k, _)| k == kind) {
            Some((_, v)) => *v += n,
            None => self.generic.push((kind.to_string(), n)),
        }
    }

    fn generic(&self, kind: &str) -> i64 {
        self.generic
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, v)| *v)
    }

    pub fn add(&mut self, other: &Reservation) {
        self.nano_cpus += other.nano_cpus;
        self.memory_bytes += other.memory_bytes;
        for (kind, n) in &other.generic {
            self.add_generic(kind, *n);
        }
        for &(protocol, port, n) in &other.host_ports {
            self.add_host_port(protocol, port, n);
        }
    }

    pub fn subtract(&mut self, other: &Reservation) {
        self.nano_cpus -= other.nano_cpus;
        self.memory_bytes -= other.memory_bytes;
        for (kind, n) in &other.generic {
            self.add_generic(kind, -n);
        }
        self.generic.retain(|(_, v)| *v != 0);
        for &(protocol, port, n) in &other.host_ports {
            self.add_host_port(protocol, port, -n);
        }
        self.host_ports.retain(|(_, _, v)| *v != 0);
    }
}

/// Amounts per kind: a discrete resource counts its value, a named one counts one.
fn generic_amounts(resources: &[GenericResource]) -> impl Iterator<Item = (String, i64)> + '_ {
    resources.iter().filter_map(|g| match &g.resource {
        Some(generic_resource::Resource::Discrete(d)) => Some((d.kind.clone(), d.value.max(0))),
        Some(generic_resource::Resource::Named(n)) => Some((n.kind.clone(), 1)),
        None => None,
    })
}

/// What a node offers, from its object: read once per node change, so that the filter pass
/// over all nodes touches this compact summary rather than the node object.
#[derive(Clone, Debug, Default)]
pub(super) struct Capacity {
    /// READY and ACTIVE.
    available: bool,
    /// Runtimes as a bit set (see [`runtime_bit`]).
    runtimes: u8,
    nano_cpus: i64,
    memory_bytes: i64,
    generic: HashMap<String, i64>,
}

impl Capacity {
    pub fn of(node: &Node) -> Self {
        let ready = node.status.as_ref().map(|s| s.state) == Some(node_status::State::Ready as i32);
        let active = node
            .spec
            .as_ref()
            .is_none_or(|s| s.availability == node_spec::Availability::Active as i32);
        let runtimes = node.description.as_ref().map_or(0, |d| {
            d.runtimes.iter().fold(0, |bits, r| bits | runtime_bit(r))
        });
        let mut capacity = Capacity {
            available: ready && active,
            runtimes,
            ..Default::default()
        };
        if let Some(r) = node.description.as_ref().and_then(|d| d.resources.as_ref()) {
            capacity.nano_cpus = r.nano_cpus;
            capacity.memory_bytes = r.memory_bytes;
            for (kind, n) in generic_amounts(&r.generic) {
                *capacity.generic.entry(kind).or_default() += n;
            }
        }
        capacity
    }
}

/// A runtime's bit in [`Capacity::runtimes`]; unknown runtimes have none.
fn runtime_bit(runtime: &str) -> u8 {
    match runtime {
        "process" => 1,
        "container" => 2,
        _ => 0,
    }
}

/// What a group of tasks (same service and spec) asks of a node.
#[derive(Clone, Debug)]
pub(super) struct Requirement {
    pub runtime: Option<&'static str>,
    pub reservation: std::sync::Arc<Reservation>,
    constraints: Vec<Constraint>,
    platforms: Vec<Platform>,
    max_replicas: u64,
    /// Spread descriptors, outermost first.
    pub spread: Vec<String>,
}

impl Requirement {
    /// The requirement of `task`'s spec; `Err` names a malformed constraint.
    pub fn of_task(task: &Task) -> Result<Self, String> {
        let spec = task.spec.as_ref();
        let runtime = spec.and_then(|s| s.runtime.as_ref()).map(|r| match r {
            task_spec::Runtime::Container(_) => "container",
            task_spec::Runtime::Process(_) => "process",
        });
        let placement = spec.and_then(|s| s.placement.as_deref());
        let constraints = placement
            .map(|p| p.constraints.iter().map(|c| parse_constraint(c)).collect())
            .transpose()?
            .unwrap_or_default();
        let spread = placement
            .map(|p| {
                p.preferences
                    .iter()
                    .filter_map(|pref| {
                        pref.preference.as_ref().map(|p| match p {
                            placement_preference::Preference::Spread(s) => {
                                s.spread_descriptor.clone()
                            }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Requirement {
            runtime,
            reservation: std::sync::Arc::new(Reservation::of_task(task)),
            constraints,
            platforms: placement.map(|p| p.platforms.clone()).unwrap_or_default(),
            max_replicas: placement.map_or(0, |p| p.max_replicas),
            spread,
        })
    }

    /// Runs the pipeline on one node, all but max replicas (which depends on the service):
    /// the first filter it fails.
    pub fn check(&self, node: &Node, slot: &Slot) -> Result<(), Filter> {
        if !slot.capacity.available {
            return Err(Filter::Available);
        }
        if !self.fits(slot) {
            return Err(Filter::Resources);
        }
        if let Some(runtime) = self.runtime
            && slot.capacity.runtimes & runtime_bit(runtime) == 0
        {
            return Err(Filter::Runtime);
        }
        if !self.constraints.iter().all(|c| matches(c, node)) {
            return Err(Filter::Constraints);
        }
        if !self.platforms.is_empty() && !self.platforms.iter().any(|p| platform_matches(p, node)) {
            return Err(Filter::Platform);
        }
        if !self.host_ports_free(slot) {
            return Err(Filter::HostPort);
        }
        Ok(())
    }

    /// Whether none of the host-mode ports the task publishes is published by a task the
    /// node runs.
    pub fn host_ports_free(&self, slot: &Slot) -> bool {
        self.reservation
            .host_ports
            .iter()
            .all(|&(protocol, port, _)| !slot.reserved.host_port_used(protocol, port))
    }

    /// After a task of the batch was placed on the node: whether one more task still fits
    /// (resources, host ports), else the filter it now fails.
    pub fn still_fits(&self, slot: &Slot) -> Result<(), Filter> {
        if !self.fits(slot) {
            Err(Filter::Resources)
        } else if !self.host_ports_free(slot) {
            Err(Filter::HostPort)
        } else {
            Ok(())
        }
    }

    /// Whether tasks of `other` pass the same service-independent filters as these.
    pub fn same_class(&self, other: &Requirement) -> bool {
        self.runtime == other.runtime
            && self.reservation == other.reservation
            && self.constraints == other.constraints
            && self.platforms == other.platforms
    }

    /// Whether one more task fits in what the node has left.
    pub fn fits(&self, slot: &Slot) -> bool {
        let (need, cap, used) = (&*self.reservation, &slot.capacity, &slot.reserved);
        if need.nano_cpus > 0 && cap.nano_cpus - used.nano_cpus < need.nano_cpus {
            return false;
        }
        if need.memory_bytes > 0 && cap.memory_bytes - used.memory_bytes < need.memory_bytes {
            return false;
        }
        need.generic.iter().all(|(kind, n)| {
            *n <= 0 || cap.generic.get(kind).copied().unwrap_or(0) - used.generic(kind) >= *n
        })
    }

    pub fn max_replicas_reached(&self, service_tasks: u32) -> bool {
        self.max_replicas > 0 && u64::from(service_tasks) >= self.max_replicas
    }

    /// The placement filter (constraints, then platforms) `node` fails now, if any: what the
    /// constraint enforcer checks of tasks already running there.
    pub fn placement_violated(&self, node: &Node) -> Option<Filter> {
        if !self.constraints.iter().all(|c| matches(c, node)) {
            return Some(Filter::Constraints);
        }
        if !self.platforms.is_empty() && !self.platforms.iter().any(|p| platform_matches(p, node)) {
            return Some(Filter::Platform);
        }
        None
    }
}

/// Whether the node satisfies one constraint.
fn matches(c: &Constraint, node: &Node) -> bool {
    let desc = node.description.as_ref();
    let platform = desc.and_then(|d| d.platform.as_ref());
    let value: Option<String> = match c.key.as_str() {
        "node.id" => node.meta.as_ref().map(|m| m.id.clone()),
        "node.hostname" => desc.map(|d| d.hostname.clone()),
        "node.role" => Some(
            if node.role == NodeRole::Manager as i32 {
                "manager"
            } else {
                "worker"
            }
            .to_string(),
        ),
        "node.platform.os" => platform.map(|p| p.os.clone()),
        "node.platform.arch" => platform.map(|p| normalize_arch(&p.architecture).to_string()),
        "node.ip" => return ip_matches(c, node),
        key => {
            if let Some(label) = key.strip_prefix("node.labels.") {
                node_labels(node).and_then(|l| labels::get(l, label).map(str::to_string))
            } else if let Some(label) = key.strip_prefix("engine.labels.") {
                engine_labels(node).and_then(|l| labels::get(l, label).map(str::to_string))
            } else {
                None
            }
        }
    };
    let want = if c.key == "node.platform.arch" {
        normalize_arch(&c.value)
    } else {
        c.value.as_str()
    };
    let equal = value.is_some_and(|v| v.eq_ignore_ascii_case(want));
    equal == c.equal
}

/// `node.ip`: an address, or a subnet in CIDR notation, against the node's status address.
fn ip_matches(c: &Constraint, node: &Node) -> bool {
    let addr = node.status.as_ref().map_or("", |s| s.addr.as_str());
    let ip = addr
        .parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()));
    let inside = match (ip, c.value.contains('/')) {
        (Some(ip), true) => {
            parse_cidr(&c.value).is_ok_and(|(net, prefix)| in_subnet(ip, net, prefix))
        }
        (Some(ip), false) => c.value.parse::<IpAddr>().is_ok_and(|v| v == ip),
        (None, _) => false,
    };
    inside == c.equal
}

fn in_subnet(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn node_labels(node: &Node) -> Option<&[shoal_api::v1::Label]> {
    node.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.labels.as_slice())
}

fn engine_labels(node: &Node) -> Option<&[shoal_api::v1::Label]> {
    node.description
        .as_ref()
        .and_then(|d| d.engine.as_ref())
        .map(|e| e.labels.as_slice())
}

/// The value a spread descriptor (`node.labels.X`, `engine.labels.X`) takes on a node.
pub(super) fn spread_value<'a>(node: &'a Node, descriptor: &str) -> Option<&'a str> {
    if let Some(label) = descriptor.strip_prefix("node.labels.") {
        labels::get(node_labels(node)?, label)
    } else if let Some(label) = descriptor.strip_prefix("engine.labels.") {
        labels::get(engine_labels(node)?, label)
    } else {
        None
    }
}

fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armv7l" | "armel" => "arm",
        "i386" | "i686" => "386",
        other => other,
    }
}

fn platform_matches(want: &Platform, node: &Node) -> bool {
    let have = node
        .description
        .as_ref()
        .and_then(|d| d.platform.clone())
        .unwrap_or_default();
    let arch_ok = want.architecture.is_empty()
        || normalize_arch(&want.architecture)
            .eq_ignore_ascii_case(normalize_arch(&have.architecture));
    let os_ok = want.os.is_empty() || want.os.eq_ignore_ascii_case(&have.os);
    arch_ok && os_ok
}
