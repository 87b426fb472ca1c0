//! A Shoal node: its state directory, its identity and certificates, and the daemon that
//! runs it.
//!
//! A node is inactive (it belongs to no cluster and waits for `swarm init` or `swarm join` on
//! its control socket), a manager (it keeps the cluster store replicated with Raft and serves
//! Raft, membership, the CA, the dispatcher and the Control API over mutual TLS), or a worker
//! (it holds its certificate, keeps a session with the managers and runs the tasks they assign
//! it, through its executor). Every active node renews its certificate (`renewal`) and keeps a session
//! with the leader's dispatcher (`agent`); the supervisor (`supervisor`) starts the node
//! again in its new role when promotion or demotion changes it, and inactive after it leaves.
//!
//! Start-up, in order: take the state directory's lock (two daemons never share one); read
//! `node.json` (who this node is) and its certificates (what it may do) — a certificate that
//! expired while the node was off is dealt with first (`expiry`: join again with a token,
//! renew it from the store under `--force-new-cluster`, or refuse to start); for a manager, open
//! the Raft log and resume the cluster, start a new one (`--init`), join one, or rewrite the
//! log into a one-member cluster keeping all data (`--force-new-cluster`). The Raft thread
//! starts, then the servers. SIGTERM or SIGINT stop the servers, then the Raft thread,
//! cleanly.

pub mod agent;
pub mod backup;
pub mod certificates;
mod daemon;
mod error;
mod expiry;
pub mod keys;
mod local;
pub mod logs;
pub mod renewal;
mod state_dir;
pub mod supervisor;
pub mod worker;

pub use daemon::{Daemon, DaemonConfig, ExecutorKind, Outcome, RunningDaemon};
pub use error::NodeError;
/// Crash points of the Raft log, armed by `FAILPOINTS` (only with the `failpoints` feature).
pub use shoal_raft::failpoints;
pub use state_dir::{NodeIdentity, StateDir, default_state_dir};
