//! A Shoal cluster made of Docker containers, and the faults that can be done to it.
//!
//! [`DockerCluster::start`] creates a private bridge network `shoal-faults-<run>` with a
//! subnet of its own, and starts every node as a container of the image (`shoal:local`):
//! its own host name, its own fixed address (`--ip`), its state directory bind-mounted from a
//! host temporary directory. The host therefore reaches each node's control socket
//! (`<dir>/control.sock`) directly, reads its state, and reads its log with `docker logs`.
//! The first manager starts the cluster, advertising `<its address>:4242`; the other managers
//! and the workers join it with the tokens read from the Control API. Every object carries the
//! label `shoal-faults=<run>`, so leftovers of a run that was itself killed can be found and
//! removed ([`cleanup`]).
//!
//! Faults, all from the host:
//!
//! - **kill** is `docker kill -s KILL`: the daemon and every task process of the node die at
//!   once, as on a power cut (the state directory is a bind mount, so whatever was fsynced
//!   survives; the page cache is the host's, so un-fsynced writes survive too — a limit, see
//!   below). **restart** is `docker start`: same address, same state, same command line. The
//!   command line is a tiny shell wrapper that passes `--init` / `--join-addr` only while the
//!   state directory holds no `node.json`, so a restarted node resumes its cluster.
//! - **pause / unpause** is `docker pause` (the cgroup freezer): the process stops without
//!   noticing, its sockets stay open, and peers see silence rather than a reset.
//! - **partition** drops traffic with iptables rules inside each container's network
//!   namespace (`nsenter -t <pid> -n iptables -A INPUT -s <peer> -j DROP`, and the same on
//!   OUTPUT with `-d`). Groups say who can talk: two nodes named in the groups can talk iff
//!   some group holds both, so `[[a, b], [b, c]]` is a bridge (b sees both sides, a and c do
//!   not see each other) and `[[leader], [rest...]]` isolates the leader. Nodes named in no
//!   group keep all their links. [`plan_cuts`] is the pure part, unit-tested. **heal** flushes
//!   the INPUT and OUTPUT chains of every running container.
//!
//! Invariants kept: every container and the network carry the run's label; [`Drop`] removes
//! them (`docker rm -f`, `docker network rm`) even when the thread is unwinding from a panic;
//! every `docker` call has a time limit; nothing ever pulls an image.
//!
//! Where this departs from Jepsen and etcd's functional tester, and why:
//!
//! - Jepsen runs each node on its own (virtual) machine and cuts links with iptables over SSH;
//!   here the "machines" are containers on one kernel and the rules go in through `nsenter`.
//!   Same rules, no SSH, seconds to start a cluster. The price: one kernel, one clock (no clock
//!   skew) and one page cache — a killed container does not lose un-fsynced writes, so
//!   LazyFS-style "lose the unsynced tail" faults need failpoints (later work), not this.
//! - etcd's functional tester blackholes peer *ports* through a proxy; we drop whole
//!   addresses, which also cuts agents' sessions and forwarded Control calls, as a real
//!   network split does.
//! - Clients do not go through the network at all: they use each manager's local control
//!   socket through the bind mount, so a partition never cuts the harness from a node; a
//!   client of an isolated manager sees what a local administrator would (forwarding failures,
//!   "no leader"), and the harness can always observe every node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_api::v1::control_client::ControlClient;
use shoal_api::v1::{ListClustersRequest, ListNodesRequest, NodeRole};
use tonic::transport::Channel;

/// The label every container and network of a run carries: `shoal-faults=<run>`.
pub const LABEL: &str = "shoal-faults";
/// The label naming the process that created an object: `shoal-faults.owner=<pid>`, so an
/// interrupted runner removes its own objects and no one else's.
pub const OWNER_LABEL: &str = "shoal-faults.owner";
/// The port every manager's remote API listens on, inside its container.
pub const REMOTE_PORT: u16 = 4242;
/// The default image, built by `scripts/build-shoal-image.sh`.
pub const DEFAULT_IMAGE: &str = "shoal:local";
/// The longest any one `docker` command may take.
const DOCKER_LIMIT: Duration = Duration::from_secs(60);

