//! raft-rs logs through `slog`; this drain forwards its records to `tracing`, with their
//! key-value pairs, so the daemon has one log.
//!
//! raft-rs writes whole messages at debug level — their entries and snapshots, in Rust's
//! debug form — and those carry the cluster's state, secrets included. Before a record leaves
//! here every quoted payload (`data: "…"`, `context: "…"`) is replaced by its length, so the
//! debug log says what was sent and never what it held.

use std::fmt::Write as _;

use slog::{Drain, KV, Level, OwnedKVList, Record, Serializer};

struct TracingDrain;

struct Fields(String);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = redact_payloads(&record.msg().to_string());
        let fields = redact_payloads(&fields.0);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{fields}"),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{fields}"),
            Level::Info => tracing::info!(target: "raft", "{msg}{fields}"),
            Level::Debug => tracing::debug!(target: "raft", "{msg}{fields}"),
            Level::Trace => tracing::trace!(target: "raft", "{msg}{fields}"),
        }
        Ok(())
    }
}

/// A logger for raft-rs that writes to `tracing`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}

/// `text` with the quoted string after every `data: ` and `context: ` replaced by its length.
fn redact_payloads(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut rest = text;
    loop {
        let next = ["data: \"", "context: \""]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
            .min();
        let Some((at, key_len)) = next else {
            out.push_str(rest);
            return out;
        };
        let open = at + key_len;
        out.push_str(&rest[..open - 1]);
        // Find the closing quote, skipping escaped characters.
        let bytes = rest.as_bytes();
        let mut i = open;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        let _ = write!(out, "<{} bytes redacted>", i.min(bytes.len()) - open);
        rest = &rest[(i + 1).min(rest.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_never_reach_the_log() {
        let record = r#"msg_type: MsgSnapshot to: 9 snapshot {data: "\010secret \"quoted\" canary" metadata {index: 5}} entries {data: "canary2" context: "addr"}"#;
        let redacted = redact_payloads(record);
        assert!(!redacted.contains("canary"), "{redacted}");
        assert!(!redacted.contains("addr"), "{redacted}");
        assert!(
            redacted.contains("msg_type: MsgSnapshot to: 9"),
            "{redacted}"
        );
        assert!(redacted.contains("metadata {index: 5}"), "{redacted}");
        assert!(redacted.contains("data: <"), "{redacted}");
        assert_eq!(redact_payloads("no payload here"), "no payload here");
        // Cut short: the rest is dropped, not shown.
        assert_eq!(
            redact_payloads(r#"data: "unterminated"#),
            "data: <12 bytes redacted>"
        );
    }
}
