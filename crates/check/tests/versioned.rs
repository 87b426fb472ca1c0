//! Hand-written histories of Shoal's versioned objects: correct ones, the classic
//! violations, and writes whose outcome the client never learned.

use std::time::Duration;

use shoal_check::versioned::{Input, Output, VersionedObjects};
use shoal_check::{ClientId, History, Verdict, check};

/// Builds a history with times in milliseconds.
#[derive(Default)]
struct Script {
    history: History<Input, Output>,
}

impl Script {
    fn new() -> Self {
        Script::default()
    }

    /// An operation that returned `output`.
    fn returned(
        mut self,
        client: u32,
        call: u64,
        returned: u64,
        input: Input,
        output: Output,
    ) -> Self {
        let ms = Duration::from_millis;
        self.history
            .returned(ClientId(client), input, ms(call), ms(returned), output);
        self
    }

    /// An operation whose client never learned the outcome.
    fn unknown(mut self, client: u32, call: u64, input: Input) -> Self {
        self.history
            .unknown(ClientId(client), input, Duration::from_millis(call));
        self
    }

    fn check(&self) -> Verdict<VersionedObjects> {
        check(VersionedObjects, &self.history)
    }

    #[track_caller]
    fn assert_linearizable(&self) {
        let verdict = self.check();
        assert!(verdict.is_linearizable(), "{verdict}");
    }

    /// Asserts a violation and returns its explanation.
    #[track_caller]
    fn assert_violation(&self) -> String {
        match self.check() {
            Verdict::NotLinearizable(violation) => violation.to_string(),
            verdict => panic!("expected a violation, got {verdict}"),
        }
    }
}

fn create(name: &str, value: u64) -> Input {
    Input::Create {
        name: name.into(),
        value,
    }
}

fn update(name: &str, read_version: u64, value: u64) -> Input {
    Input::Update {
        name: name.into(),
        read_version,
        value,
    }
}

fn read(name: &str) -> Input {
    Input::Read { name: name.into() }
}

fn remove(name: &str, read_version: u64) -> Input {
    Input::Remove {
        name: name.into(),
        read_version,
    }
}

fn created(version: u64) -> Output {
    Output::Created { version }
}

fn updated(version: u64) -> Output {
    Output::Updated { version }
}

fn found(value: u64, version: u64) -> Output {
    Output::Found { value, version }
}

#[test]
fn a_sequential_history_is_linearizable() {
    Script::new()
        .returned(0, 0, 1, read("a"), Output::NotFound)
        .returned(0, 2, 3, create("a", 1), created(3))
        .returned(0, 4, 5, read("a"), found(1, 3))
        .returned(0, 6, 7, update("a", 3, 2), updated(8))
        .returned(0, 8, 9, update("a", 3, 5), Output::OutOfSequence)
        .returned(0, 10, 11, read("a"), found(2, 8))
        .returned(0, 12, 13, remove("a", 3), Output::OutOfSequence)
        .returned(0, 14, 15, remove("a", 8), Output::Removed)
        .returned(0, 16, 17, read("a"), Output::NotFound)
        .returned(0, 18, 19, update("a", 8, 9), Output::NotFound)
        .returned(0, 20, 21, create("a", 3), created(12))
        .returned(0, 22, 23, create("a", 4), Output::AlreadyExists)
        .returned(0, 24, 25, read("a"), found(3, 12))
        .assert_linearizable();
}

#[test]
fn concurrent_creates_one_wins() {
    Script::new()
        .returned(0, 0, 10, create("a", 1), Output::AlreadyExists)
        .returned(1, 1, 9, create("a", 2), created(5))
        .returned(2, 11, 12, read("a"), found(2, 5))
        .assert_linearizable();
}

#[test]
fn a_read_overlapping_an_update_may_see_either_version() {
    let history = |seen| {
        Script::new()
            .returned(0, 0, 1, create("a", 1), created(1))
            .returned(0, 2, 10, update("a", 1, 2), updated(4))
            .returned(1, 3, 5, read("a"), seen)
    };
    history(found(1, 1)).assert_linearizable();
    history(found(2, 4)).assert_linearizable();
    history(found(2, 1)).assert_violation();
}

#[test]
fn objects_are_independent() {
    // Interleaved histories of two objects, each fine on its own; versions come from one
    // counter, so each object sees gaps.
    Script::new()
        .returned(0, 0, 2, create("a", 1), created(1))
        .returned(1, 1, 3, create("b", 2), created(2))
        .returned(0, 4, 6, update("a", 1, 3), updated(4))
        .returned(1, 5, 7, update("b", 2, 4), updated(3))
        .returned(2, 8, 9, read("a"), found(3, 4))
        .returned(2, 10, 11, read("b"), found(4, 3))
        .assert_linearizable();
}

#[test]
fn a_stale_read_after_a_completed_write_is_caught() {
    let explanation = Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(0, 2, 3, update("a", 1, 2), updated(2))
        // Called after the update returned, yet sees the old value.
        .returned(1, 4, 5, read("a"), found(1, 1))
        .assert_violation();
    assert!(explanation.contains("partition \"a\""), "{explanation}");
    assert!(explanation.contains("#2"), "{explanation}");
    assert!(
        explanation.contains("impossible from the state above"),
        "{explanation}"
    );
    assert!(explanation.contains("4.000ms..5.000ms"), "{explanation}");
}

