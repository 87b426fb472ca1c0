//! A task's output log: the CRI log format, size-bounded rotation by rename, and reading it
//! back (whole, or followed as it grows).
//!
//! The task's shim ([`super::shim`]) owns the read ends of the task's stdout and stderr pipes
//! and is the only writer of `<task dir>/output.log`. One record per line:
//!
//! ```text
//! 2026-11-27T16:03:05.123456789Z stdout F hello
//! 2026-11-27T16:03:05.123460001Z stderr P <the first 16 KiB of a longer line>
//! ```
//!
//! — the time the shim read the data (RFC 3339, UTC, nine fraction digits), the stream, `F`
//! for a full line (its newline is the record's terminator and is not repeated in the data)
//! or `P` for a partial one, then the data itself. A line longer than [`MAX_RECORD`] bytes
//! becomes `P` records followed by an `F` record with the rest; output that has not ended
//! with a newline when the program is gone is written as a final `P`. The data therefore
//! never contains a newline. This is the format of the Kubernetes CRI (kubelet, containerd,
//! CRI-O); only fixed-width fractions are written, but any width is read.
//!
//! Times never go backwards within the log: the writer holds the previous one if the clock
//! steps back.
//!
//! Rotation: before a record would take the current file past `max_bytes`, the writer
//! renames `output.log.N-1` → `output.log.N` … `output.log` → `output.log.1` (the oldest is
//! overwritten, so at most `max_files` files exist) and starts a new `output.log`. As the
//! shim is the only writer and rotates between two records, nothing is lost or cut in the
//! middle of a record. A file exceeds `max_bytes` only when a single record is bigger
//! (`max_bytes` below about 16 KiB).
//!
//! Readers: [`read_history`] opens the current file first, then the rotated ones, and
//! skips a rotated file that is the current one renamed meanwhile (same inode), so a
//! rotation during the read neither repeats nor loses the current file. A [`Follower`] keeps
//! reading the file it has open and, once it finds the path names another file (a rotation
//! happened), reads the old one to its end and moves on to the new one. A follower that
//! falls behind by more than one whole file between two polls loses the file in between.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{LogRecord, LogStream, LogsOptions};

/// The current log file of a task directory.
pub const OUTPUT: &str = "output.log";

/// The longest data of one record: longer lines are split into `P` records.
pub const MAX_RECORD: usize = 16 << 10;

/// How log files are bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotation {
    /// Size at which a file is rotated (default 10 MiB).
    pub max_bytes: u64,
    /// Files kept, the current one included (default 3).
    pub max_files: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        Self {
            max_bytes: 10 << 20,
            max_files: 3,
        }
    }
}

/// `path.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// One record of the log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub timestamp: SystemTime,
    pub stream: LogStream,
    /// `F`: the data ends a line; `P`: the line goes on in a later record.
    pub full: bool,
    /// Without the newline.
    pub data: Vec<u8>,
}

impl Entry {
    /// The record as the API returns it: a full line gets its newline back.
    pub fn into_record(self) -> LogRecord {
        let mut data = self.data;
        if self.full {
            data.push(b'\n');
        }
        LogRecord {
            timestamp: self.timestamp,
            stream: self.stream,
            data,
        }
    }
}

fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    }
}

/// A record as a line of the file, newline included.
pub fn encode(timestamp: SystemTime, stream: LogStream, full: bool, data: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(data.len() + 48);
    line.extend_from_slice(format_timestamp(timestamp).as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream_name(stream).as_bytes());
    line.extend_from_slice(if full { b" F " } else { b" P " });
    line.extend_from_slice(data);
    line.push(b'\n');
    line
}

/// Parses one line of the file (without its newline).
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = parse_timestamp(std::str::from_utf8(parts.next()?).ok()?)?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Entry {
        timestamp,
        stream,
        full,
        data: parts.next().unwrap_or_default().to_vec(),
    })
}

/// `2026-11-27T16:03:05.123456789Z`. Times before 1970 are written as the epoch.
pub fn format_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// Parses an RFC 3339 time: a `Z` or `±HH:MM` offset, any number of fraction digits (the
/// first nine count).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
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
        for (i, c) in fraction[..digits].bytes().take(9).enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// (year, month, day) of a day counted from 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The shim's side: appends records to `output.log` and rotates it.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: LogRotation,
    last: SystemTime,
}

