//! `POST /swarm/init`: this node creates a swarm and becomes its first manager; the answer is
//! the node's ID as a JSON string.
//!
//! Everything is checked before anything changes: the addresses (Docker's spellings, see
//! [`super::addr`]), the spec (laid over the defaults and validated as the Control API would,
//! see [`super::spec`]), the availability, and what Shoal does not do (other address pools, a
//! data path) — refused with 501. `AutoLockManagers` locks the new swarm's managers (the CLI
//! then reads the key from `GET /swarm/unlockkey` and prints it). A node already in a swarm gets moby's 503, unless
//! `ForceNewCluster` (then the Control API's `force_new_cluster`: a manager restarts as the only
//! member of a new cluster, keeping its data).
//!
//! Then `Swarm.Init`, a wait until the new manager serves (a new daemon incarnation that
//! answers `ListClusters`), and the spec applied by one cluster update when it differs from
//! the defaults (and the node's availability when it is not `active`). The swarm exists once
//! `Swarm.Init` succeeded: if applying the spec then fails, the answer says so.

use serde::Deserialize;
use shoal_api::v1::{InitSwarmRequest, UpdateClusterRequest, UpdateNodeRequest, node_spec};
use tonic::Code;

use super::shapes::{DEFAULT_ADDR_POOL, SUBNET_SIZE};
use super::spec::{Spec, default_cluster_spec, to_cluster_spec};
use super::{addr, availability, cluster, wait_for, wait_for_cluster};
use crate::backend::{Backend, LocalState};
use crate::error::{self, EngineError};
use crate::lenient;
use crate::request::{Reply, Request, Result};

/// moby's `swarm.InitRequest`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InitRequest {
    pub listen_addr: String,
    pub advertise_addr: String,
    pub data_path_addr: String,
    pub data_path_port: u32,
    pub force_new_cluster: bool,
    pub spec: Spec,
    pub auto_lock_managers: bool,
    pub availability: String,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
}

/// What an init asks for, checked.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub init: InitSwarmRequest,
    /// The spec asked for, laid over the swarm's spec once it serves.
    pub spec: Spec,
    pub availability: Option<node_spec::Availability>,
}

/// Checks `request` (nothing changes when it is refused).
pub fn plan(
    request: &InitRequest,
    interfaces: &[addr::InterfaceAddr],
) -> Result<Plan, EngineError> {
    if !request.default_addr_pool.is_empty()
        && request.default_addr_pool != [DEFAULT_ADDR_POOL.to_string()]
    {
        return Err(EngineError::not_implemented(format!(
            "DefaultAddrPool {:?} is not supported: overlay networks in Shoal take their \
             subnets from {DEFAULT_ADDR_POOL} (give a network its own subnet with \
             docker network create --subnet instead)",
            request.default_addr_pool
        )));
    }
    if request.subnet_size != 0 && request.subnet_size != SUBNET_SIZE {
        return Err(EngineError::not_implemented(format!(
            "SubnetSize {} is not supported: overlay networks in Shoal get /{SUBNET_SIZE} \
             subnets of the default pool (give a network its own subnet with docker network \
             create --subnet instead)",
            request.subnet_size
        )));
    }
    if !request.data_path_addr.is_empty() || request.data_path_port != 0 {
        return Err(EngineError::not_implemented(
            "DataPathAddr and DataPathPort are not supported: Shoal has no data plane (no \
             VXLAN) yet; leave them out",
        ));
    }
    let listen = addr::listen_addr(&request.listen_addr, interfaces)?;
    let advertise = addr::advertise_addr(&request.advertise_addr, listen, interfaces)?;
    // Checked now against the defaults, so that a bad spec creates no swarm.
    to_cluster_spec(&request.spec, &default_cluster_spec())?;
    Ok(Plan {
        init: InitSwarmRequest {
            listen_addr: listen
                .map(|(ip, port)| std::net::SocketAddr::new(ip, port).to_string())
                .unwrap_or_default(),
            advertise_addr: advertise,
            force_new_cluster: request.force_new_cluster,
            autolock: request.auto_lock_managers
                || request.spec.encryption_config.auto_lock_managers,
        },
        spec: request.spec.clone(),
        availability: availability(&request.availability)?,
    })
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let body: InitRequest = lenient::from_slice(&request.body)?;
    // As in moby, a node in a swarm is told so before its request is looked at.
    let before = match backend.local_state().await {
        LocalState::Active(_) if !body.force_new_cluster => {
            return Err(EngineError::unavailable(error::ALREADY_IN_A_SWARM));
        }
        LocalState::Active(info) => Some(info.incarnation),
        _ => None,
    };
    let plan = plan(&body, &addr::interfaces())?;
    backend
        .swarm()
        .init(plan.init.clone())
        .await
        .map_err(|status| match status.code() {
            // Joined or created meanwhile.
            Code::FailedPrecondition if !plan.init.force_new_cluster => {
                EngineError::unavailable(error::ALREADY_IN_A_SWARM)
            }
            _ => EngineError::from_status(&status),
        })?;
    let state = wait_for(backend, "the new manager serving", |state| {
        matches!(state, LocalState::Active(info) if Some(info.incarnation) != before)
            && state.is_manager()
    })
    .await?;
    wait_for_cluster(backend).await?;
    let LocalState::Active(info) = state else {
        unreachable!("waited for an active state");
    };
    apply(backend, &info.node_id, &plan).await.map_err(|e| {
        EngineError::new(
            e.status,
            format!(
                "the swarm was created (this node, {}, is its manager) but its spec could not \
                 be applied: {}",
                info.node_id, e.message
            ),
        )
    })?;
    Reply::json(&info.node_id)
}

