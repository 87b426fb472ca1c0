//! The store's errors. Each says what was wrong and what to do, and classifies itself so the
//! API layers map it to a gRPC status or an HTTP code in one place.

/// How an error should be reported to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The named object does not exist.
    NotFound,
    /// The request is malformed or ambiguous.
    InvalidArgument,
    /// An object with that name or ID already exists.
    AlreadyExists,
    /// The object changed since it was read; read again and retry.
    Conflict,
    /// The write could not be committed (no leader, shutting down); retry later.
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {what} not found")]
    NotFound { kind: &'static str, what: String },

    #[error("{kind} {what} is ambiguous ({matches} matches found); use more of the ID")]
    Ambiguous {
        kind: &'static str,
        what: String,
        matches: usize,
    },

    #[error("{kind} {name} already exists; choose another name")]
    NameConflict { kind: &'static str, name: String },

    #[error("{kind} with ID {id} already exists")]
    IdConflict { kind: &'static str, id: String },

    #[error(
        "update out of sequence: {kind} {id} has changed since it was read (version {read} was \
         read, it is now at {current}); read it again and retry"
    )]
    SequenceConflict {
        kind: &'static str,
        id: String,
        read: u64,
        current: u64,
    },

    #[error("invalid transaction: {0}")]
    InvalidTransaction(String),

    #[error(
        "transaction too large: {bytes} bytes, the limit is {limit} bytes; split it into \
         smaller transactions (a batch does this)"
    )]
    TooLarge { bytes: usize, limit: usize },

    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::NotFound { .. } => ErrorClass::NotFound,
            StoreError::Ambiguous { .. }
            | StoreError::InvalidTransaction(_)
            | StoreError::TooLarge { .. } => ErrorClass::InvalidArgument,
            StoreError::NameConflict { .. } | StoreError::IdConflict { .. } => {
                ErrorClass::AlreadyExists
            }
            StoreError::SequenceConflict { .. } => ErrorClass::Conflict,
            StoreError::Unavailable(_) => ErrorClass::Unavailable,
        }
    }

    /// Whether the same transaction could succeed if built again from fresh reads.
    pub fn is_conflict(&self) -> bool {
        self.class() == ErrorClass::Conflict
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
