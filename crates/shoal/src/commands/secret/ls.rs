//! `shoal secret ls [-q] [--format json]`: the swarm's secrets, as docker lists them.

use std::path::PathBuf;

use shoal_api::v1::Secret;

use crate::commands::file_object;

/// Arguments of `shoal secret ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print secret IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::ls::<Secret>(socket, args.quiet, args.format.as_deref())
}
