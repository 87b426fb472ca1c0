//! `shoal swarm inspect`: the cluster object, as a JSON array of one.

use std::path::PathBuf;

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal swarm inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(socket: Option<PathBuf>, _args: Args) -> Result<(), String> {
    let cluster = client::run(socket, async |c| c.cluster().await)?;
    output::print(&output::json_array(vec![super::to_json(&cluster)]))
}
