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
//!
//! **Root rotation.** The renewer also keeps the node's *trust*: the roots the dispatcher's
//! session messages name (the cluster's root; the old and the new one while the root is
//! rotated) replace the node's own, in memory and in `root-ca.crt`, when the agent passes
//! them on ([`RenewalRequest::trust`]). Trust changes and renewals are made by this one task,
//! so neither undoes the other. A certificate marked `ROTATE` is renewed at once, as one
//! marked `RENEW`; during a rotation the CA answers with a certificate from the new root
//! followed by the old root's cross-signature of it. What the node then holds is what it
//! reports in its node description ([`tls_info`]): the roots it trusts and who signed its
//! certificate — the manager finishes a rotation only when every node reports the new root.
//!
//! A new certificate is saved to disk before it is used: a node that reports (through its
//! description) a certificate from the new root always has that certificate on disk.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shoal_api::clock::Clock;
use shoal_api::v1::node_ca_client::NodeCaClient;
use shoal_api::v1::{
    IssueNodeCertificateRequest, NodeCertificateStatusRequest, NodeRole, NodeTlsInfo,
};
use shoal_ca::NodeIdentity as CertIdentity;
use shoal_tls::{Credentials, Dialer, NodeCertificates};
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::Channel;

use crate::error::NodeError;
use crate::keys::NodeKeys;

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
    keys: &NodeKeys,
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
    // Checked, then saved, then used: once anything reports the new certificate, it is on
    // disk.
    Credentials::new(certificates.clone())
        .map_err(|e| NodeError::Refused(format!("the CA sent an unusable certificate: {e}")))?;
    crate::certificates::save_certificates(keys, &certificates)?;
    credentials
        .update(certificates)
        .map_err(|e| NodeError::Refused(format!("the CA sent an unusable certificate: {e}")))?;
    Ok(credentials.identity())
}

/// Makes the node trust `root_pem` (the roots its session named) instead of its own, in
/// memory and on disk — and, once that is the one root that signed its certificate, drops
/// the chain the certificate came with. Returns whether anything changed.
pub fn trust(
    keys: &NodeKeys,
    credentials: &Credentials,
    root_pem: &str,
) -> Result<bool, NodeError> {
    let mut certificates = credentials.certificates();
    if certificates.root_pem == root_pem {
        return Ok(false);
    }
    certificates.root_pem = root_pem.to_string();
    // Trusting one root that signed our certificate (a root rotation completed): the chain
    // that went with it (the new root cross-signed by the old) is of no use to anyone any
    // more — every node trusts the new root — and the certificate is kept alone, chaining to
    // the new root only.
    let single_root = shoal_ca::certificates_der(root_pem).is_ok_and(|r| r.len() == 1);
    if single_root
        && shoal_ca::certificates_der(&certificates.cert_pem).is_ok_and(|c| c.len() > 1)
        && shoal_ca::issued_by(&certificates.cert_pem, root_pem)
        && let Some(leaf) = shoal_ca::first_certificate_pem(&certificates.cert_pem)
    {
        certificates.cert_pem = leaf;
    }
    Credentials::new(certificates.clone()).map_err(|e| {
        NodeError::Refused(format!("the roots the cluster named cannot be used: {e}"))
    })?;
    crate::certificates::save_certificates(keys, &certificates)?;
    credentials.update(certificates).map_err(|e| {
        NodeError::Refused(format!("the roots the cluster named cannot be used: {e}"))
    })?;
    Ok(true)
}

/// What this node holds, as its node description reports it (moby's `TLSInfo`): the roots it
/// trusts, and the subject and public key of whoever signed its certificate (the cross-signed
/// root in its chain, or the trusted root that did). Empty issuer fields if none of those did.
pub fn tls_info(credentials: &Credentials) -> NodeTlsInfo {
    let certificates = credentials.certificates();
    let issuer = shoal_ca::issuer_of(&certificates.cert_pem, &certificates.root_pem);
    NodeTlsInfo {
        trust_root: certificates.root_pem.into_bytes(),
        cert_issuer_subject: issuer
            .as_ref()
            .map(|i| i.subject.clone())
            .unwrap_or_default(),
        cert_issuer_public_key: issuer.map(|i| i.public_key).unwrap_or_default(),
    }
}

