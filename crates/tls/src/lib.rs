//! Mutual TLS between nodes.
//!
//! Every connection between Shoal nodes — Raft, the CA, the remote Control API, the
//! dispatcher — is TLS (rustls with the ring provider; TLS 1.2 minimum, 1.3 preferred), and
//! every node proves who it is with a certificate from the cluster CA. This crate owns the
//! three pieces every server and client share:
//!
//! * [`Credentials`]: a node's root, certificate and key, *swappable while in use*. A
//!   renewed certificate goes in with [`Credentials::update`]; connections already open
//!   keep their session, every new handshake (served or dialed) uses the new certificate.
//!   That is how servers pick up renewals without dropping the cluster.
//! * [`Dialer`]: opens gRPC channels to managers. Three ways, from strongest to weakest:
//!   `mutual` (our certificate goes along; the server must hold a *manager* certificate of
//!   *our* cluster), `anonymous` (no certificate of ours yet, the server verified against a
//!   root we already trust — a joining node asking for its first certificate), and
//!   `unverified` (nothing checked — only to fetch the root certificate, which the caller then
//!   checks against the digest in its join token).
//! * [`listen`]: accepts TCP connections, runs TLS handshakes concurrently (a slow or silent
//!   client cannot hold up others; a handshake gets [`HANDSHAKE_TIMEOUT`]), and hands tonic
//!   connections that carry a [`PeerInfo`]: the verified identity from the client's
//!   certificate, if it sent one. Client certificates are optional at the TLS level so that
//!   a joining node can reach the CA; every RPC then decides what it accepts with
//!   [`peer`] (see the manager's authorizer).
//!
//! A certificate that fails verification (another CA, expired, not yet valid) fails the
//! handshake: the RPC never reaches a handler.
//!
//! **Root rotation.** While the cluster's root is being replaced, a node trusts two roots,
//! the old and the new (its `root_pem` holds both), and certificates the new root signs are
//! presented with the new root cross-signed by the old one as an intermediate. webpki builds
//! the path from what is presented: a node still trusting only the old root verifies a new
//! certificate through the cross-signed intermediate, and a node trusting both verifies old
//! and new certificates directly (the roots share their subject; webpki tries each anchor
//! whose subject matches and keeps the one whose key verifies the signature). So nodes with
//! old and new certificates interoperate in every combination, and open connections are never
//! touched (`tests.rs` checks each combination on real sockets).
//!
//! Departure from SwarmKit: SwarmKit reloads credentials by swapping its whole gRPC TLS
//! config behind a mutex; here the swap is the same idea but the server reads the current
//! config per accepted connection, and the client checks the server's *role* (manager) and
//! *cluster* after the handshake, so a worker certificate can never impersonate a manager.

mod credentials;
mod dialer;
mod error;
mod listener;

pub use credentials::{Credentials, MAX_TRUSTED_ROOTS, NodeCertificates};
pub use dialer::{Dialer, WINDOW_BYTES};
pub use error::TlsError;
pub use listener::{HANDSHAKE_TIMEOUT, PeerInfo, TlsConnection, TlsIncoming, listen};

/// The identity behind a request, if the connection came through [`listen`].
pub fn peer<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