impl LogWriter {
    /// Opens (creating, mode 0640) the current file of `dir` for appending.
    pub fn open(dir: &Path, rotation: LogRotation) -> io::Result<Self> {
        let path = dir.join(OUTPUT);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            rotation,
            last: UNIX_EPOCH,
        })
    }

    /// Appends one record, stamped now, rotating first if it would not fit.
    pub fn write(&mut self, stream: LogStream, full: bool, data: &[u8]) -> io::Result<()> {
        self.last = self.last.max(SystemTime::now());
        let line = encode(self.last, stream, full, data);
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.rotation.max_files > 1 {
            for n in (1..self.rotation.max_files - 1).rev() {
                match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Reads a log file as it grows, across rotations. See the module documentation.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    /// Bytes read after the last newline.
    pending: Vec<u8>,
}

impl Follower {
    /// A follower of `dir`'s current file, from its start.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(OUTPUT),
            file: None,
            pending: Vec::new(),
        }
    }

    /// The records appended since the last call (or since the start of the current file).
    pub fn poll(&mut self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        loop {
            let ino = match &self.file {
                Some((_, ino)) => *ino,
                None => match File::open(&self.path) {
                    Ok(file) => {
                        let ino = file.metadata()?.ino();
                        self.file = Some((file, ino));
                        ino
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
                    Err(e) => return Err(e),
                },
            };
            self.read_available(&mut entries)?;
            match fs::metadata(&self.path) {
                Ok(m) if m.ino() == ino => return Ok(entries),
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {
                    // Renamed away (and maybe replaced already): what was written to it
                    // before the rename is all there is. Read it to its end, then go on with
                    // the new file, if there is one yet.
                    self.read_available(&mut entries)?;
                    self.pending.clear();
                    self.file = None;
                }
            }
        }
    }

    fn read_available(&mut self, entries: &mut Vec<Entry>) -> io::Result<()> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(());
        };
        let start = self.pending.len();
        file.read_to_end(&mut self.pending)?;
        let mut from = 0;
        let mut search = start;
        while let Some(pos) = self.pending[search..].iter().position(|b| *b == b'\n') {
            let end = search + pos;
            if let Some(entry) = parse_line(&self.pending[from..end]) {
                entries.push(entry);
            }
            from = end + 1;
            search = from;
        }
        self.pending.drain(..from);
        Ok(())
    }
}

