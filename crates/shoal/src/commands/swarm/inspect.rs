//! `shoal swarm inspect`: the cluster object, as a JSON array of one. While a root CA rotation
//! is pending, `RootRotation` says how far it has come and which nodes it waits for.

use std::path::PathBuf;

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal swarm inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(socket: Option<PathBuf>, _args: Args) -> Result<(), String> {
    let json = client::run(socket, async |c| {
        let cluster = c.cluster().await?;
        let rotating = cluster
            .root_ca
            .as_ref()
            .is_some_and(|r| r.root_rotation.is_some());
        let progress = if rotating {
            super::ca::RotationProgress::of(&cluster, &c.nodes().await?)
        } else {
            None
        };
        Ok(super::to_json(&cluster, progress.as_ref()))
    })?;
    output::print(&output::json_array(vec![json]))
}
