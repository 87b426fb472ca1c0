//! `GET /services/{id|name|prefix}`: one service; `insertDefaults=true` fills in the
//! defaults SwarmKit would apply (see [`super::spec::ServiceSpec::insert_defaults`]).

use super::Service;
use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let insert_defaults = request.query.bool("insertDefaults")?;
    let service = super::get(backend, request.segment(1)).await?;
    let mut shape = Service::from_proto(&service);
    if insert_defaults {
        shape.spec.insert_defaults();
    }
    Reply::json(&shape)
}
