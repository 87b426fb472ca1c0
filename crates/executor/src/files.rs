//! Secrets and configs as files: what a task references, resolved against the objects its
//! node received ([`TaskDependencies`]), and written into a per-task private directory on a
//! memory-backed filesystem (never on disk).
//!
//! Layout (the process executor's, the docker executor's host side):
//!
//! ```text
//! /dev/shm/shoal-<key>/           0711, the node's (the key: a hash of its task log dir)
//!   <task id>/                    0700, the task user's when the daemon is root
//!     secrets/<target>            the reference's mode (0400 by default), uid, gid
//!     configs/<target>            the reference's mode (0444 by default), uid, gid
//! ```
//!
//! Invariants: nothing here logs or formats file contents (errors name files, never data);
//! the root must be on tmpfs or ramfs, else the task is refused rather than its secrets
//! written to disk; targets are plain file names (no `/`, `.` or `..`) under the task's
//! directory, so a reference cannot write outside it; nothing is created, chowned or
//! chmodded through a link (the node's directory must be a real one of the daemon's user;
//! owners and modes are set on open descriptors, since a task's user owns its directory).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shoal_api::v1::{Task, task_spec};

use crate::{ExecutorError, Result, TaskDependencies};

/// The default base of the per-node directories.
pub const SHM_BASE: &str = "/dev/shm";

/// Default modes of a reference that gives none (mode 0).
pub const SECRET_MODE: u32 = 0o400;
pub const CONFIG_MODE: u32 = 0o444;

/// Subdirectories of a task's directory.
pub const SECRETS: &str = "secrets";
pub const CONFIGS: &str = "configs";

/// `statfs` magic numbers of the memory-backed filesystems accepted.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The per-node directory under `base` for a node whose tasks' logs live in `key` (a stable
/// FNV-1a hash of the path, so that every node on a machine has its own, and a restarted
/// daemon finds its own again).
pub fn node_root(base: &Path, key: &Path) -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    base.join(format!("shoal-{hash:016x}"))
}

/// Secret or config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Secret => SECRETS,
            FileKind::Config => CONFIGS,
        }
    }

    fn word(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }
}

/// One file a task gets. Its `Debug` shows everything but the data.
#[derive(Clone)]
pub struct TaskFile {
    pub kind: FileKind,
    /// The secret's or config's ID and name.
    pub id: String,
    pub name: String,
    /// The reference's target, as given (the object's name when none is).
    pub target: String,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFile")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("target", &self.target)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

fn parse_id(field: &str, value: &str) -> Result<Option<u32>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| ExecutorError::InvalidSpec(format!("{field}: {value:?} is not a numeric ID")))
}

/// The files `task`'s spec references, with their data from `dependencies`. A reference
/// whose object is not in `dependencies` (not sent with the assignment) is an error: a task
/// must not run without its secret.
pub fn task_files(task: &Task, dependencies: &TaskDependencies) -> Result<Vec<TaskFile>> {
    let (secrets, configs) = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => (&c.secrets, &c.configs),
        Some(task_spec::Runtime::Process(p)) => (&p.secrets, &p.configs),
        None => return Ok(Vec::new()),
    };
    let mut files = Vec::new();
    for r in secrets {
        let secret = dependencies.secret(&r.secret_id).ok_or_else(|| {
            ExecutorError::InvalidSpec(format!(
                "secret {} ({}) was not sent to this node with the task",
                r.secret_name, r.secret_id
            ))
        })?;
        let spec = secret.spec.as_ref();
        files.push(task_file(
            FileKind::Secret,
            &r.secret_id,
            spec.and_then(|s| s.annotations.as_ref())
                .map(|a| a.name.clone())
                .unwrap_or_else(|| r.secret_name.clone()),
            r.file.clone().unwrap_or_default(),
            spec.map(|s| s.data.clone()).unwrap_or_default(),
        )?);
    }
    for r in configs {
        let config = dependencies.config(&r.config_id).ok_or_else(|| {
            ExecutorError::InvalidSpec(format!(
                "config {} ({}) was not sent to this node with the task",
                r.config_name, r.config_id
            ))
        })?;
        let spec = config.spec.as_ref();
        files.push(task_file(
            FileKind::Config,
            &r.config_id,
            spec.and_then(|s| s.annotations.as_ref())
                .map(|a| a.name.clone())
                .unwrap_or_else(|| r.config_name.clone()),
            r.file.clone().unwrap_or_default(),
            spec.map(|s| s.data.clone()).unwrap_or_default(),
        )?);
    }
    Ok(files)
}

