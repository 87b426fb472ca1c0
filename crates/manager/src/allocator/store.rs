//! The allocator's reads of the store: building [`Allocations`] inside a transaction,
//! resolving the networks a spec names, and the lazily created ingress network.

use std::collections::HashSet;
use std::sync::Arc;

use shoal_api::v1::{Annotations, Driver, Meta, Network, NetworkSpec, Service, ServiceSpec, Task};
use shoal_store::{By, Reader, StoreError};

use super::{AllocError, Allocations, INGRESS_NETWORK, OVERLAY_DRIVER, publishes_ingress};

impl Allocations {
    /// Builds the allocations from everything the store holds.
    pub fn read_all(tx: &impl Reader) -> Self {
        Self::from_objects(
            &tx.find::<Network>(By::All),
            &tx.find::<Service>(By::All),
            &tx.find::<Task>(By::All),
        )
    }

    /// Builds what allocating a service's ports and virtual IPs needs, without reading every
    /// task: all networks and services, and the tasks attached to `networks` (the service's
    /// networks; the ingress network is added when the spec publishes ingress ports).
    pub fn read_for_service(tx: &impl Reader, spec: &ServiceSpec) -> Self {
        let mut a = Self::new();
        for n in tx.find::<Network>(By::All) {
            a.add_network(n);
        }
        for s in tx.find::<Service>(By::All) {
            a.add_service(&s);
        }
        let mut networks: Vec<String> = spec
            .task
            .as_ref()
            .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
            .unwrap_or_default();
        if let Some(ingress) = a.ingress()
            && publishes_ingress(spec.endpoint.as_ref())
        {
            networks.push(ingress.to_string());
        }
        let mut seen: HashSet<String> = HashSet::new();
        for network in &networks {
            for t in tx.find::<Task>(By::ReferencedNetwork(network)) {
                let id = t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
                if seen.insert(id) {
                    a.add_task(&t);
                }
            }
        }
        a
    }
}

/// Rewrites the `task.networks` targets of a spec — network names, IDs or unique ID
/// prefixes — as network IDs, as they are stored.
pub fn resolve_network_targets(tx: &impl Reader, spec: &mut ServiceSpec) -> Result<(), AllocError> {
    let Some(task) = spec.task.as_mut() else {
        return Ok(());
    };
    if task.networks.is_empty() {
        return Ok(());
    }
    let mut resolved = Vec::with_capacity(task.networks.len());
    for n in &task.networks {
        let network: Arc<Network> = tx.lookup::<Network>(&n.target).map_err(|e| match e {
            StoreError::Ambiguous { .. } => AllocError::NetworkAmbiguous(n.target.clone()),
            _ => AllocError::NetworkNotFound(n.target.clone()),
        })?;
        if network.spec.as_ref().is_some_and(|s| s.ingress) {
            return Err(AllocError::InvalidIpam(format!(
                "network {} is the routing mesh's; services join it by publishing ports in \
                 ingress mode, not through --network",
                n.target
            )));
        }
        let mut config = n.clone();
        config.target = network
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        resolved.push(config);
    }
    if task.networks != resolved {
        task.networks = resolved;
    }
    Ok(())
}

/// The ingress network, when a service publishes ingress ports and there is none yet: the
/// object to create in the same transaction (docker creates it at swarm init; we create it
/// the first time it is needed). It takes the next free subnet like any network.
pub fn ensure_ingress(
    allocations: &mut Allocations,
    spec: &ServiceSpec,
) -> Result<Option<Network>, AllocError> {
    if allocations.ingress().is_some() || !publishes_ingress(spec.endpoint.as_ref()) {
        return Ok(None);
    }
    let id = shoal_api::id::new_id();
    let network_spec = NetworkSpec {
        annotations: Some(Annotations {
            name: INGRESS_NETWORK.into(),
            labels: Vec::new(),
        }),
        driver_config: Some(Driver {
            name: OVERLAY_DRIVER.into(),
            options: Default::default(),
        }),
        ingress: true,
        ..Default::default()
    };
    let ipam = allocations.allocate_network(&id, &network_spec)?;
    Ok(Some(Network {
        meta: Some(Meta {
            id,
            ..Default::default()
        }),
        spec: Some(network_spec),
        driver_state: Some(Driver {
            name: OVERLAY_DRIVER.into(),
            options: Default::default(),
        }),
        ipam: Some(ipam),
        pending_delete: false,
    }))
}
