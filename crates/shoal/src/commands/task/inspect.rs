//! `shoal task inspect TASK...`: tasks in full, as a JSON array.

use std::path::PathBuf;

use shoal_api::v1::ListTasksRequest;

use super::{list, resolve, to_json};
use crate::commands::client;
use crate::commands::node::join_errors;
use crate::commands::output;

/// Arguments of `shoal task inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tasks, by ID, unique ID prefix or full name (web.1.<ID>)
    #[arg(value_name = "TASK", required = true)]
    pub tasks: Vec<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let (text, result) = client::run(socket, async |c| {
        let all = list(c, ListTasksRequest::default()).await?;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for wanted in &args.tasks {
            match resolve(&all, wanted) {
                Ok(task) => found.push(to_json(task)),
                Err(e) => errors.push(e),
            }
        }
        // As docker does: the tasks found are printed even when others are not.
        Ok((output::json_array(found), join_errors(errors)))
    })?;
    output::print(&text)?;
    result
}
