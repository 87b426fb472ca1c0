//! `shoal swarm init`: the local node (which must belong to no cluster) creates a new swarm
//! and becomes its first manager. Waits until the manager serves, then prints how to add
//! nodes.
//!
//! `--force-new-cluster` on a manager (one that lost its quorum): the daemon restarts the
//! manager as the only member of a new cluster, keeping all its data (as `shoal daemon
//! --force-new-cluster` does, without restarting the process). The command waits for the
//! restarted daemon — a new incarnation in `Swarm.Info` — to serve, then prints the same as a
//! new swarm. On a node that belongs to no cluster the flag changes nothing; on a worker it is
//! refused.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_api::v1::InitSwarmRequest;

use crate::commands::client::{self, Client};
use crate::commands::output;

/// How long the new manager gets to start serving.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Arguments of `shoal swarm init`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address the new manager's remote API listens on (default: the daemon's
    /// --listen-remote-api)
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// Address other nodes reach the manager at (default: the daemon's, or the listen
    /// address)
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// On a manager that lost its quorum: restart it as the only manager of a new cluster,
    /// keeping the cluster's data (services, secrets, nodes)
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Lock the managers with a key: a restarted manager serves nothing until it is given
    /// the key with `shoal swarm unlock` (the key is printed once, here)
    #[arg(long)]
    pub autolock: bool,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let path = client::socket_path(socket.clone());
    client::run(socket, async |c| {
        // Which run of the daemon answers now (none on a node outside any cluster): the
        // manager that serves after the init is a later one.
        let before = c.info().await.map(|i| i.incarnation);
        c.swarm()
            .init(InitSwarmRequest {
                listen_addr: args.listen_addr.clone().unwrap_or_default(),
                advertise_addr: args.advertise_addr.clone().unwrap_or_default(),
                force_new_cluster: args.force_new_cluster,
                autolock: args.autolock,
            })
            .await
            .map_err(|s| c.error("Swarm.Init", &s))?;
        if before.is_some() {
            eprintln!("Forcing a new cluster from this manager's state…");
        } else {
            eprintln!("Creating the swarm…");
        }
        // The daemon starts the manager and serves the socket again: wait for it.
        let started = Instant::now();
        loop {
            if let Ok(mut fresh) = Client::connect(&path).await
                && let Some(info) = fresh.info().await
                && Some(info.incarnation) != before
                && let Ok(cluster) = fresh.cluster().await
            {
                let tokens = cluster
                    .root_ca
                    .and_then(|r| r.join_tokens)
                    .unwrap_or_default();
                let info = fresh.info().await.unwrap_or(info);
                let addr = info
                    .managers
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "<MANAGER-ADDR>".to_string());
                let id = info.node_id;
                let mut text = format!(
                    "Swarm initialized: current node ({id}) is now a manager.\n\nTo add a worker \
                     to this swarm, run the following command:\n\n    shoal swarm join --token \
                     {} {addr}\n\nTo add a manager to this swarm, run 'shoal swarm join-token \
                     manager' and follow the instructions.\n",
                    tokens.worker
                );
                if args.autolock {
                    let key = super::unlock_key::current_key(&mut fresh).await?;
                    text.push('\n');
                    text.push_str(&super::unlock_key::instructions(&key));
                }
                return output::print(&text);
            }
            if started.elapsed() > READY_WITHIN {
                return Err(format!(
                    "the swarm was {} but the manager did not answer within {}s; check the \
                     daemon's log",
                    if before.is_some() {
                        "asked to force a new cluster"
                    } else {
                        "created"
                    },
                    READY_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
