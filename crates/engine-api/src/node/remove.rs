//! `DELETE /nodes/{id}?force=…`: removes a node from the swarm (its certificate is revoked).
//!
//! As in SwarmKit, a manager that is a member of the Raft cluster is never removed (400,
//! moby's text: demote it first) — this includes the node serving the request, which is a
//! manager — and a node that is up only with `force` (400, moby's text). The Control API
//! checks both again when it removes, so a race changes nothing either.

use shoal_api::v1::{Node, NodeRole, RemoveNodeRequest, node_status};

use super::get;
use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Reply, Request, Result};

/// Why `node` cannot be removed, in moby's words; `None` if it can.
pub fn refusal(node: &Node, force: bool) -> Option<EngineError> {
    let id = node
        .meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default();
    let desired_manager = node
        .spec
        .as_ref()
        .is_some_and(|s| s.desired_role == NodeRole::Manager as i32);
    if node.manager_status.is_some() || (desired_manager && node.role == NodeRole::Manager as i32) {
        return Some(EngineError::bad_request(format!(
            "node {id} is a cluster manager and is a member of the raft cluster. It must be \
             demoted to worker before removal"
        )));
    }
    let ready = node
        .status
        .as_ref()
        .is_some_and(|s| s.state == node_status::State::Ready as i32);
    if ready && !force {
        return Some(EngineError::bad_request(format!(
            "node {id} is not down and can't be removed"
        )));
    }
    None
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let force = request.query.bool("force")?;
    let node = get(backend, request.segment(1)).await?;
    if let Some(refused) = refusal(&node, force) {
        return Err(refused);
    }
    let node_id = node.meta.map(|m| m.id).unwrap_or_default();
    backend
        .call(async |mut c| {
            c.remove_node(RemoveNodeRequest {
                node_id: node_id.clone(),
                force,
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::tests::{manager, worker};

    #[test]
    fn managers_and_nodes_that_are_up_are_refused() {
        let e = refusal(&manager(), true).unwrap();
        assert_eq!(e.status, 400);
        assert!(
            e.message.ends_with(
                "is a cluster manager and is a member of the raft cluster. It must be demoted \
                 to worker before removal"
            ),
            "{e}"
        );
        let mut up = worker("9xq2bn1f5gqyxvdy2e3zy8kr4", "w1");
        up.status.as_mut().unwrap().state = node_status::State::Ready as i32;
        let e = refusal(&up, false).unwrap();
        assert_eq!(
            e.message,
            "node 9xq2bn1f5gqyxvdy2e3zy8kr4 is not down and can't be removed"
        );
        assert_eq!(refusal(&up, true), None);
        assert_eq!(refusal(&worker("x", "w2"), false), None);
    }
}
