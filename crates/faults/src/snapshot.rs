//! A manager's own store, read without asking it through the Control API (which forwards every
//! call to the leader): its Raft snapshot file and its Watch history.
//!
//! - [`read_snapshot`] reads `<state>/raft/snapshot.bin` from the bind-mounted state directory,
//!   opened with the data keys beside the node's TLS key (see `shoal_raft::encryption`):
//!   raft-rs's `Snapshot` (metadata: index and term) whose data is Shoal's `Snapshot`
//!   (`store.proto`), holding the `StoreSnapshot` — its store version and every config. The file
//!   is replaced by rename, so a read sees one whole snapshot. The protobuf is walked by hand
//!   (field numbers from `store.proto`, `objects.proto`, `types.proto` and raft-rs's
//!   `eraftpb.proto`) for the few fields needed, so this crate needs no protobuf runtime of its
//!   own; a unit test checks the walk against a message encoded by hand.
//! - [`local_configs`] rebuilds the configs a manager holds *in its own store*: those of its
//!   snapshot file, then every config change its Watch API replays from the snapshot's version
//!   (the Watch API is served from the manager's own store; a store restored from a snapshot
//!   keeps its history from that snapshot's version on). This is how `snapshot-catch-up`
//!   compares a follower that caught up by a snapshot with the leader.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::v1::watch_client::WatchClient;
use shoal_api::v1::{ObjectKind, WatchAction, WatchEntry, WatchRequest, stored_object};

use crate::cluster::local_channel;
use crate::workload::VALUE_LABEL;

/// A config as compared between managers: name, version, and the workload's value label.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigView {
    pub name: String,
    pub version: u64,
    pub value: String,
}

/// What a snapshot file holds that the checks use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub term: u64,
    pub store_version: u64,
    /// Config ID → config.
    pub configs: BTreeMap<String, ConfigView>,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The top-level fields of one protobuf message, or None if it is malformed.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let (tag, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut at)?),
            1 => {
                at += 8;
                Field::Other
            }
            2 => {
                let len = varint(buf, &mut at)? as usize;
                let end = at.checked_add(len).filter(|&e| e <= buf.len())?;
                let bytes = &buf[at..end];
                at = end;
                Field::Bytes(bytes)
            }
            5 => {
                at += 4;
                Field::Other
            }
            _ => return None,
        };
        out.push((tag, field));
    }
    (at == buf.len()).then_some(out)
}

fn bytes_of<'a>(fields: &[(u64, Field<'a>)], tag: u64) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter_map(|(t, f)| match f {
            Field::Bytes(b) if *t == tag => Some(*b),
            _ => None,
        })
        .collect()
}

