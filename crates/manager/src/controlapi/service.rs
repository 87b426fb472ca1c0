//! Services: get and list. (Creating, updating and removing them comes with the
//! orchestrators that act on them.)

use shoal_api::v1::{
    GetServiceRequest, GetServiceResponse, ListFilters, ListServicesRequest, ListServicesResponse,
    Service,
};
use shoal_store::{By, Reader};
use tonic::Status;

use super::{ControlApi, label_filter_matches};
use crate::status::store_status;

fn service_matches(service: &Service, filters: &ListFilters) -> bool {
    let id = service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let annotations = service.spec.as_ref().and_then(|s| s.annotations.as_ref());
    let name = annotations.map(|a| a.name.as_str()).unwrap_or("");
    let labels = annotations.map(|a| a.labels.as_slice()).unwrap_or(&[]);
    (filters.names.is_empty() || filters.names.iter().any(|n| n == name))
        && (filters.name_prefixes.is_empty()
            || filters
                .name_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str())))
        && (filters.id_prefixes.is_empty()
            || filters
                .id_prefixes
                .iter()
                .any(|p| id.starts_with(p.as_str())))
        && label_filter_matches(labels, &filters.labels)
}

impl ControlApi {
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
}
