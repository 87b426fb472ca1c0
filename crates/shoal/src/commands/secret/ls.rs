//! `shoal secret ls [-q] [--format json]`: the swarm's secrets, as docker lists them.

use std::path::PathBuf;

use shoal_api::v1::Secret;

use crate::commands::file_object;

/// Arguments of `shoal secret ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print secret IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::ls::<Secret>(socket, args.quiet, args.format.as_deref())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use shoal_api::v1::{Annotations, Label, Meta, SecretSpec};

    use super::*;
    use crate::commands::output::Format;

    /// "now" in these tests: 2024-05-01T12:00:00Z.
    const NOW: u64 = 1_714_564_800;

    fn secret(id: &str, name: &str, created_ago: i64, updated_ago: Option<i64>) -> Secret {
        let at = |ago: i64| prost_types::Timestamp {
            seconds: NOW as i64 - ago,
            nanos: 0,
        };
        Secret {
            meta: Some(Meta {
                id: id.into(),
                version: 5,
                created_at: Some(at(created_ago)),
                updated_at: updated_ago.map(at),
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: vec![Label {
                        key: "env".into(),
                        value: "prod".into(),
                    }],
                }),
                ..Default::default()
            }),
            internal: false,
        }
    }

    #[test]
    fn snapshot_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
        let secrets = vec![
            secret(
                "uw4k0v9s1d3l2m8q7x6c5b4n3",
                "tls-key",
                3 * 86_400,
                Some(7_200),
            ),
            secret("9f8e7d6c5b4a3z2y1x0w9v8u7", "db-password", 45, None),
            secret("k2j3h4g5f6d7s8a9q0w1e2r3t", "api-token", 90, Some(0)),
        ];
        insta::assert_snapshot!(
            "secret_ls",
            file_object::render_ls(secrets, false, Format::Table, now)
        );
    }
}
