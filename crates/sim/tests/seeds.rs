//! The simulation as CI runs it: a fixed set of seeds with no violation, determinism, and
//! proof that the invariants catch bugs (a planted one, and the Control API's early answers).
//!
//! A longer run is one command: `cargo run --release -p shoal-sim -- --seeds 0..2000`.

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
