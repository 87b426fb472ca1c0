//! The `Swarm` object of `GET /swarm` (moby's `swarm.Swarm`: `ClusterInfo` plus
//! `JoinTokens`) and the `TLSInfo` shared with nodes, built from the Control API's `Cluster`.
//!
//! - `TLSInfo` is the root CA: its PEM certificate (`TrustRoot`, what `docker swarm ca`
//!   prints) and, as moby sends them, the DER of its subject and of its public key
//!   (`CertIssuerSubject`, `CertIssuerPublicKey`, base64 in JSON), read from the certificate.
//! - `DefaultAddrPool`/`SubnetSize` are the pool overlay networks without a subnet take theirs
//!   from (the allocator's 10.0.0.0/8 in /24s), which Shoal does use; they are fixed, so an
//!   init asking for others is refused.
//! - `DataPathPort` is 0: Shoal has no data plane (no VXLAN) yet, so there is no port to
//!   report, and `docker info` leaves out its "Data Path Port" line.

use base64::Engine;
use serde::{Serialize, Serializer};
use shoal_api::v1::Cluster;

use super::spec::{Spec, from_cluster_spec};
use crate::shapes::ObjectMeta;

/// The address pool overlay networks take subnets from (the allocator's
/// `DEFAULT_ADDRESS_POOL`).
pub const DEFAULT_ADDR_POOL: &str = "10.0.0.0/8";
/// The size of those subnets (the allocator's `DEFAULT_SUBNET_SIZE`).
pub const SUBNET_SIZE: u32 = 24;

fn base64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// moby's `swarm.TLSInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TlsInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trust_root: String,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "base64")]
    pub cert_issuer_subject: Vec<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "base64")]
    pub cert_issuer_public_key: Vec<u8>,
}

impl TlsInfo {
    /// The TLS information of a root CA certificate (PEM).
    pub fn from_root_pem(pem: &[u8]) -> TlsInfo {
        let (subject, public_key) = der_of_pem(pem)
            .and_then(|der| subject_and_key(&der))
            .unwrap_or_default();
        TlsInfo {
            trust_root: String::from_utf8_lossy(pem).into_owned(),
            cert_issuer_subject: subject,
            cert_issuer_public_key: public_key,
        }
    }

    /// The TLS information of the cluster's root CA.
    pub fn of_cluster(cluster: &Cluster) -> TlsInfo {
        match cluster.root_ca.as_ref() {
            Some(root) if !root.ca_cert.is_empty() => TlsInfo::from_root_pem(&root.ca_cert),
            _ => TlsInfo::default(),
        }
    }
}

/// moby's `swarm.ClusterInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterInfo {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    pub spec: Spec,
    #[serde(rename = "TLSInfo")]
    pub tls_info: TlsInfo,
    pub root_rotation_in_progress: bool,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub data_path_port: u32,
}

/// moby's `swarm.JoinTokens`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}

/// moby's `swarm.Swarm`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Swarm {
    #[serde(flatten)]
    pub cluster_info: ClusterInfo,
    pub join_tokens: JoinTokens,
}

impl ClusterInfo {
    pub fn from_cluster(cluster: &Cluster) -> ClusterInfo {
        ClusterInfo {
            meta: ObjectMeta::from_proto(cluster.meta.as_ref()),
            spec: from_cluster_spec(&cluster.spec.clone().unwrap_or_default()),
            tls_info: TlsInfo::of_cluster(cluster),
            root_rotation_in_progress: cluster
                .root_ca
                .as_ref()
                .is_some_and(|r| r.root_rotation.is_some()),
            default_addr_pool: vec![DEFAULT_ADDR_POOL.to_string()],
            subnet_size: SUBNET_SIZE,
            data_path_port: 0,
        }
    }
}

impl Swarm {
    pub fn from_cluster(cluster: &Cluster) -> Swarm {
        let tokens = cluster
            .root_ca
            .as_ref()
            .and_then(|r| r.join_tokens.clone())
            .unwrap_or_default();
        Swarm {
            cluster_info: ClusterInfo::from_cluster(cluster),
            join_tokens: JoinTokens {
                worker: tokens.worker,
                manager: tokens.manager,
            },
        }
    }
}

