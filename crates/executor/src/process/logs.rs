//! Per-task log files with size-bounded rotation.
//!
//! A process task writes its stdout and stderr straight into `<dir>/<task>/stdout.log` and
//! `stderr.log`, opened in append mode: no pipe and no reader in the daemon, so the process
//! keeps running (and logging) while the daemon restarts. Rotation is therefore
//! *copy-truncate* (as logrotate's `copytruncate`): when a file has reached `max_bytes`,
//! `.1` becomes `.2` and so on, the current content is copied to `.1`, and the file is
//! truncated; the process's append-mode descriptor then writes at the new end.
//!
//! Bounds and their price:
//! - At most `max_files` files per stream (the current one plus `max_files - 1` rotated),
//!   each rotated file at most `max_bytes`: when the current file has grown past the limit
//!   between two checks, only its last `max_bytes` (from a line start where there is one)
//!   are kept in `.1` — older output would have been rotated away anyway.
//! - The current file may exceed `max_bytes` between checks (the controller checks every
//!   `check_interval` while it watches the task, and once more when the program ends).
//! - Output written between the copy and the truncation is lost, and nothing rotates while
//!   no controller watches (the daemon is down). The supervisor shim the design calls for
//!   (`DESIGN.md`, "Tasks outlive the daemon") would own the pipe and remove both limits;
//!   it is not written yet.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How log files are bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotation {
    /// Size at which a file is rotated (default 10 MiB).
    pub max_bytes: u64,
    /// Files kept per stream, the current one included (default 3).
    pub max_files: u32,
    /// How often a watched task's files are checked (default 1 s).
    pub check_interval: Duration,
}

impl Default for LogRotation {
    fn default() -> Self {
        Self {
            max_bytes: 10 << 20,
            max_files: 3,
            check_interval: Duration::from_secs(1),
        }
    }
}

/// `path.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens `path` for the process to append to, creating it (0640).
pub fn open_for_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Rotates `path` if it has reached `rotation.max_bytes`. Returns whether it did.
pub fn rotate_if_needed(path: &Path, rotation: &LogRotation) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len < rotation.max_bytes.max(1) {
        return Ok(false);
    }
    if rotation.max_files > 1 {
        for n in (1..rotation.max_files - 1).rev() {
            match fs::rename(rotated(path, n), rotated(path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        copy_tail(path, &rotated(path, 1), rotation.max_bytes)?;
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Copies the last `max_bytes` of `from` (starting after a newline when the cut falls inside
/// a line that has one) into a new `to`.
fn copy_tail(from: &Path, to: &Path, max_bytes: u64) -> io::Result<()> {
    let mut source = File::open(from)?;
    let len = source.metadata()?.len();
    let mut start = len.saturating_sub(max_bytes);
    if start > 0 {
        source.seek(SeekFrom::Start(start - 1))?;
        let mut window = Vec::new();
        (&mut source)
            .take(max_bytes.min(4096) + 1)
            .read_to_end(&mut window)?;
        if let Some(newline) = window.iter().position(|b| *b == b'\n') {
            start += newline as u64;
        }
    }
    source.seek(SeekFrom::Start(start))?;
    let mut target = File::create(to)?;
    io::copy(&mut source.take(max_bytes), &mut target)?;
    target.flush()
}

/// The kept output of one stream, oldest first, the last `tail` lines only if given.
pub fn read(path: &Path, max_files: u32, tail: Option<usize>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for n in (1..max_files.max(1)).rev() {
        match fs::read(rotated(path, n)) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match fs::read(path) {
        Ok(bytes) => out.extend_from_slice(&bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(lines) = tail {
        let body = out.strip_suffix(b"\n").unwrap_or(&out);
        let cut = body
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .nth(lines.saturating_sub(1))
            .map(|(i, _)| i + 1);
        if lines == 0 {
            out.clear();
        } else if let Some(cut) = cut {
            out.drain(..cut);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_a_bounded_number_of_bounded_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let rotation = LogRotation {
            max_bytes: 100,
            max_files: 3,
            check_interval: Duration::from_millis(10),
        };
        let mut file = open_for_append(&path).unwrap();
        for i in 0..50 {
            writeln!(file, "line {i:03} ........").unwrap();
            rotate_if_needed(&path, &rotation).unwrap();
        }
        // A burst far over the limit: only its tail is kept.
        for i in 50..200 {
            writeln!(file, "line {i:03} ........").unwrap();
        }
        assert!(rotate_if_needed(&path, &rotation).unwrap());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(fs::metadata(&p).unwrap().len() <= 100, "{p:?}");
        }
        let kept = String::from_utf8(read(&path, 3, None).unwrap()).unwrap();
        assert!(kept.ends_with("line 199 ........\n"), "{kept}");
        assert!(kept.starts_with("line "), "cut at a line start: {kept}");
        assert!(!kept.contains("line 000"));
        // The process's descriptor keeps appending after the truncation.
        writeln!(file, "after").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "after\n");
        let tail = read(&path, 3, Some(2)).unwrap();
        assert_eq!(
            String::from_utf8(tail).unwrap(),
            "line 199 ........\nafter\n"
        );
    }
}
