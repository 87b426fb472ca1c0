//! TLS between real sockets: who gets in, who is refused, and renewal without dropping.

use std::time::{Duration, SystemTime};

use shoal_api::v1::health_client::HealthClient;
use shoal_api::v1::health_server::{Health, HealthServer};
use shoal_api::v1::{HealthCheckRequest, HealthCheckResponse, NodeRole};
use shoal_ca::RootCa;
use tonic::{Request, Response, Status};

use super::*;

/// Answers with the caller's role (1 manager, 2 worker, 3 anonymous).
struct WhoAmI;

#[tonic::async_trait]
impl Health for WhoAmI {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let info = peer(&request).ok_or_else(|| Status::internal("no peer info"))?;
        let status = match info.identity.as_ref().map(|i| i.role) {
            Some(NodeRole::Manager) => 1,
            Some(NodeRole::Worker) => 2,
            None => 3,
        };
        Ok(Response::new(HealthCheckResponse { status }))
    }
}

fn root() -> RootCa {
    RootCa::generate(SystemTime::now(), Duration::from_secs(86400)).unwrap()
}

fn issue(
    root: &RootCa,
    id: &str,
    role: NodeRole,
    cluster: &str,
    at: SystemTime,
) -> NodeCertificates {
    let (key_pem, csr) = shoal_ca::node_key_and_csr().unwrap();
    let cert_pem = shoal_ca::issue_node_certificate(
        root,
        &csr,
        id,
        role,
        cluster,
        at,
        Duration::from_secs(3600),
    )
    .unwrap();
    NodeCertificates {
        root_pem: root.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

fn node(root: &RootCa, id: &str, role: NodeRole) -> Credentials {
    Credentials::new(issue(root, id, role, "cluster", SystemTime::now())).unwrap()
}

struct Server {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(credentials: Credentials) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(HealthServer::new(WhoAmI))
            .serve_with_incoming(listen(listener, credentials))
            .await;
    });
    Server { addr, task }
}

/// The role the server saw, or the error text of the dial or the call.
async fn call(dialer: &Dialer, addr: &str) -> Result<i32, String> {
    let channel = dialer.connect(addr).await.map_err(|e| e.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| format!("{s}"))
}

#[tokio::test]
async fn the_server_learns_who_calls() {
    let root = root();
    let server = serve(node(&root, "manager1", NodeRole::Manager)).await;
    let manager = Dialer::mutual(node(&root, "manager2", NodeRole::Manager));
    let worker = Dialer::mutual(node(&root, "worker1", NodeRole::Worker));
    let anonymous = Dialer::anonymous(&root.cert_pem).unwrap();
    assert_eq!(call(&manager, &server.addr).await, Ok(1));
    assert_eq!(call(&worker, &server.addr).await, Ok(2));
    assert_eq!(call(&anonymous, &server.addr).await, Ok(3));
    assert_eq!(call(&Dialer::unverified(), &server.addr).await, Ok(3));
}

#[tokio::test]
async fn certificates_from_another_ca_or_expired_are_refused_at_the_handshake() {
    let root = root();
    let server = serve(node(&root, "manager1", NodeRole::Manager)).await;
    // A certificate from another CA, presented as if it belonged.
    let other = root_other();
    let mut foreign = issue(
        &other,
        "intruder",
        NodeRole::Manager,
        "cluster",
        SystemTime::now(),
    );
    let foreign_key_cert = foreign.clone();
    foreign.root_pem = root.cert_pem.clone();
    let refused = call(
        &Dialer::mutual(Credentials::new(foreign).unwrap()),
        &server.addr,
    )
    .await;
    assert!(
        refused.is_err(),
        "a foreign certificate got in: {refused:?}"
    );
    // An expired certificate of the right CA: issued two hours ago for one hour.
    let expired = issue(
        &root,
        "old",
        NodeRole::Manager,
        "cluster",
        SystemTime::now() - Duration::from_secs(7200),
    );
    let refused = call(
        &Dialer::mutual(Credentials::new(expired).unwrap()),
        &server.addr,
    )
    .await;
    assert!(
        refused.is_err(),
        "an expired certificate got in: {refused:?}"
    );
    // The other way round: a server of another CA is refused by our dialers.
    let impostor = serve(Credentials::new(foreign_key_cert).unwrap()).await;
    let ours = Dialer::mutual(node(&root, "manager2", NodeRole::Manager));
    assert!(call(&ours, &impostor.addr).await.is_err());
    assert!(
        call(&Dialer::anonymous(&root.cert_pem).unwrap(), &impostor.addr)
            .await
            .is_err()
    );
}

fn root_other() -> RootCa {
    root()
}

#[tokio::test]
async fn only_managers_of_our_cluster_are_servers() {
    let root = root();
    // A worker certificate cannot serve as a manager (it does not even name `shoal-ca`).
    let worker_server = serve(node(&root, "worker1", NodeRole::Worker)).await;
    let manager = Dialer::mutual(node(&root, "manager2", NodeRole::Manager));
    let refused = call(&manager, &worker_server.addr).await.unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    // A manager certificate of the same root but another cluster ID.
    let other_cluster = serve(
        Credentials::new(issue(
            &root,
            "m9",
            NodeRole::Manager,
            "other",
            SystemTime::now(),
        ))
        .unwrap(),
    )
    .await;
    let refused = call(&manager, &other_cluster.addr).await.unwrap_err();
    assert!(refused.contains("not ours"), "{refused}");
}

#[tokio::test]
async fn renewed_credentials_apply_to_new_connections_and_keep_old_ones() {
    let root = root();
    let server_credentials = node(&root, "manager1", NodeRole::Manager);
    let server = serve(server_credentials.clone()).await;
    let client_credentials = node(&root, "worker1", NodeRole::Worker);
    let dialer = Dialer::mutual(client_credentials.clone());
    let channel = dialer.connect(&server.addr).await.unwrap();
    let mut open = HealthClient::new(channel);
    assert_eq!(
        open.check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status,
        2
    );

    // Both sides renew; the worker is promoted on the way.
    let before = server_credentials.identity().not_after;
    std::thread::sleep(Duration::from_millis(1100));
    server_credentials
        .update(issue(
            &root,
            "manager1",
            NodeRole::Manager,
            "cluster",
            SystemTime::now(),
        ))
        .unwrap();
    client_credentials
        .update(issue(
            &root,
            "worker1",
            NodeRole::Manager,
            "cluster",
            SystemTime::now(),
        ))
        .unwrap();
    assert!(server_credentials.identity().not_after > before);
    // The open connection keeps going; a new one carries the new role.
    assert_eq!(
        open.check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status,
        2
    );
    assert_eq!(call(&dialer, &server.addr).await, Ok(1));

    // Unusable certificates change nothing.
    let mut broken = client_credentials.certificates();
    broken.key_pem = issue(&root, "x", NodeRole::Worker, "cluster", SystemTime::now()).key_pem;
    assert!(client_credentials.update(broken).is_err());
    assert_eq!(client_credentials.identity().role, NodeRole::Manager);
    assert_eq!(call(&dialer, &server.addr).await, Ok(1));
}

#[test]
fn a_root_file_must_hold_exactly_one_certificate() {
    let root = root();
    let smuggled = format!("{}{}", root.cert_pem, root_other().cert_pem);
    assert!(Dialer::anonymous(&smuggled).is_err());
    let mut certificates = issue(&root, "n", NodeRole::Worker, "cluster", SystemTime::now());
    certificates.root_pem = smuggled;
    assert!(Credentials::new(certificates).is_err());
}
