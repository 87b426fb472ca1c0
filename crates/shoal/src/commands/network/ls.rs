//! `shoal network ls [-q] [--format json]`: the swarm's networks, as docker lists them.

use std::path::PathBuf;

use shoal_api::v1::Network;

use super::{driver, id, name, networks};
use crate::commands::client;
use crate::commands::output::{self, Format, Json};

/// Arguments of `shoal network ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print network IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let format = Format::parse(args.format.as_deref())?;
    let text = client::run(socket, async |c| {
        Ok(render(networks(c).await?, args.quiet, format))
    })?;
    output::print(&text)
}

fn subnet(n: &Network) -> &str {
    n.ipam
        .as_ref()
        .and_then(|i| i.configs.first())
        .map(|c| c.subnet.as_str())
        .unwrap_or("")
}

/// The listing, sorted by name.
pub fn render(mut networks: Vec<Network>, quiet: bool, format: Format) -> String {
    networks.sort_by(|a, b| (name(a), id(a)).cmp(&(name(b), id(b))));
    if quiet {
        return networks.iter().map(|n| format!("{}\n", id(n))).collect();
    }
    match format {
        Format::Table => output::table(
            &["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"],
            &networks
                .iter()
                .map(|n| {
                    vec![
                        output::short_id(id(n)).to_string(),
                        name(n).to_string(),
                        driver(n).to_string(),
                        "swarm".to_string(),
                        subnet(n).to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Format::Json => output::json_lines(
            &networks
                .iter()
                .map(|n| {
                    Json::object([
                        ("ID", Json::str(id(n))),
                        ("Name", Json::str(name(n))),
                        ("Driver", Json::str(driver(n))),
                        ("Scope", Json::str("swarm")),
                        ("Subnet", Json::str(subnet(n))),
                    ])
                })
                .collect::<Vec<_>>(),
        ),
    }
}
