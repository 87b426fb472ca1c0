//! `shoal network rm NETWORK...`: removes networks no service uses, printing each as named.

use std::path::PathBuf;

use shoal_api::v1::RemoveNetworkRequest;

use super::{RESOLVER, id, networks};
use crate::commands::client;
use crate::commands::node::join_errors;
use crate::commands::output;

/// Arguments of `shoal network rm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Networks, by ID, name or unique ID prefix
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        let all = networks(c).await?;
        let mut errors = Vec::new();
        for name in &args.networks {
            let network_id = match RESOLVER.resolve(&all, name) {
                Ok(network) => id(network).to_string(),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let request = RemoveNetworkRequest {
                network_id,
                ..Default::default()
            };
            match c.control().remove_network(request).await {
                // Printed as each goes, so what was removed is shown even if a later one fails.
                Ok(_) => output::print(&format!("{name}\n"))?,
                Err(s) => errors.push(c.error("RemoveNetwork", &s)),
            }
        }
        join_errors(errors)
    })
}
