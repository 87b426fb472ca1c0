//! `shoal node ...`: the swarm's nodes. One file per command; this one holds what they share:
//! naming nodes, their states in words, and a node as JSON.

pub mod demote;
pub mod inspect;
pub mod ls;
pub mod promote;
pub mod ps;
pub mod rm;
pub mod update;

use std::path::PathBuf;

use shoal_api::v1::{Node, NodeRole, UpdateNodeRequest, manager_status, node_spec, node_status};

use super::client::Client;
use super::output::{self, Json};
use super::resolve::Resolver;

/// Arguments of `shoal node`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List the swarm's nodes
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Show nodes in detail, as JSON
    Inspect(inspect::Args),
    /// List the tasks on nodes (the local node by default)
    Ps(ps::Args),
    /// Remove nodes from the swarm
    #[command(visible_alias = "remove")]
    Rm(rm::Args),
    /// Make workers managers
    Promote(promote::Args),
    /// Make managers workers
    Demote(demote::Args),
    /// Change a node's availability, role or labels
    Update(update::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Ls(a) => ls::run(socket, a),
        Command::Inspect(a) => inspect::run(socket, a),
        Command::Ps(a) => ps::run(socket, a),
        Command::Rm(a) => rm::run(socket, a),
        Command::Promote(a) => promote::run(socket, a),
        Command::Demote(a) => demote::run(socket, a),
        Command::Update(a) => update::run(socket, a),
    }
}

/// Nodes are named by ID, name (`spec.annotations.name`) or hostname, or a unique ID prefix.
pub const RESOLVER: Resolver<'static, Node> = Resolver {
    kind: "node",
    id,
    names: |n| vec![name(n), hostname(n)],
    describe: |n| format!("({})", hostname(n)),
};

pub fn id(node: &Node) -> &str {
    node.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn version(node: &Node) -> u64 {
    node.meta.as_ref().map(|m| m.version).unwrap_or(0)
}

pub fn name(node: &Node) -> &str {
    node.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

pub fn hostname(node: &Node) -> &str {
    node.description
        .as_ref()
        .map(|d| d.hostname.as_str())
        .unwrap_or("")
}

pub fn desired_role(node: &Node) -> i32 {
    node.spec.as_ref().map(|s| s.desired_role).unwrap_or(0)
}

pub fn role_name(role: i32) -> String {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Worker) => "worker".into(),
        Ok(NodeRole::Manager) => "manager".into(),
        Err(_) => format!("role {role}"),
    }
}

pub fn availability_name(a: i32) -> String {
    match node_spec::Availability::try_from(a) {
        Ok(node_spec::Availability::Active) => "active".into(),
        Ok(node_spec::Availability::Pause) => "pause".into(),
        Ok(node_spec::Availability::Drain) => "drain".into(),
        Err(_) => format!("availability {a}"),
    }
}

pub fn membership_name(m: i32) -> String {
    match node_spec::Membership::try_from(m) {
        Ok(node_spec::Membership::Pending) => "pending".into(),
        Ok(node_spec::Membership::Accepted) => "accepted".into(),
        Err(_) => format!("membership {m}"),
    }
}

pub fn state_name(s: i32) -> String {
    match node_status::State::try_from(s) {
        Ok(node_status::State::Unknown) => "unknown".into(),
        Ok(node_status::State::Down) => "down".into(),
        Ok(node_status::State::Ready) => "ready".into(),
        Ok(node_status::State::Disconnected) => "disconnected".into(),
        Err(_) => format!("state {s}"),
    }
}

pub fn reachability_name(r: i32) -> String {
    match manager_status::Reachability::try_from(r) {
        Ok(manager_status::Reachability::Unknown) => "unknown".into(),
        Ok(manager_status::Reachability::Unreachable) => "unreachable".into(),
        Ok(manager_status::Reachability::Reachable) => "reachable".into(),
        Err(_) => format!("reachability {r}"),
    }
}

