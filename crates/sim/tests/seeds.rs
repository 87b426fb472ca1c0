//! The simulation as CI runs it: a fixed set of seeds with no violation, determinism, and
//! proof that the invariants catch bugs (planted ones, and the Control API's early answers);
//! with managers and clients only, and with agents, the orchestrator and the scheduler.
//!
//! A longer run is one command: `cargo run --release -p shoal-sim -- --seeds 0..2000`.
//! (The whole file takes about 40 s in a debug build on two cores.)

use shoal_sim::{EarlyAnswers, PlantedBug, Report, SimConfig, run};

fn assert_clean(report: &Report) {
    assert!(
        report.violation_count == 0,
        "seed {} violated {:?}\nreplay: shoal-sim --seed {} --trace",
        report.seed,
        report
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.invariant, v.detail))
            .collect::<Vec<_>>(),
        report.seed,
    );
}

#[test]
fn fixed_seeds_with_three_managers_hold_every_invariant() {
    let mut operations = 0;
    let mut snapshots = 0;
    let mut crashes = 0;
    for seed in 0..32 {
        let report = run(SimConfig::new(seed));
        assert_clean(&report);
        assert_eq!(report.stats.verdict, "linearizable", "seed {seed}");
        operations += report.stats.operations;
        snapshots += report.stats.snapshots_delivered;
        crashes += report.stats.crashes;
    }
    // The runs did something: load, crashes, and members catching up by snapshot.
    assert!(operations > 6_000, "{operations} operations");
    assert!(crashes > 20, "{crashes} crashes");
    assert!(snapshots > 20, "{snapshots} snapshots delivered");
}

#[test]
fn fixed_seeds_with_five_managers_hold_every_invariant() {
    for seed in 100..116 {
        let report = run(SimConfig {
            managers: 5,
            ..SimConfig::new(seed)
        });
        assert_clean(&report);
        assert_eq!(report.stats.verdict, "linearizable", "seed {seed}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 28] {
        let a = run(SimConfig::new(seed));
        let b = run(SimConfig::new(seed));
        assert_eq!(a.digest, b.digest, "seed {seed} did not replay");
        assert_eq!(a.events, b.events);
        assert_eq!(a.stats.operations, b.stats.operations);
        // Keeping the trace as text does not change the run.
        let traced = run(SimConfig {
            keep_trace: Some(usize::MAX),
            ..SimConfig::new(seed)
        });
        assert_eq!(traced.digest, a.digest);
        assert_eq!(traced.trace.len() as u64, traced.events);
    }
    assert_ne!(run(SimConfig::new(1)).digest, run(SimConfig::new(2)).digest);
}

#[test]
fn raft_rs_election_timeouts_alone_would_break_replay() {
    // raft-rs draws election timeouts from its thread RNG; without the seeded override two
    // runs of one seed diverge (each run has dozens of elections and restarts, each with a
    // timeout drawn from five values, so an accidental match is out of reach).
    let config = SimConfig {
        seeded_election_timeouts: false,
        ..SimConfig::new(5)
    };
    let digests: Vec<u64> = (0..3).map(|_| run(config.clone()).digest).collect();
    assert!(
        digests.windows(2).any(|w| w[0] != w[1]),
        "three runs matched without the override: {digests:x?}"
    );
}

#[test]
fn a_write_acknowledged_before_it_is_committed_is_caught() {
    let caught = (0..6)
        .filter(|seed| {
            let report = run(SimConfig {
                planted_bug: Some(PlantedBug::AckBeforeCommit),
                ..SimConfig::new(*seed)
            });
            report
                .violations
                .iter()
                .any(|v| v.invariant == "linearizability")
        })
        .count();
    assert!(
        caught >= 4,
        "the planted bug was caught in {caught} of 6 seeds"
    );
}

#[test]
fn the_control_apis_early_answers_from_a_stale_store_are_caught() {
    // A real bug the simulation found: the Control API builds a write on the leader's local
    // store and answers its early checks (not found, out of sequence, name taken) at once. A
    // leader that was deposed without noticing yet, or a new leader that has not applied its
    // predecessor's last entries, answers from a stale store: in seed 28 an object created
    // and acknowledged is then "not found" by the creator's own removal. The Control API
    // now confirms its view before answering (`EarlyAnswers::Confirmed`, clean below); the
    // old behaviour stays here as a bug the checks must catch.
    for seed in [15, 28] {
        let report = run(SimConfig {
            early_answers: EarlyAnswers::ControlApi,
            ..SimConfig::new(seed)
        });
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.invariant == "linearizability"),
            "seed {seed}: {:?}",
            report.stats
        );
        assert_clean(&run(SimConfig::new(seed)));
    }
}

