//! `DELETE /networks/{id|name|id-prefix}`: 204.
//!
//! A network a service uses is not removed (400, naming the services; moby answers the same
//! code for SwarmKit's refusal). Right after its services are removed, their tasks may still
//! be stopping, and the Control API refuses too; moby's SwarmKit does not wait for tasks to
//! stop, so clients remove a network right after its services (docker-py's tests do). So
//! that refusal, and only it, is retried here for a bounded time ([`STOPPING_WAIT`]) before
//! it is answered.

use std::time::Duration;

use shoal_api::v1::RemoveNetworkRequest;
use tonic::{Code, Status};

use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

/// How long a removal waits for the tasks of removed services to stop.
pub const STOPPING_WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(200);

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let reference = request.segment(1).to_string();
    let deadline = tokio::time::Instant::now() + STOPPING_WAIT;
    loop {
        let removed = backend
            .control()
            .remove_network(RemoveNetworkRequest {
                name: String::new(),
                network_id: reference.clone(),
            })
            .await;
        match removed {
            Ok(_) => return Ok(Reply::Empty(204)),
            Err(status) if tasks_stopping(&status) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(status) => return Err(backend.control_error(status).await),
        }
    }
}

/// Whether the Control API refused only because tasks that used the network have not
/// stopped yet (its text in `manager/src/controlapi/network.rs`), not because a service
/// still uses it.
pub fn tasks_stopping(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition && status.message().contains("not stopped yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stopping_tasks_are_waited_for() {
        assert!(tasks_stopping(&Status::failed_precondition(
            "network front is in use by 2 task(s) that have not stopped yet; try again once \
             they have"
        )));
        assert!(!tasks_stopping(&Status::failed_precondition(
            "network front is in use by service web; remove it or detach it from the network \
             first"
        )));
        assert!(!tasks_stopping(&Status::not_found("network x not found")));
    }
}
