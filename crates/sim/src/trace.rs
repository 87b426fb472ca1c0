//! The trace: every event of a run folded into one digest, and optionally kept as text.
//!
//! Determinism is checked by comparing digests: two runs of one seed must fold the same
//! events, with the same fields, at the same simulated instants, in the same order. The
//! digest is FNV-1a over little-endian `u64` fields, written here rather than taken from
//! `std::hash` so that it does not depend on the standard library's hasher (whose algorithm
//! may change between releases) and so a digest printed today can be compared tomorrow.
//!
//! Text costs time, so lines are only formatted when asked for: the whole trace with
//! `--trace`, or the last lines before a violation, by replaying the seed (the run is a
//! function of the seed, so the replay reaches the same violation).

use std::collections::VecDeque;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// What a run keeps of its events.
pub struct Trace {
    digest: u64,
    events: u64,
    lines: Option<VecDeque<(u64, String)>>,
    keep: usize,
}

impl Trace {
    /// A trace keeping the last `keep` lines of text (none: digest only).
    pub fn new(keep: Option<usize>) -> Self {
        Self {
            digest: FNV_OFFSET,
            events: 0,
            lines: keep.map(|_| VecDeque::new()),
            keep: keep.unwrap_or(0),
        }
    }

    fn mix(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.digest ^= u64::from(b);
            self.digest = self.digest.wrapping_mul(FNV_PRIME);
        }
    }

    /// Records one event at simulated instant `now` (µs): `fields` go into the digest, `line`
    /// is formatted only if text is kept.
    pub fn record(&mut self, now: u64, fields: &[u64], line: impl FnOnce() -> String) {
        self.events += 1;
        self.mix(now);
        for f in fields {
            self.mix(*f);
        }
        if let Some(lines) = &mut self.lines {
            if lines.len() == self.keep {
                lines.pop_front();
            }
            lines.push_back((now, line()));
        }
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The lines kept, oldest first, each starting with its simulated instant.
    pub fn lines(&self) -> Vec<String> {
        self.lines_between(0, u64::MAX)
    }

    /// The lines kept whose instant lies in `from..=to` (µs).
    pub fn lines_between(&self, from: u64, to: u64) -> Vec<String> {
        self.lines
            .iter()
            .flatten()
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|(at, line)| format!("{:>10.3}ms  {line}", *at as f64 / 1000.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_digest_depends_on_order_and_the_ring_keeps_the_last_lines() {
        let mut a = Trace::new(Some(2));
        let mut b = Trace::new(None);
        a.record(1, &[1, 2], || "one".into());
        a.record(2, &[3], || "two".into());
        a.record(3, &[4], || "three".into());
        b.record(1, &[1, 2], || unreachable!());
        b.record(3, &[4], || unreachable!());
        b.record(2, &[3], || unreachable!());
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.lines().len(), 2);
        assert!(a.lines()[1].ends_with("three"));
    }
}
