//! Named, seeded fault schedules.
//!
//! A schedule is a pure function from (seed, duration, cluster size) to a **timeline**: a list
//! of steps, each an instant after the faults start and an abstract [`Action`] ("kill the
//! leader", "partition with the leader on the minority side", "heal"). Targets are resolved
//! when the step runs (who leads then), with a random generator derived from the same seed, so
//! a run is reproducible up to what the cluster itself decides (elections are timing-driven).
//! Every timeline ends healed: nothing paused, no link cut, every node started; the runner
//! heals again anyway before checking.
//!
//! | name | what it does, in a loop until the duration is spent |
//! |---|---|
//! | `leader-kill-loop` | kill -9 the leader, wait, start it again, wait |
//! | `follower-kill` | kill -9 a manager that does not lead, wait, start it again |
//! | `minority-partition` | cut a minority of managers (not the leader) from the rest, heal |
//! | `majority-partition` | cut a minority that holds the old leader from the majority, heal |
//! | `isolated-leader` | cut the leader from every other node (workers too), heal |
//! | `bridge` | managers in a line A–B–C (A–B–C–D–E for five with C in the middle): the middle sees both sides, the ends do not see each other; the leader is at one end |
//! | `pause-short` | freeze the leader for less than the election timeout, thaw |
//! | `pause-long` | freeze the leader for several election timeouts, thaw |
//! | `kill-all-restart` | kill -9 every manager at once, start them all again |
//! | `rolling-update-agent-faults` | three workers; start a rolling update of a replicated (6 replicas, stop-first, parallelism 2) and a global service, then kill / restart and pause / unpause workers while it runs (pauses shorter than the heartbeat grace) |
//! | `snapshot-catch-up` | cut a follower from every node, write until the leader's snapshot is far past it (its log compacted), heal: it must catch up by installing a snapshot |
//!
//! The last two are not fault/undo loops: their timelines are built by hand
//! ([`rolling_update_timeline`], [`snapshot_timeline`]), and the runner prepares and checks
//! more around them (services and their update, the node and task watch, the snapshot files).
//!
//! Hold and recovery times are jittered by the seed within bounds chosen against Shoal's
//! defaults (100 ms ticks, election after 10 ticks, randomised to [1, 1.5) s).
//!
//! Where this departs from Jepsen and etcd: Jepsen's nemeses pick targets from a generator
//! mixed with the client operations, and its partitions are usually random halves; ours are
//! named shapes aimed at Raft's known weak spots (a deposed leader that still serves, a node
//! that bridges two sides and keeps triggering elections), one shape per schedule, so a failing
//! schedule name says what broke. etcd's functional tester runs one failure case per round
//! and waits for recovery "within a few seconds"; we also measure that recovery
//! (unavailability, convergence) rather than only bound it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Every schedule, in the order `list` shows them.
pub const ALL: &[Schedule] = &[
    Schedule::LeaderKillLoop,
    Schedule::FollowerKill,
    Schedule::MinorityPartition,
    Schedule::MajorityPartition,
    Schedule::IsolatedLeader,
    Schedule::Bridge,
    Schedule::PauseShort,
    Schedule::PauseLong,
    Schedule::KillAllRestart,
    Schedule::RollingUpdateAgentFaults,
    Schedule::SnapshotCatchUp,
];