pub type Result<T> = std::result::Result<T, String>;

/// What a node is in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    Manager,
    Worker,
}

/// One container of the cluster.
#[derive(Clone, Debug)]
pub struct Node {
    /// Short name, also its host name: `m1`, `m2`, …, `w1`, ….
    pub name: String,
    pub role: Role,
    /// Docker's name of the container: `shoal-faults-<run>-<name>`.
    pub container: String,
    pub ip: String,
    /// The state directory on the host (bind-mounted at `/var/lib/shoal`).
    pub state_dir: PathBuf,
}

impl Node {
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    pub fn remote_addr(&self) -> String {
        format!("{}:{REMOTE_PORT}", self.ip)
    }
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub managers: usize,
    pub workers: usize,
    pub image: String,
    /// Extra flags for every daemon (e.g. Raft timing).
    pub daemon_flags: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            managers: 3,
            workers: 1,
            image: DEFAULT_IMAGE.into(),
            daemon_flags: Vec::new(),
        }
    }
}

/// A running cluster. Dropping it removes every container and the network.
pub struct DockerCluster {
    pub run: String,
    pub network: String,
    pub nodes: Vec<Node>,
    /// Holds the state directories; removed on drop (after the containers).
    dir: Option<tempfile::TempDir>,
    /// Links currently cut, as pairs of node indexes (smaller first).
    cuts: BTreeSet<(usize, usize)>,
    paused: BTreeSet<usize>,
}

/// Runs `docker ARGS`, killed after `limit`; returns its output.
pub fn docker_with_limit(args: &[&str], limit: Duration) -> Result<Output> {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "docker {} took more than {limit:?}; killed",
                    args.join(" ")
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("docker {}: {e}", args.join(" "))),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))
}

/// Runs `docker ARGS`; its stdout, trimmed, or an error carrying its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = docker_with_limit(args, DOCKER_LIMIT)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether the Docker engine answers, and if not, why.
pub fn docker_usable() -> Result<()> {
    docker(&["version", "--format", "{{.Server.Version}}"]).map(|_| ())
}

/// Whether `image` exists locally (never pulls).
pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok()
}

/// Which objects [`cleanup`] removes.
#[derive(Clone, Debug)]
pub enum Scope<'a> {
    /// Every object of every run.
    All,
    /// The objects of one run.
    Run(&'a str),
    /// The objects this process created.
    ThisProcess,
}

fn owner() -> String {
    format!("{OWNER_LABEL}={}", std::process::id())
}

/// Removes the containers and networks labelled `shoal-faults` in `scope`. Returns how many
/// objects it removed.
pub fn cleanup(scope: Scope<'_>) -> Result<usize> {
    let filter = match scope {
        Scope::All => format!("label={LABEL}"),
        Scope::Run(run) => format!("label={LABEL}={run}"),
        Scope::ThisProcess => format!("label={}", owner()),
    };
    let mut removed = 0;
    let containers = docker(&["ps", "-aq", "--filter", &filter])?;
    let ids: Vec<&str> = containers.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().copied());
        docker(&args)?;
        removed += ids.len();
    }
    let networks = docker(&["network", "ls", "-q", "--filter", &filter])?;
    for id in networks.split_whitespace() {
        docker(&["network", "rm", id])?;
        removed += 1;
    }
    Ok(removed)
}

/// The links to cut so that two nodes talk iff some group holds both. Nodes in no group keep
/// every link. Pairs are (smaller index, larger index), sorted.
pub fn plan_cuts(nodes: usize, groups: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let named: BTreeSet<usize> = groups.iter().flatten().copied().collect();
    let mut cuts = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            if !named.contains(&a) || !named.contains(&b) {
                continue;
            }
            let together = groups.iter().any(|g| g.contains(&a) && g.contains(&b));
            if !together {
                cuts.push((a, b));
            }
        }
    }
    cuts
}