/// Applies the spec and availability of `plan` to the new swarm (a few tries: the new
/// manager's first writes may race with its own start-up writes).
async fn apply(backend: &Backend, node_id: &str, plan: &Plan) -> Result<(), EngineError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match apply_once(backend, node_id, plan).await {
            Err(e) if tries < 10 && (e.status == 500 || e.status == 503) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn apply_once(backend: &Backend, node_id: &str, plan: &Plan) -> Result<(), EngineError> {
    let current = cluster(backend).await?;
    let base = current.spec.clone().unwrap_or_else(default_cluster_spec);
    let wanted = to_cluster_spec(&plan.spec, &base)?;
    if wanted != base {
        let meta = current.meta.unwrap_or_default();
        backend
            .call(async |mut c| {
                c.update_cluster(UpdateClusterRequest {
                    cluster_id: meta.id.clone(),
                    cluster_version: meta.version,
                    spec: Some(wanted.clone()),
                    rotation: None,
                })
                .await
            })
            .await?;
    }
    if let Some(wanted) = plan.availability {
        let node = crate::node::get(backend, node_id).await?;
        let mut spec = node.spec.clone().unwrap_or_default();
        if spec.availability != wanted as i32 {
            spec.availability = wanted as i32;
            let version = node.meta.as_ref().map(|m| m.version).unwrap_or_default();
            backend
                .call(async |mut c| {
                    c.update_node(UpdateNodeRequest {
                        node_id: node_id.to_string(),
                        node_version: version,
                        spec: Some(spec.clone()),
                    })
                    .await
                })
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::addr::InterfaceAddr;

    fn machine() -> Vec<InterfaceAddr> {
        vec![
            InterfaceAddr {
                interface: "lo".into(),
                ip: "127.0.0.1".parse().unwrap(),
                up: true,
                loopback: true,
            },
            InterfaceAddr {
                interface: "eth0".into(),
                ip: "10.1.2.3".parse().unwrap(),
                up: true,
                loopback: false,
            },
        ]
    }

    fn decode(body: &str) -> InitRequest {
        lenient::from_slice(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_clis_init_body_is_a_default_init() {
        // `docker swarm init`, recorded.
        let request = decode(
            r#"{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"","DataPathAddr":"","DataPathPort":0,
            "ForceNewCluster":false,"Spec":{"Labels":null,"Orchestration":{},"Raft":{"ElectionTick":0,
            "HeartbeatTick":0},"Dispatcher":{},"CAConfig":{},"TaskDefaults":{},"EncryptionConfig":
            {"AutoLockManagers":false}},"AutoLockManagers":false,"Availability":"","DefaultAddrPool":[],
            "SubnetSize":24}"#,
        );
        let plan = plan(&request, &machine()).unwrap();
        assert_eq!(
            plan.init,
            InitSwarmRequest {
                listen_addr: "0.0.0.0:2377".into(),
                advertise_addr: "10.1.2.3:2377".into(),
                force_new_cluster: false,
                autolock: false,
            }
        );
        assert_eq!(
            to_cluster_spec(&plan.spec, &default_cluster_spec()).unwrap(),
            default_cluster_spec()
        );
        assert_eq!(plan.availability, None);
    }

    #[test]
    fn docker_pys_init_body_with_another_pool_is_refused() {
        // docker-py, recorded.
        let request = decode(
            r#"{"AdvertiseAddr":"127.0.0.1","ListenAddr":"0.0.0.0:12345","DefaultAddrPool":
            ["2.0.0.0/16"],"SubnetSize":28,"ForceNewCluster":false}"#,
        );
        let e = plan(&request, &machine()).unwrap_err();
        assert_eq!(e.status, 501);
        assert!(e.message.contains("DefaultAddrPool"), "{e}");
        let mut request = request;
        request.default_addr_pool = vec![];
        assert!(
            plan(&request, &machine())
                .unwrap_err()
                .message
                .contains("SubnetSize")
        );
        request.subnet_size = 0;
        let plan = plan(&request, &machine()).unwrap();
        assert_eq!(plan.init.advertise_addr, "127.0.0.1:12345");
        assert_eq!(plan.init.listen_addr, "0.0.0.0:12345");
    }

    #[test]
    fn a_spec_and_availability_are_carried() {
        let request = decode(
            r#"{"ListenAddr":"127.0.0.1:4000","ForceNewCluster":true,"Availability":"drain",
            "Spec":{"Labels":{"env":"test"},"Orchestration":{"TaskHistoryRetentionLimit":2}}}"#,
        );
        let plan = plan(&request, &machine()).unwrap();
        assert!(plan.init.force_new_cluster);
        assert_eq!(plan.init.advertise_addr, "");
        assert_eq!(plan.availability, Some(node_spec::Availability::Drain));
        let spec = to_cluster_spec(&plan.spec, &default_cluster_spec()).unwrap();
        assert_eq!(spec.orchestration.unwrap().task_history_retention_limit, 2);
        assert_eq!(spec.annotations.unwrap().labels.len(), 1);
        // Forcing a new cluster keeps what the swarm had, under what the request names.
        let mut kept = default_cluster_spec();
        kept.raft.as_mut().unwrap().snapshot_interval = 777;
        let spec = to_cluster_spec(&plan.spec, &kept).unwrap();
        assert_eq!(spec.raft.unwrap().snapshot_interval, 777);
        assert_eq!(spec.orchestration.unwrap().task_history_retention_limit, 2);
    }

    #[test]
    fn what_shoal_does_not_do_is_refused_before_anything_changes() {
        for (body, status, words) in [
            (r#"{"DataPathPort":4789}"#, 501, "data plane"),
            (r#"{"DataPathAddr":"eth0"}"#, 501, "data plane"),
            (r#"{"Availability":"sleepy"}"#, 400, "invalid Availability"),
            (r#"{"ListenAddr":"nope0:1"}"#, 400, "ListenAddr"),
            (r#"{"Spec":{"Name":"other"}}"#, 400, "default"),
            (
                r#"{"Spec":{"CAConfig":{"SigningCACert":"x"}}}"#,
                501,
                "signing CA",
            ),
        ] {
            let e = plan(&decode(body), &machine()).unwrap_err();
            assert_eq!(e.status, status, "{body}: {e}");
            assert!(e.message.contains(words), "{body}: {e}");
        }
        // The default pool, named, is fine.
        let ok = decode(r#"{"DefaultAddrPool":["10.0.0.0/8"],"SubnetSize":24}"#);
        assert!(plan(&ok, &machine()).is_ok());
    }
}
