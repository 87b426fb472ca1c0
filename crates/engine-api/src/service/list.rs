//! `GET /services`: the services, filtered; `status=true` adds each one's `ServiceStatus`.
//!
//! Filters (moby's): `id` (ID prefixes), `name` (name prefixes), `label` (`key` or
//! `key=value`), `mode` (`replicated`, `global`, `replicated-job`, `global-job`) and
//! `runtime` (`container`, or `process` for Shoal's host-process services). `ServiceStatus`
//! comes from the Control API's task counts (`service ls`'s): desired is the replica count
//! (the concurrency of a replicated job), or the number of tasks meant to run for global
//! modes; running counts tasks running that are meant to; completed counts finished job
//! tasks of the current iteration.

use std::collections::{BTreeMap, HashMap};

use shoal_api::v1::{ListFilters, ListServiceStatusesRequest, ListServicesRequest};

use super::{Service, ServiceStatus};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Reply, Request, Result};

const MODES: [&str; 4] = ["replicated", "global", "replicated-job", "global-job"];

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let filters = request.query.filters()?;
    filters.only(&["id", "name", "label", "mode", "runtime"])?;
    if let Some(mode) = filters
        .values("mode")
        .iter()
        .find(|m| !MODES.contains(&m.as_str()))
    {
        return Err(EngineError::bad_request(format!(
            "invalid filter 'mode={mode}': use replicated, global, replicated-job or global-job"
        )));
    }
    // Before API 1.41 moby ignores `status` (the CLI then counts tasks itself).
    let with_status = request.query.bool("status")? && request.version.at_least(1, 41);
    let list = ListServicesRequest {
        filters: Some(ListFilters {
            id_prefixes: filters.values("id").to_vec(),
            name_prefixes: filters.values("name").to_vec(),
            ..Default::default()
        }),
    };
    let services = backend
        .call(async move |mut c| c.list_services(list).await)
        .await?
        .services;
    let services: Vec<_> = services
        .into_iter()
        .filter(|s| {
            let labels: HashMap<String, String> = s
                .spec
                .as_ref()
                .and_then(|spec| spec.annotations.as_ref())
                .map(|a| {
                    a.labels
                        .iter()
                        .map(|l| (l.key.clone(), l.value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let runtime = super::runtime_of(s.spec.as_ref().and_then(|spec| spec.task.as_ref()));
            filters.labels_match("label", &labels)
                && (filters.values("runtime").is_empty()
                    || filters.values("runtime").iter().any(|r| r == runtime))
        })
        .collect();
    let mut shapes: Vec<Service> = services
        .iter()
        .map(Service::from_proto)
        .filter(|s| {
            filters.values("mode").is_empty()
                || filters
                    .values("mode")
                    .iter()
                    .any(|m| m == s.spec.mode_name())
        })
        .collect();
    if with_status && !shapes.is_empty() {
        let ids: Vec<String> = shapes.iter().map(|s| s.meta.id.clone()).collect();
        let statuses: BTreeMap<String, ServiceStatus> = backend
            .call(async move |mut c| {
                c.list_service_statuses(ListServiceStatusesRequest { services: ids })
                    .await
            })
            .await?
            .statuses
            .into_iter()
            .map(|s| {
                (
                    s.service_id,
                    ServiceStatus {
                        running_tasks: s.running_tasks,
                        desired_tasks: s.desired_tasks,
                        completed_tasks: s.completed_tasks,
                    },
                )
            })
            .collect();
        for shape in &mut shapes {
            shape.service_status = Some(statuses.get(&shape.meta.id).cloned().unwrap_or_default());
        }
    }
    Reply::json(&shapes)
}
