//! Certificate renewal: a node gets a new certificate before the old one expires, and when
//! the cluster changes its role.
//!
//! Each certificate is renewed at a random point between 50 % and 80 % of its lifetime, so
//! that the nodes of a cluster created together do not all renew at once (SwarmKit does the
//! same). The lifetime runs from when the CA signed it to its `not_after`: the hour its
//! `not_before` is backdated by (against clock skew) is not lifetime. SwarmKit measures from
//! `not_before`, which for its shortest lifetime (one hour, backdated by one) puts the
//! renewal point at the moment of issue, and for shorter test lifetimes in the past — a node
//! renewing in a loop. A renewal is a new key and CSR sent to the CA over mutual TLS *without* a token:
//! the CA signs for the node ID in our certificate, with the role the cluster assigned the
//! node — so promote and demote reach a node through its next renewal, which the manager
//! asks for at once by marking the node's certificate `RENEW` (the agent passes that on with
//! [`Renewer::request`]).
//!
//! The new certificate is checked (its key must match, it must be a node certificate) before
//! it replaces the old one in memory — where servers and dialers pick it up for their next
//! handshake, without dropping open connections — and on disk (each file replaced
//! atomically). A failed renewal is retried with backoff, while the old certificate is still
//! valid.
//!
//! Time comes from a [`Clock`], read every `check_every` — or sooner, when the renewal point
//! comes before the next look (the renewer sleeps until then): a certificate that lasts
//! seconds is renewed in time, and the default look every 10 s costs nothing for one that
//! lasts weeks. Tests drive the clock past the renewal point instead of waiting for weeks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shoal_api::clock::Clock;
use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{IssueNodeCertificateRequest, NodeCertificateStatusRequest, NodeRole};
use shoal_ca::NodeIdentity as CertIdentity;
use shoal_tls::{Credentials, Dialer, NodeCertificates};
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::Channel;

use crate::error::NodeError;

/// The earliest and latest renewal point, as fractions of a certificate's lifetime.
pub const RENEWAL_WINDOW: (f64, f64) = (0.5, 0.8);
/// The longest wait between two attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When to renew `certificate`, at `fraction` of its lifetime (from its issue, see the
/// module notes).
pub fn renewal_time(certificate: &CertIdentity, fraction: f64) -> SystemTime {
    let issued = certificate.issued_at();
    let lifetime = certificate
        .not_after
        .duration_since(issued)
        .unwrap_or_default();
    issued + lifetime.mul_f64(fraction)
}

/// A random point of the renewal window.
pub fn random_fraction() -> f64 {
    rand::random_range(RENEWAL_WINDOW.0..=RENEWAL_WINDOW.1)
}

/// The managers a node knows (`host:port`), shared between the parts that learn them and
/// the parts that call them.
#[derive(Clone, Debug, Default)]
pub struct Managers(Arc<Mutex<Vec<String>>>);

impl Managers {
    pub fn new(addrs: Vec<String>) -> Self {
        Self(Arc::new(Mutex::new(addrs)))
    }

    pub fn get(&self) -> Vec<String> {
        self.0.lock().expect("managers lock").clone()
    }

    /// Replaces the list; an empty list changes nothing (the node would be lost).
    pub fn set(&self, addrs: Vec<String>) {
        if !addrs.is_empty() {
            *self.0.lock().expect("managers lock") = addrs;
        }
    }
}

/// Runs `call` against the leader: tries each known manager, following a follower's pointer
/// to the leader. A refusal (not a matter of reaching the right manager) ends the attempt.
pub async fn call_leader<T, F, Fut>(
    dialer: &Dialer,
    managers: &Managers,
    mut call: F,
) -> Result<T, NodeError>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut last = String::from("no manager is known");
    let mut targets = managers.get();
    let mut hops = 0;
    while let Some(target) = (!targets.is_empty()).then(|| targets.remove(0)) {
        let channel = match dialer.connect(&target).await {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        match call(channel).await {
            Ok(v) => return Ok(v),
            Err(status) => {
                if let Some(leader) = crate::certificates::leader_of(&status)
                    && hops < 3
                {
                    hops += 1;
                    targets.insert(0, leader);
                    continue;
                }
                match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::DeadlineExceeded => {
                        last = format!("{target}: {}", status.message());
                    }
                    _ => return Err(NodeError::Refused(status.message().to_string())),
                }
            }
        }
    }
    Err(NodeError::Unreachable(last))
}

