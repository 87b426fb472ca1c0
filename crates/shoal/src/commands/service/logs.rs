//! `shoal service logs [-f] [--tail N] [--since T] [-t] SERVICE|TASK`: the output of a
//! service's tasks (or of one task), fetched from the nodes that run them through the
//! leader's log broker.
//!
//! Each line is prefixed, as docker prints it, with the task (`<service>.<slot>.<task id>`)
//! and the node's hostname, padded so the lines align: `web.1.x1y2z3a4b5c6@node-1 | hello`.
//! stdout lines go to stdout and stderr lines to stderr. A node that cannot deliver (it is
//! down) makes the command print what the others sent, then fail naming that node.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use shoal_api::naming::task_name;
use shoal_api::v1::{
    ListFilters, ListServicesRequest, ListTasksRequest, LogSelector, LogStream,
    LogSubscriptionOptions, SubscribeLogsRequest, Task,
};

use super::RESOLVER;
use crate::commands::client::{self, Client};
use crate::commands::output;

/// Arguments of `shoal service logs`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep printing new output until interrupted (or until the tasks end)
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task ("all" for everything)
    #[arg(long, value_name = "N", default_value = "all")]
    pub tail: String,
    /// Only lines since a time: a duration before now (10m, 1h30m), Unix seconds, or an RFC
    /// 3339 time (2024-05-01T12:00:00Z)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Show each line's timestamp
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print the lines only, without the task and node prefix
    #[arg(long)]
    pub raw: bool,
    /// The service (ID, name or ID prefix) or task (ID or ID prefix)
    pub target: String,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let tail = parse_tail(&args.tail)?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()?;
    client::run(socket, async |c| {
        let (selector, tasks) = select(c, &args.target).await?;
        let hostnames: BTreeMap<String, String> = c
            .nodes()
            .await?
            .iter()
            .map(|n| {
                (
                    crate::commands::node::id(n).to_string(),
                    crate::commands::node::hostname(n).to_string(),
                )
            })
            .collect();
        let prefixes: BTreeMap<String, String> = tasks
            .iter()
            .map(|t| {
                let id = t.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
                let host = hostnames
                    .get(&t.node_id)
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .unwrap_or_else(|| output::short_id(&t.node_id).to_string());
                (id, format!("{}@{host}", short_task_name(t)))
            })
            .collect();
        let width = prefixes
            .values()
            .map(|p| p.chars().count())
            .max()
            .unwrap_or(0);
        let request = SubscribeLogsRequest {
            selector: Some(selector),
            options: Some(LogSubscriptionOptions {
                streams: Vec::new(),
                follow: args.follow,
                tail,
                since: since.map(|t| {
                    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    prost_types::Timestamp {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    }
                }),
            }),
        };
        let mut stream = c
            .logs()
            .subscribe_logs(request)
            .await
            .map_err(|s| c.error("SubscribeLogs", &s))?
            .into_inner();
        loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => return Ok(()),
                Err(status) => return Err(c.error("SubscribeLogs", &status)),
            };
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for message in batch.messages {
                let mut line = Vec::new();
                if args.timestamps
                    && let output::Json::Str(t) = output::timestamp(message.timestamp.as_ref())
                {
                    line.extend_from_slice(t.as_bytes());
                    line.push(b' ');
                }
                if !args.raw {
                    let task = message.context.map(|c| c.task_id).unwrap_or_default();
                    let prefix = prefixes.get(&task).cloned().unwrap_or(task);
                    line.extend_from_slice(format!("{prefix:<width$}    | ").as_bytes());
                }
                line.extend_from_slice(&message.data);
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                let written = if message.stream == LogStream::Stderr as i32 {
                    err.write_all(&line)
                } else {
                    out.write_all(&line)
                };
                // The reader went away (`| head`): stop quietly.
                if written.is_err() {
                    return Ok(());
                }
            }
            let _ = out.flush();
        }
    })
}

/// `<service>.<slot>.<short task id>`, as docker prints it in logs.
fn short_task_name(task: &Task) -> String {
    let id = task.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("");
    let name = task_name(task);
    match name.strip_suffix(id) {
        Some(head) if !head.is_empty() => format!("{head}{}", output::short_id(id)),
        _ => name,
    }
}

