//! A node's life, from start to stop: inactive until it creates or joins a cluster, then a
//! manager or a worker, again after a role change, and inactive again after leaving.
//!
//! A node with no cluster state, started without `--init` or `--join-addr`, is *inactive*:
//! it serves only its control socket and waits for `shoal swarm init` or `shoal swarm join`
//! (as a Docker Engine waits for `docker swarm init/join`). A join with a refused token is
//! answered at once, saying why, and the node stays inactive. Each phase owns the state
//! directory's lock while it runs and hands it on when it ends.
//!
//! A manager whose keys are sealed with the cluster's unlock key (autolock) is *locked* when
//! it starts: it serves only its control socket, answering `Info` (locked) and `Unlock`, and
//! nothing over the network, until `shoal swarm unlock` gives it a key that opens its key
//! file. A wrong key is refused and the node stays locked. The key is then kept in memory for
//! the process's life (a role change restarts the node without asking again). A restore from
//! a sealed backup is locked the same way until the key that opens the backup is given.
//!
//! A manager asked to force a new cluster (`shoal swarm init --force-new-cluster`, as after
//! losing its quorum) stops and starts again here with `force_new_cluster` set, for that one
//! start: as `shoal daemon --force-new-cluster` would, without restarting the process.

use std::path::Path;

use shoal_api::v1::JoinSwarmResponse;
use shoal_api::v1::swarm_server::SwarmServer;
use tokio::sync::{mpsc, watch};

use crate::daemon::{Daemon, DaemonConfig, Outcome};
use crate::error::NodeError;
use crate::keys::{NodeKeys, UnlockKey};
use crate::local::{InactiveRequest, InactiveSwarm, LockedSwarm, NotAManager, UnlockAttempt};
use crate::state_dir::StateDir;

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Told to stop.
    Stopped,
}

/// What an inactive node was asked to do.
enum Activation {
    Stopped,
    /// Create a cluster, with the remote API's addresses if `swarm init` named them.
    Init {
        listen_addr: Option<std::net::SocketAddr>,
        advertise_addr: Option<String>,
        autolock: bool,
    },
    Joined,
}

fn belongs_to_a_cluster(state_dir: &Path) -> bool {
    state_dir.join("node.json").exists()
}

/// Runs the node until `stop` turns true.
pub async fn run(mut config: DaemonConfig, stop: watch::Receiver<bool>) -> Result<Exit, NodeError> {
    if config.join_token.is_some()
        && config.join_addr.is_none()
        && !belongs_to_a_cluster(&config.state_dir)
    {
        return Err(NodeError::Config(format!(
            "--join-token without --join-addr only serves a node whose certificate expired \
             (it joins again through the managers it knows), and {} holds no cluster state: to \
             join a cluster, add --join-addr MANAGER",
            config.state_dir.display()
        )));
    }
    loop {
        if !config.init
            && config.join_addr.is_none()
            && config.restore.is_none()
            && !belongs_to_a_cluster(&config.state_dir)
        {
            match inactive(&config, stop.clone()).await? {
                Activation::Stopped => return Ok(Exit::Stopped),
                Activation::Init {
                    listen_addr,
                    advertise_addr,
                    autolock,
                } => {
                    config.init = true;
                    config.autolock = autolock;
                    if let Some(addr) = listen_addr {
                        config.listen_remote_api = addr;
                    }
                    if advertise_addr.is_some() {
                        config.advertise_remote_api = advertise_addr;
                    }
                }
                Activation::Joined => {}
            }
        }
        let daemon = match Daemon::start(config.clone()).await {
            Ok(daemon) => daemon,
            Err(NodeError::Locked) => match locked(&config, stop.clone()).await? {
                Some(key) => {
                    config.unlock_key = Some(key);
                    continue;
                }
                None => return Ok(Exit::Stopped),
            },
            Err(e) => return Err(e),
        };
        let keys = daemon.keys();
        let mut until = stop.clone();
        let outcome = daemon
            .serve(async move {
                let _ = until.wait_for(|s| *s).await;
            })
            .await?;
        // What got the node into its cluster is done.
        config.init = false;
        config.join_addr = None;
        config.join_token = None;
        config.force_new_cluster = false;
        config.restore = None;
        config.autolock = false;
        // The key the node's keys are sealed with now (it may have been rotated meanwhile).
        config.unlock_key = keys.unlock_key();
        match outcome {
            Outcome::Stopped => return Ok(Exit::Stopped),
            Outcome::Left => tracing::info!("left the cluster; this node is inactive now"),
            Outcome::RoleChanged(_) => {}
            Outcome::ForceNewCluster(request) => {
                config.force_new_cluster = true;
                if let Some(addr) = request.listen_addr {
                    config.listen_remote_api = addr;
                }
                if request.advertise_addr.is_some() {
                    config.advertise_remote_api = request.advertise_addr;
                }
            }
        }
    }
}

