//! `shoal secret inspect SECRET...`: secrets as a JSON array: their names, labels and times,
//! never their data (the managers do not give it out).

use std::path::PathBuf;

use shoal_api::v1::Secret;

use crate::commands::file_object;

/// Arguments of `shoal secret inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Secrets, by ID, name or unique ID prefix
    #[arg(value_name = "SECRET", required = true)]
    pub secrets: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::inspect::<Secret>(socket, &args.secrets)
}
