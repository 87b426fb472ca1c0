//! The `system` endpoints of the Engine API: `/_ping`, `/version`, `/info` and
//! `/distribution/{image}/json`.
//!
//! These describe the daemon and the machine it runs on. What a Docker Engine reports about
//! containers, images, storage drivers and plugins has no counterpart in Shoal and is sent as
//! Go's zero values (moby's `/info` fields are all optional); what Shoal does know — its
//! version, the machine's hostname, kernel, operating system, CPUs and memory, and the node's
//! swarm state — is filled in. [`Machine`] gathers the machine facts from `/proc` and
//! `/etc/os-release`, so that the shapes are built from fixed inputs in tests.

pub mod distribution;
pub mod info;
pub mod ping;
pub mod version;

/// Shoal's version, reported where Docker reports the Engine's.
pub const SHOAL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `/version` and `/info` say about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The machine's hostname (the node's `--hostname` may differ).
    pub hostname: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub operating_system: String,
    /// `VERSION_ID` of `/etc/os-release`.
    pub os_version: String,
    /// `uname -m`, e.g. `x86_64` (what `/info` reports).
    pub architecture: String,
    pub ncpu: i64,
    pub mem_total: i64,
}

impl Machine {
    /// The machine this process runs on.
    pub fn current() -> Machine {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let os_release = read("/etc/os-release");
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            operating_system: os_release_value(&os_release, "PRETTY_NAME")
                .unwrap_or_else(|| "Linux".to_string()),
            os_version: os_release_value(&os_release, "VERSION_ID").unwrap_or_default(),
            architecture: std::env::consts::ARCH.to_string(),
            ncpu: std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
            mem_total: mem_total(&read("/proc/meminfo")).unwrap_or(0),
        }
    }
}

/// A value of `/etc/os-release` (`KEY="value"`), unquoted.
fn os_release_value(os_release: &str, key: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Go's name for an architecture (`GOARCH`), as `/version` reports it: `amd64`, `arm64`…
pub fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_are_read_from_their_files() {
        let os = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 \
                  (bookworm)\"\n";
        assert_eq!(
            os_release_value(os, "PRETTY_NAME").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release_value(os, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release_value(os, "ID"), None);
        assert_eq!(
            mem_total("MemTotal:       16318148 kB\nMemFree: 1 kB\n"),
            Some(16318148 * 1024)
        );
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        let m = Machine::current();
        assert!(m.ncpu >= 1);
    }
}
