//! The root CA and node certificates, and the pieces of a root rotation: a cross-signed
//! certificate that lets nodes trusting only the old root accept what the new root signs, and
//! a check of which root signed a certificate.
//!
//! A node certificate travels as a *chain* in PEM: the node's own certificate first, then any
//! intermediate (during a root rotation, the cross-signed certificate of the new root). Every
//! reader here takes the first certificate as the node's and lets certificates follow it;
//! [`cert_digest`], which covers what a joining node will trust, still takes exactly one.

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
    let mut certs = certificates_der(cert_pem)?;
    if certs.len() != 1 {
        return Err(CaError::InvalidCertificate(
            "more than one PEM block where exactly one certificate was expected".into(),
        ));
    }
    Ok(certs.remove(0))
}

/// The DER of every certificate in `pem`, in order: at least one, and nothing but
/// certificates (a key or anything else in the text is refused).
pub fn certificates_der(pem: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let mut rest = pem.as_bytes();
    let mut out = Vec::new();
    while !rest.iter().all(u8::is_ascii_whitespace) {
        let (after, block) = x509_parser::pem::parse_x509_pem(rest)
            .map_err(|e| CaError::InvalidCertificate(format!("not a PEM certificate: {e}")))?;
        if block.label != "CERTIFICATE" {
            return Err(CaError::InvalidCertificate(format!(
                "expected a CERTIFICATE, found {}",
                block.label
            )));
        }
        out.push(block.contents);
        rest = after;
    }
    if out.is_empty() {
        return Err(CaError::InvalidCertificate(
            "not a PEM certificate: the text is empty".into(),
        ));
    }
    Ok(out)
}

/// The first certificate of a chain (the node's own).
fn leaf_der(chain_pem: &str) -> Result<Vec<u8>, CaError> {
    Ok(certificates_der(chain_pem)?.remove(0))
}

