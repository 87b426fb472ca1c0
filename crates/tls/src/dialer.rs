//! Opening gRPC channels to managers over TLS.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use shoal_api::v1::NodeRole;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::credentials::{ALPN_H2, Credentials};
use crate::error::chain;
use crate::{HANDSHAKE_TIMEOUT, TlsError};

/// HTTP/2 flow-control window, both ways: a stream of Raft appends must not stop every
/// 64 KiB to wait for the receiver's window update.
pub const WINDOW_BYTES: u32 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Mode {
    Mutual(Credentials),
    Anonymous(Arc<ClientConfig>),
    Unverified(Arc<ClientConfig>),
}

/// Opens channels to managers; see the crate documentation for the three modes.
#[derive(Clone)]
pub struct Dialer {
    mode: Mode,
    request_timeout: Option<Duration>,
    /// HTTP/2 ping period, and how long a ping may go unanswered before the connection is
    /// declared dead (failing every call on it).
    keep_alive: (Duration, Duration),
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Mutual(_) => "mutual",
            Mode::Anonymous(_) => "anonymous",
            Mode::Unverified(_) => "unverified",
        };
        write!(f, "Dialer({mode})")
    }
}

impl Dialer {
    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            request_timeout: None,
            keep_alive: (Duration::from_secs(10), Duration::from_secs(5)),
        }
    }

    /// Pings the peer every `interval` and gives the connection up (failing the calls in
    /// flight, UNAVAILABLE) when a ping is not answered within `timeout`: a peer cut off
    /// without a reset is noticed in `interval + timeout` instead of the default 15 s.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = (interval, timeout);
        self
    }

    /// Every call on channels from this dialer fails after `timeout` (none by default:
    /// Raft streams live as long as the connection).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// With our certificate; the server must be a manager of our cluster.
    pub fn mutual(credentials: Credentials) -> Self {
        Self::with_mode(Mode::Mutual(credentials))
    }

    /// Without a certificate of ours; the server must hold a manager certificate from
    /// `root_pem`.
    pub fn anonymous(root_pem: &str) -> Result<Self, TlsError> {
        let roots = crate::credentials::roots(root_pem)?;
        let mut config = ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::certificates)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self::with_mode(Mode::Anonymous(Arc::new(config))))
    }

    /// Trusting whatever certificate the server shows. Only for fetching the root
    /// certificate, which the caller must check against its join token's digest.
    pub fn unverified() -> Self {
        let provider = crate::provider();
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Self::with_mode(Mode::Unverified(Arc::new(config)))
    }

    /// A channel to the manager at `addr` (`host:port`), connected now. The channel
    /// reconnects by itself later, with the credentials current at that time.
    pub async fn connect(&self, addr: &str) -> Result<Channel, TlsError> {
        let dial_error = |reason: String| TlsError::Dial {
            addr: addr.to_string(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| dial_error(format!("not a valid address: {e}")))?
            .initial_stream_window_size(Some(WINDOW_BYTES))
            .initial_connection_window_size(Some(WINDOW_BYTES))
            .http2_keep_alive_interval(self.keep_alive.0)
            .keep_alive_timeout(self.keep_alive.1);
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let dialer = self.clone();
        let target = addr.to_string();
        let connector = tower::service_fn(move |_: Uri| {
            let dialer = dialer.clone();
            let target = target.clone();
            async move { dialer.handshake(&target).await.map(TokioIo::new) }
        });
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| dial_error(chain(&e)))
    }

    async fn handshake(&self, addr: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let (config, expected_cluster, check_role) = match &self.mode {
            Mode::Mutual(credentials) => {
                let current = credentials.current();
                (
                    current.client.clone(),
                    Some(current.identity.cluster_id.clone()),
                    true,
                )
            }
            Mode::Anonymous(config) => (config.clone(), None, true),
            Mode::Unverified(config) => (config.clone(), None, false),
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(shoal_ca::CA_SERVER_NAME).expect("a valid DNS name");
        let tls = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
        if check_role {
            let (_, connection) = tls.get_ref();
            let leaf = connection
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| std::io::Error::other("the server sent no certificate"))?;
            let server = shoal_ca::parse_node_certificate_der(leaf.as_ref()).map_err(|e| {
                std::io::Error::other(format!(
                    "the server's certificate is not a node certificate: {e}"
                ))
            })?;
            if server.role != NodeRole::Manager {
                return Err(std::io::Error::other(format!(
                    "the server's certificate (node {}) is not a manager certificate",
                    server.node_id
                )));
            }
            if let Some(cluster) = expected_cluster
                && server.cluster_id != cluster
            {
                return Err(std::io::Error::other(format!(
                    "the server's certificate is for cluster {}, not ours ({cluster})",
                    server.cluster_id
                )));
            }
        }
        Ok(tls)
    }
}

/// Accepts any server certificate; still checks that the handshake is signed by the key the
/// server showed.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
