//! Services: create, get, list, update (including rollback to the previous spec), remove, and
//! the per-service task counts `service ls` shows.
//!
//! The calls that write work on a [`Services`] (a store, nothing else), so that tests drive
//! them on a local store; the handlers add the leader check and the read barrier. Creating,
//! updating and removing only write the service object: the orchestrators act on it (they
//! make, redeploy and shut down the tasks).

use shoal_api::labels::Labels;
use shoal_api::v1::{
    Config, ConfigReference, FileTarget, Secret, SecretReference, TaskSpecFields, task_spec,
};
use shoal_api::v1::{
    CreateServiceRequest, CreateServiceResponse, GetServiceRequest, GetServiceResponse, JobStatus,
    ListFilters, ListServiceStatusesRequest, ListServiceStatusesResponse, ListServicesRequest,
    ListServicesResponse, Meta, Network, RemoveServiceRequest, RemoveServiceResponse,
    ReplicatedService, Service, ServiceSpec, Task, TaskState, UpdateServiceRequest,
    UpdateServiceResponse, UpdateStatus, list_service_statuses_response::ServiceStatus,
    service_spec, update_service_request, update_status,
};
use shoal_api::{id, validation};
use shoal_store::{By, Reader, Store, StoreError, WriteTx};
use tonic::Status;

use super::network::alloc_status;
use super::{ControlApi, filters_match};
use crate::allocator::{
    AllocError, Allocations, ensure_ingress, publishes_ingress, resolve_network_targets,
};
use crate::status::store_status;

fn service_matches(service: &Service, filters: &ListFilters) -> bool {
    let id = service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let annotations = service.spec.as_ref().and_then(|s| s.annotations.as_ref());
    let name = annotations.map(|a| a.name.as_str()).unwrap_or("");
    let labels = annotations.map(|a| a.labels.as_slice()).unwrap_or(&[]);
    filters_match(id, name, labels, filters)
}

fn invalid(e: validation::ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn spec_name(spec: &ServiceSpec) -> &str {
    spec.annotations
        .as_ref()
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

fn service_id(service: &Service) -> &str {
    service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The spec of a create request: present, a replicated service of one replica when no mode is
/// given (as docker does), labels in canonical order, valid.
fn checked_new_spec(spec: Option<ServiceSpec>) -> Result<ServiceSpec, Status> {
    let mut spec =
        spec.ok_or_else(|| Status::invalid_argument("invalid spec: a service spec is required"))?;
    if spec.mode.is_none() {
        spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 1,
        }));
    }
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.normalize_labels();
    }
    validation::validate_service_spec(&spec).map_err(invalid)?;
    Ok(spec)
}

/// The refusal of a name another service holds (names are unique, case-insensitively).
fn name_in_use(name: &str) -> Status {
    Status::already_exists(format!(
        "service name {name} is already in use; choose another name, or update the existing \
         service"
    ))
}

/// The refusal of an update made from a stale read (docker's words first).
fn out_of_sequence(id: &str, read: u64, current: u64) -> Status {
    Status::failed_precondition(format!(
        "update out of sequence: service {id} has changed since it was read (version {read} \
         was read, it is now at {current}); read it again and retry"
    ))
}

/// The service after an update: `current` with `spec` (or, for a rollback, with its previous
/// spec). `None` when nothing changes (the same spec again). Validation of a new spec against
/// the current one happens here too.
fn updated_service(
    current: &Service,
    spec: Option<ServiceSpec>,
    rollback: bool,
    now: prost_types::Timestamp,
) -> Result<Option<Service>, Status> {
    let id = service_id(current).to_string();
    let current_spec = current.spec.clone().unwrap_or_default();
    let mut next = current.clone();
    if rollback {
        let status = UpdateStatus {
            state: update_status::UpdateState::RollbackStarted as i32,
            started_at: Some(now),
            completed_at: None,
            message: "manually requested rollback".into(),
        };
        let mut next =
            crate::orchestrator::update::rolled_back(current, status).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "service {id} does not have a previous spec to roll back to (it was never \
                 updated)"
                ))
            })?;
        rerun_job(&mut next, now);
        return Ok(Some(next));
    }
    let mut spec = spec.ok_or_else(|| {
        Status::invalid_argument(
            "invalid spec: a service spec is required (or ask for a rollback to the previous one)",
        )
    })?;
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.normalize_labels();
    }
    validation::validate_service_update(&current_spec, &spec).map_err(invalid)?;
    if spec == current_spec {
        // The same spec again: no new spec version, so no task is redeployed. (Changing
        // only `task.force_update` is a change, and redeploys.)
        return Ok(None);
    }
    next.previous_spec = Some(Box::new(current_spec));
    next.previous_spec_version = current.spec_version;
    next.spec = Some(spec);
    next.spec_version = current.spec_version + 1;
    next.update_status = None;
    rerun_job(&mut next, now);
    Ok(Some(next))
}

/// Whether the service is a job (replicated or global).
fn is_job(service: &Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(service_spec::Mode::ReplicatedJob(_) | service_spec::Mode::GlobalJob(_))
    )
}

/// A job's spec changed: it runs again, as a new iteration (docker's rule: updating a job
/// re-runs it). Services that are not jobs are left alone.
fn rerun_job(service: &mut Service, now: prost_types::Timestamp) {
    if !is_job(service) {
        service.job_status = None;
        return;
    }
    let iteration = service
        .job_status
        .as_ref()
        .map_or(0, |j| j.job_iteration + 1);
    service.job_status = Some(JobStatus {
        job_iteration: iteration,
        last_execution: Some(now),
    });
}

