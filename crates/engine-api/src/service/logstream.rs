//! Log streams, shared by `GET /services/{id}/logs` and `GET /tasks/{id}/logs`.
//!
//! Query (moby's): `stdout`, `stderr` (at least one), `follow`, `timestamps`, `details`,
//! `tail` (`all` or a count from the end) and `since` (Unix `seconds[.nanoseconds]` as the
//! CLI sends it, or an RFC 3339 time). The lines come from the Control API's log broker,
//! which collects them from the nodes that ran the tasks.
//!
//! The body is Docker's stream: for a task without a TTY, each line is a frame with an
//! 8-byte header `[1 stdout | 2 stderr, 0, 0, 0, length (big-endian u32)]`
//! (`application/vnd.docker.multiplexed-stream` from API 1.42, `raw-stream` before); with a
//! TTY, the bare lines. A line is `[timestamp ][details ]data`, where the timestamp is
//! RFC 3339 with nine fractional digits and the details are
//! `com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,com.docker.swarm.task.id=…`
//! (URL-escaped, sorted by key) — the docker CLI needs them to name each line's task.
//!
//! The stream stops when the subscription ends (everything was sent, or, when following,
//! the tasks are gone) or when the client goes away: the forwarding task watches its
//! channel's receiver and drops the subscription as soon as it is closed. An error after
//! the first byte cannot change the status any more; as moby does, it is written into the
//! stream as `Error grabbing logs: …`.

use bytes::Bytes;
use shoal_api::v1::{
    LogMessage, LogSelector, LogStream, LogSubscriptionOptions, SubscribeLogsRequest,
};
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::error::EngineError;
use crate::query::Query;
use crate::request::{ApiVersion, Reply, Result};
use crate::shapes::parse_time;

/// Frames buffered between the subscription and the client.
const BUFFER: usize = 64;

/// What a log request asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    pub details: bool,
    /// Lines from the end of each task's log; negative for all.
    pub tail: i64,
    pub since: Option<prost_types::Timestamp>,
}

impl LogOptions {
    /// Reads the options from the query; refuses a request for no stream at all.
    pub fn parse(query: &Query) -> Result<LogOptions, EngineError> {
        let options = LogOptions {
            stdout: query.bool("stdout")?,
            stderr: query.bool("stderr")?,
            follow: query.bool("follow")?,
            timestamps: query.bool("timestamps")?,
            details: query.bool("details")?,
            tail: parse_tail(query.get("tail").unwrap_or_default())?,
            since: parse_since(query.get("since").unwrap_or_default())?,
        };
        if !options.stdout && !options.stderr {
            return Err(EngineError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        Ok(options)
    }

    fn subscription(&self) -> LogSubscriptionOptions {
        let mut streams = Vec::new();
        if self.stdout {
            streams.push(LogStream::Stdout as i32);
        }
        if self.stderr {
            streams.push(LogStream::Stderr as i32);
        }
        LogSubscriptionOptions {
            streams,
            follow: self.follow,
            tail: self.tail,
            since: self.since,
        }
    }
}

fn parse_tail(raw: &str) -> Result<i64, EngineError> {
    match raw {
        "" | "all" => Ok(-1),
        n => n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            EngineError::bad_request(format!(
                "invalid tail {raw:?}: give a number of lines (0 or more) or \"all\""
            ))
        }),
    }
}

fn parse_since(raw: &str) -> Result<Option<prost_types::Timestamp>, EngineError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        EngineError::bad_request(format!(
            "invalid since {raw:?}: give Unix seconds (1700000000 or 1700000000.5) or an RFC \
             3339 time"
        ))
    };
    if raw.contains('T') || raw.contains('t') {
        return parse_time(raw).map(Some).ok_or_else(bad);
    }
    let (secs, frac) = raw.split_once('.').unwrap_or((raw, ""));
    let seconds: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: i32 = if frac.is_empty() {
        0
    } else if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    } else {
        return Err(bad());
    };
    if seconds == 0 && nanos == 0 {
        return Ok(None);
    }
    Ok(Some(prost_types::Timestamp { seconds, nanos }))
}

/// Go's `RFC3339NanoFixed`: always nine fractional digits.
pub fn fixed_time(t: Option<&prost_types::Timestamp>) -> String {
    let t = t.copied().unwrap_or_default();
    let whole = crate::shapes::time(Some(&prost_types::Timestamp {
        seconds: t.seconds,
        nanos: 0,
    }));
    format!(
        "{}.{:09}Z",
        whole.trim_end_matches('Z'),
        t.nanos.clamp(0, 999_999_999)
    )
}

