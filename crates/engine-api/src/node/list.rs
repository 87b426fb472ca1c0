//! `GET /nodes`: the swarm's nodes, filtered.
//!
//! Filters (moby's): `id` (ID prefix), `name` (prefix of the spec's name or the hostname),
//! `role` (`worker`/`manager`), `membership` (`pending`/`accepted`), `node.label` (the node's
//! labels, `key` or `key=value`) — all passed to `ListNodes` — and `label`, the engine labels
//! the node describes itself with (`shoal daemon --label`), matched here. Any other filter,
//! or an unknown role or membership, is a 400 with moby's text.

use std::collections::HashMap;

use shoal_api::v1::{ListFilters, ListNodesRequest, NodeRole, node_spec};

use super::{NodeJson, root_tls};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::query::Filters;
use crate::request::{Reply, Request, Result};

/// The Control API request for `filters`.
pub fn list_request(filters: &Filters) -> Result<ListNodesRequest, EngineError> {
    filters.only(&["id", "label", "membership", "name", "node.label", "role"])?;
    let mut roles = Vec::new();
    for r in filters.values("role") {
        match r.to_ascii_lowercase().as_str() {
            "" => {}
            "worker" => roles.push(NodeRole::Worker as i32),
            "manager" => roles.push(NodeRole::Manager as i32),
            _ => {
                return Err(EngineError::bad_request(format!(
                    "Invalid role filter: '{r}'"
                )));
            }
        }
    }
    let mut memberships = Vec::new();
    for m in filters.values("membership") {
        match m.to_ascii_lowercase().as_str() {
            "" => {}
            "pending" => memberships.push(node_spec::Membership::Pending as i32),
            "accepted" => memberships.push(node_spec::Membership::Accepted as i32),
            _ => {
                return Err(EngineError::bad_request(format!(
                    "Invalid membership filter: '{m}'"
                )));
            }
        }
    }
    Ok(ListNodesRequest {
        filters: Some(ListFilters {
            names: Vec::new(),
            name_prefixes: filters.values("name").to_vec(),
            id_prefixes: filters.values("id").to_vec(),
            labels: filters
                .labels("node.label")
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
        }),
        roles,
        memberships,
    })
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let filters = request.query.filters()?;
    let list = list_request(&filters)?;
    let nodes = backend
        .call(async |mut c| c.list_nodes(list.clone()).await)
        .await?
        .nodes;
    let root = root_tls(backend).await;
    let shown: Vec<NodeJson> = nodes
        .iter()
        .filter(|n| {
            let engine_labels: HashMap<String, String> = n
                .description
                .as_ref()
                .and_then(|d| d.engine.as_ref())
                .map(|e| {
                    e.labels
                        .iter()
                        .map(|l| (l.key.clone(), l.value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            filters.labels_match("label", &engine_labels)
        })
        .map(|n| NodeJson::from_proto(n, &root))
        .collect();
    Reply::json(&shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filter_encodings_become_one_request() {
        let cli = Filters::parse(
            r#"{"role":{"worker":true},"name":{"m":true},"id":{"3kl":true},"node.label":{"a=b":true,"c":true}}"#,
        )
        .unwrap();
        let py = Filters::parse(
            r#"{"role":["worker"],"name":["m"],"id":["3kl"],"node.label":["a=b","c"]}"#,
        )
        .unwrap();
        let request = list_request(&cli).unwrap();
        assert_eq!(request, list_request(&py).unwrap());
        assert_eq!(request.roles, [NodeRole::Worker as i32]);
        let f = request.filters.unwrap();
        assert_eq!(f.name_prefixes, ["m"]);
        assert_eq!(f.id_prefixes, ["3kl"]);
        assert_eq!(f.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(f.labels.get("c").map(String::as_str), Some(""));
    }

    #[test]
    fn bad_filters_are_refused_with_mobys_texts() {
        let e = list_request(&Filters::parse(r#"{"role":["boss"]}"#).unwrap()).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "Invalid role filter: 'boss'")
        );
        let e = list_request(&Filters::parse(r#"{"membership":["maybe"]}"#).unwrap()).unwrap_err();
        assert_eq!(e.message, "Invalid membership filter: 'maybe'");
        let e = list_request(&Filters::parse(r#"{"colour":["red"]}"#).unwrap()).unwrap_err();
        assert_eq!(e.message, "invalid filter 'colour'");
        let ok =
            list_request(&Filters::parse(r#"{"membership":["accepted"],"label":["x"]}"#).unwrap())
                .unwrap();
        assert_eq!(ok.memberships, [node_spec::Membership::Accepted as i32]);
    }
}
