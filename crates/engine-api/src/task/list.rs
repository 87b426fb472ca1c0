//! `GET /tasks`: the tasks, filtered.
//!
//! Filters (moby's): `id` (ID prefixes), `name` (prefixes of `<service>.<slot>.<id>`),
//! `label`, `service` (service IDs, names or ID prefixes; an unknown one is a 404, as in
//! moby), `node` (node IDs, names or ID prefixes, likewise), `desired-state` (`running`,
//! `shutdown`, `accepted`, …, as the task shows it: a job's task meant to run is `complete`),
//! `runtime` (`container`, `process`) and `_up-to-date`: only the tasks that run their
//! service's current spec. That is the orchestrator's own rule
//! (`is_outdated`): a task is up to date when it was made from the current spec version, or
//! when its task spec equals the service's (a change of the replica count or of the update
//! config redeploys nothing, so the running tasks stay up to date). The docker CLI polls
//! with it while it waits for a service to converge.

use std::collections::{BTreeMap, HashMap};

use shoal_api::v1::{self, GetNodeRequest, ListFilters, ListServicesRequest, ListTasksRequest};

use super::Task;
use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let filters = request.query.filters()?;
    filters.only(&[
        "id",
        "name",
        "label",
        "service",
        "node",
        "desired-state",
        "runtime",
        "_up-to-date",
    ])?;
    let mut desired_states = Vec::new();
    for state in filters.values("desired-state") {
        match super::parse_state(state) {
            Some(s) => desired_states.push(super::state_name(s as i32)),
            None if state.is_empty() => {}
            None => {
                return Err(EngineError::bad_request(format!(
                    "Invalid desired-state filter: '{state}'"
                )));
            }
        }
    }
    let mut service_ids = Vec::new();
    for reference in filters.values("service") {
        let service = crate::service::get(backend, reference).await?;
        service_ids.push(crate::service::id_of(service.meta.as_ref()));
    }
    let mut node_ids = Vec::new();
    for reference in filters.values("node") {
        let node_id = reference.clone();
        let node = backend
            .call(async move |mut c| c.get_node(GetNodeRequest { node_id }).await)
            .await?
            .node
            .ok_or_else(|| EngineError::internal("the Control API answered without a node"))?;
        node_ids.push(crate::service::id_of(node.meta.as_ref()));
    }
    let list = ListTasksRequest {
        filters: Some(ListFilters {
            id_prefixes: filters.values("id").to_vec(),
            name_prefixes: filters.values("name").to_vec(),
            ..Default::default()
        }),
        service_ids,
        node_ids,
        // Filtered here, on the state as shown (a job's task meant to run shows `complete`).
        desired_states: Vec::new(),
        up_to_date: false,
    };
    let tasks = backend
        .call(async move |mut c| c.list_tasks(list).await)
        .await?
        .tasks;
    let services: BTreeMap<String, v1::Service> = backend
        .call(async move |mut c| c.list_services(ListServicesRequest::default()).await)
        .await?
        .services
        .into_iter()
        .map(|s| (crate::service::id_of(s.meta.as_ref()), s))
        .collect();
    let up_to_date = filters.has("_up-to-date");
    let runtimes = filters.values("runtime");
    let tasks: Vec<v1::Task> = tasks
        .into_iter()
        .filter(|t| {
            let labels: HashMap<String, String> = t
                .annotations
                .as_ref()
                .map(|a| {
                    a.labels
                        .iter()
                        .map(|l| (l.key.clone(), l.value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let job = services.get(&t.service_id).is_some_and(super::is_job);
            filters.labels_match("label", &labels)
                && (desired_states.is_empty()
                    || desired_states.contains(&super::desired_state_name(t.desired_state, job)))
                && (runtimes.is_empty()
                    || runtimes
                        .iter()
                        .any(|r| r == crate::service::runtime_of(t.spec.as_ref())))
                && (!up_to_date
                    || services
                        .get(&t.service_id)
                        .is_some_and(|s| is_up_to_date(t, s)))
        })
        .collect();
    let networks = super::networks_for(backend, &tasks).await?;
    let shapes: Vec<Task> = tasks
        .iter()
        .map(|t| {
            let job = services.get(&t.service_id).is_some_and(super::is_job);
            Task::from_proto(t, job, &networks)
        })
        .collect();
    Reply::json(&shapes)
}

/// Whether `task` runs `service`'s current spec (the orchestrator's `is_outdated`, negated).
pub fn is_up_to_date(task: &v1::Task, service: &v1::Service) -> bool {
    task.spec_version >= service.spec_version
        || task.spec.as_ref() == service.spec.as_ref().and_then(|s| s.task.as_ref())
}
