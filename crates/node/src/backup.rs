//! Backups of the cluster state: `shoal swarm backup FILE` and `shoal daemon --restore FILE
//! --force-new-cluster`.
//!
//! A backup is the store's whole content at one version — every node, service, task,
//! network, secret, config and the cluster object with its root CA key, join tokens and
//! unlock key — taken from a running manager after a ReadIndex barrier, so it holds every
//! write acknowledged before the command started, and under the store's read lock, so it is
//! one consistent version (the manager keeps serving; nothing is stopped). Raft's own state
//! (log, membership) is not in it: a restore starts a new cluster, with the restoring node as
//! its only manager.
//!
//! File format:
//!
//! ```text
//!   SHOAL-BACKUP 1\n
//!   {"cluster_id":…,"store_version":…,"taken_at":…,"taken_on":…,"sealed":…,"objects":{…}}\n
//!   <the store snapshot (protobuf StoreSnapshot), sealed with the unlock key if "sealed">
//! ```
//!
//! The header is in clear, so `head -2 FILE` tells what a backup holds. When the cluster is
//! autolocked the snapshot is sealed with its unlock key (ChaCha20-Poly1305, the header as
//! associated data, so a header cannot be swapped onto another backup's content): the
//! backup is as locked as the managers, and restoring it needs the key. Otherwise it is in
//! clear and holds every secret: the file is written owner-only (0600) and the command says
//! so.
//!
//! Departure from Docker: Docker's documented backup is to stop a manager and copy its state
//! directory, and restoring an autolocked one has failed users (moby/moby#36852); here the
//! backup needs no downtime and the restore asks for the key the backup was sealed with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_raft::DataKey;

use crate::error::NodeError;
use crate::keys::UnlockKey;

/// The first line of every backup file.
pub const MAGIC: &str = "SHOAL-BACKUP 1";
/// Associated data of a sealed backup, before its header.
const SEALED_CONTEXT: &[u8] = b"shoal backup\0";

/// What a backup says about itself, in clear.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub cluster_id: String,
    /// The store's version the backup holds.
    pub store_version: u64,
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The node ID of the manager it was taken on.
    pub taken_on: String,
    /// Whether the content is sealed with the cluster's unlock key (autolock was on).
    pub sealed: bool,
    /// How many objects of each kind it holds.
    pub objects: BTreeMap<String, usize>,
}

