//! Serving over TLS: accepted connections, handshaken concurrently, carrying the client's
//! identity into every request.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_ca::NodeIdentity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;

use crate::Credentials;

/// How long a client gets to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;
/// Handshakes in progress at most; past that, accepting waits (a flood of silent clients
/// cannot pile up tasks).
const MAX_HANDSHAKES: usize = 256;

/// Who is on the other end of a connection: put into every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// From the client's certificate, which TLS verified against the cluster root; `None`
    /// when the client sent none.
    pub identity: Option<NodeIdentity>,
}

/// A served TLS connection.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConnection {
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The stream of handshaken connections for tonic's `serve_with_incoming`. Dropping it stops
/// the accept loop and every handshake in progress.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<TlsConnection>,
    task: JoinHandle<()>,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsConnection, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// Accepts TLS connections on `listener` with `credentials` (read afresh for every
/// connection, so a renewal applies to the next handshake). Handshakes that fail — a
/// certificate from another CA, an expired one, a client that says nothing — are logged and
/// dropped; they never reach a handler.
pub fn listen(listener: TcpListener, credentials: Credentials) -> TlsIncoming {
    let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
    let task = tokio::spawn(accept_loop(listener, credentials, tx));
    TlsIncoming { accepted, task }
}

async fn accept_loop(
    listener: TcpListener,
    credentials: Credentials,
    tx: mpsc::Sender<TlsConnection>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if handshakes.len() < MAX_HANDSHAKES => match accepted {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    let config = credentials.current().server.clone();
                    let tx = tx.clone();
                    handshakes.spawn(async move {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let identity = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|leaf| {
                                        shoal_ca::parse_node_certificate_der(leaf.as_ref()).ok()
                                    });
                                let info = PeerInfo { remote_addr: Some(remote), identity };
                                let _ = tx.send(TlsConnection { stream, info }).await;
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake with {remote} failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake with {remote} timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            () = tx.closed() => break,
        }
    }
}