#[test]
fn a_restarted_leader_never_applies_cached_changes_to_an_old_entry() {
    // A bug in `RaftNode` the simulation found, now fixed: proposal IDs restart at 1 after a
    // restart, so an entry from the node's previous life could carry the tag of a new
    // proposal, and the leader applied the new proposal's cached changes in its place (in
    // seed 450 its store diverged at applied index 24). A proposal is now ours only at the
    // log position its entry took. These seeds diverged before the fix.
    for seed in [450, 840, 1693, 3373, 3907, 4292] {
        assert_clean(&run(SimConfig::new(seed)));
    }
}

fn with_agents(seed: u64) -> SimConfig {
    SimConfig {
        agents: 4,
        ..SimConfig::new(seed)
    }
}

#[test]
fn fixed_seeds_with_agents_hold_every_invariant() {
    let mut started = 0;
    let mut down = 0;
    let mut agent_crashes = 0;
    let mut changes = 0;
    let mut rounds = 0;
    for seed in 0..12 {
        let report = run(with_agents(seed));
        assert_clean(&report);
        assert_eq!(report.stats.verdict, "linearizable", "seed {seed}");
        let a = &report.stats.agents;
        assert!(a.running_at_end > 0, "seed {seed}: nothing runs at the end");
        started += a.tasks_started;
        down += a.nodes_written_down;
        agent_crashes += a.agent_crashes;
        changes += a.service_changes;
        rounds += a.rounds;
    }
    // The runs did something: tasks started, agents crashed and were written DOWN,
    // services were scaled and updated, the orchestrator ran on several leaders.
    assert!(started > 150, "{started} tasks started");
    assert!(agent_crashes > 5, "{agent_crashes} agent crashes");
    assert!(down > 0, "{down} nodes written DOWN");
    assert!(changes > 20, "{changes} service changes");
    assert!(rounds > 500, "{rounds} orchestrator rounds");
}

#[test]
fn a_new_leader_orchestrates_only_from_a_caught_up_store() {
    // A bug the simulation found, now fixed: a new leader ran the orchestrator before it had
    // applied its predecessor's last entries, did not see a task its predecessor had just
    // created for a slot, and created a second one: two tasks ran in one slot under
    // stop-first. The orchestrator now waits until its leader has applied an entry of its
    // own term. These seeds ran two tasks in a slot before the fix.
    for seed in [2271, 2849, 2987, 4227] {
        assert_clean(&run(with_agents(seed)));
    }
}

#[test]
fn fixed_seeds_with_five_managers_and_six_agents_hold_every_invariant() {
    for seed in 100..104 {
        let report = run(SimConfig {
            managers: 5,
            agents: 6,
            ..SimConfig::new(seed)
        });
        assert_clean(&report);
        assert_eq!(report.stats.verdict, "linearizable", "seed {seed}");
    }
}

#[test]
fn a_seed_with_agents_replays_exactly() {
    // The orchestrator and scheduler run inside the simulation: their decisions (task IDs,
    // timestamps, the order of their writes) must be a function of the seed too. Every store
    // a manager applies is in the digest.
    for seed in [1, 8] {
        let a = run(with_agents(seed));
        let b = run(with_agents(seed));
        assert_eq!(a.digest, b.digest, "seed {seed} did not replay");
        assert_eq!(a.events, b.events);
        assert_eq!(a.stats.agents.tasks_started, b.stats.agents.tasks_started);
    }
    assert_ne!(run(with_agents(1)).digest, run(SimConfig::new(1)).digest);
}

#[test]
fn a_slot_started_before_its_old_task_stopped_is_caught() {
    // A planted orchestrator bug: every task it creates is wanted RUNNING at once, even when
    // it replaces one that is still stopping (a stop-first update). The agents' reports show
    // two tasks of one slot running.
    let caught = (0..6)
        .filter(|seed| {
            let report = run(SimConfig {
                planted_bug: Some(PlantedBug::StartWhileStopping),
                ..with_agents(*seed)
            });
            report
                .violations
                .iter()
                .any(|v| v.invariant == "one task per slot")
        })
        .count();
    assert!(
        caught >= 4,
        "the planted bug was caught in {caught} of 6 seeds"
    );
}

#[test]
fn agents_that_never_stop_their_tasks_are_caught() {
    // A planted agent bug: tasks wanted stopped run on. After healing, the cluster does not
    // converge: a scaled-down task still runs, or an update's new task waits for a slot
    // that never frees.
    let caught = (0..4)
        .filter(|seed| {
            let report = run(SimConfig {
                planted_bug: Some(PlantedBug::AgentIgnoresShutdown),
                ..with_agents(*seed)
            });
            report.violations.iter().any(|v| {
                [
                    "agents run only what is wanted",
                    "replicated services run their replicas",
                    "global services run once per node",
                ]
                .contains(&v.invariant)
            })
        })
        .count();
    assert!(
        caught >= 3,
        "the planted bug was caught in {caught} of 4 seeds"
    );
}
