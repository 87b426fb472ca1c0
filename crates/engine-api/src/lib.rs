//! The Docker Engine API, swarm-mode subset, so that the `docker` CLI and docker-py drive Shoal
//! unchanged (`DOCKER_HOST=unix://<state-dir>/docker.sock docker service create …`).
//!
//! # Shape
//!
//! The Engine API is a *client of the Control API*, like the `shoal` command line: a request
//! is decoded, turned into Control API calls on the node's own control socket
//! ([`backend::Backend`]), and the answer rendered as the JSON moby would send. It holds no
//! state of its own, so whatever the Control API guarantees (validation, optimistic
//! concurrency, forwarding to the leader, durability) holds here too, and a manager answers
//! the same way through either front.
//!
//! - [`server`]: the HTTP/1.1 shell on a unix socket; version prefixes (`/v1.24` … `/v1.50`,
//!   or none), the headers moby sets on every response.
//! - [`routes`]: method and path → handler; one file per endpoint, grouped by object kind
//!   (`swarm/`, `node/`, `service/`, `task/`, `secret/`, `config/`, `network/`, `system/`).
//!   Each handler parses, calls, renders.
//! - [`lenient`]: request bodies decoded with Go's leniency (case-insensitive keys, `null`
//!   as absent, unknown fields ignored); [`query`]: Go booleans and both `filters` encodings.
//! - [`error`]: `{"message": …}` errors and the one mapping from gRPC statuses to moby's
//!   status codes and texts.
//!
//! # Invariants
//!
//! - A refused request changes nothing: handlers validate and resolve before they write, and
//!   each write is one Control API call.
//! - Shapes round-trip: what a client sent is what it reads back (Go `omitempty` rules,
//!   explicitly set zero pointers kept), so clients that compare specs for equality work.
//! - Secret data is never returned and never logged.
//!
//! # Where it departs from moby
//!
//! Only the swarm-mode endpoints are served (plus `/_ping`, `/version`, `/info`); containers,
//! images and volumes belong to the node's Docker Engine, and a request for them is answered
//! 404 naming what Shoal serves. The `Server` header says Shoal, while `Api-Version` is 1.50,
//! the version docker 28.2 speaks.

pub mod backend;
pub mod error;
pub mod lenient;
pub mod query;
pub mod request;
pub mod routes;
pub mod server;
pub mod shapes;

pub mod config;
pub mod network;
pub mod node;
pub mod secret;
pub mod service;
pub mod swarm;
pub mod system;
pub mod task;

pub use backend::Backend;
pub use error::EngineError;
pub use server::serve;

/// Binds the Engine API socket at `path` (replacing a stale one), readable and writable by its
/// owner only (0600), as the Docker Engine's socket is.
pub fn bind(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
