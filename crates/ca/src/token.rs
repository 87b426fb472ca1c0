//! Join tokens: `SWMTKN-1-<root CA digest, base36, 50>-<secret, base36, 25>`.
//!
//! The digest lets a joining node check, before it trusts anything, that the CA it reached is
//! the cluster's; the secret proves to the CA that the node may join, and with which role (the
//! cluster keeps one token per role and recognises the role by the token that matches).

use crate::CaError;
use crate::base36;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the root CA certificate (DER), base36.
    pub ca_digest: String,
    /// 128 random bits, base36.
    pub secret: String,
}

impl JoinToken {
    /// A new token for the root CA with digest `ca_digest` (see [`crate::cert_digest`]).
    pub fn generate(ca_digest: &str) -> Self {
        let secret = base36::encode(&rand::random::<u128>().to_be_bytes(), SECRET_LEN);
        Self {
            ca_digest: ca_digest.to_string(),
            secret,
        }
    }

    /// The same token for another root (a root rotation that completed): the secret stays, so
    /// whoever holds the old token only has to take the new digest — Docker does the same.
    pub fn for_root(&self, ca_digest: &str) -> Self {
        Self {
            ca_digest: ca_digest.to_string(),
            secret: self.secret.clone(),
        }
    }

    /// Parses a token, refusing anything that does not have its exact shape.
    pub fn parse(token: &str) -> Result<Self, CaError> {
        let bad = |why: &str| {
            CaError::MalformedToken(format!(
                "{why}; a join token looks like SWMTKN-1-<50 characters>-<25 characters> \
                 (get one with `shoal swarm join-token worker|manager` on a manager)"
            ))
        };
        let parts: Vec<&str> = token.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != PREFIX {
            return Err(bad(
                "it does not start with SWMTKN- or has the wrong number of parts",
            ));
        }
        if parts[1] != VERSION {
            return Err(bad(&format!(
                "version {:?} is not supported (only 1 is)",
                parts[1]
            )));
        }
        if !base36::is_base36(parts[2], DIGEST_LEN) {
            return Err(bad("the CA digest is not 50 base36 characters"));
        }
        if !base36::is_base36(parts[3], SECRET_LEN) {
            return Err(bad("the secret is not 25 base36 characters"));
        }
        Ok(Self {
            ca_digest: parts[2].to_string(),
            secret: parts[3].to_string(),
        })
    }

    /// Whether `other` is this token, compared in constant time.
    pub fn matches(&self, other: &JoinToken) -> bool {
        let a = self.to_string();
        let b = other.to_string();
        // Every byte is compared whatever the first difference, so timing reveals nothing.
        a.len() == b.len()
            && a.bytes()
                .zip(b.bytes())
                .fold(0u8, |diff, (x, y)| diff | (x ^ y))
                == 0
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_differ() {
        let digest = "0".repeat(50);
        let a = JoinToken::generate(&digest);
        let b = JoinToken::generate(&digest);
        assert_ne!(a, b);
        let text = a.to_string();
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(text.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        assert_eq!(JoinToken::parse(&text).unwrap(), a);
        assert!(a.matches(&JoinToken::parse(&text).unwrap()));
        assert!(!a.matches(&b));
        // After a root rotation: the same secret, the new digest.
        let moved = a.for_root(&"1".repeat(50));
        assert_eq!(moved.secret, a.secret);
        assert_eq!(moved.ca_digest, "1".repeat(50));
        assert!(!moved.matches(&a));
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_expected_shape() {
        let good = JoinToken::generate(&"a".repeat(50)).to_string();
        for bad in [
            "",
            "hello",
            &good.replacen("SWMTKN", "SWMTKX", 1),
            &good.replacen("-1-", "-2-", 1),
            &good[..good.len() - 1],
            &good.to_uppercase(),
            &format!("{good}-extra"),
        ] {
            let err = JoinToken::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("SWMTKN-1-<50 characters>-<25 characters>"),
                "{bad:?}: {err}"
            );
        }
    }
}