/// One file of a task: its target defaults to the object's name, its mode to the kind's.
fn task_file(
    kind: FileKind,
    id: &str,
    name: String,
    file: shoal_api::v1::FileTarget,
    data: Vec<u8>,
) -> Result<TaskFile> {
    let default_mode = match kind {
        FileKind::Secret => SECRET_MODE,
        FileKind::Config => CONFIG_MODE,
    };
    let word = kind.word();
    Ok(TaskFile {
        kind,
        id: id.to_string(),
        target: if file.name.is_empty() {
            name.clone()
        } else {
            file.name.clone()
        },
        name,
        mode: if file.mode == 0 {
            default_mode
        } else {
            file.mode
        },
        uid: parse_id(&format!("{word} uid"), &file.uid)?,
        gid: parse_id(&format!("{word} gid"), &file.gid)?,
        data,
    })
}

/// Checks that a target is a plain file name.
pub fn check_plain_name(file: &TaskFile) -> Result<()> {
    let t = &file.target;
    if t.is_empty() || t == "." || t == ".." || t.contains('/') || t.contains('\0') {
        return Err(ExecutorError::InvalidSpec(format!(
            "{} {}: target {t:?} must be a plain file name (the task finds it in its {} \
             directory)",
            file.kind.word(),
            file.name,
            file.kind.dir()
        )));
    }
    Ok(())
}

/// Whether `path` is on a memory-backed filesystem (tmpfs, ramfs).
fn memory_backed(path: &Path) -> std::io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statfs is plain data; zeroes are a valid value to be overwritten.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and buf is valid for writes.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = buf.f_type as i64;
    Ok(magic == TMPFS_MAGIC || magic == RAMFS_MAGIC)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Changes the owner of an open file (never through a link), when the daemon is root and an
/// owner is given.
fn chown(file: &std::fs::File, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    if !is_root() || (uid.is_none() && gid.is_none()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, uid, gid)
        .map_err(|e| ExecutorError::io(format!("changing the owner of {}", path.display()), e))
}

/// Creates the directory `path` (or takes the one there), sets its mode and returns it open:
/// never through a link (a task's user owns its directory and could swap what is in it; every
/// change goes through the open descriptor).
/// With `must_own`, a directory there that is not this daemon user's is refused (the base
/// is shared: /dev/shm is world-writable).
fn make_dir(path: &Path, mode: u32, must_own: bool) -> Result<std::fs::File> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(ExecutorError::io(format!("creating {}", path.display()), e));
        }
        _ => {}
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            ExecutorError::io(
                format!(
                    "opening {} (it must be a directory, not a link): refusing to write \
                     secrets there",
                    path.display()
                ),
                e,
            )
        })?;
    if must_own {
        use std::os::unix::fs::MetadataExt;
        let meta = dir
            .metadata()
            .map_err(|e| ExecutorError::io(format!("checking {}", path.display()), e))?;
        // SAFETY: geteuid has no preconditions.
        if meta.uid() != unsafe { libc::geteuid() } {
            return Err(ExecutorError::io(
                format!(
                    "{} belongs to another user: refusing to write secrets there",
                    path.display()
                ),
                std::io::Error::from_raw_os_error(libc::EPERM),
            ));
        }
    }
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| ExecutorError::io(format!("setting the mode of {}", path.display()), e))?;
    Ok(dir)
}

