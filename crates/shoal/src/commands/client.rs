//! Client plumbing: which socket to talk to, the connection (gRPC over the node's local control
//! socket), and the one place gRPC statuses become the messages users read.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::logs_client::LogsClient;
use shoal_api::v1::swarm_client::SwarmClient;
use shoal_api::v1::{
    Cluster, ListClustersRequest, ListNodesRequest, Node, SwarmInfoRequest, SwarmInfoResponse,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The environment variable naming the control socket when `-s/--socket` is not given.
pub const SOCKET_ENV: &str = "SHOAL_SOCKET";

/// How long to wait for the socket to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A manager's remote API to use instead of the control socket (`-H/--host`), with the
/// state directory holding the manager certificate to speak as.
static REMOTE: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();

/// Makes client commands talk to the manager at `addr` over mutual TLS, as the manager whose
/// certificates are in `tls_dir` (only managers may call the remote Control API).
pub fn use_remote(addr: String, tls_dir: PathBuf) {
    let _ = REMOTE.set((addr, tls_dir));
}

/// A mutual-TLS channel to `addr` with the certificates in `dir`.
async fn remote_channel(addr: &str, dir: &Path) -> Result<Channel, String> {
    let certificates = shoal_node::certificates::load(dir)
        .map_err(|e| format!("reading the certificates in {}: {e}", dir.display()))?
        .ok_or_else(|| {
            format!(
                "{} holds no node certificates: point --tls-dir at the state directory of a                  manager of the cluster",
                dir.display()
            )
        })?;
    let credentials = shoal_tls::Credentials::new(certificates)
        .map_err(|e| format!("the certificates in {}: {e}", dir.display()))?;
    shoal_tls::Dialer::mutual(credentials)
        .connect(addr)
        .await
        .map_err(|e| format!("cannot reach the manager at {addr}: {e}"))
}

/// The control socket to use: `-s/--socket`, else `$SHOAL_SOCKET`, else the default state
/// directory's `control.sock`.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    choose_socket(
        flag,
        std::env::var_os(SOCKET_ENV),
        shoal_node::default_state_dir,
    )
}

fn choose_socket(
    flag: Option<PathBuf>,
    env: Option<OsString>,
    default_state_dir: impl FnOnce() -> PathBuf,
) -> PathBuf {
    flag.filter(|p| !p.as_os_str().is_empty())
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| default_state_dir().join(shoal_api::defaults::CONTROL_SOCKET_NAME))
}

/// Runs a client command: connects to the socket, then runs `f` with the client, on a
/// single-threaded runtime.
pub fn run<T>(
    socket: Option<PathBuf>,
    f: impl AsyncFnOnce(&mut Client) -> Result<T, String>,
) -> Result<T, String> {
    let socket = socket_path(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut client = Client::connect(&socket).await?;
        f(&mut client).await
    })
}

/// A connection to one node's control socket: its Control API and its local Swarm service.
pub struct Client {
    socket: PathBuf,
    control: ControlClient<Channel>,
    swarm: SwarmClient<Channel>,
    logs: LogsClient<Channel>,
}

impl Client {
    /// Connects to the control socket at `socket`.
    pub async fn connect(socket: &Path) -> Result<Client, String> {
        if let Some((addr, dir)) = REMOTE.get() {
            let channel = remote_channel(addr, dir).await?;
            return Ok(Client {
                socket: PathBuf::from(addr),
                control: ControlClient::new(channel.clone()),
                logs: LogsClient::new(channel.clone()),
                swarm: SwarmClient::new(channel),
            });
        }
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| unreachable_message(socket, &e))?;
        Ok(Client {
            socket: socket.to_path_buf(),
            control: ControlClient::new(channel.clone()),
            logs: LogsClient::new(channel.clone()),
            swarm: SwarmClient::new(channel),
        })
    }

    pub fn control(&mut self) -> &mut ControlClient<Channel> {
        &mut self.control
    }

    pub fn logs(&mut self) -> &mut LogsClient<Channel> {
        &mut self.logs
    }

    pub fn swarm(&mut self) -> &mut SwarmClient<Channel> {
        &mut self.swarm
    }

    /// What to tell the user when `call` failed with `status`.
    pub fn error(&self, call: &str, status: &Status) -> String {
        status_message(&self.socket, call, status)
    }

    /// The cluster this node belongs to.
    pub async fn cluster(&mut self) -> Result<Cluster, String> {
        let clusters = self
            .control
            .list_clusters(ListClustersRequest::default())
            .await
            .map_err(|s| self.error("ListClusters", &s))?
            .into_inner()
            .clusters;
        let mut clusters = clusters.into_iter();
        match (clusters.next(), clusters.next()) {
            (Some(cluster), None) => Ok(cluster),
            (None, _) => Err("this node is not part of a swarm: no cluster object found \
                 (start a cluster with `shoal daemon --init`, or join one)"
                .to_string()),
            (Some(_), Some(_)) => Err("the manager reports more than one cluster object; \
                 this version of Shoal expects exactly one"
                .to_string()),
        }
    }

    /// Every node of the cluster.
    pub async fn nodes(&mut self) -> Result<Vec<Node>, String> {
        Ok(self
            .control
            .list_nodes(ListNodesRequest::default())
            .await
            .map_err(|s| self.error("ListNodes", &s))?
            .into_inner()
            .nodes)
    }

    /// Who the local node is, or None when its daemon does not answer `Swarm.Info` (yet).
    pub async fn info(&mut self) -> Option<SwarmInfoResponse> {
        self.swarm
            .info(SwarmInfoRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }
}