/// The DER of the first certificate of a PEM text.
fn der_of_pem(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
    let end = body.find("-----END CERTIFICATE-----")?;
    let b64: String = body[..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One DER element at the start of `der`: its tag, and the whole element and its content as
/// ranges of `der`.
fn element(der: &[u8]) -> Option<(u8, usize, std::ops::Range<usize>)> {
    let tag = *der.first()?;
    let first = *der.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    (end <= der.len()).then_some((tag, end, header..end))
}

/// The DER of a certificate's subject and of its subject public key info (Go's
/// `RawSubject` and `RawSubjectPublicKeyInfo`).
fn subject_and_key(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, _, content) = element(cert)?;
    let cert = &cert[content];
    let (_, _, tbs) = element(cert)?;
    let mut rest = &cert[tbs];
    let mut fields = Vec::new();
    while !rest.is_empty() && fields.len() < 7 {
        let (tag, end, _) = element(rest)?;
        fields.push((tag, &rest[..end]));
        rest = &rest[end..];
    }
    // [0] version (optional), serial, signature, issuer, validity, subject, key.
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let subject = fields.get(skip + 4)?.1.to_vec();
    let key = fields.get(skip + 5)?.1.to_vec();
    Some((subject, key))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_api::v1::{ClusterSpec, JoinTokens as ProtoTokens, Meta, RootCa};

    /// A self-signed certificate (CN=swarm-ca, P-256) made for these tests with openssl.
    pub(crate) const ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUUKdNpA//HHodlz1XQ1yB85kJnGowCgYIKoZIzj0EAwIw
EzERMA8GA1UEAwwIc3dhcm0tY2EwHhcNMjYxMTI3MjEzMzM4WhcNNDYxMTIyMjEz
MzM4WjATMREwDwYDVQQDDAhzd2FybS1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABLHp7In6JxwUwqGMCXft8VDTO64u2/6tzPfLnVXjwi6BxC4IO+rTteYUzsv4
+/PcS2LQicnvulzL1QUIhnwTZqGjUzBRMB0GA1UdDgQWBBRbvtdN7GG49SWLEQVw
DXtkfGROeDAfBgNVHSMEGDAWgBRbvtdN7GG49SWLEQVwDXtkfGROeDAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIHzg3pE1NOYxP2otduElolE37qfp
51JpZFam9L7AAjJYAiEAnqoxWWtVzKRnxSCC8MESciEQyJC/bw/7dCND/Q0i94c=
-----END CERTIFICATE-----
";

    pub(crate) fn cluster() -> Cluster {
        Cluster {
            meta: Some(Meta {
                id: "5dqc9mhqt8yhy2ctmzqdhm8ax".into(),
                version: 11,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_100,
                    nanos: 0,
                }),
            }),
            spec: Some(ClusterSpec {
                ..super::super::spec::default_cluster_spec()
            }),
            root_ca: Some(RootCa {
                ca_key: b"SECRET KEY".to_vec(),
                ca_cert: ROOT_PEM.as_bytes().to_vec(),
                join_tokens: Some(ProtoTokens {
                    worker: "SWMTKN-1-abc-worker".into(),
                    manager: "SWMTKN-1-abc-manager".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn subject_and_key_are_cut_from_the_certificate() {
        let der = der_of_pem(ROOT_PEM.as_bytes()).unwrap();
        let (subject, key) = subject_and_key(&der).unwrap();
        // SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, PrintableString "swarm-ca" } } }
        assert_eq!(subject[0], 0x30);
        assert!(subject.ends_with(b"swarm-ca"));
        // SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING }
        assert_eq!(key[0], 0x30);
        assert_eq!(key.len(), 91);
        assert_eq!(subject_and_key(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(der_of_pem(b"not a certificate"), None);
    }

    #[test]
    fn the_swarm_has_mobys_shape_and_no_key() {
        let json = serde_json::to_string_pretty(&Swarm::from_cluster(&cluster())).unwrap();
        assert!(!json.contains("SECRET"));
        insta::assert_snapshot!(json);
    }
}
