//! `GET /tasks/{id}/logs`: the logs of one task, as a Docker log stream (see
//! [`crate::service::logstream`]). An unknown task is a 404 before anything streams.

use shoal_api::v1::LogSelector;

use crate::backend::Backend;
use crate::request::{Request, Result};
use crate::service::logstream::{self, LogOptions};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let options = LogOptions::parse(&request.query)?;
    let task = super::get(backend, request.segment(1)).await?;
    let tty = matches!(
        task.spec.as_ref().and_then(|t| t.runtime.as_ref()),
        Some(shoal_api::v1::task_spec::Runtime::Container(c)) if c.tty
    );
    let selector = LogSelector {
        task_ids: vec![crate::service::id_of(task.meta.as_ref())],
        ..Default::default()
    };
    logstream::stream(backend, selector, options, tty, request.version).await
}
