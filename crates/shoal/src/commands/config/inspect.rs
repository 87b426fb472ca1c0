//! `shoal config inspect CONFIG...`: configs in full as a JSON array, their data in base64
//! (`Spec.Data`), as docker shows them.

use std::path::PathBuf;

use shoal_api::v1::Config;

use crate::commands::file_object;

/// Arguments of `shoal config inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configs, by ID, name or unique ID prefix
    #[arg(value_name = "CONFIG", required = true)]
    pub configs: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::inspect::<Config>(socket, &args.configs)
}
