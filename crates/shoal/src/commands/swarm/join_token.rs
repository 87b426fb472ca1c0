//! `shoal swarm join-token [--rotate] [-q] worker|manager`: the command that adds a node with
//! that role, or only its token; `--rotate` replaces the token first (the old one stops working
//! at once).

use std::path::PathBuf;

use shoal_api::v1::{Cluster, KeyRotation, Node, SwarmInfoResponse, UpdateClusterRequest};

use crate::commands::client::{self, Client};
use crate::commands::output;

/// Arguments of `shoal swarm join-token`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Replace the token with a new one; nodes can no longer join with the old one
    #[arg(long)]
    pub rotate: bool,
    /// Only print the token
    #[arg(short, long)]
    pub quiet: bool,
    /// Which token: the one that adds workers or the one that adds managers
    #[arg(value_enum, value_name = "worker|manager")]
    pub role: Role,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }

    fn token(self, cluster: &Cluster) -> Option<String> {
        let tokens = cluster.root_ca.as_ref()?.join_tokens.as_ref()?;
        let token = match self {
            Role::Worker => &tokens.worker,
            Role::Manager => &tokens.manager,
        };
        (!token.is_empty()).then(|| token.clone())
    }
}

/// Shown when no manager address is known.
pub const UNKNOWN_ADDR: &str = "<MANAGER-ADDR>";

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let text = client::run(socket, async |c| {
        let mut cluster = c.cluster().await?;
        if args.rotate {
            cluster = rotate(c, cluster, args.role).await?;
        }
        let token = args.role.token(&cluster).ok_or_else(|| {
            format!(
                "the cluster has no {} join token (is this node a manager?)",
                args.role.word()
            )
        })?;
        if args.quiet {
            return Ok(format!("{token}\n"));
        }
        // The address is a convenience: a listing that fails leaves it unknown.
        let nodes = c.nodes().await.unwrap_or_default();
        let info = c.info().await;
        let addr = manager_addr(&nodes, info.as_ref());
        let mut out = String::new();
        if args.rotate {
            out.push_str(&rotated(args.role));
        }
        out.push_str(&join_command(args.role, &token, addr.as_deref()));
        Ok(out)
    })?;
    output::print(&text)
}

async fn rotate(c: &mut Client, cluster: Cluster, role: Role) -> Result<Cluster, String> {
    let meta = cluster.meta.clone().unwrap_or_default();
    let request = UpdateClusterRequest {
        cluster_id: meta.id,
        cluster_version: meta.version,
        spec: cluster.spec.clone(),
        rotation: Some(KeyRotation {
            worker_join_token: role == Role::Worker,
            manager_join_token: role == Role::Manager,
            manager_unlock_key: false,
        }),
    };
    let updated = c
        .control()
        .update_cluster(request)
        .await
        .map_err(|s| c.error("UpdateCluster", &s))?
        .into_inner()
        .cluster;
    match updated {
        Some(cluster) => Ok(cluster),
        None => c.cluster().await,
    }
}

/// Where a new node reaches a manager: the leader's advertised address, else this node's if it
/// is a manager, else any manager this node knows.
pub fn manager_addr(nodes: &[Node], info: Option<&SwarmInfoResponse>) -> Option<String> {
    let manager_addr = |n: &Node| {
        n.manager_status
            .as_deref()
            .map(|m| m.addr.clone())
            .filter(|a| !a.is_empty())
    };
    let leader = nodes
        .iter()
        .filter(|n| n.manager_status.as_deref().is_some_and(|m| m.leader))
        .find_map(manager_addr);
    let local = || {
        let local_id = info
            .map(|i| i.node_id.as_str())
            .filter(|id| !id.is_empty())?;
        nodes
            .iter()
            .filter(|n| n.meta.as_ref().is_some_and(|m| m.id == local_id))
            .find_map(manager_addr)
    };
    let known = || info?.managers.iter().find(|a| !a.is_empty()).cloned();
    leader.or_else(local).or_else(known)
}

/// The lines that tell how to add a node with `role`, as docker prints them.
pub fn join_command(role: Role, token: &str, addr: Option<&str>) -> String {
    format!(
        "To add a {} to this swarm, run the following command:\n\n    \
         shoal daemon --join-addr {} --join-token {token}\n",
        role.word(),
        addr.unwrap_or(UNKNOWN_ADDR)
    )
}

pub fn rotated(role: Role) -> String {
    format!("Successfully rotated {} join token.\n\n", role.word())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::node::tests::node;

    #[test]
    fn the_join_command() {
        assert_eq!(
            join_command(Role::Worker, "SWMTKN-1-a-b", Some("10.0.0.1:4242")),
            "To add a worker to this swarm, run the following command:\n\n    \
             shoal daemon --join-addr 10.0.0.1:4242 --join-token SWMTKN-1-a-b\n"
        );
        assert!(
            join_command(Role::Manager, "T", None).starts_with("To add a manager to this swarm")
        );
        assert!(join_command(Role::Manager, "T", None).contains("--join-addr <MANAGER-ADDR> "));
        assert_eq!(
            rotated(Role::Manager),
            "Successfully rotated manager join token.\n\n"
        );
    }

    #[test]
    fn tokens_by_role() {
        let cluster = crate::commands::swarm::tests::cluster();
        assert_eq!(Role::Worker.token(&cluster).unwrap(), "SWMTKN-1-w");
        assert_eq!(Role::Manager.token(&cluster).unwrap(), "SWMTKN-1-m");
        assert_eq!(Role::Worker.token(&Cluster::default()), None);
    }

    #[test]
    fn the_address_of_the_leader_then_this_node_then_any_known_manager() {
        let follower = node("f", "f", Some((false, 2)));
        let leader = node("l", "l", Some((true, 2)));
        let worker = node("w", "w", None);
        let info = |id: &str, managers: &[&str]| SwarmInfoResponse {
            node_id: id.into(),
            managers: managers.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        };
        let nodes = vec![worker.clone(), follower.clone(), leader];
        assert_eq!(
            manager_addr(&nodes, Some(&info("f", &[]))).as_deref(),
            Some("l:4242")
        );
        let no_leader = vec![worker, follower];
        assert_eq!(
            manager_addr(&no_leader, Some(&info("f", &["x:1"]))).as_deref(),
            Some("f:4242")
        );
        assert_eq!(
            manager_addr(&no_leader, Some(&info("w", &["", "x:1"]))).as_deref(),
            Some("x:1")
        );
        assert_eq!(manager_addr(&no_leader, None), None);
        assert_eq!(manager_addr(&[], None), None);
    }
}