/// Writes the task's files into `<root>/<task id>/{secrets,configs}/<file name>`, where
/// `file_name` gives each file's name in its directory. The task's directory and its two
/// subdirectories (0700) belong to `owner` (the task's user) when the daemon is root; each
/// file to its reference's uid/gid, else to `owner`. Refused, writing nothing, when the base
/// of `root` is missing or not memory-backed. Returns the task's directory.
pub fn write_task_dir(
    root: &Path,
    task_id: &str,
    files: &[TaskFile],
    owner: Option<(u32, u32)>,
    file_name: impl Fn(usize, &TaskFile) -> String,
) -> Result<PathBuf> {
    let base = root.parent().unwrap_or(Path::new("/"));
    let refusal = match memory_backed(base) {
        Ok(true) => None,
        Ok(false) => Some(std::io::Error::from_raw_os_error(libc::ENOTSUP)),
        Err(e) => Some(e),
    };
    if let Some(source) = refusal {
        return Err(ExecutorError::io(
            format!(
                "secrets and configs go only to a memory-backed filesystem (tmpfs), never to \
                 disk, and {} is not one: this node cannot run tasks that use them",
                base.display()
            ),
            source,
        ));
    }
    make_dir(root, 0o711, true)?;
    let dir = root.join(task_id);
    let (owner_uid, owner_gid) = (owner.map(|o| o.0), owner.map(|o| o.1));
    let opened = make_dir(&dir, 0o700, false)?;
    chown(&opened, &dir, owner_uid, owner_gid)?;
    for kind in [SECRETS, CONFIGS] {
        let sub = dir.join(kind);
        let opened = make_dir(&sub, 0o700, false)?;
        chown(&opened, &sub, owner_uid, owner_gid)?;
    }
    for (i, file) in files.iter().enumerate() {
        let path = dir.join(file.kind.dir()).join(file_name(i, file));
        // A new file each time (prepare may run twice): never write through a link.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::io(
                    format!("replacing {}", path.display()),
                    e,
                ));
            }
            _ => {}
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| ExecutorError::io(format!("creating {}", path.display()), e))?;
        out.write_all(&file.data)
            .map_err(|e| ExecutorError::io(format!("writing {}", path.display()), e))?;
        chown(&out, &path, file.uid.or(owner_uid), file.gid.or(owner_gid))?;
        out.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o777))
            .map_err(|e| ExecutorError::io(format!("setting the mode of {}", path.display()), e))?;
    }
    Ok(dir)
}

