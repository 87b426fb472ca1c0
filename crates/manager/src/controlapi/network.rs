//! Networks: create (with their subnet allocated), get, list, remove (refused while in use).
//!
//! Networks are `overlay` networks, and so far bookkeeping only: the allocator gives each a
//! subnet, and services and tasks attached to it addresses in it, but no data plane carries
//! traffic on them yet (see `crate::allocator`).

use std::sync::Arc;

use shoal_api::labels::Labels;
use shoal_api::task_state::is_terminal;
use shoal_api::v1::{
    CreateNetworkRequest, CreateNetworkResponse, Driver, GetNetworkRequest, GetNetworkResponse,
    ListFilters, ListNetworksRequest, ListNetworksResponse, Meta, Network, NetworkSpec,
    RemoveNetworkRequest, RemoveNetworkResponse, Service, Task, TaskState,
};
use shoal_api::{id, validation};
use shoal_store::{By, Reader, Store, StoreError};
use tonic::Status;

use super::{ControlApi, filters_match};
use crate::allocator::{
    AllocError, AllocErrorClass, Allocations, INGRESS_NETWORK, OVERLAY_DRIVER, publishes_ingress,
};
use crate::status::store_status;

/// Subnets are chosen from the networks a transaction sees, and a network being created is
/// not seen by another creation running at the same time: creations that choose a subnet
/// (here, and the ingress network a service's first published port creates) take turns.
pub(super) static SUBNETS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The gRPC status of an allocation refused.
pub(super) fn alloc_status(e: &AllocError) -> Status {
    let message = e.to_string();
    match e.class() {
        AllocErrorClass::InvalidArgument => Status::invalid_argument(message),
        AllocErrorClass::NotFound => Status::not_found(message),
        AllocErrorClass::FailedPrecondition => Status::failed_precondition(message),
        AllocErrorClass::ResourceExhausted => Status::resource_exhausted(message),
    }
}

fn network_matches(n: &Network, f: &ListFilters) -> bool {
    let id = n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let annotations = n.spec.as_ref().and_then(|s| s.annotations.as_ref());
    let name = annotations.map(|a| a.name.as_str()).unwrap_or("");
    let labels = annotations.map(|a| a.labels.as_slice()).unwrap_or(&[]);
    filters_match(id, name, labels, f)
}

fn name_of(spec: &NetworkSpec) -> &str {
    spec.annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn service_label(s: &Service) -> String {
    let name = s
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("");
    name.to_string()
}

/// The spec of a create request: present, valid, the overlay driver (the default), labels in
/// canonical order; not an ingress network (Shoal makes that one itself).
fn checked_spec(spec: Option<NetworkSpec>) -> Result<NetworkSpec, Status> {
    let mut spec =
        spec.ok_or_else(|| Status::invalid_argument("invalid spec: a network spec is required"))?;
    validation::validate_network_spec(&spec)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if spec.ingress || name_of(&spec).eq_ignore_ascii_case(INGRESS_NETWORK) {
        return Err(Status::invalid_argument(format!(
            "the {INGRESS_NETWORK} network is Shoal's own: it is created when a service first \
             publishes a port in ingress mode; choose another name"
        )));
    }
    let driver = spec.driver_config.get_or_insert_with(Driver::default);
    if driver.name.is_empty() {
        driver.name = OVERLAY_DRIVER.into();
    }
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.normalize_labels();
    }
    Ok(spec)
}

/// The network calls that write, on a store.
pub(super) struct Networks<'a> {
    pub(super) store: &'a Store,
}

