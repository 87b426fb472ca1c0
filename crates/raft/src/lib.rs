//! Shoal's managers replicate the object store with Raft.
//!
//! (The module essay grows with the crate; see `node.rs` for the state machine.)

pub mod driver;
pub mod encryption;
mod error;
pub mod failpoints;
mod logger;
pub mod node;
pub mod service;
pub mod storage;
pub mod transport;

pub use driver::{DriverConfig, RaftDriver, RaftHandle, RaftProposer, RaftStatus, Transport};
pub use encryption::{DataKey, DataKeys, EncryptionError};
pub use error::{RaftError, Result};
pub use node::{NodeConfig, Output, ProposalError, ProposalId, RaftNode, ReadId};
pub use service::RaftService;
pub use storage::{LogDurability, LogStore, MemoryLog, PersistedLog, RedbLog};
pub use transport::GrpcTransport;

#[cfg(test)]
mod tests;
