//! The swarm `Spec` in Docker's JSON, and its conversions to and from the Control API's
//! `ClusterSpec`.
//!
//! Reading (moby's `SwarmFromGRPC`): every section is present; `TaskHistoryRetentionLimit`
//! and `KeepOldSnapshots` are pointers in Go and always set; durations are integer
//! nanoseconds; `Labels` is always an object. Writing: the supplied spec's non-zero fields
//! are laid over a base (moby's `MergeSwarmSpecToGRPC`) — on update the defaults, so a zero or
//! absent field takes its default (moby passes zeros to SwarmKit, which then uses its
//! defaults); on init the swarm's spec once it serves (the defaults for a new swarm; what the
//! manager had, when it forces a new cluster). So a client that sends back what it read
//! changes nothing, and docker-py's partial specs (`{"Raft":{"SnapshotInterval":5000,
//! "KeepOldSnapshots":null,…}}`) change only what they name.
//!
//! `ForceRotate`, like the other numbers, is taken when not zero: raised above the swarm's,
//! it starts a root CA rotation (what `docker swarm ca --rotate` sends; the Control API starts
//! it, and refuses a value lower than the swarm's).
//!
//! Refused, changing nothing: a name other than `default` (400, moby's text); negative
//! durations or ticks (400, naming the field); external CAs and a signing CA (501: Shoal's CA
//! generates its own roots — `docker swarm ca --rotate` without `--ca-cert`/`--external-ca`
//! rotates to a new one). The rest is checked by the Control API (`validate_cluster_spec`), which [`to_cluster_spec`] runs up
//! front so that an init with a bad spec does not create a swarm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_api::defaults;
use shoal_api::v1::{
    Annotations, CaConfig, ClusterSpec, DispatcherConfig, EncryptionConfig, Label, LogDriver,
    OrchestrationConfig, RaftConfig, TaskDefaults as ProtoTaskDefaults,
};

use crate::error::EngineError;
use crate::shapes::{duration, nanos};

/// The only name a swarm has.
pub const CLUSTER_NAME: &str = "default";

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// moby's `swarm.Spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Spec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub orchestration: Orchestration,
    pub raft: Raft,
    pub dispatcher: Dispatcher,
    #[serde(rename = "CAConfig")]
    pub ca_config: CaConfigJson,
    pub task_defaults: TaskDefaults,
    pub encryption_config: Encryption,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Orchestration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_history_retention_limit: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Raft {
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub snapshot_interval: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_old_snapshots: Option<u64>,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub log_entries_for_slow_followers: u64,
    pub election_tick: i64,
    pub heartbeat_tick: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Dispatcher {
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub heartbeat_period: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CaConfigJson {
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub node_cert_expiry: i64,
    #[serde(rename = "ExternalCAs", skip_serializing_if = "Vec::is_empty")]
    pub external_cas: Vec<ExternalCa>,
    #[serde(rename = "SigningCACert", skip_serializing_if = "String::is_empty")]
    pub signing_ca_cert: String,
    #[serde(rename = "SigningCAKey", skip_serializing_if = "String::is_empty")]
    pub signing_ca_key: String,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub force_rotate: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ExternalCa {
    pub protocol: String,
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "CACert")]
    pub ca_cert: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TaskDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
}

/// moby's `mount.Driver`/`swarm.Driver`: a name and options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Driver {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Encryption {
    pub auto_lock_managers: bool,
}

/// Shoal's default cluster spec (the manager's `default_spec`, SwarmKit's values with Shoal's
/// Raft timing).
pub fn default_cluster_spec() -> ClusterSpec {
    ClusterSpec {
        annotations: Some(Annotations {
            name: CLUSTER_NAME.into(),
            labels: Vec::new(),
        }),
        orchestration: Some(OrchestrationConfig {
            task_history_retention_limit: defaults::TASK_HISTORY_RETENTION_LIMIT,
        }),
        raft: Some(RaftConfig {
            snapshot_interval: defaults::RAFT_SNAPSHOT_INTERVAL,
            keep_old_snapshots: defaults::RAFT_KEEP_OLD_SNAPSHOTS,
            log_entries_for_slow_followers: defaults::RAFT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS,
            heartbeat_tick: defaults::RAFT_HEARTBEAT_TICK,
            election_tick: defaults::RAFT_ELECTION_TICK,
        }),
        dispatcher: Some(DispatcherConfig {
            heartbeat_period: Some(std_duration(defaults::HEARTBEAT_PERIOD)),
        }),
        ca_config: Some(CaConfig {
            node_cert_expiry: Some(std_duration(defaults::NODE_CERT_EXPIRY)),
            ..Default::default()
        }),
        task_defaults: None,
        encryption_config: None,
    }
}

