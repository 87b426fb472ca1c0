//! The defaults table: every default value Shoal uses, one named constant each.
//!
//! Values follow SwarmKit (`api/defaults`, the dispatcher, the agent, raft and the CA) unless
//! the comment beside a constant says why we chose otherwise. Code elsewhere refers to these
//! constants rather than repeating numbers, so this file is the one place to read or change them.

use std::time::Duration;

// --- Services -----------------------------------------------------------------------------

/// Replicas of a replicated service when the spec does not say.
pub const SERVICE_REPLICAS: u64 = 1;
/// Restart policy condition: restart whatever the exit (SwarmKit's `ANY`).
pub const RESTART_CONDITION_ANY: bool = true;
/// Delay before a task is restarted.
pub const RESTART_DELAY: Duration = Duration::from_secs(5);
/// Restart attempts; 0 means unlimited.
pub const RESTART_MAX_ATTEMPTS: u64 = 0;
/// Time between the stop signal and SIGKILL.
pub const STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Signal sent to stop a task.
pub const STOP_SIGNAL: &str = "SIGTERM";

/// Rolling update: tasks updated at once.
pub const UPDATE_PARALLELISM: u64 = 1;
/// Rolling update: delay between batches.
pub const UPDATE_DELAY: Duration = Duration::ZERO;
/// Rolling update: how long a new task is watched for failure.
pub const UPDATE_MONITOR: Duration = Duration::from_secs(5);
/// Rolling update: fraction of failed tasks tolerated.
pub const UPDATE_MAX_FAILURE_RATIO: f32 = 0.0;
/// Range of ports handed out to ingress-mode published ports that do not name one.
pub const DYNAMIC_PORT_RANGE: std::ops::RangeInclusive<u32> = 30000..=32767;

// --- Cluster ------------------------------------------------------------------------------

/// Name of the cluster object created by `swarm init`.
pub const CLUSTER_NAME: &str = "default";
/// Old tasks kept per slot (per node for global services).
pub const TASK_HISTORY_RETENTION_LIMIT: i64 = 5;

// --- Dispatcher ---------------------------------------------------------------------------

/// Period at which agents send heartbeats.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// Random jitter added to or removed from each heartbeat period.
pub const HEARTBEAT_EPSILON: Duration = Duration::from_millis(500);
/// Missed periods after which a node is marked DOWN.
pub const GRACE_PERIOD_MULTIPLIER_NORMAL: u32 = 3;
/// Missed periods granted to every node after a leader change.
pub const GRACE_PERIOD_MULTIPLIER_UNKNOWN: u32 = 6;
/// A node that has opened this many sessions...
pub const REGISTRATION_RATE_LIMIT_COUNT: u32 = 3;
/// ...within this period is told to back off when it opens another.
pub const REGISTRATION_RATE_LIMIT_PERIOD: Duration = Duration::from_secs(8);
/// Task status updates written to the store in one batch at most.
pub const TASK_STATUS_BATCH_MAX_ITEMS: usize = 10_000;
/// Task status updates wait at most this long before they are written.
pub const TASK_STATUS_BATCH_MAX_DELAY: Duration = Duration::from_millis(100);
/// Assignment changes sent in one message at most.
pub const ASSIGNMENT_BATCH_MAX_CHANGES: usize = 100;
/// Assignment changes wait at most this long before they are sent.
pub const ASSIGNMENT_BATCH_MAX_DELAY: Duration = Duration::from_millis(100);
/// A node down this long has its tasks marked ORPHANED.
pub const NODE_DOWN_ORPHAN_PERIOD: Duration = Duration::from_secs(24 * 3600);

// --- Agent --------------------------------------------------------------------------------

/// First session retry delay; the delay grows as min(base + 2 × previous, max).
pub const SESSION_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest session retry delay.
pub const SESSION_BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How often the agent checks whether its node description changed.
pub const NODE_DESCRIPTION_CHECK_PERIOD: Duration = Duration::from_secs(20);
/// Timeout of a dispatcher call made by the agent.
pub const DISPATCHER_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Task status reports sent to the dispatcher in one call at most.
pub const AGENT_STATUS_BATCH_MAX: usize = 1024;

// --- Raft ---------------------------------------------------------------------------------

/// Raft tick. SwarmKit ticks every second, so an election starts 10–20 s after a leader dies;
/// we tick every 100 ms so failover takes about a second. Pre-vote and check-quorum keep the
/// shorter timeout from causing spurious elections.
pub const RAFT_TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Ticks between leader heartbeats.
pub const RAFT_HEARTBEAT_TICK: u32 = 1;
/// Ticks without a leader before a follower campaigns, randomised up to 1.5 times this (etcd
/// and SwarmKit randomise up to twice this; a narrower range makes failover faster).
pub const RAFT_ELECTION_TICK: u32 = 10;
/// Log entries between snapshots, at least (a large store waits for objects / 2 entries).
pub const RAFT_SNAPSHOT_INTERVAL: u64 = 10_000;
/// Old snapshots kept besides the newest.
pub const RAFT_KEEP_OLD_SNAPSHOTS: u64 = 0;
/// Entries kept after a snapshot so slow followers can catch up without one.
pub const RAFT_LOG_ENTRIES_FOR_SLOW_FOLLOWERS: u64 = 500;
/// Largest raft message payload before entries are split over several messages.
pub const RAFT_MAX_SIZE_PER_MSG: u64 = 65_535;
/// Messages in flight to one follower at most.
pub const RAFT_MAX_INFLIGHT_MSGS: usize = 256;
/// Size of the chunks a snapshot is streamed in.
pub const RAFT_SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

// --- Store --------------------------------------------------------------------------------

/// Changes in one store transaction at most; larger batches are split.
pub const MAX_CHANGES_PER_TRANSACTION: usize = 200;
/// Encoded size of one store transaction at most; larger batches are split.
pub const MAX_TRANSACTION_BYTES: usize = 1536 << 10;

// --- Limits checked by validation ---------------------------------------------------------

/// Longest object name.
pub const MAX_NAME_LEN: usize = 63;
/// Smallest CPU reservation or limit: 0.001 CPU.
pub const MIN_NANO_CPUS: i64 = 1_000_000;
/// Smallest memory reservation or limit.
pub const MIN_MEMORY_BYTES: i64 = 4 << 20;
/// A secret's data must be smaller than this.
pub const MAX_SECRET_BYTES: usize = 500 << 10;
/// A config's data must be smaller than this.
pub const MAX_CONFIG_BYTES: usize = 1000 << 10;
/// Smallest health check interval, timeout or start period.
pub const MIN_HEALTH_DURATION: Duration = Duration::from_millis(1);

// --- Certificates -------------------------------------------------------------------------

/// Lifetime of a node certificate.
pub const NODE_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Shortest node certificate lifetime accepted by `swarm update --cert-expiry`.
pub const MIN_NODE_CERT_EXPIRY: Duration = Duration::from_secs(3600);
/// Lifetime of the root CA certificate.
pub const ROOT_CA_EXPIRY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates are backdated by this much against clock skew.
pub const CERT_BACKDATE: Duration = Duration::from_secs(3600);

// --- Addresses and files ------------------------------------------------------------------

/// Remote API (managers' gRPC) listen address. Docker uses 2377; SwarmKit's swarmd uses 4242.
pub const LISTEN_REMOTE_API: &str = "0.0.0.0:4242";
/// State directory when running as root.
pub const ROOT_STATE_DIR: &str = "/var/lib/shoal";
/// Control socket file name inside the state directory.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";
/// Engine API socket file name inside the state directory.
pub const ENGINE_SOCKET_NAME: &str = "docker.sock";
