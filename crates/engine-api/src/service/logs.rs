//! `GET /services/{id|name|prefix}/logs`: the logs of a service's tasks, as a Docker log
//! stream (see [`super::logstream`]). An unknown service is a 404 before anything streams
//! (the docker CLI then tries the name as a task).

use shoal_api::v1::LogSelector;

use super::logstream::{self, LogOptions};
use crate::backend::Backend;
use crate::request::{Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let options = LogOptions::parse(&request.query)?;
    let service = super::get(backend, request.segment(1)).await?;
    let tty = matches!(
        service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.runtime.as_ref()),
        Some(shoal_api::v1::task_spec::Runtime::Container(c)) if c.tty
    );
    let selector = LogSelector {
        service_ids: vec![super::id_of(service.meta.as_ref())],
        ..Default::default()
    };
    logstream::stream(backend, selector, options, tty, request.version).await
}
