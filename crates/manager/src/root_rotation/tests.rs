//! The rotation's pieces: starting and completing it on a cluster object, the signer and the
//! trust bundle, each node's progress, the decisions, and rounds of the reconciler on an
//! in-memory store — with nodes renewing, one down, one removed.

use std::time::SystemTime;

use shoal_api::v1::{
    Certificate, Meta, NodeDescription, NodeSpec, NodeStatus, NodeTlsInfo, node_spec,
};
use shoal_raft::RaftStatus;
use tonic::Status;

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn cluster() -> Cluster {
    crate::cluster::new_cluster(SystemTime::now()).unwrap()
}

fn root_of(cluster: &Cluster) -> RootCa {
    cluster.root_ca.clone().unwrap()
}

fn ca_root(cert: &[u8], key: &[u8]) -> CaRoot {
    CaRoot {
        cert_pem: pem(cert),
        key_pem: pem(key),
    }
}

#[test]
fn starting_a_rotation_makes_a_new_root_cross_signed_by_the_current_one() {
    let mut root = root_of(&cluster());
    let before = root.clone();
    start(
        &mut root,
        1,
        SystemTime::now(),
        shoal_api::defaults::ROOT_CA_EXPIRY,
    )
    .unwrap();
    assert!(in_progress(&root));
    assert_eq!(root.last_forced_rotation, 1);
    // The current root, its key, its digest and the tokens are untouched until completion.
    assert_eq!(root.ca_cert, before.ca_cert);
    assert_eq!(root.ca_key, before.ca_key);
    assert_eq!(root.ca_cert_hash, before.ca_cert_hash);
    assert_eq!(root.join_tokens, before.join_tokens);
    let rotation = root.root_rotation.clone().unwrap();
    let (old, new, cross) = (
        pem(&root.ca_cert),
        pem(&rotation.ca_cert),
        pem(&rotation.cross_signed_ca_cert),
    );
    assert_ne!(new, old);
    assert!(shoal_ca::issued_by(&cross, &old));
    // The cross-signed root stands for the new root: what it signs chains to the old root.
    assert_eq!(
        shoal_ca::issuer_of(&cross, &old),
        Some(shoal_ca::root_issuer(&old).unwrap())
    );

    // Trust: the current root, then the new one.
    let bundle = pem(&trust_bundle(&root));
    assert_eq!(shoal_ca::certificates_der(&bundle).unwrap().len(), 2);
    assert!(bundle.starts_with(&old));
    assert!(bundle.ends_with(&new));
    assert_eq!(trust_bundle(&before), before.ca_cert);

    // Starting over replaces the pending rotation with a fresh root, cross-signed by the
    // current (old) root again.
    let first_new = rotation.ca_cert.clone();
    start(
        &mut root,
        2,
        SystemTime::now(),
        shoal_api::defaults::ROOT_CA_EXPIRY,
    )
    .unwrap();
    let again = root.root_rotation.clone().unwrap();
    assert_ne!(again.ca_cert, first_new);
    assert!(shoal_ca::issued_by(&pem(&again.cross_signed_ca_cert), &old));
    assert_eq!(root.last_forced_rotation, 2);
}

#[test]
fn during_a_rotation_the_new_key_signs_and_the_cross_signed_root_goes_along() {
    let mut root = root_of(&cluster());
    let before = Signer::of(&root).unwrap();
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let now = SystemTime::now();
    let plain = before
        .sign(&csr, "n1", NodeRole::Worker, "c", now, DAY)
        .unwrap();
    assert_eq!(shoal_ca::certificates_der(&plain).unwrap().len(), 1);
    assert!(shoal_ca::issued_by(&plain, &pem(&root.ca_cert)));

    start(&mut root, 1, now, shoal_api::defaults::ROOT_CA_EXPIRY).unwrap();
    assert!(!before.is_current(&root));
    let signer = Signer::of(&root).unwrap();
    assert!(signer.is_current(&root));
    let chain = signer
        .sign(&csr, "n1", NodeRole::Worker, "c", now, DAY)
        .unwrap();
    let rotation = root.root_rotation.clone().unwrap();
    assert_eq!(shoal_ca::certificates_der(&chain).unwrap().len(), 2);
    assert!(shoal_ca::issued_by(&chain, &pem(&rotation.ca_cert)));
    assert!(chain.ends_with(&pem(&rotation.cross_signed_ca_cert)));
    assert_eq!(
        shoal_ca::parse_node_certificate(&chain).unwrap().node_id,
        "n1"
    );
    // A node trusting only the old root finds the new root through the chain.
    assert_eq!(
        shoal_ca::issuer_of(&chain, &pem(&root.ca_cert)),
        Some(shoal_ca::root_issuer(&pem(&rotation.ca_cert)).unwrap())
    );

    // A redacted cluster (no keys) signs nothing.
    let redacted = crate::cluster::redacted(&Cluster {
        root_ca: Some(root.clone()),
        ..Default::default()
    });
    assert!(Signer::of(redacted.root_ca.as_ref().unwrap()).is_err());
}

