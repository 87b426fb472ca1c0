//! `shoal service inspect SERVICE...`: services in full (spec included), as a JSON array.

use std::path::PathBuf;

use super::{RESOLVER, services, to_json};
use crate::commands::client;
use crate::commands::node::join_errors;
use crate::commands::output;

/// Arguments of `shoal service inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services, by ID, name or unique ID prefix
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let (text, result) = client::run(socket, async |c| {
        let all = services(c).await?;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for name in &args.services {
            match RESOLVER.resolve(&all, name) {
                Ok(service) => found.push(to_json(service)),
                Err(e) => errors.push(e),
            }
        }
        // As docker does: the services found are printed even when others are not.
        Ok((output::json_array(found), join_errors(errors)))
    })?;
    output::print(&text)?;
    result
}
