//! `HEAD/GET /_ping`: the first request of every docker CLI run.
//!
//! Answers 200 `OK` (`text/plain`; a HEAD gets the same headers and `Content-Length: 0`) with
//! the headers the CLI reads: `Api-Version`, `Ostype` and `Docker-Experimental` (set on every
//! response by the server) and `Swarm`, this node's state as moby spells it (`inactive`,
//! `active/manager`, `active/worker`, or `error` while the daemon is between phases). The
//! CLI uses `Swarm` only to hide commands in `--help`. Like moby, the answer must not be
//! cached.

use crate::backend::Backend;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, _request: Request) -> Result {
    let state = backend.local_state().await;
    Ok(Reply::Headers(
        headers(state.header()),
        Box::new(Reply::Text(200, "OK".to_string())),
    ))
}

/// The headers of a ping answer for a node whose `Swarm` header is `swarm`.
fn headers(swarm: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Swarm", swarm.to_string()),
        (
            "Cache-Control",
            "no-cache, no-store, must-revalidate".to_string(),
        ),
        ("Pragma", "no-cache".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_forbids_caching_and_tells_the_swarm_state() {
        let h = headers("active/manager");
        assert_eq!(h[0], ("Swarm", "active/manager".to_string()));
        assert!(h.contains(&("Pragma", "no-cache".to_string())));
        assert!(h.contains(&(
            "Cache-Control",
            "no-cache, no-store, must-revalidate".to_string()
        )));
    }
}
