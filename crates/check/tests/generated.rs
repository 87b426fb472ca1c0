//! Histories generated from a simulated store: always linearizable as generated, and
//! (usually, or surely for some mutations) not once one output is changed.

mod common;

use std::time::Instant;

use common::{Generated, Plan, Random, generate};
use proptest::prelude::*;
use shoal_check::versioned::{Input, Output, VersionedObjects};
use shoal_check::{Checker, Outcome, Verdict};

fn checker() -> Checker<VersionedObjects> {
    Checker::new(VersionedObjects).step_limit(20_000_000)
}

fn plans(unknown_percent: std::ops::Range<u64>) -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        1..6u32,
        1..40usize,
        1..4usize,
        1..2_000u64,
        unknown_percent,
    )
        .prop_map(
            |(seed, clients, operations_per_client, objects, latency, unknown_percent)| Plan {
                seed,
                clients,
                operations_per_client,
                objects,
                latency,
                unknown_percent,
            },
        )
}

/// The index of a randomly chosen completed read that found something, if any.
fn some_found_read(generated: &Generated, choice: u64) -> Option<usize> {
    let reads: Vec<usize> = generated
        .history
        .operations()
        .iter()
        .enumerate()
        .filter(|(_, operation)| matches!(operation.output(), Some(Output::Found { .. })))
        .map(|(index, _)| index)
        .collect();
    (!reads.is_empty()).then(|| reads[choice as usize % reads.len()])
}

fn output_mut(generated: &mut Generated, index: usize) -> &mut Output {
    match &mut generated.history.operations_mut()[index].outcome {
        Outcome::Returned { output, .. } => output,
        Outcome::Unknown => unreachable!("chose a completed operation"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn generated_histories_are_linearizable(plan in plans(0..25)) {
        let generated = generate(&plan);
        let verdict = checker().check(&generated.history);
        prop_assert!(verdict.is_linearizable(), "{}", verdict);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(plan in plans(0..25), choice: u64) {
        let mut generated = generate(&plan);
        let Some(index) = some_found_read(&generated, choice) else {
            return Ok(());
        };
        let unused_value = generated.unused_value;
        if let Output::Found { value, .. } = output_mut(&mut generated, index) {
            *value = unused_value;
        }
        let verdict = checker().check(&generated.history);
        prop_assert!(verdict.violation().is_some(), "{}", verdict);
    }

    #[test]
    fn a_read_of_a_version_never_given_out_is_caught(plan in plans(0..1), choice: u64) {
        // Without unknown outcomes every version in the model is exact, so a version the
        // store never gave out cannot be read.
        let mut generated = generate(&plan);
        let Some(index) = some_found_read(&generated, choice) else {
            return Ok(());
        };
        let unused_version = generated.unused_version;
        if let Output::Found { version, .. } = output_mut(&mut generated, index) {
            *version = unused_version;
        }
        let verdict = checker().check(&generated.history);
        prop_assert!(verdict.violation().is_some(), "{}", verdict);
    }
}

/// A plausible but different output for `input`.
fn mutate(input: &Input, output: &Output, unused_version: u64) -> Output {
    match (input, output) {
        (_, Output::Created { .. }) => Output::AlreadyExists,
        (_, Output::AlreadyExists) => Output::Created {
            version: unused_version,
        },
        (_, Output::Updated { .. } | Output::Removed) => Output::OutOfSequence,
        (Input::Update { .. }, Output::OutOfSequence | Output::NotFound) => Output::Updated {
            version: unused_version,
        },
        (_, Output::OutOfSequence) => Output::Removed,
        (Input::Read { .. }, Output::NotFound) => Output::Found {
            value: 1,
            version: 1,
        },
        (_, Output::NotFound) => Output::Removed,
        (_, Output::Found { .. }) => Output::NotFound,
    }
}

#[test]
fn mutating_one_output_is_usually_caught() {
    let mut random = Random::new(7);
    let (mut tried, mut caught) = (0, 0);
    for seed in 0..300 {
        let plan = Plan {
            seed,
            clients: 1 + random.below(5) as u32,
            operations_per_client: 5 + random.below(30) as usize,
            objects: 1 + random.below(3) as usize,
            latency: 1 + random.below(2_000),
            unknown_percent: random.below(10),
        };
        let mut generated = generate(&plan);
        let completed: Vec<usize> = generated
            .history
            .operations()
            .iter()
            .enumerate()
            .filter(|(_, operation)| !operation.is_unknown())
            .map(|(index, _)| index)
            .collect();
        if completed.is_empty() {
            continue;
        }
        let index = completed[random.below(completed.len() as u64) as usize];
        let input = generated.history.operations()[index].input.clone();
        let unused_version = generated.unused_version;
        let output = output_mut(&mut generated, index);
        *output = mutate(&input, output, unused_version);
        tried += 1;
        match checker().check(&generated.history) {
            Verdict::NotLinearizable(_) => caught += 1,
            Verdict::Linearizable => {}
            Verdict::Unknown(reason) => panic!("seed {seed}: {reason:?}"),
        }
    }
    eprintln!("one mutated output: {caught} of {tried} histories judged not linearizable");
    assert!(
        caught * 2 > tried,
        "only {caught} of {tried} mutations caught"
    );
}

fn large_plan(unknown_percent: u64) -> Plan {
    Plan {
        seed: 2024,
        clients: 5,
        operations_per_client: 2_000,
        objects: 20,
        latency: 1_000_000,
        unknown_percent,
    }
}

#[test]
fn a_large_history_is_checked_quickly() {
    for unknown_percent in [0, 1, 5, 10] {
        let mut generated = generate(&large_plan(unknown_percent));
        let started = Instant::now();
        let verdict = Checker::new(VersionedObjects).check(&generated.history);
        eprintln!(
            "5 clients × 2,000 operations over 20 objects, {unknown_percent}% unknown: \
             {verdict} in {:?}",
            started.elapsed()
        );
        assert!(verdict.is_linearizable(), "{verdict}");

        // The same history with one read, two thirds of the way through, gone wrong.
        let index = (generated.history.len() * 2 / 3..generated.history.len())
            .find(|&i| {
                matches!(
                    generated.history.operations()[i].output(),
                    Some(Output::Found { .. })
                )
            })
            .expect("a read late in the history");
        let unused_value = generated.unused_value;
        if let Output::Found { value, .. } = output_mut(&mut generated, index) {
            *value = unused_value;
        }
        let started = Instant::now();
        let verdict = Checker::new(VersionedObjects).check(&generated.history);
        eprintln!(
            "  with read #{index} corrupted: violation found in {:?}",
            started.elapsed()
        );
        let violation = verdict.violation().expect("a violation");
        assert!(violation.candidates.iter().any(|c| c.index == index));
    }
}

#[test]
fn a_large_history_on_few_objects_with_unknown_outcomes() {
    // All the concurrency on one or three objects, with many writes whose outcome is unknown:
    // the hard case, as each such write stays a candidate to the end.
    for objects in [1, 3] {
        for unknown_percent in [0, 5, 10] {
            let mut plan = large_plan(unknown_percent);
            plan.objects = objects;
            let generated = generate(&plan);
            let started = Instant::now();
            let verdict = Checker::new(VersionedObjects).check(&generated.history);
            eprintln!(
                "5 clients × 2,000 operations over {objects} objects, {unknown_percent}% \
                 unknown: {verdict} in {:?}",
                started.elapsed()
            );
            assert!(verdict.is_linearizable(), "{verdict}");
        }
    }
}