/// Task counts of one service, as `service ls` shows them (SwarmKit's rules): desired is the
/// replica count of a replicated service (the concurrency of a replicated job), else the
/// number of tasks meant to run; running counts tasks running that are meant to; completed
/// counts finished tasks (jobs). Tasks of an earlier job iteration do not count.
fn service_status(service: &Service, tasks: &[std::sync::Arc<Task>]) -> ServiceStatus {
    let mode = service.spec.as_ref().and_then(|s| s.mode.as_ref());
    let iteration = service.job_status.as_ref().map(|j| j.job_iteration);
    let is_job = matches!(
        mode,
        Some(service_spec::Mode::ReplicatedJob(_)) | Some(service_spec::Mode::GlobalJob(_))
    );
    let mut status = ServiceStatus {
        service_id: service_id(service).to_string(),
        ..Default::default()
    };
    let running = TaskState::Running as i32;
    let complete = TaskState::Complete as i32;
    for task in tasks {
        if is_job && iteration.is_some_and(|i| task.job_iteration != i) {
            continue;
        }
        let state = task.status.as_ref().map(|s| s.state).unwrap_or(0);
        if task.desired_state == running && state == running {
            status.running_tasks += 1;
        }
        if state == complete {
            status.completed_tasks += 1;
        }
        match mode {
            Some(service_spec::Mode::Global(_)) if task.desired_state == running => {
                status.desired_tasks += 1;
            }
            Some(service_spec::Mode::GlobalJob(_))
                if task.desired_state == running || task.desired_state == complete =>
            {
                status.desired_tasks += 1;
            }
            _ => {}
        }
    }
    match mode {
        Some(service_spec::Mode::Replicated(r)) => status.desired_tasks = r.replicas,
        Some(service_spec::Mode::ReplicatedJob(j)) => {
            status.desired_tasks = if j.max_concurrent == 0 {
                j.total_completions
            } else {
                j.max_concurrent
            }
        }
        _ => {}
    }
    status
}

/// The service calls that write, on a store.
pub(super) struct Services<'a> {
    pub(super) store: &'a Store,
}

impl Services<'_> {
    /// Creates a service from a checked spec.
    async fn create(&self, spec: ServiceSpec) -> Result<Service, Status> {
        let name = spec_name(&spec).to_string();
        let service = Service {
            meta: Some(Meta {
                id: id::new_id(),
                ..Default::default()
            }),
            spec: Some(spec),
            spec_version: 1,
            ..Default::default()
        };
        let mut service = service;
        if is_job(&service) {
            // The first run, iteration 0.
            service.job_status = Some(JobStatus {
                job_iteration: 0,
                last_execution: Some(shoal_api::clock::Clock::timestamp(
                    &shoal_api::clock::SystemClock,
                )),
            });
        }
        let created_id = service_id(&service).to_string();
        let _turn = subnet_turn(self.store, service.spec.as_ref()).await;
        let mut attempt = 0;
        loop {
            // Ports and addresses are allocated in the transaction that writes the service.
            let mut refusal = None;
            let mut candidate = service.clone();
            let result = self
                .store
                .update(|tx| {
                    if !tx.find::<Service>(By::Name(&name)).is_empty() {
                        return Err(StoreError::NameConflict {
                            kind: "service",
                            name: name.clone(),
                        });
                    }
                    if let Some(spec) = candidate.spec.as_mut()
                        && let Err(status) = resolve_file_references(tx, spec)
                    {
                        refusal = Some(status);
                        return Err(StoreError::InvalidTransaction("refused".into()));
                    }
                    allocate_endpoint(tx, &mut candidate, &mut refusal)?;
                    tx.create(candidate)
                })
                .await;
            if let Some(status) = refusal {
                return Err(status);
            }
            match result {
                Err(e) if lost_allocation_race(&e) && attempt < ALLOCATION_ATTEMPTS => {
                    attempt += 1;
                }
                result => {
                    result.map_err(|e| match e {
                        StoreError::NameConflict { .. } => name_in_use(&name),
                        e => store_status(e),
                    })?;
                    break;
                }
            }
        }
        self.store
            .view(|tx| tx.get::<Service>(&created_id))
            .map(|s| (*s).clone())
            .ok_or_else(|| {
                Status::internal(format!(
                    "service {created_id} vanished after it was created"
                ))
            })
    }

    /// Updates a service: a new spec, or a rollback to the previous one.
    async fn update(&self, request: UpdateServiceRequest) -> Result<Service, Status> {
        let rollback = request.rollback == update_service_request::Rollback::Previous as i32;
        let reference = request.service_id.clone();
        let _turn = subnet_turn(self.store, request.spec.as_ref()).await;
        let mut attempt = 0;
        let result = loop {
            let mut refusal = None;
            let request = request.clone();
            let result = self
                .store
                .update(|tx| {
                    let current = tx.lookup::<Service>(&reference)?;
                    let read = current.meta.as_ref().map(|m| m.version).unwrap_or(0);
                    let id = service_id(&current).to_string();
                    if read != request.service_version {
                        return Err(StoreError::SequenceConflict {
                            kind: "service",
                            id,
                            read: request.service_version,
                            current: read,
                        });
                    }
                    let mut spec = request.spec;
                    if let Some(spec) = spec.as_mut()
                        && let Err(e) = resolve_network_targets(tx, spec)
                    {
                        refusal = Some(alloc_status(&e));
                        return Err(StoreError::InvalidTransaction("refused".into()));
                    }
                    if let Some(spec) = spec.as_mut()
                        && let Err(status) = resolve_file_references(tx, spec)
                    {
                        refusal = Some(status);
                        return Err(StoreError::InvalidTransaction("refused".into()));
                    }
                    match updated_service(&current, spec, rollback, tx.now()) {
                        Ok(Some(mut next)) => {
                            // A rollback's spec must still find its secrets and configs.
                            if rollback
                                && let Some(spec) = next.spec.as_mut()
                                && let Err(status) = resolve_file_references(tx, spec)
                            {
                                refusal = Some(status);
                                return Err(StoreError::InvalidTransaction("refused".into()));
                            }
                            allocate_endpoint(tx, &mut next, &mut refusal)?;
                            tx.update(next).map(|()| id)
                        }
                        // The same spec again: written anyway (as docker does), so the
                        // service's version rises and clients that read it back see their
                        // write; nothing else changes and nothing is redeployed.
                        Ok(None) => tx.update(Service::clone(&current)).map(|()| id),
                        Err(status) => {
                            refusal = Some(status);
                            Err(StoreError::InvalidTransaction("refused".into()))
                        }
                    }
                })
                .await;
            if let Some(status) = refusal {
                return Err(status);
            }
            match result {
                Err(e) if lost_allocation_race(&e) && attempt < ALLOCATION_ATTEMPTS => {
                    attempt += 1;
                }
                result => break result,
            }
        };
        let id = match result {
            Ok(id) => id,
            Err(StoreError::SequenceConflict {
                id, read, current, ..
            }) => return Err(out_of_sequence(&id, read, current)),
            Err(e) => return Err(store_status(e)),
        };
        self.store
            .view(|tx| tx.get::<Service>(&id))
            .map(|s| (*s).clone())
            .ok_or_else(|| Status::not_found(format!("service {id} not found")))
    }

    /// Removes a service object; its tasks are shut down by the orchestrator.
    async fn remove(&self, reference: &str) -> Result<(), Status> {
        self.store
            .update(|tx| {
                let service = tx.lookup::<Service>(reference)?;
                tx.delete::<Service>(service_id(&service))
            })
            .await
            .map_err(store_status)
    }

    /// Task counts of the services named by ID (every service when none is named). IDs of
    /// services that do not exist (any more) are skipped.
    fn statuses(&self, ids: &[String]) -> Vec<ServiceStatus> {
        self.store.view(|tx| {
            let services: Vec<std::sync::Arc<Service>> = if ids.is_empty() {
                tx.find::<Service>(By::All)
            } else {
                ids.iter().filter_map(|id| tx.get::<Service>(id)).collect()
            };
            services
                .iter()
                .map(|s| service_status(s, &tx.find::<Task>(By::Service(service_id(s)))))
                .collect()
        })
    }
}

