//! Shoal's managers replicate the object store with Raft.
//!
//! (The module essay grows with the crate; see `node.rs` for the state machine.)

mod error;
mod logger;
pub mod node;
pub mod storage;

pub use error::{RaftError, Result};
pub use node::{NodeConfig, Output, ProposalError, ProposalId, RaftNode, ReadId};
pub use storage::{LogDurability, LogStore, MemoryLog, PersistedLog, RedbLog};

#[cfg(test)]
mod tests;
