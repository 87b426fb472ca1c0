//! `shoal node ls [-q] [--format json]`: the swarm's nodes, the local one marked with `*`.

use std::path::PathBuf;

use shoal_api::v1::Node;

use super::{availability_name, hostname, id, reachability_name, state_name, title};
use crate::commands::client;
use crate::commands::output::{self, Format, Json};

/// Arguments of `shoal node ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print node IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let format = Format::parse(args.format.as_deref())?;
    let text = client::run(socket, async |c| {
        let nodes = c.nodes().await?;
        // The local node is marked when its daemon says who it is.
        let local = c
            .info()
            .await
            .map(|i| i.node_id)
            .filter(|id| !id.is_empty());
        Ok(render(nodes, local.as_deref(), args.quiet, format))
    })?;
    output::print(&text)
}

const HEADERS: [&str; 5] = ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"];

/// The listing, sorted by hostname then ID.
pub fn render(mut nodes: Vec<Node>, local: Option<&str>, quiet: bool, format: Format) -> String {
    nodes.sort_by(|a, b| (hostname(a), id(a)).cmp(&(hostname(b), id(b))));
    if quiet {
        return nodes.iter().map(|n| format!("{}\n", id(n))).collect();
    }
    let rows: Vec<Row> = nodes.iter().map(|n| Row::of(n, local)).collect();
    match format {
        Format::Table => output::table(
            &HEADERS,
            &rows
                .iter()
                .map(|r| {
                    let mut shown = output::short_id(&r.id).to_string();
                    if r.local {
                        shown.push_str(" *");
                    }
                    vec![
                        shown,
                        r.hostname.clone(),
                        r.status.clone(),
                        r.availability.clone(),
                        r.manager_status.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Format::Json => output::json_lines(
            &rows
                .iter()
                .map(|r| {
                    Json::object([
                        ("ID", Json::str(&r.id)),
                        ("Self", Json::Bool(r.local)),
                        ("Hostname", Json::str(&r.hostname)),
                        ("Status", Json::str(&r.status)),
                        ("Availability", Json::str(&r.availability)),
                        ("ManagerStatus", Json::str(&r.manager_status)),
                    ])
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// One line of the listing.
struct Row {
    id: String,
    local: bool,
    hostname: String,
    status: String,
    availability: String,
    manager_status: String,
}

impl Row {
    fn of(node: &Node, local: Option<&str>) -> Row {
        let manager_status = match node.manager_status.as_deref() {
            None => String::new(),
            Some(m) if m.leader => "Leader".into(),
            Some(m) => title(&reachability_name(m.reachability)),
        };
        Row {
            id: id(node).to_string(),
            local: local == Some(id(node)),
            hostname: hostname(node).to_string(),
            status: title(&state_name(
                node.status.as_ref().map(|s| s.state).unwrap_or(0),
            )),
            availability: title(&availability_name(
                node.spec.as_ref().map(|s| s.availability).unwrap_or(0),
            )),
            manager_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::node::tests::node;

    fn nodes() -> Vec<Node> {
        vec![
            node("wwwwwwwwwwwwwwwwwwwwwwww1", "worker-1", None),
            node("mmmmmmmmmmmmmmmmmmmmmmmm2", "manager-2", Some((false, 1))),
            node("mmmmmmmmmmmmmmmmmmmmmmmm1", "manager-1", Some((true, 2))),
        ]
    }

    #[test]
    fn table_marks_the_local_node_and_the_leader() {
        let out = render(
            nodes(),
            Some("mmmmmmmmmmmmmmmmmmmmmmmm1"),
            false,
            Format::Table,
        );
        assert_eq!(
            out,
            "ID               HOSTNAME    STATUS   AVAILABILITY   MANAGER STATUS\n\
             mmmmmmmmmmmm *   manager-1   Ready    Drain          Leader\n\
             mmmmmmmmmmmm     manager-2   Ready    Drain          Unreachable\n\
             wwwwwwwwwwww     worker-1    Ready    Drain\n"
        );
        let unmarked = render(nodes(), None, false, Format::Table);
        assert!(!unmarked.contains('*'), "{unmarked}");
    }

    /// A swarm as `node ls` sees it: three managers (one the leader, one unreachable), two
    /// workers, each availability and node state, the command run on the leader.
    fn swarm() -> Vec<Node> {
        let with = |mut n: Node, state: i32, availability: i32| {
            n.status.as_mut().unwrap().state = state;
            n.spec.as_mut().unwrap().availability = availability;
            n
        };
        // Node states: 1 down, 2 ready, 3 disconnected; availability: 0 active, 1 pause, 2 drain.
        vec![
            with(node("7ohbvxvkqs5lt0bmv3a2zyh6e", "worker-2", None), 3, 1),
            with(
                node("1n8pnyhfxmw7q3nqzbk0vswh4", "manager-1", Some((true, 2))),
                2,
                0,
            ),
            with(node("4zp6u0wgsd7k1xc3y9d2hmlqa", "worker-1", None), 2, 2),
            with(
                node("3kq2d8r0c7m1x5e9w4v6t2y8b", "manager-3", Some((false, 1))),
                1,
                0,
            ),
            with(
                node("2b9xk5hl1c0gq7m3t8w6r4z2p", "manager-2", Some((false, 2))),
                2,
                0,
            ),
        ]
    }

    #[test]
    fn snapshot_table() {
        insta::assert_snapshot!(
            "node_ls",
            render(
                swarm(),
                Some("1n8pnyhfxmw7q3nqzbk0vswh4"),
                false,
                Format::Table
            )
        );
    }

    #[test]
    fn snapshot_quiet() {
        insta::assert_snapshot!(
            "node_ls_quiet",
            render(
                swarm(),
                Some("1n8pnyhfxmw7q3nqzbk0vswh4"),
                true,
                Format::Table
            )
        );
    }

    #[test]
    fn snapshot_json() {
        insta::assert_snapshot!(
            "node_ls_json",
            render(
                swarm(),
                Some("1n8pnyhfxmw7q3nqzbk0vswh4"),
                false,
                Format::Json
            )
        );
    }

    #[test]
    fn quiet_prints_whole_ids() {
        assert_eq!(
            render(nodes(), None, true, Format::Table),
            "mmmmmmmmmmmmmmmmmmmmmmmm1\nmmmmmmmmmmmmmmmmmmmmmmmm2\nwwwwwwwwwwwwwwwwwwwwwwww1\n"
        );
    }

    #[test]
    fn json_is_one_object_per_line_with_whole_ids() {
        let out = render(
            nodes(),
            Some("wwwwwwwwwwwwwwwwwwwwwwww1"),
            false,
            Format::Json,
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["ID"], "mmmmmmmmmmmmmmmmmmmmmmmm1");
        assert_eq!(lines[0]["ManagerStatus"], "Leader");
        assert_eq!(lines[0]["Self"], false);
        assert_eq!(lines[2]["Self"], true);
        assert_eq!(lines[2]["ManagerStatus"], "");
        assert_eq!(lines[2]["Status"], "Ready");
    }
}
