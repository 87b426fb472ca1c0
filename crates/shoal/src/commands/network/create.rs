//! `shoal network create [--driver overlay] [--subnet CIDR] [--gateway IP] NAME`: creates an
//! overlay network and prints its ID. Without `--subnet`, the network takes the next free /24
//! of 10.0.0.0/8.

use std::path::PathBuf;

use shoal_api::labels::Labels;
use shoal_api::v1::{
    Annotations, CreateNetworkRequest, Driver, IpamConfig, IpamOptions, Label, NetworkSpec,
    ipam_config,
};

use super::id;
use crate::commands::client;
use crate::commands::node::update::parse_label;
use crate::commands::output;

/// Arguments of `shoal network create`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network driver (only overlay so far)
    #[arg(short, long, default_value = "overlay", value_name = "DRIVER")]
    pub driver: String,
    /// Subnet in CIDR notation (10.0.9.0/24); default: the next free /24 of 10.0.0.0/8
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// Gateway of the subnet (default: its first address)
    #[arg(long, value_name = "IP", requires = "subnet")]
    pub gateway: Option<String>,
    /// Network label (KEY=VALUE)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Let standalone containers attach (recorded; no data plane yet)
    #[arg(long)]
    pub attachable: bool,
    /// Restrict external access to the network (recorded; no data plane yet)
    #[arg(long)]
    pub internal: bool,
    /// Network name
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// The spec the flags describe.
pub fn build_spec(args: &Args) -> NetworkSpec {
    let mut labels: Vec<Label> = args
        .labels
        .iter()
        .map(|(key, value)| Label {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    labels.normalize_labels();
    NetworkSpec {
        annotations: Some(Annotations {
            name: args.name.clone(),
            labels,
        }),
        driver_config: Some(Driver {
            name: args.driver.clone(),
            options: Default::default(),
        }),
        ipam: args.subnet.as_ref().map(|subnet| IpamOptions {
            driver: None,
            configs: vec![IpamConfig {
                family: ipam_config::AddressFamily::Ipv4 as i32,
                subnet: subnet.clone(),
                gateway: args.gateway.clone().unwrap_or_default(),
                ..Default::default()
            }],
        }),
        attachable: args.attachable,
        internal: args.internal,
        ..Default::default()
    }
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let spec = build_spec(&args);
    client::run(socket, async |c| {
        let network = c
            .control()
            .create_network(CreateNetworkRequest { spec: Some(spec) })
            .await
            .map_err(|s| c.error("CreateNetwork", &s))?
            .into_inner()
            .network
            .ok_or("the manager did not return the created network")?;
        output::print(&format!("{}\n", id(&network)))
    })
}