impl Networks<'_> {
    /// Creates a network from a checked spec, its subnet allocated.
    async fn create(&self, spec: NetworkSpec) -> Result<Network, Status> {
        let _turn = SUBNETS.lock().await;
        let name = name_of(&spec).to_string();
        let network_id = id::new_id();
        let mut refusal = None;
        let result = self
            .store
            .update(|tx| {
                if !tx.find::<Network>(By::Name(&name)).is_empty() {
                    return Err(StoreError::NameConflict {
                        kind: "network",
                        name: name.clone(),
                    });
                }
                let mut allocations = Allocations::new();
                for n in tx.find::<Network>(By::All) {
                    allocations.add_network(n);
                }
                let ipam = match allocations.allocate_network(&network_id, &spec) {
                    Ok(ipam) => ipam,
                    Err(e) => {
                        refusal = Some(alloc_status(&e));
                        return Err(StoreError::InvalidTransaction("refused".into()));
                    }
                };
                tx.create(Network {
                    meta: Some(Meta {
                        id: network_id.clone(),
                        ..Default::default()
                    }),
                    driver_state: spec.driver_config.clone(),
                    spec: Some(spec),
                    ipam: Some(ipam),
                    pending_delete: false,
                })
            })
            .await;
        if let Some(status) = refusal {
            return Err(status);
        }
        result.map_err(|e| match e {
            StoreError::NameConflict { .. } => Status::already_exists(format!(
                "network name {name} is already in use; choose another name"
            )),
            e => store_status(e),
        })?;
        self.store
            .view(|tx| tx.get::<Network>(&network_id))
            .map(|n| (*n).clone())
            .ok_or_else(|| {
                Status::internal(format!(
                    "network {network_id} vanished after it was created"
                ))
            })
    }

    /// Removes a network no service or running task uses.
    async fn remove(&self, reference: &str) -> Result<(), Status> {
        let mut refusal = None;
        let result = self
            .store
            .update(|tx| {
                let network = tx.lookup::<Network>(reference)?;
                let id = network
                    .meta
                    .as_ref()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                let name = network
                    .spec
                    .as_ref()
                    .map(|s| name_of(s).to_string())
                    .unwrap_or_default();
                let mut users: Vec<Arc<Service>> = tx.find::<Service>(By::ReferencedNetwork(&id));
                if network.spec.as_ref().is_some_and(|s| s.ingress) {
                    users.extend(tx.find::<Service>(By::All).into_iter().filter(|s| {
                        publishes_ingress(s.spec.as_ref().and_then(|s| s.endpoint.as_ref()))
                    }));
                }
                if !users.is_empty() {
                    let mut names: Vec<String> = users.iter().map(|s| service_label(s)).collect();
                    names.sort();
                    names.dedup();
                    refusal = Some(Status::failed_precondition(format!(
                        "network {name} is in use by service{} {}; remove {} or detach {} from \
                         the network first",
                        if names.len() == 1 { "" } else { "s" },
                        names.join(", "),
                        if names.len() == 1 { "it" } else { "them" },
                        if names.len() == 1 { "it" } else { "them" },
                    )));
                    return Err(StoreError::InvalidTransaction("refused".into()));
                }
                let running = tx
                    .find::<Task>(By::ReferencedNetwork(&id))
                    .iter()
                    .filter(|t| {
                        let state = t.status.as_ref().map_or(0, |s| s.state);
                        !is_terminal(TaskState::try_from(state).unwrap_or(TaskState::New))
                    })
                    .count();
                if running > 0 {
                    refusal = Some(Status::failed_precondition(format!(
                        "network {name} is in use by {running} task(s) that have not stopped \
                         yet; try again once they have"
                    )));
                    return Err(StoreError::InvalidTransaction("refused".into()));
                }
                tx.delete::<Network>(&id)
            })
            .await;
        if let Some(status) = refusal {
            return Err(status);
        }
        result.map_err(store_status)
    }
}

