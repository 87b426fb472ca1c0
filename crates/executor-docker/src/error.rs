//! Engine errors, classified.
//!
//! The executor's error type ([`ExecutorError`]) is shared by all executors and has no variant
//! for "the remote engine said no", so an engine error becomes the variant whose class is
//! right:
//!
//! - the engine cannot be reached (connection refused, socket missing, broken stream), a
//!   request timed out, or the engine failed (HTTP 5xx other than the cases below), or it
//!   is busy with the same object (HTTP 409 "removal in progress"): [`ExecutorError::Io`]
//!   whose `io::Error` kind is `TimedOut` or `WouldBlock` — *temporary*, retried by the task
//!   state machine;
//! - the object is missing (HTTP 404: no such container, no such image): [`ExecutorError::NotFound`]
//!   — fatal;
//! - the engine refused what we asked (HTTP 400, a bad spec: unknown signal, bad mount,
//!   bad user...): [`ExecutorError::InvalidSpec`] — fatal;
//! - anything else (other 4xx, a reply we cannot decode): [`ExecutorError::Io`] of kind
//!   `Other` — fatal.
//!
//! The message always names what we were doing (`context`) and carries the engine's own
//! words.

use std::io;

use bollard::errors::Error as EngineError;
use shoal_executor::ExecutorError;

/// HTTP status of an engine reply, if the error is one.
pub fn status(error: &EngineError) -> Option<u16> {
    match error {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the engine said "not found" (HTTP 404).
pub fn is_not_found(error: &EngineError) -> bool {
    status(error) == Some(404)
}

/// Whether the engine said "conflict" (HTTP 409: name in use, container not running...).
pub fn is_conflict(error: &EngineError) -> bool {
    status(error) == Some(409)
}

/// The engine's message without bollard's "Docker responded with status code" preamble.
pub fn message(error: &EngineError) -> String {
    match error {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Classifies an engine error met while doing `context` (e.g. `starting container "x"`).
pub fn classify(context: impl Into<String>, error: EngineError) -> ExecutorError {
    let context = context.into();
    let text = message(&error);
    match &error {
        EngineError::DockerResponseServerError { status_code, .. } => match *status_code {
            404 => ExecutorError::NotFound(format!("{context}: {text}")),
            400 => ExecutorError::InvalidSpec(format!("{context}: {text}")),
            409 if text.contains("in progress") => {
                temporary(context, io::ErrorKind::WouldBlock, text)
            }
            code if code >= 500 => temporary(context, io::ErrorKind::WouldBlock, text),
            _ => fatal(context, text),
        },
        EngineError::RequestTimeoutError => temporary(context, io::ErrorKind::TimedOut, text),
        EngineError::HyperResponseError { .. }
        | EngineError::HyperLegacyError { .. }
        | EngineError::IOError { .. }
        | EngineError::SocketNotFoundError(_) => {
            temporary(context, io::ErrorKind::WouldBlock, text)
        }
        _ => fatal(context, text),
    }
}

/// A temporary error: retrying may help.
pub fn temporary(context: impl Into<String>, kind: io::ErrorKind, text: String) -> ExecutorError {
    debug_assert!(matches!(
        kind,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ));
    ExecutorError::Io {
        context: context.into(),
        source: io::Error::new(kind, text),
    }
}

/// A fatal error that fits no more precise variant.
pub fn fatal(context: impl Into<String>, text: String) -> ExecutorError {
    ExecutorError::Io {
        context: context.into(),
        source: io::Error::other(text),
    }
}

#[cfg(test)]
mod tests {
    use shoal_executor::ErrorClass;

    use super::*;

    fn reply(status_code: u16, message: &str) -> EngineError {
        EngineError::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn engine_errors_classify_by_status_and_kind() {
        let not_found = classify(
            "inspecting container \"x\"",
            reply(404, "No such container: x"),
        );
        assert!(matches!(not_found, ExecutorError::NotFound(_)));
        assert_eq!(
            not_found.to_string(),
            "process not found: inspecting container \"x\": No such container: x (HTTP 404)"
        );
        assert!(matches!(
            classify("creating", reply(400, "invalid signal")),
            ExecutorError::InvalidSpec(_)
        ));
        assert_eq!(
            classify("starting", reply(500, "driver failed")).class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            classify("starting", reply(503, "busy")).class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            classify(
                "removing",
                reply(409, "removal of container x is already in progress")
            )
            .class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            classify("creating", reply(409, "name in use")).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            classify("x", EngineError::RequestTimeoutError).class(),
            ErrorClass::Temporary
        );
        let refused = EngineError::IOError {
            err: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(classify("x", refused).class(), ErrorClass::Temporary);
        assert_eq!(
            classify("x", EngineError::SocketNotFoundError("/nope".into())).class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            classify("x", reply(403, "forbidden")).class(),
            ErrorClass::Fatal
        );
    }
}