impl BackupHeader {
    /// What the backup holds, for people: `3 services, 1 secret, …` (kinds it has none of
    /// left out).
    pub fn contents(&self) -> String {
        self.objects
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{n} {kind}{}", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A backup file's bytes: the header, and the snapshot sealed with `unlock_key` if given.
pub fn encode(header: &BackupHeader, snapshot: &[u8], unlock_key: Option<&UnlockKey>) -> Vec<u8> {
    let mut header = header.clone();
    header.sealed = unlock_key.is_some();
    let header_line = serde_json::to_string(&header).expect("a header serializes");
    let mut out = Vec::with_capacity(snapshot.len() + header_line.len() + 64);
    out.extend_from_slice(MAGIC.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(header_line.as_bytes());
    out.push(b'\n');
    match unlock_key {
        None => out.extend_from_slice(snapshot),
        Some(key) => {
            out.extend_from_slice(&sealing_key(key).seal(&context(&header_line), snapshot))
        }
    }
    out
}

fn sealing_key(key: &UnlockKey) -> DataKey {
    DataKey::from_bytes(0, *key.bytes())
}

fn context(header_line: &str) -> Vec<u8> {
    [SEALED_CONTEXT, header_line.as_bytes()].concat()
}

/// A backup file, read but not yet opened.
#[derive(Debug)]
pub struct Backup {
    pub header: BackupHeader,
    header_line: String,
    content: Vec<u8>,
}

impl Backup {
    /// Reads a backup file's bytes; `what` names the file in errors.
    pub fn parse(bytes: Vec<u8>, what: &str) -> Result<Self, NodeError> {
        let not_a_backup = |detail: &str| {
            NodeError::Config(format!(
                "{what} is not a Shoal backup ({detail}); give the file `shoal swarm backup` wrote"
            ))
        };
        let magic_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| not_a_backup("no header"))?;
        if &bytes[..magic_end] != MAGIC.as_bytes() {
            return Err(not_a_backup(&format!("it does not start with {MAGIC:?}")));
        }
        let header_end = magic_end
            + 1
            + bytes[magic_end + 1..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| not_a_backup("its header is cut short"))?;
        let header_line = std::str::from_utf8(&bytes[magic_end + 1..header_end])
            .map_err(|_| not_a_backup("its header is not text"))?
            .to_string();
        let header: BackupHeader = serde_json::from_str(&header_line)
            .map_err(|e| not_a_backup(&format!("its header does not parse: {e}")))?;
        let content = bytes[header_end + 1..].to_vec();
        Ok(Self {
            header,
            header_line,
            content,
        })
    }

    /// The store snapshot: with `unlock_key` if the backup is sealed ([`NodeError::Locked`] if
    /// none was given, [`NodeError::InvalidUnlockKey`] if it does not open it).
    pub fn open(&self, unlock_key: Option<&UnlockKey>) -> Result<Vec<u8>, NodeError> {
        if !self.header.sealed {
            return Ok(self.content.clone());
        }
        let key = unlock_key.ok_or(NodeError::Locked)?;
        sealing_key(key)
            .open(&context(&self.header_line), &self.content, "the backup")
            .map_err(|_| NodeError::InvalidUnlockKey)
    }
}

/// Takes a backup on a running manager: a ReadIndex barrier (so it holds every write
/// acknowledged before), then the store at one version. Sealed with the cluster's unlock key
/// when autolock is on.
pub async fn take(
    store: &shoal_store::Store,
    raft: &shoal_raft::RaftHandle,
    node_id: &str,
) -> Result<(BackupHeader, Vec<u8>), tonic::Status> {
    use prost::Message;
    raft.read_barrier().await.map_err(|e| {
        tonic::Status::unavailable(format!(
            "this manager cannot confirm it has every committed write ({e}); a backup needs \
             a quorum of managers: retry when the cluster has a leader"
        ))
    })?;
    let snapshot = store.snapshot();
    let cluster = snapshot.clusters.first();
    let unlock_key = cluster
        .and_then(|c| shoal_manager::cluster::unlock_key(c))
        .and_then(UnlockKey::from_bytes);
    let header = BackupHeader {
        cluster_id: cluster
            .and_then(|c| c.meta.as_ref())
            .map(|m| m.id.clone())
            .unwrap_or_default(),
        store_version: snapshot.version,
        taken_at: shoal_executor::process::logs::format_timestamp(std::time::SystemTime::now()),
        taken_on: node_id.to_string(),
        sealed: unlock_key.is_some(),
        objects: BTreeMap::from([
            ("cluster".to_string(), snapshot.clusters.len()),
            ("node".to_string(), snapshot.nodes.len()),
            ("service".to_string(), snapshot.services.len()),
            ("task".to_string(), snapshot.tasks.len()),
            ("network".to_string(), snapshot.networks.len()),
            ("secret".to_string(), snapshot.secrets.len()),
            ("config".to_string(), snapshot.configs.len()),
        ]),
    };
    let bytes = encode(&header, &snapshot.encode_to_vec(), unlock_key.as_ref());
    Ok((header, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            cluster_id: "c1".into(),
            store_version: 42,
            taken_at: "2026-01-01T00:00:00Z".into(),
            taken_on: "n1".into(),
            sealed: false,
            objects: BTreeMap::from([("service".into(), 3)]),
        }
    }

    #[test]
    fn a_backup_in_clear_round_trips() {
        let bytes = encode(&header(), b"snapshot bytes", None);
        assert!(bytes.starts_with(b"SHOAL-BACKUP 1\n{"));
        let backup = Backup::parse(bytes, "f").unwrap();
        assert_eq!(backup.header, header());
        assert_eq!(backup.header.contents(), "3 services");
        assert_eq!(backup.open(None).unwrap(), b"snapshot bytes");
    }

    #[test]
    fn a_sealed_backup_opens_only_with_its_key_and_header() {
        let key = UnlockKey::generate();
        let bytes = encode(&header(), b"canary snapshot", Some(&key));
        assert!(!bytes.windows(15).any(|w| w == b"canary snapshot"));
        let backup = Backup::parse(bytes.clone(), "f").unwrap();
        assert!(backup.header.sealed);
        assert!(matches!(backup.open(None), Err(NodeError::Locked)));
        assert!(matches!(
            backup.open(Some(&UnlockKey::generate())),
            Err(NodeError::InvalidUnlockKey)
        ));
        assert_eq!(backup.open(Some(&key)).unwrap(), b"canary snapshot");
        // Another header on the same content: refused.
        let mut forged = Vec::new();
        let header_end = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .unwrap()
            .0;
        let new_header = String::from_utf8_lossy(&bytes[..=header_end])
            .replace("\"store_version\":42", "\"store_version\":43");
        forged.extend_from_slice(new_header.as_bytes());
        forged.extend_from_slice(&bytes[header_end + 1..]);
        let forged = Backup::parse(forged, "f").unwrap();
        assert!(matches!(
            forged.open(Some(&key)),
            Err(NodeError::InvalidUnlockKey)
        ));
    }

    #[test]
    fn other_files_are_refused_saying_what_they_are_not() {
        let err = Backup::parse(b"hello\nworld\n".to_vec(), "notes.txt").unwrap_err();
        assert!(
            err.to_string().contains("notes.txt is not a Shoal backup"),
            "{err}"
        );
        let err = Backup::parse(b"SHOAL-BACKUP 1\n{bad json\n".to_vec(), "f").unwrap_err();
        assert!(err.to_string().contains("does not parse"), "{err}");
    }
}
