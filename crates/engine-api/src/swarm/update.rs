//! `POST /swarm/update?version=N[&rotateWorkerToken=…&rotateManagerToken=…&rotateManagerUnlockKey=…]`:
//! a new swarm spec against the version read, and join token rotations.
//!
//! The body is the whole spec (the CLI sends back what it read, changed; docker-py sends only
//! what it sets): it is laid over the defaults (see [`super::spec`]), so absent fields take
//! their default values. A rotated token stops working at once. Every successful update raises
//! the swarm's `Version.Index`, a rotation alone included. `rotateManagerUnlockKey` needs
//! autolock, which Shoal does not have yet: 501, nothing changed. A `CAConfig.ForceRotate`
//! raised above the swarm's starts a root CA rotation (`docker swarm ca --rotate`), which
//! `GET /swarm` then reports as `RootRotationInProgress` until every node has renewed.

use shoal_api::v1::{KeyRotation, UpdateClusterRequest};

use super::cluster;
use super::spec::{Spec, default_cluster_spec, to_cluster_spec};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::lenient;
use crate::request::{Reply, Request, Result};

/// The rotations the query asks for.
pub fn rotation(request: &Request) -> Result<KeyRotation, EngineError> {
    let rotation = KeyRotation {
        worker_join_token: request.query.bool("rotateWorkerToken")?,
        manager_join_token: request.query.bool("rotateManagerToken")?,
        manager_unlock_key: request.query.bool("rotateManagerUnlockKey")?,
    };
    Ok(rotation)
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let version = request.query.version("swarm")?;
    let rotation = rotation(&request)?;
    let spec: Spec = lenient::from_slice(&request.body)?;
    let current = cluster(backend).await?;
    // Absent fields take their defaults (moby hands SwarmKit zeros, which it reads as its
    // defaults); only ForceRotate is the swarm's unless the body sets it: raised, it starts a
    // root CA rotation (`docker swarm ca --rotate`); lowered, the Control API refuses it.
    let mut base = default_cluster_spec();
    base.ca_config
        .get_or_insert_with(Default::default)
        .force_rotate = current
        .spec
        .as_ref()
        .and_then(|s| s.ca_config.as_ref())
        .map(|c| c.force_rotate)
        .unwrap_or_default();
    let spec = to_cluster_spec(&spec, &base)?;
    let cluster_id = current.meta.map(|m| m.id).unwrap_or_default();
    backend
        .call(async |mut c| {
            c.update_cluster(UpdateClusterRequest {
                cluster_id: cluster_id.clone(),
                cluster_version: version,
                spec: Some(spec.clone()),
                rotation: Some(rotation),
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Query;
    use crate::request::ApiVersion;

    fn request(query: &str, body: &str) -> Request {
        Request {
            method: hyper::Method::POST,
            segments: vec!["swarm".into(), "update".into()],
            query: Query::parse(Some(query)),
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
            version: ApiVersion::MAX,
        }
    }

    #[test]
    fn the_recorded_queries_decode() {
        // `docker swarm join-token --rotate worker`, recorded.
        let cli = request(
            "rotateManagerToken=false&rotateManagerUnlockKey=false&rotateWorkerToken=true&version=10",
            "{}",
        );
        assert_eq!(cli.query.version("swarm").unwrap(), 10);
        let r = rotation(&cli).unwrap();
        assert!(r.worker_join_token && !r.manager_join_token && !r.manager_unlock_key);
        // docker-py, recorded.
        let py = request(
            "rotateWorkerToken=True&rotateManagerToken=False&version=10",
            "",
        );
        assert!(rotation(&py).unwrap().worker_join_token);
    }

    #[test]
    fn bad_queries_are_refused() {
        let e = request("", "{}").query.version("swarm").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("invalid swarm version ''"), "{e}");
        assert!(
            rotation(&request("rotateManagerUnlockKey=1&version=3", "{}"))
                .unwrap()
                .manager_unlock_key
        );
        assert_eq!(
            rotation(&request("rotateWorkerToken=maybe", "{}"))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn the_clis_full_spec_decodes() {
        // `docker swarm update --task-history-limit 3`: the spec read, changed.
        let body = r#"{"Name":"default","Labels":{},"Orchestration":{"TaskHistoryRetentionLimit":3},
            "Raft":{"SnapshotInterval":10000,"KeepOldSnapshots":0,"LogEntriesForSlowFollowers":500,
            "ElectionTick":10,"HeartbeatTick":1},"Dispatcher":{"HeartbeatPeriod":5000000000},
            "CAConfig":{"NodeCertExpiry":7776000000000000},"TaskDefaults":{},
            "EncryptionConfig":{"AutoLockManagers":false}}"#;
        let spec: Spec = lenient::from_slice(body.as_bytes()).unwrap();
        let out = to_cluster_spec(&spec, &default_cluster_spec()).unwrap();
        let mut want = default_cluster_spec();
        want.orchestration
            .as_mut()
            .unwrap()
            .task_history_retention_limit = 3;
        assert_eq!(out, want);
    }
}
