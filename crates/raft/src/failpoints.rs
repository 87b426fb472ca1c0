//! Crash points: named places in the log, apply and snapshot paths where a test can make a
//! manager die, to check that a crash at that instant loses no acknowledged write.
//!
//! They exist only with the crate's `failpoints` feature (the `fail` crate, with its own
//! `failpoints` feature); without it [`crash_point!`] expands to nothing and [`setup`] does
//! nothing, so a normal build carries no trace of them. `shoal daemon` built with the feature
//! (`cargo build -p shoal --features failpoints`) arms them from the `FAILPOINTS` environment
//! variable at start, in the `fail` crate's syntax: `FAILPOINTS='raft-apply-after=return'`
//! crashes on the first hit, `'raft-log-fsync-after=5*off->return'` on the sixth; several
//! points are separated by `;`. The other `fail` actions (`panic`, `sleep(ms)`, `print`,
//! `pause`) work too, but only `return` is a crash.
//!
//! **`return` means abort**: the point calls [`crash`], which calls `std::process::abort()`.
//! Nothing runs after it — no destructor (redb's `Database` drop, the snapshot thread's join,
//! tokio's shutdown), no flush, no reply to a caller — and the process ends by a signal
//! (SIGABRT), as with `kill -9`: what the kernel already has (written, even if not yet
//! fsynced) stays, what the process still held in memory is lost. A panic would unwind the one
//! thread and leave the rest of the daemon serving; `process::exit` would run exit handlers.
//! (A power cut also loses what was written but not fsynced; that case is the torn-tail test
//! in `crates/shoal/tests/crash_points.rs`, which damages the end of the log file.)
//!
//! The points, in the order a write meets them:
//!
//! | name | where |
//! | --- | --- |
//! | `raft-log-append-before` | a durable log write (entries and/or hard state) is about to start: nothing of it is written |
//! | `raft-log-fsync-before` | the entries and hard state are written into redb's write transaction, not committed (no fsync yet) |
//! | `raft-log-fsync-after` | the transaction is committed and fsynced; the in-memory log does not show it yet, no acknowledgement has left |
//! | `raft-log-append-after` | the write is durable and visible to raft-rs; the messages that acknowledge it (votes, append responses) have not left |
//! | `raft-apply-before` | committed entries are about to be applied to the store; their proposers are not answered |
//! | `raft-apply-after` | the entries are applied to the store in memory; their proposers are not answered yet |
//! | `raft-snapshot-save-before` | a snapshot (taken here, or received and being installed) is about to be written to `snapshot.bin.tmp` |
//! | `raft-snapshot-save-after` | the snapshot file is written, fsynced and renamed into place; the log still holds every entry it covers |
//! | `raft-compact-before` | the deletion of the entries the snapshot covers is written into a redb transaction, not committed |
//! | `raft-compact-after` | the compaction is committed |
//! | `raft-snapshot-install-before` | a snapshot received from the leader is restored into the store in memory; nothing of it is on disk |
//! | `raft-snapshot-install-saved` | the received snapshot's file is written, fsynced and renamed into place; the old log, hard state and configuration are still in the log's database |
//! | `raft-snapshot-install-after` | the received snapshot, the emptied log, the hard state and the configuration are all durable |
//!
//! The snapshot-save and compaction points fire for snapshots this manager took (on the
//! snapshot thread); the install points for snapshots it received.

/// Marks a crash point named `$name` (see the module documentation for the names).
#[cfg(feature = "failpoints")]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::failpoints::crash($name))
    };
}

/// Marks a crash point named `$name`: nothing without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
macro_rules! crash_point {
    ($name:literal) => {};
}

pub(crate) use crash_point;

/// Ends the process at once, as `kill -9` would (see the module documentation).
#[cfg(feature = "failpoints")]
pub fn crash(name: &str) -> ! {
    // stderr is unbuffered: the line is out before the abort.
    eprintln!("failpoint {name}: crashing the process (abort)");
    std::process::abort()
}

/// The crash points armed for this process; dropping it disarms them.
pub struct Armed {
    #[cfg(feature = "failpoints")]
    _scenario: fail::FailScenario<'static>,
}

/// Arms the crash points named in the `FAILPOINTS` environment variable (with the
/// `failpoints` feature; otherwise does nothing). Call once, at start, and keep the result
/// for the life of the process.
///
/// # Panics
///
/// With the feature, if `FAILPOINTS` is malformed (the `fail` crate's own check).
pub fn setup() -> Armed {
    #[cfg(feature = "failpoints")]
    {
        if let Ok(points) = std::env::var("FAILPOINTS")
            && !points.is_empty()
        {
            tracing::warn!("crash points armed (FAILPOINTS): {points}");
        }
        Armed {
            _scenario: fail::FailScenario::setup(),
        }
    }
    #[cfg(not(feature = "failpoints"))]
    Armed {}
}