/// Removes `<root>/<task id>` and everything in it; nothing there is fine.
pub fn remove_task_dir(root: &Path, task_id: &str) -> Result<()> {
    let dir = root.join(task_id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ExecutorError::io(format!("removing {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{
        Annotations, Config, ConfigReference, ConfigSpec, FileTarget, Meta, ProcessSpec, Secret,
        SecretReference, SecretSpec, TaskSpecFields,
    };

    fn dependencies() -> TaskDependencies {
        TaskDependencies {
            secrets: vec![Secret {
                meta: Some(Meta {
                    id: "s1".into(),
                    ..Default::default()
                }),
                spec: Some(SecretSpec {
                    annotations: Some(Annotations {
                        name: "db".into(),
                        labels: vec![],
                    }),
                    data: b"hunter2".to_vec(),
                    ..Default::default()
                }),
                internal: false,
            }],
            configs: vec![Config {
                meta: Some(Meta {
                    id: "c1".into(),
                    ..Default::default()
                }),
                spec: Some(ConfigSpec {
                    annotations: Some(Annotations {
                        name: "app.conf".into(),
                        labels: vec![],
                    }),
                    data: b"x=1".to_vec(),
                    ..Default::default()
                }),
            }],
        }
    }

    fn task(secrets: Vec<SecretReference>, configs: Vec<ConfigReference>) -> Task {
        Task {
            meta: Some(Meta {
                id: "t1".into(),
                ..Default::default()
            }),
            spec: Some(
                TaskSpecFields {
                    runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                        command: "true".into(),
                        secrets,
                        configs,
                        ..Default::default()
                    }))),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    fn secret_ref(id: &str, file: Option<FileTarget>) -> SecretReference {
        SecretReference {
            secret_id: id.into(),
            secret_name: "db".into(),
            file,
        }
    }

    #[test]
    fn files_take_defaults_and_data_from_the_dependencies() {
        let config = ConfigReference {
            config_id: "c1".into(),
            config_name: "app.conf".into(),
            file: None,
        };
        let t = task(
            vec![secret_ref(
                "s1",
                Some(FileTarget {
                    name: "pw".into(),
                    uid: "1000".into(),
                    gid: "".into(),
                    mode: 0,
                }),
            )],
            vec![config],
        );
        let files = task_files(&t, &dependencies()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            (
                files[0].target.as_str(),
                files[0].mode,
                files[0].uid,
                files[0].gid
            ),
            ("pw", 0o400, Some(1000), None)
        );
        assert_eq!(files[0].data, b"hunter2");
        assert_eq!(
            (files[1].target.as_str(), files[1].mode),
            ("app.conf", 0o444)
        );
        let shown = format!("{files:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let e = task_files(
            &task(vec![secret_ref("nope", None)], vec![]),
            &dependencies(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not sent to this node"), "{e}");
        let bad = task(
            vec![secret_ref(
                "s1",
                Some(FileTarget {
                    name: "../x".into(),
                    ..Default::default()
                }),
            )],
            vec![],
        );
        let files = task_files(&bad, &dependencies()).unwrap();
        assert!(check_plain_name(&files[0]).is_err());
    }

    #[test]
    fn files_are_written_with_their_modes_and_removed() {
        let base = Path::new(SHM_BASE);
        if !base.is_dir() {
            eprintln!("skipped: no {SHM_BASE}");
            return;
        }
        let root = node_root(base, Path::new(&format!("/test/{}", std::process::id())));
        let t = task(vec![secret_ref("s1", None)], vec![]);
        let files = task_files(&t, &dependencies()).unwrap();
        let dir = write_task_dir(&root, "t1", &files, None, |_, f| f.target.clone()).unwrap();
        let secret = dir.join("secrets/db");
        assert_eq!(std::fs::read(&secret).unwrap(), b"hunter2");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&secret), 0o400);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root), 0o711);
        // Again (prepare twice): replaced, not appended.
        write_task_dir(&root, "t1", &files, None, |_, f| f.target.clone()).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"hunter2");
        remove_task_dir(&root, "t1").unwrap();
        assert!(!dir.exists());
        remove_task_dir(&root, "t1").unwrap();
        let _ = std::fs::remove_dir(&root);

        // A link planted where the node's directory goes is refused, nothing written through it.
        let planted = node_root(base, Path::new(&format!("/planted/{}", std::process::id())));
        let target = std::env::temp_dir().join(format!("shoal-planted-{}", std::process::id()));
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let e = write_task_dir(&planted, "t1", &files, None, |_, f| f.target.clone()).unwrap_err();
        assert!(e.to_string().contains("refusing"), "{e}");
        assert!(!target.join("t1").exists());
        std::fs::remove_file(&planted).unwrap();
        std::fs::remove_dir_all(&target).unwrap();

        // Not memory-backed: refused, nothing written.
        let disk = std::env::temp_dir().join(format!("shoal-files-{}", std::process::id()));
        std::fs::create_dir_all(&disk).unwrap();
        if !memory_backed(&disk).unwrap() {
            let e = write_task_dir(&disk.join("node"), "t1", &files, None, |_, f| {
                f.target.clone()
            })
            .unwrap_err();
            assert!(e.to_string().contains("memory-backed"), "{e}");
            assert!(!disk.join("node").exists());
        }
        let missing = write_task_dir(
            Path::new("/nonexistent-shm/shoal-x"),
            "t1",
            &files,
            None,
            |_, f| f.target.clone(),
        )
        .unwrap_err();
        assert!(missing.to_string().contains("memory-backed"), "{missing}");
        std::fs::remove_dir_all(&disk).unwrap();
    }
}
