//! `shoal network ...`: the swarm's overlay networks. One file per command; this one holds
//! what they share: naming networks, listing them, and a network as JSON.
//!
//! Networks are bookkeeping so far: each has a subnet, and services and tasks attached to it
//! get addresses in it, but no data plane carries traffic on them yet.

pub mod create;
pub mod inspect;
pub mod ls;
pub mod rm;

use std::path::PathBuf;

use shoal_api::v1::{ListNetworksRequest, Network};

use super::client::Client;
use super::output::{self, Json};
use super::resolve::Resolver;

/// Arguments of `shoal network`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create an overlay network
    Create(create::Args),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Show networks in detail, as JSON
    Inspect(inspect::Args),
    /// Remove networks
    #[command(visible_alias = "remove")]
    Rm(rm::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Create(a) => create::run(socket, a),
        Command::Ls(a) => ls::run(socket, a),
        Command::Inspect(a) => inspect::run(socket, a),
        Command::Rm(a) => rm::run(socket, a),
    }
}

/// Networks are named by ID, name, or a unique ID prefix.
pub const RESOLVER: Resolver<'static, Network> = Resolver {
    kind: "network",
    id,
    names: |n| vec![name(n)],
    describe: |n| format!("({})", name(n)),
};

pub fn id(network: &Network) -> &str {
    network.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn name(network: &Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

pub fn driver(network: &Network) -> &str {
    network
        .driver_state
        .as_ref()
        .or_else(|| network.spec.as_ref().and_then(|s| s.driver_config.as_ref()))
        .map(|d| d.name.as_str())
        .filter(|d| !d.is_empty())
        .unwrap_or("overlay")
}

/// Every network of the swarm.
pub async fn networks(c: &mut Client) -> Result<Vec<Network>, String> {
    Ok(c.control()
        .list_networks(ListNetworksRequest::default())
        .await
        .map_err(|s| c.error("ListNetworks", &s))?
        .into_inner()
        .networks)
}

/// A network as `network inspect` shows it (docker's field names).
pub fn to_json(network: &Network) -> Json {
    let spec = network.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let ipam = network.ipam.clone().unwrap_or_default();
    let configs = ipam
        .configs
        .iter()
        .map(|c| {
            Json::object([
                ("Subnet", Json::str(&c.subnet)),
                ("Gateway", Json::str(&c.gateway)),
            ])
        })
        .collect();
    Json::object([
        ("Name", Json::str(name(network))),
        ("Id", Json::str(id(network))),
        (
            "Created",
            output::timestamp(network.meta.as_ref().and_then(|m| m.created_at.as_ref())),
        ),
        ("Scope", Json::str("swarm")),
        ("Driver", Json::str(driver(network))),
        ("EnableIPv6", Json::Bool(spec.ipv6_enabled)),
        (
            "IPAM",
            Json::object([
                (
                    "Driver",
                    Json::str(
                        ipam.driver
                            .as_ref()
                            .map(|d| d.name.as_str())
                            .unwrap_or("default"),
                    ),
                ),
                ("Config", Json::Array(configs)),
            ]),
        ),
        ("Internal", Json::Bool(spec.internal)),
        ("Attachable", Json::Bool(spec.attachable)),
        ("Ingress", Json::Bool(spec.ingress)),
        ("Labels", output::labels(&annotations.labels)),
    ])
}
