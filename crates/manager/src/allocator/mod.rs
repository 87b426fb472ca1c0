//! The allocator: published ports, and the IP address bookkeeping of overlay networks.
//!
//! **What it does.** Three kinds of things are handed out, each unique in its own space:
//!
//! - *Ingress published ports*, cluster-wide, per protocol: a port a service publishes in
//!   ingress mode is published on every node (the routing mesh), so no two services may
//!   publish the same port/protocol. A port given as `published: 0` gets the lowest free port
//!   of the dynamic range 30000–32767 (SwarmKit's). Host-mode ports are *not* allocated here:
//!   they only conflict on one node, which the scheduler's host-port filter checks when it
//!   places a task.
//! - *Subnets* of `overlay` networks: a subnet given by the user must not overlap another
//!   network's; without one, the network takes the next free /24 of the default address pool
//!   10.0.0.0/8 (docker's `default-addr-pool` and `subnet-size`). The gateway is the first
//!   host address unless one is given.
//! - *Addresses* in those subnets: a virtual IP per network for each service in VIP mode, and
//!   an address per network for each task (`NetworkAttachment.addresses`, in CIDR notation
//!   like docker: `10.0.1.5/24`), always the lowest free one. Tasks attach to the networks of
//!   their service's `task.networks`, plus the `ingress` network when the service publishes
//!   ingress ports (as in docker).
//!
//! There is no data plane yet: nothing creates a VXLAN, a bridge or a namespace, and tasks
//! are not reachable at these addresses. The addresses are bookkeeping — what the data plane
//! will use when it comes — and are shown by `service inspect` and the tasks.
//!
//! **Level-triggered, nothing in memory.** [`Allocations`] is built from what the store holds
//! (networks, services with their `endpoint`, tasks with their `networks`), used for one
//! transaction, and dropped. What a service or task holds is written in the object itself, so
//! an address of a task removed from the store (or ended) is free again at the next build, and
//! a new leader needs no state handed over. A task holds its addresses until its status is
//! terminal (COMPLETE or later): stopped tasks the reaper keeps for history hold none.
//!
//! **Invariants** (checked by the unit and property tests): no published ingress port/protocol
//! is held by two services; no address of a network is held twice (VIPs, tasks and the
//! gateway together); no two networks' subnets overlap; a refused allocation changes nothing;
//! a service that is updated keeps the ports and VIPs it holds (a dynamic port stays the same
//! port while the service still publishes that target port/protocol).
//!
//! **Concurrency.** Transactions are built without a lock and checked when applied (see the
//! store), and a scan is not a read the store checks. So a transaction that allocates writes
//! back, unchanged, every network it allocated from ([`Allocations::guards`]): two
//! transactions that allocate from the same network both rewrite it, and the later one fails
//! with "update out of sequence" instead of handing out the same address. Ingress ports are
//! guarded the same way through the `ingress` network, which is created (as in docker, with
//! the next free /24) the first time a service publishes an ingress port. Callers retry a
//! transaction that lost such a race.
//!
//! **Where we depart from SwarmKit.** SwarmKit's allocator is a separate loop on the leader:
//! it watches the store, allocates a service's ports and VIPs after the service is written
//! and a task's addresses after the orchestrator creates it (state NEW → PENDING), before the
//! scheduler sees it. Its state lives in memory (libnetwork's bitmaps), rebuilt at leader
//! start. That buys nothing we need and costs a lot: a port conflict is only found after
//! `service create` has succeeded (the service then sits unallocated, the user learns from
//! its tasks), every task takes one more store write and one more Raft round trip, and the
//! in-memory copy must be kept in step with the store. Here allocation is a pure function of
//! the store applied *inside* the transaction that needs it: `CreateService`/`UpdateService`
//! allocate ports and VIPs in the same transaction that writes the service, so a conflict
//! refuses the call with a clear error and changes nothing; the orchestrator allocates a new
//! task's addresses in the round that creates it ([`Allocations::allocate_task`]), so a task
//! is never visible without them.
//!
//! **For the orchestrator.** In a round, build [`Allocations::from_objects`] from the
//! networks, services and tasks the round read (or [`Allocations::read_all`] in a
//! transaction), call [`Allocations::allocate_task`] on each task it creates (before
//! scheduling or `place_on`: it also copies the service's endpoint into the task, which the
//! host-port filter reads), and write [`Allocations::guards`] back in the round's
//! transaction. A task whose allocation fails should stay unscheduled (PENDING) with the
//! error in its status. In short:
//!
//! ```ignore
//! let networks = store.view(|tx| tx.find::<Network>(By::All)); // with services and tasks
//! let mut allocations = Allocations::from_objects(&networks, &services, &tasks);
//! let mut task = new_task(service, slot, desired);
//! if let Err(e) = allocations.allocate_task(service, &mut task) {
//!     // keep it out of scheduling: status PENDING, err = e.to_string()
//! }
//! // ... in the round's write transaction:
//! for network in allocations.guards() {
//!     tx.update(network)?; // a concurrent allocation on it makes this round conflict
//! }
//! ```

