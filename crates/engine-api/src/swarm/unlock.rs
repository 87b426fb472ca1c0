//! `POST /swarm/unlock` (`{"UnlockKey": …}`): unlocks a locked manager.
//!
//! Shoal has no autolock yet, so no node is ever locked; the answers are moby's for a node
//! that is not: an active manager gets 409 "swarm is not locked", a worker or a node outside
//! any swarm moby's 503 (the CLI checks `LocalNodeState` first and says so itself).

use serde::Deserialize;

use crate::backend::{Backend, LocalState};
use crate::error::{self, EngineError};
use crate::lenient;
use crate::request::{Request, Result};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UnlockRequest {
    pub unlock_key: String,
}

/// The answer for a node in `state`.
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
    let _: UnlockRequest = lenient::from_slice(&request.body)?;
    Err(refusal(&backend.local_state().await))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{NodeRole, SwarmInfoResponse};

    #[test]
    fn nothing_is_ever_locked() {
        let manager = LocalState::Active(SwarmInfoResponse {
            role: NodeRole::Manager as i32,
            ..Default::default()
        });
        let e = refusal(&manager);
        assert_eq!((e.status, e.message.as_str()), (409, "swarm is not locked"));
        let worker = LocalState::Active(SwarmInfoResponse::default());
        assert_eq!(refusal(&worker).message, error::NOT_A_MANAGER_WORKER);
        assert_eq!(refusal(&LocalState::Inactive).status, 503);
    }
}
