//! `shoal config ls [-q] [--format json]`: the swarm's configs, as docker lists them.

use std::path::PathBuf;

use shoal_api::v1::Config;

use crate::commands::file_object;

/// Arguments of `shoal config ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only print config IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table (the default) or `json` (one object per line)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    file_object::ls::<Config>(socket, args.quiet, args.format.as_deref())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use shoal_api::v1::{Annotations, ConfigSpec, Meta};

    use super::*;
    use crate::commands::output::Format;

    /// "now" in these tests: 2024-05-01T12:00:00Z.
    const NOW: u64 = 1_714_564_800;

    fn config(id: &str, name: &str, created_ago: i64, updated_ago: Option<i64>) -> Config {
        let at = |ago: i64| prost_types::Timestamp {
            seconds: NOW as i64 - ago,
            nanos: 0,
        };
        Config {
            meta: Some(Meta {
                id: id.into(),
                version: 3,
                created_at: Some(at(created_ago)),
                updated_at: updated_ago.map(at),
            }),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: vec![],
                }),
                data: b"listen 80;\n".to_vec(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn snapshot_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
        let configs = vec![
            config(
                "p0o9i8u7y6t5r4e3w2q1a2s3d",
                "nginx.conf",
                40 * 86_400,
                Some(3_600),
            ),
            config("z1x2c3v4b5n6m7l8k9j0h1g2f", "app-settings", 60, None),
        ];
        insta::assert_snapshot!(
            "config_ls",
            file_object::render_ls(configs, false, Format::Table, now)
        );
    }
}