#[cfg(test)]
mod golden;
mod ipam;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    Driver, EndpointSpec, IpamConfig, IpamOptions, Network, NetworkAttachment, NetworkSpec,
    PortConfig, Service, Task, TaskState, VirtualIp, endpoint_spec, ipam_config, port_config,
};

pub use ipam::Subnet;
use ipam::{Owner, Pool, parse_addr};
pub use store::{ensure_ingress, resolve_network_targets};

/// The range dynamic published ports come from (SwarmKit's).
pub const DYNAMIC_PORT_START: u32 = 30000;
pub const DYNAMIC_PORT_END: u32 = 32767;
/// Where subnets come from when a network is created without one (docker's default).
pub const DEFAULT_ADDRESS_POOL: &str = "10.0.0.0/8";
/// The prefix length of those subnets.
pub const DEFAULT_SUBNET_SIZE: u8 = 24;
/// The network ingress ports and the routing mesh belong to.
pub const INGRESS_NETWORK: &str = "ingress";
/// The only network driver so far.
pub const OVERLAY_DRIVER: &str = "overlay";

/// Why an allocation is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The same port/protocol appears twice in one endpoint spec.
    DuplicatePort { port: String },
    /// An ingress port another service publishes.
    PortInUse {
        port: String,
        service_name: String,
        service_id: String,
    },
    /// Every port of the dynamic range is published.
    PortsExhausted { protocol: String },
    /// Ingress ports with DNS round-robin resolution.
    IngressWithDnsrr,
    /// A network driver other than overlay.
    UnsupportedDriver(String),
    /// A malformed or unusable subnet or gateway, IPv6, several subnets.
    InvalidIpam(String),
    /// A subnet that overlaps another network's.
    SubnetOverlap {
        subnet: String,
        network_name: String,
        other: String,
    },
    /// The default address pool has no free subnet left.
    PoolExhausted,
    /// Every address of a network is taken.
    AddressesExhausted { network: String, subnet: String },
    /// A service attaches to a network that does not exist.
    NetworkNotFound(String),
    /// A network named by a prefix that matches several.
    NetworkAmbiguous(String),
}

/// How an [`AllocError`] is reported (the Control API maps it to a gRPC code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocErrorClass {
    InvalidArgument,
    NotFound,
    /// Refused because of what the cluster holds now (a port or subnet taken).
    FailedPrecondition,
    ResourceExhausted,
}

