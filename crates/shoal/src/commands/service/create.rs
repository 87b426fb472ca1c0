//! `shoal service create [OPTIONS] [IMAGE] [-- COMMAND [ARG...]]`: declares a service, prints
//! its ID, and (without `-d`) waits until its tasks run.
//!
//! No IMAGE, a COMMAND: the tasks run as host processes (runtime `process`). An IMAGE: they
//! run as containers (runtime `container`), the COMMAND (if any) as the container's arguments.

use std::path::PathBuf;

use shoal_api::labels::Labels;
use shoal_api::v1::{
    Annotations, ContainerSpec, CreateServiceRequest, Label, Placement, ProcessSpec, ServiceSpec,
    TaskSpecFields, task_spec,
};

use super::options::{self, Mode, SpecOptions};
use super::progress;
use crate::commands::client;
use crate::commands::node::update::parse_label;
use crate::commands::output;

/// Arguments of `shoal service create`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Service name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Service mode
    #[arg(long, value_enum, default_value = "replicated", value_name = "MODE")]
    pub mode: Mode,
    /// Set an environment variable (KEY=VALUE; KEY alone takes this shell's value)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = options::parse_env)]
    pub env: Vec<String>,
    /// Service label (KEY=VALUE)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Container label (KEY=VALUE; container tasks only)
    #[arg(long = "container-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub container_labels: Vec<(String, String)>,
    /// Placement constraint (node.labels.zone==east, node.role!=manager)
    #[arg(long = "constraint", value_name = "EXPR", value_parser = options::parse_constraint)]
    pub constraints: Vec<String>,
    /// Publish a port: PUBLISHED:TARGET[/PROTOCOL], TARGET alone (a port is allocated from
    /// 30000-32767), or mode=host,published=P,target=T
    #[arg(short = 'p', long = "publish", value_name = "PORT", value_parser = super::publish::parse_publish)]
    pub publish: Vec<shoal_api::v1::PortConfig>,
    /// Attach the tasks to a network (name or ID)
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Give the tasks a secret: NAME, or source=NAME,target=FILE,uid=,gid=,mode= (mode 0400
    /// by default)
    #[arg(long = "secret", value_name = "SECRET", value_parser = options::parse_secret)]
    pub secrets: Vec<shoal_api::v1::SecretReference>,
    /// Give the tasks a config: NAME, or source=NAME,target=FILE,uid=,gid=,mode= (mode 0444
    /// by default)
    #[arg(long = "config", value_name = "CONFIG", value_parser = options::parse_config)]
    pub configs: Vec<shoal_api::v1::ConfigReference>,
    #[command(flatten)]
    pub spec: SpecOptions,
    /// Exit at once instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Only print the service ID, no progress (implies -d)
    #[arg(short, long)]
    pub quiet: bool,
    /// Image the tasks run as containers; leave it out to run COMMAND as a host process
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    /// The command and its arguments (after `--`)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The spec the flags describe.
pub fn build_spec(args: &Args) -> Result<ServiceSpec, String> {
    let runtime = match (&args.image, args.command.split_first()) {
        (Some(image), _) => {
            if !args.command.is_empty() && args.command[0].is_empty() {
                return Err("the command is empty".into());
            }
            task_spec::Runtime::Container(Box::new(ContainerSpec {
                image: image.clone(),
                args: args.command.clone(),
                env: Vec::new(),
                labels: args.container_labels.iter().cloned().collect(),
                ..Default::default()
            }))
        }
        (None, Some((command, rest))) => {
            if !args.container_labels.is_empty() {
                return Err(
                    "--container-label applies to container tasks only; this service \
                     runs a host process (give an IMAGE to run containers)"
                        .into(),
                );
            }
            task_spec::Runtime::Process(Box::new(ProcessSpec {
                command: command.clone(),
                args: rest.to_vec(),
                ..Default::default()
            }))
        }
        (None, None) => {
            return Err(
                "an IMAGE (tasks run as containers) or a COMMAND after `--` (tasks run \
                 as host processes) is required, e.g. `shoal service create --name web -- \
                 sleep 1000`"
                    .into(),
            );
        }
    };
    let mut labels: Vec<Label> = args
        .labels
        .iter()
        .map(|(key, value)| Label {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    labels.normalize_labels();
    let mut task = TaskSpecFields {
        runtime: Some(runtime),
        ..Default::default()
    };
    if let Some(fields) = options::runtime_fields(&mut task) {
        for entry in &args.env {
            options::env_set(fields.env, entry);
        }
        fields.secrets.extend(args.secrets.iter().cloned());
        fields.configs.extend(args.configs.iter().cloned());
    }
    if !args.constraints.is_empty() {
        task.placement = Some(Box::new(Placement {
            constraints: args.constraints.clone(),
            ..Default::default()
        }));
    }
    let mut spec = ServiceSpec {
        annotations: Some(Annotations {
            name: args.name.clone().unwrap_or_default(),
            labels,
        }),
        task: Some(task.into()),
        mode: Some(options::mode(args.mode)),
        ..Default::default()
    };
    args.spec.apply(&mut spec)?;
    super::publish::apply_create(&mut spec, &args.publish, &args.networks);
    Ok(spec)
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let mut spec = build_spec(&args)?;
    let quiet = args.quiet;
    let detach = args.detach || quiet;
    client::run(socket, async |c| {
        if spec.annotations.as_ref().is_none_or(|a| a.name.is_empty()) {
            // As docker does: a name made up when none is given.
            spec.annotations.get_or_insert_with(Default::default).name = generated_name();
        }
        let service = c
            .control()
            .create_service(CreateServiceRequest { spec: Some(spec) })
            .await
            .map_err(|s| c.error("CreateService", &s))?
            .into_inner()
            .service
            .ok_or("the manager did not return the created service")?;
        let id = super::id(&service).to_string();
        output::print(&format!("{id}\n"))?;
        if detach {
            return Ok(());
        }
        progress::wait(c, &id).await
    })
}

/// A name for a service created without one: `service-` and 8 characters of a new ID.
fn generated_name() -> String {
    let id = shoal_api::id::new_id();
    format!("service-{}", &id[..8.min(id.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal_api::v1::{restart_policy, service_spec, update_config};

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<ServiceSpec, String> {
        let cli = Cli::try_parse_from(std::iter::once("create").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        build_spec(&cli.args)
    }

    fn process(spec: &ServiceSpec) -> &ProcessSpec {
        match spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
            task_spec::Runtime::Process(p) => p,
            other => panic!("not a process: {other:?}"),
        }
    }

    fn container(spec: &ServiceSpec) -> &ContainerSpec {
        match spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
            task_spec::Runtime::Container(c) => c,
            other => panic!("not a container: {other:?}"),
        }
    }

    #[test]
    fn a_command_alone_runs_as_a_process() {
        let spec = parse(&[
            "--name",
            "web",
            "--replicas",
            "2",
            "--env",
            "A=B",
            "-e",
            "C=D",
            "--workdir",
            "/tmp",
            "--user",
            "nobody",
            "--",
            "sleep",
            "1000",
        ])
        .unwrap();
        assert_eq!(spec.annotations.as_ref().unwrap().name, "web");
        assert_eq!(
            spec.mode,
            Some(service_spec::Mode::Replicated(
                shoal_api::v1::ReplicatedService { replicas: 2 }
            ))
        );
        let p = process(&spec);
        assert_eq!(p.command, "sleep");
        assert_eq!(p.args, ["1000"]);
        assert_eq!(p.env, ["A=B", "C=D"]);
        assert_eq!(p.dir, "/tmp");
        assert_eq!(p.user, "nobody");
        shoal_api::validation::validate_service_spec(&spec).unwrap();
    }

    #[test]
    fn an_image_runs_as_a_container() {
        let spec = parse(&[
            "--name",
            "web",
            "--container-label",
            "k=v",
            "--label",
            "team=a",
            "--stop-signal",
            "SIGINT",
            "--stop-grace-period",
            "30s",
            "nginx:1.27",
            "--",
            "nginx",
            "-g",
            "daemon off;",
        ])
        .unwrap();
        let c = container(&spec);
        assert_eq!(c.image, "nginx:1.27");
        assert_eq!(c.args, ["nginx", "-g", "daemon off;"]);
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(c.stop_signal, "SIGINT");
        assert_eq!(c.stop_grace_period.unwrap().seconds, 30);
        assert_eq!(spec.annotations.as_ref().unwrap().labels[0].key, "team");
        let bare = parse(&["alpine"]).unwrap();
        assert!(container(&bare).args.is_empty());
    }

    #[test]
    fn limits_restart_update_and_placement() {
        let spec = parse(&[
            "--name",
            "web",
            "--limit-cpu",
            "1.5",
            "--limit-memory",
            "512M",
            "--reserve-cpu",
            "0.25",
            "--reserve-memory",
            "64m",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "2s",
            "--restart-max-attempts",
            "3",
            "--update-parallelism",
            "2",
            "--update-delay",
            "10s",
            "--update-failure-action",
            "rollback",
            "--update-order",
            "start-first",
            "--constraint",
            "node.labels.zone==east",
            "--replicas-max-per-node",
            "1",
            "--",
            "sleep",
            "1",
        ])
        .unwrap();
        let task = spec.task.as_ref().unwrap();
        let r = task.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap().nano_cpus, 1_500_000_000);
        assert_eq!(r.limits.as_ref().unwrap().memory_bytes, 512 << 20);
        assert_eq!(r.reservations.as_ref().unwrap().nano_cpus, 250_000_000);
        assert_eq!(r.reservations.as_ref().unwrap().memory_bytes, 64 << 20);
        let restart = task.restart.as_ref().unwrap();
        assert_eq!(
            restart.condition,
            restart_policy::Condition::OnFailure as i32
        );
        assert_eq!(restart.delay.unwrap().seconds, 2);
        assert_eq!(restart.max_attempts, 3);
        let u = spec.update.as_ref().unwrap();
        assert_eq!(u.parallelism, 2);
        assert_eq!(u.delay.unwrap().seconds, 10);
        assert_eq!(
            u.failure_action,
            update_config::FailureAction::Rollback as i32
        );
        assert_eq!(u.order, update_config::UpdateOrder::StartFirst as i32);
        assert_eq!(u.monitor.unwrap().seconds, 5);
        let p = task.placement.as_ref().unwrap();
        assert_eq!(p.constraints, ["node.labels.zone==east"]);
        assert_eq!(p.max_replicas, 1);
        assert!(spec.rollback.is_none());
        shoal_api::validation::validate_service_spec(&spec).unwrap();
    }

    #[test]
    fn modes() {
        let global = parse(&["--mode", "global", "--", "true"]).unwrap();
        assert!(matches!(global.mode, Some(service_spec::Mode::Global(_))));
        let e = parse(&["--mode", "global", "--replicas", "2", "--", "true"]).unwrap_err();
        assert!(e.contains("replicated or replicated-job"), "{e}");
        let job = parse(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "4",
            "--max-concurrent",
            "2",
            "--",
            "true",
        ])
        .unwrap();
        assert_eq!(
            job.mode,
            Some(service_spec::Mode::ReplicatedJob(
                shoal_api::v1::ReplicatedJob {
                    max_concurrent: 2,
                    total_completions: 4
                }
            ))
        );
        let gj = parse(&["--mode", "global-job", "--", "true"]).unwrap();
        assert!(matches!(gj.mode, Some(service_spec::Mode::GlobalJob(_))));
        assert!(parse(&["--mode", "sideways", "--", "true"]).is_err());
        let e = parse(&["--max-concurrent", "2", "--", "true"]).unwrap_err();
        assert!(e.contains("replicated-job"), "{e}");
    }

    #[test]
    fn bad_input_is_refused_with_reasons() {
        let e = parse(&["--name", "x"]).unwrap_err();
        assert!(e.contains("an IMAGE"), "{e}");
        let e = parse(&["--container-label", "a=b", "--", "sleep", "1"]).unwrap_err();
        assert!(e.contains("container tasks only"), "{e}");
        let e = parse(&["--limit-memory", "lots", "--", "sleep", "1"]).unwrap_err();
        assert!(e.contains("invalid size"), "{e}");
        let e = parse(&["--limit-cpu", "two", "--", "sleep", "1"]).unwrap_err();
        assert!(e.contains("invalid CPU count"), "{e}");
        let e = parse(&["--restart-delay", "5", "--", "sleep", "1"]).unwrap_err();
        assert!(e.contains("invalid duration"), "{e}");
        let e = parse(&["--restart-condition", "sometimes", "--", "sleep", "1"]).unwrap_err();
        assert!(e.contains("sometimes"), "{e}");
    }

    #[test]
    fn secrets_and_configs_are_referenced_by_name() {
        let spec = parse(&[
            "--secret",
            "db",
            "--secret",
            "source=tok,target=token.txt,mode=0440",
            "--config",
            "app.conf",
            "--",
            "sleep",
            "1",
        ])
        .unwrap();
        let p = process(&spec);
        assert_eq!(p.secrets.len(), 2);
        assert_eq!(p.secrets[0].secret_name, "db");
        assert_eq!(p.secrets[0].file.as_ref().unwrap().mode, 0o400);
        assert_eq!(p.secrets[1].file.as_ref().unwrap().name, "token.txt");
        assert_eq!(p.configs[0].config_name, "app.conf");
        assert_eq!(p.configs[0].file.as_ref().unwrap().mode, 0o444);
        let spec = parse(&["--secret", "db", "alpine"]).unwrap();
        assert_eq!(container(&spec).secrets[0].secret_name, "db");
        let e = parse(&["--secret", "mode=7", "--", "true"]).unwrap_err();
        assert!(e.contains("invalid --secret"), "{e}");
    }
}
