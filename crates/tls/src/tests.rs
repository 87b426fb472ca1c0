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
    let changes = client_credentials.changes();
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

    // Whoever watches the credentials heard of the renewal.
    assert_eq!(*changes.borrow(), 1);

    // Unusable certificates change nothing.
    let mut broken = client_credentials.certificates();
    broken.key_pem = issue(&root, "x", NodeRole::Worker, "cluster", SystemTime::now()).key_pem;
    assert!(client_credentials.update(broken).is_err());
    assert_eq!(*changes.borrow(), 1);
    assert_eq!(client_credentials.identity().role, NodeRole::Manager);
    assert_eq!(call(&dialer, &server.addr).await, Ok(1));
}

#[test]
fn a_root_file_holds_one_root_or_two_during_a_rotation() {
    let root = root();
    let other = root_other();
    let mut certificates = issue(&root, "n", NodeRole::Worker, "cluster", SystemTime::now());
    // Old and new root during a rotation: fine, for credentials and for the anonymous dialer.
    let bundle = format!("{}{}", root.cert_pem, other.cert_pem);
    assert!(Dialer::anonymous(&bundle).is_ok());
    certificates.root_pem = bundle.clone();
    assert!(Credentials::new(certificates.clone()).is_ok());
    // A third, or nothing: refused.
    for bad in [format!("{bundle}{}", root_other().cert_pem), String::new()] {
        assert!(Dialer::anonymous(&bad).is_err(), "{bad}");
        certificates.root_pem = bad;
        assert!(Credentials::new(certificates.clone()).is_err());
    }
}

/// A node certificate from `new` presented as a rotation hands it out: followed by `new`
/// cross-signed by `old`, trusting `roots`.
fn issue_during_rotation(
    new: &RootCa,
    cross: &str,
    id: &str,
    role: NodeRole,
    roots: &str,
) -> Credentials {
    let mut certificates = issue(new, id, role, "cluster", SystemTime::now());
    certificates.cert_pem = format!("{}{cross}", certificates.cert_pem);
    certificates.root_pem = roots.to_string();
    Credentials::new(certificates).unwrap()
}

fn trusting(root: &RootCa, id: &str, role: NodeRole, roots: &str) -> Credentials {
    let mut certificates = issue(root, id, role, "cluster", SystemTime::now());
    certificates.root_pem = roots.to_string();
    Credentials::new(certificates).unwrap()
}

/// Every pair a root rotation can put on the two ends of a connection: old certificates and
/// new ones (with the cross-signed intermediate), trusting the old root, or both. All of them
/// handshake, in both directions; and the two that must not — a new certificate without its
/// intermediate before its holder's peer trusts the new root, an old certificate once the
/// rotation is over — do not.
#[tokio::test]
async fn old_and_new_certificates_interoperate_during_a_root_rotation() {
    let old = root();
    let new = root_other();
    let cross = new.cross_signed_by(&old).unwrap();
    let only_old = old.cert_pem.clone();
    let both = format!("{}{}", old.cert_pem, new.cert_pem);
    let only_new = new.cert_pem.clone();

    // The ends a rotation produces: (description, credentials maker).
    type Make<'a> = Box<dyn Fn(&str, NodeRole) -> Credentials + 'a>;
    let ends: Vec<(&str, Make)> = vec![
        (
            "old certificate, trusting the old root",
            Box::new(|id: &str, role| trusting(&old, id, role, &only_old)),
        ),
        (
            "old certificate, trusting both roots",
            Box::new(|id: &str, role| trusting(&old, id, role, &both)),
        ),
        (
            "new certificate, trusting the old root",
            Box::new(|id: &str, role| issue_during_rotation(&new, &cross, id, role, &only_old)),
        ),
        (
            "new certificate, trusting both roots",
            Box::new(|id: &str, role| issue_during_rotation(&new, &cross, id, role, &both)),
        ),
    ];
    for (server_is, server) in &ends {
        let listening = serve(server("manager1", NodeRole::Manager)).await;
        for (client_is, client) in &ends {
            let dialer = Dialer::mutual(client("worker1", NodeRole::Worker));
            assert_eq!(
                call(&dialer, &listening.addr).await,
                Ok(2),
                "server: {server_is}; client: {client_is}"
            );
        }
        // A node that has not rejoined yet still dials with the old root alone.
        assert_eq!(
            call(&Dialer::anonymous(&only_old).unwrap(), &listening.addr).await,
            Ok(3),
            "server: {server_is}; anonymous client trusting the old root"
        );
    }

    // Once the rotation is over: new certificates, the new root alone.
    let after = serve(trusting(&new, "manager1", NodeRole::Manager, &only_new)).await;
    let renewed = Dialer::mutual(issue_during_rotation(
        &new,
        &cross,
        "worker1",
        NodeRole::Worker,
        &only_new,
    ));
    assert_eq!(call(&renewed, &after.addr).await, Ok(2));
    // An old certificate is refused then (the rotation waits for every node to renew).
    let stale = Dialer::mutual(trusting(&old, "worker2", NodeRole::Worker, &both));
    assert!(call(&stale, &after.addr).await.is_err());
    // And a new certificate without its intermediate means nothing to a node trusting only
    // the old root: this is why the CA hands the cross-signed certificate out with it.
    let bare = serve(trusting(&new, "manager2", NodeRole::Manager, &both)).await;
    let old_only = Dialer::mutual(trusting(&old, "worker3", NodeRole::Worker, &only_old));
    let refused = call(&old_only, &bare.addr).await.unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
}