/// The subject, public key and validity of a root, as a root's parameters.
fn root_params(
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, ROOT_CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// The common name of every root (SwarmKit's roots share theirs too): roots are told apart
/// by their keys, which is what path building checks.
const ROOT_CA_COMMON_NAME: &str = "shoal-root-ca";

/// A random serial number: rcgen's default is derived from the public key, and a
/// cross-signed certificate shares its key with the root it stands for.
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

fn asn1_time(t: x509_parser::time::ASN1Time) -> time::OffsetDateTime {
    t.to_datetime()
}

impl RootCa {
    /// A new root: ECDSA P-256, valid from `now` (backdated by an hour against clock skew)
    /// for `lifetime`.
    pub fn generate(now: SystemTime, lifetime: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let params = root_params(
            (now - shoal_api::defaults::CERT_BACKDATE).into(),
            (now + lifetime).into(),
        );
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate for this root — its subject, its public key, its validity, a CA — signed
    /// by `old`: the intermediate that, presented after a certificate this root signed, lets
    /// a node that trusts only `old` accept it. What a root rotation hands out while nodes
    /// still trust the old root.
    pub fn cross_signed_by(&self, old: &RootCa) -> Result<String, CaError> {
        let der = pem_to_der(&self.cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::InvalidCertificate(format!("the new root: {e}")))?;
        let mut params = root_params(
            asn1_time(cert.validity().not_before),
            asn1_time(cert.validity().not_after),
        );
        params.serial_number = Some(random_serial());
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| CaError::InvalidKey(e.to_string()))?;
        let old_key =
            KeyPair::from_pem(&old.key_pem).map_err(|e| CaError::InvalidKey(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&old.cert_pem, old_key)
            .map_err(|e| CaError::InvalidCertificate(format!("the old root: {e}")))?;
        let cross = params.signed_by(&key, &issuer).map_err(generate)?;
        Ok(cross.pem())
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

/// Reads the identity a node certificate carries — the first certificate of `cert_pem`,
/// which may be followed by its chain. It does not check the signature: TLS verification
/// against the root does that.
pub fn parse_node_certificate(cert_pem: &str) -> Result<NodeIdentity, CaError> {
    parse_node_certificate_der(&leaf_der(cert_pem)?)
}

/// Who signed a certificate, as nodes report it (moby's `TLSInfo`): the issuer's subject and
/// its public key (SubjectPublicKeyInfo), both DER. Roots share their subject; the key tells
/// them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIssuer {
    pub subject: Vec<u8>,
    pub public_key: Vec<u8>,
}

/// The subject and public key of the root `root_pem` (one certificate), as [`CertIssuer`]:
/// what the certificates it signs report as their issuer.
pub fn root_issuer(root_pem: &str) -> Result<CertIssuer, CaError> {
    let der = pem_to_der(root_pem)?;
    let (_, root) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
    Ok(CertIssuer {
        subject: root.subject().as_raw().to_vec(),
        public_key: root.public_key().raw.to_vec(),
    })
}

/// A root as nodes report holding it, in the TLS information of their node description:
/// a certificate it signed, and the root among those they trust.
#[derive(Clone, Debug)]
pub struct RootReport {
    der: Vec<u8>,
    issuer: CertIssuer,
}

impl RootReport {
    /// The report of the root `root_pem` (one certificate).
    pub fn of(root_pem: &str) -> Result<Self, CaError> {
        Ok(RootReport {
            der: pem_to_der(root_pem)?,
            issuer: root_issuer(root_pem)?,
        })
    }

    pub fn issuer(&self) -> &CertIssuer {
        &self.issuer
    }

    /// Whether a node reporting `info` holds a certificate this root signed *and* trusts this
    /// root: what a root rotation waits for, node by node.
    pub fn reported_by(&self, info: &shoal_api::v1::NodeTlsInfo) -> bool {
        info.cert_issuer_subject == self.issuer.subject
            && info.cert_issuer_public_key == self.issuer.public_key
            && std::str::from_utf8(&info.trust_root)
                .ok()
                .and_then(|roots| certificates_der(roots).ok())
                .is_some_and(|roots| roots.contains(&self.der))
    }
}

/// The first certificate of `chain_pem`, as PEM text (the node's own, without its chain).
pub fn first_certificate_pem(chain_pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = chain_pem.find("-----BEGIN CERTIFICATE-----")?;
    let end = chain_pem[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &chain_pem[start..end]))
}

/// Which certificate signed the node certificate at the head of `chain_pem`: one of the
/// chain's own (an intermediate, such as a cross-signed root) or of `roots_pem` (the roots the
/// node trusts). `None` when none of them did.
pub fn issuer_of(chain_pem: &str, roots_pem: &str) -> Option<CertIssuer> {
    let chain = certificates_der(chain_pem).ok()?;
    let roots = certificates_der(roots_pem).unwrap_or_default();
    let (leaf, rest) = chain.split_first()?;
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf).ok()?;
    rest.iter().chain(roots.iter()).find_map(|candidate| {
        let (_, issuer) = x509_parser::parse_x509_certificate(candidate).ok()?;
        signed(&leaf, &issuer).then(|| CertIssuer {
            subject: issuer.subject().as_raw().to_vec(),
            public_key: issuer.public_key().raw.to_vec(),
        })
    })
}

/// Whether `issuer` signed `cert`: its subject is the certificate's issuer and its key
/// verifies the signature (ECDSA P-256 / SHA-256, what Shoal's roots use).
fn signed(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    issuer: &x509_parser::certificate::X509Certificate<'_>,
) -> bool {
    if cert.issuer().as_raw() != issuer.subject().as_raw()
        || cert.signature_algorithm.algorithm
            != x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
    {
        return false;
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        &issuer.public_key().subject_public_key.data,
    );
    key.verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .is_ok()
}

/// Whether the first certificate of `cert_pem` (a node certificate, maybe followed by its
/// chain) was signed by the root `root_pem`: its issuer is the root's subject and its
/// signature verifies with the root's public key. Any certificate this cannot read, or signed
/// with another algorithm than the ECDSA P-256 / SHA-256 Shoal's roots use, was not.
pub fn issued_by(cert_pem: &str, root_pem: &str) -> bool {
    let (Ok(leaf), Ok(root)) = (leaf_der(cert_pem), pem_to_der(root_pem)) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, root))) = (
        x509_parser::parse_x509_certificate(&leaf),
        x509_parser::parse_x509_certificate(&root),
    ) else {
        return false;
    };
    signed(&leaf, &root)
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

    #[test]
    fn a_cross_signed_root_has_the_new_roots_subject_and_key_and_the_old_one_as_issuer() {
        let now = SystemTime::now();
        let old = RootCa::generate(now, 365 * DAY).unwrap();
        let new = RootCa::generate(now, 365 * DAY).unwrap();
        let cross = new.cross_signed_by(&old).unwrap();
        let parsed = |pem: &str| pem_to_der(pem).unwrap();
        let (cross_der, new_der, old_der) =
            (parsed(&cross), parsed(&new.cert_pem), parsed(&old.cert_pem));
        let (_, cross_cert) = x509_parser::parse_x509_certificate(&cross_der).unwrap();
        let (_, new_cert) = x509_parser::parse_x509_certificate(&new_der).unwrap();
        let (_, old_cert) = x509_parser::parse_x509_certificate(&old_der).unwrap();
        assert_eq!(cross_cert.subject().as_raw(), new_cert.subject().as_raw());
        assert_eq!(cross_cert.public_key().raw, new_cert.public_key().raw);
        assert_eq!(cross_cert.issuer().as_raw(), old_cert.subject().as_raw());
        assert_eq!(cross_cert.validity(), new_cert.validity());
        assert!(cross_cert.is_ca());
        // Not the new root itself: another serial, and signed by the old key, not its own.
        assert_ne!(cross_cert.raw_serial(), new_cert.raw_serial());
        assert!(issued_by(&cross, &old.cert_pem));
        assert!(!issued_by(&cross, &new.cert_pem));
        // Cross-signing needs the old root's key.
        let mut keyless = old.clone();
        keyless.key_pem = new.cert_pem.clone();
        assert!(matches!(
            new.cross_signed_by(&keyless),
            Err(CaError::InvalidKey(_))
        ));
    }

    #[test]
    fn a_node_certificate_with_its_chain_reads_as_its_first_certificate() {
        let now = SystemTime::now();
        let old = RootCa::generate(now, 365 * DAY).unwrap();
        let new = RootCa::generate(now, 365 * DAY).unwrap();
        let cross = new.cross_signed_by(&old).unwrap();
        let (_, csr) = node_key_and_csr().unwrap();
        let leaf =
            issue_node_certificate(&new, &csr, "w1", NodeRole::Worker, "c1", now, DAY).unwrap();
        let chain = format!("{leaf}{cross}");
        assert_eq!(certificates_der(&chain).unwrap().len(), 2);
        assert_eq!(
            parse_node_certificate(&chain).unwrap(),
            parse_node_certificate(&leaf).unwrap()
        );
        assert_eq!(parse_node_certificate(&chain).unwrap().node_id, "w1");
        // Which root signed it: the new one, whether or not the chain follows.
        assert!(issued_by(&chain, &new.cert_pem));
        assert!(issued_by(&leaf, &new.cert_pem));
        assert!(!issued_by(&chain, &old.cert_pem));
        // A certificate the old root signed is the old root's.
        let (_, csr) = node_key_and_csr().unwrap();
        let before =
            issue_node_certificate(&old, &csr, "w2", NodeRole::Worker, "c1", now, DAY).unwrap();
        assert!(issued_by(&before, &old.cert_pem));
        assert!(!issued_by(&before, &new.cert_pem));
        // What a node reports as its issuer: the cross-signed root in its chain (the new
        // root's subject and key), or the root it trusts that signed it.
        let new_issuer = root_issuer(&new.cert_pem).unwrap();
        assert_eq!(issuer_of(&chain, &old.cert_pem), Some(new_issuer.clone()));
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        assert_eq!(issuer_of(&leaf, &both), Some(new_issuer.clone()));
        assert_eq!(issuer_of(&leaf, &old.cert_pem), None);
        assert_eq!(
            issuer_of(&before, &both),
            Some(root_issuer(&old.cert_pem).unwrap())
        );
        assert_ne!(root_issuer(&old.cert_pem).unwrap(), new_issuer);
        assert_eq!(
            root_issuer(&old.cert_pem).unwrap().subject,
            new_issuer.subject
        );
        // What the rotation waits for: a certificate from the new root, and the new root
        // trusted.
        let report = RootReport::of(&new.cert_pem).unwrap();
        let info = |issuer: &CertIssuer, trust: &str| shoal_api::v1::NodeTlsInfo {
            trust_root: trust.as_bytes().to_vec(),
            cert_issuer_subject: issuer.subject.clone(),
            cert_issuer_public_key: issuer.public_key.clone(),
        };
        let old_issuer = root_issuer(&old.cert_pem).unwrap();
        assert!(report.reported_by(&info(&new_issuer, &both)));
        assert!(report.reported_by(&info(&new_issuer, &new.cert_pem)));
        assert!(!report.reported_by(&info(&new_issuer, &old.cert_pem)));
        assert!(!report.reported_by(&info(&old_issuer, &both)));
        assert!(!report.reported_by(&info(&new_issuer, "")));
        // The node's own certificate, without its chain.
        assert_eq!(
            first_certificate_pem(&chain).as_deref(),
            Some(leaf.as_str())
        );
        assert_eq!(first_certificate_pem(&leaf).as_deref(), Some(leaf.as_str()));
        assert_eq!(first_certificate_pem("nothing"), None);
        // Garbage is nobody's.
        assert!(!issued_by("not a certificate", &old.cert_pem));
        assert!(!issued_by(&before, "not a certificate"));
        // A chain is no digest: a digest covers exactly one certificate.
        assert!(cert_digest(&chain).is_err());
        // Only certificates may follow the node's own.
        assert!(parse_node_certificate(&format!("{leaf}{}", new.key_pem)).is_err());
        assert!(certificates_der("").is_err());
    }

    #[test]
    fn a_forged_issuer_name_is_not_enough() {
        // Every root has the same subject: only the signature tells them apart.
        let now = SystemTime::now();
        let ours = RootCa::generate(now, 365 * DAY).unwrap();
        let theirs = RootCa::generate(now, 365 * DAY).unwrap();
        let (_, csr) = node_key_and_csr().unwrap();
        let cert =
            issue_node_certificate(&theirs, &csr, "x", NodeRole::Manager, "c", now, DAY).unwrap();
        let leaf = pem_to_der(&cert).unwrap();
        let root = pem_to_der(&ours.cert_pem).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(&root).unwrap();
        assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
        assert!(!issued_by(&cert, &ours.cert_pem));
    }
}
