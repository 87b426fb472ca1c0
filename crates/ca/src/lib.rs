//! Shoal's PKI: the cluster's root CA, join tokens, and node certificates.
//!
//! Every node proves who it is with a certificate signed by the cluster's root CA:
//! CN = node ID, OU = role (`shoal-manager` / `shoal-worker`), O = cluster ID. The CA decides
//! all three — whatever subject a certificate signing request asks for is ignored; only its
//! public key (and the proof that the requester holds the private key, the CSR signature) is
//! taken. A node joins with a token that names the root CA by digest, so it can check the CA
//! it talks to before trusting it:
//!
//! ```text
//!   SWMTKN-1-<SHA-256 of the root certificate, base36, 50 chars>-<128-bit secret, base36, 25 chars>
//! ```
//!
//! A *root rotation* replaces the root without stopping the cluster: the new root is
//! cross-signed by the old one ([`RootCa::cross_signed_by`]), node certificates the new root
//! signs travel with that cross-signed certificate as their chain (so nodes that trust only
//! the old root accept them), and [`issued_by`] tells which root signed a node's certificate
//! (the manager finishes the rotation once every node holds one from the new root).
//!
//! This crate is pure: it makes and checks certificates and tokens, and holds no state; the
//! CA server, TLS configuration and authorization that use it come with the node and manager.

mod base36;
mod certs;
mod error;
mod token;

pub use certs::{
    CertIssuer, NodeIdentity, RootCa, RootReport, cert_digest, certificates_der,
    first_certificate_pem, issue_node_certificate, issued_by, issuer_of, node_key_and_csr,
    parse_node_certificate, parse_node_certificate_der, root_issuer,
};
pub use error::CaError;
pub use token::JoinToken;

/// Organizational unit of manager certificates.
pub const MANAGER_ROLE_OU: &str = "shoal-manager";
/// Organizational unit of worker certificates.
pub const WORKER_ROLE_OU: &str = "shoal-worker";
/// Name every manager certificate also carries, which clients check when dialing a manager.
pub const CA_SERVER_NAME: &str = "shoal-ca";
