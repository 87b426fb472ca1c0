//! The node's key file, `<state>/certificates/node.key`: its TLS private key, a manager's
//! Raft data keys, and autolock.
//!
//! The file holds the TLS key (a PKCS #8 PEM block) and, on a manager, the keyring its Raft
//! log and snapshots are sealed with (a `SHOAL RAFT DATA KEYS` block, see
//! `shoal_raft::encryption`). Keeping both in one file, replaced by one rename, means the
//! TLS key and the data keys can never be out of step after a crash.
//!
//! **Autolock.** When the cluster's managers are autolocked, the whole content is sealed
//! with the cluster's *unlock key* (the key-encryption key users see once as `SWMKEY-1-…`) and
//! the file holds a single `SHOAL LOCKED NODE KEYS` block. A manager restarted with such a
//! file can read neither its TLS key nor its Raft log until a user gives the key
//! (`shoal swarm unlock`): without the unlock key, a copy of the state directory reveals
//! nothing of the cluster's state. A wrong key fails to open the block and is refused; nothing
//! is written.
//!
//! Every write goes through one [`NodeKeys`] per daemon, under one lock, to a temporary file
//! that is synced and renamed into place: a renewal (new TLS key), a data-key rotation and an
//! unlock-key change never overwrite each other's work.
//!
//! Departures from SwarmKit: SwarmKit keeps the raft DEK in PEM headers of the TLS key and
//! encrypts the key with PKCS #8 password encryption; here the file is one AEAD-sealed
//! block (ChaCha20-Poly1305, the same sealing as the Raft log), bound to its purpose by
//! associated data. The unlock key is 32 random bytes, used directly as the sealing key (it
//! is not a password, so no key stretching is needed).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shoal_raft::encryption::{DataKey, DataKeys, KEY_LEN, pem_block, pem_find, pem_remove};

use crate::error::NodeError;

/// The PEM label of a node key file sealed with the unlock key.
pub const LOCKED_LABEL: &str = "SHOAL LOCKED NODE KEYS";
/// Associated data of a sealed node key file.
const LOCKED_CONTEXT: &[u8] = b"shoal node keys";

/// The cluster's key-encryption key: what unlocks an autolocked manager.
#[derive(Clone, PartialEq)]
pub struct UnlockKey(DataKey);

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(…)")
    }
}

impl UnlockKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(DataKey::generate(0))
    }

    /// The key from its raw bytes (as the cluster object keeps it); `None` if they are not
    /// a key.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(DataKey::from_bytes(0, bytes)))
    }

    /// The raw bytes (for the cluster object).
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        self.0.bytes()
    }

    /// Parses `SWMKEY-1-<base64>`, with a message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        shoal_api::unlock_key::parse(text).map(|bytes| Self(DataKey::from_bytes(0, bytes)))
    }

    /// The form users see: `SWMKEY-1-<base64>`.
    pub fn to_human(&self) -> String {
        shoal_api::unlock_key::format(self.0.bytes())
    }
}

/// What `node.key` holds, opened.
#[derive(Clone, Default)]
struct KeyFile {
    tls_key_pem: String,
    raft_keys: Option<DataKeys>,
    unlock_key: Option<UnlockKey>,
}

impl KeyFile {
    /// The file's bytes: clear, or sealed with the unlock key.
    fn render(&self) -> String {
        let mut clear = self.tls_key_pem.clone();
        if !clear.is_empty() && !clear.ends_with('\n') {
            clear.push('\n');
        }
        if let Some(keys) = &self.raft_keys {
            clear.push_str(&keys.to_pem());
        }
        match &self.unlock_key {
            None => clear,
            Some(kek) => pem_block(LOCKED_LABEL, &kek.0.seal(LOCKED_CONTEXT, clear.as_bytes())),
        }
    }

    /// Reads the file's bytes, with the unlock key if they are sealed.
    fn parse(text: &str, unlock_key: Option<&UnlockKey>, path: &Path) -> Result<Self, NodeError> {
        let damaged = |what: &str| {
            NodeError::StateDir(format!(
                "{} is damaged ({what}); restore it from a backup, or leave the cluster and join \
                 again",
                path.display()
            ))
        };
        let (clear, unlock_key) = match pem_find(text, LOCKED_LABEL) {
            None => (text.to_string(), None),
            Some(None) => return Err(damaged("its locked block is not base64")),
            Some(Some(sealed)) => {
                let Some(key) = unlock_key else {
                    return Err(NodeError::Locked);
                };
                let clear = key
                    .0
                    .open(LOCKED_CONTEXT, &sealed, "the node key file")
                    .map_err(|_| NodeError::InvalidUnlockKey)?;
                let clear = String::from_utf8(clear).map_err(|_| damaged("not text"))?;
                (clear, Some(key.clone()))
            }
        };
        let raft_keys = DataKeys::from_pem(&clear).map_err(|e| damaged(&e.to_string()))?;
        Ok(Self {
            tls_key_pem: pem_remove(&clear, shoal_raft::encryption::PEM_LABEL),
            raft_keys,
            unlock_key,
        })
    }
}

/// Whether the node key file in `state` is sealed with an unlock key (the manager is locked
/// until it is given one).
pub fn is_locked(state: &Path) -> bool {
    std::fs::read_to_string(key_path(state))
        .is_ok_and(|text| pem_find(&text, LOCKED_LABEL).is_some())
}

fn key_path(state: &Path) -> PathBuf {
    state.join("certificates").join("node.key")
}

