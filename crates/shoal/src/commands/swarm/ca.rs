//! `shoal swarm ca [--rotate] [--detach] [-q]`: the swarm's root CA certificate, or a root
//! rotation.
//!
//! Without `--rotate` it prints the current root certificate (PEM), as `docker swarm ca`
//! does. With `--rotate` it raises the cluster spec's `ca_config.force_rotate` (the version
//! read is named, so a concurrent change is refused rather than overwritten); the leader then
//! makes a new root, cross-signed by the current one, and every node renews its certificate
//! (see the manager's `root_rotation`). Unless `--detach` is given, the command follows the
//! rotation — on stderr, `-q` silences it — showing how many nodes report a certificate from
//! the new root, and naming the nodes that are not up and still hold an old one (they hold
//! the rotation back until they come back or are removed); once it completes it prints the
//! new root. Interrupting the wait (Ctrl-C) leaves the rotation going.
//!
//! Bad input changes nothing: `--detach` or `-q` without `--rotate` is refused, and so is
//! `--rotate` on a node that is not a manager (the Control API says where to go).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use shoal_api::v1::{Cluster, Node, UpdateClusterRequest, node_status};

use crate::commands::client::{self, Client};
use crate::commands::output;

/// How often the rotation is looked at.
const POLL: Duration = Duration::from_millis(500);

/// Arguments of `shoal swarm ca`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Replace the root CA with a new one; every node gets a new certificate
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate: return once the rotation has started, without waiting for it to finish
    #[arg(short, long)]
    pub detach: bool,
    /// With --rotate: do not show the rotation's progress
    #[arg(short, long)]
    pub quiet: bool,
}

impl Args {
    /// Flags that only make sense with `--rotate` are refused without it.
    fn check(&self) -> Result<(), String> {
        for (given, flag) in [(self.detach, "--detach"), (self.quiet, "--quiet")] {
            if given && !self.rotate {
                return Err(format!(
                    "{flag} only applies to a rotation: use `shoal swarm ca --rotate {flag}`, \
                     or `shoal swarm ca` alone to print the root certificate"
                ));
            }
        }
        Ok(())
    }
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    args.check()?;
    let text = client::run(socket, async |c| {
        let cluster = c.cluster().await?;
        if !args.rotate {
            return Ok(Some(root_pem(&cluster)));
        }
        let started = rotate(c, cluster).await?;
        if args.detach {
            if !args.quiet {
                eprintln!(
                    "Root CA rotation started: the nodes are renewing their certificates. \
                     Follow it with `shoal swarm inspect` (RootRotation)."
                );
            }
            return Ok(None);
        }
        tokio::select! {
            done = follow(c, started, args.quiet) => done.map(Some),
            _ = tokio::signal::ctrl_c() => {
                eprintln!(
                    "\nThe root CA rotation goes on in the background; follow it with `shoal \
                     swarm inspect` (RootRotation)."
                );
                Ok(None)
            }
        }
    })?;
    match text {
        Some(text) => output::print(&text),
        None => Ok(()),
    }
}

/// The current root certificate, PEM.
fn root_pem(cluster: &Cluster) -> String {
    let root = cluster
        .root_ca
        .as_ref()
        .map(|r| String::from_utf8_lossy(&r.ca_cert).into_owned())
        .unwrap_or_default();
    if root.ends_with('\n') || root.is_empty() {
        root
    } else {
        format!("{root}\n")
    }
}

/// Raises `force_rotate` against the version read; returns the cluster as it is then.
async fn rotate(c: &mut Client, cluster: Cluster) -> Result<Cluster, String> {
    let meta = cluster.meta.clone().unwrap_or_default();
    let mut spec = cluster.spec.clone().unwrap_or_default();
    let ca = spec.ca_config.get_or_insert_with(Default::default);
    ca.force_rotate = ca.force_rotate.saturating_add(1);
    let updated = c
        .control()
        .update_cluster(UpdateClusterRequest {
            cluster_id: meta.id,
            cluster_version: meta.version,
            spec: Some(spec),
            rotation: None,
        })
        .await
        .map_err(|s| c.error("UpdateCluster", &s))?
        .into_inner()
        .cluster;
    match updated {
        Some(cluster) => Ok(cluster),
        None => c.cluster().await,
    }
}