/// The message for a failed connection to the control socket.
fn unreachable_message(socket: &Path, error: &(dyn std::error::Error + 'static)) -> String {
    let socket = socket.display();
    let io_kind =
        error_chain(error).find_map(|e| e.downcast_ref::<std::io::Error>().map(|io| io.kind()));
    match io_kind {
        Some(std::io::ErrorKind::PermissionDenied) => format!(
            "cannot reach the shoal daemon at {socket}: permission denied \
             (run as the user the daemon runs as, e.g. with sudo; or set -s/--socket or SHOAL_SOCKET)"
        ),
        Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) | None => {
            format!(
                "cannot reach the shoal daemon at {socket} \
             (is `shoal daemon` running? set -s/--socket or SHOAL_SOCKET)"
            )
        }
        Some(_) => format!(
            "cannot reach the shoal daemon at {socket}: {} \
             (is `shoal daemon` running? set -s/--socket or SHOAL_SOCKET)",
            innermost(error)
        ),
    }
}

fn error_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    error_chain(error)
        .last()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// The one mapping from a gRPC status to what the user reads. Managers' messages already say
/// what went wrong and what to do, so they are shown as they are; only statuses that carry no
/// such message (a lost connection, a call the daemon does not serve) are explained here.
pub fn status_message(socket: &Path, call: &str, status: &Status) -> String {
    let message = status.message().trim();
    // Statuses made on this side of the connection carry the transport error as their source;
    // statuses answered by the daemon never do.
    if let Some(source) = std::error::Error::source(status) {
        return format!(
            "lost the connection to the shoal daemon at {} during {call}: {} \
             (is `shoal daemon` still running?)",
            socket.display(),
            innermost(source)
        );
    }
    match status.code() {
        Code::Unimplemented if message.is_empty() => format!(
            "the shoal daemon at {} does not serve {call} (it runs an older version of Shoal \
             than this client, or is not a manager)",
            socket.display()
        ),
        _ if message.is_empty() => format!("{call} failed: {}", status.code().description()),
        // A write reached a follower: the message names the leader. The local socket cannot
        // follow it, so it is shown as it is.
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_flag_then_environment_then_default() {
        let default = || PathBuf::from("/state");
        assert_eq!(
            choose_socket(Some("/flag.sock".into()), Some("/env.sock".into()), default),
            PathBuf::from("/flag.sock")
        );
        assert_eq!(
            choose_socket(None, Some("/env.sock".into()), default),
            PathBuf::from("/env.sock")
        );
        assert_eq!(
            choose_socket(None, Some(OsString::new()), default),
            PathBuf::from("/state/control.sock")
        );
        assert_eq!(
            choose_socket(None, None, default),
            PathBuf::from("/state/control.sock")
        );
    }

    #[test]
    fn statuses_become_messages() {
        let socket = Path::new("/run/x.sock");
        let msg = |s: Status| status_message(socket, "UpdateNode", &s);
        assert_eq!(
            msg(Status::not_found("node abc not found")),
            "node abc not found"
        );
        let mut follower = Status::failed_precondition(
            "this manager is not the leader; the leader is at 10.0.0.1:4242",
        );
        follower
            .metadata_mut()
            .insert("shoal-leader-addr", "10.0.0.1:4242".parse().unwrap());
        assert_eq!(
            msg(follower),
            "this manager is not the leader; the leader is at 10.0.0.1:4242"
        );
        let unserved = msg(Status::unimplemented(""));
        assert!(
            unserved.contains("/run/x.sock does not serve UpdateNode"),
            "{unserved}"
        );
        assert_eq!(
            msg(Status::unimplemented("get_node is not available yet")),
            "get_node is not available yet"
        );
        assert_eq!(
            msg(Status::internal("")),
            "UpdateNode failed: Internal error"
        );
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let lost = msg(Status::from_error(Box::new(io)));
        assert!(
            lost.starts_with(
                "lost the connection to the shoal daemon at /run/x.sock during UpdateNode"
            ),
            "{lost}"
        );
    }

    #[test]
    fn connection_failures_say_where_and_what_to_do() {
        let socket = Path::new("/nowhere/control.sock");
        for kind in [
            std::io::ErrorKind::NotFound,
            std::io::ErrorKind::ConnectionRefused,
        ] {
            let e = std::io::Error::from(kind);
            assert_eq!(
                unreachable_message(socket, &e),
                "cannot reach the shoal daemon at /nowhere/control.sock \
                 (is `shoal daemon` running? set -s/--socket or SHOAL_SOCKET)"
            );
        }
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(unreachable_message(socket, &e).contains("permission denied"));
    }

    #[tokio::test]
    async fn a_missing_socket_cannot_be_reached() {
        let dir = std::env::temp_dir().join(format!("shoal-client-test-{}", std::process::id()));
        let err = Client::connect(&dir.join("control.sock"))
            .await
            .err()
            .unwrap();
        assert!(
            err.starts_with("cannot reach the shoal daemon at "),
            "{err}"
        );
        assert!(err.contains("SHOAL_SOCKET"), "{err}");
    }
}