impl ControlApi {
    fn services(&self) -> Services<'_> {
        Services { store: &self.store }
    }

    pub(super) async fn get_service(
        &self,
        request: GetServiceRequest,
    ) -> Result<GetServiceResponse, Status> {
        self.linearize().await?;
        let service = self
            .store
            .view(|tx| tx.lookup::<Service>(&request.service_id))
            .map_err(store_status)?;
        Ok(GetServiceResponse {
            service: Some((*service).clone()),
        })
    }

    pub(super) async fn list_services(
        &self,
        request: ListServicesRequest,
    ) -> Result<ListServicesResponse, Status> {
        self.linearize().await?;
        let filters = request.filters.unwrap_or_default();
        let services = self.store.view(|tx| {
            tx.find::<Service>(By::All)
                .into_iter()
                .filter(|s| service_matches(s, &filters))
                .map(|s| (*s).clone())
                .collect()
        });
        Ok(ListServicesResponse { services })
    }

    pub(super) async fn create_service(
        &self,
        request: CreateServiceRequest,
    ) -> Result<CreateServiceResponse, Status> {
        self.require_leader()?;
        let mut spec = request.spec;
        if let Some(spec) = spec.as_mut() {
            // Names (and ID prefixes) become IDs before validation, which wants IDs; the
            // transaction that writes the service checks them again.
            self.store.view(|tx| resolve_file_references(tx, spec))?;
        }
        let spec = checked_new_spec(spec)?;
        let service = self.services().create(spec).await?;
        Ok(CreateServiceResponse {
            service: Some(service),
        })
    }

    pub(super) async fn update_service(
        &self,
        request: UpdateServiceRequest,
    ) -> Result<UpdateServiceResponse, Status> {
        self.require_leader()?;
        let service = self.services().update(request).await?;
        Ok(UpdateServiceResponse {
            service: Some(service),
        })
    }

    pub(super) async fn remove_service(
        &self,
        request: RemoveServiceRequest,
    ) -> Result<RemoveServiceResponse, Status> {
        self.require_leader()?;
        self.services().remove(&request.service_id).await?;
        Ok(RemoveServiceResponse {})
    }

    pub(super) async fn list_service_statuses(
        &self,
        request: ListServiceStatusesRequest,
    ) -> Result<ListServiceStatusesResponse, Status> {
        self.linearize().await?;
        Ok(ListServiceStatusesResponse {
            statuses: self.services().statuses(&request.services),
        })
    }
}

// --- Allocation (ports, virtual IPs) ------------------------------------------------------

/// How many times a create or update is tried when its allocation lost a race with another
/// allocation from the same network (see `crate::allocator`, "Concurrency").
const ALLOCATION_ATTEMPTS: u32 = 5;

/// Whether a transaction failed because a network it allocated from (a guard) changed, or
/// the ingress network it created was created meanwhile: it can be built again.
fn lost_allocation_race(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::SequenceConflict {
            kind: "network",
            ..
        } | StoreError::NameConflict {
            kind: "network",
            ..
        }
    )
}