fn std_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn labels_to_proto(labels: &BTreeMap<String, String>) -> Vec<Label> {
    labels
        .iter()
        .map(|(key, value)| Label {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Labels as a map (Docker's spelling of them).
pub fn labels_from_proto(labels: &[Label]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect()
}

fn non_negative(field: &str, value: i64) -> Result<i64, EngineError> {
    if value < 0 {
        return Err(EngineError::bad_request(format!(
            "invalid {field}: {value} is negative"
        )));
    }
    Ok(value)
}

fn tick(field: &str, value: i64) -> Result<u32, EngineError> {
    u32::try_from(non_negative(field, value)?)
        .map_err(|_| EngineError::bad_request(format!("invalid {field}: {value} is too large")))
}

/// The cluster spec `spec` asks for: its non-zero fields laid over `base` (moby's
/// `MergeSwarmSpecToGRPC`), refused (changing nothing) when it asks for what Shoal does not do
/// or the Control API would refuse. `base` is the defaults on update, and the swarm's current
/// spec on init (the defaults, unless a manager forces a new cluster from its state). A
/// `ForceRotate` of 0 leaves `base`'s.
pub fn to_cluster_spec(spec: &Spec, base: &ClusterSpec) -> Result<ClusterSpec, EngineError> {
    if !spec.name.is_empty() && spec.name != CLUSTER_NAME {
        return Err(EngineError::bad_request(
            "swarm spec must be named \"default\"",
        ));
    }
    let ca = &spec.ca_config;
    if !ca.external_cas.is_empty() {
        return Err(EngineError::not_implemented(
            "external CAs are not supported: Shoal's managers sign node certificates with the \
             swarm's own root CA (leave CAConfig.ExternalCAs empty)",
        ));
    }
    if !ca.signing_ca_cert.is_empty() || !ca.signing_ca_key.is_empty() {
        return Err(EngineError::not_implemented(
            "a signing CA cannot be given: Shoal's CA generates its own roots (rotate to a new \
             one with docker swarm ca --rotate, without --ca-cert and --ca-key); leave \
             CAConfig.SigningCACert and SigningCAKey empty",
        ));
    }
    let mut out = base.clone();
    // Laid over the base like every field: on update (a base of defaults) the spec's value
    // wins, as in moby; on init a swarm forced from a manager's state keeps its autolock.
    if spec.encryption_config.auto_lock_managers {
        out.encryption_config = Some(EncryptionConfig {
            auto_lock_managers: true,
        });
    }
    let annotations = out.annotations.get_or_insert_with(Default::default);
    if annotations.name.is_empty() {
        annotations.name = CLUSTER_NAME.into();
    }
    if !spec.labels.is_empty() {
        annotations.labels = labels_to_proto(&spec.labels);
    }
    if let Some(limit) = spec.orchestration.task_history_retention_limit {
        out.orchestration = Some(OrchestrationConfig {
            task_history_retention_limit: limit,
        });
    }
    let raft = out.raft.get_or_insert_with(Default::default);
    if spec.raft.snapshot_interval != 0 {
        raft.snapshot_interval = spec.raft.snapshot_interval;
    }
    if let Some(keep) = spec.raft.keep_old_snapshots {
        raft.keep_old_snapshots = keep;
    }
    if spec.raft.log_entries_for_slow_followers != 0 {
        raft.log_entries_for_slow_followers = spec.raft.log_entries_for_slow_followers;
    }
    let election = tick("Raft.ElectionTick", spec.raft.election_tick)?;
    if election != 0 {
        raft.election_tick = election;
    }
    let heartbeat = tick("Raft.HeartbeatTick", spec.raft.heartbeat_tick)?;
    if heartbeat != 0 {
        raft.heartbeat_tick = heartbeat;
    }
    let period = non_negative(
        "Dispatcher.HeartbeatPeriod",
        spec.dispatcher.heartbeat_period,
    )?;
    if period != 0 {
        out.dispatcher = Some(DispatcherConfig {
            heartbeat_period: Some(duration(period)),
        });
    }
    let expiry = non_negative("CAConfig.NodeCertExpiry", ca.node_cert_expiry)?;
    let ca_config = out.ca_config.get_or_insert_with(Default::default);
    if expiry != 0 {
        ca_config.node_cert_expiry = Some(duration(expiry));
    }
    if ca.force_rotate != 0 {
        ca_config.force_rotate = ca.force_rotate;
    }
    if let Some(driver) = &spec.task_defaults.log_driver {
        out.task_defaults = Some(ProtoTaskDefaults {
            log_driver: Some(LogDriver {
                name: driver.name.clone(),
                options: driver.options.clone().into_iter().collect(),
            }),
        });
    }
    shoal_api::validation::validate_cluster_spec(&out)
        .map_err(|e| EngineError::bad_request(e.to_string()))?;
    Ok(out)
}

/// The swarm spec as Docker shows it (moby's `SwarmFromGRPC`).
pub fn from_cluster_spec(spec: &ClusterSpec) -> Spec {
    let annotations = spec.annotations.clone().unwrap_or_default();
    let orchestration = spec.orchestration.unwrap_or_default();
    let raft = spec.raft.unwrap_or_default();
    let dispatcher = spec.dispatcher.unwrap_or_default();
    let ca = spec.ca_config.clone().unwrap_or_default();
    Spec {
        name: annotations.name,
        labels: labels_from_proto(&annotations.labels),
        orchestration: Orchestration {
            task_history_retention_limit: Some(orchestration.task_history_retention_limit),
        },
        raft: Raft {
            snapshot_interval: raft.snapshot_interval,
            keep_old_snapshots: Some(raft.keep_old_snapshots),
            log_entries_for_slow_followers: raft.log_entries_for_slow_followers,
            election_tick: raft.election_tick as i64,
            heartbeat_tick: raft.heartbeat_tick as i64,
        },
        dispatcher: Dispatcher {
            heartbeat_period: nanos(dispatcher.heartbeat_period.as_ref()),
        },
        ca_config: CaConfigJson {
            node_cert_expiry: nanos(ca.node_cert_expiry.as_ref()),
            external_cas: ca
                .external_cas
                .iter()
                .map(|e| ExternalCa {
                    protocol: e.protocol.to_ascii_lowercase(),
                    url: e.url.clone(),
                    options: e.options.clone().into_iter().collect(),
                    ca_cert: String::from_utf8_lossy(&e.ca_cert).into_owned(),
                })
                .collect(),
            // Never shown, as in moby: the key is secret, and a get + update must not send
            // the certificate back without it.
            signing_ca_cert: String::new(),
            signing_ca_key: String::new(),
            force_rotate: ca.force_rotate,
        },
        task_defaults: TaskDefaults {
            log_driver: spec
                .task_defaults
                .as_ref()
                .and_then(|t| t.log_driver.as_ref())
                .map(|d| Driver {
                    name: d.name.clone(),
                    options: d.options.clone().into_iter().collect(),
                }),
        },
        encryption_config: Encryption {
            auto_lock_managers: spec
                .encryption_config
                .is_some_and(|e: EncryptionConfig| e.auto_lock_managers),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient;

    #[test]
    fn the_defaults_read_as_mobys() {
        let json =
            serde_json::to_string_pretty(&from_cluster_spec(&default_cluster_spec())).unwrap();
        insta::assert_snapshot!(json);
    }

    #[test]
    fn the_clis_init_spec_takes_the_defaults() {
        // `docker swarm init`, recorded.
        let body = r#"{"Labels":null,"Orchestration":{},"Raft":{"ElectionTick":0,"HeartbeatTick":0},
            "Dispatcher":{},"CAConfig":{},"TaskDefaults":{},"EncryptionConfig":{"AutoLockManagers":false}}"#;
        let spec: Spec = lenient::from_slice(body.as_bytes()).unwrap();
        assert_eq!(
            to_cluster_spec(&spec, &default_cluster_spec()).unwrap(),
            default_cluster_spec()
        );
    }

    #[test]
    fn docker_pys_partial_spec_changes_only_what_it_names() {
        // docker-py's update body, recorded (null members are absent).
        let body = r#"{"Raft":{"SnapshotInterval":5000,"KeepOldSnapshots":null,
            "LogEntriesForSlowFollowers":null,"ElectionTick":null,"HeartbeatTick":null},
            "CAConfig":{"NodeCertExpiry":7776000000000000}}"#;
        let spec: Spec = lenient::from_slice(body.as_bytes()).unwrap();
        let out = to_cluster_spec(&spec, &default_cluster_spec()).unwrap();
        let mut want = default_cluster_spec();
        want.raft.as_mut().unwrap().snapshot_interval = 5000;
        assert_eq!(out, want);
    }

    #[test]
    fn what_a_client_read_it_can_send_back_unchanged() {
        let mut stored = default_cluster_spec();
        stored
            .orchestration
            .as_mut()
            .unwrap()
            .task_history_retention_limit = 3;
        stored.annotations.as_mut().unwrap().labels = vec![Label {
            key: "a".into(),
            value: "b".into(),
        }];
        stored.raft.as_mut().unwrap().keep_old_snapshots = 2;
        let read = from_cluster_spec(&stored);
        let wire = serde_json::to_vec(&read).unwrap();
        let sent: Spec = lenient::from_slice(&wire).unwrap();
        assert_eq!(sent, read);
        assert_eq!(
            to_cluster_spec(&sent, &default_cluster_spec()).unwrap(),
            stored
        );
    }

    #[test]
    fn a_history_limit_of_zero_is_kept() {
        let spec: Spec =
            lenient::from_slice(br#"{"Orchestration":{"TaskHistoryRetentionLimit":0}}"#).unwrap();
        let out = to_cluster_spec(&spec, &default_cluster_spec()).unwrap();
        assert_eq!(out.orchestration.unwrap().task_history_retention_limit, 0);
    }

    #[test]
    fn force_rotate_is_laid_over_the_base_when_given() {
        let mut base = default_cluster_spec();
        base.ca_config.as_mut().unwrap().force_rotate = 4;
        let rotate = |body: &str| {
            let spec: Spec = lenient::from_slice(body.as_bytes()).unwrap();
            to_cluster_spec(&spec, &base)
                .unwrap()
                .ca_config
                .unwrap()
                .force_rotate
        };
        // `docker swarm ca --rotate` sends the value read, plus one.
        assert_eq!(rotate(r#"{"CAConfig":{"ForceRotate":5}}"#), 5);
        // Absent or zero: the swarm's, so nothing rotates.
        assert_eq!(rotate(r#"{"CAConfig":{}}"#), 4);
        assert_eq!(rotate(r#"{"CAConfig":{"ForceRotate":0}}"#), 4);
    }

    #[test]
    fn what_shoal_does_not_do_is_refused() {
        let refused = |body: &str, status: u16, words: &str| {
            let spec: Spec = lenient::from_slice(body.as_bytes()).unwrap();
            let e = to_cluster_spec(&spec, &default_cluster_spec()).unwrap_err();
            assert_eq!(e.status, status, "{body}: {e}");
            assert!(e.message.contains(words), "{body}: {e}");
        };
        refused(r#"{"Name":"prod"}"#, 400, "must be named \"default\"");
        refused(
            r#"{"CAConfig":{"ExternalCAs":[{"Protocol":"cfssl","URL":"https://ca"}]}}"#,
            501,
            "external CAs",
        );
        refused(r#"{"CAConfig":{"SigningCACert":"x"}}"#, 501, "signing CA");
        refused(
            r#"{"Dispatcher":{"HeartbeatPeriod":-1}}"#,
            400,
            "Dispatcher.HeartbeatPeriod",
        );
        refused(r#"{"Raft":{"ElectionTick":-3}}"#, 400, "Raft.ElectionTick");
        refused(
            r#"{"CAConfig":{"NodeCertExpiry":1000000000}}"#,
            400,
            "node_cert_expiry",
        );
        refused(
            r#"{"Raft":{"ElectionTick":1,"HeartbeatTick":2}}"#,
            400,
            "election_tick",
        );
    }
}
