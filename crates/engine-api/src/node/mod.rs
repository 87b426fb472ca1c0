//! The `node` endpoints of the Engine API (list, inspect, update, remove), and the `Node`
//! shape shared with `/info`.
//!
//! A node is named as Docker names it: a full ID, a name (the spec's name or the hostname),
//! or a unique ID prefix, in that order (moby's `getNode`); a name or prefix that matches
//! several nodes is ambiguous (400), none is `node X not found` (404). Nodes are read with one
//! `ListNodes` call, so the answer is consistent with itself.
//!
//! The shape is moby's `NodeFromGRPC`: `Spec{Name?, Labels, Role, Availability}` (what a
//! client sends back on update, compared for equality by docker-py), `Description{Hostname,
//! Platform, Resources, Engine, TLSInfo}`, `Status{State, Message?, Addr}` and, for Raft
//! members only, `ManagerStatus{Leader, Reachability, Addr}` (the Control API renders it from
//! the Raft membership). The node's `TLSInfo` is the swarm's root CA, as every node of a swarm
//! trusts the same one.
//!
//! Role and availability are Docker's words (case-insensitive, as moby's `ToUpper`); a role
//! change is a promotion or demotion, which the Control API checks against the quorum.

pub mod inspect;
pub mod list;
pub mod remove;
pub mod update;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_api::v1::{
    ListNodesRequest, Node, NodeRole, generic_resource, manager_status, node_spec, node_status,
};

use crate::backend::Backend;
use crate::error::EngineError;
use crate::shapes::ObjectMeta;
use crate::swarm::shapes::TlsInfo;
use crate::swarm::spec::labels_from_proto;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// moby's `swarm.NodeSpec`, as read and as sent on update.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NodeSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub availability: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(rename = "OS", skip_serializing_if = "String::is_empty")]
    pub os: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceSpec<V> {
    #[serde(rename = "Kind")]
    pub kind: String,
    #[serde(rename = "Value")]
    pub value: V,
}

/// moby's `swarm.GenericResource`: one of its two members is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GenericResource {
    #[serde(rename = "NamedResourceSpec", skip_serializing_if = "Option::is_none")]
    pub named: Option<ResourceSpec<String>>,
    #[serde(
        rename = "DiscreteResourceSpec",
        skip_serializing_if = "Option::is_none"
    )]
    pub discrete: Option<ResourceSpec<i64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero")]
    pub nano_cpus: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub memory_bytes: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generic_resources: Vec<GenericResource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginDescription {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Engine {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub engine_version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginDescription>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Description {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    pub platform: Platform,
    pub resources: Resources,
    pub engine: Engine,
    #[serde(rename = "TLSInfo")]
    pub tls_info: TlsInfo,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
    #[serde(skip_serializing_if = "is_false")]
    pub leader: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reachability: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// moby's `swarm.Node`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeJson {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    pub spec: NodeSpec,
    pub description: Description,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatus>,
}

/// Docker's word for a node role.
pub fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Manager) => "manager",
        _ => "worker",
    }
}

fn availability_name(availability: i32) -> &'static str {
    match node_spec::Availability::try_from(availability) {
        Ok(node_spec::Availability::Pause) => "pause",
        Ok(node_spec::Availability::Drain) => "drain",
        _ => "active",
    }
}

fn state_name(state: i32) -> &'static str {
    match node_status::State::try_from(state) {
        Ok(node_status::State::Down) => "down",
        Ok(node_status::State::Ready) => "ready",
        Ok(node_status::State::Disconnected) => "disconnected",
        _ => "unknown",
    }
}

fn reachability_name(reachability: i32) -> &'static str {
    match manager_status::Reachability::try_from(reachability) {
        Ok(manager_status::Reachability::Reachable) => "reachable",
        Ok(manager_status::Reachability::Unreachable) => "unreachable",
        _ => "unknown",
    }
}