/// Gets a new certificate for this node from the CA and puts it in place, in memory and in
/// `<state>/certificates/`. Returns what the new certificate says.
pub async fn renew(
    state: &std::path::Path,
    credentials: &Credentials,
    managers: &Managers,
) -> Result<CertIdentity, NodeError> {
    let (key_pem, csr_pem) =
        shoal_ca::node_key_and_csr().map_err(|e| NodeError::Refused(e.to_string()))?;
    let dialer = Dialer::mutual(credentials.clone());
    let cert_pem = call_leader(&dialer, managers, |channel| {
        let csr = csr_pem.clone().into_bytes();
        async move {
            let mut ca = NodeCaClient::new(channel);
            let issued = ca
                .issue_node_certificate(IssueNodeCertificateRequest {
                    csr,
                    token: String::new(),
                    availability: 0,
                })
                .await?
                .into_inner();
            let status = ca
                .node_certificate_status(NodeCertificateStatusRequest {
                    node_id: issued.node_id,
                })
                .await?
                .into_inner();
            String::from_utf8(status.certificate.unwrap_or_default().certificate)
                .map_err(|_| tonic::Status::internal("the CA sent a certificate that is not PEM"))
        }
    })
    .await?;
    let current = credentials.identity();
    let issued = shoal_ca::parse_node_certificate(&cert_pem)
        .map_err(|e| NodeError::Refused(format!("the CA sent an unusable certificate: {e}")))?;
    if issued.node_id != current.node_id || issued.cluster_id != current.cluster_id {
        return Err(NodeError::Refused(format!(
            "the CA sent a certificate for node {} of cluster {}, not for this node ({} of {}); \
             kept the current one",
            issued.node_id, issued.cluster_id, current.node_id, current.cluster_id
        )));
    }
    let certificates = NodeCertificates {
        root_pem: credentials.certificates().root_pem,
        cert_pem,
        key_pem,
    };
    credentials
        .update(certificates.clone())
        .map_err(|e| NodeError::Refused(format!("the CA sent an unusable certificate: {e}")))?;
    crate::certificates::save_certificates(state, &certificates)?;
    Ok(credentials.identity())
}

/// Renews this node's certificate when it is due, or at once when asked.
pub struct Renewer {
    state: PathBuf,
    credentials: Credentials,
    managers: Managers,
    clock: Arc<dyn Clock>,
    check_every: Duration,
    requested: Arc<Notify>,
}

/// Asks a running [`Renewer`] to renew now (the cluster marked the certificate `RENEW`).
#[derive(Clone)]
pub struct RenewalRequest(Arc<Notify>);

impl RenewalRequest {
    pub fn request(&self) {
        self.0.notify_one();
    }
}

impl Renewer {
    pub fn new(
        state: PathBuf,
        credentials: Credentials,
        managers: Managers,
        clock: Arc<dyn Clock>,
        check_every: Duration,
    ) -> Self {
        Self {
            state,
            credentials,
            managers,
            clock,
            check_every,
            requested: Arc::new(Notify::new()),
        }
    }

    /// A handle that makes the renewer renew at once.
    pub fn requester(&self) -> RenewalRequest {
        RenewalRequest(self.requested.clone())
    }

    /// Renews until `shutdown` turns true. Every renewal that changes the node's role is
    /// reported on `role_changed`.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        role_changed: mpsc::Sender<NodeRole>,
    ) {
        let mut due = renewal_time(&self.credentials.identity(), random_fraction());
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Look again after `check_every`, or at the renewal point if that comes first.
            let until_due = due
                .duration_since(self.clock.now())
                .unwrap_or_default()
                .min(self.check_every);
            tokio::select! {
                _ = shutdown.changed() => continue,
                () = self.requested.notified() => due = SystemTime::UNIX_EPOCH,
                () = tokio::time::sleep(until_due) => {}
            }
            if self.clock.now() < due {
                continue;
            }
            let before = self.credentials.identity().role;
            match renew(&self.state, &self.credentials, &self.managers).await {
                Ok(identity) => {
                    failures = 0;
                    let fraction = random_fraction();
                    due = renewal_time(&identity, fraction);
                    tracing::info!(
                        "renewed this node's certificate (role {:?}); next renewal at {:.0} % of \
                         its lifetime",
                        identity.role,
                        fraction * 100.0
                    );
                    if identity.role != before {
                        let _ = role_changed.send(identity.role).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_secs(5)
                        .saturating_mul(1 << failures.min(6))
                        .min(MAX_BACKOFF);
                    tracing::warn!(
                        "renewing this node's certificate failed: {e}; retrying in {wait:?}"
                    );
                    due = self.clock.now() + wait;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(not_before: u64, not_after: u64) -> CertIdentity {
        CertIdentity {
            node_id: "n".into(),
            role: NodeRole::Worker,
            cluster_id: "c".into(),
            not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(not_before),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
        }
    }

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_lifetime() {
        // Signed at 1000 + the backdate, for an hour.
        let backdate = shoal_api::defaults::CERT_BACKDATE.as_secs();
        let cert = identity(1000, 1000 + backdate + 3600);
        let at = |cert: &CertIdentity, f| {
            renewal_time(cert, f)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let issued = 1000 + backdate;
        assert_eq!(at(&cert, 0.5), issued + 1800);
        assert_eq!(at(&cert, 0.8), issued + 2880);
        // Ten seconds (a test lifetime): between 5 and 8 s after issue, never in the past.
        let short = identity(1000, 1000 + backdate + 10);
        assert_eq!(at(&short, 0.5), issued + 5);
        assert_eq!(at(&short, 0.8), issued + 8);
        for _ in 0..1000 {
            let f = random_fraction();
            assert!((0.5..=0.8).contains(&f), "{f}");
        }
        // A certificate whose dates are upside down is due at its `not_after` (long past).
        assert_eq!(
            renewal_time(&identity(5000, 4000), 0.5),
            SystemTime::UNIX_EPOCH + Duration::from_secs(4000)
        );
    }
}
