//! Encryption at rest: the keys the Raft log and snapshots are sealed with, and the sealing.
//!
//! Every record a manager writes to disk for Raft — each log entry, the hard state, the
//! configuration and its index, the snapshot file — is sealed with an AEAD
//! (ChaCha20-Poly1305, from `ring`, the crypto library the TLS stack already uses) under the
//! manager's current *data key*. The store's content, secrets included, is therefore never
//! on disk in clear. A sealed record is
//!
//! ```text
//!   [0xE5 format] [key ID, u32 big-endian] [nonce, 12 random bytes] [ciphertext + 16-byte tag]
//! ```
//!
//! and it is sealed together with its *context* — what the record is and where it lives
//! (`entry` + its index, `hard_state`, `snapshot`, ...) — as associated data: a record
//! copied to another place (an entry moved to another index, the hard state swapped with an
//! old one from another file) fails to open instead of being believed.
//!
//! [`DataKeys`] is a manager's keyring: the current key, which seals, and older keys still
//! needed to open records sealed before a rotation. A rotation ([`crate::RedbLog::rotate_data_key`])
//! persists the new keyring first (old keys included), seals everything written from then
//! on with the new key, re-seals what the log and snapshot already hold, and only then
//! forgets the old keys: a crash at any point leaves a keyring that opens every record on
//! disk.
//!
//! Where the keyring lives is not this module's business: the node keeps it next to its TLS
//! key, in clear when the cluster is not autolocked and wrapped with the unlock key when it is
//! (as SwarmKit keeps its raft DEK in the PEM headers of the node key). [`DataKeys::to_pem`]
//! gives the block it stores.
//!
//! Nonces are random: with 96-bit nonces a key should seal fewer than 2^32 records, far more
//! than a manager's log holds between rotations (each autolock change and unlock-key rotation
//! rotates the data key).
//!
//! Departures from SwarmKit: SwarmKit seals WAL records with NaCl secretbox (XSalsa20-Poly1305)
//! and keeps a "pending" DEK while a rotation waits for the next snapshot; here a rotation
//! re-seals the log and snapshot at once, so it completes without waiting for a snapshot, and
//! every record is bound to its place by associated data.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The first byte of every sealed record (format 1).
const SEALED_FORMAT: u8 = 0xE5;
/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// Bytes a sealed record adds to its content.
pub const SEAL_OVERHEAD: usize = 1 + 4 + NONCE_LEN + 16;
/// The PEM label of a keyring stored beside a node key.
pub const PEM_LABEL: &str = "SHOAL RAFT DATA KEYS";

/// Why a record or a keyring could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    /// The record is not a sealed record of a format this build reads.
    #[error("{0} is not encrypted in a format this Shoal reads")]
    Format(String),
    /// The record names a key the keyring does not hold.
    #[error("{what} is sealed with data key {key_id}, which this manager does not hold")]
    UnknownKey { what: String, key_id: u32 },
    /// The key does not open the record: the wrong key, or the record was altered or moved.
    #[error("{0} does not open with its key: it was altered, moved, or sealed with another key")]
    Tampered(String),
}

