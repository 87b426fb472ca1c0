//! `shoal swarm ...`: the swarm as a whole — join tokens, settings, leaving. One file per
//! command; this one holds the cluster object as JSON.

pub mod backup;
pub mod ca;
pub mod init;
pub mod inspect;
pub mod join;
pub mod join_token;
pub mod leave;
pub mod unlock;
pub mod unlock_key;
pub mod update;

use std::path::PathBuf;

use shoal_api::v1::Cluster;

use super::duration::proto_nanos;
use super::output::{self, Json};

/// Arguments of `shoal swarm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a swarm with this node as its first manager
    Init(init::Args),
    /// Join a swarm as a worker or a manager, as the token says
    Join(join::Args),
    /// Show the command that adds a worker or a manager, or rotate its token
    JoinToken(join_token::Args),
    /// Change the swarm's settings
    Update(update::Args),
    /// Show the cluster object, as JSON
    Inspect(inspect::Args),
    /// Show the root CA certificate, or rotate the root CA
    Ca(ca::Args),
    /// Make this node leave the swarm
    Leave(leave::Args),
    /// Give a locked manager (autolock) the cluster's unlock key
    Unlock(unlock::Args),
    /// Show the cluster's unlock key, or rotate it
    UnlockKey(unlock_key::Args),
    /// Write a consistent copy of the cluster state to a file, from this running manager
    Backup(backup::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Init(a) => init::run(socket, a),
        Command::Join(a) => join::run(socket, a),
        Command::JoinToken(a) => join_token::run(socket, a),
        Command::Update(a) => update::run(socket, a),
        Command::Inspect(a) => inspect::run(socket, a),
        Command::Ca(a) => ca::run(socket, a),
        Command::Leave(a) => leave::run(socket, a),
        Command::Unlock(a) => unlock::run(socket, a),
        Command::UnlockKey(a) => unlock_key::run(socket, a),
        Command::Backup(a) => backup::run(socket, a),
    }
}

