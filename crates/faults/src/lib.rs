//! Shoal under faults: clusters of `shoal daemon` containers on a private Docker network, a
//! workload whose history is checked for linearizability, named fault schedules, and the
//! invariants that must hold once the faults stop.
//!
//! The pieces, each reusable alone:
//!
//! - [`cluster`]: [`DockerCluster`](cluster::DockerCluster) starts managers and workers as
//!   containers, and kills, restarts, pauses and partitions them (iptables in each container's
//!   network namespace). Everything it creates carries the label `shoal-faults=<run>` and is
//!   removed on drop, also after a panic.
//! - [`model`]: the sequential model of Shoal's configs (versioned, addressed by ID, removed
//!   unconditionally) that histories are checked against with `shoal-check`.
//! - [`workload`]: clients doing random create / update / read / remove operations through the
//!   managers' control sockets, each recorded with its call and return instants and an outcome
//!   mapped carefully to ok, failed (certainly no effect) or unknown.
//! - [`invariants`]: linearizability, no lost acknowledged write, at most one leader per term,
//!   services converging after the faults.
//! - [`observe`]: every committed change of nodes, services and tasks, followed through the
//!   Watch API across managers, with the invariants checked at every commit (no slot running
//!   two tasks, no task stuck) and the nodes' state changes kept for the false-DOWN check.
//! - [`snapshot`]: a manager's own store read without the Control API (its snapshot file and
//!   its Watch history), to compare a follower that caught up by snapshot with the leader.
//! - [`schedules`]: named, seeded timelines of faults.
//! - [`runner`]: one schedule end to end, its figures, and the summary table.
//!
//! Where the whole departs from Jepsen: Jepsen drives real machines from a Clojure control
//! node and checks with Knossos/Elle; this runs on one machine (two cores) in Rust, so the
//! "machines" are containers sharing a kernel and a clock. It therefore cannot skew clocks or
//! lose un-fsynced writes on a crash; those need the Raft layer's failpoints and a simulated
//! network (later work on top of these pieces). The fault schedules are named shapes rather
//! than random mixes, so that a failure names the scenario to rerun
//! (`shoal-faults run <schedule> --seed N`), as etcd's robustness tests name regressions.

pub mod cluster;
pub mod invariants;
pub mod model;
pub mod observe;
pub mod runner;
pub mod schedules;
pub mod snapshot;
pub mod workload;
