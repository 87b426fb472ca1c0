//! A node's certificates, parsed once into rustls configurations and swappable in place.

use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shoal_ca::NodeIdentity;

use crate::TlsError;

/// A node's certificates, PEM: the cluster root, the node certificate and its key.
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
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity())
            .finish()
    }
}

/// The trust store: the cluster's one root certificate. A root file with more than one
/// certificate is refused — the join token's digest covers exactly one, and nothing else may
/// slip into what the node trusts.
pub(crate) fn roots(root_pem: &str) -> Result<RootCertStore, TlsError> {
    let certs = CertificateDer::pem_slice_iter(root_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::certificates)?;
    let [root] = <[CertificateDer<'static>; 1]>::try_from(certs).map_err(|certs| {
        TlsError::Certificates(format!(
            "the root CA must be exactly one certificate, not {}",
            certs.len()
        ))
    })?;
    let mut roots = RootCertStore::empty();
    roots.add(root).map_err(TlsError::certificates)?;
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
        })
    }

    /// Replaces the certificates (a renewal, a new role). Open connections keep theirs; new
    /// handshakes use these. Nothing changes when the new ones cannot be used.
    pub fn update(&self, certificates: NodeCertificates) -> Result<(), TlsError> {
        let loaded = Arc::new(load(certificates)?);
        *self.current.write().expect("credentials lock") = loaded;
        Ok(())
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