/// Follows the rotation until it completes; returns the new root.
async fn follow(c: &mut Client, mut cluster: Cluster, quiet: bool) -> Result<String, String> {
    let mut shown: Vec<String> = Vec::new();
    loop {
        let nodes = c.nodes().await?;
        let Some(progress) = RotationProgress::of(&cluster, &nodes) else {
            if !quiet {
                eprintln!(
                    "Root CA rotation complete: every node holds a certificate from the new root."
                );
            }
            return Ok(root_pem(&cluster));
        };
        let lines = progress.lines();
        if !quiet && lines != shown {
            let mut err = std::io::stderr().lock();
            for line in &lines {
                let _ = writeln!(err, "{line}");
            }
            shown = lines;
        }
        tokio::time::sleep(POLL).await;
        cluster = c.cluster().await?;
    }
}

/// A node that has not rotated yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub hostname: String,
    /// `ready`, `down`, `disconnected`, `unknown`.
    pub state: &'static str,
}

impl Pending {
    fn name(&self) -> &str {
        if self.hostname.is_empty() {
            output::short_id(&self.id)
        } else {
            &self.hostname
        }
    }
}

/// Where a pending rotation stands: how many nodes report a certificate from the new root,
/// out of how many, and which ones do not yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationProgress {
    pub rotated: usize,
    pub total: usize,
    pub pending: Vec<Pending>,
}

fn state_word(node: &Node) -> &'static str {
    match node
        .status
        .as_ref()
        .and_then(|s| node_status::State::try_from(s.state).ok())
    {
        Some(node_status::State::Ready) => "ready",
        Some(node_status::State::Down) => "down",
        Some(node_status::State::Disconnected) => "disconnected",
        _ => "unknown",
    }
}

impl RotationProgress {
    /// The progress of the rotation pending in `cluster` over `nodes`; `None` when none is.
    /// A node has rotated when it reports (in its description's TLS information) a
    /// certificate signed by the new root, and the new root among those it trusts — what the
    /// leader waits for.
    pub fn of(cluster: &Cluster, nodes: &[Node]) -> Option<RotationProgress> {
        let rotation = cluster.root_ca.as_ref()?.root_rotation.as_ref()?;
        let new_root = String::from_utf8_lossy(&rotation.ca_cert);
        let report = shoal_ca::RootReport::of(&new_root).ok();
        let mut pending = Vec::new();
        for node in nodes {
            let rotated = node
                .description
                .as_ref()
                .and_then(|d| d.tls_info.as_ref())
                .zip(report.as_ref())
                .is_some_and(|(t, report)| report.reported_by(t));
            if !rotated {
                pending.push(Pending {
                    id: node.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                    hostname: node
                        .description
                        .as_ref()
                        .map(|d| d.hostname.clone())
                        .unwrap_or_default(),
                    state: state_word(node),
                });
            }
        }
        pending.sort_by(|a, b| a.name().cmp(b.name()));
        Some(RotationProgress {
            rotated: nodes.len() - pending.len(),
            total: nodes.len(),
            pending,
        })
    }

