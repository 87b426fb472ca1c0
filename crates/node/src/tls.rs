//! Mutual TLS between nodes: server and client configurations from a node's certificates,
//! and the identity of the peer on the other end of a call.
//!
//! Managers serve with their certificate (which names `shoal-ca`, the name clients check)
//! and ask clients for one, optionally: calls that a node makes before it has a certificate
//! (fetching the root, asking for its first certificate) stay possible, and every other call
//! checks the identity it gets here. rustls with the ring provider; TLS 1.2 minimum, 1.3
//! preferred (rustls' defaults).

use shoal_ca::{CA_SERVER_NAME, NodeIdentity};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A node's certificates, PEM.
#[derive(Clone, Debug)]
pub struct NodeCertificates {
    pub root_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeCertificates {
    /// Serving: our certificate; client certificates verified against the root when given.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.root_pem))
            .client_auth_optional(true)
    }

    /// Dialing a manager: its certificate must chain to the root and name `shoal-ca`; ours
    /// goes along.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.root_pem))
            .domain_name(CA_SERVER_NAME)
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// The identity of the peer that made `request`, if it presented a certificate (which TLS
/// already verified against the root).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<NodeIdentity> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    shoal_ca::parse_node_certificate_der(leaf.as_ref()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use shoal_api::v1::health_client::HealthClient;
    use shoal_api::v1::health_server::{Health, HealthServer};
    use shoal_api::v1::{HealthCheckRequest, HealthCheckResponse, NodeRole};
    use shoal_ca::RootCa;
    use tonic::{Code, Request, Response, Status};

    use super::*;

    /// Answers with the caller's role; refuses callers without a certificate.
    struct WhoAmI;

    #[tonic::async_trait]
    impl Health for WhoAmI {
        async fn check(
            &self,
            request: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            let who = peer_identity(&request)
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            Ok(Response::new(HealthCheckResponse {
                status: if who.role == NodeRole::Manager { 1 } else { 2 },
            }))
        }
    }

    fn node(root: &RootCa, id: &str, role: NodeRole) -> NodeCertificates {
        let (key_pem, csr) = shoal_ca::node_key_and_csr().unwrap();
        let cert_pem = shoal_ca::issue_node_certificate(
            root,
            &csr,
            id,
            role,
            "cluster",
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
        NodeCertificates {
            root_pem: root.cert_pem.clone(),
            cert_pem,
            key_pem,
        }
    }

    #[tokio::test]
    async fn mutual_tls_carries_the_callers_identity_and_refuses_foreign_roots() {
        let root = RootCa::generate(SystemTime::now(), Duration::from_secs(86400)).unwrap();
        let manager = node(&root, "manager1", NodeRole::Manager);
        let worker = node(&root, "worker1", NodeRole::Worker);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(manager.server())
                .unwrap()
                .add_service(HealthServer::new(WhoAmI))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let call = |tls: ClientTlsConfig| async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await?;
            Ok::<_, tonic::transport::Error>(
                HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await,
            )
        };
        // A manager and a worker of this cluster: the server learns who they are.
        assert_eq!(
            call(manager.client())
                .await
                .unwrap()
                .unwrap()
                .into_inner()
                .status,
            1
        );
        assert_eq!(
            call(worker.client())
                .await
                .unwrap()
                .unwrap()
                .into_inner()
                .status,
            2
        );
        // No client certificate: TLS lets the call through, the handler refuses it.
        let anonymous = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&root.cert_pem))
            .domain_name(CA_SERVER_NAME);
        assert_eq!(
            call(anonymous).await.unwrap().unwrap_err().code(),
            Code::Unauthenticated
        );
        // A certificate from another CA: the handshake fails.
        let other_root = RootCa::generate(SystemTime::now(), Duration::from_secs(86400)).unwrap();
        let mut foreign = node(&other_root, "intruder", NodeRole::Manager);
        foreign.root_pem = root.cert_pem.clone();
        let refused = call(foreign.client()).await;
        assert!(
            refused.is_err() || refused.unwrap().is_err(),
            "a foreign certificate is refused"
        );
        server.abort();
    }
}