impl ControlApi {
    fn networks(&self) -> Networks<'_> {
        Networks { store: &self.store }
    }

    pub(super) async fn get_network(
        &self,
        request: GetNetworkRequest,
    ) -> Result<GetNetworkResponse, Status> {
        self.linearize().await?;
        let reference = if request.network_id.is_empty() {
            request.name
        } else {
            request.network_id
        };
        let network = self
            .store
            .view(|tx| tx.lookup::<Network>(&reference))
            .map_err(store_status)?;
        Ok(GetNetworkResponse {
            network: Some((*network).clone()),
        })
    }

    pub(super) async fn list_networks(
        &self,
        request: ListNetworksRequest,
    ) -> Result<ListNetworksResponse, Status> {
        self.linearize().await?;
        let filters = request.filters.unwrap_or_default();
        let networks = self.store.view(|tx| {
            tx.find::<Network>(By::All)
                .into_iter()
                .filter(|n| network_matches(n, &filters))
                .map(|n| (*n).clone())
                .collect()
        });
        Ok(ListNetworksResponse { networks })
    }

    pub(super) async fn create_network(
        &self,
        request: CreateNetworkRequest,
    ) -> Result<CreateNetworkResponse, Status> {
        let spec = checked_spec(request.spec)?;
        self.require_leader()?;
        let network = self.networks().create(spec).await?;
        Ok(CreateNetworkResponse {
            network: Some(network),
        })
    }

    pub(super) async fn remove_network(
        &self,
        request: RemoveNetworkRequest,
    ) -> Result<RemoveNetworkResponse, Status> {
        self.require_leader()?;
        let reference = if request.network_id.is_empty() {
            request.name
        } else {
            request.network_id
        };
        self.networks().remove(&reference).await?;
        Ok(RemoveNetworkResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::clock::ManualClock;
    use shoal_api::v1::{Annotations, IpamConfig, IpamOptions};
    use shoal_store::{DEFAULT_WATCH_CAPACITY, LocalProposer};
    use std::future::Future;
    use tonic::Code;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(f)
    }

    fn store() -> Store {
        let clock = Arc::new(ManualClock::at_unix_seconds(1_700_000_000));
        Store::with(Arc::new(LocalProposer), clock, DEFAULT_WATCH_CAPACITY)
    }

    pub(crate) fn spec(name: &str, subnet: &str) -> NetworkSpec {
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

    fn create(n: &Networks<'_>, spec: NetworkSpec) -> Result<Network, Status> {
        block_on(n.create(checked_spec(Some(spec))?))
    }

    fn subnet(n: &Network) -> &str {
        &n.ipam.as_ref().unwrap().configs[0].subnet
    }

    #[test]
    fn networks_get_a_subnet_and_unique_names() {
        let store = store();
        let n = Networks { store: &store };
        let one = create(&n, spec("one", "")).unwrap();
        assert_eq!(subnet(&one), "10.0.0.0/24");
        assert_eq!(one.ipam.as_ref().unwrap().configs[0].gateway, "10.0.0.1");
        assert_eq!(
            one.spec
                .as_ref()
                .unwrap()
                .driver_config
                .as_ref()
                .unwrap()
                .name,
            "overlay"
        );
        assert_eq!(one.driver_state.as_ref().unwrap().name, "overlay");
        let two = create(&n, spec("two", "10.0.1.0/24")).unwrap();
        assert_eq!(subnet(&two), "10.0.1.0/24");
        assert_eq!(
            subnet(&create(&n, spec("three", "")).unwrap()),
            "10.0.2.0/24"
        );

        let e = create(&n, spec("ONE", "")).unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let e = create(&n, spec("four", "10.0.1.0/25")).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message()
                .contains("overlaps subnet 10.0.1.0/24 of network two"),
            "{e:?}"
        );
        let mut bridge = spec("five", "");
        bridge.driver_config = Some(Driver {
            name: "bridge".into(),
            options: Default::default(),
        });
        let e = create(&n, bridge).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = create(&n, spec("ingress", "")).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(store.view(|tx| tx.count::<Network>()), 3);
    }

    #[test]
    fn networks_in_use_are_not_removed() {
        let store = store();
        let n = Networks { store: &store };
        let front = create(&n, spec("front", "")).unwrap();
        let id = front.meta.as_ref().unwrap().id.clone();
        let service = Service {
            meta: Some(Meta {
                id: "s1".into(),
                ..Default::default()
            }),
            spec: Some(shoal_api::v1::ServiceSpec {
                annotations: Some(Annotations {
                    name: "web".into(),
                    labels: Vec::new(),
                }),
                task: Some(
                    shoal_api::v1::TaskSpecFields {
                        networks: vec![shoal_api::v1::NetworkAttachmentConfig {
                            target: id.clone(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        block_on(store.update(|tx| tx.create(service))).unwrap();
        let e = block_on(n.remove("front")).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("in use by service web"), "{e:?}");
        block_on(store.update(|tx| tx.delete::<Service>("s1"))).unwrap();
        block_on(n.remove(&id[..6])).unwrap();
        assert_eq!(store.view(|tx| tx.count::<Network>()), 0);
        assert_eq!(
            block_on(n.remove("front")).unwrap_err().code(),
            Code::NotFound
        );
        // Its subnet is free again.
        assert_eq!(
            subnet(&create(&n, spec("again", "")).unwrap()),
            "10.0.0.0/24"
        );
    }
}
