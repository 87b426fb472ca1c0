//! `shoal service ...`: the swarm's services. One file per command.
//!
//! Only `logs` is served by this version: creating, updating and removing services comes
//! with the orchestrators that act on them.

pub mod logs;

use std::path::PathBuf;

use shoal_api::v1::Service;

use super::resolve::Resolver;

/// Arguments of `shoal service`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Show the logs of a service's tasks, or of one task
    Logs(logs::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Logs(a) => logs::run(socket, a),
    }
}

pub fn id(service: &Service) -> &str {
    service.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

pub fn name(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// Services are named by ID, name, or a unique ID prefix.
pub const RESOLVER: Resolver<'static, Service> = Resolver {
    kind: "service",
    id,
    names: |s| vec![name(s)],
    describe: |s| format!("({})", name(s)),
};
