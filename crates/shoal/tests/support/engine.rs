//! The real `docker` CLI (and curl-like raw requests) against a node's Engine API socket,
//! `<state-dir>/docker.sock`.
//!
//! The CLI runs with its own empty configuration directory (no contexts, no plugins, no
//! credentials of the machine's user) and `DOCKER_HOST` pointing at the node, bounded in time.
//! Tests that need the CLI call [`docker_cli`] first: without the CLI they skip and say so —
//! unless `SHOAL_REQUIRE_DOCKER=1` (CI), where they fail.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cli::Run;

/// How long one `docker` command may take (a `service create` waits for convergence plus the
/// 5 s monitor window).
pub const DOCKER_LIMIT: Duration = Duration::from_secs(120);

/// Whether the `docker` CLI is installed; panics when it must be (`SHOAL_REQUIRE_DOCKER=1`)
/// and is not.
pub fn docker_cli() -> bool {
    let installed = Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        if std::env::var("SHOAL_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("SHOAL_REQUIRE_DOCKER=1 but the docker CLI is not installed");
        }
        eprintln!("skipping: the docker CLI is not installed");
    }
    installed
}

/// Whether the machine's Docker Engine answers, with the tests' image built
/// (`scripts/build-test-image.sh`, `shoal-test/busybox:latest`); panics when the engine must
/// be there (`SHOAL_REQUIRE_DOCKER=1`) and is not.
pub fn engine_with_test_image() -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        if std::env::var("SHOAL_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("SHOAL_REQUIRE_DOCKER=1 but no Docker Engine answers `docker version`");
        }
        eprintln!("skipping: no Docker Engine answers `docker version`");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-image.sh");
    let built = Command::new("sh").arg(&script).status().unwrap();
    assert!(built.success(), "{} failed", script.display());
    true
}

/// The Engine API socket of a daemon whose state directory is `state_dir`.
pub fn engine_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("docker.sock")
}

/// An empty docker configuration directory, shared by the test process.
fn docker_config() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shoal-docker-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        dir
    })
}

/// `docker args…` against the Engine API at `socket`, bounded by [`DOCKER_LIMIT`].
pub fn docker(socket: &Path, args: &[&str]) -> Run {
    docker_with_input(socket, args, None)
}

/// `docker args…` with `input` on its stdin.
pub fn docker_with_input(socket: &Path, args: &[&str], input: Option<&[u8]>) -> Run {
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", docker_config())
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > DOCKER_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "docker {args:?} did not finish within {DOCKER_LIMIT:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A raw HTTP/1.1 exchange on the Engine API socket: the status, the headers (lower-case
/// names) and the body.
pub struct Exchange {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Exchange {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `method path` with `body` (JSON when given) and reads the whole answer (the server
/// is asked to close the connection). Chunked bodies are decoded.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Exchange {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Exchange {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
}
