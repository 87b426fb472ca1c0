//! `shoal config rm CONFIG...`: removes configs no service uses, printing each as named.

use std::path::PathBuf;

use shoal_api::v1::Config;

use crate::commands::file_object;

/// Arguments of `shoal config rm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Configs, by ID, name or unique ID prefix
    #[arg(value_name = "CONFIG", required = true)]
    pub configs: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::rm::<Config>(socket, &args.configs)
}
