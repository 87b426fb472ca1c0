//! The root CA and node certificates.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use shoal_api::v1::NodeRole;

use crate::{CA_SERVER_NAME, CaError, MANAGER_ROLE_OU, WORKER_ROLE_OU, base36};

fn generate(e: rcgen::Error) -> CaError {
    CaError::Generate(e.to_string())
}

/// The cluster's root CA: certificate and key, both PEM.
#[derive(Clone, Debug)]
pub struct RootCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// SHA-256 of a certificate's DER, in base36 (50 characters): the digest join tokens carry.
pub fn cert_digest(cert_pem: &str) -> Result<String, CaError> {
    let der = pem_to_der(cert_pem)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(base36::encode(digest.as_ref(), 50))
}

/// The DER of the one certificate in `cert_pem`. Anything else in the text — a second
/// certificate above all — is refused: a digest must cover everything that will be trusted.
fn pem_to_der(cert_pem: &str) -> Result<Vec<u8>, CaError> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CaError::InvalidCertificate(format!("not a PEM certificate: {e}")))?;
    if pem.label != "CERTIFICATE" {
        return Err(CaError::InvalidCertificate(format!(
            "expected a CERTIFICATE, found {}",
            pem.label
        )));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(CaError::InvalidCertificate(
            "more than one PEM block where exactly one certificate was expected".into(),
        ));
    }
    Ok(pem.contents)
}

impl RootCa {
    /// A new root: ECDSA P-256, valid from `now` (backdated by an hour against clock skew)
    /// for `lifetime`.
    pub fn generate(now: SystemTime, lifetime: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "shoal-root-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - shoal_api::defaults::CERT_BACKDATE).into();
        params.not_after = (now + lifetime).into();
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The digest of this root, as join tokens carry it.
    pub fn digest(&self) -> Result<String, CaError> {
        cert_digest(&self.cert_pem)
    }
}

/// Who a node certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub role: NodeRole,
    pub cluster_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl NodeIdentity {
    /// When the CA signed the certificate, by the signing manager's clock: `not_before` is
    /// backdated by [`CERT_BACKDATE`](shoal_api::defaults::CERT_BACKDATE) against clock skew,
    /// so the lifetime the cluster gave it runs from here to `not_after`. (Never later than
    /// `not_after`, whatever a certificate's dates say.)
    pub fn issued_at(&self) -> SystemTime {
        (self.not_before + shoal_api::defaults::CERT_BACKDATE).min(self.not_after)
    }

    /// Whether the certificate has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.not_after <= now
    }
}

/// A new node key (ECDSA P-256) and a CSR for it, both PEM. The CSR's subject does not
/// matter: the CA sets it.
pub fn node_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(generate)?;
    Ok((key.serialize_pem(), csr.pem().map_err(generate)?))
}

fn role_ou(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => MANAGER_ROLE_OU,
        NodeRole::Worker => WORKER_ROLE_OU,
    }
}

