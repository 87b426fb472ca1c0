//! A Shoal node: its state directory, its identity, and the daemon that runs it.
//!
//! Today a node is a manager: it keeps the cluster store replicated with Raft and serves the
//! Raft transport, membership and the Control API on its remote address. (Agents, the CA,
//! the local control socket and the Engine API socket come with their own parts.)
//!
//! Start-up, in order: take the state directory's lock (two daemons never share one); read
//! `node.json` (who this node is); open the Raft log; then either resume the cluster the
//! node belongs to, start a new one (`--init`), join one (`--join-addr`), or rewrite the log
//! into a one-member cluster keeping all data (`--force-new-cluster`). The Raft thread starts,
//! then the gRPC server. SIGTERM or SIGINT stop the server, then the Raft thread, cleanly.

pub mod agent;
pub mod certificates;
mod daemon;
mod error;
mod local;
pub mod renewal;
mod state_dir;
pub mod supervisor;

pub use daemon::{Daemon, DaemonConfig, Outcome, RunningDaemon};
pub use error::NodeError;
pub use state_dir::{NodeIdentity, StateDir, default_state_dir};
