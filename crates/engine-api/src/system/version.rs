//! `GET /version`: what the daemon is, in moby's `types.Version` shape.
//!
//! docker-py (with `version="auto"`) reads `ApiVersion` from the unversioned `GET /version`
//! to choose its version prefix, and `docker version` prints "API version: 1.50 (minimum
//! version 1.24)" from `ApiVersion` and `MinAPIVersion`. `Version` is Shoal's version (the
//! server is Shoal, not a Docker Engine), `Os`/`Arch` use Go's spelling (`linux`, `amd64`),
//! and the platform is named "Shoal". `GitCommit`, `GoVersion` and `BuildTime` have no
//! meaning for a Rust binary built without them and are empty.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Machine, SHOAL_VERSION, go_arch};
use crate::backend::Backend;
use crate::request::{ApiVersion, Reply, Request, Result};

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComponentVersion {
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// moby's `types.Version`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub platform: Platform,
    pub components: Vec<ComponentVersion>,
    pub version: String,
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    pub git_commit: String,
    pub go_version: String,
    pub os: String,
    pub arch: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kernel_version: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub experimental: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub build_time: String,
}

/// The version answer on `machine`.
pub fn version(machine: &Machine) -> Version {
    let arch = go_arch(&machine.architecture).to_string();
    let details = BTreeMap::from([
        ("ApiVersion".to_string(), ApiVersion::MAX.to_string()),
        ("Arch".to_string(), arch.clone()),
        ("BuildTime".to_string(), String::new()),
        ("Experimental".to_string(), "false".to_string()),
        ("GitCommit".to_string(), String::new()),
        ("GoVersion".to_string(), String::new()),
        ("KernelVersion".to_string(), machine.kernel_version.clone()),
        ("MinAPIVersion".to_string(), ApiVersion::MIN.to_string()),
        ("Os".to_string(), "linux".to_string()),
    ]);
    Version {
        platform: Platform {
            name: "Shoal".to_string(),
        },
        components: vec![ComponentVersion {
            name: "Engine".to_string(),
            version: SHOAL_VERSION.to_string(),
            details,
        }],
        version: SHOAL_VERSION.to_string(),
        api_version: ApiVersion::MAX.to_string(),
        min_api_version: ApiVersion::MIN.to_string(),
        git_commit: String::new(),
        go_version: String::new(),
        os: "linux".to_string(),
        arch,
        kernel_version: machine.kernel_version.clone(),
        experimental: false,
        build_time: String::new(),
    }
}

pub async fn handle(_backend: &Backend, _request: Request) -> Result {
    Reply::json(&version(&Machine::current()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn machine() -> Machine {
        Machine {
            hostname: "host1".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            operating_system: "Debian GNU/Linux 12 (bookworm)".into(),
            os_version: "12".into(),
            architecture: "x86_64".into(),
            ncpu: 4,
            mem_total: 8 << 30,
        }
    }

    #[test]
    fn the_version_has_mobys_shape() {
        let json = serde_json::to_string_pretty(&version(&machine()))
            .unwrap()
            .replace(SHOAL_VERSION, "<shoal-version>");
        insta::assert_snapshot!(json);
    }
}