/// The schedules `shoal-faults ci` runs: one of each kind of fault (kill of a follower, of
/// the leader, of everyone; a partition with the old leader on the minority side; a bridge; a
/// long pause; agent faults during a rolling update; a follower catching up by snapshot), each
/// once with 12 s of faults: 25–45 s a run with debug binaries on two busy cores, about five
/// minutes in all, against the eight allowed.
pub const CI: &[Schedule] = &[
    Schedule::FollowerKill,
    Schedule::LeaderKillLoop,
    Schedule::MajorityPartition,
    Schedule::Bridge,
    Schedule::PauseLong,
    Schedule::KillAllRestart,
    Schedule::RollingUpdateAgentFaults,
    Schedule::SnapshotCatchUp,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Schedule {
    LeaderKillLoop,
    FollowerKill,
    MinorityPartition,
    MajorityPartition,
    IsolatedLeader,
    Bridge,
    PauseShort,
    PauseLong,
    KillAllRestart,
    RollingUpdateAgentFaults,
    SnapshotCatchUp,
}

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::LeaderKillLoop => "leader-kill-loop",
            Schedule::FollowerKill => "follower-kill",
            Schedule::MinorityPartition => "minority-partition",
            Schedule::MajorityPartition => "majority-partition",
            Schedule::IsolatedLeader => "isolated-leader",
            Schedule::Bridge => "bridge",
            Schedule::PauseShort => "pause-short",
            Schedule::PauseLong => "pause-long",
            Schedule::KillAllRestart => "kill-all-restart",
            Schedule::RollingUpdateAgentFaults => "rolling-update-agent-faults",
            Schedule::SnapshotCatchUp => "snapshot-catch-up",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Schedule::LeaderKillLoop => "kill -9 the leader, restart it; repeat",
            Schedule::FollowerKill => "kill -9 a follower manager, restart it; repeat",
            Schedule::MinorityPartition => "cut a minority of followers from the rest; heal",
            Schedule::MajorityPartition => {
                "cut the old leader, on a minority side, from the majority; heal"
            }
            Schedule::IsolatedLeader => "cut the leader from every node; heal",
            Schedule::Bridge => {
                "A-B-C: the middle manager sees both sides, the ends not each other"
            }
            Schedule::PauseShort => "freeze the leader for less than an election timeout",
            Schedule::PauseLong => "freeze the leader for several election timeouts",
            Schedule::KillAllRestart => "kill -9 every manager at once; start them all",
            Schedule::RollingUpdateAgentFaults => {
                "kill and pause workers while a rolling update (stop-first) runs"
            }
            Schedule::SnapshotCatchUp => {
                "cut a follower off until the log is compacted past it; heal"
            }
        }
    }

    pub fn parse(name: &str) -> Option<Schedule> {
        ALL.iter().copied().find(|s| s.name() == name)
    }

    /// The fewest workers the schedule needs (the runner starts at least that many).
    pub fn min_workers(self) -> usize {
        match self {
            Schedule::RollingUpdateAgentFaults => 3,
            _ => 0,
        }
    }

    /// Whether the run checks that no node was marked DOWN by a pause shorter than the
    /// heartbeat grace (the schedules whose pauses are all short, and those that stress the
    /// agents' sessions).
    pub fn checks_false_down(self) -> bool {
        matches!(
            self,
            Schedule::PauseShort | Schedule::RollingUpdateAgentFaults | Schedule::SnapshotCatchUp
        )
    }
}

/// Who a step acts on, resolved when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    /// A manager that does not lead, picked at random.
    Follower,
    /// A worker, picked at random.
    Worker,
}

/// Partition shapes, resolved into groups by [`groups_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A minority of followers against the rest (workers with the majority).
    MinorityOfFollowers,
    /// A minority holding the leader against the rest (workers with the majority).
    MinorityWithLeader,
    /// The leader alone; everyone else together.
    IsolatedLeader,
    /// Managers in a line, the middle one seeing both halves; the leader at one end; workers
    /// keep every link.
    Bridge,
    /// One follower alone; everyone else (workers included) together.
    IsolatedFollower,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Kill(Target),
    /// Kill every manager.
    KillManagers,
    /// Start every node that is not running.
    StartStopped,
    Pause(Target),
    Partition(Shape),
    /// Remove every cut, unpause everything.
    Heal,
    /// Start the rolling update of the services (`rolling-update-agent-faults`).
    StartUpdate,
    /// Write through the leader until its snapshot is far past the follower that was cut off
    /// (`snapshot-catch-up`); the timeline waits for it.
    WriteUntilCompacted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// After the start of the fault phase.
    pub at: Duration,
    pub action: Action,
}

fn jitter(rng: &mut StdRng, low_ms: u64, high_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(low_ms..=high_ms))
}