/// "ready" → "Ready", as tables show states.
pub fn title(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A node as `node inspect` shows it (docker's field names).
pub fn to_json(node: &Node) -> Json {
    let spec = node.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let mut fields = vec![
        ("ID", Json::str(id(node))),
        ("Version", output::version(node.meta.as_ref())),
        (
            "CreatedAt",
            output::timestamp(node.meta.as_ref().and_then(|m| m.created_at.as_ref())),
        ),
        (
            "UpdatedAt",
            output::timestamp(node.meta.as_ref().and_then(|m| m.updated_at.as_ref())),
        ),
        (
            "Spec",
            Json::object([
                ("Name", Json::str(&annotations.name)),
                ("Labels", output::labels(&annotations.labels)),
                ("Role", Json::str(role_name(spec.desired_role))),
                ("Membership", Json::str(membership_name(spec.membership))),
                (
                    "Availability",
                    Json::str(availability_name(spec.availability)),
                ),
            ]),
        ),
        ("Role", Json::str(role_name(node.role))),
    ];
    if let Some(d) = node.description.as_deref() {
        let platform = d.platform.clone().unwrap_or_default();
        let resources = d.resources.clone().unwrap_or_default();
        let engine = d.engine.clone().unwrap_or_default();
        let tls = d.tls_info.clone().unwrap_or_default();
        fields.push((
            "Description",
            Json::object([
                ("Hostname", Json::str(&d.hostname)),
                (
                    "Platform",
                    Json::object([
                        ("Architecture", Json::str(&platform.architecture)),
                        ("OS", Json::str(&platform.os)),
                    ]),
                ),
                (
                    "Resources",
                    Json::object([
                        ("NanoCPUs", Json::Int(resources.nano_cpus)),
                        ("MemoryBytes", Json::Int(resources.memory_bytes)),
                    ]),
                ),
                (
                    "Engine",
                    Json::object([
                        ("EngineVersion", Json::str(&engine.engine_version)),
                        ("Labels", output::labels(&engine.labels)),
                        (
                            "Plugins",
                            Json::Array(
                                engine
                                    .plugins
                                    .iter()
                                    .map(|p| {
                                        Json::object([
                                            ("Type", Json::str(&p.r#type)),
                                            ("Name", Json::str(&p.name)),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                    ]),
                ),
                (
                    "Runtimes",
                    Json::Array(d.runtimes.iter().map(Json::str).collect()),
                ),
                (
                    "TLSInfo",
                    Json::object([
                        (
                            "TrustRoot",
                            Json::str(String::from_utf8_lossy(&tls.trust_root)),
                        ),
                        (
                            "CertIssuerSubject",
                            Json::str(output::base64(&tls.cert_issuer_subject)),
                        ),
                        (
                            "CertIssuerPublicKey",
                            Json::str(output::base64(&tls.cert_issuer_public_key)),
                        ),
                    ]),
                ),
            ]),
        ));
    }
    let status = node.status.clone().unwrap_or_default();
    fields.push((
        "Status",
        Json::object([
            ("State", Json::str(state_name(status.state))),
            ("Message", Json::str(&status.message)),
            ("Addr", Json::str(&status.addr)),
        ]),
    ));
    if let Some(m) = node.manager_status.as_deref() {
        fields.push((
            "ManagerStatus",
            Json::object([
                ("Leader", Json::Bool(m.leader)),
                ("Reachability", Json::str(reachability_name(m.reachability))),
                ("Addr", Json::str(&m.addr)),
            ]),
        ));
    }
    Json::object(fields)
}

/// Sets the desired role of each named node (`promote`, `demote`); returns what to print.
/// Every node is tried; the errors of those that failed come back together.
pub async fn change_role(
    client: &mut Client,
    names: &[String],
    role: NodeRole,
) -> (String, Result<(), String>) {
    let nodes = match client.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return (String::new(), Err(e)),
    };
    let mut out = String::new();
    let mut errors = Vec::new();
    for name in names {
        let node = match RESOLVER.resolve(&nodes, name) {
            Ok(node) => node,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if desired_role(node) == role as i32 {
            out.push_str(&format!(
                "Node {name} is already a {}.\n",
                role_name(role as i32)
            ));
            continue;
        }
        let mut spec = node.spec.clone().unwrap_or_default();
        spec.desired_role = role as i32;
        let request = UpdateNodeRequest {
            node_id: id(node).to_string(),
            node_version: version(node),
            spec: Some(spec),
        };
        match client.control().update_node(request).await {
            Ok(_) => out.push_str(&match role {
                NodeRole::Manager => format!("Node {name} promoted to a manager in the swarm.\n"),
                NodeRole::Worker => format!("Manager {name} demoted in the swarm.\n"),
            }),
            Err(s) => errors.push(client.error("UpdateNode", &s)),
        }
    }
    (out, join_errors(errors))
}

/// Several errors as one (one per line), or Ok.
pub fn join_errors(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_api::v1::{
        Annotations, Label, ManagerStatus, Meta, NodeDescription, NodeSpec, NodeStatus,
    };

    /// A node as a manager lists it.
    pub(crate) fn node(id: &str, hostname: &str, manager: Option<(bool, i32)>) -> Node {
        Node {
            meta: Some(Meta {
                id: id.into(),
                version: 7,
                created_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                updated_at: None,
            }),
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    name: String::new(),
                    labels: vec![Label {
                        key: "zone".into(),
                        value: "east".into(),
                    }],
                }),
                desired_role: if manager.is_some() { 1 } else { 0 },
                membership: 1,
                availability: 2,
            }),
            description: Some(Box::new(NodeDescription {
                hostname: hostname.into(),
                ..Default::default()
            })),
            status: Some(NodeStatus {
                state: 2,
                message: String::new(),
                addr: "10.0.0.9".into(),
            }),
            manager_status: manager.map(|(leader, reachability)| {
                Box::new(ManagerStatus {
                    raft_id: 1,
                    addr: format!("{hostname}:4242"),
                    leader,
                    reachability,
                })
            }),
            role: if manager.is_some() { 1 } else { 0 },
            ..Default::default()
        }
    }

    #[test]
    fn nodes_resolve_by_hostname_too() {
        let nodes = vec![
            node("aaaa1111", "m1", Some((true, 2))),
            node("aaaa2222", "w1", None),
        ];
        assert_eq!(id(RESOLVER.resolve(&nodes, "w1").unwrap()), "aaaa2222");
        let e = RESOLVER.resolve(&nodes, "aaaa").unwrap_err();
        assert!(e.contains("aaaa1111 (m1), aaaa2222 (w1)"), "{e}");
    }

    #[test]
    fn json_uses_docker_field_names() {
        let json = to_json(&node("abc", "m1", Some((true, 2)))).compact();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(
            json.starts_with("{\"ID\":\"abc\",\"Version\":{\"Index\":7}"),
            "{json}"
        );
        assert_eq!(v["CreatedAt"], "1970-01-01T00:00:00Z");
        assert_eq!(v["UpdatedAt"], serde_json::Value::Null);
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "drain");
        assert_eq!(v["Spec"]["Membership"], "accepted");
        assert_eq!(v["Spec"]["Labels"]["zone"], "east");
        assert_eq!(v["Description"]["Hostname"], "m1");
        assert_eq!(v["Status"]["State"], "ready");
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Reachability"], "reachable");
        assert_eq!(v["ManagerStatus"]["Addr"], "m1:4242");
        let worker = to_json(&node("w", "w1", None)).compact();
        assert!(!worker.contains("ManagerStatus"), "{worker}");
    }

    #[test]
    fn words() {
        assert_eq!(title("ready"), "Ready");
        assert_eq!(title(""), "");
        assert_eq!(role_name(1), "manager");
        assert_eq!(role_name(9), "role 9");
        assert_eq!(availability_name(1), "pause");
        assert_eq!(state_name(1), "down");
        assert_eq!(reachability_name(1), "unreachable");
    }
}
