//! `shoal swarm join --token TOKEN MANAGER-ADDR`: the local node (which must belong to no
//! cluster) joins the swarm of that manager, as a worker or a manager as the token says. A
//! refused token fails at once, saying why.

use std::path::PathBuf;

use shoal_api::v1::{JoinSwarmRequest, NodeRole};

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal swarm join`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Join token (`shoal swarm join-token worker|manager` on a manager prints one)
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// Address of a manager of the swarm, host:port
    #[arg(value_name = "MANAGER-ADDR")]
    pub remote_addr: String,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let joined = client::run(socket, async |c| {
        c.swarm()
            .join(JoinSwarmRequest {
                remote_addr: args.remote_addr.clone(),
                join_token: args.token.clone(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| c.error("Swarm.Join", &s))
    })?;
    let role = if joined.role == NodeRole::Manager as i32 {
        "a manager"
    } else {
        "a worker"
    };
    output::print(&format!(
        "This node joined a swarm as {role} (node ID {}).\n",
        joined.node_id
    ))
}
