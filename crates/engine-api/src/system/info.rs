//! `GET /info`: the daemon, the machine and the node's swarm state, in moby's `system.Info`
//! shape.
//!
//! The `Swarm` block is what the CLI relies on: `NodeID` (the `*` of `node ls`, `self` in
//! `node inspect self`), `LocalNodeState` (`inactive`, `active`, `error`), `ControlAvailable`
//! (a manager: `swarm join` says "as a manager"), `RemoteManagers`, and for managers `Nodes`,
//! `Managers` and `Cluster` (the swarm's `ClusterInfo`, which `docker info` prints and
//! dereferences whenever `ControlAvailable`: so it is always sent to a manager, with `Error`
//! set if it could not be read, as moby does). `NodeAddr` is the manager's advertised host; a
//! worker cannot read its own node and leaves it empty.
//!
//! Container, image, storage and plugin fields are Go zero values: Shoal runs no containers
//! itself. `Warnings` says so — which also keeps the CLI from printing its legacy warnings
//! about each missing cgroup feature. `Name` is the node's hostname (the machine's when the
//! node is not a manager).

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_api::v1::{Cluster, Node};

use super::{Machine, SHOAL_VERSION};
use crate::backend::{Backend, LocalState};
use crate::error::EngineError;
use crate::swarm::shapes::ClusterInfo;

/// moby's `swarm.Peer`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Peer {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "Addr")]
    pub addr: String,
}

/// moby's `swarm.Info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    pub local_node_state: String,
    pub control_available: bool,
    pub error: String,
    pub remote_managers: Option<Vec<Peer>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub nodes: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub managers: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginsInfo {
    pub volume: Vec<String>,
    pub network: Vec<String>,
    pub authorization: Vec<String>,
    pub log: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Commit {
    #[serde(rename = "ID")]
    pub id: String,
}

/// moby's `system.Info`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub containers: i64,
    pub containers_running: i64,
    pub containers_paused: i64,
    pub containers_stopped: i64,
    pub images: i64,
    pub driver: String,
    pub driver_status: Vec<[String; 2]>,
    pub plugins: PluginsInfo,
    pub memory_limit: bool,
    pub swap_limit: bool,
    #[serde(rename = "CpuCfsPeriod")]
    pub cpu_cfs_period: bool,
    #[serde(rename = "CpuCfsQuota")]
    pub cpu_cfs_quota: bool,
    #[serde(rename = "CPUShares")]
    pub cpu_shares: bool,
    #[serde(rename = "CPUSet")]
    pub cpu_set: bool,
    pub pids_limit: bool,
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    pub debug: bool,
    #[serde(rename = "NFd")]
    pub nfd: i64,
    pub oom_kill_disable: bool,
    #[serde(rename = "NGoroutines")]
    pub ngoroutines: i64,
    pub system_time: String,
    pub logging_driver: String,
    pub cgroup_driver: String,
    #[serde(rename = "NEventsListener")]
    pub nevents_listener: i64,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    pub index_server_address: String,
    pub registry_config: Option<()>,
    #[serde(rename = "NCPU")]
    pub ncpu: i64,
    pub mem_total: i64,
    pub generic_resources: Option<()>,
    pub docker_root_dir: String,
    pub http_proxy: String,
    pub https_proxy: String,
    pub no_proxy: String,
    pub name: String,
    pub labels: Vec<String>,
    pub experimental_build: bool,
    pub server_version: String,
    pub runtimes: BTreeMap<String, ()>,
    pub default_runtime: String,
    pub swarm: SwarmInfo,
    pub live_restore_enabled: bool,
    pub isolation: String,
    pub init_binary: String,
    pub containerd_commit: Commit,
    pub runc_commit: Commit,
    pub init_commit: Commit,
    pub security_options: Vec<String>,
    #[serde(rename = "CDISpecDirs")]
    pub cdi_spec_dirs: Vec<String>,
    pub warnings: Vec<String>,
}

/// The one warning `docker info` prints.
pub const SWARM_ONLY: &str = "WARNING: this daemon is Shoal: it serves the swarm-mode part \
                              of the Docker Engine API (swarm, nodes, services, tasks, \
                              secrets, configs, networks); containers, images and volumes \
                              belong to each node's own Docker Engine";

/// The host part of `host:port`.
fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => addr,
    }
}

/// The swarm block for a node in `state`; a manager's `cluster` and `nodes` as read.
pub fn swarm_info(
    state: &LocalState,
    cluster: Option<Result<Cluster, EngineError>>,
    nodes: Option<Result<Vec<Node>, EngineError>>,
) -> SwarmInfo {
    let info = match state {
        LocalState::Inactive => {
            return SwarmInfo {
                local_node_state: "inactive".into(),
                ..Default::default()
            };
        }
        LocalState::Error(e) => {
            return SwarmInfo {
                local_node_state: "error".into(),
                error: e.clone(),
                ..Default::default()
            };
        }
        LocalState::Active(info) if info.locked => {
            return SwarmInfo {
                node_id: info.node_id.clone(),
                local_node_state: "locked".into(),
                ..Default::default()
            };
        }
        LocalState::Active(info) => info,
    };
    let mut swarm = SwarmInfo {
        node_id: info.node_id.clone(),
        local_node_state: "active".into(),
        control_available: state.is_manager(),
        remote_managers: Some(
            info.managers
                .iter()
                .map(|addr| Peer {
                    node_id: String::new(),
                    addr: addr.clone(),
                })
                .collect(),
        ),
        ..Default::default()
    };
    if !state.is_manager() {
        return swarm;
    }
    let mut errors = Vec::new();
    swarm.cluster = Some(match cluster {
        Some(Ok(c)) => ClusterInfo::from_cluster(&c),
        Some(Err(e)) => {
            errors.push(e.message);
            ClusterInfo::default()
        }
        None => ClusterInfo::default(),
    });
    match nodes {
        Some(Ok(nodes)) => {
            swarm.nodes = nodes.len() as i64;
            let managers: Vec<(&str, &str)> = nodes
                .iter()
                .filter_map(|n| {
                    let id = n.meta.as_ref().map(|m| m.id.as_str()).unwrap_or_default();
                    n.manager_status.as_ref().map(|m| (id, m.addr.as_str()))
                })
                .collect();
            swarm.managers = managers.len() as i64;
            if let Some((_, addr)) = managers.iter().find(|(id, _)| *id == info.node_id) {
                swarm.node_addr = host_of(addr).to_string();
            }
            if !managers.is_empty() {
                swarm.remote_managers = Some(
                    managers
                        .iter()
                        .map(|(id, addr)| Peer {
                            node_id: id.to_string(),
                            addr: addr.to_string(),
                        })
                        .collect(),
                );
            }
        }
        Some(Err(e)) => errors.push(e.message),
        None => {}
    }
    swarm.error = errors.join("; ");
    swarm
}

