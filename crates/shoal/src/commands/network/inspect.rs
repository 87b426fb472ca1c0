//! `shoal network inspect NETWORK...`: networks in full, as a JSON array.

use std::path::PathBuf;

use super::{RESOLVER, networks, to_json};
use crate::commands::client;
use crate::commands::node::join_errors;
use crate::commands::output;

/// Arguments of `shoal network inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Networks, by ID, name or unique ID prefix
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let (text, result) = client::run(socket, async |c| {
        let all = networks(c).await?;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for name in &args.networks {
            match RESOLVER.resolve(&all, name) {
                Ok(network) => found.push(to_json(network)),
                Err(e) => errors.push(e),
            }
        }
        // As docker does: the networks found are printed even when others are not.
        Ok((output::json_array(found), join_errors(errors)))
    })?;
    output::print(&text)?;
    result
}
