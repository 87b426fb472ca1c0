//! Services: create, get, list, update (including rollback to the previous spec), remove, and
//! the per-service task counts `service ls` shows.
//!
//! The calls that write work on a [`Services`] (a store, nothing else), so that tests drive
//! them on a local store; the handlers add the leader check and the read barrier. Creating,
//! updating and removing only write the service object: the orchestrators act on it (they
//! make, redeploy and shut down the tasks).

use shoal_api::labels::Labels;
use shoal_api::v1::{
    CreateServiceRequest, CreateServiceResponse, GetServiceRequest, GetServiceResponse, JobStatus,
    ListFilters, ListServiceStatusesRequest, ListServiceStatusesResponse, ListServicesRequest,
    ListServicesResponse, Meta, RemoveServiceRequest, RemoveServiceResponse, ReplicatedService,
    Service, ServiceSpec, Task, TaskState, UpdateServiceRequest, UpdateServiceResponse,
    UpdateStatus, list_service_statuses_response::ServiceStatus, service_spec,
    update_service_request, update_status,
};
use shoal_api::{id, validation};
use shoal_store::{By, Reader, Store, StoreError};
use tonic::Status;

use super::{ControlApi, filters_match};
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
        let previous = current.previous_spec.as_deref().cloned().ok_or_else(|| {
            Status::failed_precondition(format!(
                "service {id} does not have a previous spec to roll back to (it was never \
                 updated)"
            ))
        })?;
        next.spec = Some(previous);
        next.previous_spec = Some(Box::new(current_spec));
        next.previous_spec_version = current.spec_version;
        next.spec_version = current.spec_version + 1;
        rerun_job(&mut next, now);
        next.update_status = Some(UpdateStatus {
            state: update_status::UpdateState::RollbackStarted as i32,
            started_at: Some(now),
            completed_at: None,
            message: "manually requested rollback".into(),
        });
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
        // The same spec again: no new version, so no task is redeployed. (Changing only
        // `task.force_update` is a change, and redeploys.)
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
        self.store
            .update(|tx| {
                if !tx.find::<Service>(By::Name(&name)).is_empty() {
                    return Err(StoreError::NameConflict {
                        kind: "service",
                        name: name.clone(),
                    });
                }
                tx.create(service)
            })
            .await
            .map_err(|e| match e {
                StoreError::NameConflict { .. } => name_in_use(&name),
                e => store_status(e),
            })?;
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
        let mut refusal = None;
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
                match updated_service(&current, request.spec, rollback, tx.now()) {
                    Ok(Some(next)) => tx.update(next).map(|()| id),
                    Ok(None) => Ok(id),
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
        let spec = checked_new_spec(request.spec)?;
        self.require_leader()?;
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

        // The same spec again changes nothing; force_update alone is a change.
        let same = block_on(s.update(update_request(&updated, v2.clone()))).unwrap();
        assert_eq!(same, updated);
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
}
