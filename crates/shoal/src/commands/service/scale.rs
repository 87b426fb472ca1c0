//! `shoal service scale [-d] SERVICE=N...`: sets the number of replicas of services, then
//! (without `-d`) waits until each has converged.

use std::path::PathBuf;

use shoal_api::v1::UpdateServiceRequest;

use super::options::set_replicas;
use super::{RESOLVER, id, progress, services, version};
use crate::commands::client;
use crate::commands::node::join_errors;
use crate::commands::output;

/// Arguments of `shoal service scale`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Exit at once instead of waiting for the services to converge
    #[arg(short, long)]
    pub detach: bool,
    /// SERVICE=REPLICAS pairs
    #[arg(value_name = "SERVICE=REPLICAS", required = true, value_parser = parse_scale)]
    pub scales: Vec<(String, u64)>,
}

/// `SERVICE=N`, N a number of replicas.
pub fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (service, n) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid scale {s:?}: write SERVICE=REPLICAS, e.g. web=3"))?;
    if service.is_empty() {
        return Err(format!(
            "invalid scale {s:?}: the service is missing; write SERVICE=REPLICAS"
        ));
    }
    let n = n.trim().parse::<u64>().map_err(|_| {
        format!("invalid replicas {n:?} for {service}: write a number of zero or more")
    })?;
    Ok((service.to_string(), n))
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        let all = services(c).await?;
        let mut errors = Vec::new();
        let mut scaled = Vec::new();
        for (name, n) in &args.scales {
            let service = match RESOLVER.resolve(&all, name) {
                Ok(service) => service,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut spec = service.spec.clone().unwrap_or_default();
            if let Err(e) = set_replicas(&mut spec, *n) {
                errors.push(format!("{name}: {e}"));
                continue;
            }
            let request = UpdateServiceRequest {
                service_id: id(service).to_string(),
                service_version: version(service),
                spec: Some(spec),
                rollback: 0,
            };
            match c.control().update_service(request).await {
                Ok(_) => {
                    output::print(&format!("{name} scaled to {n}\n"))?;
                    scaled.push(id(service).to_string());
                }
                Err(s) => errors.push(c.error("UpdateService", &s)),
            }
        }
        if !args.detach {
            for service_id in &scaled {
                if let Err(e) = progress::wait(c, service_id).await {
                    errors.push(e);
                }
            }
        }
        join_errors(errors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse() {
        assert_eq!(parse_scale("web=3").unwrap(), ("web".into(), 3));
        assert!(parse_scale("web").unwrap_err().contains("SERVICE=REPLICAS"));
        assert!(
            parse_scale("=3")
                .unwrap_err()
                .contains("service is missing")
        );
        assert!(
            parse_scale("web=-1")
                .unwrap_err()
                .contains("invalid replicas")
        );
        assert!(parse_scale("web=x").is_err());
    }
}
