//! What can go wrong setting up TLS or dialing a peer.

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The node's own certificates cannot be used (unreadable PEM, a key that does not
    /// match).
    #[error("unusable certificates: {0}")]
    Certificates(String),

    /// A connection to `addr` could not be set up.
    #[error("cannot reach {addr}: {reason}")]
    Dial { addr: String, reason: String },
}

impl TlsError {
    pub(crate) fn certificates(e: impl std::fmt::Display) -> Self {
        TlsError::Certificates(e.to_string())
    }

    /// True when the peer is there but refused us (or we refused it) during the handshake:
    /// retrying the same credentials will not help.
    pub fn is_refusal(&self) -> bool {
        match self {
            TlsError::Certificates(_) => true,
            TlsError::Dial { reason, .. } => reason.contains("certificate"),
        }
    }
}

/// The whole chain of an error's causes, `a: b: c`: tonic's own messages alone ("transport
/// error") do not tell a user anything.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