/// The turn to choose a subnet, taken when the service's spec publishes an ingress port and
/// there is no ingress network yet (this transaction creates it).
async fn subnet_turn(
    store: &Store,
    spec: Option<&ServiceSpec>,
) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    let publishes = spec.is_some_and(|s| publishes_ingress(s.endpoint.as_ref()));
    let has_ingress = || {
        store.view(|tx| {
            tx.find::<Network>(By::All)
                .iter()
                .any(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
        })
    };
    if publishes && !has_ingress() {
        Some(super::network::SUBNETS.lock().await)
    } else {
        None
    }
}

/// Allocates, in `tx`, what the service holds: network targets resolved to IDs, its
/// published ports and its virtual IPs, written into `service.endpoint`; the ingress network
/// is created if the service is the first to publish an ingress port, and the networks
/// allocated from are written back as guards. A refusal is left in `refusal` (and fails the
/// transaction, so nothing changes). A service with no ports and no networks that holds
/// nothing is left alone.
fn allocate_endpoint(
    tx: &mut WriteTx<'_>,
    service: &mut Service,
    refusal: &mut Option<Status>,
) -> Result<(), StoreError> {
    let mut refuse = |e: AllocError| {
        *refusal = Some(alloc_status(&e));
        StoreError::InvalidTransaction("refused".into())
    };
    let Some(spec) = service.spec.as_mut() else {
        return Ok(());
    };
    let has_ports = spec.endpoint.as_ref().is_some_and(|e| !e.ports.is_empty());
    let has_networks = spec.task.as_ref().is_some_and(|t| !t.networks.is_empty());
    if !has_ports && !has_networks && service.endpoint.is_none() {
        return Ok(());
    }
    resolve_network_targets(tx, spec).map_err(&mut refuse)?;
    let mut allocations = Allocations::read_for_service(tx, spec);
    if let Some(ingress) = ensure_ingress(&mut allocations, spec).map_err(&mut refuse)? {
        tx.create(ingress)?;
    }
    allocations.allocate_service(service).map_err(&mut refuse)?;
    for guard in allocations.guards() {
        tx.update(guard)?;
    }
    Ok(())
}

// --- Secret and config references -----------------------------------------------------------

/// The default mode of a secret's file when the reference gives none (readable by its owner
/// only).
const SECRET_FILE_MODE: u32 = 0o400;
/// The default mode of a config's file when the reference gives none (readable by all).
const CONFIG_FILE_MODE: u32 = 0o444;

/// The secret and config references of a spec's runtime, if it has any.
fn file_references(
    spec: &mut ServiceSpec,
) -> Option<(&mut Vec<SecretReference>, &mut Vec<ConfigReference>)> {
    let has_any = match spec.task.as_ref().and_then(|t| t.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => !c.secrets.is_empty() || !c.configs.is_empty(),
        Some(task_spec::Runtime::Process(p)) => !p.secrets.is_empty() || !p.configs.is_empty(),
        None => false,
    };
    if !has_any {
        // Nothing to resolve: no copy of the shared task spec.
        return None;
    }
    let task: &mut TaskSpecFields = spec.task.as_mut()?;
    match task.runtime.as_mut()? {
        task_spec::Runtime::Container(c) => Some((&mut c.secrets, &mut c.configs)),
        task_spec::Runtime::Process(p) => Some((&mut p.secrets, &mut p.configs)),
    }
}

/// The reference a user gave: the ID field, or the name when the ID is left empty.
fn named_reference<'a>(id: &'a str, name: &'a str) -> &'a str {
    if id.is_empty() { name } else { id }
}

/// The refusal of a reference that finds nothing (or several objects).
fn reference_status(kind: &str, reference: &str, error: StoreError) -> Status {
    match error {
        StoreError::NotFound { .. } => Status::not_found(format!(
            "{kind} {reference} not found: create it first (`shoal {kind} create {reference} \
             FILE`) or fix the service's --{kind} reference; nothing was changed"
        )),
        StoreError::Ambiguous { matches, .. } => Status::invalid_argument(format!(
            "{kind} reference {reference} is ambiguous: it is a prefix of {matches} {kind} IDs; \
             give the {kind}'s name or more of its ID"
        )),
        e => store_status(e),
    }
}

/// The file target of a reference with its defaults filled in: the object's name as the
/// file name, and `mode` when none is given.
fn filled_target(file: Option<FileTarget>, name: &str, mode: u32) -> FileTarget {
    let mut file = file.unwrap_or_default();
    if file.name.is_empty() {
        file.name = name.to_string();
    }
    if file.mode == 0 {
        file.mode = mode;
    }
    file
}

