//! The state directory: created owner-only (0700), locked while a daemon uses it, holding
//! `node.json` (the node's identity) and `raft/` (the Raft log and snapshot).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// Who this node is, kept in `<state>/node.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node's 25-character ID.
    pub node_id: String,
    /// Its Raft member ID (managers only).
    pub raft_id: u64,
    /// The address other managers reach it at.
    pub advertise_addr: String,
    /// Managers this node knows (`host:port`), for a node that is not one: where it renews
    /// its certificate and finds the cluster after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managers: Vec<String>,
}

/// `/var/lib/shoal` as root, else `$XDG_DATA_HOME/shoal` or `~/.local/share/shoal`.
pub fn default_state_dir() -> PathBuf {
    // SAFETY-free check of the effective user: root's home is /root by convention; use the
    // UID from /proc when available.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if is_root {
        return PathBuf::from(shoal_api::defaults::ROOT_STATE_DIR);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("shoal");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/shoal")
}

/// An open, locked state directory.
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates (0700) and locks `path`. Fails if another daemon holds the lock.
    pub fn open(path: &Path) -> Result<Self, NodeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| {
                NodeError::io(
                    format!("creating the state directory {}", path.display()),
                    e,
                )
            })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NodeError::io(format!("securing {}", path.display()), e))?;
        let lock_path = path.join("lock");
        let mut lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| NodeError::io(format!("opening {}", lock_path.display()), e))?;
        if lock.try_lock().is_err() {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(NodeError::StateDir(format!(
                "another shoal daemon (pid {}) is using the state directory {}; stop it, or \
                 give this one another --state-dir",
                holder.trim(),
                path.display()
            )));
        }
        lock.set_len(0).ok();
        let _ = write!(lock, "{}", std::process::id());
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.path.join("raft")
    }

    fn identity_path(&self) -> PathBuf {
        self.path.join("node.json")
    }

    /// The node's identity, if it ever joined or started a cluster.
    pub fn identity(&self) -> Result<Option<NodeIdentity>, NodeError> {
        let path = self.identity_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                NodeError::StateDir(format!(
                    "{} is unreadable ({e}); restore it from a backup or start from an empty \
                     state directory",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Forgets the Raft log and snapshot (a manager that became a worker).
    pub fn remove_raft(&self) -> Result<(), NodeError> {
        remove_all(&self.raft_dir())
    }

    /// Forgets everything about the cluster: identity, certificates, Raft state (the node
    /// left). The directory itself and its lock stay.
    pub fn forget_cluster(&self) -> Result<(), NodeError> {
        remove_all(&self.raft_dir())?;
        remove_all(&self.path.join("certificates"))?;
        match std::fs::remove_file(self.identity_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NodeError::io(
                format!("removing {}", self.identity_path().display()),
                e,
            )),
        }
    }

    /// Writes the identity durably (temporary file, fsync, rename, fsync directory).
    pub fn save_identity(&self, identity: &NodeIdentity) -> Result<(), NodeError> {
        let path = self.identity_path();
        let tmp = self.path.join("node.json.tmp");
        let bytes = serde_json::to_vec_pretty(identity).expect("identity serializes");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.path)?.sync_all()
        };
        write().map_err(|e| NodeError::io(format!("writing {}", path.display()), e))
    }
}

fn remove_all(path: &Path) -> Result<(), NodeError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NodeError::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_cannot_use_the_same_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let err = StateDir::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another shoal daemon"), "{err}");
        drop(first);
        StateDir::open(dir.path()).unwrap();
    }

    #[test]
    fn identity_round_trips_and_the_dir_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let state = StateDir::open(&path).unwrap();
        assert_eq!(state.identity().unwrap(), None);
        let id = NodeIdentity {
            node_id: "n".into(),
            raft_id: 7,
            advertise_addr: "a:1".into(),
            managers: vec!["m:1".into()],
        };
        state.save_identity(&id).unwrap();
        assert_eq!(state.identity().unwrap(), Some(id));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