/// A role in Docker's spelling (case-insensitive); empty is refused, as in moby.
pub fn parse_role(raw: &str) -> Result<NodeRole, EngineError> {
    match raw.to_ascii_lowercase().as_str() {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => Err(EngineError::bad_request(format!(
            "invalid Role: {raw:?} (use \"worker\" or \"manager\")"
        ))),
    }
}

/// An availability in Docker's spelling (case-insensitive); empty is refused, as in moby.
pub fn parse_availability(raw: &str) -> Result<node_spec::Availability, EngineError> {
    crate::swarm::availability(raw)?.ok_or_else(|| {
        EngineError::bad_request(
            "invalid Availability: \"\" (use \"active\", \"pause\" or \"drain\")",
        )
    })
}

impl NodeJson {
    /// The node as Docker shows it; `root` is the swarm's root CA, the node's `TLSInfo` unless
    /// the node describes its own.
    pub fn from_proto(node: &Node, root: &TlsInfo) -> NodeJson {
        let spec = node.spec.clone().unwrap_or_default();
        let annotations = spec.annotations.clone().unwrap_or_default();
        let description = node.description.clone().unwrap_or_default();
        let platform = description.platform.clone().unwrap_or_default();
        let resources = description.resources.clone().unwrap_or_default();
        let engine = description.engine.clone().unwrap_or_default();
        let tls_info = match &description.tls_info {
            Some(t) if !t.trust_root.is_empty() => TlsInfo {
                trust_root: String::from_utf8_lossy(&t.trust_root).into_owned(),
                cert_issuer_subject: t.cert_issuer_subject.clone(),
                cert_issuer_public_key: t.cert_issuer_public_key.clone(),
            },
            _ => root.clone(),
        };
        let status = node.status.clone().unwrap_or_default();
        NodeJson {
            meta: ObjectMeta::from_proto(node.meta.as_ref()),
            spec: NodeSpec {
                name: annotations.name,
                labels: labels_from_proto(&annotations.labels),
                role: role_name(spec.desired_role).to_string(),
                availability: availability_name(spec.availability).to_string(),
            },
            description: Description {
                hostname: description.hostname,
                platform: Platform {
                    architecture: platform.architecture,
                    os: platform.os,
                },
                resources: Resources {
                    nano_cpus: resources.nano_cpus,
                    memory_bytes: resources.memory_bytes,
                    generic_resources: resources
                        .generic
                        .iter()
                        .filter_map(|g| match &g.resource {
                            Some(generic_resource::Resource::Named(n)) => Some(GenericResource {
                                named: Some(ResourceSpec {
                                    kind: n.kind.clone(),
                                    value: n.value.clone(),
                                }),
                                discrete: None,
                            }),
                            Some(generic_resource::Resource::Discrete(d)) => {
                                Some(GenericResource {
                                    named: None,
                                    discrete: Some(ResourceSpec {
                                        kind: d.kind.clone(),
                                        value: d.value,
                                    }),
                                })
                            }
                            None => None,
                        })
                        .collect(),
                },
                engine: Engine {
                    engine_version: engine.engine_version,
                    labels: labels_from_proto(&engine.labels),
                    plugins: engine
                        .plugins
                        .iter()
                        .map(|p| PluginDescription {
                            r#type: p.r#type.clone(),
                            name: p.name.clone(),
                        })
                        .collect(),
                },
                tls_info,
            },
            status: Status {
                state: state_name(status.state).to_string(),
                message: status.message,
                addr: status.addr,
            },
            manager_status: node.manager_status.as_ref().map(|m| ManagerStatus {
                leader: m.leader,
                reachability: reachability_name(m.reachability).to_string(),
                addr: m.addr.clone(),
            }),
        }
    }
}

/// Every node of the swarm (a manager's call).
pub async fn list_all(backend: &Backend) -> Result<Vec<Node>, EngineError> {
    Ok(backend
        .call(async |mut c| c.list_nodes(ListNodesRequest::default()).await)
        .await?
        .nodes)
}