/// Serves the control socket of a node that belongs to no cluster until it is told to
/// create or join one (done here, so that refusals reach the caller), or to stop.
async fn inactive(
    config: &DaemonConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Activation, NodeError> {
    let state_dir = StateDir::open(&config.state_dir)?;
    let socket = crate::daemon::control_path(config, &state_dir);
    let control = crate::daemon::bind_control_socket(&socket)?;
    let (requests, mut incoming) = mpsc::channel(4);
    let (stopping_tx, mut stopping) = watch::channel(false);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NotAManager::INACTIVE)
            .add_service(SwarmServer::new(InactiveSwarm::new(requests)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(control),
                async move {
                    let _ = stopping.wait_for(|s| *s).await;
                },
            ),
    );
    tracing::info!(
        "this node is not part of a cluster: waiting for `shoal swarm init` or `shoal swarm \
         join` on {}",
        socket.display()
    );
    let activation = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break Activation::Stopped,
            Some(request) = incoming.recv() => match request {
                InactiveRequest::Init { listen_addr, advertise_addr, autolock, reply } => {
                    let _ = reply.send(Ok(()));
                    break Activation::Init { listen_addr, advertise_addr, autolock };
                }
                InactiveRequest::Join { remote_addr, join_token, reply } => {
                    match crate::daemon::join_cluster(
                        &state_dir,
                        &remote_addr,
                        &join_token,
                        config.availability,
                    )
                    .await {
                        Ok((identity, issued)) => {
                            let _ = reply.send(Ok(JoinSwarmResponse {
                                node_id: identity.node_id,
                                role: issued.identity.role as i32,
                            }));
                            break Activation::Joined;
                        }
                        Err(e) => {
                            tracing::warn!("joining {remote_addr} failed: {e}");
                            let _ = reply.send(Err(tonic::Status::failed_precondition(e.to_string())));
                        }
                    }
                }
            },
        }
    };
    let _ = stopping_tx.send(true);
    let _ = server.await;
    drop(state_dir);
    Ok(activation)
}

/// Serves the control socket of a locked manager until it is given a key that opens its
/// keys (or, restoring, the backup), or told to stop (`None`).
async fn locked(
    config: &DaemonConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<UnlockKey>, NodeError> {
    let state_dir = StateDir::open(&config.state_dir)?;
    let socket = crate::daemon::control_path(config, &state_dir);
    let control = crate::daemon::bind_control_socket(&socket)?;
    let node_id = state_dir.identity()?.map(|i| i.node_id).unwrap_or_default();
    let (attempts_tx, mut attempts) = mpsc::channel::<UnlockAttempt>(4);
    let (stopping_tx, mut stopping) = watch::channel(false);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NotAManager::LOCKED)
            .add_service(SwarmServer::new(LockedSwarm::new(node_id, attempts_tx)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(control),
                async move {
                    let _ = stopping.wait_for(|s| *s).await;
                },
            ),
    );
    match &config.restore {
        Some(path) => tracing::warn!(
            "the backup {} is sealed with the cluster's unlock key: waiting for `shoal swarm \
             unlock` on {}",
            path.display(),
            socket.display()
        ),
        None => tracing::warn!(
            "this manager is locked (autolock): it serves nothing until `shoal swarm unlock` \
             gives it the cluster's unlock key on {}",
            socket.display()
        ),
    }
    let unlocked = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break None,
            Some(UnlockAttempt { key, reply }) = attempts.recv() => {
                let opened = match &config.restore {
                    Some(path) => std::fs::read(path)
                        .map_err(|e| NodeError::io(format!("reading {}", path.display()), e))
                        .and_then(|bytes| {
                            crate::backup::Backup::parse(bytes, &path.display().to_string())
                        })
                        .and_then(|backup| backup.open(Some(&key)).map(|_| ())),
                    None => NodeKeys::open(state_dir.path(), Some(&key)).map(|_| ()),
                };
                match opened {
                    Ok(()) => {
                        tracing::info!("unlocked");
                        let _ = reply.send(Ok(()));
                        break Some(key);
                    }
                    Err(e @ NodeError::InvalidUnlockKey) => {
                        tracing::warn!("an unlock attempt was refused: the key does not open this node's keys");
                        let _ = reply.send(Err(tonic::Status::invalid_argument(e.to_string())));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(tonic::Status::failed_precondition(e.to_string())));
                    }
                }
            }
        }
    };
    let _ = stopping_tx.send(true);
    let _ = server.await;
    drop(state_dir);
    Ok(unlocked)
}
