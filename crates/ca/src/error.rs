//! PKI errors, each saying what was wrong.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("malformed join token: {0}")]
    MalformedToken(String),
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid CA key: {0}")]
    InvalidKey(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}
