//! `shoal version`: what this binary is.

use std::io::Write;

/// Arguments of `shoal version`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format: a table (the default) or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// What `shoal version` reports.
pub struct Version {
    pub version: &'static str,
    pub api: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
}

pub fn current() -> Version {
    Version {
        version: env!("CARGO_PKG_VERSION"),
        api: "shoal.v1",
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
    }
}

pub fn render(v: &Version, format: Option<&str>) -> Result<String, String> {
    match format {
        None => Ok(format!(
            "Shoal\n Version:     {}\n API version: {}\n OS/Arch:     {}/{}\n",
            v.version, v.api, v.os, v.arch
        )),
        Some("json") => Ok(format!(
            "{{\"Version\":\"{}\",\"ApiVersion\":\"{}\",\"Os\":\"{}\",\"Arch\":\"{}\"}}\n",
            v.version, v.api, v.os, v.arch
        )),
        Some(other) => Err(format!(
            "unknown format {other:?}; use --format json or leave it out"
        )),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let out = render(&current(), args.format.as_deref())?;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| format!("writing output: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Version {
        Version {
            version: "1.2.3",
            api: "shoal.v1",
            os: "linux",
            arch: "x86_64",
        }
    }

    #[test]
    fn snapshot_table_and_json() {
        insta::assert_snapshot!("version", render(&fixed(), None).unwrap());
        insta::assert_snapshot!("version_json", render(&fixed(), Some("json")).unwrap());
    }

    #[test]
    fn renders_table_and_json() {
        let v = fixed();
        assert!(render(&v, None).unwrap().contains(" Version:     1.2.3\n"));
        assert_eq!(
            render(&v, Some("json")).unwrap(),
            "{\"Version\":\"1.2.3\",\"ApiVersion\":\"shoal.v1\",\"Os\":\"linux\",\"Arch\":\"x86_64\"}\n"
        );
        assert!(
            render(&v, Some("yaml"))
                .unwrap_err()
                .contains("--format json")
        );
    }
}
