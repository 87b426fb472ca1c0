//! Secrets and configs of process tasks, on real processes under the test shim: files in a
//! private directory on /dev/shm, found through `SHOAL_SECRETS_DIR` / `SHOAL_CONFIGS_DIR`,
//! gone once the task has ended; never under the log (state) directory; refused without
//! their data or without a memory-backed filesystem.

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::v1::{
    Annotations, Config, ConfigReference, ConfigSpec, Meta, ProcessSpec, Secret, SecretReference,
    SecretSpec, Task, TaskSpecFields, task_spec,
};
use shoal_executor::process::{ProcessConfig, ProcessExecutor, ShimCommand};
use shoal_executor::{Executor, Exit, TaskDependencies};

const LIMIT: Duration = Duration::from_secs(30);
const CANARY: &str = "canary-7f3a9c51d2e4";

fn config(dir: &Path) -> ProcessConfig {
    let mut config = ProcessConfig::new(dir);
    config.poll_interval = Duration::from_millis(20);
    config.shim = ShimCommand {
        program: env!("CARGO_BIN_EXE_test-process-shim").into(),
        args: Vec::new(),
    };
    config
}

fn dependencies() -> TaskDependencies {
    TaskDependencies {
        secrets: vec![Secret {
            meta: Some(Meta {
                id: "sec1".into(),
                ..Default::default()
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: "db".into(),
                    labels: vec![],
                }),
                data: CANARY.as_bytes().to_vec(),
                ..Default::default()
            }),
            internal: false,
        }],
        configs: vec![Config {
            meta: Some(Meta {
                id: "cfg1".into(),
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

fn task(id: &str, script: &str) -> Task {
    Task {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(
            TaskSpecFields {
                runtime: Some(task_spec::Runtime::Process(Box::new(ProcessSpec {
                    command: "sh".into(),
                    args: vec!["-c".into(), script.into()],
                    secrets: vec![SecretReference {
                        secret_id: "sec1".into(),
                        secret_name: "db".into(),
                        file: None,
                    }],
                    configs: vec![ConfigReference {
                        config_id: "cfg1".into(),
                        config_name: "app.conf".into(),
                        file: None,
                    }],
                    stop_grace_period: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 300_000_000,
                    }),
                    ..Default::default()
                }))),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
}

/// Every file under `dir` whose content holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(files_holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path);
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_configs_are_private_files_on_shm_until_the_task_ends() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipped: no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let root = config.secrets_dir.clone();
    assert!(root.starts_with("/dev/shm"), "{}", root.display());
    let executor = ProcessExecutor::new(config);
    let script = format!(
        "test \"$(cat \"$SHOAL_SECRETS_DIR/db\")\" = {CANARY} \
         && test \"$(stat -c %a \"$SHOAL_SECRETS_DIR/db\")\" = 400 \
         && test \"$(cat \"$SHOAL_CONFIGS_DIR/app.conf\")\" = x=1 \
         && test \"$(stat -c %a \"$SHOAL_CONFIGS_DIR/app.conf\")\" = 444 \
         && test \"$(stat -c %a \"$SHOAL_SECRETS_DIR/..\")\" = 700 \
         && echo ok && exec sleep 30"
    );
    let controller = executor
        .controller_with(&task("sec1task", &script), &dependencies())
        .unwrap();
    controller.prepare().await.unwrap();
    controller.start().await.unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = shoal_executor::read_all(controller.logs(Default::default()).await.unwrap())
            .await
            .unwrap();
        if String::from_utf8_lossy(&out).contains("ok") {
            break;
        }
        assert!(Instant::now() < deadline, "the task's checks did not pass");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let task_dir = root.join("sec1task");
    assert_eq!(
        files_holding(&root, CANARY.as_bytes()),
        [task_dir.join("secrets/db")]
    );
    assert!(
        files_holding(dir.path(), CANARY.as_bytes()).is_empty(),
        "nothing of the secret under the log directory"
    );
    controller.shutdown().await.unwrap();
    assert!(matches!(controller.wait().await.unwrap(), Exit::Signal(_)));
    assert!(!task_dir.exists(), "gone once the task has ended");
    controller.remove().await.unwrap();
    assert!(!task_dir.exists());
    let _ = std::fs::remove_dir(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_its_secret_or_without_shm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let executor = ProcessExecutor::new(config(dir.path()));
    let controller = executor
        .controller_with(&task("nosecret", "true"), &TaskDependencies::default())
        .unwrap();
    let e = controller.prepare().await.unwrap_err();
    assert!(!e.is_temporary());
    assert!(
        e.to_string().contains("secret db (sec1) was not sent"),
        "{e}"
    );
    // Through `controller` (no dependencies) too.
    let controller = executor.controller(&task("nosecret2", "true")).unwrap();
    assert!(controller.prepare().await.is_err());

    let mut config = config(dir.path());
    config.secrets_dir = dir.path().join("not-shm/shoal-node");
    let executor = ProcessExecutor::new(config);
    let controller = executor
        .controller_with(&task("noshm", "true"), &dependencies())
        .unwrap();
    let e = controller.prepare().await.unwrap_err();
    assert!(!e.is_temporary());
    assert!(e.to_string().contains("memory-backed"), "{e}");
    assert!(files_holding(dir.path(), CANARY.as_bytes()).is_empty());
    controller.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_belong_to_the_tasks_user_unless_the_reference_says_otherwise() {
    // SAFETY: geteuid has no preconditions.
    if !Path::new("/dev/shm").is_dir() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and /dev/shm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let root = config.secrets_dir.clone();
    let executor = ProcessExecutor::new(config);
    let script = format!(
        "test \"$(id -u)\" = 65534 \
         && test \"$(cat \"$SHOAL_SECRETS_DIR/db\")\" = {CANARY} \
         && ! cat \"$SHOAL_SECRETS_DIR/rootonly\" 2>/dev/null \
         && test \"$(stat -c %u:%a \"$SHOAL_SECRETS_DIR/rootonly\")\" = 0:400 \
         && test \"$(stat -c %u \"$SHOAL_SECRETS_DIR/..\")\" = 65534"
    );
    let mut task = task("nobodytask", &script);
    if let Some(task_spec::Runtime::Process(p)) =
        task.spec.as_mut().and_then(|s| s.runtime.as_mut())
    {
        p.user = "nobody".into();
        p.secrets.push(SecretReference {
            secret_id: "sec1".into(),
            secret_name: "db".into(),
            file: Some(shoal_api::v1::FileTarget {
                name: "rootonly".into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o400,
            }),
        });
    }
    let controller = executor.controller_with(&task, &dependencies()).unwrap();
    controller.prepare().await.unwrap();
    controller.start().await.unwrap();
    let exit = tokio::time::timeout(LIMIT, controller.wait())
        .await
        .unwrap()
        .unwrap();
    let out = shoal_executor::read_all(controller.logs(Default::default()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(exit, Exit::Code(0), "{}", String::from_utf8_lossy(&out));
    assert!(
        !root.join("nobodytask").exists(),
        "gone once the task has ended"
    );
    controller.remove().await.unwrap();
    let _ = std::fs::remove_dir(&root);
}
