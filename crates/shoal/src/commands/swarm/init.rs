//! `shoal swarm init`: the local node (which must belong to no cluster) creates a new swarm
//! and becomes its first manager. Waits until the manager serves, then prints how to add
//! nodes.

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
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let path = client::socket_path(socket.clone());
    client::run(socket, async |c| {
        c.swarm()
            .init(InitSwarmRequest {
                listen_addr: args.listen_addr.clone().unwrap_or_default(),
                advertise_addr: args.advertise_addr.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| c.error("Swarm.Init", &s))?;
        eprintln!("Creating the swarm…");
        // The daemon starts the manager and serves the socket again: wait for it.
        let started = Instant::now();
        loop {
            if let Ok(mut fresh) = Client::connect(&path).await
                && let Ok(cluster) = fresh.cluster().await
            {
                let tokens = cluster
                    .root_ca
                    .and_then(|r| r.join_tokens)
                    .unwrap_or_default();
                let addr = fresh
                    .info()
                    .await
                    .and_then(|i| i.managers.first().cloned())
                    .unwrap_or_else(|| "<MANAGER-ADDR>".to_string());
                let id = fresh.info().await.map(|i| i.node_id).unwrap_or_default();
                return output::print(&format!(
                    "Swarm initialized: current node ({id}) is now a manager.\n\nTo add a worker \
                     to this swarm, run the following command:\n\n    shoal swarm join --token \
                     {} {addr}\n\nTo add a manager to this swarm, run 'shoal swarm join-token \
                     manager' and follow the instructions.\n",
                    tokens.worker
                ));
            }
            if started.elapsed() > READY_WITHIN {
                return Err(format!(
                    "the swarm was created but the manager did not answer within {}s; check the \
                     daemon's log",
                    READY_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
