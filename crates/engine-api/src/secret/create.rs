//! `POST /secrets/create`: `{Name, Labels, Data (base64), Driver?, Templating?}` → 201
//! `{"ID": …}`.
//!
//! A secret needs a name and data (1 byte to less than 500 KiB, the Control API checks the
//! size); a name in use is 409. A `Driver` (a secret-store plugin) is 501: Shoal keeps
//! secrets in its own store only.

use shoal_api::v1::CreateSecretRequest;

use super::SecretSpec;
use super::file_object::{self, Created, Driver};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::lenient;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let spec: SecretSpec = lenient::require(&request.body)?;
    check(&spec, &request)?;
    let proto = spec.to_proto();
    let created = backend
        .call(async |mut c| {
            c.create_secret(CreateSecretRequest { spec: Some(proto) })
                .await
        })
        .await?;
    let id = created
        .secret
        .and_then(|s| s.meta)
        .map(|m| m.id)
        .unwrap_or_default();
    Reply::json_with(201, &Created { id })
}

/// What the Engine API refuses before asking the Control API.
pub fn check(spec: &SecretSpec, request: &Request) -> Result<(), EngineError> {
    file_object::check_new(
        "secret",
        &spec.name,
        spec.data.as_ref(),
        &spec.templating,
        request.version,
    )?;
    if Driver::is_set(&spec.driver) {
        let driver = spec.driver.as_ref().map(|d| d.name.as_str()).unwrap_or("");
        return Err(EngineError::not_implemented(format!(
            "secret driver {driver:?} is not supported: Shoal keeps secrets in its own \
             replicated store and has no secret-driver plugins; leave Driver out"
        )));
    }
    Ok(())
}
