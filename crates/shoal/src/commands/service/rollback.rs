//! `shoal service rollback [-d] SERVICE`: goes back to the spec the service had before its
//! last update, then (without `-d`) waits until it has converged.

use std::path::PathBuf;

use shoal_api::v1::{UpdateServiceRequest, update_service_request};

use super::{RESOLVER, id, progress, services, version};
use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal service rollback`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Exit at once instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// The service, by ID, name or unique ID prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        let all = services(c).await?;
        let service = RESOLVER.resolve(&all, &args.service)?;
        let service_id = id(service).to_string();
        let request = UpdateServiceRequest {
            service_id: service_id.clone(),
            service_version: version(service),
            spec: None,
            rollback: update_service_request::Rollback::Previous as i32,
        };
        c.control()
            .update_service(request)
            .await
            .map_err(|s| c.error("UpdateService", &s))?;
        output::print(&format!(
            "{}\nrollback: manually requested rollback\n",
            args.service
        ))?;
        if args.detach {
            return Ok(());
        }
        progress::wait_for(c, &service_id, true).await
    })
}
