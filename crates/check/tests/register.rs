//! The checker with a plain read/write register, the textbook example, to exercise the
//! search apart from Shoal's versioned model.

use std::time::Duration;

use shoal_check::{Checker, ClientId, History, Inconclusive, Model, Verdict, check};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Input {
    Write(u32),
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Output {
    Written,
    Value(u32),
}

/// One register holding a number, 0 at first.
struct Register;

impl Model for Register {
    type State = u32;
    type Input = Input;
    type Output = Output;
    type Partition = ();

    fn init(&self) -> u32 {
        0
    }

    fn step(&self, state: &u32, input: &Input, output: Option<&Output>) -> Option<u32> {
        match (input, output) {
            (Input::Write(value), Some(Output::Written) | None) => Some(*value),
            (Input::Read, Some(Output::Value(value))) => (value == state).then_some(*state),
            (Input::Read, None) => Some(*state),
            _ => None,
        }
    }

    fn partition(&self, _: &Input) {}
}

fn at(nanoseconds: u64) -> Duration {
    Duration::from_nanos(nanoseconds)
}

/// `(client, input, call, return, output)`; a return of `None` means the outcome is unknown.
type Row = (u32, Input, u64, Option<u64>, Option<Output>);

fn history(operations: &[Row]) -> History<Input, Output> {
    let mut history = History::new();
    for (client, input, call, returned, output) in operations.iter().cloned() {
        match (returned, output) {
            (Some(returned), Some(output)) => {
                history.returned(ClientId(client), input, at(call), at(returned), output);
            }
            _ => {
                history.unknown(ClientId(client), input, at(call));
            }
        }
    }
    history
}

use Input::{Read, Write};
use Output::{Value, Written};

#[test]
fn an_empty_history_is_linearizable() {
    assert!(check(Register, &History::new()).is_linearizable());
}

#[test]
fn porcupine_example_1_is_linearizable() {
    // Client 0 writes 100; client 1 reads 100 while it is in flight, client 2 reads 0
    // earlier, also while it is in flight.
    let history = history(&[
        (0, Write(100), 0, Some(100), Some(Written)),
        (1, Read, 25, Some(75), Some(Value(100))),
        (2, Read, 30, Some(60), Some(Value(0))),
    ]);
    assert!(check(Register, &history).is_linearizable());
}

#[test]
fn porcupine_example_2_is_not_linearizable() {
    // Client 2 reads 0 after client 1 has already read 100: the register went back.
    let history = history(&[
        (0, Write(200), 0, Some(100), Some(Written)),
        (1, Read, 10, Some(30), Some(Value(200))),
        (2, Read, 40, Some(90), Some(Value(0))),
    ]);
    let verdict = check(Register, &history);
    let violation = verdict.violation().expect("not linearizable");
    assert_eq!(violation.blocking, 2);
    let text = violation.to_string();
    assert!(text.contains("#2"), "{text}");
    assert!(text.contains("Read -> Value(0)"), "{text}");
}

#[test]
fn a_call_and_a_return_at_the_same_instant_overlap() {
    let history = history(&[
        (0, Write(1), 0, Some(10), Some(Written)),
        (1, Read, 10, Some(20), Some(Value(0))),
    ]);
    assert!(check(Register, &history).is_linearizable());
    let history = self::history(&[
        (0, Write(1), 0, Some(10), Some(Written)),
        (1, Read, 11, Some(20), Some(Value(0))),
    ]);
    assert!(!check(Register, &history).is_linearizable());
}

#[test]
fn an_unknown_write_may_happen_late_or_never() {
    // Write(1) never returned: reads long after may see 1 or 0, but once 1 is seen, a later
    // read cannot see 0 again.
    let late = history(&[
        (0, Write(1), 0, None, None),
        (1, Read, 1000, Some(1010), Some(Value(0))),
        (1, Read, 2000, Some(2010), Some(Value(1))),
    ]);
    assert!(check(Register, &late).is_linearizable());
    let never = history(&[
        (0, Write(1), 0, None, None),
        (1, Read, 1000, Some(1010), Some(Value(0))),
    ]);
    assert!(check(Register, &never).is_linearizable());
    let undone = history(&[
        (0, Write(1), 0, None, None),
        (1, Read, 1000, Some(1010), Some(Value(1))),
        (1, Read, 2000, Some(2010), Some(Value(0))),
    ]);
    assert!(!check(Register, &undone).is_linearizable());
    let before_its_call = history(&[
        (1, Read, 0, Some(10), Some(Value(1))),
        (0, Write(1), 20, None, None),
    ]);
    assert!(!check(Register, &before_its_call).is_linearizable());
}

/// Many concurrent writes of distinct values, and a read of a value none of them wrote:
/// every order of the writes is tried before the search gives up.
fn hard_history(writers: u32) -> History<Input, Output> {
    let mut operations: Vec<_> = (0..writers)
        .map(|client| (client, Write(client + 1), 0, Some(1000), Some(Written)))
        .collect();
    operations.push((writers, Read, 0, Some(1000), Some(Value(u32::MAX))));
    history(&operations)
}

#[test]
fn a_step_limit_makes_a_hard_history_inconclusive() {
    let verdict = Checker::new(Register)
        .step_limit(1000)
        .check(&hard_history(20));
    assert!(
        matches!(verdict, Verdict::Unknown(Inconclusive::OutOfSteps)),
        "{verdict}"
    );
}

#[test]
fn a_time_limit_makes_a_hard_history_inconclusive() {
    let verdict = Checker::new(Register)
        .time_limit(Duration::from_millis(50))
        .check(&hard_history(40));
    assert!(
        matches!(verdict, Verdict::Unknown(Inconclusive::TimedOut)),
        "{verdict}"
    );
}

#[test]
fn the_memo_keeps_many_concurrent_writes_cheap_when_they_fit() {
    // 12 concurrent writes then a read of one of them: found after few steps, and a wrong
    // read is refuted in about 12 × 12 × 2^11 steps rather than 12!.
    let mut operations: Vec<_> = (0..12)
        .map(|client| (client, Write(client + 1), 0, Some(1000), Some(Written)))
        .collect();
    operations.push((12, Read, 2000, Some(3000), Some(Value(7))));
    let verdict = Checker::new(Register)
        .step_limit(10_000_000)
        .check(&history(&operations));
    assert!(verdict.is_linearizable(), "{verdict}");
    operations.last_mut().unwrap().4 = Some(Value(13));
    let verdict = Checker::new(Register)
        .step_limit(10_000_000)
        .check(&history(&operations));
    assert!(verdict.violation().is_some(), "{verdict}");
}
