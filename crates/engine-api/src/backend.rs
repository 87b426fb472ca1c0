//! The Engine API's one side effect: calls to the node's own control socket.
//!
//! The Engine API is a client of the Control API, like the `shoal` command line: every
//! handler turns its request into Control API calls on the node's local control socket, which
//! is served whatever the node is (inactive, worker, manager) and forwards manager calls to
//! the leader. The channel is lazy and reconnects by itself, so the Engine API keeps working
//! across the daemon's phases (init, join, leave, role changes re-bind the control socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::logs_client::LogsClient;
use shoal_api::v1::swarm_client::SwarmClient;
use shoal_api::v1::{NodeRole, SwarmInfoRequest, SwarmInfoResponse};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{self, EngineError};

/// How long a call waits for the control socket to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Backend::local_state`] waits for a control socket that does not answer.
const PHASE_CHANGE: Duration = Duration::from_secs(2);

/// What this node is, as the `Swarm` ping header and `/info` tell it.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalState {
    /// Belongs to no swarm.
    Inactive,
    /// A worker or a manager of a swarm.
    Active(SwarmInfoResponse),
    /// The control socket did not answer (the daemon is between phases, or stopping).
    Error(String),
}

impl LocalState {
    /// Whether this node is a manager (an unlocked one: a locked manager serves nothing).
    pub fn is_manager(&self) -> bool {
        matches!(self, LocalState::Active(info) if info.role == NodeRole::Manager as i32 && !info.locked)
    }

    /// Whether this node is a locked manager (autolock), waiting for its unlock key.
    pub fn is_locked(&self) -> bool {
        matches!(self, LocalState::Active(info) if info.locked)
    }

    /// moby's `Swarm` header: `inactive`, `active/manager`, `active/worker` or `error`.
    pub fn header(&self) -> &'static str {
        match self {
            LocalState::Inactive => "inactive",
            LocalState::Active(_) if self.is_manager() => "active/manager",
            LocalState::Active(_) => "active/worker",
            LocalState::Error(_) => "error",
        }
    }
}

/// moby's 503 for a Control API call on a node in `state` that serves none: inactive, a
/// worker, or a locked manager; `None` on an active manager.
pub fn not_a_manager(state: &LocalState) -> Option<EngineError> {
    match state {
        LocalState::Inactive => Some(EngineError::unavailable(error::NOT_A_MANAGER_INACTIVE)),
        state if state.is_locked() => Some(EngineError::unavailable(error::LOCKED)),
        state @ LocalState::Active(_) if !state.is_manager() => {
            Some(EngineError::unavailable(error::NOT_A_MANAGER_WORKER))
        }
        _ => None,
    }
}

/// Clients of the node's control socket.
#[derive(Clone)]
pub struct Backend {
    socket: PathBuf,
    channel: Channel,
}

impl Backend {
    /// A backend talking to the control socket at `socket` (connected on first use).
    pub fn new(socket: &Path) -> Self {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Self {
            socket: socket.to_path_buf(),
            channel,
        }
    }

    /// The control socket this backend talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The Control API (served by managers; forwarded to the leader).
    pub fn control(&self) -> ControlClient<Channel> {
        ControlClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// The node's local Swarm service (init, join, leave, info).
    pub fn swarm(&self) -> SwarmClient<Channel> {
        SwarmClient::new(self.channel.clone())
    }

    /// Service and task logs.
    pub fn logs(&self) -> LogsClient<Channel> {
        LogsClient::new(self.channel.clone())
    }

    /// What this node is now. The control socket is re-bound when the daemon changes phase
    /// (and bound a moment after the Engine API's at start): an unreachable socket is asked
    /// again for up to [`PHASE_CHANGE`] before the state is reported as an error.
    pub async fn local_state(&self) -> LocalState {
        let started = std::time::Instant::now();
        loop {
            match self.swarm().info(SwarmInfoRequest {}).await {
                Ok(info) => return LocalState::Active(info.into_inner()),
                Err(status) if status.code() == Code::FailedPrecondition => {
                    return LocalState::Inactive;
                }
                Err(status)
                    if status.code() == Code::Unavailable && started.elapsed() < PHASE_CHANGE =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => return LocalState::Error(status.message().to_string()),
            }
        }
    }

    /// The Engine API error for a failed Control API call: a refusal because this node is
    /// not a manager becomes moby's 503; everything else maps as [`EngineError::from_status`].
    pub async fn control_error(&self, status: Status) -> EngineError {
        if status.code() == Code::FailedPrecondition
            && let Some(refusal) = not_a_manager(&self.local_state().await)
        {
            return refusal;
        }
        EngineError::from_status(&status)
    }

    /// Runs a Control API call, mapping its failure with [`Backend::control_error`].
    pub async fn call<T>(
        &self,
        call: impl AsyncFnOnce(ControlClient<Channel>) -> Result<tonic::Response<T>, Status>,
    ) -> Result<T, EngineError> {
        match call(self.control()).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.control_error(status).await),
        }
    }
}
