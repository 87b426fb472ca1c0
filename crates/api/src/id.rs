//! Object identifiers: 25-character base36 strings made from 128 random bits.
//!
//! 36^25 ≈ 8.1e38 > 2^128 ≈ 3.4e38, so every 128-bit value fits in 25 base36 digits; shorter
//! encodings are left-padded with `0` so all IDs have the same length and sort as they compare.
//! IDs are lower case, so a prefix typed by a user matches regardless of how the ID was shown.

/// Length of every generated ID.
pub const ID_LEN: usize = 25;

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new random identifier.
pub fn new_id() -> String {
    encode_base36(rand::random::<u128>(), ID_LEN)
}

/// `value` in base36, left-padded with zeros to at least `width` digits.
pub fn encode_base36(mut value: u128, width: usize) -> String {
    let mut digits = Vec::with_capacity(width.max(25));
    while value > 0 {
        digits.push(DIGITS[(value % 36) as usize]);
        value /= 36;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("base36 digits are ASCII")
}

/// Whether `id` has the shape of a generated ID (25 lower-case base36 characters).
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_base36_characters_and_distinct() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_valid_id(id)), "{ids:?}");
    }

    #[test]
    fn base36_encoding_is_padded_and_covers_u128() {
        assert_eq!(encode_base36(0, ID_LEN), "0".repeat(25));
        assert_eq!(encode_base36(35, 1), "z");
        assert_eq!(encode_base36(36, 1), "10");
        assert_eq!(
            encode_base36(u128::MAX, ID_LEN),
            "f5lxx1zz5pnorynqglhzmsp33"
        );
        assert_eq!(encode_base36(u128::MAX, ID_LEN).len(), ID_LEN);
    }

    #[test]
    fn invalid_ids_are_recognised() {
        assert!(!is_valid_id("short"));
        assert!(!is_valid_id(&"A".repeat(25)));
        assert!(!is_valid_id(&"-".repeat(25)));
    }
}
