//! `POST /swarm/leave[?force=1]`: this node leaves its swarm and forgets it; the daemon goes
//! on, inactive.
//!
//! moby's refusals (503, verbatim): a node in no swarm; a manager without `force` — the
//! last-manager text when it is the only reachable manager, else the quorum warning. With
//! `force` a manager leaves the Raft cluster first. The call returns once the node is
//! inactive, so the next request (`GET /swarm`, `GET /info`) sees it so.

use shoal_api::v1::{LeaveSwarmRequest, Node, manager_status};

use super::wait_for;
use crate::backend::{Backend, LocalState};
use crate::error::{self, EngineError};
use crate::request::{Reply, Request, Result};

/// moby's text for a manager leaving without `force`, from its view of the managers.
pub fn manager_refusal(nodes: &[Node]) -> EngineError {
    let mut msg = String::from(
        "You are attempting to leave the swarm on a node that is participating as a manager. ",
    );
    let managers: Vec<_> = nodes
        .iter()
        .filter_map(|n| n.manager_status.as_ref())
        .collect();
    let reachable = managers
        .iter()
        .filter(|m| m.reachability == manager_status::Reachability::Reachable as i32)
        .count();
    let unreachable = managers.len() - reachable;
    // moby's removingManagerCausesLossOfQuorum and isLastManager.
    if reachable <= unreachable + 2 {
        if reachable == 1 && unreachable == 0 {
            msg.push_str(
                "Removing the last manager erases all current state of the swarm. Use \
                 `--force` to ignore this message.",
            );
            return EngineError::unavailable(msg);
        }
        msg.push_str(&format!(
            "Removing this node leaves {} managers out of {}. Without a Raft quorum your swarm \
             will be inaccessible. ",
            reachable.saturating_sub(1),
            reachable + unreachable
        ));
    }
    msg.push_str(
        "The only way to restore a swarm that has lost consensus is to reinitialize it with \
         `--force-new-cluster`. Use `--force` to suppress this message.",
    );
    EngineError::unavailable(msg)
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let force = request.query.bool("force")?;
    let state = backend.local_state().await;
    let node_id = match &state {
        LocalState::Inactive => return Err(EngineError::unavailable(error::NOT_IN_A_SWARM)),
        LocalState::Error(e) => {
            return Err(EngineError::unavailable(format!(
                "the node's daemon does not answer ({e}); retry in a moment"
            )));
        }
        LocalState::Active(info) => info.node_id.clone(),
    };
    if state.is_manager() && !force {
        let nodes = crate::node::list_all(backend).await.unwrap_or_default();
        return Err(manager_refusal(&nodes));
    }
    backend
        .swarm()
        .leave(LeaveSwarmRequest { force })
        .await
        .map_err(|status| EngineError::from_status(&status))?;
    wait_for(backend, "leaving the swarm", |state| match state {
        LocalState::Inactive => true,
        LocalState::Active(info) => info.node_id != node_id,
        LocalState::Error(_) => false,
    })
    .await?;
    Ok(Reply::Empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::tests::manager;

    fn managers(reachable: usize, unreachable: usize) -> Vec<Node> {
        let mut nodes = Vec::new();
        for i in 0..reachable + unreachable {
            let mut n = manager();
            let m = n.manager_status.as_mut().unwrap();
            m.reachability = if i < reachable {
                manager_status::Reachability::Reachable as i32
            } else {
                manager_status::Reachability::Unreachable as i32
            };
            nodes.push(n);
        }
        nodes
    }

    #[test]
    fn the_last_manager_gets_mobys_text() {
        let e = manager_refusal(&managers(1, 0));
        assert_eq!(e.status, 503);
        assert_eq!(
            e.message,
            "You are attempting to leave the swarm on a node that is participating as a \
             manager. Removing the last manager erases all current state of the swarm. Use \
             `--force` to ignore this message."
        );
    }

    #[test]
    fn other_managers_get_the_quorum_warning() {
        let e = manager_refusal(&managers(2, 0));
        assert!(
            e.message
                .contains("Removing this node leaves 1 managers out of 2. Without a Raft quorum"),
            "{e}"
        );
        let e = manager_refusal(&managers(3, 0));
        assert!(!e.message.contains("Removing this node"), "{e}");
        assert!(
            e.message
                .ends_with("Use `--force` to suppress this message.")
        );
    }
}
