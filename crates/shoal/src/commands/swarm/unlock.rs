//! `shoal swarm unlock`: gives a locked manager (autolock) the cluster's unlock key. The key
//! is read from standard input — typed at a prompt, without echo, on a terminal; piped
//! otherwise — never from the command line, where other users could read it in the process
//! list. A wrong key is refused and the manager stays locked.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use shoal_api::v1::UnlockSwarmRequest;

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal swarm unlock`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(socket: Option<PathBuf>, _args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        match c.info().await {
            Some(info) if info.locked => {}
            Some(_) => {
                return Err("this node is not locked: there is nothing to unlock".to_string());
            }
            None => {
                return Err(
                    "this node's daemon does not answer as a locked manager would; check that \
                     it runs (`shoal daemon`) and that -s/--socket names its control socket"
                        .to_string(),
                );
            }
        }
        let key = read_key()?;
        c.swarm()
            .unlock(UnlockSwarmRequest { unlock_key: key })
            .await
            .map_err(|s| c.error("Swarm.Unlock", &s))?;
        Ok(())
    })?;
    output::print("The manager is unlocked.\n")
}

/// The key, from a prompt on a terminal (echo off) or a line of piped input.
fn read_key() -> Result<String, String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("Enter unlock key: ");
        let _ = std::io::stderr().flush();
    }
    let echo = terminal.then(EchoOff::new).flatten();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    if terminal {
        eprintln!();
    }
    read.map_err(|e| format!("reading the unlock key from standard input: {e}"))?;
    let key = line.trim().to_string();
    if key.is_empty() {
        return Err(
            "no unlock key given: type it at the prompt, or pipe it in (`shoal swarm unlock < \
             key-file`)"
                .to_string(),
        );
    }
    Ok(key)
}

/// Turns the terminal's echo off while it lives.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<Self> {
        // SAFETY: tcgetattr/tcsetattr on standard input with a termios we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return None;
            }
            Some(Self { saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
