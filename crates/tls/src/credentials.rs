//! A node's certificates, parsed once into rustls configurations and swappable in place.

use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shoal_ca::NodeIdentity;

use crate::TlsError;

/// A node's certificates, PEM: the roots it trusts (the cluster's root; during a root
/// rotation the old and the new one), the node certificate — possibly followed by its chain
/// (during a rotation, the new root cross-signed by the old one), which goes along in every
/// handshake — and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertificates {
    pub root_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// What one set of certificates turns into.
pub(crate) struct Loaded {
    pub certificates: NodeCertificates,
    pub identity: NodeIdentity,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// A node's credentials, shared by its servers and dialers, replaced whole on renewal.
#[derive(Clone)]
pub struct Credentials {
    current: Arc<RwLock<Arc<Loaded>>>,
    /// Counts replacements, so that whoever reports what the node holds (the agent's node
    /// description) hears of each one.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity())
            .finish()
    }
}

/// The most roots a node trusts at once: the cluster's root, and during a root rotation the
/// new one beside it.
pub const MAX_TRUSTED_ROOTS: usize = 2;

/// The trust store: the cluster's root certificate — or, while the root is rotated, the old
/// and the new root (the trust bundle the dispatcher hands out). A file without a certificate,
/// or with more than [`MAX_TRUSTED_ROOTS`], is refused. (What a *joining* node trusts is
/// checked against its token's digest, which covers exactly one certificate: see
/// `shoal_ca::cert_digest`.)
pub(crate) fn roots(root_pem: &str) -> Result<RootCertStore, TlsError> {
    let certs = CertificateDer::pem_slice_iter(root_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::certificates)?;
    if certs.is_empty() || certs.len() > MAX_TRUSTED_ROOTS {
        return Err(TlsError::Certificates(format!(
            "the root CA file must hold one certificate (two while the root is rotated), not {}",
            certs.len()
        )));
    }
    let mut roots = RootCertStore::empty();
    for root in certs {
        roots.add(root).map_err(TlsError::certificates)?;
    }
    Ok(roots)
}

pub(crate) const ALPN_H2: &[u8] = b"h2";

fn load(certificates: NodeCertificates) -> Result<Loaded, TlsError> {
    let identity =
        shoal_ca::parse_node_certificate(&certificates.cert_pem).map_err(TlsError::certificates)?;
    let roots = Arc::new(roots(&certificates.root_pem)?);
    let chain = || -> Result<Vec<CertificateDer<'static>>, TlsError> {
        CertificateDer::pem_slice_iter(certificates.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::certificates)
    };
    let key = || {
        PrivateKeyDer::from_pem_slice(certificates.key_pem.as_bytes())
            .map_err(TlsError::certificates)
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::provider())
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::certificates)?;
    let mut server = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::certificates)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain()?, key()?)
        .map_err(TlsError::certificates)?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    let mut client = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::certificates)?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain()?, key()?)
        .map_err(TlsError::certificates)?;
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Loaded {
        certificates,
        identity,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

impl Credentials {
    /// Credentials from PEM certificates; refused when they cannot be used (the key does not
    /// match the certificate, the certificate is not a node certificate).
    pub fn new(certificates: NodeCertificates) -> Result<Self, TlsError> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(load(certificates)?))),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Replaces the certificates (a renewal, a new role, a new trust bundle). Open connections
    /// keep theirs; new handshakes use these. Nothing changes when the new ones cannot be used.
    pub fn update(&self, certificates: NodeCertificates) -> Result<(), TlsError> {
        let loaded = Arc::new(load(certificates)?);
        *self.current.write().expect("credentials lock") = loaded;
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// A receiver that sees every replacement made after this call (its value counts them).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("credentials lock").clone()
    }

    /// Who these credentials say we are.
    pub fn identity(&self) -> NodeIdentity {
        self.current().identity.clone()
    }

    pub fn certificates(&self) -> NodeCertificates {
        self.current().certificates.clone()
    }
}