/// The selector for `target` (a service, else a task) and the tasks it covers.
async fn select(c: &mut Client, target: &str) -> Result<(LogSelector, Vec<Task>), String> {
    let services = c
        .control()
        .list_services(ListServicesRequest::default())
        .await
        .map_err(|s| c.error("ListServices", &s))?
        .into_inner()
        .services;
    let service_error = match RESOLVER.resolve(&services, target) {
        Ok(service) => {
            let id = super::id(service).to_string();
            let tasks = c
                .control()
                .list_tasks(ListTasksRequest {
                    service_ids: vec![id.clone()],
                    ..Default::default()
                })
                .await
                .map_err(|s| c.error("ListTasks", &s))?
                .into_inner()
                .tasks;
            let selector = LogSelector {
                service_ids: vec![id],
                ..Default::default()
            };
            return Ok((selector, tasks));
        }
        Err(e) => e,
    };
    let tasks = c
        .control()
        .list_tasks(ListTasksRequest {
            filters: Some(ListFilters {
                id_prefixes: vec![target.to_string()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| c.error("ListTasks", &s))?
        .into_inner()
        .tasks;
    let exact = tasks
        .iter()
        .find(|t| t.meta.as_ref().is_some_and(|m| m.id == target));
    let task = match (exact, tasks.as_slice()) {
        (Some(task), _) | (None, [task]) => task.clone(),
        (None, []) => {
            return Err(format!(
                "no such service or task: {target} ({service_error})"
            ));
        }
        (None, many) => {
            return Err(format!(
                "task ID prefix {target:?} is ambiguous: it matches {} tasks; give more \
                 characters of the ID",
                many.len()
            ));
        }
    };
    let id = task.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
    let selector = LogSelector {
        task_ids: vec![id],
        ..Default::default()
    };
    Ok((selector, vec![task]))
}

/// `all` → -1 (everything); a count → that many lines.
fn parse_tail(s: &str) -> Result<i64, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(-1);
    }
    s.parse::<u32>()
        .map(i64::from)
        .map_err(|_| format!("invalid --tail {s:?}: give a number of lines, or \"all\""))
}

/// A duration before `now` (`10m`), Unix seconds (`1700000000`, fractions allowed), or an
/// RFC 3339 time (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.5+02:00`).
fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let bad = || {
        format!(
            "invalid --since {s:?}: give a duration before now (10m, 1h30m), Unix seconds \
             (1700000000) or an RFC 3339 time (2024-05-01T12:00:00Z)"
        )
    };
    if let Ok(seconds) = s.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds));
    }
    if s.contains('T') {
        return shoal_executor::process::logs::parse_timestamp(s).ok_or_else(bad);
    }
    let ago = super::super::duration::parse(s).map_err(|_| bad())?;
    Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_a_count_or_all() {
        assert_eq!(parse_tail("all").unwrap(), -1);
        assert_eq!(parse_tail("20").unwrap(), 20);
        assert!(parse_tail("-3").unwrap_err().contains("--tail"));
        assert!(parse_tail("lots").is_err());
    }

    #[test]
    fn since_is_a_duration_unix_seconds_or_rfc3339() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_since("10m", now).unwrap(),
            now - Duration::from_secs(600)
        );
        assert_eq!(
            parse_since("1700000000.5", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
        );
        // `date -d 2024-05-01T12:00:00Z +%s` = 1714564800
        let noon = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
        assert_eq!(parse_since("2024-05-01T12:00:00Z", now).unwrap(), noon);
        assert_eq!(
            parse_since("2024-05-01T14:00:00.25+02:00", now).unwrap(),
            noon + Duration::from_millis(250)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:00Z", now).unwrap(),
            SystemTime::UNIX_EPOCH
        );
        for bad in [
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00Z",
            "-5",
        ] {
            assert!(
                parse_since(bad, now).unwrap_err().contains("--since"),
                "{bad}"
            );
        }
    }

    #[test]
    fn task_names_in_logs_use_short_ids() {
        let task = Task {
            meta: Some(shoal_api::v1::Meta {
                id: "abcdefghijklmnopqrstuvwxy".into(),
                ..Default::default()
            }),
            service_annotations: Some(Box::new(shoal_api::v1::Annotations {
                name: "web".into(),
                ..Default::default()
            })),
            slot: 1,
            ..Default::default()
        };
        assert_eq!(short_task_name(&task), "web.1.abcdefghijkl");
    }
}