/// The swarm's root CA as nodes show it (empty if the cluster cannot be read).
pub async fn root_tls(backend: &Backend) -> TlsInfo {
    crate::swarm::cluster(backend)
        .await
        .map(|c| TlsInfo::of_cluster(&c))
        .unwrap_or_default()
}

fn id_of(node: &Node) -> &str {
    node.meta
        .as_ref()
        .map(|m| m.id.as_str())
        .unwrap_or_default()
}

fn names_of(node: &Node) -> [&str; 2] {
    [
        node.spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.as_str())
            .unwrap_or_default(),
        node.description
            .as_ref()
            .map(|d| d.hostname.as_str())
            .unwrap_or_default(),
    ]
}

/// The one node `query` names among `nodes`: a full ID, else a name, else a unique ID prefix.
pub fn resolve<'a>(nodes: &'a [Node], query: &str) -> Result<&'a Node, EngineError> {
    let not_found = || EngineError::not_found(format!("node {query} not found"));
    if query.is_empty() {
        return Err(not_found());
    }
    if let Some(node) = nodes.iter().find(|n| id_of(n) == query) {
        return Ok(node);
    }
    let ambiguous = |n: usize| {
        EngineError::bad_request(format!("node {query} is ambiguous ({n} matches found)"))
    };
    let named: Vec<&Node> = nodes
        .iter()
        .filter(|n| names_of(n).contains(&query))
        .collect();
    match named.as_slice() {
        [one] => return Ok(one),
        [] => {}
        many => return Err(ambiguous(many.len())),
    }
    let prefixed: Vec<&Node> = nodes
        .iter()
        .filter(|n| id_of(n).starts_with(query))
        .collect();
    match prefixed.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found()),
        many => Err(ambiguous(many.len())),
    }
}

