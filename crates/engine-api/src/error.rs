//! The Engine API's errors: a status code and a message, sent as `{"message": …}` with
//! `Content-Type: application/json` — the docker CLI compares that header byte for byte and
//! prints the raw body on any other value; docker-py maps 404 to `NotFound`.
//!
//! [`EngineError::from_status`] is the one place where a Control API status becomes an HTTP
//! one, with Docker's codes (moby's `errdefs`): invalid argument, failed precondition and out
//! of range → 400; not found → 404; already exists → 409; unimplemented → 501; unavailable →
//! 503; anything else → 500. Two Docker idioms are kept on purpose: a stale version answers
//! 500 `rpc error: code = Unknown desc = update out of sequence` (docker-py retries only when
//! the message ends that way), and the swarm-state refusals use moby's verbatim 503 texts.

use tonic::{Code, Status};

/// An Engine API error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    pub status: u16,
    pub message: String,
}

/// moby's text for a node that belongs to no swarm.
pub const NOT_IN_A_SWARM: &str = "This node is not part of a swarm";
/// moby's text for an init or join on a node already in a swarm.
pub const ALREADY_IN_A_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm \
                                      leave\" to leave this swarm and join another one.";
/// moby's text for a manager-only call on an inactive node.
pub const NOT_A_MANAGER_INACTIVE: &str = "This node is not a swarm manager. Use \"docker swarm \
                                          init\" or \"docker swarm join\" to connect this node \
                                          to swarm and try again.";
/// moby's text for a manager-only call on a worker.
pub const NOT_A_MANAGER_WORKER: &str = "This node is not a swarm manager. Worker nodes can't be \
                                        used to view or modify cluster state. Please run this \
                                        command on a manager node or promote the current node \
                                        to a manager.";
/// moby's text for a call on a locked manager (autolock).
pub const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
                          Please use \"docker swarm unlock\" to unlock it.";
/// moby's text for a stale version (docker-py retries on its ending).
pub const OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";

impl EngineError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404: what the request names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// 501: Shoal does not do this.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(501, message)
    }

    /// 503: the node's swarm state does not allow this.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    /// The Engine API twin of a Control API status.
    pub fn from_status(status: &Status) -> Self {
        let message = status.message();
        if message.starts_with("update out of sequence") {
            return Self::internal(OUT_OF_SEQUENCE);
        }
        let code = match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            _ => 500,
        };
        Self::new(code, message)
    }

    /// The JSON body: `{"message": …}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "message": self.message }))
            .unwrap_or_else(|_| b"{\"message\":\"internal error\"}".to_vec())
    }
}

impl From<Status> for EngineError {
    fn from(status: Status) -> Self {
        Self::from_status(&status)
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for EngineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_dockers_codes() {
        let cases = [
            (Status::invalid_argument("bad"), 400),
            (Status::failed_precondition("no"), 400),
            (Status::not_found("nope"), 404),
            (Status::already_exists("dup"), 409),
            (Status::unimplemented("later"), 501),
            (Status::unavailable("no quorum"), 503),
            (Status::internal("boom"), 500),
        ];
        for (status, code) in cases {
            let e = EngineError::from_status(&status);
            assert_eq!(e.status, code, "{status:?}");
            assert_eq!(e.message, status.message());
        }
    }

    #[test]
    fn a_stale_version_answers_as_docker_does() {
        let e = EngineError::from_status(&Status::failed_precondition(
            "update out of sequence: service x has changed since it was read",
        ));
        assert_eq!(e.status, 500);
        assert!(e.message.ends_with("update out of sequence"));
    }

    #[test]
    fn the_body_is_a_message_object() {
        let e = EngineError::not_found("service x not found");
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body, serde_json::json!({"message": "service x not found"}));
    }
}