/// One 256-bit key and its ID in a keyring.
#[derive(Clone)]
pub struct DataKey {
    id: u32,
    bytes: [u8; KEY_LEN],
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself: keys must not reach logs.
        f.debug_struct("DataKey").field("id", &self.id).finish()
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && constant_time_eq(&self.bytes, &other.bytes)
    }
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DataKey {
    /// A key from its bytes.
    pub fn from_bytes(id: u32, bytes: [u8; KEY_LEN]) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte key");
        Self {
            id,
            bytes,
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// A new random key.
    pub fn generate(id: u32) -> Self {
        Self::from_bytes(id, rand::random())
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key's bytes (to store it; never to log it).
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Seals `plaintext`, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(plaintext);
        let header = 1 + 4 + NONCE_LEN;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context),
                &mut out[header..],
            )
            .expect("sealing cannot fail for records under 256 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a record sealed by [`DataKey::seal`] with this key and `context`; `what` names
    /// the record in errors.
    pub fn open(
        &self,
        context: &[u8],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, EncryptionError> {
        let (key_id, _) = parse_header(sealed, what)?;
        if key_id != self.id {
            return Err(EncryptionError::UnknownKey {
                what: what.to_string(),
                key_id,
            });
        }
        self.open_unchecked(context, sealed, what)
    }

    fn open_unchecked(
        &self,
        context: &[u8],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, EncryptionError> {
        let header = 1 + 4 + NONCE_LEN;
        let nonce = <[u8; NONCE_LEN]>::try_from(&sealed[5..header]).expect("checked length");
        let mut buffer = sealed[header..].to_vec();
        let plain_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buffer,
            )
            .map_err(|_| EncryptionError::Tampered(what.to_string()))?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

/// The key ID a sealed record names, after checking its format and length.
fn parse_header(sealed: &[u8], what: &str) -> Result<(u32, usize), EncryptionError> {
    if sealed.len() < SEAL_OVERHEAD || sealed[0] != SEALED_FORMAT {
        return Err(EncryptionError::Format(what.to_string()));
    }
    let id = u32::from_be_bytes(sealed[1..5].try_into().expect("4 bytes"));
    Ok((id, sealed.len() - SEAL_OVERHEAD))
}

/// Whether `bytes` look like a sealed record (its format byte and a plausible length).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= SEAL_OVERHEAD && bytes[0] == SEALED_FORMAT
}

/// A manager's data keys: the current one seals, every one opens.
#[derive(Clone, Debug, PartialEq)]
pub struct DataKeys {
    current: DataKey,
    /// Keys of earlier rotations still needed to open records (empty between rotations).
    previous: Vec<DataKey>,
}

/// Format byte of [`DataKeys::to_bytes`].
const KEYRING_FORMAT: u8 = 1;

impl DataKeys {
    /// A keyring with one new random key.
    pub fn generate() -> Self {
        Self {
            current: DataKey::generate(1),
            previous: Vec::new(),
        }
    }

    /// A keyring of one key.
    pub fn single(key: DataKey) -> Self {
        Self {
            current: key,
            previous: Vec::new(),
        }
    }

    /// The current key.
    pub fn current(&self) -> &DataKey {
        &self.current
    }

    /// IDs of every key held, the current one first.
    pub fn ids(&self) -> Vec<u32> {
        std::iter::once(self.current.id)
            .chain(self.previous.iter().map(|k| k.id))
            .collect()
    }

    /// This keyring with a new random current key; the old keys stay, to open old records.
    pub fn rotated(&self) -> Self {
        let next = self
            .ids()
            .into_iter()
            .max()
            .unwrap_or(0)
            .wrapping_add(1)
            .max(1);
        let mut previous = vec![self.current.clone()];
        previous.extend(self.previous.iter().cloned());
        Self {
            current: DataKey::generate(next),
            previous,
        }
    }

    /// This keyring without its old keys (once nothing on disk is sealed with them).
    pub fn only_current(&self) -> Self {
        Self {
            current: self.current.clone(),
            previous: Vec::new(),
        }
    }

    /// Seals with the current key.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.current.seal(context, plaintext)
    }

    /// Opens a record sealed with any key of this keyring.
    pub fn open(
        &self,
        context: &[u8],
        sealed: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, EncryptionError> {
        let (key_id, _) = parse_header(sealed, what)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| EncryptionError::UnknownKey {
                what: what.to_string(),
                key_id,
            })?;
        key.open_unchecked(context, sealed, what)
    }

    /// Whether `sealed` is sealed with the current key.
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        parse_header(sealed, "").is_ok_and(|(id, _)| id == self.current.id)
    }

    /// The keyring as bytes: format, count, then each key's ID and bytes, current first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let keys: Vec<&DataKey> = std::iter::once(&self.current)
            .chain(&self.previous)
            .collect();
        let mut out = Vec::with_capacity(2 + keys.len() * (4 + KEY_LEN));
        out.push(KEYRING_FORMAT);
        out.push(u8::try_from(keys.len()).expect("fewer than 256 keys"));
        for k in keys {
            out.extend_from_slice(&k.id.to_be_bytes());
            out.extend_from_slice(&k.bytes);
        }
        out
    }

    /// Reads [`DataKeys::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EncryptionError> {
        let bad = || EncryptionError::Format("the raft data keyring".into());
        let (&format, rest) = bytes.split_first().ok_or_else(bad)?;
        let (&count, mut rest) = rest.split_first().ok_or_else(bad)?;
        if format != KEYRING_FORMAT || count == 0 || rest.len() != count as usize * (4 + KEY_LEN) {
            return Err(bad());
        }
        let mut keys = Vec::with_capacity(count as usize);
        while !rest.is_empty() {
            let id = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            let key: [u8; KEY_LEN] = rest[4..4 + KEY_LEN].try_into().expect("32 bytes");
            keys.push(DataKey::from_bytes(id, key));
            rest = &rest[4 + KEY_LEN..];
        }
        let mut keys = keys.into_iter();
        Ok(Self {
            current: keys.next().expect("count > 0"),
            previous: keys.collect(),
        })
    }

    /// The keyring as a PEM block ([`PEM_LABEL`]), to store beside a node key.
    pub fn to_pem(&self) -> String {
        pem_block(PEM_LABEL, &self.to_bytes())
    }

    /// Finds and reads the [`PEM_LABEL`] block in `text` (a node key file); `Ok(None)` if
    /// there is none.
    pub fn from_pem(text: &str) -> Result<Option<Self>, EncryptionError> {
        match pem_find(text, PEM_LABEL) {
            None => Ok(None),
            Some(bytes) => Self::from_bytes(
                &bytes.ok_or_else(|| EncryptionError::Format("the raft data keyring".into()))?,
            )
            .map(Some),
        }
    }
}

