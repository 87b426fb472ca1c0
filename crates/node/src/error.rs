//! Errors that stop a node from starting, each saying what to do.

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    StateDir(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },

    #[error("{0}")]
    Config(String),

    #[error("joining the cluster failed: {0}")]
    Join(String),

    #[error(transparent)]
    Raft(#[from] shoal_raft::RaftError),

    #[error("serving the remote API failed: {0}")]
    Serve(String),

    /// A manager answered, and said no: retrying the same request will not help.
    #[error("refused: {0}")]
    Refused(String),

    /// The node's keys are sealed with the cluster's unlock key (autolock) and none was given.
    #[error(
        "this manager is locked: its keys are sealed with the cluster's unlock key; run \
         `shoal swarm unlock` and give the key (`shoal swarm unlock-key` on an unlocked manager \
         shows it)"
    )]
    Locked,

    /// The unlock key given does not open the node's keys.
    #[error(
        "invalid unlock key: it does not open this manager's keys. Use the key shown by \
         `shoal swarm unlock-key` on an unlocked manager; if the key was rotated while this \
         manager was down, its keys are still sealed with the key from before the rotation"
    )]
    InvalidUnlockKey,

    /// No manager could be reached.
    #[error("no manager could be reached: {0}")]
    Unreachable(String),
}

impl NodeError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NodeError::Io {
            what: what.into(),
            source,
        }
    }
}