/// Resolves every secret and config the spec references to the object it means — by ID,
/// else by name (the ID field left empty, or holding a name), else by unique ID prefix — and
/// stores the object's ID and name in the reference, with the file target's defaults (the
/// object's name; mode 0400 for secrets, 0444 for configs). A reference that finds nothing,
/// or an internal secret, is refused (NOT_FOUND), an ambiguous one too (INVALID_ARGUMENT).
/// In a write transaction, the objects are read by ID, so that a removal applied between
/// this check and the write fails the write. (A removal built before the service is written
/// and applied after it is not caught here: its task is then refused by its node, which
/// never received the secret.)
fn resolve_file_references<R: Reader>(tx: &R, spec: &mut ServiceSpec) -> Result<(), Status> {
    let Some((secrets, configs)) = file_references(spec) else {
        return Ok(());
    };
    for r in secrets.iter_mut() {
        let reference = named_reference(&r.secret_id, &r.secret_name).to_string();
        if reference.is_empty() {
            return Err(Status::invalid_argument(
                "invalid spec: a secret reference names no secret (give its name or ID)",
            ));
        }
        let secret = tx
            .lookup::<Secret>(&reference)
            .map_err(|e| reference_status("secret", &reference, e))?;
        let id = secret
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        if secret.internal || tx.get::<Secret>(&id).is_none() {
            return Err(reference_status(
                "secret",
                &reference,
                StoreError::NotFound {
                    kind: "secret",
                    what: reference.clone(),
                },
            ));
        }
        let name = secret
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default();
        r.file = Some(filled_target(r.file.take(), &name, SECRET_FILE_MODE));
        r.secret_id = id;
        r.secret_name = name;
    }
    for r in configs.iter_mut() {
        let reference = named_reference(&r.config_id, &r.config_name).to_string();
        if reference.is_empty() {
            return Err(Status::invalid_argument(
                "invalid spec: a config reference names no config (give its name or ID)",
            ));
        }
        let config = tx
            .lookup::<Config>(&reference)
            .map_err(|e| reference_status("config", &reference, e))?;
        let id = config
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        if tx.get::<Config>(&id).is_none() {
            return Err(reference_status(
                "config",
                &reference,
                StoreError::NotFound {
                    kind: "config",
                    what: reference.clone(),
                },
            ));
        }
        let name = config
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default();
        r.file = Some(filled_target(r.file.take(), &name, CONFIG_FILE_MODE));
        r.config_id = id;
        r.config_name = name;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::clock::ManualClock;
    use shoal_api::v1::{
        Annotations, GlobalService, JobStatus, Label, ProcessSpec, ReplicatedJob, TaskSpec,
        TaskSpecFields, TaskStatus, task_spec,
    };
    use shoal_store::{DEFAULT_WATCH_CAPACITY, LocalProposer};
    use std::future::Future;
    use std::sync::Arc;
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

    fn spec(name: &str, mode: Option<service_spec::Mode>) -> ServiceSpec {
        ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: vec![
                    Label {
                        key: "z".into(),
                        value: "1".into(),
                    },
                    Label {
                        key: "a".into(),
                        value: "2".into(),
                    },
                ],
            }),
            task: Some(TaskSpec::from(TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sleep".into(),
                    args: vec!["1000".into()],
                    ..Default::default()
                }))),
                ..Default::default()
            })),
            mode,
            ..Default::default()
        }
    }

    fn replicated(n: u64) -> Option<service_spec::Mode> {
        Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: n,
        }))
    }

    fn create(s: &Services<'_>, spec: ServiceSpec) -> Result<Service, Status> {
        block_on(s.create(checked_new_spec(Some(spec))?))
    }

    fn version(s: &Service) -> u64 {
        s.meta.as_ref().unwrap().version
    }

    fn update_request(s: &Service, spec: ServiceSpec) -> UpdateServiceRequest {
        UpdateServiceRequest {
            service_id: service_id(s).into(),
            service_version: version(s),
            spec: Some(spec),
            rollback: 0,
        }
    }

    #[test]
    fn created_services_get_an_id_a_first_spec_version_and_a_default_mode() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", None)).unwrap();
        assert_eq!(service_id(&web).len(), 25);
        assert_eq!(web.spec_version, 1);
        let stored = web.spec.as_ref().unwrap();
        assert_eq!(stored.mode, replicated(1));
        // Labels in canonical order.
        let keys: Vec<&str> = stored
            .annotations
            .as_ref()
            .unwrap()
            .labels
            .iter()
            .map(|l| l.key.as_str())
            .collect();
        assert_eq!(keys, ["a", "z"]);
        assert!(web.meta.as_ref().unwrap().created_at.is_some());
        let global = create(
            &s,
            spec("agent", Some(service_spec::Mode::Global(GlobalService {}))),
        )
        .unwrap();
        assert!(matches!(
            global.spec.unwrap().mode,
            Some(service_spec::Mode::Global(_))
        ));
        assert_eq!(store.view(|tx| tx.count::<Service>()), 2);
    }

    #[test]
    fn invalid_specs_and_taken_names_are_refused() {
        let store = store();
        let s = Services { store: &store };
        create(&s, spec("web", replicated(2))).unwrap();
        let e = create(&s, spec("WEB", replicated(1))).unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert!(
            e.message().contains("service name WEB is already in use"),
            "{e:?}"
        );
        let mut no_task = spec("x", None);
        no_task.task = None;
        let e = checked_new_spec(Some(no_task)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("spec.task"), "{e:?}");
        let e = checked_new_spec(Some(spec("", None))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(checked_new_spec(None).is_err());
        assert_eq!(store.view(|tx| tx.count::<Service>()), 1);
    }

    #[test]
    fn updates_keep_the_previous_spec_and_raise_the_spec_version() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", replicated(2))).unwrap();
        let v1 = web.spec.clone().unwrap();
        let v2 = spec("web", replicated(5));
        let updated = block_on(s.update(update_request(&web, v2.clone()))).unwrap();
        assert_eq!(updated.spec_version, 2);
        assert_eq!(updated.previous_spec_version, 1);
        assert_eq!(updated.previous_spec.as_deref(), Some(&v1));
        assert_eq!(updated.spec.as_ref().unwrap().mode, replicated(5));
        assert!(version(&updated) > version(&web));

        // The same spec again changes nothing but the object's version (docker-py reads
        // it back and expects it higher); force_update alone is a change.
        let same = block_on(s.update(update_request(&updated, v2.clone()))).unwrap();
        assert!(version(&same) > version(&updated));
        assert_eq!(same.spec, updated.spec);
        assert_eq!(same.spec_version, updated.spec_version);
        assert_eq!(same.previous_spec, updated.previous_spec);
        let updated = same;
        let mut forced = v2.clone();
        forced.task.as_mut().unwrap().force_update += 1;
        let forced = block_on(s.update(update_request(&updated, forced))).unwrap();
        assert_eq!(forced.spec_version, 3);
        assert_eq!(
            forced
                .spec
                .as_ref()
                .unwrap()
                .task
                .as_ref()
                .unwrap()
                .force_update,
            1
        );
    }

    #[test]
    fn stale_updates_are_out_of_sequence() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", replicated(2))).unwrap();
        block_on(s.update(update_request(&web, spec("web", replicated(3))))).unwrap();
        let e = block_on(s.update(update_request(&web, spec("web", replicated(4))))).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().starts_with("update out of sequence"), "{e:?}");
        let now = store
            .view(|tx| tx.get::<Service>(service_id(&web)))
            .unwrap();
        assert_eq!(now.spec.as_ref().unwrap().mode, replicated(3));
    }

    #[test]
    fn updates_cannot_rename_or_change_the_mode() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", replicated(2))).unwrap();
        let e = block_on(s.update(update_request(&web, spec("web2", replicated(2))))).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("renaming services is not supported"),
            "{e:?}"
        );
        let e = block_on(s.update(update_request(
            &web,
            spec("web", Some(service_spec::Mode::Global(GlobalService {}))),
        )))
        .unwrap_err();
        assert!(
            e.message().contains("service mode change is not allowed"),
            "{e:?}"
        );
        let mut missing = update_request(&web, spec("web", replicated(2)));
        missing.service_id = "nope".into();
        let e = block_on(s.update(missing)).unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let mut no_spec = update_request(&web, spec("web", replicated(2)));
        no_spec.spec = None;
        assert_eq!(
            block_on(s.update(no_spec)).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn rollback_swaps_the_spec_with_the_previous_one() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", replicated(2))).unwrap();
        let rollback = |svc: &Service| UpdateServiceRequest {
            service_id: service_id(svc).into(),
            service_version: version(svc),
            spec: None,
            rollback: update_service_request::Rollback::Previous as i32,
        };
        let e = block_on(s.update(rollback(&web))).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(
            e.message().contains("does not have a previous spec"),
            "{e:?}"
        );
        let updated = block_on(s.update(update_request(&web, spec("web", replicated(5))))).unwrap();
        let back = block_on(s.update(rollback(&updated))).unwrap();
        assert_eq!(back.spec.as_ref().unwrap().mode, replicated(2));
        assert_eq!(back.previous_spec.as_ref().unwrap().mode, replicated(5));
        assert_eq!(back.spec_version, 3);
        assert_eq!(back.previous_spec_version, 2);
        let status = back.update_status.unwrap();
        assert_eq!(
            status.state,
            update_status::UpdateState::RollbackStarted as i32
        );
    }

    #[test]
    fn removed_services_are_gone() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", replicated(2))).unwrap();
        block_on(s.remove("web")).unwrap();
        assert!(
            store
                .view(|tx| tx.get::<Service>(service_id(&web)))
                .is_none()
        );
        let e = block_on(s.remove("web")).unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }

    fn task(id: &str, service: &str, desired: TaskState, state: TaskState) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            slot: 1,
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_count_desired_running_and_completed_tasks() {
        use TaskState::{Complete, Pending, Running, Shutdown};
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, spec("web", replicated(3))).unwrap();
        let agent = create(
            &s,
            spec("agent", Some(service_spec::Mode::Global(GlobalService {}))),
        )
        .unwrap();
        let job = create(
            &s,
            spec(
                "job",
                Some(service_spec::Mode::ReplicatedJob(ReplicatedJob {
                    max_concurrent: 0,
                    total_completions: 4,
                })),
            ),
        )
        .unwrap();
        let (w, a, j) = (
            service_id(&web).to_string(),
            service_id(&agent).to_string(),
            service_id(&job).to_string(),
        );
        let tasks = vec![
            task("t1", &w, Running, Running),
            task("t2", &w, Running, Pending),
            task("t3", &w, Shutdown, Running),
            task("t4", &a, Running, Running),
            task("t5", &a, Running, Running),
            task("t6", &a, Shutdown, Shutdown),
            task("t7", &j, Complete, Complete),
            task("t8", &j, Running, Running),
        ];
        block_on(store.update(move |tx| {
            for t in tasks {
                tx.create(t)?;
            }
            Ok(())
        }))
        .unwrap();
        let all = s.statuses(&[]);
        let of = |id: &str| all.iter().find(|st| st.service_id == id).unwrap().clone();
        let counts = |st: ServiceStatus| (st.desired_tasks, st.running_tasks, st.completed_tasks);
        assert_eq!(counts(of(&w)), (3, 1, 0));
        assert_eq!(counts(of(&a)), (2, 2, 0));
        assert_eq!(counts(of(&j)), (4, 1, 1));
        // Named services only; unknown ones are skipped.
        let some = s.statuses(&[w.clone(), "nope".into()]);
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].service_id, w);

        // Tasks of an earlier job iteration do not count.
        let mut later = (*store.view(|tx| tx.get::<Service>(&j)).unwrap()).clone();
        later.job_status = Some(JobStatus {
            job_iteration: 1,
            last_execution: None,
        });
        block_on(store.update(move |tx| tx.update(later))).unwrap();
        assert_eq!(
            counts(s.statuses(std::slice::from_ref(&j))[0].clone()),
            (4, 0, 0)
        );
    }

    fn with_ports(name: &str, ports: &[(u32, u32)]) -> ServiceSpec {
        let mut s = spec(name, replicated(1));
        s.endpoint = Some(shoal_api::v1::EndpointSpec {
            mode: 0,
            ports: ports
                .iter()
                .map(|&(published, target)| shoal_api::v1::PortConfig {
                    published_port: published,
                    target_port: target,
                    ..Default::default()
                })
                .collect(),
        });
        s
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
    fn published_ports_are_allocated_with_the_service() {
        let store = store();
        let s = Services { store: &store };
        let web = create(&s, with_ports("web", &[(8080, 80)])).unwrap();
        assert_eq!(published(&web), [8080]);
        // The ingress network was made for it, and the service has a VIP there.
        let networks = store.view(|tx| tx.find::<Network>(By::All));
        assert_eq!(networks.len(), 1);
        assert!(networks[0].spec.as_ref().unwrap().ingress);
        assert_eq!(web.endpoint.as_ref().unwrap().virtual_ips.len(), 1);

        let e = create(&s, with_ports("api", &[(8080, 8080)])).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().starts_with(&format!(
                "port 8080/tcp is already published by service web (ID {})",
                service_id(&web)
            )),
            "{e:?}"
        );
        assert_eq!(store.view(|tx| tx.count::<Service>()), 1);

        let api = create(&s, with_ports("api", &[(0, 80)])).unwrap();
        assert_eq!(published(&api), [30000]);
        assert_eq!(
            store.view(|tx| tx.count::<Network>()),
            1,
            "one ingress network"
        );

        // An update keeps the dynamic port; one that takes a held port changes nothing.
        let mut next = with_ports("api", &[(0, 80)]);
        next.mode = replicated(3);
        let updated = block_on(s.update(update_request(&api, next))).unwrap();
        assert_eq!(published(&updated), [30000]);
        let e = block_on(s.update(update_request(&updated, with_ports("api", &[(8080, 80)]))))
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let now = store
            .view(|tx| tx.get::<Service>(service_id(&api)))
            .unwrap();
        assert_eq!(*now, updated);

        // Once web is gone, its port is free.
        block_on(s.remove("web")).unwrap();
        let updated =
            block_on(s.update(update_request(&updated, with_ports("api", &[(8080, 80)])))).unwrap();
        assert_eq!(published(&updated), [8080]);
    }

    #[test]
    fn networks_are_resolved_and_give_virtual_ips() {
        let store = store();
        let s = Services { store: &store };
        let net = shoal_api::v1::Network {
            meta: Some(Meta {
                id: "net1".into(),
                ..Default::default()
            }),
            spec: Some(shoal_api::v1::NetworkSpec {
                annotations: Some(Annotations {
                    name: "front".into(),
                    labels: Vec::new(),
                }),
                ..Default::default()
            }),
            ipam: Some(shoal_api::v1::IpamOptions {
                driver: None,
                configs: vec![shoal_api::v1::IpamConfig {
                    subnet: "10.0.7.0/24".into(),
                    gateway: "10.0.7.1".into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        block_on(store.update(|tx| tx.create(net))).unwrap();
        let attached = |name: &str, target: &str| {
            let mut spec = spec(name, replicated(1));
            spec.task.as_mut().unwrap().networks = vec![shoal_api::v1::NetworkAttachmentConfig {
                target: target.into(),
                ..Default::default()
            }];
            spec
        };
        let web = create(&s, attached("web", "front")).unwrap();
        let task = web.spec.as_ref().unwrap().task.as_ref().unwrap();
        assert_eq!(task.networks[0].target, "net1", "stored by ID");
        let vips = &web.endpoint.as_ref().unwrap().virtual_ips;
        assert_eq!(vips[0].network_id, "net1");
        assert_eq!(vips[0].addr, "10.0.7.2/24");
        let api = create(&s, attached("api", "net1")).unwrap();
        assert_eq!(
            api.endpoint.as_ref().unwrap().virtual_ips[0].addr,
            "10.0.7.3/24"
        );
        let e = create(&s, attached("x", "nope")).unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert_eq!(e.message(), "network nope not found");
    }

    // --- Secret and config references ---

    fn put_secret(store: &Store, id: &str, name: &str, internal: bool) {
        let secret = Secret {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(shoal_api::v1::SecretSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: Vec::new(),
                }),
                data: b"s3cr3t".to_vec(),
                ..Default::default()
            }),
            internal,
        };
        block_on(store.update(|tx| tx.create(secret))).unwrap();
    }

    fn put_config(store: &Store, id: &str, name: &str) {
        let config = Config {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(shoal_api::v1::ConfigSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: Vec::new(),
                }),
                data: b"conf".to_vec(),
                ..Default::default()
            }),
        };
        block_on(store.update(|tx| tx.create(config))).unwrap();
    }

    fn with_references(
        name: &str,
        secrets: &[(&str, &str, Option<FileTarget>)],
        configs: &[(&str, &str)],
    ) -> ServiceSpec {
        let mut spec = spec(name, replicated(1));
        let task: &mut TaskSpecFields = spec.task.as_mut().unwrap();
        let Some(task_spec::Runtime::Process(p)) = task.runtime.as_mut() else {
            unreachable!()
        };
        p.secrets = secrets
            .iter()
            .map(|(id, name, file)| SecretReference {
                secret_id: id.to_string(),
                secret_name: name.to_string(),
                file: file.clone(),
            })
            .collect();
        p.configs = configs
            .iter()
            .map(|(id, name)| ConfigReference {
                config_id: id.to_string(),
                config_name: name.to_string(),
                file: None,
            })
            .collect();
        spec
    }

    /// As `create_service` does: references resolved, then checked, then created.
    fn create_resolved(store: &Store, mut spec: ServiceSpec) -> Result<Service, Status> {
        store.view(|tx| resolve_file_references(tx, &mut spec))?;
        create(&Services { store }, spec)
    }

    fn references(s: &Service) -> (Vec<SecretReference>, Vec<ConfigReference>) {
        match s
            .spec
            .as_ref()
            .unwrap()
            .task
            .as_ref()
            .unwrap()
            .runtime
            .as_ref()
        {
            Some(task_spec::Runtime::Process(p)) => (p.secrets.clone(), p.configs.clone()),
            _ => unreachable!(),
        }
    }

    #[test]
    fn references_resolve_by_name_id_and_prefix_with_default_targets() {
        let store = store();
        put_secret(&store, "sec0000000000000000000001", "db-password", false);
        put_secret(&store, "tok0000000000000000000002", "token", false);
        put_config(&store, "cfg0000000000000000000003", "app.conf");
        let explicit = FileTarget {
            name: "pw".into(),
            uid: "1000".into(),
            gid: "1000".into(),
            mode: 0o440,
        };
        let web = create_resolved(
            &store,
            with_references(
                "web",
                &[
                    ("", "db-password", None),
                    ("tok0", "", Some(explicit.clone())),
                ],
                &[("", "app.conf")],
            ),
        )
        .unwrap();
        let (secrets, configs) = references(&web);
        assert_eq!(secrets[0].secret_id, "sec0000000000000000000001");
        assert_eq!(secrets[0].secret_name, "db-password");
        let file = secrets[0].file.clone().unwrap();
        assert_eq!((file.name.as_str(), file.mode), ("db-password", 0o400));
        assert_eq!(secrets[1].secret_id, "tok0000000000000000000002");
        assert_eq!(secrets[1].secret_name, "token");
        assert_eq!(
            secrets[1].file,
            Some(explicit),
            "an explicit target is kept"
        );
        assert_eq!(configs[0].config_id, "cfg0000000000000000000003");
        let file = configs[0].file.clone().unwrap();
        assert_eq!((file.name.as_str(), file.mode), ("app.conf", 0o444));
        // The index of tasks by secret works on IDs: the service's references are IDs.
        let by_id = create_resolved(
            &store,
            with_references("api", &[("sec0000000000000000000001", "", None)], &[]),
        )
        .unwrap();
        assert_eq!(references(&by_id).0[0].secret_name, "db-password");
    }

    #[test]
    fn missing_internal_or_ambiguous_references_are_refused_and_change_nothing() {
        let store = store();
        put_secret(&store, "abc000000000000000000000a", "one", false);
        put_secret(&store, "abc000000000000000000000b", "two", false);
        put_secret(&store, "int000000000000000000000c", "system", true);
        let e = create_resolved(&store, with_references("web", &[("", "nope", None)], &[]))
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().starts_with("secret nope not found"), "{e:?}");
        let e =
            create_resolved(&store, with_references("web", &[("abc", "", None)], &[])).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("ambiguous"), "{e:?}");
        let e = create_resolved(&store, with_references("web", &[("", "system", None)], &[]))
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = create_resolved(&store, with_references("web", &[], &[("", "nope")])).unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().starts_with("config nope not found"), "{e:?}");
        let e =
            create_resolved(&store, with_references("web", &[("", "", None)], &[])).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(store.view(|tx| tx.count::<Service>()), 0);

        // The create transaction checks again: a secret gone since resolution is refused.
        let mut spec = with_references("web", &[("", "one", None)], &[]);
        store
            .view(|tx| resolve_file_references(tx, &mut spec))
            .unwrap();
        block_on(store.update(|tx| tx.delete::<Secret>("abc000000000000000000000a"))).unwrap();
        let e = create(&Services { store: &store }, spec).unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert_eq!(store.view(|tx| tx.count::<Service>()), 0);
    }

    #[test]
    fn updates_resolve_references_and_refuse_missing_ones() {
        let store = store();
        let s = Services { store: &store };
        put_secret(&store, "sec0000000000000000000001", "db-password", false);
        let web = create_resolved(&store, spec("web", replicated(1))).unwrap();
        let e = block_on(s.update(update_request(
            &web,
            with_references("web", &[("", "nope", None)], &[]),
        )))
        .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let now = store
            .view(|tx| tx.get::<Service>(service_id(&web)))
            .unwrap();
        assert_eq!(*now, web, "nothing changed");
        let updated = block_on(s.update(update_request(
            &web,
            with_references("web", &[("", "db-password", None)], &[]),
        )))
        .unwrap();
        assert_eq!(
            references(&updated).0[0].secret_id,
            "sec0000000000000000000001"
        );
        // Back to no secret, then a rollback to the spec with the secret, which is gone.
        let plain =
            block_on(s.update(update_request(&updated, spec("web", replicated(1))))).unwrap();
        block_on(store.update(|tx| tx.delete::<Secret>("sec0000000000000000000001"))).unwrap();
        let rollback = UpdateServiceRequest {
            service_id: service_id(&plain).into(),
            service_version: version(&plain),
            spec: None,
            rollback: update_service_request::Rollback::Previous as i32,
        };
        let e = block_on(s.update(rollback)).unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(
            e.message()
                .contains("secret sec0000000000000000000001 not found"),
            "{e:?}"
        );
    }
}
