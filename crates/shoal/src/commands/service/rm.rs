//! `shoal service rm SERVICE...`: removes services (their tasks are shut down), printing each
//! as it was named.

use std::path::PathBuf;

use shoal_api::v1::RemoveServiceRequest;

use super::{RESOLVER, id, services};
use crate::commands::client;
use crate::commands::node::join_errors;
use crate::commands::output;

/// Arguments of `shoal service rm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services, by ID, name or unique ID prefix
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        let all = services(c).await?;
        let mut errors = Vec::new();
        for name in &args.services {
            let service_id = match RESOLVER.resolve(&all, name) {
                Ok(service) => id(service).to_string(),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let request = RemoveServiceRequest { service_id };
            match c.control().remove_service(request).await {
                // Printed as each goes, so what was removed is shown even if a later one fails.
                Ok(_) => output::print(&format!("{name}\n"))?,
                Err(s) => errors.push(c.error("RemoveService", &s)),
            }
        }
        join_errors(errors)
    })
}