/// A channel to a unix control socket, with a connect time limit.
pub async fn local_channel(socket: &Path, limit: Duration) -> Result<Channel> {
    let socket = socket.to_path_buf();
    let shown = socket.display().to_string();
    let endpoint =
        tonic::transport::Endpoint::from_static("http://localhost").connect_timeout(limit);
    let connect =
        endpoint.connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }));
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!("connect to {shown}: {e}")),
        Err(_) => Err(format!("connect to {shown}: timed out after {limit:?}")),
    }
}

/// A Control API client over a node's control socket.
pub async fn control(socket: &Path, limit: Duration) -> Result<ControlClient<Channel>> {
    Ok(ControlClient::new(local_channel(socket, limit).await?))
}

/// Polls `probe` every 200 ms until it gives a value or `limit` passes.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The subnet to try for a run: 10.213.X.0/24, X from the run name and the attempt.
fn subnet_for(run: &str, attempt: u32) -> (String, String) {
    let hash = run.bytes().fold(attempt.wrapping_mul(7919), |h, b| {
        h.wrapping_mul(31).wrapping_add(b as u32)
    });
    let x = hash % 250 + 2;
    (format!("10.213.{x}.0/24"), format!("10.213.{x}"))
}

impl DockerCluster {
    /// Creates the network and starts the nodes; returns once every manager is a reachable
    /// member and every worker is READY (or an error, having removed what it created).
    pub async fn start(run: &str, spec: &ClusterSpec) -> Result<DockerCluster> {
        if !image_exists(&spec.image) {
            return Err(format!(
                "image {} is missing; build it with: scripts/build-shoal-image.sh \
                 /var/cache/shoal/target/debug (or a release directory)",
                spec.image
            ));
        }
        let network = format!("shoal-faults-{run}");
        let label = format!("{LABEL}={run}");
        let mut prefix = None;
        let mut last_error = String::new();
        for attempt in 0..8 {
            let (subnet, base) = subnet_for(run, attempt);
            match docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                &label,
                "--label",
                &owner(),
                &network,
            ]) {
                Ok(_) => {
                    prefix = Some(base);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let Some(prefix) = prefix else {
            return Err(format!("could not create network {network}: {last_error}"));
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-faults-{run}-"))
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let mut nodes = Vec::new();
        for i in 0..spec.managers + spec.workers {
            let (name, role) = if i < spec.managers {
                (format!("m{}", i + 1), Role::Manager)
            } else {
                (format!("w{}", i - spec.managers + 1), Role::Worker)
            };
            let state_dir = dir.path().join(&name);
            std::fs::create_dir_all(&state_dir).map_err(|e| format!("{name}: {e}"))?;
            nodes.push(Node {
                container: format!("shoal-faults-{run}-{name}"),
                name,
                role,
                ip: format!("{prefix}.{}", 10 + i),
                state_dir,
            });
        }
        let mut cluster = DockerCluster {
            run: run.into(),
            network,
            nodes,
            dir: Some(dir),
            cuts: BTreeSet::new(),
            paused: BTreeSet::new(),
        };
        // On error, `cluster` is dropped here, which removes what was created.
        cluster.boot(spec).await?;
        Ok(cluster)
    }

    async fn boot(&mut self, spec: &ClusterSpec) -> Result<()> {
        let first = self.nodes[0].clone();
        self.run_container(&first, &spec.image, "--init", &spec.daemon_flags)?;
        let mut client = eventually(
            "the first manager to serve",
            Duration::from_secs(60),
            || {
                let socket = first.socket();
                async move { control(&socket, Duration::from_secs(2)).await.ok() }
            },
        )
        .await?;
        let tokens = eventually("the join tokens", Duration::from_secs(60), || {
            let mut client = client.clone();
            async move {
                client
                    .list_clusters(ListClustersRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .clusters
                    .pop()?
                    .root_ca?
                    .join_tokens
            }
        })
        .await?;
        for i in 1..self.nodes.len() {
            let node = self.nodes[i].clone();
            let token = match node.role {
                Role::Manager => &tokens.manager,
                Role::Worker => &tokens.worker,
            };
            let join = format!("--join-addr {} --join-token {token}", first.remote_addr());
            self.run_container(&node, &spec.image, &join, &spec.daemon_flags)?;
            // Join managers one at a time: each must be a reachable member before the next
            // changes the membership again.
            let want_managers = self.nodes[..=i]
                .iter()
                .filter(|n| n.role == Role::Manager)
                .count();
            let want_nodes = i + 1;
            eventually(
                &format!("{} to join", node.name),
                Duration::from_secs(90),
                || {
                    let mut client = client.clone();
                    async move {
                        let nodes = client
                            .list_nodes(ListNodesRequest::default())
                            .await
                            .ok()?
                            .into_inner()
                            .nodes;
                        let managers = nodes
                            .iter()
                            .filter(|n| {
                                n.manager_status.as_ref().is_some_and(|m| {
                                    m.reachability
                                        == shoal_api::v1::manager_status::Reachability::Reachable
                                            as i32
                                })
                            })
                            .count();
                        let ready = nodes
                            .iter()
                            .filter(|n| {
                                n.status.as_ref().is_some_and(|s| {
                                    s.state == shoal_api::v1::node_status::State::Ready as i32
                                })
                            })
                            .count();
                        (managers >= want_managers && ready >= want_nodes).then_some(())
                    }
                },
            )
            .await?;
            client = control(&first.socket(), Duration::from_secs(2)).await?;
        }
        Ok(())
    }

    /// `docker run` of one node, with the wrapper that passes `first_start` flags only while
    /// the node has no identity yet.
    fn run_container(
        &self,
        node: &Node,
        image: &str,
        first_start: &str,
        extra: &[String],
    ) -> Result<()> {
        let listen = format!("0.0.0.0:{REMOTE_PORT}");
        // Managers advertise their address on every start, not only the first: a manager
        // started without it advertises 127.0.0.1 and tells the cluster it moved there.
        let advertise = match node.role {
            Role::Manager => format!(" --advertise-remote-api {}", node.remote_addr()),
            Role::Worker => String::new(),
        };
        let common = format!(
            "--state-dir /var/lib/shoal --listen-remote-api {listen}{advertise} \
             --listen-engine-api off --hostname {} {}",
            node.name,
            extra.join(" ")
        );
        let script = format!(
            "if [ -f /var/lib/shoal/node.json ]; then exec /bin/shoal daemon {common}; \
             else exec /bin/shoal daemon {common} {first_start}; fi"
        );
        let label = format!("{LABEL}={}", self.run);
        let mount = format!("{}:/var/lib/shoal", node.state_dir.display());
        docker(&[
            "run",
            "-d",
            "--name",
            &node.container,
            "--hostname",
            &node.name,
            "--label",
            &label,
            "--label",
            &owner(),
            "--network",
            &self.network,
            "--ip",
            &node.ip,
            "-v",
            &mount,
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            &script,
        ])?;
        Ok(())
    }

    pub fn managers(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == Role::Manager)
    }

    pub fn manager_indexes(&self) -> Vec<usize> {
        self.managers().map(|(i, _)| i).collect()
    }

    pub fn worker_indexes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == Role::Worker)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `docker kill -s KILL`.
    pub fn kill(&mut self, node: usize) -> Result<()> {
        if self.paused.remove(&node) {
            let _ = docker(&["unpause", &self.nodes[node].container]);
        }
        docker(&["kill", "-s", "KILL", &self.nodes[node].container]).map(|_| ())
    }

    /// `docker start`: same address, same state. Its firewall rules are gone (a new network
    /// namespace), so its cuts are forgotten.
    pub fn restart(&mut self, node: usize) -> Result<()> {
        self.cuts.retain(|&(a, b)| a != node && b != node);
        docker(&["start", &self.nodes[node].container]).map(|_| ())
    }

    pub fn pause(&mut self, node: usize) -> Result<()> {
        docker(&["pause", &self.nodes[node].container])?;
        self.paused.insert(node);
        Ok(())
    }

    pub fn unpause(&mut self, node: usize) -> Result<()> {
        docker(&["unpause", &self.nodes[node].container])?;
        self.paused.remove(&node);
        Ok(())
    }

    pub fn is_running(&self, node: usize) -> bool {
        docker(&[
            "inspect",
            "-f",
            "{{.State.Running}}",
            &self.nodes[node].container,
        ])
        .is_ok_and(|s| s == "true")
    }

    fn pid(&self, node: usize) -> Result<u32> {
        let pid = docker(&[
            "inspect",
            "-f",
            "{{.State.Pid}}",
            &self.nodes[node].container,
        ])?;
        match pid.parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(format!("{} is not running", self.nodes[node].name)),
        }
    }

