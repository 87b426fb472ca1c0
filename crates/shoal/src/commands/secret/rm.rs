//! `shoal secret rm SECRET...`: removes secrets no service uses, printing each as named.

use std::path::PathBuf;

use shoal_api::v1::Secret;

use crate::commands::file_object;

/// Arguments of `shoal secret rm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Secrets, by ID, name or unique ID prefix
    #[arg(value_name = "SECRET", required = true)]
    pub secrets: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::rm::<Secret>(socket, &args.secrets)
}
