//! `shoal service update [OPTIONS] SERVICE`: changes a service (docker's flags), prints its
//! name, then (without `-d`) waits until it has converged. `--force` redeploys its tasks even
//! when nothing else changes.

use std::path::PathBuf;

use shoal_api::labels::Labels;
use shoal_api::v1::{ServiceSpec, UpdateServiceRequest, task_spec};

use super::options::{self, SpecOptions};
use super::{RESOLVER, id, progress, services, version};
use crate::commands::client;
use crate::commands::node::update::parse_label;
use crate::commands::output;

/// Arguments of `shoal service update`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Image of container tasks
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Add or change an environment variable (KEY=VALUE)
    #[arg(long = "env-add", visible_alias = "env", short = 'e', value_name = "KEY=VALUE", value_parser = options::parse_env)]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long = "env-rm", value_name = "KEY")]
    pub env_rm: Vec<String>,
    /// Add or change a service label (KEY=VALUE)
    #[arg(long = "label-add", visible_alias = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label
    #[arg(long = "label-rm", value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Add or change a container label (KEY=VALUE)
    #[arg(long = "container-label-add", visible_alias = "container-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub container_label_add: Vec<(String, String)>,
    /// Remove a container label
    #[arg(long = "container-label-rm", value_name = "KEY")]
    pub container_label_rm: Vec<String>,
    /// Add a placement constraint
    #[arg(long = "constraint-add", visible_alias = "constraint", value_name = "EXPR", value_parser = options::parse_constraint)]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint
    #[arg(long = "constraint-rm", value_name = "EXPR")]
    pub constraint_rm: Vec<String>,
    /// Publish a port, or change the one with the same target (PUBLISHED:TARGET[/PROTOCOL] or
    /// mode=host,published=P,target=T)
    #[arg(long = "publish-add", visible_alias = "publish", short = 'p', value_name = "PORT", value_parser = super::publish::parse_publish)]
    pub publish_add: Vec<shoal_api::v1::PortConfig>,
    /// Stop publishing a port, by target port (80 or 80/udp)
    #[arg(long = "publish-rm", value_name = "TARGET")]
    pub publish_rm: Vec<String>,
    /// Attach the tasks to a network (name or ID)
    #[arg(long = "network-add", value_name = "NETWORK")]
    pub network_add: Vec<String>,
    /// Detach the tasks from a network (name or ID)
    #[arg(long = "network-rm", value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    /// Add a secret (NAME, or source=NAME,target=FILE,uid=,gid=,mode=); replaces the one
    /// with the same target
    #[arg(long = "secret-add", value_name = "SECRET", value_parser = options::parse_secret)]
    pub secret_add: Vec<shoal_api::v1::SecretReference>,
    /// Remove a secret (name or ID)
    #[arg(long = "secret-rm", value_name = "SECRET")]
    pub secret_rm: Vec<String>,
    /// Add a config (NAME, or source=NAME,target=FILE,uid=,gid=,mode=); replaces the one
    /// with the same target
    #[arg(long = "config-add", value_name = "CONFIG", value_parser = options::parse_config)]
    pub config_add: Vec<shoal_api::v1::ConfigReference>,
    /// Remove a config (name or ID)
    #[arg(long = "config-rm", value_name = "CONFIG")]
    pub config_rm: Vec<String>,
    #[command(flatten)]
    pub spec: SpecOptions,
    /// Redeploy the tasks even if nothing changed
    #[arg(long)]
    pub force: bool,
    /// Exit at once instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Do not show progress (implies -d)
    #[arg(short, long)]
    pub quiet: bool,
    /// The service, by ID, name or unique ID prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// Applies the flags to a service's spec.
pub fn apply(args: &Args, spec: &mut ServiceSpec) -> Result<(), String> {
    let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
    labels.normalize_labels();
    for (k, v) in &args.label_add {
        labels.set_label(k.clone(), v.clone());
    }
    for k in &args.label_rm {
        labels.remove_label(k);
    }
    let task = spec.task.get_or_insert_with(Default::default);
    let task: &mut shoal_api::v1::TaskSpecFields = task;
    match task.runtime.as_mut() {
        Some(task_spec::Runtime::Container(c)) => {
            if let Some(image) = &args.image {
                c.image = image.clone();
            }
            for (k, v) in &args.container_label_add {
                c.labels.insert(k.clone(), v.clone());
            }
            for k in &args.container_label_rm {
                c.labels.remove(k);
            }
        }
        Some(task_spec::Runtime::Process(_)) => {
            if args.image.is_some() {
                return Err(
                    "--image applies to container tasks only; this service runs a host \
                     process (remove it and create it again to run containers)"
                        .into(),
                );
            }
            if !args.container_label_add.is_empty() || !args.container_label_rm.is_empty() {
                return Err(
                    "--container-label-add/--container-label-rm apply to container \
                     tasks only; this service runs a host process"
                        .into(),
                );
            }
        }
        None => {}
    }
    if let Some(fields) = options::runtime_fields(task) {
        fields
            .env
            .retain(|e| !args.env_rm.iter().any(|k| options::env_key(e) == k));
        for entry in &args.env_add {
            options::env_set(fields.env, entry);
        }
        let mut fields = fields;
        options::update_file_references(
            &mut fields,
            &args.secret_add,
            &args.secret_rm,
            &args.config_add,
            &args.config_rm,
        );
    }
    if !args.constraint_add.is_empty() || !args.constraint_rm.is_empty() {
        let p = task.placement.get_or_insert_with(Default::default);
        p.constraints.retain(|c| !args.constraint_rm.contains(c));
        for c in &args.constraint_add {
            if !p.constraints.contains(c) {
                p.constraints.push(c.clone());
            }
        }
    }
    if args.force {
        task.force_update += 1;
    }
    args.spec.apply(spec)?;
    super::publish::apply_update(
        spec,
        &args.publish_add,
        &args.publish_rm,
        &args.network_add,
        &args.network_rm,
    )
}

