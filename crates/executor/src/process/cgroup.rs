//! CPU, memory and pids limits of process tasks, through cgroups v2.
//!
//! A task with limits gets its own cgroup, `<root>/<parent>/<task id>` (by default
//! `/sys/fs/cgroup/shoal/<task id>`), with `cpu.max`, `memory.max` and `pids.max` written
//! from its spec, and its process joins it between fork and exec (the child writes `0` to a
//! `cgroup.procs` descriptor opened beforehand), so the program never runs outside it and
//! everything it forks stays inside. The cgroup is removed with the task.
//!
//! When limits cannot be applied — no cgroup v2 hierarchy there, a controller missing
//! (machines with the hybrid v1/v2 layout keep memory and cpu on v1), no permission — the task
//! still runs, without them, and the controller reports a warning saying which limit is not
//! enforced and why (Docker does the same: "Limitation discarded"). It is never silent.
//!
//! Limits: `cpu.max` is `quota period` with a 100 ms period and the quota scaled from
//! `limits.nano_cpus`; `memory.max` is `limits.memory_bytes`; `pids.max` is `pids`. Swap
//! (`swap_bytes`, `memory_swappiness`) and reservations (scheduling only) are not applied.
//!
//! Tested here only against a directory that imitates a cgroup hierarchy (this project's
//! build machine has the hybrid layout); the kernel's enforcement itself is not exercised by
//! the tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use shoal_api::v1::ResourceRequirements;

/// `cpu.max` period, in microseconds.
const CPU_PERIOD_US: i64 = 100_000;

/// The limit files to write, as (file, value); empty when the task asks for no limit.
pub fn limit_files(resources: Option<&ResourceRequirements>) -> Vec<(&'static str, String)> {
    let Some(resources) = resources else {
        return Vec::new();
    };
    let mut files = Vec::new();
    if let Some(limits) = &resources.limits {
        if limits.nano_cpus > 0 {
            let quota =
                (limits.nano_cpus as i128 * CPU_PERIOD_US as i128 / 1_000_000_000).max(1000) as i64;
            files.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
        }
        if limits.memory_bytes > 0 {
            files.push(("memory.max", limits.memory_bytes.to_string()));
        }
    }
    if resources.pids > 0 {
        files.push(("pids.max", resources.pids.to_string()));
    }
    files
}

/// The controller a limit file needs ("memory" for "memory.max").
fn controller_of(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// Creates the task's cgroup under `root/parent` and writes its limits. Returns its path.
pub fn create(
    root: &Path,
    parent: &str,
    task_id: &str,
    files: &[(&'static str, String)],
) -> io::Result<PathBuf> {
    let available = fs::read_to_string(root.join("cgroup.controllers")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("no cgroup v2 hierarchy at {}: {e}", root.display()),
        )
    })?;
    let mut needed: Vec<&str> = files.iter().map(|(f, _)| controller_of(f)).collect();
    needed.dedup();
    if let Some(missing) = needed
        .iter()
        .find(|c| !available.split_whitespace().any(|a| a == **c))
    {
        return Err(io::Error::other(format!(
            "the cgroup v2 hierarchy at {} has no {missing} controller",
            root.display()
        )));
    }
    let enable: String = needed
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let parent_dir = root.join(parent);
    fs::create_dir_all(&parent_dir)?;
    write(&root.join("cgroup.subtree_control"), &enable)?;
    write(&parent_dir.join("cgroup.subtree_control"), &enable)?;
    let dir = parent_dir.join(task_id);
    match fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    for (file, value) in files {
        write(&dir.join(file), value)?;
    }
    Ok(dir)
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

/// Removes a task's cgroup (it must be empty). A cgroup already gone is not an error.
pub fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use shoal_api::v1::Resources;

    use super::*;

    #[test]
    fn limits_become_cgroup_files() {
        assert!(limit_files(None).is_empty());
        let resources = ResourceRequirements {
            limits: Some(Resources {
                nano_cpus: 1_500_000_000,
                memory_bytes: 64 << 20,
                ..Default::default()
            }),
            pids: 100,
            ..Default::default()
        };
        assert_eq!(
            limit_files(Some(&resources)),
            vec![
                ("cpu.max", "150000 100000".to_string()),
                ("memory.max", (64 << 20).to_string()),
                ("pids.max", "100".to_string()),
            ]
        );
    }

    #[test]
    fn a_hierarchy_without_the_controller_is_refused_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let error = create(root.path(), "shoal", "t1", &[("memory.max", "1".into())])
            .unwrap_err()
            .to_string();
        assert!(error.contains("no memory controller"), "{error}");
        let error = create(&root.path().join("absent"), "shoal", "t1", &[]).unwrap_err();
        assert!(
            error.to_string().contains("no cgroup v2 hierarchy"),
            "{error}"
        );
    }
}
