//! The executor's error: a small enum that knows whether it is worth retrying.
//!
//! Every error is either *temporary* (the same operation may succeed if tried again: the
//! machine is short of processes, memory or file descriptors, an I/O hiccup) or *fatal* (the
//! spec is wrong, the program does not exist, the process to adopt is gone). The task state
//! machine ([`crate::state`]) retries temporary errors a bounded number of times and ends the
//! task on fatal ones: REJECTED before STARTING, FAILED from STARTING on.
//!
//! SwarmKit marks temporary errors by wrapping them (`exec.MakeTemporary`); here the variant
//! decides, so a caller cannot forget to classify.

use std::io;

/// Whether an error is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The same operation may succeed later.
    Temporary,
    /// Retrying will not help; the task ends.
    Fatal,
}

/// What went wrong in an executor or one of its controllers.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The task's spec cannot be run as written (no command, bad signal, unknown user...).
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// The task asks for a runtime this executor does not run.
    #[error("unsupported runtime: {0}")]
    Unsupported(String),
    /// The program could not be started.
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A file or system call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The process to adopt or act on is not there (gone, or its PID was reused).
    #[error("process not found: {0}")]
    NotFound(String),
    /// The operation does not fit the controller's state (waiting on a task never started).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A part of the executor that is not written yet.
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

impl ExecutorError {
    /// Whether retrying may help.
    pub fn class(&self) -> ErrorClass {
        match self {
            ExecutorError::Spawn { source, .. } | ExecutorError::Io { source, .. } => {
                if is_temporary_io(source) {
                    ErrorClass::Temporary
                } else {
                    ErrorClass::Fatal
                }
            }
            ExecutorError::InvalidSpec(_)
            | ExecutorError::Unsupported(_)
            | ExecutorError::NotFound(_)
            | ExecutorError::InvalidState(_)
            | ExecutorError::NotImplemented(_) => ErrorClass::Fatal,
        }
    }

    /// Shorthand for `class() == Temporary`.
    pub fn is_temporary(&self) -> bool {
        self.class() == ErrorClass::Temporary
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ExecutorError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Resource shortages and interruptions are temporary; everything else (missing program,
/// permission denied, bad argument) is not.
fn is_temporary_io(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EINTR | libc::EBUSY)
    ) || matches!(
        error.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Results of executor operations.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_classify_themselves() {
        let spawn = |errno| ExecutorError::Spawn {
            command: "x".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert_eq!(spawn(libc::EAGAIN).class(), ErrorClass::Temporary);
        assert_eq!(spawn(libc::ENOENT).class(), ErrorClass::Fatal);
        assert!(ExecutorError::io("x", io::Error::from_raw_os_error(libc::EMFILE)).is_temporary());
        assert!(!ExecutorError::InvalidSpec("x".into()).is_temporary());
        assert!(!ExecutorError::NotImplemented("x").is_temporary());
    }
}
