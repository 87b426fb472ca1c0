//! `shoal secret ...`: the swarm's secrets. One file per command; what they share with
//! `config` is in `file_object`, and this file says how a secret is fetched, made and removed.
//!
//! A secret's data goes to the managers once, at `create`, and never comes back: the Control
//! API answers without it, and nothing here prints it.

pub mod create;
pub mod inspect;
pub mod ls;
pub mod rm;

use std::path::PathBuf;

use shoal_api::v1::{
    Annotations, CreateSecretRequest, Label, ListSecretsRequest, Meta, RemoveSecretRequest, Secret,
    SecretSpec,
};

use super::client::Client;
use super::file_object::{self, FileObject};
use super::output::Json;

/// Arguments of `shoal secret`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a secret from a file or standard input
    Create(create::Args),
    /// List secrets
    #[command(visible_alias = "list")]
    Ls(ls::Args),
    /// Show secrets in detail (never their data), as JSON
    Inspect(inspect::Args),
    /// Remove secrets
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

impl FileObject for Secret {
    const KIND: &'static str = "secret";

    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    fn annotations(&self) -> Option<&Annotations> {
        self.spec.as_ref().and_then(|s| s.annotations.as_ref())
    }

    /// Never the data, even should a manager send it.
    fn spec_extra(&self) -> Vec<(&'static str, Json)> {
        let mut extra = Vec::new();
        if let Some(d) = self.spec.as_ref().and_then(|s| s.driver.as_ref()) {
            extra.push(("Driver", file_object::driver_json(d)));
        }
        if let Some(t) = self.spec.as_ref().and_then(|s| s.templating.as_ref()) {
            extra.push(("Templating", file_object::driver_json(t)));
        }
        extra
    }

    async fn list(c: &mut Client) -> Result<Vec<Secret>, String> {
        Ok(c.control()
            .list_secrets(ListSecretsRequest::default())
            .await
            .map_err(|s| c.error("ListSecrets", &s))?
            .into_inner()
            .secrets)
    }

    async fn create(
        c: &mut Client,
        name: String,
        labels: Vec<Label>,
        data: Vec<u8>,
    ) -> Result<String, String> {
        let spec = SecretSpec {
            annotations: Some(Annotations { name, labels }),
            data,
            ..Default::default()
        };
        let secret = c
            .control()
            .create_secret(CreateSecretRequest { spec: Some(spec) })
            .await
            .map_err(|s| c.error("CreateSecret", &s))?
            .into_inner()
            .secret
            .ok_or("the manager did not return the created secret")?;
        Ok(file_object::id(&secret).to_string())
    }

    async fn remove(c: &mut Client, secret_id: String) -> Result<(), String> {
        c.control()
            .remove_secret(RemoveSecretRequest { secret_id })
            .await
            .map_err(|s| c.error("RemoveSecret", &s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_never_shows_data() {
        let secret = Secret {
            meta: Some(Meta {
                id: "s1".into(),
                ..Default::default()
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: "db".into(),
                    labels: vec![],
                }),
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
            internal: false,
        };
        let json = file_object::to_json(&secret).pretty();
        assert!(!json.contains("Data"), "{json}");
        assert!(!json.contains("aHVudGVyMg"), "{json}");
        assert!(!json.contains("hunter2"), "{json}");
    }
}