/// The info answer for `machine`, with the node's swarm block; `hostname` is the node's.
pub fn info(
    machine: &Machine,
    swarm: SwarmInfo,
    hostname: Option<String>,
    root_dir: String,
) -> Info {
    Info {
        system_time: crate::shapes::time(Some(&std::time::SystemTime::now().into())),
        kernel_version: machine.kernel_version.clone(),
        operating_system: machine.operating_system.clone(),
        os_version: machine.os_version.clone(),
        os_type: "linux".into(),
        architecture: machine.architecture.clone(),
        ncpu: machine.ncpu,
        mem_total: machine.mem_total,
        docker_root_dir: root_dir,
        name: hostname
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| machine.hostname.clone()),
        experimental_build: false,
        server_version: SHOAL_VERSION.into(),
        swarm,
        warnings: vec![SWARM_ONLY.to_string()],
        ..Default::default()
    }
}

pub async fn handle(
    backend: &Backend,
    _request: crate::request::Request,
) -> crate::request::Result {
    let state = backend.local_state().await;
    let (cluster, nodes) = if state.is_manager() {
        (
            Some(crate::swarm::cluster(backend).await),
            Some(crate::node::list_all(backend).await),
        )
    } else {
        (None, None)
    };
    let hostname = match (&state, &nodes) {
        (LocalState::Active(info), Some(Ok(nodes))) => nodes
            .iter()
            .find(|n| n.meta.as_ref().is_some_and(|m| m.id == info.node_id))
            .and_then(|n| n.description.as_ref())
            .map(|d| d.hostname.clone()),
        _ => None,
    };
    let root_dir = backend
        .socket()
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let swarm = swarm_info(&state, cluster, nodes);
    crate::request::Reply::json(&info(&Machine::current(), swarm, hostname, root_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::tests::{manager, worker};
    use crate::system::version::tests::machine;
    use shoal_api::v1::{NodeRole, SwarmInfoResponse};

    fn active(role: NodeRole) -> LocalState {
        LocalState::Active(SwarmInfoResponse {
            node_id: "3kl0btlvmwu4tmrbsbkbxe4j6".into(),
            role: role as i32,
            cluster_id: "5dqc9mhqt8yhy2ctmzqdhm8ax".into(),
            managers: vec!["127.0.0.1:2377".into()],
            certificate_expiry: None,
            incarnation: 7,
            locked: false,
        })
    }

    fn fixed(info: Info) -> String {
        let mut value = serde_json::to_value(&info).unwrap();
        value["SystemTime"] = "2023-11-14T22:13:20.000000001Z".into();
        value["ServerVersion"] = "<shoal-version>".into();
        serde_json::to_string_pretty(&value).unwrap()
    }

    #[test]
    fn a_managers_info_has_mobys_shape() {
        let swarm = swarm_info(
            &active(NodeRole::Manager),
            Some(Ok(crate::swarm::shapes::tests::cluster())),
            Some(Ok(vec![
                manager(),
                worker("9xq2bn1f5gqyxvdy2e3zy8kr4", "w1"),
            ])),
        );
        assert_eq!(swarm.node_addr, "127.0.0.1");
        assert_eq!((swarm.nodes, swarm.managers), (2, 1));
        insta::assert_snapshot!(fixed(info(
            &machine(),
            swarm,
            Some("m1".into()),
            "/var/lib/shoal".into()
        )));
    }

    #[test]
    fn a_worker_and_an_inactive_node_have_no_cluster() {
        let swarm = swarm_info(&active(NodeRole::Worker), None, None);
        insta::assert_snapshot!(serde_json::to_string_pretty(&swarm).unwrap());
        let swarm = swarm_info(&LocalState::Inactive, None, None);
        assert_eq!(
            serde_json::to_value(&swarm).unwrap(),
            serde_json::json!({"NodeID":"","NodeAddr":"","LocalNodeState":"inactive",
                "ControlAvailable":false,"Error":"","RemoteManagers":null})
        );
    }

    #[test]
    fn a_manager_whose_cluster_cannot_be_read_still_has_a_cluster_block() {
        let swarm = swarm_info(
            &active(NodeRole::Manager),
            Some(Err(EngineError::unavailable("no leader"))),
            Some(Err(EngineError::unavailable("no leader"))),
        );
        assert!(swarm.control_available);
        assert!(swarm.cluster.is_some());
        assert_eq!(swarm.error, "no leader; no leader");
    }
}