/// Signs a node certificate for the key in `csr_pem`. Only the CSR's public key is used (its
/// signature is checked first, proving the requester holds the key): the subject is set here
/// — CN = node ID, OU = role, O = cluster ID — and the certificate can never be a CA.
pub fn issue_node_certificate(
    ca: &RootCa,
    csr_pem: &str,
    node_id: &str,
    role: NodeRole,
    cluster_id: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<String, CaError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::InvalidCsr(e.to_string()))?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| CaError::InvalidKey(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| CaError::InvalidCertificate(format!("the root CA: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role_ou(role));
    params
        .distinguished_name
        .push(DnType::OrganizationName, cluster_id);
    let mut names = vec![role_ou(role).to_string(), node_id.to_string()];
    if role == NodeRole::Manager {
        names.push(CA_SERVER_NAME.to_string());
    }
    params.subject_alt_names = names
        .into_iter()
        .map(|n| n.try_into().map(SanType::DnsName))
        .collect::<Result<_, _>>()
        .map_err(|e: rcgen::Error| CaError::InvalidCsr(format!("node ID {node_id:?}: {e}")))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = (now - shoal_api::defaults::CERT_BACKDATE).into();
    params.not_after = (now + lifetime).into();
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(generate)?;
    Ok(cert.pem())
}

/// Reads the identity a node certificate carries. It does not check the signature: TLS
/// verification against the root does that.
pub fn parse_node_certificate(cert_pem: &str) -> Result<NodeIdentity, CaError> {
    parse_node_certificate_der(&pem_to_der(cert_pem)?)
}

/// Like [`parse_node_certificate`], from DER (as TLS hands peer certificates over).
pub fn parse_node_certificate_der(der: &[u8]) -> Result<NodeIdentity, CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let node_id = first(&mut subject.iter_common_name())
        .ok_or_else(|| CaError::InvalidCertificate("no common name (node ID)".into()))?;
    let ou = first(&mut subject.iter_organizational_unit())
        .ok_or_else(|| CaError::InvalidCertificate("no organizational unit (role)".into()))?;
    let cluster_id = first(&mut subject.iter_organization())
        .ok_or_else(|| CaError::InvalidCertificate("no organization (cluster ID)".into()))?;
    let role = match ou.as_str() {
        MANAGER_ROLE_OU => NodeRole::Manager,
        WORKER_ROLE_OU => NodeRole::Worker,
        other => {
            return Err(CaError::InvalidCertificate(format!(
                "unknown role {other:?}"
            )));
        }
    };
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok(NodeIdentity {
        node_id,
        role,
        cluster_id,
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_covers_exactly_one_certificate() {
        let now = SystemTime::now();
        let ca = RootCa::generate(now, Duration::from_secs(3600)).unwrap();
        let other = RootCa::generate(now, Duration::from_secs(3600)).unwrap();
        assert!(cert_digest(&ca.cert_pem).is_ok());
        // A root with a second certificate smuggled after it has no digest at all.
        let smuggled = format!("{}{}", ca.cert_pem, other.cert_pem);
        assert!(cert_digest(&smuggled).is_err());
        assert!(cert_digest(&format!("{}{}", ca.cert_pem, ca.key_pem)).is_err());
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn the_ca_sets_the_subject_whatever_the_csr_asks() {
        let now = SystemTime::now();
        let ca = RootCa::generate(now, 365 * DAY).unwrap();
        // A CSR asking to be a CA manager of another cluster.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut asked = CertificateParams::new(vec!["evil".to_string()]).unwrap();
        asked
            .distinguished_name
            .push(DnType::CommonName, "someone-else");
        asked
            .distinguished_name
            .push(DnType::OrganizationalUnitName, MANAGER_ROLE_OU);
        asked
            .distinguished_name
            .push(DnType::OrganizationName, "other-cluster");
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let cert = issue_node_certificate(
            &ca,
            &csr,
            "node1",
            NodeRole::Worker,
            "cluster1",
            now,
            90 * DAY,
        )
        .unwrap();
        let id = parse_node_certificate(&cert).unwrap();
        assert_eq!(id.node_id, "node1");
        assert_eq!(id.role, NodeRole::Worker);
        assert_eq!(id.cluster_id, "cluster1");
        let left = id.not_after.duration_since(now).unwrap();
        assert!(left > 89 * DAY && left <= 90 * DAY, "{left:?}");
        // The backdate is not lifetime: the certificate counts as issued at `now` (to the
        // second), and has expired from its `not_after` on.
        let issued = id
            .issued_at()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let asked = now.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(issued.as_secs(), asked.as_secs());
        assert!(!id.expired_at(now));
        assert!(id.expired_at(id.not_after));
        let der = pem_to_der(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!parsed.is_ca());
    }

    /// PEM from DER, for hand-made requests.
    fn pem(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_csr_for_a_key_the_requester_does_not_hold_is_refused() {
        let ca = RootCa::generate(SystemTime::now(), 365 * DAY).unwrap();
        let (_, mine) = node_key_and_csr().unwrap();
        let (_, theirs) = node_key_and_csr().unwrap();
        let der = |p: &str| {
            x509_parser::pem::parse_x509_pem(p.as_bytes())
                .unwrap()
                .1
                .contents
        };
        // Put their public key (a P-256 point, 65 bytes after `03 42 00`) into my request,
        // which stays signed with my key.
        let point = |d: &[u8]| {
            d.windows(4)
                .position(|w| w == [0x03, 0x42, 0x00, 0x04])
                .unwrap()
                + 3
        };
        let (mut forged, theirs) = (der(&mine), der(&theirs));
        let (at, from) = (point(&forged), point(&theirs));
        forged[at..at + 65].copy_from_slice(&theirs[from..from + 65]);
        // The encoding is sound: only the signature no longer matches the key.
        let untouched = pem("CERTIFICATE REQUEST", &der(&mine));
        assert!(
            issue_node_certificate(
                &ca,
                &untouched,
                "n",
                NodeRole::Worker,
                "c",
                SystemTime::now(),
                DAY
            )
            .is_ok()
        );
        let err = issue_node_certificate(
            &ca,
            &pem("CERTIFICATE REQUEST", &forged),
            "n",
            NodeRole::Worker,
            "c",
            SystemTime::now(),
            DAY,
        )
        .unwrap_err();
        assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let (_, csr) = node_key_and_csr().unwrap();
        let ca = RootCa::generate(SystemTime::now(), 365 * DAY).unwrap();
        // Flip a character inside the base64 body: the signature no longer verifies (or the
        // request no longer parses).
        let mut bytes = csr.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let err = issue_node_certificate(
            &ca,
            &tampered,
            "n",
            NodeRole::Worker,
            "c",
            SystemTime::now(),
            DAY,
        )
        .unwrap_err();
        assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    }

    #[test]
    fn managers_carry_the_ca_server_name_and_digests_are_stable() {
        let now = SystemTime::now();
        let ca = RootCa::generate(now, 365 * DAY).unwrap();
        let (_, csr) = node_key_and_csr().unwrap();
        let cert =
            issue_node_certificate(&ca, &csr, "m1", NodeRole::Manager, "c", now, DAY).unwrap();
        let der = pem_to_der(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            sans.contains(CA_SERVER_NAME) && sans.contains(MANAGER_ROLE_OU),
            "{sans}"
        );
        let digest = ca.digest().unwrap();
        assert_eq!(digest.len(), 50);
        assert_eq!(digest, cert_digest(&ca.cert_pem).unwrap());
        let other = RootCa::generate(now, 365 * DAY).unwrap();
        assert_ne!(digest, other.digest().unwrap());
    }
}
