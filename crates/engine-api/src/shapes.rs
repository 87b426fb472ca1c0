//! Shapes every object shares: `Version`, `Meta` times, and the conversions of times and
//! durations between the Control API's protobuf types and Docker's JSON (RFC 3339 times with
//! nanoseconds, durations as integer nanoseconds).

use serde::{Deserialize, Serialize};

/// `{"Index": N}`: an object's version, sent back as `?version=N` on update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Version {
    /// `omitempty` in moby: a job's first iteration is `"JobIteration":{}`.
    #[serde(skip_serializing_if = "is_zero")]
    pub index: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The `ID`, `Version`, `CreatedAt` and `UpdatedAt` every object starts with, flattened into
/// its shape with `#[serde(flatten)]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ObjectMeta {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
}

impl ObjectMeta {
    /// The Control API's `Meta` in Docker's spelling.
    pub fn from_proto(meta: Option<&shoal_api::v1::Meta>) -> Self {
        let meta = meta.cloned().unwrap_or_default();
        ObjectMeta {
            id: meta.id,
            version: Version {
                index: meta.version,
            },
            created_at: time(meta.created_at.as_ref()),
            updated_at: time(meta.updated_at.as_ref()),
        }
    }
}

/// RFC 3339 with nanoseconds, in UTC, as Go prints `time.Time` (`0001-01-01T00:00:00Z` for
/// the zero time).
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = timestamp else {
        return "0001-01-01T00:00:00Z".to_string();
    };
    let secs = t.seconds;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if t.nanos > 0 {
        let frac = format!("{:09}", t.nanos);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 time (`2006-01-02T15:04:05.999999999Z07:00`).
pub fn parse_time(s: &str) -> Option<prost_types::Timestamp> {
    let (date, rest) = s.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => return None,
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms_parts = hms.splitn(3, ':');
    let h: i64 = hms_parts.next()?.parse().ok()?;
    let m: i64 = hms_parts.next()?.parse().ok()?;
    let sec: i64 = hms_parts.next()?.parse().ok()?;
    let nanos: i32 = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{frac:0<9}").parse().ok()?
    };
    let offset_secs = match offset {
        "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(prost_types::Timestamp {
        seconds: days * 86_400 + h * 3600 + m * 60 + sec - offset_secs,
        nanos,
    })
}

/// A protobuf duration as Go's integer nanoseconds.
pub fn nanos(duration: Option<&prost_types::Duration>) -> i64 {
    duration
        .map(|d| {
            d.seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(d.nanos as i64)
        })
        .unwrap_or_default()
}

/// Go's integer nanoseconds as a protobuf duration.
pub fn duration(nanos: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_and_parse_like_go() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_450_000,
        };
        assert_eq!(time(Some(&t)), "2023-11-14T22:13:20.12345Z");
        assert_eq!(parse_time("2023-11-14T22:13:20.12345Z"), Some(t));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.12345+01:00"),
            Some(t),
            "offsets"
        );
        assert_eq!(time(None), "0001-01-01T00:00:00Z");
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn durations_are_nanoseconds() {
        let d = duration(5_000_000_001);
        assert_eq!((d.seconds, d.nanos), (5, 1));
        assert_eq!(nanos(Some(&d)), 5_000_000_001);
        assert_eq!(nanos(None), 0);
    }
}
