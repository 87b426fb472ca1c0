//! A container's logs, from the engine's logs API to [`LogRecord`]s.
//!
//! The engine keeps the logs (its log driver, `json-file` by default); we ask
//! `GET /containers/{id}/logs` with `timestamps=true`, so every frame it sends starts with the
//! time the engine received the line (RFC 3339 with nanoseconds) and a space. That time
//! becomes the record's `timestamp`; the rest, newline included, its `data`.
//!
//! The engine's `since` is in whole seconds here (the client sends an integer), so it is
//! rounded down and records before the exact `since` are dropped on our side. The engine
//! counts `tail` over both streams and filters afterwards, so when one stream only is
//! wanted, the last records of that stream are picked here from its whole history (and, when
//! following, new records are then asked for from the last one's time on).
//!
//! The reading task ends when the engine ends the stream (at once after the history without
//! `follow`; when the container stops with it) or when the receiver is dropped — it waits
//! for the next frame and for the receiver's closing at the same time, so a silent container
//! does not keep it alive.

use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use shoal_executor::process::logs::parse_timestamp;
use shoal_executor::{LogReader, LogRecord, LogStream, LogsOptions};

use crate::error;

/// Records buffered between the reading task and the receiver.
const CHANNEL: usize = 256;

/// Starts reading `container`'s logs into a [`LogReader`].
pub fn read(docker: Docker, container: String, options: LogsOptions) -> LogReader {
    let (sender, receiver) = tokio::sync::mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        if !options.stdout && !options.stderr {
            return;
        }
        let sender = &sender;
        let reading = async {
            let both = options.stdout && options.stderr;
            let mut after = None;
            if let (Some(n), false) = (options.tail, both) {
                // The engine counts its tail over both streams, then filters: the last lines
                // of one stream are found here, in the whole history of that stream.
                let mut last = std::collections::VecDeque::with_capacity(n.min(CHANNEL));
                let history = LogsOptions {
                    tail: None,
                    follow: false,
                    ..options.clone()
                };
                pump(&docker, &container, &history, |record| {
                    if last.len() == n {
                        last.pop_front();
                    }
                    if n > 0 {
                        last.push_back(record);
                    }
                })
                .await?;
                after = last.back().map(|r: &LogRecord| r.timestamp);
                for record in last {
                    if sender.send(Ok(record)).await.is_err() {
                        return Ok(());
                    }
                }
                if !options.follow {
                    return Ok(());
                }
                // New lines only, from here on.
                let follow = LogsOptions {
                    since: after.or(options.since),
                    tail: None,
                    ..options.clone()
                };
                return pump_to(&docker, &container, &follow, after, sender).await;
            }
            pump_to(&docker, &container, &options, after, sender).await
        };
        tokio::select! {
            result = reading => {
                if let Err(error) = result {
                    let _ = sender.send(Err(error)).await;
                }
            }
            () = sender.closed() => {}
        }
    });
    receiver
}

/// Sends the records of one engine request to `sender`, until the engine or the receiver
/// ends.
async fn pump_to(
    docker: &Docker,
    container: &str,
    options: &LogsOptions,
    after: Option<SystemTime>,
    sender: &tokio::sync::mpsc::Sender<shoal_executor::Result<LogRecord>>,
) -> shoal_executor::Result<()> {
    let mut pending = None;
    let mut stream = Box::pin(records(docker, container, options, after));
    loop {
        if let Some(record) = pending.take()
            && sender.send(Ok(record)).await.is_err()
        {
            return Ok(());
        }
        match stream.next().await {
            Some(record) => pending = Some(record?),
            None => return Ok(()),
        }
    }
}

/// Calls `each` for the records of one engine request (not following).
async fn pump(
    docker: &Docker,
    container: &str,
    options: &LogsOptions,
    mut each: impl FnMut(LogRecord),
) -> shoal_executor::Result<()> {
    let mut stream = Box::pin(records(docker, container, options, None));
    while let Some(record) = stream.next().await {
        each(record?);
    }
    Ok(())
}

/// The records of one engine request: of the wanted streams, at or after `options.since`,
/// strictly after `after`.
fn records<'a>(
    docker: &Docker,
    container: &'a str,
    options: &'a LogsOptions,
    after: Option<SystemTime>,
) -> impl futures_util::Stream<Item = shoal_executor::Result<LogRecord>> + 'a {
    let since_secs = options
        .since
        .and_then(|s| s.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs().min(i32::MAX as u64) as i32)
        .unwrap_or(0);
    let query = bollard::query_parameters::LogsOptions {
        follow: options.follow,
        stdout: options.stdout,
        stderr: options.stderr,
        since: since_secs,
        until: 0,
        timestamps: true,
        tail: options
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into()),
    };
    docker.logs(container, Some(query)).filter_map(move |item| {
        let item = match item {
            Ok(output) => record(output)
                .filter(|r| {
                    options.wants(r.stream)
                        && options.since.is_none_or(|since| r.timestamp >= since)
                        && after.is_none_or(|after| r.timestamp > after)
                })
                .map(Ok),
            Err(e) => Some(Err(error::classify(
                format!("reading the logs of container {container:?}"),
                e,
            ))),
        };
        std::future::ready(item)
    })
}

/// One engine frame as a record: its stream and the timestamp at its start.
fn record(output: LogOutput) -> Option<LogRecord> {
    let (stream, message) = match output {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (LogStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (LogStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    let (timestamp, data) = split_timestamp(&message);
    Some(LogRecord {
        timestamp: timestamp.unwrap_or_else(SystemTime::now),
        stream,
        data: data.to_vec(),
    })
}

/// Splits `"<RFC 3339 time> <data>"`; no time (and the whole line as data) if the line does
/// not start with one.
pub fn split_timestamp(line: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(space) = line.iter().position(|b| *b == b' ') else {
        return (None, line);
    };
    match std::str::from_utf8(&line[..space])
        .ok()
        .and_then(parse_timestamp)
    {
        Some(time) => (Some(time), &line[space + 1..]),
        None => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn engine_timestamps_parse() {
        let t = parse_timestamp("2026-11-27T16:03:05.123456789Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_795_385);
        assert_eq!(d.subsec_nanos(), 123_456_789);
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), UNIX_EPOCH);
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:00.5+01:00").unwrap(),
            UNIX_EPOCH + Duration::from_millis(500)
        );
        assert_eq!(
            parse_timestamp("2000-03-01T00:00:00Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            951_868_800
        );
        assert!(parse_timestamp("hello").is_none());
        assert!(parse_timestamp("2026-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn lines_lose_their_timestamp_prefix() {
        let (t, data) = split_timestamp(b"2026-11-27T16:03:05.000000001Z hello world\n");
        assert!(t.is_some());
        assert_eq!(data, b"hello world\n");
        let (t, data) = split_timestamp(b"no time here\n");
        assert!(t.is_none());
        assert_eq!(data, b"no time here\n");
    }
}
