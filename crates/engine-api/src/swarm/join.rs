//! `POST /swarm/join`: this node joins a swarm with a token, at a manager's address
//! (`RemoteAddrs[0]`, port 2377 if it names none); the answer is empty.
//!
//! The Control API's join takes no addresses of the joining node: it listens and advertises
//! where its daemon was told to (`--listen-remote-api`, `--advertise-remote-api`). So the
//! CLI's default `ListenAddr` (`0.0.0.0:2377`) and an empty one are taken as "the daemon's",
//! while other addresses, a data path address and an availability other than `active` are
//! refused with 501 (see the module notes) — nothing is joined. A node already in a swarm
//! gets moby's 503. Once joined, the call waits until the node serves in its new role: the
//! CLI reads `GET /info` next to say whether it joined as a manager or a worker.

use serde::Deserialize;
use shoal_api::v1::JoinSwarmRequest;
use shoal_api::v1::node_spec::Availability;
use tonic::Code;

use super::{addr, availability, wait_for};
use crate::backend::{Backend, LocalState};
use crate::error::{self, EngineError};
use crate::lenient;
use crate::request::{Reply, Request, Result};

/// The docker CLI's default `--listen-addr`.
const CLI_DEFAULT_LISTEN: &str = "0.0.0.0:2377";

/// moby's `swarm.JoinRequest`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct JoinRequest {
    pub listen_addr: String,
    pub advertise_addr: String,
    pub data_path_addr: String,
    pub remote_addrs: Vec<String>,
    pub join_token: String,
    pub availability: String,
}

/// The Control API's join for `request`, checked.
pub fn plan(request: &JoinRequest) -> Result<JoinSwarmRequest, EngineError> {
    let remote = request
        .remote_addrs
        .iter()
        .find(|a| !a.trim().is_empty())
        .ok_or_else(|| EngineError::bad_request("at least 1 RemoteAddr is required to join"))?;
    if request.join_token.trim().is_empty() {
        return Err(EngineError::bad_request(
            "JoinToken is required to join a swarm: `docker swarm join-token worker` (or \
             manager) on a manager prints the command with its token",
        ));
    }
    let listen = request.listen_addr.trim();
    if !listen.is_empty() && listen != CLI_DEFAULT_LISTEN {
        return Err(EngineError::not_implemented(format!(
            "ListenAddr {listen:?} cannot be chosen at join: a Shoal node listens where its \
             daemon was told to (shoal daemon --listen-remote-api); leave --listen-addr out"
        )));
    }
    if !request.advertise_addr.trim().is_empty() {
        return Err(EngineError::not_implemented(format!(
            "AdvertiseAddr {:?} cannot be chosen at join: a Shoal node advertises what its \
             daemon was told to (shoal daemon --advertise-remote-api); leave --advertise-addr \
             out",
            request.advertise_addr
        )));
    }
    if !request.data_path_addr.is_empty() {
        return Err(EngineError::not_implemented(
            "DataPathAddr is not supported: Shoal has no data plane (no VXLAN) yet; leave it \
             out",
        ));
    }
    match availability(&request.availability)? {
        None | Some(Availability::Active) => {}
        Some(_) => {
            return Err(EngineError::not_implemented(format!(
                "Availability {:?} cannot be set at join in Shoal: join, then run `docker node \
                 update --availability {} NODE` on a manager",
                request.availability,
                request.availability.to_ascii_lowercase()
            )));
        }
    }
    Ok(JoinSwarmRequest {
        remote_addr: addr::remote_addr(remote)?,
        join_token: request.join_token.trim().to_string(),
    })
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let body: JoinRequest = lenient::require(&request.body)?;
    let join = plan(&body)?;
    if let LocalState::Active(_) = backend.local_state().await {
        return Err(EngineError::unavailable(error::ALREADY_IN_A_SWARM));
    }
    let joined = backend
        .swarm()
        .join(join)
        .await
        .map_err(|status| match status.code() {
            Code::FailedPrecondition if status.message().contains("already part of") => {
                EngineError::unavailable(error::ALREADY_IN_A_SWARM)
            }
            _ => EngineError::from_status(&status),
        })?
        .into_inner();
    wait_for(
        backend,
        "serving as a member of the swarm",
        |state| matches!(state, LocalState::Active(info) if info.node_id == joined.node_id),
    )
    .await?;
    Ok(Reply::Empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> JoinRequest {
        lenient::require(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_clis_join_body_decodes() {
        // `docker swarm join --token … 10.0.0.1:2377`, recorded.
        let request = decode(
            r#"{"ListenAddr":"0.0.0.0:2377","AdvertiseAddr":"","DataPathAddr":"","RemoteAddrs":
            ["10.0.0.1:2377"],"JoinToken":"SWMTKN-1-abc","Availability":""}"#,
        );
        assert_eq!(
            plan(&request).unwrap(),
            JoinSwarmRequest {
                remote_addr: "10.0.0.1:2377".into(),
                join_token: "SWMTKN-1-abc".into(),
            }
        );
        // docker-py's body (its `join_swarm`), a manager address without a port.
        let py = decode(
            r#"{"RemoteAddrs":["10.0.0.1"],"ListenAddr":"0.0.0.0:2377","JoinToken":"SWMTKN-1-abc",
            "AdvertiseAddr":null}"#,
        );
        assert_eq!(plan(&py).unwrap().remote_addr, "10.0.0.1:2377");
    }

    #[test]
    fn what_a_join_cannot_do_is_refused() {
        for (body, status, words) in [
            (r#"{"JoinToken":"t"}"#, 400, "RemoteAddr"),
            (r#"{"RemoteAddrs":["1.2.3.4"]}"#, 400, "JoinToken"),
            (
                r#"{"RemoteAddrs":["1.2.3.4"],"JoinToken":"t","ListenAddr":"127.0.0.1:9"}"#,
                501,
                "--listen-remote-api",
            ),
            (
                r#"{"RemoteAddrs":["1.2.3.4"],"JoinToken":"t","AdvertiseAddr":"eth0"}"#,
                501,
                "--advertise-remote-api",
            ),
            (
                r#"{"RemoteAddrs":["1.2.3.4"],"JoinToken":"t","Availability":"drain"}"#,
                501,
                "docker node update --availability drain",
            ),
            (
                r#"{"RemoteAddrs":["1.2.3.4"],"JoinToken":"t","Availability":"nap"}"#,
                400,
                "invalid Availability",
            ),
        ] {
            let e = plan(&decode(body)).unwrap_err();
            assert_eq!(e.status, status, "{body}: {e}");
            assert!(e.message.contains(words), "{body}: {e}");
        }
    }
}
