//! `POST /nodes/{id}/update?version=N`: a new node spec (`{Name?, Labels, Role,
//! Availability}`), against the version read.
//!
//! As in moby, the whole spec is sent: Role and Availability are required (`invalid Role: ""`
//! otherwise), Labels replace the node's labels, and `Name` its name. The node's membership is
//! kept (Docker's spec has none). A role change is a promotion or a demotion; the Control API
//! refuses a demotion that would leave the swarm without a manager or without quorum, and a
//! stale version ("update out of sequence"). Checked before the call, so bad input changes
//! nothing: the version, the role, the availability, and that the node exists.

use shoal_api::v1::{Annotations, Label, NodeSpec as ProtoNodeSpec, UpdateNodeRequest};

use super::{NodeSpec, get, parse_availability, parse_role};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::lenient;
use crate::request::{Reply, Request, Result};

/// The node's new spec, given its current one (for what Docker's spec does not carry).
pub fn to_proto(spec: &NodeSpec, current: &ProtoNodeSpec) -> Result<ProtoNodeSpec, EngineError> {
    let role = parse_role(&spec.role)?;
    let availability = parse_availability(&spec.availability)?;
    Ok(ProtoNodeSpec {
        annotations: Some(Annotations {
            name: spec.name.clone(),
            labels: spec
                .labels
                .iter()
                .map(|(key, value)| Label {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }),
        desired_role: role as i32,
        membership: current.membership,
        availability: availability as i32,
    })
}

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let version = request.query.version("node")?;
    let spec: NodeSpec = lenient::require(&request.body)?;
    let node = get(backend, request.segment(1)).await?;
    let spec = to_proto(&spec, &node.spec.clone().unwrap_or_default())?;
    let node_id = node.meta.map(|m| m.id).unwrap_or_default();
    backend
        .call(async |mut c| {
            c.update_node(UpdateNodeRequest {
                node_id: node_id.clone(),
                node_version: version,
                spec: Some(spec.clone()),
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{NodeRole, node_spec};

    fn decode(body: &str) -> NodeSpec {
        lenient::require(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_clis_and_docker_pys_bodies_decode() {
        let current = ProtoNodeSpec {
            membership: node_spec::Membership::Accepted as i32,
            ..Default::default()
        };
        // `docker node demote`, recorded.
        let cli = decode(r#"{"Labels":{},"Role":"worker","Availability":"active"}"#);
        let spec = to_proto(&cli, &current).unwrap();
        assert_eq!(spec.desired_role, NodeRole::Worker as i32);
        assert_eq!(spec.membership, node_spec::Membership::Accepted as i32);
        assert_eq!(spec.annotations.unwrap().labels, vec![]);
        // docker-py's test_update_node.
        let py = decode(
            r#"{"Availability":"active","Name":"node-name","Role":"manager","Labels":{"foo":"bar"}}"#,
        );
        let spec = to_proto(&py, &current).unwrap();
        assert_eq!(spec.desired_role, NodeRole::Manager as i32);
        let a = spec.annotations.unwrap();
        assert_eq!(a.name, "node-name");
        assert_eq!(a.labels[0].key, "foo");
    }

    #[test]
    fn the_spec_round_trips() {
        let sent = decode(
            r#"{"Availability":"drain","Name":"renamed","Role":"manager","Labels":{"tier":"front"}}"#,
        );
        let stored = super::super::tests::manager();
        let mut node = stored.clone();
        node.spec = Some(to_proto(&sent, stored.spec.as_ref().unwrap()).unwrap());
        let read = super::super::NodeJson::from_proto(&node, &Default::default()).spec;
        assert_eq!(read, sent);
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::json!({"Availability":"drain","Name":"renamed","Role":"manager","Labels":{"tier":"front"}})
        );
    }

    #[test]
    fn bad_roles_and_availabilities_are_refused() {
        let current = ProtoNodeSpec::default();
        let e = to_proto(
            &decode(r#"{"Role":"boss","Availability":"active"}"#),
            &current,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("invalid Role: \"boss\""), "{e}");
        let e = to_proto(
            &decode(r#"{"Role":"worker","Availability":"away"}"#),
            &current,
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("invalid Availability: \"away\""),
            "{e}"
        );
        let e = to_proto(&decode(r#"{"Availability":"active"}"#), &current).unwrap_err();
        assert!(e.message.starts_with("invalid Role: \"\""), "{e}");
    }
}