    fn iptables(&self, node: usize, args: &[&str]) -> Result<()> {
        let pid = self.pid(node)?.to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables", "-w", "5"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("nsenter: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables {} on {}: {}",
                args.join(" "),
                self.nodes[node].name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn cut(&mut self, a: usize, b: usize) -> Result<()> {
        for (this, peer) in [(a, b), (b, a)] {
            let ip = self.nodes[peer].ip.clone();
            self.iptables(this, &["-A", "INPUT", "-s", &ip, "-j", "DROP"])?;
            self.iptables(this, &["-A", "OUTPUT", "-d", &ip, "-j", "DROP"])?;
        }
        self.cuts.insert((a.min(b), a.max(b)));
        Ok(())
    }

    /// Cuts links so that two nodes named in `groups` talk iff a group holds both.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<Vec<(usize, usize)>> {
        let cuts = plan_cuts(self.nodes.len(), groups);
        for &(a, b) in &cuts {
            self.cut(a, b)?;
        }
        Ok(cuts)
    }

    /// Cuts every link of `node`.
    pub fn isolate(&mut self, node: usize) -> Result<()> {
        let rest: Vec<usize> = (0..self.nodes.len()).filter(|&i| i != node).collect();
        self.partition(&[vec![node], rest]).map(|_| ())
    }

