//! `shoal config create [--label K=V]... NAME FILE|-`: creates a config from a file (or from
//! standard input with `-`) and prints its ID.

use std::path::PathBuf;

use shoal_api::v1::Config;

use crate::commands::file_object;
use crate::commands::node::update::parse_label;

/// Arguments of `shoal config create`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config label (KEY=VALUE)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Config name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// File to read the config from, or - for standard input
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::create::<Config>(socket, args.name, &args.file, &args.labels)
}
