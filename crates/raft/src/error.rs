//! Errors of the Raft layer, each saying what failed and what to do.

use shoal_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("raft log storage failed: {0}")]
    Storage(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },

    #[error("raft log is corrupt: {0}")]
    Corrupt(String),

    #[error("raft: {0}")]
    Raft(#[from] raft::Error),

    /// No leader is known, or this node lost its leadership: the write was not committed.
    #[error("{0}")]
    NoLeader(String),

    /// The request reached a node that is not the leader.
    #[error("this manager is not the leader{}", .leader.map(|l| format!(" (the leader is raft member {l:x})")).unwrap_or_default())]
    NotLeader { leader: Option<u64> },

    /// Leadership was lost after the write entered the log: it may still be committed.
    #[error(
        "the write's outcome is unknown: leadership changed before it was committed; read \
         the object again to see whether it was applied"
    )]
    Unknown,

    #[error("a membership change is refused: {0}")]
    Membership(String),

    #[error("the raft node has stopped")]
    Stopped,
}

impl RaftError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        RaftError::Storage(e.to_string())
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RaftError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<RaftError> for StoreError {
    fn from(e: RaftError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub type Result<T, E = RaftError> = std::result::Result<T, E>;
