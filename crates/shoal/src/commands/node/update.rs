//! `shoal node update [--availability A] [--role R] [--label-add K=V]... [--label-rm K]... NODE`.

use std::path::PathBuf;

use shoal_api::labels::Labels;
use shoal_api::v1::{NodeRole, NodeSpec, UpdateNodeRequest, node_spec};

use super::{RESOLVER, id, version};
use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal node update`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Whether tasks may be scheduled on the node
    #[arg(long, value_enum, value_name = "active|pause|drain")]
    pub availability: Option<Availability>,
    /// The node's role
    #[arg(long, value_enum, value_name = "worker|manager")]
    pub role: Option<Role>,
    /// Add or change a label (KEY=VALUE, or KEY for an empty value)
    #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a label
    #[arg(long = "label-rm", value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// The node, by ID, name, hostname or unique ID prefix
    #[arg(value_name = "NODE")]
    pub node: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Worker,
    Manager,
}

/// `KEY=VALUE`, or `KEY` alone for an empty value.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.trim().is_empty() {
        return Err(format!(
            "invalid label {s:?}: the key is empty; write KEY=VALUE"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The changes the flags ask for.
#[derive(Debug, Default)]
pub struct Changes {
    pub availability: Option<Availability>,
    pub role: Option<Role>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
}

impl Changes {
    /// Applies the changes to a node's spec. Removing a label the node does not have is an
    /// error, as in docker.
    pub fn apply(&self, spec: &mut NodeSpec) -> Result<(), String> {
        if let Some(a) = self.availability {
            spec.availability = match a {
                Availability::Active => node_spec::Availability::Active,
                Availability::Pause => node_spec::Availability::Pause,
                Availability::Drain => node_spec::Availability::Drain,
            } as i32;
        }
        if let Some(r) = self.role {
            spec.desired_role = match r {
                Role::Worker => NodeRole::Worker,
                Role::Manager => NodeRole::Manager,
            } as i32;
        }
        if self.label_add.is_empty() && self.label_rm.is_empty() {
            return Ok(());
        }
        let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
        labels.normalize_labels();
        for (key, value) in &self.label_add {
            labels.set_label(key.clone(), value.clone());
        }
        for key in &self.label_rm {
            if labels.remove_label(key).is_none() {
                return Err(format!("key {key} doesn't exist in node's labels"));
            }
        }
        Ok(())
    }
}

/// How many times a write refused for a stale version is made again from a fresh read.
const STALE_RETRIES: u32 = 5;

/// Whether the manager refused the write because the node changed since it was read.
fn is_stale(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.message().starts_with("update out of sequence")
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let changes = Changes {
        availability: args.availability,
        role: args.role,
        label_add: args.label_add,
        label_rm: args.label_rm,
    };
    let name = args.node;
    client::run(socket, async |c| {
        // The changes are a delta on the spec: when the node's object changed between the
        // read and the write (its own status or description, reported by its agent), they are
        // applied again to a fresh read instead of failing. Bounded.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let nodes = c.nodes().await?;
            let node = RESOLVER.resolve(&nodes, &name)?;
            let mut spec = node.spec.clone().unwrap_or_default();
            changes.apply(&mut spec)?;
            let request = UpdateNodeRequest {
                node_id: id(node).to_string(),
                node_version: version(node),
                spec: Some(spec),
            };
            match c.control().update_node(request).await {
                Ok(_) => return Ok(()),
                Err(s) if attempts < STALE_RETRIES && is_stale(&s) => continue,
                Err(s) => return Err(c.error("UpdateNode", &s)),
            }
        }
    })?;
    // As docker does: the node, as it was named.
    output::print(&format!("{name}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{Annotations, Label};

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_label("a").unwrap(), ("a".into(), "".into()));
        assert!(parse_label("=b").unwrap_err().contains("key is empty"));
    }

    fn spec() -> NodeSpec {
        NodeSpec {
            annotations: Some(Annotations {
                name: "n".into(),
                labels: vec![
                    Label {
                        key: "zone".into(),
                        value: "east".into(),
                    },
                    Label {
                        key: "disk".into(),
                        value: "hdd".into(),
                    },
                ],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn changes_apply_to_the_spec() {
        let mut s = spec();
        Changes {
            availability: Some(Availability::Drain),
            role: Some(Role::Manager),
            label_add: vec![("disk".into(), "ssd".into()), ("rack".into(), "".into())],
            label_rm: vec!["zone".into()],
        }
        .apply(&mut s)
        .unwrap();
        assert_eq!(s.availability, node_spec::Availability::Drain as i32);
        assert_eq!(s.desired_role, NodeRole::Manager as i32);
        let a = s.annotations.unwrap();
        assert_eq!(a.name, "n");
        let labels: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|l| (l.key.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, [("disk", "ssd"), ("rack", "")]);
    }

    #[test]
    fn no_flags_change_nothing_and_unknown_labels_are_refused() {
        let mut s = spec();
        s.annotations
            .as_mut()
            .unwrap()
            .labels
            .sort_by(|a, b| a.key.cmp(&b.key));
        let before = s.clone();
        Changes::default().apply(&mut s).unwrap();
        assert_eq!(s, before);
        let e = Changes {
            label_rm: vec!["nope".into()],
            ..Default::default()
        }
        .apply(&mut s)
        .unwrap_err();
        assert_eq!(e, "key nope doesn't exist in node's labels");
    }
}
