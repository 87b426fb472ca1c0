//! Services end to end, across real processes: `shoal service create` on a manager of a
//! two-node cluster (a manager and a worker, `shoal daemon` each) waits until the service
//! has converged, its tasks run as host processes on the nodes, a killed task is replaced,
//! scaling adds and removes tasks, and removing the service stops them all.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `shoal -s SOCKET args…` to its end, bounded: (exit code, stdout, stderr).
fn shoal(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("shoal {args:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn shoal_async(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let socket = socket.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        shoal(&socket, &args)
    })
    .await
    .unwrap()
}

/// The PIDs of the service's live task processes: each task writes its PID to a file of
/// its own in `dir` (named after the PID).
fn live_pids(dir: &Path) -> BTreeSet<i32> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|pid| alive(*pid))
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
}

/// Kills whatever task processes are left, so a failing test leaves nothing running.
struct KillLeftovers(PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in live_pids(&self.0) {
            // SAFETY: kill with a PID and a signal number.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_runs_is_repaired_scales_and_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let _leftovers = KillLeftovers(pids.clone());
    let m1 = support::init_manager(dir.path(), "m1").await;
    let _w1 = support::join_worker(dir.path(), "w1", &m1.addr).await;
    let socket = m1.state_dir.join("control.sock");
    // Both nodes are READY before the service comes, so its tasks can spread.
    support::eventually("two ready nodes", LIMIT, async || {
        let (code, out, _) = shoal_async(&socket, &["node", "ls"]).await;
        (code == 0 && out.matches("Ready").count() == 2).then_some(())
    })
    .await;

    let script = format!("echo started; touch {}/$$; exec sleep 1000", pids.display());
    let (code, out, err) = shoal_async(
        &socket,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--restart-delay",
            "100ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("converged"), "{out}");
    let first = support::eventually("two task processes", LIMIT, async || {
        let live = live_pids(&pids);
        (live.len() == 2).then_some(live)
    })
    .await;

    // `service ps` shows both running, on the nodes.
    let (code, out, err) = shoal_async(&socket, &["service", "ps", "web"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.matches("Running").count() >= 2, "{out}");

    // A task's process dies: the slot gets a new task, the other task is untouched.
    let victim = *first.iter().next().unwrap();
    // SAFETY: kill with a PID and a signal number.
    unsafe {
        libc::kill(victim, libc::SIGKILL);
    }
    let repaired = support::eventually("a replacement process", LIMIT, async || {
        let live = live_pids(&pids);
        (live.len() == 2 && !live.contains(&victim)).then_some(live)
    })
    .await;
    let survivor = *first.iter().nth(1).unwrap();
    assert!(repaired.contains(&survivor), "the other task was restarted");
    let (_, out, _) = shoal_async(&socket, &["service", "ps", "web"]).await;
    assert!(out.contains("Failed") || out.contains("Shutdown"), "{out}");

    // Scale to 3, then to 1.
    let (code, out, err) = shoal_async(&socket, &["service", "scale", "web=3"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    support::eventually("three task processes", LIMIT, async || {
        (live_pids(&pids).len() == 3).then_some(())
    })
    .await;
    let (code, out, err) = shoal_async(&socket, &["service", "scale", "web=1"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    support::eventually("one task process", LIMIT, async || {
        (live_pids(&pids).len() == 1).then_some(())
    })
    .await;

    // Removed: every task process ends.
    let (code, out, err) = shoal_async(&socket, &["service", "rm", "web"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    support::eventually("no task process", LIMIT, async || {
        live_pids(&pids).is_empty().then_some(())
    })
    .await;
    let (_, out, _) = shoal_async(&socket, &["service", "ls"]).await;
    assert!(!out.contains("web"), "{out}");
}
