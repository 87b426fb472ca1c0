//! Configs: create, get, list, update (labels only; the data is immutable), remove.

use shoal_api::labels::Labels;
use shoal_api::v1::{
    Config, ConfigSpec, CreateConfigRequest, CreateConfigResponse, GetConfigRequest,
    GetConfigResponse, ListConfigsRequest, ListConfigsResponse, ListFilters, Meta,
    RemoveConfigRequest, RemoveConfigResponse, Service, UpdateConfigRequest, UpdateConfigResponse,
    task_spec,
};
use shoal_api::{id, validation};
use shoal_store::{By, Reader};
use tonic::Status;

use super::{ControlApi, Removal};
use crate::status::store_status;

/// Whether `service`'s spec references the config with this ID.
fn uses_config(service: &Service, id: &str) -> bool {
    let runtime = service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref());
    match runtime {
        Some(task_spec::Runtime::Container(c)) => c.configs.iter().any(|r| r.config_id == id),
        Some(task_spec::Runtime::Process(p)) => p.configs.iter().any(|r| r.config_id == id),
        None => false,
    }
}

fn invalid(e: validation::ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Whether `labels` has every label of the filter (an empty filter value matches any value).
pub fn label_filter_matches(
    labels: &[shoal_api::v1::Label],
    filter: &std::collections::BTreeMap<String, String>,
) -> bool {
    filter.iter().all(|(k, v)| {
        shoal_api::labels::get(labels, k).is_some_and(|have| v.is_empty() || have == v)
    })
}

/// Whether an object with this ID, name and labels passes the common list filters that are
/// set: exact names, name prefixes, ID prefixes, labels.
pub fn filters_match(
    id: &str,
    name: &str,
    labels: &[shoal_api::v1::Label],
    f: &ListFilters,
) -> bool {
    (f.names.is_empty() || f.names.iter().any(|n| n == name))
        && (f.name_prefixes.is_empty()
            || f.name_prefixes.iter().any(|p| name.starts_with(p.as_str())))
        && (f.id_prefixes.is_empty() || f.id_prefixes.iter().any(|p| id.starts_with(p.as_str())))
        && label_filter_matches(labels, &f.labels)
}

fn config_matches(c: &Config, f: &ListFilters) -> bool {
    let id = c.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let annotations = c.spec.as_ref().and_then(|s| s.annotations.as_ref());
    let name = annotations.map(|a| a.name.as_str()).unwrap_or("");
    let labels = annotations.map(|a| a.labels.as_slice()).unwrap_or(&[]);
    filters_match(id, name, labels, f)
}

/// The spec of a create or update request, validated, labels in canonical order.
fn checked_spec(spec: Option<ConfigSpec>) -> Result<ConfigSpec, Status> {
    let mut spec =
        spec.ok_or_else(|| Status::invalid_argument("invalid spec: a config spec is required"))?;
    validation::validate_config_spec(&spec).map_err(invalid)?;
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.normalize_labels();
    }
    Ok(spec)
}

impl ControlApi {
    pub(super) async fn create_config(
        &self,
        request: CreateConfigRequest,
    ) -> Result<CreateConfigResponse, Status> {
        let spec = checked_spec(request.spec)?;
        self.require_leader()?;
        let config = Config {
            meta: Some(Meta {
                id: id::new_id(),
                ..Default::default()
            }),
            spec: Some(spec),
        };
        let created_id = config
            .meta
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        self.store
            .update(|tx| tx.create(config))
            .await
            .map_err(store_status)?;
        let config = self.store.view(|tx| tx.get::<Config>(&created_id));
        Ok(CreateConfigResponse {
            config: config.map(|c| (*c).clone()),
        })
    }

    pub(super) async fn get_config(
        &self,
        request: GetConfigRequest,
    ) -> Result<GetConfigResponse, Status> {
        self.linearize().await?;
        let config = self
            .store
            .view(|tx| tx.lookup::<Config>(&request.config_id))
            .map_err(store_status)?;
        Ok(GetConfigResponse {
            config: Some((*config).clone()),
        })
    }