/// Renews this node's certificate when it is due, or at once when asked, and keeps the roots
/// it trusts as the cluster says.
pub struct Renewer {
    keys: NodeKeys,
    credentials: Credentials,
    managers: Managers,
    clock: Arc<dyn Clock>,
    check_every: Duration,
    requested: RenewalRequest,
}

/// Asks a running [`Renewer`] to renew now (the cluster marked the certificate `RENEW` or
/// `ROTATE`), or to trust other roots.
#[derive(Clone, Default)]
pub struct RenewalRequest {
    wake: Arc<Notify>,
    /// Renew if the node still holds one of these certificates (an empty one: whatever it
    /// holds). A request names the certificate it is about, so one that arrives while a
    /// renewal is already under way (a session message sent before the CA's answer was
    /// recorded) does not renew a second time.
    renew: Arc<Mutex<Vec<String>>>,
    trust: Arc<Mutex<Option<String>>>,
}

impl RenewalRequest {
    /// Renew at once.
    pub fn request(&self) {
        self.request_replacing(String::new());
    }

    /// Renew at once if the node still holds `cert_pem` by then.
    pub fn request_replacing(&self, cert_pem: String) {
        self.renew.lock().expect("renew lock").push(cert_pem);
        self.wake.notify_one();
    }

    /// Trust `root_pem` from now on (the roots a session message named). The latest wins.
    pub fn trust(&self, root_pem: String) {
        *self.trust.lock().expect("trust lock") = Some(root_pem);
        self.wake.notify_one();
    }

    fn take_trust(&self) -> Option<String> {
        self.trust.lock().expect("trust lock").take()
    }

    /// Whether a request asks to replace `held` (and forgets the requests). Certificates are
    /// compared without their chains, which a completed root rotation drops.
    fn take_renew(&self, held: &str) -> bool {
        let leaf = |pem: &str| {
            shoal_ca::certificates_der(pem)
                .ok()
                .map(|mut c| c.remove(0))
        };
        let held = leaf(held);
        std::mem::take(&mut *self.renew.lock().expect("renew lock"))
            .iter()
            .any(|about| about.is_empty() || leaf(about) == held)
    }
}

impl Renewer {
    pub fn new(
        keys: NodeKeys,
        credentials: Credentials,
        managers: Managers,
        clock: Arc<dyn Clock>,
        check_every: Duration,
    ) -> Self {
        Self {
            keys,
            credentials,
            managers,
            clock,
            check_every,
            requested: RenewalRequest::default(),
        }
    }

