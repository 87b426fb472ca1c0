//! `POST /configs/create`: `{Name, Labels, Data (base64), Templating?}` → 201 `{"ID": …}`.
//!
//! A config needs a name and data (1 byte to less than 1000 KiB, the Control API checks the
//! size); a name in use is 409.

use shoal_api::v1::CreateConfigRequest;

use super::ConfigSpec;
use crate::backend::Backend;
use crate::lenient;
use crate::request::{Reply, Request, Result};
use crate::secret::file_object::{self, Created};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let spec: ConfigSpec = lenient::require(&request.body)?;
    file_object::check_new(
        "config",
        &spec.name,
        spec.data.as_ref(),
        &spec.templating,
        request.version,
    )?;
    let proto = spec.to_proto();
    let created = backend
        .call(async |mut c| {
            c.create_config(CreateConfigRequest { spec: Some(proto) })
                .await
        })
        .await?;
    let id = created
        .config
        .and_then(|c| c.meta)
        .map(|m| m.id)
        .unwrap_or_default();
    Reply::json_with(201, &Created { id })
}
