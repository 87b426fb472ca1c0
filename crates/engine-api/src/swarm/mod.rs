//! The `swarm` endpoints of the Engine API: init, join, leave, inspect, update, and the
//! unlock pair.
//!
//! # Shape
//!
//! The local node's own calls (init, join, leave) go to the Control API's local `Swarm`
//! service; the cluster's (inspect, update) to `ListClusters`/`UpdateCluster`. [`spec`]
//! converts the swarm spec, [`shapes`] renders the `Swarm` object, [`addr`] reads Docker's
//! address spellings.
//!
//! Init, join and leave change what the daemon runs: it stops one phase and starts the next
//! (inactive → manager, inactive → worker or manager, active → inactive), re-binding its
//! control socket. Docker's calls return once the change is done — `docker swarm init` reads
//! `GET /nodes/<id>` and `GET /swarm` right after, `docker swarm join` reads `GET /info` —
//! so these handlers wait (bounded by [`SETTLE_WITHIN`]) until the node answers in its new
//! state.
//!
//! # Where it departs from moby
//!
//! - Autolock does not exist in Shoal yet: `AutoLockManagers` and `rotateManagerUnlockKey`
//!   answer 501 and change nothing; `GET /swarm/unlockkey` answers an empty key (the CLI
//!   prints "no unlock key is set"); `POST /swarm/unlock` answers as moby does for a swarm
//!   that is not locked.
//! - The overlay address pool is fixed (10.0.0.0/8 in /24s, what Shoal's allocator uses):
//!   `DefaultAddrPool`/`SubnetSize` other than those are refused (501). Shoal has no data
//!   plane yet, so `DataPathAddr` and `DataPathPort` are refused too, and `DataPathPort`
//!   reads 0.
//! - A joining node listens and advertises where its daemon was told to
//!   (`--listen-remote-api`, `--advertise-remote-api`): the Control API's join takes no
//!   addresses, so a join naming other ones is refused (501) rather than silently ignored
//!   (the CLI's default `ListenAddr` 0.0.0.0:2377 is accepted as "the daemon's").
//! - Availability at join time (other than active) is refused (501): a worker cannot update
//!   its own node; `docker node update --availability` on a manager does it after the join.

pub mod addr;
pub mod init;
pub mod inspect;
pub mod join;
pub mod leave;
pub mod shapes;
pub mod spec;
pub mod unlock;
pub mod unlockkey;
pub mod update;

use std::time::{Duration, Instant};

use shoal_api::v1::{Cluster, ListClustersRequest};

use crate::backend::{Backend, LocalState};
use crate::error::EngineError;

/// How long init, join and leave wait for the daemon to serve in its new state.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// How often the daemon is asked whether it settled.
const POLL: Duration = Duration::from_millis(100);

/// The cluster this manager belongs to (there is exactly one). Not a manager: moby's 503.
pub async fn cluster(backend: &Backend) -> Result<Cluster, EngineError> {
    let clusters = backend
        .call(async |mut c| c.list_clusters(ListClustersRequest::default()).await)
        .await?
        .clusters;
    let mut clusters = clusters.into_iter();
    match (clusters.next(), clusters.next()) {
        (Some(cluster), None) => Ok(cluster),
        (None, _) => Err(EngineError::unavailable(
            "the manager has no cluster object yet; retry in a moment",
        )),
        (Some(_), Some(_)) => Err(EngineError::internal(
            "the manager reports more than one cluster object; Shoal expects exactly one",
        )),
    }
}

/// Waits until `settled` holds for the node's state (polled), or fails after
/// [`SETTLE_WITHIN`] saying what did not happen.
pub async fn wait_for(
    backend: &Backend,
    what: &str,
    settled: impl Fn(&LocalState) -> bool,
) -> Result<LocalState, EngineError> {
    let started = Instant::now();
    loop {
        let state = backend.local_state().await;
        if settled(&state) {
            return Ok(state);
        }
        if started.elapsed() > SETTLE_WITHIN {
            let detail = match &state {
                LocalState::Error(e) => format!(" (last answer: {e})"),
                _ => String::new(),
            };
            return Err(EngineError::internal(format!(
                "{what} did not happen within {}s{detail}; check the daemon's log",
                SETTLE_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until this manager answers `ListClusters` (a new manager elects itself and loads
/// its store first), bounded by [`SETTLE_WITHIN`].
pub async fn wait_for_cluster(backend: &Backend) -> Result<Cluster, EngineError> {
    let started = Instant::now();
    loop {
        match cluster(backend).await {
            Ok(c) => return Ok(c),
            Err(e) if started.elapsed() > SETTLE_WITHIN => {
                return Err(EngineError::internal(format!(
                    "the new manager did not serve the swarm within {}s ({}); check the \
                     daemon's log",
                    SETTLE_WITHIN.as_secs(),
                    e.message
                )));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A node availability in Docker's spelling (case-insensitive, as moby's `ToUpper`), or
/// `None` for an empty one.
pub fn availability(
    raw: &str,
) -> Result<Option<shoal_api::v1::node_spec::Availability>, EngineError> {
    use shoal_api::v1::node_spec::Availability;
    match raw.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "active" => Ok(Some(Availability::Active)),
        "pause" => Ok(Some(Availability::Pause)),
        "drain" => Ok(Some(Availability::Drain)),
        _ => Err(EngineError::bad_request(format!(
            "invalid Availability: {raw:?} (use \"active\", \"pause\" or \"drain\")"
        ))),
    }
}