    /// A handle that makes the renewer renew at once, or trust other roots.
    pub fn requester(&self) -> RenewalRequest {
        self.requested.clone()
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
                () = self.requested.wake.notified() => {}
                () = tokio::time::sleep(until_due) => {}
            }
            // Trust first: a renewal asked for with new roots keeps them.
            if let Some(root_pem) = self.requested.take_trust() {
                match trust(&self.keys, &self.credentials, &root_pem) {
                    Ok(true) => tracing::info!(
                        "this node now trusts the root(s) the cluster names ({} certificate(s))",
                        shoal_ca::certificates_der(&root_pem).map_or(0, |c| c.len())
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{e}; keeping the roots this node trusts"),
                }
            }
            if self
                .requested
                .take_renew(&self.credentials.certificates().cert_pem)
            {
                due = SystemTime::UNIX_EPOCH;
            }
            if self.clock.now() < due {
                continue;
            }
            let before = self.credentials.identity().role;
            match renew(&self.keys, &self.credentials, &self.managers).await {
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

    fn issue(root: &shoal_ca::RootCa, chain: &str, trust: &str) -> NodeCertificates {
        let (key_pem, csr) = shoal_ca::node_key_and_csr().unwrap();
        let cert = shoal_ca::issue_node_certificate(
            root,
            &csr,
            "n1",
            NodeRole::Worker,
            "c1",
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
        NodeCertificates {
            root_pem: trust.to_string(),
            cert_pem: format!("{cert}{chain}"),
            key_pem,
        }
    }

    fn root() -> shoal_ca::RootCa {
        shoal_ca::RootCa::generate(SystemTime::now(), Duration::from_secs(86400)).unwrap()
    }

    #[test]
    fn a_request_names_the_certificate_it_is_about() {
        let r = RenewalRequest::default();
        let (a, b) = (
            issue(&root(), "", "").cert_pem,
            issue(&root(), "", "").cert_pem,
        );
        assert!(!r.take_renew(&a), "nothing asked");
        r.request_replacing(a.clone());
        assert!(!r.take_renew(&b), "already replaced");
        assert!(!r.take_renew(&a), "forgotten once looked at");
        r.request_replacing(a.clone());
        r.request_replacing(b.clone());
        assert!(r.take_renew(&a));
        r.request();
        assert!(r.take_renew(&b), "a plain request renews whatever is held");
        // The chain does not matter: the node's own certificate does.
        let old = root();
        let new = root();
        let cross = new.cross_signed_by(&old).unwrap();
        let chained = issue(&new, &cross, "").cert_pem;
        let alone = shoal_ca::first_certificate_pem(&chained).unwrap();
        r.request_replacing(chained);
        assert!(r.take_renew(&alone));
    }

    #[test]
    fn trusting_the_roots_of_a_rotation_then_the_new_root_alone_drops_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let old = root();
        let new = root();
        let cross = new.cross_signed_by(&old).unwrap();
        // A node renewed during the rotation: a new certificate with its chain, trusting the
        // old root still.
        let start = issue(&new, &cross, &old.cert_pem);
        let keys = NodeKeys::new(dir.path());
        crate::certificates::save_certificates(&keys, &start).unwrap();
        let credentials = Credentials::new(start.clone()).unwrap();
        let changes = credentials.changes();
        let reported = tls_info(&credentials);
        let new_issuer = shoal_ca::root_issuer(&new.cert_pem).unwrap();
        assert_eq!(reported.cert_issuer_public_key, new_issuer.public_key);
        assert_eq!(reported.trust_root, old.cert_pem.as_bytes());

        // The bundle: both roots, the chain kept.
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        assert!(trust(&keys, &credentials, &both).unwrap());
        assert!(!trust(&keys, &credentials, &both).unwrap(), "nothing new");
        assert_eq!(credentials.certificates().cert_pem, start.cert_pem);
        assert_eq!(*changes.borrow(), 1);
        let saved = crate::certificates::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved.root_pem, both);

        // Unusable roots change nothing, in memory or on disk.
        let three = format!("{both}{}", root().cert_pem);
        assert!(trust(&keys, &credentials, &three).is_err());
        assert_eq!(credentials.certificates().root_pem, both);
        assert_eq!(
            crate::certificates::load(dir.path())
                .unwrap()
                .unwrap()
                .root_pem,
            both
        );

        // Completed: the new root alone, and the certificate without its chain.
        assert!(trust(&keys, &credentials, &new.cert_pem).unwrap());
        let now = credentials.certificates();
        assert_eq!(now.root_pem, new.cert_pem);
        assert_eq!(shoal_ca::certificates_der(&now.cert_pem).unwrap().len(), 1);
        assert!(shoal_ca::issued_by(&now.cert_pem, &new.cert_pem));
        assert_eq!(crate::certificates::load(dir.path()).unwrap().unwrap(), now);
        assert_eq!(
            tls_info(&credentials).cert_issuer_public_key,
            new_issuer.public_key
        );

        // A node still on the old root keeps what it holds (it is not the root's to drop).
        let stale = issue(&old, "", &both);
        let credentials = Credentials::new(stale.clone()).unwrap();
        assert!(trust(&keys, &credentials, &old.cert_pem).unwrap());
        assert_eq!(credentials.certificates().cert_pem, stale.cert_pem);
    }
}