/// The timeline of `schedule` for a fault phase of `duration`: fault / recovery cycles until
/// the next cycle would not fit, always at least one, ending healed.
pub fn timeline(schedule: Schedule, seed: u64, duration: Duration) -> Vec<Step> {
    match schedule {
        Schedule::RollingUpdateAgentFaults => return rolling_update_timeline(seed, duration),
        Schedule::SnapshotCatchUp => return snapshot_timeline(),
        _ => {}
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut now = Duration::ZERO;
    loop {
        // (fault, undo, how long the fault holds, how long to recover after).
        let (fault, undo, hold, recover) = match schedule {
            Schedule::LeaderKillLoop => (
                Action::Kill(Target::Leader),
                Action::StartStopped,
                jitter(&mut rng, 2_000, 4_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            Schedule::FollowerKill => (
                Action::Kill(Target::Follower),
                Action::StartStopped,
                jitter(&mut rng, 2_000, 5_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            Schedule::MinorityPartition => (
                Action::Partition(Shape::MinorityOfFollowers),
                Action::Heal,
                jitter(&mut rng, 3_000, 6_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            Schedule::MajorityPartition => (
                Action::Partition(Shape::MinorityWithLeader),
                Action::Heal,
                jitter(&mut rng, 3_000, 6_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            Schedule::IsolatedLeader => (
                Action::Partition(Shape::IsolatedLeader),
                Action::Heal,
                jitter(&mut rng, 3_000, 6_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            Schedule::Bridge => (
                Action::Partition(Shape::Bridge),
                Action::Heal,
                jitter(&mut rng, 4_000, 8_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            // The election timeout is at least 1 s (10 ticks of 100 ms).
            Schedule::PauseShort => (
                Action::Pause(Target::Leader),
                Action::Heal,
                jitter(&mut rng, 200, 600),
                jitter(&mut rng, 1_000, 2_000),
            ),
            Schedule::PauseLong => (
                Action::Pause(Target::Leader),
                Action::Heal,
                jitter(&mut rng, 3_000, 6_000),
                jitter(&mut rng, 2_000, 4_000),
            ),
            Schedule::KillAllRestart => (
                Action::KillManagers,
                Action::StartStopped,
                jitter(&mut rng, 1_000, 3_000),
                jitter(&mut rng, 4_000, 6_000),
            ),
            Schedule::RollingUpdateAgentFaults | Schedule::SnapshotCatchUp => {
                unreachable!("built by hand above")
            }
        };
        if !steps.is_empty() && now + hold + recover > duration {
            break;
        }
        steps.push(Step {
            at: now,
            action: fault,
        });
        steps.push(Step {
            at: now + hold,
            action: undo,
        });
        now += hold + recover;
    }
    // End healed whatever the schedule: nothing cut, paused or stopped.
    let end = steps.last().map(|s| s.at).unwrap_or_default();
    steps.push(Step {
        at: end,
        action: Action::Heal,
    });
    steps.push(Step {
        at: end,
        action: Action::StartStopped,
    });
    steps
}

/// The longest pause of a worker in `rolling-update-agent-faults`: below the dispatcher's
/// safe bound for the default heartbeat period (5 s): a pause shorter than
/// (3 − 1) × 5 s − 0.5 s of jitter can never outlast the grace, whenever it starts between
/// two beats.
pub const WORKER_PAUSE_MAX_MS: u64 = 8_000;

/// `rolling-update-agent-faults`: the update starts at once; then, one after another until
/// the duration is spent, a worker is killed (and started again 2–6 s later) or paused (1–8 s,
/// shorter than the grace, see [`WORKER_PAUSE_MAX_MS`]), with 1–3 s between faults.
pub fn rolling_update_timeline(seed: u64, duration: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = vec![Step {
        at: Duration::ZERO,
        action: Action::StartUpdate,
    }];
    let mut now = Duration::from_millis(1_000);
    loop {
        let kill = rng.random_bool(0.5);
        let (fault, undo, hold) = if kill {
            (
                Action::Kill(Target::Worker),
                Action::StartStopped,
                jitter(&mut rng, 2_000, 6_000),
            )
        } else {
            (
                Action::Pause(Target::Worker),
                Action::Heal,
                jitter(&mut rng, 1_000, WORKER_PAUSE_MAX_MS),
            )
        };
        let recover = jitter(&mut rng, 1_000, 3_000);
        if steps.len() > 1 && now + hold + recover > duration {
            break;
        }
        steps.push(Step {
            at: now,
            action: fault,
        });
        steps.push(Step {
            at: now + hold,
            action: undo,
        });
        now += hold + recover;
    }
    let end = steps.last().map(|s| s.at).unwrap_or_default();
    steps.push(Step {
        at: end,
        action: Action::Heal,
    });
    steps.push(Step {
        at: end,
        action: Action::StartStopped,
    });
    steps
}

/// `snapshot-catch-up`: cut a follower off, write until the log is compacted past it (the
/// step takes as long as it takes, bounded by the runner), heal.
pub fn snapshot_timeline() -> Vec<Step> {
    let ms = Duration::from_millis;
    vec![
        Step {
            at: ms(0),
            action: Action::Partition(Shape::IsolatedFollower),
        },
        Step {
            at: ms(500),
            action: Action::WriteUntilCompacted,
        },
        Step {
            at: ms(1_000),
            action: Action::Heal,
        },
        Step {
            at: ms(1_000),
            action: Action::StartStopped,
        },
    ]
}

/// The groups of a partition shape (see [`crate::cluster::plan_cuts`]): `managers` are node
/// indexes of managers, `leader` one of them, `workers` the workers' indexes.
pub fn groups_for(
    shape: Shape,
    managers: &[usize],
    workers: &[usize],
    leader: usize,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    let mut followers: Vec<usize> = managers.iter().copied().filter(|&m| m != leader).collect();
    // A seeded shuffle.
    for i in (1..followers.len()).rev() {
        let j = rng.random_range(0..=i);
        followers.swap(i, j);
    }
    let minority = (managers.len() - 1) / 2;
    let with_rest = |mut side: Vec<usize>| {
        side.extend_from_slice(workers);
        side
    };
    match shape {
        Shape::MinorityOfFollowers => {
            let small: Vec<usize> = followers[..minority.max(1)].to_vec();
            let mut rest: Vec<usize> = followers[minority.max(1)..].to_vec();
            rest.push(leader);
            vec![small, with_rest(rest)]
        }
        Shape::MinorityWithLeader => {
            let mut small = vec![leader];
            small.extend_from_slice(&followers[..minority.saturating_sub(1)]);
            let rest = followers[minority.saturating_sub(1)..].to_vec();
            vec![small, with_rest(rest)]
        }
        Shape::IsolatedLeader => vec![vec![leader], with_rest(followers)],
        Shape::IsolatedFollower => {
            let alone = followers[0];
            let mut rest: Vec<usize> = followers[1..].to_vec();
            rest.push(leader);
            vec![vec![alone], with_rest(rest)]
        }
        Shape::Bridge => {
            let mut line = vec![leader];
            line.extend(followers);
            let middle = line.len() / 2;
            vec![line[..=middle].to_vec(), line[middle..].to_vec()]
        }
    }
}

/// Picks a follower of `leader` among `managers` (any manager if there is no other).
pub fn pick_follower(managers: &[usize], leader: Option<usize>, rng: &mut StdRng) -> usize {
    let followers: Vec<usize> = managers
        .iter()
        .copied()
        .filter(|&m| Some(m) != leader)
        .collect();
    *followers
        .choose(rng)
        .or_else(|| managers.choose(rng))
        .expect("a cluster has managers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::plan_cuts;

    #[test]
    fn every_name_parses_back() {
        for s in ALL {
            assert_eq!(Schedule::parse(s.name()), Some(*s));
        }
        assert_eq!(Schedule::parse("nope"), None);
        assert!(CI.iter().all(|s| ALL.contains(s)));
    }

    #[test]
    fn timelines_are_seeded_bounded_and_end_healed() {
        for &s in ALL {
            let a = timeline(s, 7, Duration::from_secs(20));
            assert_eq!(
                a,
                timeline(s, 7, Duration::from_secs(20)),
                "{s:?} is not reproducible"
            );
            assert!(a.len() >= 4, "{s:?}: at least one fault and its undo");
            let n = a.len();
            assert_eq!(a[n - 2].action, Action::Heal);
            assert_eq!(a[n - 1].action, Action::StartStopped);
            assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "{s:?}: in order");
            assert!(a[n - 1].at <= Duration::from_secs(20), "{s:?}: {a:?}");
        }
        // Even a short phase gets one fault.
        assert!(timeline(Schedule::Bridge, 1, Duration::from_secs(1)).len() >= 4);
        assert_ne!(
            timeline(Schedule::LeaderKillLoop, 1, Duration::from_secs(30)),
            timeline(Schedule::LeaderKillLoop, 2, Duration::from_secs(30))
        );
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(3)
    }

    #[test]
    fn a_minority_never_holds_the_leader_unless_asked() {
        for managers in [vec![0, 1, 2], vec![0, 1, 2, 3, 4]] {
            let workers = [managers.len()];
            let g = groups_for(
                Shape::MinorityOfFollowers,
                &managers,
                &workers,
                1,
                &mut rng(),
            );
            assert_eq!(g[0].len(), (managers.len() - 1) / 2);
            assert!(!g[0].contains(&1) && g[1].contains(&1) && g[1].contains(&workers[0]));
            let g = groups_for(
                Shape::MinorityWithLeader,
                &managers,
                &workers,
                1,
                &mut rng(),
            );
            assert!(g[0].contains(&1));
            assert_eq!(g[0].len(), (managers.len() - 1) / 2);
            assert!(
                g[0].len() < g[1].len() - 1,
                "the minority is smaller: {g:?}"
            );
        }
    }

    #[test]
    fn an_isolated_leader_is_cut_from_everyone() {
        let g = groups_for(Shape::IsolatedLeader, &[0, 1, 2], &[3, 4], 2, &mut rng());
        assert_eq!(plan_cuts(5, &g), vec![(0, 2), (1, 2), (2, 3), (2, 4)]);
    }

    #[test]
    fn a_bridge_puts_the_leader_at_one_end() {
        let g = groups_for(Shape::Bridge, &[0, 1, 2], &[3], 0, &mut rng());
        let cuts = plan_cuts(4, &g);
        assert_eq!(cuts.len(), 1, "{g:?}");
        assert!(
            cuts[0].0 == 0 || cuts[0].1 == 0,
            "the leader is an end: {g:?}"
        );
        let g = groups_for(Shape::Bridge, &[0, 1, 2, 3, 4], &[], 4, &mut rng());
        assert_eq!(plan_cuts(5, &g).len(), 4, "{g:?}");
        assert_eq!(g[0][0], 4);
    }

    #[test]
    fn an_isolated_follower_is_cut_from_everyone_but_not_the_leader() {
        let g = groups_for(Shape::IsolatedFollower, &[0, 1, 2], &[3], 1, &mut rng());
        assert_eq!(g[0].len(), 1);
        assert_ne!(g[0][0], 1);
        assert_eq!(plan_cuts(4, &g).len(), 3, "{g:?}");
    }

    #[test]
    fn the_rolling_update_starts_first_and_pauses_stay_short() {
        let t = rolling_update_timeline(5, Duration::from_secs(20));
        assert_eq!(t[0].action, Action::StartUpdate);
        for w in t.windows(2) {
            if w[0].action == Action::Pause(Target::Worker) {
                assert_eq!(w[1].action, Action::Heal);
                assert!(w[1].at - w[0].at <= Duration::from_millis(WORKER_PAUSE_MAX_MS));
            }
        }
        assert!(
            t.iter()
                .any(|s| matches!(s.action, Action::Kill(Target::Worker) | Action::Pause(_)))
        );
    }

    #[test]
    fn a_follower_is_never_the_leader() {
        let mut r = rng();
        for _ in 0..50 {
            assert_ne!(pick_follower(&[0, 1, 2], Some(1), &mut r), 1);
        }
        assert_eq!(pick_follower(&[0], Some(0), &mut r), 0);
    }
}