    /// Removes every cut and unpauses every paused node.
    pub fn heal(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        for node in std::mem::take(&mut self.paused) {
            if let Err(e) = docker(&["unpause", &self.nodes[node].container]) {
                errors.push(e);
            }
        }
        for node in 0..self.nodes.len() {
            if !self.is_running(node) {
                continue;
            }
            for chain in ["INPUT", "OUTPUT"] {
                if let Err(e) = self.iptables(node, &["-F", chain]) {
                    errors.push(e);
                }
            }
        }
        self.cuts.clear();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Starts every node that is not running (after kills).
    pub fn start_stopped(&mut self) -> Result<()> {
        for node in 0..self.nodes.len() {
            if !self.is_running(node) {
                self.restart(node)?;
            }
        }
        Ok(())
    }

    pub fn cuts(&self) -> &BTreeSet<(usize, usize)> {
        &self.cuts
    }

    /// The manager that leads, by the managers' own view: asks each running, unpaused manager
    /// (through its control socket) and returns the one a manager that answers names.
    pub async fn leader(&self) -> Option<usize> {
        for (i, node) in self.managers() {
            if self.paused.contains(&i) {
                continue;
            }
            let Ok(mut client) = control(&node.socket(), Duration::from_secs(1)).await else {
                continue;
            };
            let call = client.list_nodes(ListNodesRequest {
                roles: vec![NodeRole::Manager as i32],
                ..Default::default()
            });
            let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await else {
                continue;
            };
            for n in response.into_inner().nodes {
                if let Some(status) = n.manager_status
                    && status.leader
                    && let Some(index) = self
                        .nodes
                        .iter()
                        .position(|x| x.remote_addr() == status.addr)
                {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Waits until some manager leads.
    pub async fn wait_leader(&self, limit: Duration) -> Result<usize> {
        eventually("a leader", limit, || self.leader()).await
    }

    /// The node's log (`docker logs`, stdout and stderr), colour codes removed.
    pub fn logs(&self, node: usize) -> String {
        match docker_with_limit(&["logs", &self.nodes[node].container], DOCKER_LIMIT) {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                strip_ansi(&text)
            }
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// Every manager's log, by node index.
    pub fn manager_logs(&self) -> BTreeMap<usize, String> {
        self.manager_indexes()
            .into_iter()
            .map(|i| (i, self.logs(i)))
            .collect()
    }

    /// Copies every node's log into `dir` (`<name>.log`).
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (i, node) in self.nodes.iter().enumerate() {
            let path = dir.join(format!("{}.log", node.name));
            std::fs::write(&path, self.logs(i)).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Removes the containers and the network now (also done on drop).
    pub fn remove(&mut self) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let result = cleanup(Scope::Run(&self.run));
        // The state directories hold root-owned files written by the containers; we run as
        // root, so removing them works (and failing to is not worth a panic).
        self.dir.take();
        result.map(|_| ())
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("shoal-faults: cleaning up run {}: {e}", self.run);
        }
    }
}

/// Removes terminal colour sequences (`ESC [ … m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where the `shoal` binaries to pack into the image are: beside the running executable
/// (`target/<profile>/`, or its parent for a test binary in `target/<profile>/deps/`), else
/// `$CARGO_TARGET_DIR/release` or `/debug`.
pub fn binary_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for candidate in [dir, dir.parent().unwrap_or(dir)] {
            if candidate.join("shoal").is_file() && candidate.join("shoal-process-shim").is_file() {
                return candidate.to_path_buf();
            }
        }
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let release = PathBuf::from(&target).join("release");
    if release.join("shoal").exists() {
        release
    } else {
        PathBuf::from(&target).join("debug")
    }
}

/// Builds `image` from the binaries in `binary_dir` with `scripts/build-shoal-image.sh`,
/// which does nothing when the image is newer than the binary: a run never tests a stale
/// image.
pub fn ensure_image(image: &str, binary_dir: &Path) -> std::result::Result<(), String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-shoal-image.sh");
    let command = format!(
        "SHOAL_IMAGE={image} {} {}",
        script.display(),
        binary_dir.display()
    );
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg(binary_dir)
        .env("SHOAL_IMAGE", image)
        .output()
        .map_err(|e| format!("running {command}: {e}"))?;
    if out.status.success() && image_exists(image) {
        return Ok(());
    }
    Err(format!(
        "image {image} could not be built ({}); build `shoal` (cargo build -p shoal) and run: \
         {command}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_and_minority_cut_every_link_across() {
        // m1 m2 m3 w1: m1 alone, the rest together.
        let cuts = plan_cuts(4, &[vec![0], vec![1, 2, 3]]);
        assert_eq!(cuts, vec![(0, 1), (0, 2), (0, 3)]);
    }

    #[test]
    fn a_bridge_keeps_the_middle_node_linked_to_both_sides() {
        let cuts = plan_cuts(3, &[vec![0, 1], vec![1, 2]]);
        assert_eq!(cuts, vec![(0, 2)]);
        let five = plan_cuts(5, &[vec![0, 1, 2], vec![2, 3, 4]]);
        assert_eq!(five, vec![(0, 3), (0, 4), (1, 3), (1, 4)]);
    }

    #[test]
    fn nodes_in_no_group_keep_their_links() {
        // Workers 3 and 4 are left out: linked to everyone.
        let cuts = plan_cuts(5, &[vec![0], vec![1, 2]]);
        assert_eq!(cuts, vec![(0, 1), (0, 2)]);
        assert!(plan_cuts(3, &[]).is_empty());
        assert!(plan_cuts(3, &[vec![0, 1, 2]]).is_empty());
    }

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m became leader"),
            "2026  INFO became leader"
        );
    }

    #[test]
    fn subnets_differ_between_attempts() {
        let (a, _) = subnet_for("r1", 0);
        let (b, _) = subnet_for("r1", 1);
        assert_ne!(a, b);
        assert!(a.starts_with("10.213.") && a.ends_with(".0/24"));
    }
}