/// One message as the bytes of its frame (or its bare line with a TTY); `None` for a stream
/// the client did not ask for.
pub fn frame(message: &LogMessage, options: &LogOptions, tty: bool) -> Option<Bytes> {
    let stderr = message.stream == LogStream::Stderr as i32;
    if (stderr && !options.stderr) || (!stderr && !options.stdout) {
        return None;
    }
    let mut line = Vec::with_capacity(message.data.len() + 160);
    if options.timestamps {
        line.extend_from_slice(fixed_time(message.timestamp.as_ref()).as_bytes());
        line.push(b' ');
    }
    if options.details {
        let context = message.context.clone().unwrap_or_default();
        let attrs = [
            ("com.docker.swarm.node.id", context.node_id),
            ("com.docker.swarm.service.id", context.service_id),
            ("com.docker.swarm.task.id", context.task_id),
        ];
        let details: Vec<String> = attrs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>(),
                    form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
            .collect();
        line.extend_from_slice(details.join(",").as_bytes());
        line.push(b' ');
    }
    line.extend_from_slice(&message.data);
    if !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    if tty {
        return Some(Bytes::from(line));
    }
    Some(multiplexed(if stderr { 2 } else { 1 }, &line))
}

/// A frame of Docker's multiplexed stream: `[stream, 0, 0, 0, len_be32]` then the payload.
pub fn multiplexed(stream: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// Subscribes to the logs `selector` names and answers with the stream.
pub async fn stream(
    backend: &Backend,
    selector: LogSelector,
    options: LogOptions,
    tty: bool,
    version: ApiVersion,
) -> Result {
    let request = SubscribeLogsRequest {
        selector: Some(selector),
        options: Some(options.subscription()),
    };
    let mut subscription = match backend.logs().subscribe_logs(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(backend.control_error(status).await),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = subscription.message() => next,
            };
            match next {
                Ok(Some(batch)) => {
                    for message in &batch.messages {
                        if let Some(bytes) = frame(message, &options, tty)
                            && tx.send(bytes).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let text = format!("Error grabbing logs: {}\n", status.message());
                    let bytes = if tty {
                        Bytes::from(text)
                    } else {
                        multiplexed(2, text.as_bytes())
                    };
                    let _ = tx.send(bytes).await;
                    return;
                }
            }
        }
    });
    let content_type = if !tty && version.at_least(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    };
    Ok(Reply::Stream(200, content_type, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::LogContext;

    fn options() -> LogOptions {
        LogOptions::parse(&Query::parse(Some("stdout=1&stderr=1"))).unwrap()
    }

    fn message(stream: LogStream, data: &str) -> LogMessage {
        LogMessage {
            context: Some(LogContext {
                service_id: "svc".into(),
                node_id: "node".into(),
                task_id: "task".into(),
            }),
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            stream: stream as i32,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lines_are_framed_with_dockers_header() {
        let f = frame(&message(LogStream::Stdout, "hello"), &options(), false).unwrap();
        assert_eq!(&f[..8], &[1, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(&f[8..], b"hello\n");
        let f = frame(&message(LogStream::Stderr, "oops\n"), &options(), false).unwrap();
        assert_eq!(f[0], 2);
        assert_eq!(&f[8..], b"oops\n");
        let f = frame(&message(LogStream::Stdout, "raw"), &options(), true).unwrap();
        assert_eq!(&f[..], b"raw\n", "a TTY has no frames");
    }

    #[test]
    fn details_and_timestamps_prefix_the_line() {
        let mut o = options();
        o.details = true;
        o.timestamps = true;
        let f = frame(&message(LogStream::Stdout, "hi"), &o, true).unwrap();
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            "2023-11-14T22:13:20.000000005Z com.docker.swarm.node.id=node,\
             com.docker.swarm.service.id=svc,com.docker.swarm.task.id=task hi\n"
        );
    }

    #[test]
    fn unwanted_streams_are_left_out() {
        let o = LogOptions::parse(&Query::parse(Some("stdout=1"))).unwrap();
        assert!(frame(&message(LogStream::Stderr, "x"), &o, false).is_none());
        assert!(frame(&message(LogStream::Stdout, "x"), &o, false).is_some());
    }

    #[test]
    fn options_parse_as_moby_and_docker_py_send_them() {
        let o = LogOptions::parse(&Query::parse(Some(
            "details=False&follow=False&stdout=True&stderr=False&since=0&timestamps=False&tail=all",
        )))
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                stdout: true,
                stderr: false,
                follow: false,
                timestamps: false,
                details: false,
                tail: -1,
                since: None,
            }
        );
        let o =
            LogOptions::parse(&Query::parse(Some("stdout=1&tail=10&since=1700000000.5"))).unwrap();
        assert_eq!(o.tail, 10);
        assert_eq!(
            o.since,
            Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000
            })
        );
        let e = LogOptions::parse(&Query::parse(Some("details=1"))).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("at least one stream"));
        for bad in ["stdout=1&tail=-3", "stdout=1&tail=x", "stdout=1&since=soon"] {
            assert_eq!(
                LogOptions::parse(&Query::parse(Some(bad)))
                    .unwrap_err()
                    .status,
                400,
                "{bad}"
            );
        }
    }
}
