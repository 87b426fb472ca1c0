//! Base36 of arbitrary byte strings (big-endian numbers), left-padded to a width.

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `bytes` read as a big-endian number, in base36, left-padded with `0` to `width`.
pub fn encode(bytes: &[u8], width: usize) -> String {
    let mut number: Vec<u8> = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|b| *b != 0) {
        // Divide the big-endian number by 36, keeping the remainder.
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | *byte as u32;
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(DIGITS[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("base36 digits are ASCII")
}

/// Whether `s` is `width` lower-case base36 characters.
pub fn is_base36(s: &str, width: usize) -> bool {
    s.len() == width
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_integer_base36() {
        assert_eq!(encode(&[0], 3), "000");
        assert_eq!(encode(&[35], 1), "z");
        assert_eq!(encode(&[1, 0], 1), "74"); // 256 = 7×36 + 4
        let v: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        assert_eq!(
            encode(&v.to_be_bytes(), 25),
            shoal_api::id::encode_base36(v, 25)
        );
        // 256 bits need 50 base36 digits.
        assert_eq!(encode(&[0xff; 32], 50).len(), 50);
    }
}