#[test]
fn completing_a_rotation_makes_the_new_root_the_root_and_keeps_the_token_secrets() {
    let mut root = root_of(&cluster());
    assert!(complete(&mut root.clone()).is_err(), "nothing to complete");
    let tokens_before = root.join_tokens.clone().unwrap();
    start(
        &mut root,
        7,
        SystemTime::now(),
        shoal_api::defaults::ROOT_CA_EXPIRY,
    )
    .unwrap();
    let rotation = root.root_rotation.clone().unwrap();
    complete(&mut root).unwrap();
    assert!(!in_progress(&root));
    assert_eq!(root.ca_cert, rotation.ca_cert);
    assert_eq!(root.ca_key, rotation.ca_key);
    assert_eq!(root.last_forced_rotation, 7);
    let digest = shoal_ca::cert_digest(&pem(&rotation.ca_cert)).unwrap();
    assert_eq!(root.ca_cert_hash, digest);
    let tokens = root.join_tokens.clone().unwrap();
    for (before, after) in [
        (&tokens_before.worker, &tokens.worker),
        (&tokens_before.manager, &tokens.manager),
    ] {
        let (before, after) = (
            JoinToken::parse(before).unwrap(),
            JoinToken::parse(after).unwrap(),
        );
        assert_eq!(after.secret, before.secret);
        assert_eq!(after.ca_digest, digest);
    }
    // The trust bundle is the new root alone, and it signs without a chain.
    assert_eq!(trust_bundle(&root), rotation.ca_cert);
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let cert = Signer::of(&root)
        .unwrap()
        .sign(&csr, "n", NodeRole::Manager, "c", SystemTime::now(), DAY)
        .unwrap();
    assert_eq!(shoal_ca::certificates_der(&cert).unwrap().len(), 1);
    assert!(shoal_ca::issued_by(&cert, &pem(&rotation.ca_cert)));
}

// --- Progress and decisions ------------------------------------------------------------------

