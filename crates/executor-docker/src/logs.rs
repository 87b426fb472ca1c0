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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use futures_util::StreamExt;
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
        .and_then(parse_rfc3339)
    {
        Some(time) => (Some(time), &line[space + 1..]),
        None => (None, line),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, the engine's timestamps.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps_parse() {
        let t = parse_rfc3339("2026-11-27T16:03:05.123456789Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_795_385);
        assert_eq!(d.subsec_nanos(), 123_456_789);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), UNIX_EPOCH);
        assert_eq!(
            parse_rfc3339("1970-01-01T01:00:00.5+01:00").unwrap(),
            UNIX_EPOCH + Duration::from_millis(500)
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            951_868_800
        );
        assert!(parse_rfc3339("hello").is_none());
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_none());
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
