//! `shoal config ...`: the swarm's configs. One file per command; what they share with
//! `secret` is in `file_object`, and this file says how a config is fetched, made and removed.

pub mod create;
pub mod inspect;
pub mod ls;
pub mod rm;

use std::path::PathBuf;

use shoal_api::v1::{
    Annotations, Config, ConfigSpec, CreateConfigRequest, Label, ListConfigsRequest, Meta,
    RemoveConfigRequest,
};

use super::client::Client;
use super::file_object::{self, FileObject};
use super::output::{self, Json};

/// Arguments of `shoal config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a config from a file or standard input
    Create(create::Args),
    /// List configs
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Show configs in detail, their data included, as JSON
    Inspect(inspect::Args),
    /// Remove configs
    #[command(visible_alias = "remove")]
    Rm(rm::Args),
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    match args.command {
        Command::Create(a) => create::run(socket, a),
        Command::Ls(a) => ls::run(socket, a),
        Command::Inspect(a) => inspect::run(socket, a),
        Command::Rm(a) => rm::run(socket, a),
    }
}

impl FileObject for Config {
    const KIND: &'static str = "config";

    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    fn annotations(&self) -> Option<&Annotations> {
        self.spec.as_ref().and_then(|s| s.annotations.as_ref())
    }

    /// The data, base64-encoded (docker's `Spec.Data`), and the templating driver if any.
    fn spec_extra(&self) -> Vec<(&'static str, Json)> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut extra = vec![("Data", Json::str(output::base64(&spec.data)))];
        if let Some(t) = spec.templating.as_ref() {
            extra.push(("Templating", file_object::driver_json(t)));
        }
        extra
    }

    async fn list(c: &mut Client) -> Result<Vec<Config>, String> {
        Ok(c.control()
            .list_configs(ListConfigsRequest::default())
            .await
            .map_err(|s| c.error("ListConfigs", &s))?
            .into_inner()
            .configs)
    }

    async fn create(
        c: &mut Client,
        name: String,
        labels: Vec<Label>,
        data: Vec<u8>,
    ) -> Result<String, String> {
        let spec = ConfigSpec {
            annotations: Some(Annotations { name, labels }),
            data,
            ..Default::default()
        };
        let config = c
            .control()
            .create_config(CreateConfigRequest { spec: Some(spec) })
            .await
            .map_err(|s| c.error("CreateConfig", &s))?
            .into_inner()
            .config
            .ok_or("the manager did not return the created config")?;
        Ok(file_object::id(&config).to_string())
    }

    async fn remove(c: &mut Client, config_id: String) -> Result<(), String> {
        c.control()
            .remove_config(RemoveConfigRequest { config_id })
            .await
            .map_err(|s| c.error("RemoveConfig", &s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_shows_the_data_in_base64() {
        let config = Config {
            meta: Some(Meta {
                id: "c1".into(),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: "nginx.conf".into(),
                    labels: vec![],
                }),
                data: b"foobar".to_vec(),
                ..Default::default()
            }),
        };
        let v: serde_json::Value =
            serde_json::from_str(&file_object::to_json(&config).compact()).unwrap();
        assert_eq!(v["Spec"]["Name"], "nginx.conf");
        assert_eq!(v["Spec"]["Data"], "Zm9vYmFy");
    }
}