    /// What the wait shows: the count, then a line per node that is not up and holds the
    /// rotation back.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "rotating the root CA: {} out of {} nodes hold a certificate from the new root",
            self.rotated, self.total
        )];
        for node in self.pending.iter().filter(|n| n.state != "ready") {
            lines.push(format!(
                "  node {} is {} and still holds a certificate from the old root: start it, or \
                 remove it with `shoal node rm {}`",
                node.name(),
                node.state,
                node.name()
            ));
        }
        lines
    }

    /// As `swarm inspect` shows it.
    pub fn to_json(&self) -> output::Json {
        use output::Json;
        Json::object([
            ("NodesRotated", Json::UInt(self.rotated as u64)),
            ("NodesTotal", Json::UInt(self.total as u64)),
            (
                "NodesPending",
                Json::Array(
                    self.pending
                        .iter()
                        .map(|n| {
                            Json::object([
                                ("ID", Json::str(&n.id)),
                                ("Hostname", Json::str(&n.hostname)),
                                ("State", Json::str(n.state)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use shoal_api::v1::{Meta, NodeDescription, NodeStatus, NodeTlsInfo, RootRotation};

    use super::*;

    fn node(id: &str, hostname: &str, state: node_status::State, reports: &str) -> Node {
        let issuer = shoal_ca::root_issuer(reports).unwrap();
        Node {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            description: Some(Box::new(NodeDescription {
                hostname: hostname.into(),
                tls_info: Some(NodeTlsInfo {
                    trust_root: reports.as_bytes().to_vec(),
                    cert_issuer_subject: issuer.subject,
                    cert_issuer_public_key: issuer.public_key,
                }),
                ..Default::default()
            })),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn root() -> String {
        shoal_ca::RootCa::generate(SystemTime::now(), Duration::from_secs(86400))
            .unwrap()
            .cert_pem
    }

    #[test]
    fn progress_counts_nodes_reporting_the_new_root_and_names_the_down_ones() {
        let (old, new) = (root(), root());
        let mut cluster = crate::commands::swarm::tests::cluster();
        assert_eq!(RotationProgress::of(&cluster, &[]), None);
        cluster.root_ca.as_mut().unwrap().root_rotation = Some(RootRotation {
            ca_cert: new.clone().into_bytes(),
            ..Default::default()
        });
        let nodes = [
            node("id-m1", "m1", node_status::State::Ready, &new),
            node("id-w1", "w1", node_status::State::Ready, &old),
            node("id-w2", "w2", node_status::State::Down, &old),
            node("id-w3", "w3", node_status::State::Down, &new),
        ];
        let progress = RotationProgress::of(&cluster, &nodes).unwrap();
        assert_eq!((progress.rotated, progress.total), (2, 4));
        assert_eq!(
            progress.lines(),
            vec![
                "rotating the root CA: 2 out of 4 nodes hold a certificate from the new root"
                    .to_string(),
                "  node w2 is down and still holds a certificate from the old root: start it, \
                 or remove it with `shoal node rm w2`"
                    .to_string(),
            ]
        );
        let json = progress.to_json().compact();
        assert!(json.starts_with(r#"{"NodesRotated":2,"NodesTotal":4,"NodesPending":[{"ID":"id-w1","Hostname":"w1","State":"ready"},"#), "{json}");
        // A node that reports nothing has not rotated.
        let mut silent = node("id-w4", "", node_status::State::Unknown, &new);
        silent.description = None;
        let progress = RotationProgress::of(&cluster, &[silent]).unwrap();
        assert_eq!(progress.rotated, 0);
        assert!(
            progress.lines()[1].contains("node id-w4 is unknown"),
            "{:?}",
            progress.lines()
        );
    }

    #[test]
    fn flags_of_a_rotation_need_rotate() {
        let args = |rotate, detach, quiet| Args {
            rotate,
            detach,
            quiet,
        };
        assert!(args(false, false, false).check().is_ok());
        assert!(args(true, true, true).check().is_ok());
        let e = args(false, true, false).check().unwrap_err();
        assert!(e.contains("--detach only applies to a rotation"), "{e}");
        let e = args(false, false, true).check().unwrap_err();
        assert!(e.contains("--quiet"), "{e}");
    }

    #[test]
    fn the_root_is_printed_with_a_final_newline() {
        let mut cluster = crate::commands::swarm::tests::cluster();
        cluster.root_ca.as_mut().unwrap().ca_cert = b"PEM".to_vec();
        assert_eq!(root_pem(&cluster), "PEM\n");
        assert_eq!(root_pem(&Cluster::default()), "");
    }
}