/// A PEM block with `label` around `bytes` (base64, 64 columns).
pub fn pem_block(label: &str, bytes: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The bytes of the first PEM block labelled `label` in `text`: `None` if there is none,
/// `Some(None)` if it is not valid base64.
pub fn pem_find(text: &str, label: &str) -> Option<Option<Vec<u8>>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let Some(stop) = text[start..].find(&end) else {
        return Some(None);
    };
    let body: String = text[start..start + stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some(base64::engine::general_purpose::STANDARD.decode(body).ok())
}

/// `text` without the PEM block labelled `label` (and the line break after it).
pub fn pem_remove(text: &str, label: &str) -> String {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return text.to_string();
    };
    let Some(stop) = text[start..].find(&end) else {
        return text.to_string();
    };
    let mut after = start + stop + end.len();
    if text[after..].starts_with('\n') {
        after += 1;
    }
    format!("{}{}", &text[..start], &text[after..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_with_its_key_and_context() {
        let keys = DataKeys::generate();
        let sealed = keys.seal(b"entry 7", b"the canary");
        assert_eq!(sealed.len(), b"the canary".len() + SEAL_OVERHEAD);
        assert!(!sealed.windows(10).any(|w| w == b"the canary"));
        assert_eq!(keys.open(b"entry 7", &sealed, "e").unwrap(), b"the canary");
        // Moved to another place: refused.
        assert_eq!(
            keys.open(b"entry 8", &sealed, "entry 8"),
            Err(EncryptionError::Tampered("entry 8".into()))
        );
        // Altered: refused.
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            keys.open(b"entry 7", &altered, "e"),
            Err(EncryptionError::Tampered(_))
        ));
        // Another keyring with the same key ID: refused.
        let other = DataKeys::generate();
        assert!(matches!(
            other.open(b"entry 7", &sealed, "e"),
            Err(EncryptionError::Tampered(_))
        ));
        // Not a sealed record at all.
        assert!(matches!(
            keys.open(
                b"entry 7",
                b"plain protobuf bytes, long enough to pass",
                "e"
            ),
            Err(EncryptionError::Format(_))
        ));
    }

    #[test]
    fn a_rotated_keyring_opens_old_records_until_it_forgets_the_old_key() {
        let keys = DataKeys::generate();
        let old = keys.seal(b"c", b"old");
        let rotated = keys.rotated();
        assert_ne!(rotated.current().id(), keys.current().id());
        assert_eq!(rotated.open(b"c", &old, "old").unwrap(), b"old");
        assert!(!rotated.is_current(&old));
        let new = rotated.seal(b"c", b"new");
        assert!(rotated.is_current(&new));
        let forgot = rotated.only_current();
        assert_eq!(forgot.ids(), vec![rotated.current().id()]);
        assert_eq!(forgot.open(b"c", &new, "new").unwrap(), b"new");
        assert_eq!(
            forgot.open(b"c", &old, "old"),
            Err(EncryptionError::UnknownKey {
                what: "old".into(),
                key_id: keys.current().id()
            })
        );
    }

    #[test]
    fn a_keyring_round_trips_through_a_pem_block_beside_a_key() {
        let keys = DataKeys::generate().rotated();
        let file = format!(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            keys.to_pem()
        );
        assert_eq!(DataKeys::from_pem(&file).unwrap(), Some(keys.clone()));
        let key_only = pem_remove(&file, PEM_LABEL);
        assert_eq!(
            key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        );
        assert_eq!(DataKeys::from_pem(&key_only).unwrap(), None);
        assert!(DataKeys::from_bytes(&[1, 1, 0]).is_err());
        assert!(format!("{keys:?}").contains("DataKey"));
        assert!(!format!("{keys:?}").contains(&format!("{:?}", keys.current().bytes())));
    }
}
