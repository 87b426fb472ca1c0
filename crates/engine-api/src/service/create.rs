//! `POST /services/create`: a new service from Docker's `ServiceSpec`.
//!
//! Answers 201 `{"ID": …, "Warnings": null}`. As moby does, a service without a name gets a
//! random `adjective_surname` one. The `X-Registry-Auth` header is accepted and not used:
//! Shoal's nodes pull with their own Docker Engine's credentials.

use serde::Serialize;
use shoal_api::v1::CreateServiceRequest;

use super::spec::ServiceSpec;
use crate::backend::Backend;
use crate::error::EngineError;
use crate::lenient;
use crate::request::{Reply, Request, Result};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    #[serde(rename = "ID")]
    id: String,
    warnings: Option<Vec<String>>,
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let mut spec: ServiceSpec = lenient::require(&request.body)?;
    if spec.name.is_empty() {
        spec.name = random_name();
    }
    let spec = spec.to_proto()?;
    let created = backend
        .call(async move |mut c| {
            c.create_service(CreateServiceRequest { spec: Some(spec) })
                .await
        })
        .await?;
    let id = created
        .service
        .map(|s| super::id_of(s.meta.as_ref()))
        .ok_or_else(|| EngineError::internal("the Control API answered without a service"))?;
    Reply::json_with(201, &Created { id, warnings: None })
}

/// A name like moby's `namesgenerator`: `adjective_surname`.
fn random_name() -> String {
    const LEFT: [&str; 16] = [
        "admiring", "brave", "clever", "dreamy", "eager", "focused", "gallant", "happy", "jolly",
        "keen", "lucid", "modest", "nifty", "quirky", "serene", "upbeat",
    ];
    const RIGHT: [&str; 16] = [
        "babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
        "meitner", "noether", "pascal", "ritchie", "shannon", "turing", "wozniak",
    ];
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let n = hasher.finish();
    format!(
        "{}_{}",
        LEFT[(n % 16) as usize],
        RIGHT[((n >> 8) % 16) as usize]
    )
}