/// A node `id`, READY or DOWN, holding a certificate from `holds` (its record in the store),
/// reporting a certificate from `reports`, its certificate in `state`.
fn node(
    id: &str,
    up: bool,
    holds: &CaRoot,
    reports: &CaRoot,
    state: issuance_status::State,
) -> Node {
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let cert = shoal_ca::issue_node_certificate(
        holds,
        &csr,
        id,
        NodeRole::Worker,
        "c",
        SystemTime::now(),
        DAY,
    )
    .unwrap();
    let issuer = shoal_ca::root_issuer(&reports.cert_pem).unwrap();
    // A node trusts the roots of a rotation (or the one it reports, once it completed).
    let trust = format!("{}{}", holds.cert_pem, reports.cert_pem);
    Node {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            membership: node_spec::Membership::Accepted as i32,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: if up {
                node_status::State::Ready
            } else {
                node_status::State::Down
            } as i32,
            ..Default::default()
        }),
        description: Some(Box::new(NodeDescription {
            hostname: id.into(),
            tls_info: Some(NodeTlsInfo {
                trust_root: trust.into_bytes(),
                cert_issuer_subject: issuer.subject,
                cert_issuer_public_key: issuer.public_key,
            }),
            ..Default::default()
        })),
        certificate: Some(Box::new(Certificate {
            status: Some(IssuanceStatus {
                state: state as i32,
                err: String::new(),
            }),
            certificate: cert.into_bytes(),
            cn: id.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn roots() -> (CaRoot, CaRoot) {
    let now = SystemTime::now();
    (
        CaRoot::generate(now, 365 * DAY).unwrap(),
        CaRoot::generate(now, 365 * DAY).unwrap(),
    )
}

#[test]
fn a_node_is_rotated_when_it_reports_a_certificate_from_the_new_root() {
    use issuance_status::State::{Issued, Renew, Rotate};
    let (old, new) = roots();
    let report = RootReport::of(&new.cert_pem).unwrap();
    let of = |n: &Node| progress(n, &new.cert_pem, &report);
    assert_eq!(of(&node("a", true, &new, &new, Issued)), Progress::Rotated);
    // Issued by the new root but still reporting the old one: not done until it reports.
    assert_eq!(of(&node("b", true, &new, &old, Issued)), Progress::Issued);
    assert_eq!(of(&node("c", true, &old, &old, Rotate)), Progress::Told);
    assert_eq!(of(&node("d", true, &old, &old, Renew)), Progress::Told);
    assert_eq!(of(&node("e", true, &old, &old, Issued)), Progress::Old);
    // A node that reports nothing has not rotated.
    let mut silent = node("f", true, &old, &old, Issued);
    silent.description = None;
    assert_eq!(of(&silent), Progress::Old);
    // Another key under the same subject is not the new root.
    let (other, _) = roots();
    assert_eq!(of(&node("g", true, &other, &other, Issued)), Progress::Old);
    // A certificate from the new root, but the new root not trusted yet: not done.
    let mut untrusting = node("h", true, &new, &new, Issued);
    let info = untrusting
        .description
        .as_mut()
        .unwrap()
        .tls_info
        .as_mut()
        .unwrap();
    info.trust_root = old.cert_pem.clone().into_bytes();
    assert_eq!(of(&untrusting), Progress::Issued);
}

fn view(id: &str, progress: Progress, up: bool) -> NodeView {
    NodeView {
        id: id.into(),
        progress,
        up,
    }
}

#[test]
fn decisions() {
    use Progress::*;
    // Everyone rotated (the leader included): complete.
    assert_eq!(
        decide(&[view("a", Rotated, true), view("b", Rotated, false)], 30),
        Decision::Complete
    );
    // A down node that has not rotated holds the rotation.
    assert_eq!(
        decide(&[view("a", Rotated, true), view("b", Issued, false)], 30),
        Decision::Wait
    );
    // Old nodes are told, up ones first, then by ID; down ones too when there is room.
    assert_eq!(
        decide(
            &[
                view("d", Old, false),
                view("c", Old, true),
                view("a", Rotated, true),
                view("b", Old, true),
            ],
            30
        ),
        Decision::Tell(vec!["b".into(), "c".into(), "d".into()])
    );
    // The batch: nodes up and in flight (told, or issued and not reported) take its room.
    let nodes = [
        view("a", Told, true),
        view("b", Issued, true),
        view("c", Told, false),
        view("d", Old, true),
        view("e", Old, true),
        view("f", Old, true),
        view("g", Old, false),
    ];
    assert_eq!(
        decide(&nodes, 3),
        Decision::Tell(vec!["d".into(), "g".into()])
    );
    assert_eq!(decide(&nodes, 2), Decision::Tell(vec!["g".into()]));
    // A full batch and no down node to tell: wait.
    assert_eq!(
        decide(&[view("a", Told, true), view("b", Old, true)], 1),
        Decision::Wait
    );
    // Nobody is told twice.
    assert_eq!(
        decide(&[view("a", Told, true), view("b", Issued, false)], 30),
        Decision::Wait
    );
}

// --- Rounds on a store -----------------------------------------------------------------------

struct FakeRaft(watch::Sender<RaftStatus>);

impl Leadership for FakeRaft {
    fn status(&self) -> RaftStatus {
        self.0.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<RaftStatus> {
        self.0.subscribe()
    }

    fn not_leader(&self) -> Status {
        Status::failed_precondition("not the leader")
    }
}

fn leading() -> Arc<FakeRaft> {
    Arc::new(FakeRaft(watch::Sender::new(RaftStatus {
        is_leader: true,
        leader_caught_up: true,
        ..Default::default()
    })))
}

/// A store with a cluster whose rotation is pending, and three nodes on the old root: `m1`
/// and `w1` up, `w2` down. Returns the store, the cluster ID and (old, new) roots.
async fn rotating_store() -> (Store, String, CaRoot, CaRoot) {
    let store = Store::new();
    let mut cluster = cluster();
    let old = ca_root(
        &cluster.root_ca.as_ref().unwrap().ca_cert,
        &cluster.root_ca.as_ref().unwrap().ca_key,
    );
    let nodes = [
        node("m1", true, &old, &old, issuance_status::State::Issued),
        node("w1", true, &old, &old, issuance_status::State::Issued),
        node("w2", false, &old, &old, issuance_status::State::Issued),
    ];
    let root = cluster.root_ca.as_mut().unwrap();
    start(root, 1, SystemTime::now(), 365 * DAY).unwrap();
    let rotation = root.root_rotation.clone().unwrap();
    let new = ca_root(&rotation.ca_cert, &rotation.ca_key);
    let id = cluster.meta.as_ref().unwrap().id.clone();
    store
        .update(|tx| {
            tx.create(cluster)?;
            for n in nodes {
                tx.create(n)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    (store, id, old, new)
}

/// What the agent of `id` does when told: renews with the CA's signer (the CA writes the
/// certificate), then opens a session reporting it.
async fn renew_and_report(store: &Store, id: &str) {
    let cluster = store.view(|tx| tx.find::<Cluster>(By::All).remove(0));
    let signer = Signer::of(cluster.root_ca.as_ref().unwrap()).unwrap();
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let cert = signer
        .sign(&csr, id, NodeRole::Worker, "c", SystemTime::now(), DAY)
        .unwrap();
    let bundle = pem(&trust_bundle(cluster.root_ca.as_ref().unwrap()));
    let issuer = shoal_ca::issuer_of(&cert, &bundle).unwrap();
    store
        .update(|tx| {
            let mut node = (*tx.get::<Node>(id).unwrap()).clone();
            let certificate = node.certificate.get_or_insert_with(Default::default);
            certificate.certificate = cert.clone().into_bytes();
            certificate.status = Some(IssuanceStatus {
                state: issuance_status::State::Issued as i32,
                err: String::new(),
            });
            tx.update(node)
        })
        .await
        .unwrap();
    store
        .update(|tx| {
            let mut node = (*tx.get::<Node>(id).unwrap()).clone();
            let description = node.description.get_or_insert_with(Default::default);
            description.tls_info = Some(NodeTlsInfo {
                trust_root: bundle.clone().into_bytes(),
                cert_issuer_subject: issuer.subject.clone(),
                cert_issuer_public_key: issuer.public_key.clone(),
            });
            node.status = Some(NodeStatus {
                state: node_status::State::Ready as i32,
                ..Default::default()
            });
            tx.update(node)
        })
        .await
        .unwrap();
}

fn state_of(store: &Store, id: &str) -> i32 {
    store
        .view(|tx| tx.get::<Node>(id))
        .unwrap()
        .certificate
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .map(|s| s.state)
        .unwrap()
}

#[tokio::test]
async fn a_rotation_waits_for_a_down_node_and_completes_once_it_renews() {
    let (store, cluster_id, _old, new) = rotating_store().await;
    let reconciler = RootRotationReconciler::with_leadership(store.clone(), leading());
    // Everyone is told (the down node too: it renews when it comes back).
    assert_eq!(
        reconciler.round().await.unwrap(),
        Round::Told(vec!["m1".into(), "w1".into(), "w2".into()])
    );
    for id in ["m1", "w1", "w2"] {
        assert_eq!(state_of(&store, id), issuance_status::State::Rotate as i32);
    }
    // Nothing more to say while they renew.
    assert_eq!(reconciler.round().await.unwrap(), Round::Waiting);
    renew_and_report(&store, "m1").await;
    renew_and_report(&store, "w1").await;
    // w2 is down: the rotation stays pending.
    assert_eq!(reconciler.round().await.unwrap(), Round::Waiting);
    let pending = |store: &Store| {
        store
            .view(|tx| tx.get::<Cluster>(&cluster_id))
            .unwrap()
            .root_ca
            .clone()
            .unwrap()
    };
    assert!(in_progress(&pending(&store)));
    // It comes back, renews, reports: complete.
    renew_and_report(&store, "w2").await;
    assert_eq!(reconciler.round().await.unwrap(), Round::Completed);
    let root = pending(&store);
    assert!(!in_progress(&root));
    assert_eq!(pem(&root.ca_cert), new.cert_pem);
    assert_eq!(
        root.ca_cert_hash,
        shoal_ca::cert_digest(&new.cert_pem).unwrap()
    );
    // And stays complete.
    assert_eq!(reconciler.round().await.unwrap(), Round::Idle);
}

#[tokio::test]
async fn removing_the_down_node_lets_the_rotation_complete() {
    let (store, cluster_id, _old, _new) = rotating_store().await;
    let reconciler = RootRotationReconciler::with_leadership(store.clone(), leading());
    reconciler.round().await.unwrap();
    renew_and_report(&store, "m1").await;
    renew_and_report(&store, "w1").await;
    assert_eq!(reconciler.round().await.unwrap(), Round::Waiting);
    store.update(|tx| tx.delete::<Node>("w2")).await.unwrap();
    assert_eq!(reconciler.round().await.unwrap(), Round::Completed);
    let cluster = store.view(|tx| tx.get::<Cluster>(&cluster_id)).unwrap();
    assert!(!in_progress(cluster.root_ca.as_ref().unwrap()));
}

#[tokio::test]
async fn a_node_renewed_by_the_ca_but_not_reporting_holds_the_rotation() {
    // The CA recorded a new certificate, but the node never said it uses it (it may have
    // crashed before saving it): the rotation waits, and the node is not told again while it
    // is up and in flight.
    let (store, _, _old, new) = rotating_store().await;
    store.update(|tx| tx.delete::<Node>("w2")).await.unwrap();
    let reconciler = RootRotationReconciler::with_leadership(store.clone(), leading());
    reconciler.round().await.unwrap();
    renew_and_report(&store, "m1").await;
    let (_, csr) = shoal_ca::node_key_and_csr().unwrap();
    let cert = shoal_ca::issue_node_certificate(
        &new,
        &csr,
        "w1",
        NodeRole::Worker,
        "c",
        SystemTime::now(),
        DAY,
    )
    .unwrap();
    store
        .update(|tx| {
            let mut node = (*tx.get::<Node>("w1").unwrap()).clone();
            let certificate = node.certificate.as_mut().unwrap();
            certificate.certificate = cert.clone().into_bytes();
            certificate.status = Some(IssuanceStatus {
                state: issuance_status::State::Issued as i32,
                err: String::new(),
            });
            tx.update(node)
        })
        .await
        .unwrap();
    assert_eq!(reconciler.round().await.unwrap(), Round::Waiting);
    assert_eq!(
        state_of(&store, "w1"),
        issuance_status::State::Issued as i32
    );
    renew_and_report(&store, "w1").await;
    assert_eq!(reconciler.round().await.unwrap(), Round::Completed);
}

#[tokio::test]
async fn the_loop_runs_rounds_on_the_leader_as_the_store_changes() {
    let (store, cluster_id, _old, _new) = rotating_store().await;
    store.update(|tx| tx.delete::<Node>("w2")).await.unwrap();
    let raft = leading();
    let task = RootRotationReconciler::with_leadership(store.clone(), raft.clone()).start();
    let wait = |what: &'static str, done: Box<dyn Fn(&Store) -> bool + Send>| {
        let store = store.clone();
        async move {
            for _ in 0..200 {
                if done(&store) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("timed out waiting for {what}");
        }
    };
    wait(
        "the nodes to be told",
        Box::new(|s: &Store| {
            ["m1", "w1"]
                .iter()
                .all(|id| state_of(s, id) == issuance_status::State::Rotate as i32)
        }),
    )
    .await;
    renew_and_report(&store, "m1").await;
    renew_and_report(&store, "w1").await;
    let id = cluster_id.clone();
    wait(
        "the rotation to complete",
        Box::new(move |s: &Store| {
            let c = s.view(|tx| tx.get::<Cluster>(&id)).unwrap();
            !in_progress(c.root_ca.as_ref().unwrap())
        }),
    )
    .await;
    task.stop().await;
}
