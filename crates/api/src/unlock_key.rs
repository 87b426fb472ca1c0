//! The human form of the cluster's unlock key: `SWMKEY-1-<base64 of 32 bytes>`, as Docker
//! prints it (`docker swarm unlock-key`). The key itself is 32 random bytes; the cluster
//! object keeps it (replicated, so sealed in every manager's Raft log), and each manager seals
//! its own key file with it while autolock is on.

/// The prefix of every unlock key.
pub const PREFIX: &str = "SWMKEY-1-";
/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;

/// The key as users see it.
pub fn format(key: &[u8]) -> String {
    use base64::Engine;
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key)
    )
}

/// Reads `SWMKEY-1-<base64>` (surrounding white space and base64 padding allowed), with a
/// message saying what is wrong.
pub fn parse(text: &str) -> Result<[u8; KEY_LEN], String> {
    use base64::Engine;
    let text = text.trim();
    let Some(encoded) = text.strip_prefix(PREFIX) else {
        return Err(format!(
            "this is not an unlock key: unlock keys start with {PREFIX} (run `shoal swarm \
             unlock-key` on an unlocked manager to see the cluster's)"
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| {
            "this unlock key is malformed (the part after SWMKEY-1- is not base64); copy it \
             again, whole"
                .to_string()
        })?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "this unlock key is malformed ({} bytes instead of {KEY_LEN}); copy it again, whole",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_ones_say_why() {
        let key = [7u8; KEY_LEN];
        let human = format(&key);
        assert!(human.starts_with("SWMKEY-1-"), "{human}");
        assert_eq!(parse(&format!(" {human}\n")).unwrap(), key);
        assert_eq!(parse(&format!("{human}=")).unwrap(), key);
        assert!(
            parse("SWMTKN-1-abc")
                .unwrap_err()
                .contains("start with SWMKEY-1-")
        );
        assert!(parse("SWMKEY-1-!!!").unwrap_err().contains("not base64"));
        assert!(parse("SWMKEY-1-AAAA").unwrap_err().contains("3 bytes"));
    }
}