/// The one writer of a node's key file; clones share it.
#[derive(Clone)]
pub struct NodeKeys {
    state: PathBuf,
    file: Arc<Mutex<KeyFile>>,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// Keys of a node that has none on disk yet (it is creating or joining a cluster).
    pub fn new(state: &Path) -> Self {
        Self {
            state: state.to_path_buf(),
            file: Arc::default(),
        }
    }

    /// Opens the key file of `state`, with `unlock_key` if it is locked. `Ok(None)`: there is
    /// no key file. [`NodeError::Locked`] if it is locked and no key was given,
    /// [`NodeError::InvalidUnlockKey`] if the key does not open it.
    pub fn open(state: &Path, unlock_key: Option<&UnlockKey>) -> Result<Option<Self>, NodeError> {
        let path = key_path(state);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NodeError::io(format!("reading {}", path.display()), e)),
        };
        let file = KeyFile::parse(&text, unlock_key, &path)?;
        Ok(Some(Self {
            state: state.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        }))
    }

    /// The state directory these keys belong to.
    pub fn state(&self) -> &Path {
        &self.state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyFile> {
        self.file.lock().expect("node keys lock")
    }

    /// The TLS private key (PEM).
    pub fn tls_key_pem(&self) -> String {
        self.lock().tls_key_pem.clone()
    }

    /// A manager's Raft data keys, if it has any.
    pub fn raft_keys(&self) -> Option<DataKeys> {
        self.lock().raft_keys.clone()
    }

    /// The unlock key the file is sealed with, if the node is autolocked.
    pub fn unlock_key(&self) -> Option<UnlockKey> {
        self.lock().unlock_key.clone()
    }

    /// Replaces the Raft data keys (`None`: the node is no manager any more), durably.
    pub fn set_raft_keys(&self, keys: Option<DataKeys>) -> Result<(), NodeError> {
        self.change(|f| f.raft_keys = keys)
    }

    /// Seals the file with `key` from now on (`None`: in clear), durably.
    pub fn set_unlock_key(&self, key: Option<UnlockKey>) -> Result<(), NodeError> {
        self.change(|f| f.unlock_key = key)
    }

    /// Replaces the TLS key, durably, by writing the file's new content to `node.key.new`
    /// and calling `install` with it (which renames it into place with the certificate, see
    /// `certificates::save_certificates`) under this writer's lock.
    pub(crate) fn replace_tls_key(
        &self,
        tls_key_pem: &str,
        install: impl FnOnce(&str) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let mut file = self.lock();
        let mut next = file.clone();
        next.tls_key_pem = tls_key_pem.to_string();
        install(&next.render())?;
        *file = next;
        Ok(())
    }

    fn change(&self, edit: impl FnOnce(&mut KeyFile)) -> Result<(), NodeError> {
        let mut file = self.lock();
        let mut next = file.clone();
        edit(&mut next);
        let dir = self.state.join("certificates");
        write_replace(&dir, "node.key", &next.render())?;
        *file = next;
        Ok(())
    }
}

/// Writes `contents` to `<dir>/<name>` durably: a fresh owner-only temporary file, synced,
/// renamed into place, the directory synced.
fn write_replace(dir: &Path, name: &str, contents: &str) -> Result<(), NodeError> {
    let io = |e| NodeError::io(format!("writing {}", dir.join(name).display()), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let tmp = dir.join(format!("{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS_KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIK\n-----END PRIVATE KEY-----\n";

    #[test]
    fn unlock_keys_round_trip_and_never_show_in_debug_output() {
        let key = UnlockKey::generate();
        assert_eq!(UnlockKey::parse(&key.to_human()).unwrap(), key);
        assert_eq!(format!("{key:?}"), "UnlockKey(…)");
    }

    #[test]
    fn a_locked_key_file_opens_only_with_its_unlock_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = NodeKeys::new(dir.path());
        keys.replace_tls_key(TLS_KEY, |content| {
            write_replace(&dir.path().join("certificates"), "node.key", content)
        })
        .unwrap();
        let raft = DataKeys::generate();
        keys.set_raft_keys(Some(raft.clone())).unwrap();
        assert!(!is_locked(dir.path()));
        let opened = NodeKeys::open(dir.path(), None).unwrap().unwrap();
        assert_eq!(opened.tls_key_pem(), TLS_KEY);
        assert_eq!(opened.raft_keys(), Some(raft.clone()));

        let kek = UnlockKey::generate();
        keys.set_unlock_key(Some(kek.clone())).unwrap();
        assert!(is_locked(dir.path()));
        let on_disk = std::fs::read(key_path(dir.path())).unwrap();
        assert!(
            !on_disk
                .windows(20)
                .any(|w| TLS_KEY.as_bytes().windows(20).any(|k| k == w))
        );
        assert!(matches!(
            NodeKeys::open(dir.path(), None),
            Err(NodeError::Locked)
        ));
        let wrong = UnlockKey::generate();
        assert!(matches!(
            NodeKeys::open(dir.path(), Some(&wrong)),
            Err(NodeError::InvalidUnlockKey)
        ));
        // A wrong key changed nothing.
        assert_eq!(std::fs::read(key_path(dir.path())).unwrap(), on_disk);
        let opened = NodeKeys::open(dir.path(), Some(&kek)).unwrap().unwrap();
        assert_eq!(opened.tls_key_pem(), TLS_KEY);
        assert_eq!(opened.raft_keys(), Some(raft));
        assert_eq!(opened.unlock_key(), Some(kek));

        // Autolock off again: in clear.
        opened.set_unlock_key(None).unwrap();
        assert!(!is_locked(dir.path()));
        assert_eq!(
            NodeKeys::open(dir.path(), None)
                .unwrap()
                .unwrap()
                .tls_key_pem(),
            TLS_KEY
        );
    }
}