    pub(super) async fn list_configs(
        &self,
        request: ListConfigsRequest,
    ) -> Result<ListConfigsResponse, Status> {
        self.linearize().await?;
        let filters = request.filters.unwrap_or_default();
        let configs = self.store.view(|tx| {
            tx.find::<Config>(By::All)
                .into_iter()
                .filter(|c| config_matches(c, &filters))
                .map(|c| (*c).clone())
                .collect()
        });
        Ok(ListConfigsResponse { configs })
    }

    pub(super) async fn update_config(
        &self,
        request: UpdateConfigRequest,
    ) -> Result<UpdateConfigResponse, Status> {
        let spec = checked_spec(request.spec)?;
        self.require_leader()?;
        let config_id = request.config_id.clone();
        self.store
            .update(|tx| {
                let current = tx.get::<Config>(&config_id).ok_or_else(|| shoal_store::StoreError::NotFound {
                    kind: "config",
                    what: config_id.clone(),
                })?;
                let current_spec = current.spec.clone().unwrap_or_default();
                let name = |s: &shoal_api::v1::ConfigSpec| s.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
                if current_spec.data != spec.data || name(&current_spec) != name(&spec) {
                    return Err(shoal_store::StoreError::InvalidTransaction(
                        "only the labels of a config can be changed; create a new config for new data or a new name".into(),
                    ));
                }
                let mut updated = (*current).clone();
                updated.spec = Some(spec.clone());
                updated.meta.get_or_insert_with(Default::default).version = request.config_version;
                tx.update(updated)
            })
            .await
            .map_err(store_status)?;
        let config = self.store.view(|tx| tx.get::<Config>(&request.config_id));
        Ok(UpdateConfigResponse {
            config: config.map(|c| (*c).clone()),
        })
    }

    pub(super) async fn remove_config(
        &self,
        request: RemoveConfigRequest,
    ) -> Result<RemoveConfigResponse, Status> {
        self.require_leader()?;
        let reference = request.config_id;
        // The caller gives no version: a write committed between the read and the removal's
        // commit makes it read again and retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.remove_config_once(&reference).await {
                Err(Removal::Conflict(e)) if attempt < super::REMOVE_ATTEMPTS => {
                    tracing::debug!("removing config {reference}: {e}; reading it again");
                }
                Err(Removal::Conflict(e)) => return Err(store_status(e)),
                Err(Removal::Refused(status)) => return Err(status),
                Ok(()) => return Ok(RemoveConfigResponse {}),
            }
        }
    }

    async fn remove_config_once(&self, reference: &str) -> Result<(), Removal> {
        let mut refusal = None;
        let result = self
            .store
            .update(|tx| {
                let config = tx.lookup::<Config>(reference)?;
                let id = config
                    .meta
                    .as_ref()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                let name = config
                    .spec
                    .as_ref()
                    .and_then(|s| s.annotations.as_ref())
                    .map(|a| a.name.clone())
                    .unwrap_or_default();
                // As for secrets: refused while a service references it (its tasks may not
                // exist yet, or be between restarts), or a task still uses it.
                let users: Vec<String> = tx
                    .find::<Service>(By::All)
                    .iter()
                    .filter(|s| uses_config(s, &id))
                    .map(|s| {
                        s.spec
                            .as_ref()
                            .and_then(|s| s.annotations.as_ref())
                            .map(|a| a.name.clone())
                            .unwrap_or_default()
                    })
                    .collect();
                if let Some(status) = super::in_use_by_services("config", &name, users) {
                    refusal = Some(status);
                    return Err(shoal_store::StoreError::InvalidTransaction(
                        "refused".into(),
                    ));
                }
                let tasks = tx.find::<shoal_api::v1::Task>(By::ReferencedConfig(&id));
                if !tasks.is_empty() {
                    refusal = Some(Status::failed_precondition(format!(
                        "config {name} is in use by {} task(s) that have not stopped yet; try \
                         again once they have",
                        tasks.len()
                    )));
                    return Err(shoal_store::StoreError::InvalidTransaction(
                        "refused".into(),
                    ));
                }
                tx.delete::<Config>(&id)
            })
            .await;
        if let Some(status) = refusal {
            return Err(Removal::Refused(status));
        }
        match result {
            Err(e) if e.is_conflict() => Err(Removal::Conflict(e)),
            Err(e) => Err(Removal::Refused(store_status(e))),
            Ok(()) => Ok(()),
        }
    }
}