/// The node `query` names (ID, name or ID prefix).
pub async fn get(backend: &Backend, query: &str) -> Result<Node, EngineError> {
    let nodes = list_all(backend).await?;
    resolve(&nodes, query).cloned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_api::v1::{
        Annotations, DiscreteGenericResource, EngineDescription, GenericResource as Generic, Label,
        ManagerStatus as ProtoManagerStatus, Meta, NodeDescription, NodeStatus,
        Platform as ProtoPlatform, PluginDescription as ProtoPlugin, Resources as ProtoResources,
    };

    /// A manager node built from fixed inputs.
    pub(crate) fn manager() -> Node {
        Node {
            meta: Some(Meta {
                id: "3kl0btlvmwu4tmrbsbkbxe4j6".into(),
                version: 9,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 120_000_000,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_050,
                    nanos: 0,
                }),
            }),
            spec: Some(shoal_api::v1::NodeSpec {
                annotations: Some(Annotations {
                    name: String::new(),
                    labels: vec![Label {
                        key: "zone".into(),
                        value: "a".into(),
                    }],
                }),
                desired_role: NodeRole::Manager as i32,
                membership: node_spec::Membership::Accepted as i32,
                availability: node_spec::Availability::Active as i32,
            }),
            description: Some(Box::new(NodeDescription {
                hostname: "m1".into(),
                platform: Some(ProtoPlatform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                }),
                resources: Some(ProtoResources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 8 << 30,
                    generic: vec![Generic {
                        resource: Some(generic_resource::Resource::Discrete(
                            DiscreteGenericResource {
                                kind: "gpu".into(),
                                value: 2,
                            },
                        )),
                    }],
                }),
                engine: Some(EngineDescription {
                    engine_version: "0.1.0".into(),
                    labels: vec![Label {
                        key: "disk".into(),
                        value: "ssd".into(),
                    }],
                    plugins: vec![ProtoPlugin {
                        r#type: "Network".into(),
                        name: "overlay".into(),
                    }],
                }),
                ..Default::default()
            })),
            status: Some(NodeStatus {
                state: node_status::State::Ready as i32,
                message: String::new(),
                addr: "127.0.0.1".into(),
            }),
            manager_status: Some(Box::new(ProtoManagerStatus {
                raft_id: 1,
                addr: "127.0.0.1:2377".into(),
                leader: true,
                reachability: manager_status::Reachability::Reachable as i32,
            })),
            role: NodeRole::Manager as i32,
            ..Default::default()
        }
    }

    pub(crate) fn worker(id: &str, hostname: &str) -> Node {
        let mut node = manager();
        node.meta.as_mut().unwrap().id = id.into();
        node.description.as_mut().unwrap().hostname = hostname.into();
        let spec = node.spec.as_mut().unwrap();
        spec.desired_role = NodeRole::Worker as i32;
        spec.availability = node_spec::Availability::Drain as i32;
        spec.annotations = None;
        node.role = NodeRole::Worker as i32;
        node.manager_status = None;
        node.status.as_mut().unwrap().state = node_status::State::Down as i32;
        node.status.as_mut().unwrap().message = "heartbeat failure".into();
        node
    }

    #[test]
    fn a_manager_has_mobys_shape() {
        let root = TlsInfo::from_root_pem(crate::swarm::shapes::tests::ROOT_PEM.as_bytes());
        let json = serde_json::to_string_pretty(&NodeJson::from_proto(&manager(), &root)).unwrap();
        insta::assert_snapshot!(json);
    }

    #[test]
    fn a_worker_has_no_manager_status() {
        let json = serde_json::to_string_pretty(&NodeJson::from_proto(
            &worker("9xq2bn1f5gqyxvdy2e3zy8kr4", "w1"),
            &TlsInfo::default(),
        ))
        .unwrap();
        insta::assert_snapshot!(json);
    }

    #[test]
    fn nodes_resolve_by_id_name_then_prefix() {
        let nodes = vec![
            manager(),
            worker("9xq2bn1f5gqyxvdy2e3zy8kr4", "w1"),
            worker("9xq2aaaaaaaaaaaaaaaaaaaaa", "w2"),
            worker("w1aaaaaaaaaaaaaaaaaaaaaaa", "twin"),
            worker("zzzzzzzzzzzzzzzzzzzzzzzzz", "twin"),
        ];
        let id = |r: Result<&Node, EngineError>| id_of(r.unwrap()).to_string();
        assert_eq!(id(resolve(&nodes, "m1")), "3kl0btlvmwu4tmrbsbkbxe4j6");
        assert_eq!(id(resolve(&nodes, "9xq2b")), "9xq2bn1f5gqyxvdy2e3zy8kr4");
        // A name wins over an ID prefix.
        assert_eq!(id(resolve(&nodes, "w1")), "9xq2bn1f5gqyxvdy2e3zy8kr4");
        let e = resolve(&nodes, "9xq2").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "node 9xq2 is ambiguous (2 matches found)")
        );
        let e = resolve(&nodes, "twin").unwrap_err();
        assert_eq!(e.status, 400);
        let e = resolve(&nodes, "foobar01").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (404, "node foobar01 not found")
        );
        assert_eq!(resolve(&nodes, "").unwrap_err().status, 404);
    }

    #[test]
    fn roles_and_availabilities_are_dockers_words() {
        assert_eq!(parse_role("Manager").unwrap(), NodeRole::Manager);
        assert_eq!(parse_role("worker").unwrap(), NodeRole::Worker);
        assert_eq!(
            parse_role("boss").unwrap_err().message,
            "invalid Role: \"boss\" (use \"worker\" or \"manager\")"
        );
        assert_eq!(parse_role("").unwrap_err().status, 400);
        assert_eq!(
            parse_availability("DRAIN").unwrap(),
            node_spec::Availability::Drain
        );
        assert_eq!(parse_availability("").unwrap_err().status, 400);
        assert_eq!(parse_availability("off").unwrap_err().status, 400);
    }
}