fn varint_of(fields: &[(u64, Field<'_>)], tag: u64) -> u64 {
    fields
        .iter()
        .find_map(|(t, f)| match f {
            Field::Varint(v) if *t == tag => Some(*v),
            _ => None,
        })
        .unwrap_or(0)
}

fn string_of(fields: &[(u64, Field<'_>)], tag: u64) -> String {
    bytes_of(fields, tag)
        .first()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// One `Config` message → (ID, view).
fn config(buf: &[u8]) -> Option<(String, ConfigView)> {
    let config = fields(buf)?;
    let meta = fields(bytes_of(&config, 1).first().copied().unwrap_or_default())?;
    let spec = fields(bytes_of(&config, 2).first().copied().unwrap_or_default())?;
    let annotations = fields(bytes_of(&spec, 1).first().copied().unwrap_or_default())?;
    let mut value = String::new();
    for label in bytes_of(&annotations, 2) {
        let label = fields(label)?;
        if string_of(&label, 1) == VALUE_LABEL {
            value = string_of(&label, 2);
        }
    }
    Some((
        string_of(&meta, 1),
        ConfigView {
            name: string_of(&annotations, 1),
            version: varint_of(&meta, 2),
            value,
        },
    ))
}

/// Parses a `snapshot.bin` file's bytes.
pub fn parse_snapshot(bytes: &[u8]) -> Option<SnapshotFile> {
    let raft = fields(bytes)?;
    let data = bytes_of(&raft, 1).first().copied().unwrap_or_default();
    let metadata = fields(bytes_of(&raft, 2).first().copied().unwrap_or_default())?;
    let shoal = fields(data)?;
    let store = fields(bytes_of(&shoal, 3).first().copied().unwrap_or_default())?;
    let mut configs = BTreeMap::new();
    for c in bytes_of(&store, 8) {
        let (id, view) = config(c)?;
        configs.insert(id, view);
    }
    Some(SnapshotFile {
        index: varint_of(&metadata, 2),
        term: varint_of(&metadata, 3),
        store_version: varint_of(&store, 1),
        configs,
    })
}

/// Reads a node's snapshot file (`<state_dir>/raft/snapshot.bin`), sealed with the data keys
/// kept beside its TLS key (`certificates/node.key`; the faults clusters are not autolocked);
/// `Ok(None)` if there is none.
pub fn read_snapshot(state_dir: &Path) -> Result<Option<SnapshotFile>, String> {
    let path = state_dir.join("raft").join("snapshot.bin");
    match std::fs::read(&path) {
        Ok(sealed) => {
            let key_file = state_dir.join("certificates").join("node.key");
            let keys = std::fs::read_to_string(&key_file)
                .map_err(|e| format!("{}: {e}", key_file.display()))
                .and_then(|text| {
                    shoal_raft::DataKeys::from_pem(&text)
                        .map_err(|e| format!("{}: {e}", key_file.display()))?
                        .ok_or_else(|| format!("{}: no raft data keys", key_file.display()))
                })?;
            let bytes = shoal_raft::storage::open_snapshot_file(&sealed, &keys)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            parse_snapshot(&bytes).map(Some).ok_or_else(|| {
                format!("{}: not a snapshot this reader understands", path.display())
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn config_request(resume_from: u64) -> WatchRequest {
    WatchRequest {
        entries: vec![WatchEntry {
            kind: ObjectKind::Config as i32,
            actions: 0,
            filters: Vec::new(),
        }],
        resume_from,
        include_old_object: false,
    }
}

/// The version of a manager's own store (the first message of a watch starting now).
pub async fn local_version(socket: &Path) -> Result<u64, String> {
    let channel = local_channel(socket, Duration::from_secs(2)).await?;
    let mut client = WatchClient::new(channel);
    let call = async {
        let mut stream = client
            .watch(config_request(0))
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        match stream.message().await {
            Ok(Some(m)) if m.subscribed => Ok(m.version),
            Ok(other) => Err(format!("unexpected first message {other:?}")),
            Err(s) => Err(s.message().to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "watch did not answer within 5 s".to_string())?
}

/// The configs in the own store of the manager with state directory `state_dir` and control
/// socket `socket`, and the store version they are at: its snapshot file, then the changes its
/// watch history replays from the snapshot's version up to its current version.
pub async fn local_configs(
    state_dir: &Path,
    socket: &Path,
) -> Result<(u64, BTreeMap<String, ConfigView>), String> {
    let snapshot = read_snapshot(state_dir)?.ok_or("no snapshot file")?;
    let target = local_version(socket).await?;
    let mut configs = snapshot.configs.clone();
    if target <= snapshot.store_version {
        return Ok((snapshot.store_version, configs));
    }
    let channel = local_channel(socket, Duration::from_secs(2)).await?;
    let mut client = WatchClient::new(channel);
    let start = Instant::now();
    let mut stream = client
        .watch(config_request(snapshot.store_version))
        .await
        .map_err(|s| {
            format!(
                "replaying from the snapshot's version {}: {}",
                snapshot.store_version,
                s.message()
            )
        })?
        .into_inner();
    let mut version = snapshot.store_version;
    // Bounded by the target version and by time.
    while version < target {
        let left = Duration::from_secs(30).saturating_sub(start.elapsed());
        let message = match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err("the watch ended".into()),
            Ok(Err(s)) => return Err(s.message().to_string()),
            // No config changed between the last message and the target: done.
            Err(_) => break,
        };
        if message.subscribed {
            continue;
        }
        for event in message.events {
            let Some(stored_object::Object::Config(c)) = event.object.and_then(|o| o.object) else {
                continue;
            };
            let id = c.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
            if event.action == WatchAction::Remove as i32 {
                configs.remove(&id);
            } else {
                let annotations = c.spec.as_ref().and_then(|s| s.annotations.as_ref());
                configs.insert(
                    id,
                    ConfigView {
                        name: annotations.map(|a| a.name.clone()).unwrap_or_default(),
                        version: c.meta.as_ref().map(|m| m.version).unwrap_or_default(),
                        value: annotations
                            .and_then(|a| a.labels.iter().find(|l| l.key == VALUE_LABEL))
                            .map(|l| l.value.clone())
                            .unwrap_or_default(),
                    },
                );
            }
        }
        version = message.version;
    }
    Ok((target, configs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: u64, wire: u64, out: &mut Vec<u8>) {
        put_varint((tag << 3) | wire, out);
    }

    fn put_varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes(tag: u64, b: &[u8], out: &mut Vec<u8>) {
        key(tag, 2, out);
        put_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn uint(tag: u64, v: u64, out: &mut Vec<u8>) {
        key(tag, 0, out);
        put_varint(v, out);
    }

    #[test]
    fn a_snapshot_file_is_walked_to_its_configs() {
        let mut label = Vec::new();
        bytes(1, VALUE_LABEL.as_bytes(), &mut label);
        bytes(2, b"42", &mut label);
        let mut annotations = Vec::new();
        bytes(1, b"faults-obj-1", &mut annotations);
        bytes(2, &label, &mut annotations);
        let mut spec = Vec::new();
        bytes(1, &annotations, &mut spec);
        bytes(2, b"data", &mut spec);
        let mut meta = Vec::new();
        bytes(1, b"abc", &mut meta);
        uint(2, 300, &mut meta);
        let mut config = Vec::new();
        bytes(1, &meta, &mut config);
        bytes(2, &spec, &mut config);
        let mut store = Vec::new();
        uint(1, 12_345, &mut store);
        bytes(2, b"", &mut store); // a node, empty
        bytes(8, &config, &mut store);
        let mut shoal = Vec::new();
        uint(1, 1, &mut shoal);
        bytes(3, &store, &mut shoal);
        let mut metadata = Vec::new();
        bytes(1, b"", &mut metadata);
        uint(2, 20_000, &mut metadata);
        uint(3, 7, &mut metadata);
        let mut raft = Vec::new();
        bytes(1, &shoal, &mut raft);
        bytes(2, &metadata, &mut raft);
        let s = parse_snapshot(&raft).expect("parses");
        assert_eq!((s.index, s.term, s.store_version), (20_000, 7, 12_345));
        assert_eq!(
            s.configs.get("abc"),
            Some(&ConfigView {
                name: "faults-obj-1".into(),
                version: 300,
                value: "42".into()
            })
        );
        assert!(parse_snapshot(&[0x0a, 0x05, 1]).is_none(), "truncated");
    }
}