#[test]
fn two_successful_updates_from_one_read_version_are_caught() {
    // Both read version 1 and both succeeded: one of them should have been out of sequence.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(1, 2, 10, update("a", 1, 2), updated(3))
        .returned(2, 2, 10, update("a", 1, 3), updated(4))
        .assert_violation();
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    // The create was acknowledged, then the object is gone without anyone removing it.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(1, 2, 3, read("a"), Output::NotFound)
        .assert_violation();
    // The update was acknowledged, then a read sees the value from before it.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(0, 2, 3, update("a", 1, 2), updated(2))
        .returned(1, 10, 11, read("a"), found(2, 2))
        .returned(1, 12, 13, read("a"), found(1, 1))
        .assert_violation();
}

#[test]
fn a_read_of_a_value_never_written_is_caught() {
    let explanation = Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(1, 0, 5, read("a"), found(7, 1))
        .assert_violation();
    assert!(explanation.contains("value: 7"), "{explanation}");
}

#[test]
fn versions_must_grow() {
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(5))
        .returned(0, 2, 3, update("a", 5, 2), updated(4))
        .assert_violation();
    // Re-created after removal: the new object's version exceeds the removed one's.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(5))
        .returned(0, 2, 3, remove("a", 5), Output::Removed)
        .returned(0, 4, 5, create("a", 2), created(3))
        .assert_violation();
}

#[test]
fn an_unknown_update_that_happened() {
    // The update timed out, but a later read shows its value with a version above the one it
    // read; an update built on that version then succeeds.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .unknown(0, 2, update("a", 1, 2))
        .returned(1, 50, 51, read("a"), found(2, 9))
        .returned(1, 52, 53, update("a", 9, 3), updated(12))
        .assert_linearizable();
    // Seen only through the success of an update based on a version nobody read.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .unknown(0, 2, update("a", 1, 2))
        .returned(1, 50, 51, update("a", 7, 3), updated(12))
        .returned(1, 52, 53, read("a"), found(3, 12))
        .assert_linearizable();
}

#[test]
fn an_unknown_update_that_did_not_happen() {
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .unknown(0, 2, update("a", 1, 2))
        .returned(1, 50, 51, read("a"), found(1, 1))
        .returned(1, 52, 53, update("a", 1, 3), updated(12))
        .returned(1, 54, 55, read("a"), found(3, 12))
        .assert_linearizable();
}

#[test]
fn an_unknown_update_happens_once_and_for_good() {
    // Seen, then unseen: the write cannot be undone.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .unknown(0, 2, update("a", 1, 2))
        .returned(1, 50, 51, read("a"), found(2, 9))
        .returned(1, 52, 53, read("a"), found(1, 1))
        .assert_violation();
    // Its version must exceed the one it read.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(4))
        .unknown(0, 2, update("a", 4, 2))
        .returned(1, 50, 51, read("a"), found(2, 3))
        .assert_violation();
    // It cannot take effect before it was called.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(1, 2, 3, read("a"), found(2, 5))
        .unknown(0, 10, update("a", 1, 2))
        .assert_violation();
}

#[test]
fn unknown_creates_and_removes() {
    // A create that timed out and happened, then a remove that timed out and happened.
    Script::new()
        .unknown(0, 0, create("a", 1))
        .returned(1, 10, 11, read("a"), found(1, 6))
        .unknown(1, 12, remove("a", 6))
        .returned(2, 20, 21, read("a"), Output::NotFound)
        .returned(2, 22, 23, create("a", 2), created(9))
        .assert_linearizable();
    // A create that timed out and did not happen; the client's retry succeeded.
    Script::new()
        .unknown(0, 0, create("a", 1))
        .returned(0, 10, 11, create("a", 1), created(2))
        .returned(1, 12, 13, read("a"), found(1, 2))
        .assert_linearizable();
    // A remove whose outcome is unknown cannot explain an object vanishing before it was
    // called.
    Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(1, 2, 3, read("a"), Output::NotFound)
        .unknown(0, 4, remove("a", 1))
        .assert_violation();
}

#[test]
fn many_unknown_reads_cost_nothing() {
    let mut script = Script::new().returned(0, 0, 1, create("a", 1), created(1));
    for client in 1..200 {
        script = script.unknown(client, 2, read("a"));
    }
    script
        .returned(0, 3, 4, read("a"), found(1, 1))
        .assert_linearizable();
}

#[test]
fn the_explanation_names_the_prefix_and_the_misfits() {
    let explanation = Script::new()
        .returned(0, 0, 1, create("a", 1), created(1))
        .returned(1, 2, 3, read("a"), found(1, 1))
        .returned(0, 4, 8, update("a", 1, 2), updated(5))
        .returned(1, 5, 6, read("a"), found(3, 5))
        .assert_violation();
    let expected = "\
not linearizable: partition \"a\" (4 operations)
the longest linearizable prefix found places 3 of them:
  #0      client 0  0.000ms..1.000ms  Create { name: \"a\", value: 1 } -> Created { version: 1 }
           state after: Present { value: 1, version: Exact(1) }
  #1      client 1  2.000ms..3.000ms  Read { name: \"a\" } -> Found { value: 1, version: 1 }
           state after: Present { value: 1, version: Exact(1) }
  #2      client 0  4.000ms..8.000ms  Update { name: \"a\", read_version: 1, value: 2 } -> Updated { version: 5 }
           state after: Present { value: 2, version: Exact(5) }
then nothing fits: #3 returned at 6.000ms, so it must come before anything called later, yet neither it nor any operation called before that can come next:
  #3      client 1  5.000ms..6.000ms  Read { name: \"a\" } -> Found { value: 3, version: 5 }
           impossible from the state above
";
    assert_eq!(explanation, expected);
}
