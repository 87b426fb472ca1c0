//! `POST /swarm/unlock` (`{"UnlockKey": …}`): unlocks a locked manager (autolock).
//!
//! A locked manager gets the key through its local `Swarm.Unlock`: a wrong or malformed key
//! is moby's 401 and the node stays locked. A node that is not locked gets moby's answers:
//! an active manager 409 "swarm is not locked", a worker or a node outside any swarm 503
//! (the CLI checks `LocalNodeState` first and says so itself).

use serde::Deserialize;
use shoal_api::v1::UnlockSwarmRequest;
use tonic::Code;

use crate::backend::{Backend, LocalState};
use crate::error::{self, EngineError};
use crate::lenient;
use crate::request::{Reply, Request, Result};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UnlockRequest {
    pub unlock_key: String,
}

/// The answer for a node in `state` that is not locked.
pub fn refusal(state: &LocalState) -> EngineError {
    match state {
        LocalState::Active(_) if state.is_manager() => EngineError::conflict("swarm is not locked"),
        LocalState::Active(_) => EngineError::unavailable(error::NOT_A_MANAGER_WORKER),
        LocalState::Inactive => EngineError::unavailable(error::NOT_A_MANAGER_INACTIVE),
        LocalState::Error(e) => EngineError::unavailable(format!(
            "the node's daemon does not answer ({e}); retry in a moment"
        )),
    }
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let body: UnlockRequest = lenient::from_slice(&request.body)?;
    let state = backend.local_state().await;
    if !state.is_locked() {
        return Err(refusal(&state));
    }
    backend
        .swarm()
        .unlock(UnlockSwarmRequest {
            unlock_key: body.unlock_key,
        })
        .await
        .map_err(|status| match status.code() {
            Code::InvalidArgument => EngineError::new(401, status.message()),
            _ => EngineError::from_status(&status),
        })?;
    Ok(Reply::Empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{NodeRole, SwarmInfoResponse};

    #[test]
    fn a_node_that_is_not_locked_says_so() {
        let manager = LocalState::Active(SwarmInfoResponse {
            role: NodeRole::Manager as i32,
            ..Default::default()
        });
        assert!(!manager.is_locked());
        let e = refusal(&manager);
        assert_eq!((e.status, e.message.as_str()), (409, "swarm is not locked"));
        let worker = LocalState::Active(SwarmInfoResponse::default());
        assert_eq!(refusal(&worker).message, error::NOT_A_MANAGER_WORKER);
        assert_eq!(refusal(&LocalState::Inactive).status, 503);
        let locked = LocalState::Active(SwarmInfoResponse {
            role: NodeRole::Manager as i32,
            locked: true,
            ..Default::default()
        });
        assert!(locked.is_locked());
        assert!(!locked.is_manager());
        // Every other call on a locked manager gets moby's text.
        let e = crate::backend::not_a_manager(&locked).unwrap();
        assert_eq!((e.status, e.message.as_str()), (503, error::LOCKED));
        assert!(crate::backend::not_a_manager(&manager).is_none());
        assert_eq!(
            crate::backend::not_a_manager(&worker).unwrap().message,
            error::NOT_A_MANAGER_WORKER
        );
    }
}