/// Everything kept in `dir`, oldest first, and a [`Follower`] positioned after it.
pub fn read_history(dir: &Path) -> io::Result<(Vec<Entry>, Follower)> {
    let mut follower = Follower::new(dir);
    // The current file first: a rotation after this point leaves it open for the follower,
    // and it then shows up as `.1` with the same inode, which is skipped below.
    let mut current = follower.poll()?;
    let current_ino = follower.file.as_ref().map(|(_, ino)| *ino);
    let path = dir.join(OUTPUT);
    let mut rotated_files = Vec::new();
    for n in 1.. {
        match File::open(rotated(&path, n)) {
            Ok(file) => rotated_files.push(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    let mut entries = Vec::new();
    for mut file in rotated_files.into_iter().rev() {
        if Some(file.metadata()?.ino()) == current_ino {
            continue;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        entries.extend(bytes.split(|b| *b == b'\n').filter_map(parse_line));
    }
    entries.append(&mut current);
    Ok((entries, follower))
}

/// Whether `entry` passes the stream and `since` filters of `options`.
pub fn wanted(entry: &Entry, options: &LogsOptions) -> bool {
    options.wants(entry.stream) && options.since.is_none_or(|since| entry.timestamp >= since)
}

/// The entries `options` selects (streams, `since`, then `tail`), in order.
///
/// `tail` counts *lines*: the `P` records of a long line and the `F` record that ends it
/// count once, and are returned together, so a tail never starts in the middle of a line. A
/// line still unfinished at the end of the log counts as a line.
pub fn select(entries: Vec<Entry>, options: &LogsOptions) -> Vec<Entry> {
    let entries: Vec<Entry> = entries.into_iter().filter(|e| wanted(e, options)).collect();
    let Some(tail) = options.tail else {
        return entries;
    };
    // Number the lines of each stream, then keep the records of the last `tail` lines, a line
    // being as recent as its last record.
    let mut next = [0u64; 2];
    let lines: Vec<(usize, u64)> = entries
        .iter()
        .map(|e| {
            let s = e.stream as usize;
            let line = next[s];
            if e.full {
                next[s] += 1;
            }
            (s, line)
        })
        .collect();
    let mut kept_lines = std::collections::HashSet::new();
    let mut keep = vec![false; entries.len()];
    for (i, line) in lines.iter().enumerate().rev() {
        if kept_lines.contains(line) {
            keep[i] = true;
        } else if kept_lines.len() < tail {
            kept_lines.insert(*line);
            keep[i] = true;
        }
    }
    entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_nanoseconds() {
        let t = at(1_795_795_385, 123_456_789);
        assert_eq!(format_timestamp(t), "2026-11-27T16:03:05.123456789Z");
        assert_eq!(parse_timestamp("2026-11-27T16:03:05.123456789Z"), Some(t));
        assert_eq!(
            format_timestamp(UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59.5Z"),
            Some(at(1_709_251_199, 500_000_000))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T01:59:59+02:00"),
            Some(at(1_709_251_199, 0))
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        // Round trips over a wide range of days.
        for days in (0..100_000u64).step_by(997) {
            let t = at(days * 86_400 + 3_723, 42);
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
    }

    #[test]
    fn records_are_cri_lines() {
        let t = at(1_795_795_385, 5);
        let line = encode(t, LogStream::Stderr, false, b"a b  c");
        assert_eq!(
            line,
            b"2026-11-27T16:03:05.000000005Z stderr P a b  c\n".to_vec()
        );
        let entry = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            entry,
            Entry {
                timestamp: t,
                stream: LogStream::Stderr,
                full: false,
                data: b"a b  c".to_vec()
            }
        );
        let empty = parse_line(b"2026-11-27T16:03:05Z stdout F ").unwrap();
        assert!(empty.full && empty.data.is_empty());
        assert_eq!(empty.into_record().data, b"\n");
        assert!(parse_line(b"2026-11-27T16:03:05Z stdin F x").is_none());
        assert!(parse_line(b"garbage").is_none());
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_bounded_files() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = LogRotation {
            max_bytes: 200,
            max_files: 3,
        };
        let mut writer = LogWriter::open(dir.path(), rotation).unwrap();
        for i in 0..100 {
            writer
                .write(LogStream::Stdout, true, format!("line {i:03}").as_bytes())
                .unwrap();
        }
        let path = dir.path().join(OUTPUT);
        assert!(!rotated(&path, 3).exists(), "at most 3 files");
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let len = fs::metadata(&p).unwrap().len();
            assert!(len > 0 && len <= 200, "{}: {len}", p.display());
        }
        let (entries, _) = read_history(dir.path()).unwrap();
        let text: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8(e.data.clone()).unwrap())
            .collect();
        assert_eq!(text.last().unwrap(), "line 099");
        // Consecutive: nothing lost or repeated within what is kept.
        let first: usize = text[0][5..].parse().unwrap();
        let expected: Vec<String> = (first..100).map(|i| format!("line {i:03}")).collect();
        assert_eq!(text, expected);
        assert!(first > 0, "the oldest lines were rotated away");
        assert!(entries.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

        // One file only: the current one is replaced.
        let single = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(
            single.path(),
            LogRotation {
                max_bytes: 100,
                max_files: 1,
            },
        )
        .unwrap();
        for i in 0..20 {
            writer
                .write(LogStream::Stdout, true, format!("{i}").as_bytes())
                .unwrap();
        }
        assert_eq!(fs::read_dir(single.path()).unwrap().count(), 1);
        assert!(fs::metadata(single.path().join(OUTPUT)).unwrap().len() <= 100);
    }

    #[test]
    fn a_follower_reads_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = LogRotation {
            max_bytes: 130,
            max_files: 2,
        };
        let mut writer = LogWriter::open(dir.path(), rotation).unwrap();
        writer.write(LogStream::Stdout, true, b"one").unwrap();
        let (history, mut follower) = read_history(dir.path()).unwrap();
        assert_eq!(history.len(), 1);
        let mut seen = Vec::new();
        for word in ["two", "three", "four", "five"] {
            writer
                .write(LogStream::Stdout, true, word.as_bytes())
                .unwrap();
            seen.extend(follower.poll().unwrap().into_iter().map(|e| e.data));
        }
        assert!(rotated(&dir.path().join(OUTPUT), 1).exists(), "it rotated");
        assert_eq!(
            seen,
            vec![
                b"two".to_vec(),
                b"three".to_vec(),
                b"four".to_vec(),
                b"five".to_vec()
            ]
        );
        assert!(follower.poll().unwrap().is_empty());
    }

    fn entry(stream: LogStream, full: bool, data: &str, secs: u64) -> Entry {
        Entry {
            timestamp: at(secs, 0),
            stream,
            full,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn tail_counts_lines_and_keeps_their_parts_together() {
        use LogStream::{Stderr, Stdout};
        let entries = vec![
            entry(Stdout, true, "a", 1),
            entry(Stdout, false, "b1", 2),
            entry(Stderr, true, "e", 3),
            entry(Stdout, true, "b2", 4),
            entry(Stdout, false, "c", 5),
        ];
        let data = |options: &LogsOptions| -> Vec<String> {
            select(entries.clone(), options)
                .into_iter()
                .map(|e| String::from_utf8(e.data).unwrap())
                .collect()
        };
        let tail = |n| LogsOptions {
            tail: Some(n),
            ..Default::default()
        };
        assert_eq!(data(&tail(0)), Vec::<String>::new());
        assert_eq!(data(&tail(1)), vec!["c"]);
        assert_eq!(data(&tail(2)), vec!["b1", "b2", "c"]);
        assert_eq!(data(&tail(3)), vec!["b1", "e", "b2", "c"]);
        assert_eq!(data(&tail(9)).len(), 5);
        let stdout_only = LogsOptions {
            stderr: false,
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(data(&stdout_only), vec!["b1", "b2", "c"]);
        let since = LogsOptions {
            since: Some(at(3, 0)),
            ..Default::default()
        };
        assert_eq!(data(&since), vec!["e", "b2", "c"]);
    }
}
