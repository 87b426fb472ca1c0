//! Shoal's manager: the components every manager runs on top of the replicated store.
//!
//! The Control API (`controlapi`), the CA server (`ca_server`), the dispatcher's sessions,
//! heartbeats, assignments and task statuses (`dispatcher`), the log broker (`logbroker`),
//! the leader's orchestrator (`orchestrator`) with its scheduler (`scheduler`), and the
//! authorizer every network call goes through (`authorize`). Control API writes go to the leader
//! (a follower answers FailedPrecondition naming the leader, with its address in the
//! `shoal-leader-addr` metadata, so clients follow it in one hop); reads are served by any
//! manager after a ReadIndex barrier, so they are linearizable everywhere.

pub mod allocator;
pub mod authorize;
pub mod ca_server;
pub mod cluster;
pub mod controlapi;
pub mod dispatcher;
pub mod logbroker;
pub mod orchestrator;
pub mod scheduler;
mod status;

pub use status::store_status;
