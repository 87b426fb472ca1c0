//! Durations as client commands take them: Go / docker style, one or more `<number><unit>`
//! terms such as `30m`, `1h30m`, `1.5h`, `500ms` (units: ns, us or µs, ms, s, m, h).

use std::time::Duration;

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration such as `2h`, `1h30m`, `90s` or `0.5s`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad =
        |why: &str| format!("invalid duration {s:?}: {why}; write it like 90s, 30m, 2h or 1h30m");
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad("expected a number"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(bad("a unit is missing"));
        }
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| bad(&format!("unknown unit {unit:?}")))?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad("the number is too large"))?
        };
        let mut term = whole
            .checked_mul(scale)
            .ok_or_else(|| bad("it is too large"))?;
        // Digits after the point, beyond nanosecond precision, are dropped.
        let mut place = scale;
        for digit in fraction.chars().take(20) {
            place /= 10;
            term += u128::from(digit.to_digit(10).unwrap_or(0)) * place;
        }
        nanos = nanos
            .checked_add(term)
            .ok_or_else(|| bad("it is too large"))?;
        rest = next;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("it is too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// The protobuf form of a duration.
pub fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// Nanoseconds in a protobuf duration, as docker shows durations in JSON.
pub fn proto_nanos(d: &prost_types::Duration) -> i64 {
    d.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(d.nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_compound_terms() {
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1m0.5s").unwrap(), Duration::from_millis(60_500));
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("3us").unwrap(), Duration::from_micros(3));
        assert_eq!(parse("3µs").unwrap(), Duration::from_micros(3));
        assert_eq!(parse("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse(" 5s ").unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn refusals_say_how_to_write_one() {
        for (input, why) in [
            ("", "empty"),
            ("30", "unit is missing"),
            ("5 s", "unknown unit"),
            ("2d", "unknown unit \"d\""),
            ("h", "expected a number"),
            ("1.2.3s", "expected a number"),
            ("-5s", "expected a number"),
            ("99999999999999999999999999999999999999999h", "too large"),
        ] {
            let e = parse(input).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(e.contains("1h30m"), "{input:?}: {e}");
        }
    }

    #[test]
    fn protobuf_form() {
        let p = to_proto(Duration::from_millis(7_250));
        assert_eq!((p.seconds, p.nanos), (7, 250_000_000));
        assert_eq!(proto_nanos(&p), 7_250_000_000);
    }
}
