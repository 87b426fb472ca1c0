//! The `shoal` binary run as users run it, against a node's control socket.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// What one run of `shoal` printed, and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Exit status 1 with `Error: ...` on stderr; returns the message.
    pub fn failed(self) -> String {
        assert_eq!(
            self.code,
            Some(1),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.starts_with("Error: "), "{}", self.stderr);
        self.stderr
    }
}

pub fn finished(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `shoal -s SOCKET args...`, with SHOAL_SOCKET unset.
pub fn shoal(socket: &Path, args: &[&str]) -> Run {
    finished(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("-s")
            .arg(socket)
            .args(args)
            .env_remove("SHOAL_SOCKET")
            .output()
            .expect("run shoal"),
    )
}

/// `shoal -s SOCKET args...` with `input` on its standard input, SHOAL_SOCKET unset.
pub fn shoal_with_input(socket: &Path, args: &[&str], input: impl AsRef<[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .env_remove("SHOAL_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_ref())
        .unwrap();
    finished(child.wait_with_output().unwrap())
}
