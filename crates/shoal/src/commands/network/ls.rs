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

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{Annotations, Driver, IpamConfig, IpamOptions, Meta, NetworkSpec};

    fn network(id: &str, name: &str, driver: Option<&str>, subnet: Option<&str>) -> Network {
        Network {
            meta: Some(Meta {
                id: id.into(),
                version: 2,
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: vec![],
                }),
                ..Default::default()
            }),
            driver_state: driver.map(|d| Driver {
                name: d.into(),
                ..Default::default()
            }),
            ipam: subnet.map(|s| IpamOptions {
                configs: vec![IpamConfig {
                    subnet: s.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The ingress network, two user networks, and one whose driver and subnet are not
    /// allocated yet (shown as an overlay with no subnet).
    fn networks() -> Vec<Network> {
        vec![
            network(
                "y3kq8vw1c0b2n5m7x9z4t6r8p",
                "ingress",
                Some("overlay"),
                Some("10.0.0.0/24"),
            ),
            network(
                "q0w9e8r7t6y5u4i3o2p1a2s3d",
                "backend",
                Some("overlay"),
                Some("10.0.1.0/24"),
            ),
            network("m4n5b6v7c8x9z0l1k2j3h4g5f", "pending-net", None, None),
            network(
                "a1s2d3f4g5h6j7k8l9z0x1c2v",
                "frontend-with-a-long-name",
                Some("overlay"),
                Some("172.20.0.0/16"),
            ),
        ]
    }

    #[test]
    fn snapshot_table() {
        insta::assert_snapshot!("network_ls", render(networks(), false, Format::Table));
    }

    #[test]
    fn quiet_and_json() {
        assert_eq!(
            render(networks(), true, Format::Table),
            "q0w9e8r7t6y5u4i3o2p1a2s3d\na1s2d3f4g5h6j7k8l9z0x1c2v\ny3kq8vw1c0b2n5m7x9z4t6r8p\n\
             m4n5b6v7c8x9z0l1k2j3h4g5f\n"
        );
        let json = render(networks(), false, Format::Json);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["ID"], "q0w9e8r7t6y5u4i3o2p1a2s3d");
        assert_eq!(first["Subnet"], "10.0.1.0/24");
        assert_eq!(first["Scope"], "swarm");
    }
}