impl AllocError {
    pub fn class(&self) -> AllocErrorClass {
        match self {
            AllocError::DuplicatePort { .. }
            | AllocError::IngressWithDnsrr
            | AllocError::UnsupportedDriver(_)
            | AllocError::InvalidIpam(_)
            | AllocError::NetworkAmbiguous(_) => AllocErrorClass::InvalidArgument,
            AllocError::NetworkNotFound(_) => AllocErrorClass::NotFound,
            AllocError::PortInUse { .. } | AllocError::SubnetOverlap { .. } => {
                AllocErrorClass::FailedPrecondition
            }
            AllocError::PortsExhausted { .. }
            | AllocError::PoolExhausted
            | AllocError::AddressesExhausted { .. } => AllocErrorClass::ResourceExhausted,
        }
    }
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::DuplicatePort { port } => write!(
                f,
                "port {port} is published more than once in the service's endpoint spec"
            ),
            AllocError::PortInUse {
                port,
                service_name,
                service_id,
            } => write!(
                f,
                "port {port} is already published by service {service_name} (ID {service_id}); \
                 choose another published port, or leave it out to get a free one"
            ),
            AllocError::PortsExhausted { protocol } => write!(
                f,
                "no free {protocol} port left in the dynamic range \
                 {DYNAMIC_PORT_START}-{DYNAMIC_PORT_END}; give a published port"
            ),
            AllocError::IngressWithDnsrr => write!(
                f,
                "ports published in ingress mode cannot be used with dnsrr resolution; publish \
                 them in host mode or use vip"
            ),
            AllocError::UnsupportedDriver(d) => write!(
                f,
                "network driver {d:?} is not supported; Shoal has the {OVERLAY_DRIVER} driver only"
            ),
            AllocError::InvalidIpam(m) => write!(f, "invalid IPAM configuration: {m}"),
            AllocError::SubnetOverlap {
                subnet,
                network_name,
                other,
            } => write!(
                f,
                "subnet {subnet} overlaps subnet {other} of network {network_name}; choose \
                 another subnet"
            ),
            AllocError::PoolExhausted => write!(
                f,
                "no free /{DEFAULT_SUBNET_SIZE} subnet left in the default address pool \
                 {DEFAULT_ADDRESS_POOL}; give a --subnet"
            ),
            AllocError::AddressesExhausted { network, subnet } => write!(
                f,
                "no free address left in network {network} (subnet {subnet})"
            ),
            AllocError::NetworkNotFound(n) => write!(f, "network {n} not found"),
            AllocError::NetworkAmbiguous(n) => write!(
                f,
                "network {n} is ambiguous (several networks match); use more of the ID"
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// `8080/tcp`.
pub fn port_name(protocol: i32, port: u32) -> String {
    let protocol = port_config::Protocol::try_from(protocol)
        .map(|p| p.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("protocol{protocol}"));
    format!("{port}/{protocol}")
}

fn protocol_name(protocol: i32) -> String {
    port_config::Protocol::try_from(protocol)
        .map(|p| p.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("protocol {protocol}"))
}

fn is_ingress(p: &PortConfig) -> bool {
    p.publish_mode == port_config::PublishMode::Ingress as i32
}

/// Whether the spec publishes a port through the routing mesh.
pub fn publishes_ingress(spec: Option<&EndpointSpec>) -> bool {
    spec.is_some_and(|e| e.ports.iter().any(is_ingress))
}

fn meta_id(meta: Option<&shoal_api::v1::Meta>) -> &str {
    meta.map(|m| m.id.as_str()).unwrap_or("")
}

fn service_name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn network_name(network: &Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// The IPv4 subnet and gateway a network object records.
fn network_subnet(network: &Network) -> Option<(Subnet, Option<u32>)> {
    let config = network.ipam.as_ref()?.configs.first()?;
    let subnet = Subnet::parse(&config.subnet).ok()?;
    Some((subnet, parse_addr(&config.gateway)))
}

/// The networks a service's tasks attach to, by ID: its `task.networks` targets (resolved to
/// IDs when the service was written), then the ingress network if it publishes ingress ports.
pub fn service_networks(service: &Service, ingress: Option<&str>) -> Vec<String> {
    let spec = service.spec.as_ref();
    let mut ids: Vec<String> = spec
        .and_then(|s| s.task.as_ref())
        .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
        .unwrap_or_default();
    if let Some(ingress) = ingress
        && publishes_ingress(spec.and_then(|s| s.endpoint.as_ref()))
        && !ids.iter().any(|id| id == ingress)
    {
        ids.push(ingress.to_string());
    }
    ids
}

/// Who publishes an ingress port.
#[derive(Clone, Debug)]
struct PortHolder {
    service_id: String,
    service_name: String,
}

/// What the cluster's services, tasks and networks hold, built from the store. See the
/// module docs.
#[derive(Clone, Debug, Default)]
pub struct Allocations {
    /// Ingress ports: (protocol, published port) → the service publishing it.
    ports: BTreeMap<(i32, u32), PortHolder>,
    /// The ports each service holds, as allocated (its `endpoint.ports`).
    service_ports: HashMap<String, Vec<PortConfig>>,
    /// Address pools by network ID.
    pools: BTreeMap<String, Pool>,
    /// Network objects as read, by ID (for [`Allocations::guards`]).
    networks: HashMap<String, Arc<Network>>,
    /// The ingress network's ID, if there is one.
    ingress: Option<String>,
    /// Each service's virtual IPs: (network ID, address).
    service_vips: HashMap<String, Vec<(String, u32)>>,
    /// Each task's addresses: (network ID, address).
    task_addrs: HashMap<String, Vec<(String, u32)>>,
    /// Networks allocated from since the build.
    touched: BTreeSet<String>,
    /// What was found held twice while reading the store (kept out, logged by the caller).
    inconsistencies: Vec<String>,
}

impl Allocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the allocations from everything the store holds (the orchestrator's round reads
    /// these three already).
    pub fn from_objects<'a>(
        networks: impl IntoIterator<Item = &'a Arc<Network>>,
        services: impl IntoIterator<Item = &'a Arc<Service>>,
        tasks: impl IntoIterator<Item = &'a Arc<Task>>,
    ) -> Self {
        let mut a = Self::new();
        for n in networks {
            a.add_network(n.clone());
        }
        for s in services {
            a.add_service(s);
        }
        for t in tasks {
            a.add_task(t);
        }
        a
    }

    /// Records a network and its subnet, as read from the store.
    pub fn add_network(&mut self, network: Arc<Network>) {
        let id = meta_id(network.meta.as_ref()).to_string();
        if network.spec.as_ref().is_some_and(|s| s.ingress) {
            self.ingress = Some(id.clone());
        }
        if let Some((subnet, gateway)) = network_subnet(&network) {
            let gateway = gateway
                .filter(|g| subnet.hosts().contains(g))
                .unwrap_or(*subnet.hosts().start());
            self.pools.insert(
                id.clone(),
                Pool::new(network_name(&network).to_string(), subnet, gateway),
            );
        }
        self.networks.insert(id, network);
    }

    /// Records what a service holds: its published ingress ports and its virtual IPs.
    pub fn add_service(&mut self, service: &Service) {
        let id = meta_id(service.meta.as_ref()).to_string();
        let Some(endpoint) = service.endpoint.as_ref() else {
            return;
        };
        let mut held = Vec::new();
        for p in &endpoint.ports {
            if is_ingress(p) && p.published_port != 0 {
                let key = (p.protocol, p.published_port);
                match self.ports.get(&key) {
                    Some(other) if other.service_id != id => {
                        self.inconsistencies.push(format!(
                            "port {} is held by services {} and {id}",
                            port_name(key.0, key.1),
                            other.service_id
                        ));
                        continue;
                    }
                    _ => {}
                }
                self.ports.insert(
                    key,
                    PortHolder {
                        service_id: id.clone(),
                        service_name: service_name(service).to_string(),
                    },
                );
            }
            held.push(p.clone());
        }
        self.service_ports.insert(id.clone(), held);
        let mut vips = Vec::new();
        for vip in &endpoint.virtual_ips {
            if let (Some(pool), Some(addr)) =
                (self.pools.get_mut(&vip.network_id), parse_addr(&vip.addr))
            {
                if pool.hold(addr, Owner::Vip(id.clone())) {
                    vips.push((vip.network_id.clone(), addr));
                } else {
                    self.inconsistencies.push(format!(
                        "address {} of network {} (virtual IP of service {id}) is held \
                         already or outside the subnet",
                        vip.addr, vip.network_id
                    ));
                }
            }
        }
        self.service_vips.insert(id, vips);
    }

    /// Records the addresses a task holds (none once its status is terminal).
    pub fn add_task(&mut self, task: &Task) {
        if task.networks.is_empty() {
            return;
        }
        let state = task.status.as_ref().map_or(0, |s| s.state);
        let state = TaskState::try_from(state).unwrap_or(TaskState::New);
        if is_terminal(state) {
            return;
        }
        let id = meta_id(task.meta.as_ref()).to_string();
        let mut held = Vec::new();
        for attachment in &task.networks {
            let Some(pool) = self.pools.get_mut(&attachment.network_id) else {
                continue;
            };
            for a in &attachment.addresses {
                let Some(addr) = parse_addr(a) else { continue };
                if pool.hold(addr, Owner::Task(id.clone())) {
                    held.push((attachment.network_id.clone(), addr));
                } else {
                    self.inconsistencies.push(format!(
                        "address {a} of network {} (task {id}) is held already or outside \
                         the subnet",
                        attachment.network_id
                    ));
                }
            }
        }
        if !held.is_empty() {
            self.task_addrs.insert(id, held);
        }
    }

    /// Addresses or ports found held twice while building (the later holder was left out).
    pub fn inconsistencies(&self) -> &[String] {
        &self.inconsistencies
    }

    /// The ingress network's ID, if it exists.
    pub fn ingress(&self) -> Option<&str> {
        self.ingress.as_deref()
    }

    /// The network objects (as read) this session allocated addresses or ingress ports from.
    /// Write them back, unchanged, in the transaction that stores the allocation: a
    /// concurrent allocation from the same network then conflicts instead of handing out the
    /// same address or port twice. (Networks created in the same transaction are not here.)
    pub fn guards(&self) -> Vec<Network> {
        self.touched
            .iter()
            .filter_map(|id| self.networks.get(id))
            .map(|n| (**n).clone())
            .collect()
    }

    fn touch(&mut self, network_id: &str) {
        self.touched.insert(network_id.to_string());
    }

    // --- Networks --------------------------------------------------------------------------

    /// Checks a new network's spec and chooses its subnet and gateway: the given IPv4 subnet
    /// if it overlaps no other network's, else the next free /24 of 10.0.0.0/8. The network
    /// is recorded under `network_id`, so that later allocations see it.
    pub fn allocate_network(
        &mut self,
        network_id: &str,
        spec: &NetworkSpec,
    ) -> Result<IpamOptions, AllocError> {
        if let Some(d) = spec.driver_config.as_ref()
            && !d.name.is_empty()
            && d.name != OVERLAY_DRIVER
        {
            return Err(AllocError::UnsupportedDriver(d.name.clone()));
        }
        if spec.ipv6_enabled {
            return Err(AllocError::InvalidIpam(
                "IPv6 is not supported yet; create an IPv4 network".into(),
            ));
        }
        let ipam = spec.ipam.clone().unwrap_or_default();
        if let Some(d) = ipam.driver.as_ref()
            && !d.name.is_empty()
            && d.name != "default"
        {
            return Err(AllocError::InvalidIpam(format!(
                "IPAM driver {:?} is not supported; use the default one",
                d.name
            )));
        }
        if ipam.configs.len() > 1 {
            return Err(AllocError::InvalidIpam(
                "a network has one subnet so far; give at most one".into(),
            ));
        }
        let config = ipam.configs.first().cloned().unwrap_or_default();
        if config.family == ipam_config::AddressFamily::Ipv6 as i32 {
            return Err(AllocError::InvalidIpam(
                "IPv6 is not supported yet; create an IPv4 network".into(),
            ));
        }
        if !config.range.is_empty() {
            return Err(AllocError::InvalidIpam(
                "an IP range inside the subnet is not supported yet; leave it out".into(),
            ));
        }
        let subnet = if config.subnet.is_empty() {
            if !config.gateway.is_empty() {
                return Err(AllocError::InvalidIpam(
                    "a gateway needs a subnet to belong to; give the subnet too".into(),
                ));
            }
            self.free_subnet()?
        } else {
            let subnet = Subnet::parse(&config.subnet).map_err(AllocError::InvalidIpam)?;
            if let Some((other, pool)) = self.pools.values().find_map(|p| {
                p.subnet
                    .overlaps(&subnet)
                    .then_some((p.subnet.to_string(), p))
            }) {
                return Err(AllocError::SubnetOverlap {
                    subnet: subnet.to_string(),
                    network_name: pool.name.clone(),
                    other,
                });
            }
            subnet
        };
        let gateway = if config.gateway.is_empty() {
            *subnet.hosts().start()
        } else {
            let g = config
                .gateway
                .parse::<std::net::Ipv4Addr>()
                .map_err(|_| {
                    AllocError::InvalidIpam(format!(
                        "gateway {:?} is not an IPv4 address",
                        config.gateway
                    ))
                })?
                .into();
            if !subnet.hosts().contains(&g) {
                return Err(AllocError::InvalidIpam(format!(
                    "gateway {} is not a host address of subnet {subnet}",
                    config.gateway
                )));
            }
            g
        };
        let name = spec
            .annotations
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        self.pools
            .insert(network_id.to_string(), Pool::new(name, subnet, gateway));
        if spec.ingress {
            self.ingress = Some(network_id.to_string());
        }
        Ok(IpamOptions {
            driver: Some(Driver {
                name: "default".into(),
                options: Default::default(),
            }),
            configs: vec![IpamConfig {
                family: ipam_config::AddressFamily::Ipv4 as i32,
                subnet: subnet.to_string(),
                range: String::new(),
                gateway: std::net::Ipv4Addr::from(gateway).to_string(),
                reserved: Default::default(),
            }],
        })
    }

    /// The lowest /24 of the default pool that overlaps no network's subnet.
    fn free_subnet(&self) -> Result<Subnet, AllocError> {
        let pool = Subnet::parse(DEFAULT_ADDRESS_POOL).expect("the default pool parses");
        let step = 1u32 << (32 - DEFAULT_SUBNET_SIZE);
        let mut taken: Vec<Subnet> = self.pools.values().map(|p| p.subnet).collect();
        taken.sort();
        let mut candidate = pool.base();
        while candidate <= pool.last() {
            let subnet = Subnet::new(candidate, DEFAULT_SUBNET_SIZE);
            match taken.iter().find(|t| t.overlaps(&subnet)) {
                None => return Ok(subnet),
                // Skip past the subnet in the way (it may be larger than a /24).
                Some(t) => {
                    let next = t.last().max(subnet.last()).checked_add(1);
                    match next {
                        Some(n) => candidate = n.next_multiple_of(step),
                        None => break,
                    }
                }
            }
        }
        Err(AllocError::PoolExhausted)
    }

    /// Forgets a network (removed from the store): its subnet is free again.
    pub fn release_network(&mut self, network_id: &str) {
        self.pools.remove(network_id);
        self.networks.remove(network_id);
        if self.ingress.as_deref() == Some(network_id) {
            self.ingress = None;
        }
    }

    // --- Ports -----------------------------------------------------------------------------

    /// The ports of a service's endpoint spec, as allocated: ingress ports checked against
    /// every other service's, and `published: 0` given the lowest free port of 30000–32767
    /// (the port the service held for the same target and protocol, if it held one). Host-mode
    /// ports are returned as given (the scheduler checks them per node). The service's previous
    /// ports are released; on error nothing changes.
    pub fn allocate_service_ports(
        &mut self,
        service_id: &str,
        service_name: &str,
        spec: &EndpointSpec,
    ) -> Result<Vec<PortConfig>, AllocError> {
        let dnsrr = spec.mode == endpoint_spec::ResolutionMode::Dnsrr as i32;
        if dnsrr && spec.ports.iter().any(is_ingress) {
            return Err(AllocError::IngressWithDnsrr);
        }
        let held_by_other = |ports: &BTreeMap<(i32, u32), PortHolder>, key: &(i32, u32)| {
            ports
                .get(key)
                .filter(|h| h.service_id != service_id)
                .cloned()
        };
        // 1. Ports given: no duplicates in the spec, ingress ones free of other services.
        let mut taken: BTreeSet<(i32, u32)> = BTreeSet::new();
        let mut out: Vec<PortConfig> = spec.ports.clone();
        for p in &out {
            if p.published_port == 0 {
                continue;
            }
            let key = (p.protocol, p.published_port);
            if !taken.insert(key) {
                return Err(AllocError::DuplicatePort {
                    port: port_name(key.0, key.1),
                });
            }
            if is_ingress(p)
                && let Some(holder) = held_by_other(&self.ports, &key)
            {
                return Err(AllocError::PortInUse {
                    port: port_name(key.0, key.1),
                    service_name: holder.service_name,
                    service_id: holder.service_id,
                });
            }
        }
        // 2. Dynamic ports the service held already, for the same target and protocol.
        let previous = self
            .service_ports
            .get(service_id)
            .cloned()
            .unwrap_or_default();
        for p in out.iter_mut() {
            if !is_ingress(p) || p.published_port != 0 {
                continue;
            }
            let kept = previous.iter().find(|q| {
                is_ingress(q)
                    && q.protocol == p.protocol
                    && q.target_port == p.target_port
                    && (DYNAMIC_PORT_START..=DYNAMIC_PORT_END).contains(&q.published_port)
                    && !taken.contains(&(q.protocol, q.published_port))
                    && held_by_other(&self.ports, &(q.protocol, q.published_port)).is_none()
            });
            if let Some(q) = kept {
                p.published_port = q.published_port;
                taken.insert((p.protocol, p.published_port));
            }
        }
        // 3. New dynamic ports: the lowest free ones.
        for p in out.iter_mut() {
            if !is_ingress(p) || p.published_port != 0 {
                continue;
            }
            let port = (DYNAMIC_PORT_START..=DYNAMIC_PORT_END)
                .find(|&port| {
                    let key = (p.protocol, port);
                    !taken.contains(&key) && held_by_other(&self.ports, &key).is_none()
                })
                .ok_or_else(|| AllocError::PortsExhausted {
                    protocol: protocol_name(p.protocol),
                })?;
            p.published_port = port;
            taken.insert((p.protocol, port));
        }
        // Commit: the service's old ports go, the new ones come.
        self.ports.retain(|_, h| h.service_id != service_id);
        for p in out.iter().filter(|p| is_ingress(p)) {
            self.ports.insert(
                (p.protocol, p.published_port),
                PortHolder {
                    service_id: service_id.to_string(),
                    service_name: service_name.to_string(),
                },
            );
        }
        if let Some(ingress) = self.ingress.clone()
            && (out.iter().any(is_ingress) || previous.iter().any(is_ingress))
        {
            self.touch(&ingress);
        }
        self.service_ports
            .insert(service_id.to_string(), out.clone());
        Ok(out)
    }

    /// The service whose ingress port this is, if any.
    pub fn port_holder(&self, protocol: i32, port: u32) -> Option<&str> {
        self.ports
            .get(&(protocol, port))
            .map(|h| h.service_id.as_str())
    }

    // --- Services --------------------------------------------------------------------------

    /// Allocates what a service holds — its ports and, in VIP mode, a virtual IP on each
    /// network its tasks attach to — and records it in `service.endpoint`. What the service
    /// held before (its current `endpoint`) is kept where it still applies and released
    /// where not. On error nothing changes, in `self` or in `service`.
    pub fn allocate_service(&mut self, service: &mut Service) -> Result<(), AllocError> {
        let id = meta_id(service.meta.as_ref()).to_string();
        let name = service_name(service).to_string();
        let spec = service
            .spec
            .as_ref()
            .and_then(|s| s.endpoint.clone())
            .unwrap_or_default();
        let networks = service_networks(service, self.ingress.as_deref());
        // Networks first (they can fail without side effects), then ports, then VIPs.
        for n in &networks {
            if !self.pools.contains_key(n) {
                return Err(AllocError::NetworkNotFound(n.clone()));
            }
        }
        let before_ports = (self.ports.clone(), self.service_ports.get(&id).cloned());
        let before_touched = self.touched.clone();
        let ports = self.allocate_service_ports(&id, &name, &spec)?;
        let vip_networks: &[String] = if spec.mode == endpoint_spec::ResolutionMode::Dnsrr as i32 {
            &[]
        } else {
            &networks
        };
        let vips = match self.allocate_vips(&id, vip_networks) {
            Ok(v) => v,
            Err(e) => {
                self.ports = before_ports.0;
                match before_ports.1 {
                    Some(p) => self.service_ports.insert(id.clone(), p),
                    None => self.service_ports.remove(&id),
                };
                self.touched = before_touched;
                return Err(e);
            }
        };
        service.endpoint = Some(shoal_api::v1::Endpoint {
            spec: service.spec.as_ref().and_then(|s| s.endpoint.clone()),
            ports,
            virtual_ips: vips
                .iter()
                .map(|(network, addr)| VirtualIp {
                    network_id: network.clone(),
                    addr: self.pools[network].subnet.cidr(*addr),
                })
                .collect(),
        });
        Ok(())
    }

    /// The service's virtual IPs on `networks`: kept where it has one, allocated where not;
    /// those on other networks released. On error nothing changes.
    fn allocate_vips(
        &mut self,
        service_id: &str,
        networks: &[String],
    ) -> Result<Vec<(String, u32)>, AllocError> {
        let owner = Owner::Vip(service_id.to_string());
        let current = self
            .service_vips
            .get(service_id)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        for network in networks {
            if let Some(kept) = current.iter().find(|(n, _)| n == network) {
                out.push(kept.clone());
                continue;
            }
            let pool = self
                .pools
                .get_mut(network)
                .ok_or_else(|| AllocError::NetworkNotFound(network.clone()))?;
            match pool.allocate(owner.clone()) {
                Some(addr) => {
                    fresh.push((network.clone(), addr));
                    out.push((network.clone(), addr));
                }
                None => {
                    let e = AllocError::AddressesExhausted {
                        network: pool.name.clone(),
                        subnet: pool.subnet.to_string(),
                    };
                    for (n, a) in fresh {
                        if let Some(p) = self.pools.get_mut(&n) {
                            p.release(a, &owner);
                        }
                    }
                    return Err(e);
                }
            }
        }
        for (network, addr) in &current {
            if !networks.contains(network)
                && let Some(pool) = self.pools.get_mut(network)
            {
                pool.release(*addr, &owner);
            }
        }
        for (network, _) in &fresh {
            self.touch(network);
        }
        self.service_vips
            .insert(service_id.to_string(), out.clone());
        Ok(out)
    }

    /// Releases everything a service holds (it was removed).
    pub fn release_service(&mut self, service_id: &str) {
        self.ports.retain(|_, h| h.service_id != service_id);
        self.service_ports.remove(service_id);
        let owner = Owner::Vip(service_id.to_string());
        for (network, addr) in self.service_vips.remove(service_id).unwrap_or_default() {
            if let Some(pool) = self.pools.get_mut(&network) {
                pool.release(addr, &owner);
            }
        }
    }

    // --- Tasks -----------------------------------------------------------------------------

    /// Gives a new task of `service` an address on each network the service's tasks attach to
    /// (`task.networks`, with the aliases of the service's spec), and copies the service's
    /// endpoint (its allocated ports) into `task.endpoint`, which the scheduler's host-port
    /// filter reads. Addresses the task already holds are kept. On error nothing changes.
    ///
    /// This is what the orchestrator calls for every task it creates, before scheduling it.
    pub fn allocate_task(&mut self, service: &Service, task: &mut Task) -> Result<(), AllocError> {
        let task_id = meta_id(task.meta.as_ref()).to_string();
        let owner = Owner::Task(task_id.clone());
        let networks = service_networks(service, self.ingress.as_deref());
        let configs = service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .map(|t| t.networks.clone())
            .unwrap_or_default();
        let current = self.task_addrs.get(&task_id).cloned().unwrap_or_default();
        let mut attachments = Vec::new();
        let mut held = Vec::new();
        let mut fresh: Vec<(String, u32)> = Vec::new();
        for network in &networks {
            let Some(pool) = self.pools.get_mut(network) else {
                for (n, a) in &fresh {
                    if let Some(p) = self.pools.get_mut(n) {
                        p.release(*a, &owner);
                    }
                }
                return Err(AllocError::NetworkNotFound(network.clone()));
            };
            let addr = match current.iter().find(|(n, _)| n == network) {
                Some((_, a)) => *a,
                None => match pool.allocate(owner.clone()) {
                    Some(a) => {
                        fresh.push((network.clone(), a));
                        a
                    }
                    None => {
                        let e = AllocError::AddressesExhausted {
                            network: pool.name.clone(),
                            subnet: pool.subnet.to_string(),
                        };
                        for (n, a) in &fresh {
                            if let Some(p) = self.pools.get_mut(n) {
                                p.release(*a, &owner);
                            }
                        }
                        return Err(e);
                    }
                },
            };
            let config = configs.iter().find(|c| &c.target == network);
            attachments.push(NetworkAttachment {
                network_id: network.clone(),
                addresses: vec![pool.subnet.cidr(addr)],
                aliases: config.map(|c| c.aliases.clone()).unwrap_or_default(),
                driver_attachment_opts: config
                    .map(|c| c.driver_attachment_opts.clone())
                    .unwrap_or_default(),
            });
            held.push((network.clone(), addr));
        }
        for (network, addr) in &current {
            if !networks.contains(network)
                && let Some(pool) = self.pools.get_mut(network)
            {
                pool.release(*addr, &owner);
            }
        }
        for (network, _) in &fresh {
            self.touch(network);
        }
        if held.is_empty() {
            self.task_addrs.remove(&task_id);
        } else {
            self.task_addrs.insert(task_id, held);
        }
        task.networks = attachments;
        task.endpoint = service.endpoint.clone().map(Box::new);
        Ok(())
    }

    /// Releases a task's addresses (it was removed, or has ended).
    pub fn release_task(&mut self, task_id: &str) {
        let owner = Owner::Task(task_id.to_string());
        for (network, addr) in self.task_addrs.remove(task_id).unwrap_or_default() {
            if let Some(pool) = self.pools.get_mut(&network) {
                pool.release(addr, &owner);
            }
        }
    }

    /// Addresses in use on a network (the gateway's included), for tests and diagnostics.
    pub fn addresses_in_use(&self, network_id: &str) -> usize {
        self.pools.get(network_id).map_or(0, Pool::in_use)
    }
}