/// The cluster as `swarm inspect` shows it (docker's field names; durations in nanoseconds).
/// While a root rotation is pending, `rotation` (its progress over the nodes) is shown as
/// `RootRotation`, after `RootRotationInProgress`.
pub fn to_json(cluster: &Cluster, rotation: Option<&ca::RotationProgress>) -> Json {
    let meta = cluster.meta.as_ref();
    let spec = cluster.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let duration = |d: Option<&prost_types::Duration>| match d {
        Some(d) => Json::Int(proto_nanos(d)),
        None => Json::Null,
    };
    let orchestration = spec.orchestration.unwrap_or_default();
    let raft = spec.raft.unwrap_or_default();
    let dispatcher = spec.dispatcher.unwrap_or_default();
    let ca = spec.ca_config.unwrap_or_default();
    let encryption = spec.encryption_config.unwrap_or_default();
    let log_driver = spec
        .task_defaults
        .and_then(|t| t.log_driver)
        .map(|d| {
            Json::object([
                ("Name", Json::str(&d.name)),
                ("Options", string_map(&d.options)),
            ])
        })
        .unwrap_or(Json::Null);
    let root = cluster.root_ca.clone().unwrap_or_default();
    let tokens = root.join_tokens.clone().unwrap_or_default();
    let mut json = Json::object([
        ("ID", Json::str(meta.map(|m| m.id.as_str()).unwrap_or(""))),
        ("Version", output::version(meta)),
        (
            "CreatedAt",
            output::timestamp(meta.and_then(|m| m.created_at.as_ref())),
        ),
        (
            "UpdatedAt",
            output::timestamp(meta.and_then(|m| m.updated_at.as_ref())),
        ),
        (
            "Spec",
            Json::object([
                ("Name", Json::str(&annotations.name)),
                ("Labels", output::labels(&annotations.labels)),
                (
                    "Orchestration",
                    Json::object([(
                        "TaskHistoryRetentionLimit",
                        Json::Int(orchestration.task_history_retention_limit),
                    )]),
                ),
                (
                    "Raft",
                    Json::object([
                        ("SnapshotInterval", Json::UInt(raft.snapshot_interval)),
                        ("KeepOldSnapshots", Json::UInt(raft.keep_old_snapshots)),
                        (
                            "LogEntriesForSlowFollowers",
                            Json::UInt(raft.log_entries_for_slow_followers),
                        ),
                        ("ElectionTick", Json::UInt(raft.election_tick.into())),
                        ("HeartbeatTick", Json::UInt(raft.heartbeat_tick.into())),
                    ]),
                ),
                (
                    "Dispatcher",
                    Json::object([(
                        "HeartbeatPeriod",
                        duration(dispatcher.heartbeat_period.as_ref()),
                    )]),
                ),
                (
                    "CAConfig",
                    Json::object([
                        ("NodeCertExpiry", duration(ca.node_cert_expiry.as_ref())),
                        (
                            "ExternalCAs",
                            Json::Array(
                                ca.external_cas
                                    .iter()
                                    .map(|e| {
                                        Json::object([
                                            ("Protocol", Json::str(&e.protocol)),
                                            ("URL", Json::str(&e.url)),
                                            ("Options", string_map(&e.options)),
                                            (
                                                "CACert",
                                                Json::str(String::from_utf8_lossy(&e.ca_cert)),
                                            ),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                        ("ForceRotate", Json::UInt(ca.force_rotate)),
                    ]),
                ),
                ("TaskDefaults", Json::object([("LogDriver", log_driver)])),
                (
                    "EncryptionConfig",
                    Json::object([(
                        "AutoLockManagers",
                        Json::Bool(encryption.auto_lock_managers),
                    )]),
                ),
            ]),
        ),
        (
            "TLSInfo",
            Json::object([
                (
                    "TrustRoot",
                    Json::str(String::from_utf8_lossy(&root.ca_cert)),
                ),
                ("CACertHash", Json::str(&root.ca_cert_hash)),
            ]),
        ),
        (
            "RootRotationInProgress",
            Json::Bool(root.root_rotation.is_some()),
        ),
        (
            "JoinTokens",
            Json::object([
                ("Worker", Json::str(&tokens.worker)),
                ("Manager", Json::str(&tokens.manager)),
            ]),
        ),
    ]);
    if let (Json::Object(fields), Some(rotation)) = (&mut json, rotation) {
        // Beside RootRotationInProgress.
        let at = fields
            .iter()
            .position(|(k, _)| k == "RootRotationInProgress")
            .map_or(fields.len(), |i| i + 1);
        fields.insert(at, ("RootRotation".to_string(), rotation.to_json()));
    }
    json
}

fn string_map(map: &std::collections::BTreeMap<String, String>) -> Json {
    Json::object(map.iter().map(|(k, v)| (k.clone(), Json::str(v))))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_api::v1::{
        Annotations, CaConfig, ClusterSpec, DispatcherConfig, JoinTokens, Meta,
        OrchestrationConfig, RootCa,
    };

    /// A cluster as a manager returns it.
    pub(crate) fn cluster() -> Cluster {
        Cluster {
            meta: Some(Meta {
                id: "cluster1".into(),
                version: 12,
                created_at: Some(prost_types::Timestamp {
                    seconds: 86_400,
                    nanos: 0,
                }),
                updated_at: None,
            }),
            spec: Some(ClusterSpec {
                annotations: Some(Annotations {
                    name: "default".into(),
                    labels: vec![],
                }),
                orchestration: Some(OrchestrationConfig {
                    task_history_retention_limit: 5,
                }),
                dispatcher: Some(DispatcherConfig {
                    heartbeat_period: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                }),
                ca_config: Some(CaConfig {
                    node_cert_expiry: Some(prost_types::Duration {
                        seconds: 7_776_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            root_ca: Some(RootCa {
                ca_cert: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
                ca_cert_hash: "hash".into(),
                join_tokens: Some(JoinTokens {
                    worker: "SWMTKN-1-w".into(),
                    manager: "SWMTKN-1-m".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cluster_json_uses_docker_field_names() {
        let json = to_json(&cluster(), None).pretty();
        assert!(json.starts_with("{\n    \"ID\": \"cluster1\",\n"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Version"]["Index"], 12);
        assert_eq!(v["CreatedAt"], "1970-01-02T00:00:00Z");
        assert_eq!(v["Spec"]["Name"], "default");
        assert_eq!(v["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"], 5);
        assert_eq!(v["Spec"]["Dispatcher"]["HeartbeatPeriod"], 5_000_000_000i64);
        assert_eq!(
            v["Spec"]["CAConfig"]["NodeCertExpiry"],
            7_776_000_000_000_000i64
        );
        assert_eq!(
            v["Spec"]["TaskDefaults"]["LogDriver"],
            serde_json::Value::Null
        );
        assert_eq!(v["TLSInfo"]["TrustRoot"], "-----BEGIN CERTIFICATE-----\n");
        assert_eq!(v["JoinTokens"]["Worker"], "SWMTKN-1-w");
        assert_eq!(v["RootRotationInProgress"], false);
    }
}
