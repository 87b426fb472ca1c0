//! `shoal service ls [-q] [--format json]`: the swarm's services, with their tasks running out
//! of those wanted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_api::v1::{
    ListServiceStatusesRequest, Service, list_service_statuses_response::ServiceStatus,
    port_config, service_spec,
};

use super::{id, image_of, name, services};
use crate::commands::client;
use crate::commands::output::{self, Format, Json};

/// Arguments of `shoal service ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print service IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let format = Format::parse(args.format.as_deref())?;
    let text = client::run(socket, async |c| {
        let services = services(c).await?;
        let statuses = if args.quiet || services.is_empty() {
            Vec::new()
        } else {
            c.control()
                .list_service_statuses(ListServiceStatusesRequest {
                    services: services.iter().map(|s| id(s).to_string()).collect(),
                })
                .await
                .map_err(|s| c.error("ListServiceStatuses", &s))?
                .into_inner()
                .statuses
        };
        Ok(render(services, &statuses, args.quiet, format))
    })?;
    output::print(&text)
}

const HEADERS: [&str; 6] = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];

/// The ports published on the routing mesh, as docker shows them: `*:8080->80/tcp`, the
/// allocated ports once the allocator has filled them in (host-mode ports are per node and
/// not shown, as in docker).
fn ports(service: &Service) -> String {
    let allocated = service.endpoint.as_ref().map(|e| e.ports.as_slice());
    let declared = service
        .spec
        .as_ref()
        .and_then(|s| s.endpoint.as_ref())
        .map(|e| e.ports.as_slice());
    let ports = match allocated {
        Some(ports) if !ports.is_empty() => ports,
        _ => declared.unwrap_or_default(),
    };
    ports
        .iter()
        .filter(|p| p.publish_mode() == port_config::PublishMode::Ingress)
        .map(|p| {
            let published = if p.published_port == 0 {
                String::new()
            } else {
                p.published_port.to_string()
            };
            let protocol = match p.protocol() {
                port_config::Protocol::Tcp => "tcp",
                port_config::Protocol::Udp => "udp",
                port_config::Protocol::Sctp => "sctp",
            };
            format!("*:{published}->{}/{protocol}", p.target_port)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `running/desired`, as docker shows it, with a job's completions and a per-node maximum.
fn replicas(service: &Service, status: Option<&ServiceStatus>) -> String {
    let status = status.cloned().unwrap_or_default();
    let spec = service.spec.clone().unwrap_or_default();
    let mut shown = format!("{}/{}", status.running_tasks, status.desired_tasks);
    match spec.mode {
        Some(service_spec::Mode::ReplicatedJob(j)) => {
            let total = if j.total_completions == 0 {
                j.max_concurrent
            } else {
                j.total_completions
            };
            shown.push_str(&format!(" ({}/{total} completed)", status.completed_tasks));
        }
        Some(service_spec::Mode::GlobalJob(_)) => {
            shown.push_str(&format!(
                " ({}/{} completed)",
                status.completed_tasks, status.desired_tasks
            ));
        }
        _ => {}
    }
    let max = spec
        .task
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .map(|p| p.max_replicas)
        .unwrap_or(0);
    if max > 0 && matches!(spec.mode, Some(service_spec::Mode::Replicated(_))) {
        shown.push_str(&format!(" (max {max} per node)"));
    }
    shown
}

/// The listing, sorted by name then ID.
pub fn render(
    mut services: Vec<Service>,
    statuses: &[ServiceStatus],
    quiet: bool,
    format: Format,
) -> String {
    services.sort_by(|a, b| (name(a), id(a)).cmp(&(name(b), id(b))));
    if quiet {
        return services.iter().map(|s| format!("{}\n", id(s))).collect();
    }
    let by_id: BTreeMap<&str, &ServiceStatus> = statuses
        .iter()
        .map(|s| (s.service_id.as_str(), s))
        .collect();
    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            [
                id(s).to_string(),
                name(s).to_string(),
                shoal_api::validation::mode_name(&spec).to_string(),
                replicas(s, by_id.get(id(s)).copied()),
                image_of(spec.task.as_ref()),
                ports(s),
            ]
        })
        .collect();
    match format {
        Format::Table => output::table(
            &HEADERS,
            &rows
                .iter()
                .map(|r| {
                    let mut row = r.to_vec();
                    row[0] = output::short_id(&r[0]).to_string();
                    row
                })
                .collect::<Vec<_>>(),
        ),
        Format::Json => output::json_lines(
            &rows
                .iter()
                .map(|[id, name, mode, replicas, image, ports]| {
                    Json::object([
                        ("ID", Json::str(id)),
                        ("Name", Json::str(name)),
                        ("Mode", Json::str(mode)),
                        ("Replicas", Json::str(replicas)),
                        ("Image", Json::str(image)),
                        ("Ports", Json::str(ports)),
                    ])
                })
                .collect::<Vec<_>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::tests::service;
    use shoal_api::v1::{
        ContainerSpec, EndpointSpec, GlobalJob, GlobalService, Placement, PortConfig, TaskSpec,
        TaskSpecFields, task_spec,
    };

    fn services() -> Vec<Service> {
        let mut api = service("bbbbbbbbbbbbbbbbbbbbbbbb2", "api", 1);
        api.spec.as_mut().unwrap().task = Some(TaskSpec::from(TaskSpecFields {
            runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                image: "nginx:1.27".into(),
                ..Default::default()
            }))),
            ..Default::default()
        }));
        let mut job = service("ccccccccccccccccccccccccc", "job", 0);
        job.spec.as_mut().unwrap().mode = Some(service_spec::Mode::ReplicatedJob(
            shoal_api::v1::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 5,
            },
        ));
        vec![service("aaaaaaaaaaaaaaaaaaaaaaaa1", "web", 2), api, job]
    }

    fn status(id: &str, desired: u64, running: u64, completed: u64) -> ServiceStatus {
        ServiceStatus {
            service_id: id.into(),
            desired_tasks: desired,
            running_tasks: running,
            completed_tasks: completed,
        }
    }

    fn container(image: &str, placement: Option<Placement>) -> TaskSpec {
        TaskSpec::from(TaskSpecFields {
            runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                image: image.into(),
                ..Default::default()
            }))),
            placement: placement.map(Box::new),
            ..Default::default()
        })
    }

    /// One service of each mode: replicated (one with a maximum per node, one publishing
    /// ports), global, replicated job, global job; and their statuses.
    fn every_mode() -> (Vec<Service>, Vec<ServiceStatus>) {
        let mut web = service("x7k2m9q4w1e8r5t3y6u0i2o4p", "web", 3);
        let spec = web.spec.as_mut().unwrap();
        spec.task = Some(container("nginx:1.27", None));
        spec.endpoint = Some(EndpointSpec {
            mode: 0,
            ports: vec![
                PortConfig {
                    name: String::new(),
                    protocol: 0,
                    target_port: 80,
                    published_port: 8080,
                    publish_mode: 0,
                },
                PortConfig {
                    name: String::new(),
                    protocol: 1,
                    target_port: 53,
                    published_port: 5353,
                    publish_mode: 1,
                },
            ],
        });
        let mut cache = service("c4a8c9e3d2f1g0h5j6k7l8m9n", "cache", 4);
        cache.spec.as_mut().unwrap().task = Some(container(
            "redis:7-alpine",
            Some(Placement {
                max_replicas: 2,
                ..Default::default()
            }),
        ));
        let mut agent = service("g1o2b3a4l5s6v7c8d9e0f1g2h", "monitoring-agent", 0);
        let spec = agent.spec.as_mut().unwrap();
        spec.mode = Some(service_spec::Mode::Global(GlobalService {}));
        spec.task = Some(container("prom/node-exporter:v1.8.1", None));
        let mut migrate = service("j0b1r2e3p4l5i6c7a8t9e0d1x", "db-migrate", 0);
        migrate.spec.as_mut().unwrap().mode = Some(service_spec::Mode::ReplicatedJob(
            shoal_api::v1::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 6,
            },
        ));
        let mut prune = service("g9j8o7b6g5l4o3b2a1l0z9y8x", "prune", 0);
        let spec = prune.spec.as_mut().unwrap();
        spec.mode = Some(service_spec::Mode::GlobalJob(GlobalJob {}));
        spec.task = Some(container("alpine:3.20", None));
        let statuses = vec![
            status("x7k2m9q4w1e8r5t3y6u0i2o4p", 3, 3, 0),
            status("c4a8c9e3d2f1g0h5j6k7l8m9n", 4, 2, 0),
            status("g1o2b3a4l5s6v7c8d9e0f1g2h", 5, 5, 0),
            status("j0b1r2e3p4l5i6c7a8t9e0d1x", 2, 2, 4),
            status("g9j8o7b6g5l4o3b2a1l0z9y8x", 5, 1, 4),
        ];
        (vec![web, cache, agent, migrate, prune], statuses)
    }

    #[test]
    fn snapshot_table_of_every_mode() {
        let (services, statuses) = every_mode();
        insta::assert_snapshot!(
            "service_ls",
            render(services, &statuses, false, Format::Table)
        );
    }

    #[test]
    fn table_shows_replicas_running_out_of_desired() {
        let statuses = [
            status("aaaaaaaaaaaaaaaaaaaaaaaa1", 2, 1, 0),
            status("bbbbbbbbbbbbbbbbbbbbbbbb2", 1, 1, 0),
            status("ccccccccccccccccccccccccc", 2, 2, 3),
        ];
        let out = render(services(), &statuses, false, Format::Table);
        assert_eq!(
            out,
            "ID             NAME   MODE             REPLICAS              IMAGE        PORTS\n\
             bbbbbbbbbbbb   api    replicated       1/1                   nginx:1.27\n\
             cccccccccccc   job    replicated-job   2/2 (3/5 completed)   sleep 1000\n\
             aaaaaaaaaaaa   web    replicated       1/2                   sleep 1000\n"
        );
        // Without statuses (a service created a moment ago): 0/0.
        let out = render(services(), &[], false, Format::Table);
        assert!(out.contains("web    replicated       0/0"), "{out}");
        assert_eq!(
            render(vec![], &[], false, Format::Table),
            "ID   NAME   MODE   REPLICAS   IMAGE   PORTS\n"
        );
    }

    #[test]
    fn quiet_and_json() {
        assert_eq!(
            render(services(), &[], true, Format::Table),
            "bbbbbbbbbbbbbbbbbbbbbbbb2\nccccccccccccccccccccccccc\naaaaaaaaaaaaaaaaaaaaaaaa1\n"
        );
        let out = render(
            services(),
            &[status("aaaaaaaaaaaaaaaaaaaaaaaa1", 2, 0, 0)],
            false,
            Format::Json,
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["ID"], "aaaaaaaaaaaaaaaaaaaaaaaa1");
        assert_eq!(lines[2]["Replicas"], "0/2");
        assert_eq!(lines[2]["Image"], "sleep 1000");
        assert_eq!(lines[0]["Mode"], "replicated");
    }
}