pub fn run(socket: Option<PathBuf>, mut args: Args) -> Result<(), String> {
    client::run(socket, async |c| {
        // The spec names its networks by ID.
        args.network_rm = super::publish::network_ids(c, &args.network_rm).await?;
        let all = services(c).await?;
        let service = RESOLVER.resolve(&all, &args.service)?;
        let mut spec = service.spec.clone().unwrap_or_default();
        apply(&args, &mut spec)?;
        let service_id = id(service).to_string();
        let request = UpdateServiceRequest {
            service_id: service_id.clone(),
            service_version: version(service),
            spec: Some(spec),
            rollback: 0,
        };
        c.control()
            .update_service(request)
            .await
            .map_err(|s| c.error("UpdateService", &s))?;
        output::print(&format!("{}\n", args.service))?;
        if args.detach || args.quiet {
            return Ok(());
        }
        progress::wait(c, &service_id).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::tests::service;
    use clap::Parser;
    use shoal_api::v1::service_spec;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn updated(argv: &[&str]) -> Result<ServiceSpec, String> {
        let cli = Cli::try_parse_from(std::iter::once("update").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        let mut spec = service("svc", "web", 2).spec.unwrap();
        apply(&cli.args, &mut spec)?;
        Ok(spec)
    }

    fn env(spec: &ServiceSpec) -> Vec<String> {
        match spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
            task_spec::Runtime::Process(p) => p.env.clone(),
            task_spec::Runtime::Container(c) => c.env.clone(),
        }
    }

    #[test]
    fn env_labels_constraints_and_replicas_change() {
        let spec = updated(&[
            "--env",
            "C=D",
            "--env-add",
            "A=Z",
            "--label-add",
            "team=a",
            "--constraint-add",
            "node.role==worker",
            "--replicas",
            "5",
            "--limit-memory",
            "1g",
            "web",
        ])
        .unwrap();
        assert_eq!(env(&spec), ["A=Z", "C=D"]);
        assert_eq!(spec.annotations.as_ref().unwrap().labels[0].value, "a");
        let task = spec.task.as_ref().unwrap();
        assert_eq!(
            task.placement.as_ref().unwrap().constraints,
            ["node.role==worker"]
        );
        assert_eq!(
            task.resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()
                .memory_bytes,
            1 << 30
        );
        assert_eq!(
            spec.mode,
            Some(service_spec::Mode::Replicated(
                shoal_api::v1::ReplicatedService { replicas: 5 }
            ))
        );
        let spec = updated(&["--env-rm", "A", "web"]).unwrap();
        assert!(env(&spec).is_empty());
    }

    #[test]
    fn force_changes_only_force_update_and_process_services_refuse_images() {
        let before = service("svc", "web", 2).spec.unwrap();
        let spec = updated(&["--force", "web"]).unwrap();
        assert_eq!(spec.task.as_ref().unwrap().force_update, 1);
        let mut back = spec.clone();
        back.task.as_mut().unwrap().force_update = 0;
        assert_eq!(back, before);
        let e = updated(&["--image", "nginx", "web"]).unwrap_err();
        assert!(e.contains("container tasks only"), "{e}");
        assert_eq!(updated(&["web"]).unwrap(), before);
    }

    #[test]
    fn secrets_and_configs_are_added_and_removed() {
        let spec = updated(&["--secret-add", "db", "--config-add", "app.conf", "web"]).unwrap();
        let p = match spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
            task_spec::Runtime::Process(p) => p.clone(),
            task_spec::Runtime::Container(_) => unreachable!(),
        };
        assert_eq!(p.secrets[0].secret_name, "db");
        assert_eq!(p.configs[0].config_name, "app.conf");
        let mut current = service("svc", "web", 2).spec.unwrap();
        let cli = Cli::try_parse_from([
            "update",
            "--secret-rm",
            "db",
            "--config-rm",
            "app.conf",
            "web",
        ])
        .unwrap();
        apply(&cli.args, &mut current).unwrap();
        let cli = Cli::try_parse_from(["update", "--secret-add", "db", "web"]).unwrap();
        apply(&cli.args, &mut current).unwrap();
        let cli = Cli::try_parse_from(["update", "--secret-rm", "db", "web"]).unwrap();
        apply(&cli.args, &mut current).unwrap();
        assert_eq!(current, service("svc", "web", 2).spec.unwrap());
    }
}
