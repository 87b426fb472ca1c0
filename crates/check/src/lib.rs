//! A linearizability checker for histories of concurrent operations, written for Shoal's
//! fault tests: clients create, update and read objects through the Control API while
//! managers are killed and partitioned, record what they saw, and this crate decides whether
//! what they saw could have come from a single correct copy of the store.
//!
//! # What linearizable means here
//!
//! A [`History`] holds [`Operation`]s: which client issued it, its input, the instant it was
//! called, and either the instant it returned with its output, or nothing if the client never
//! learned the outcome. The history is *linearizable* against a sequential [`Model`] if the
//! operations can be put in one order such that
//!
//! - the order respects real time: when A returned before B was called, A comes first; and
//! - replaying the operations in that order through the model, from [`Model::init`], gives
//!   every operation the output its client saw.
//!
//! Equivalently, each operation seems to take effect at one instant between its call and its
//! return, and at that instant it behaves as the model says. Operations that overlap in time
//! may take effect in either order; operations that do not, may not be reordered. A call and
//! a return at the same instant count as overlapping, so a coarse clock can hide a violation
//! but never invent one.
//!
//! # Operations of unknown outcome
//!
//! A client that timed out, or whose connection broke, does not know whether its write
//! happened: a Raft leader may have committed it and died before answering, or never
//! received it. Such an operation has [`Outcome::Unknown`]. It may take effect at any instant
//! after its call, with no upper bound, or never. The checker therefore may place it anywhere
//! after its call, and may leave it out. The model is asked for the state the operation
//! leaves if it took effect ([`Model::step`] with no output); when that output is itself
//! unknowable, like the version a write was given, the model says what is known ("above 12")
//! and later reads pin it down. An unknown read changes nothing and is simply left out.
//!
//! # The algorithm
//!
//! The search is Wing & Gong's, with Lowe's improvements ("WGL", as in porcupine):
//!
//! 1. Split the history into partitions with [`Model::partition`] and check each alone.
//!    Linearizability is compositional: a history is linearizable if and only if each
//!    object's sub-history is (Herlihy & Wing), and checking k small histories is
//!    exponentially cheaper than one large one.
//! 2. Put each partition's call and return events in a doubly linked list, in time order.
//! 3. Walk the list from the front. A call met before any return belongs to an operation
//!    that may take effect next. If the model accepts its output from the current state,
//!    place it: push it on a stack with the state before it, lift its call and return out of
//!    the list, and start again from the front. If not, try the next call.
//! 4. Meeting a return means the operation returning there had to be placed already: this
//!    path is dead. Pop the last placement, restore its entries to the list, and try the call
//!    after it. An empty stack with nothing left to try means no order works.
//! 5. Once every operation that returned has been placed, the history is linearizable.
//! 6. Lowe's improvement: remember every (set of placed operations, state) pair reached. Two
//!    paths reaching the same pair have the same futures, so the second is cut off at once.
//!
//! Operations of unknown outcome are kept out of the list, in call order. At step 4, before
//! giving up on a path, the search tries those called before the first return in the list,
//! one at a time, then goes back to step 3. They are optional, so step 5 ignores them, and
//! step 6 treats them by subsumption: a configuration is skipped if one with the same placed
//! completed operations and state, and a subset of its placed unknown ones, was reached
//! before (placing one more optional operation only removes options). Which unknown
//! operations can take effect from a state is asked of the model once per state and kept.
//!
//! # Cost
//!
//! Deciding linearizability is NP-complete (Gibbons & Korach), and the memo bounds the work
//! only by the number of distinct configurations. In practice the set of placed operations
//! is "everything that returned before some instant, plus a few operations in flight then",
//! so the cost grows with the length of the history times roughly 2^c, where c is how many
//! operations of one partition overlap at once, times the number of states those orders
//! lead to, times the size of a set of placed operations (hashed at every step). Five
//! clients doing 10,000 operations over 20 objects take about 50 ms in a debug build; the
//! same on a single object about half a second.
//!
//! Operations of unknown outcome are the expensive part. They never return, so each one
//! that never happened stays a candidate to the end, and those that did may have happened
//! at many points: k of them on one object can multiply the work by up to 2^k. Keeping them
//! last, subsumption and the per-state cache keep this in hand in practice (10,000
//! operations on one object, 10% of unknown outcome: about 2 s in a debug build), but a
//! history can always be made hard, hence [`Checker::time_limit`] and
//! [`Checker::step_limit`]: a history that exhausts them gets [`Verdict::Unknown`] instead of
//! hanging the test run. An unknown operation that would not change the state is never
//! placed (leaving it out is always at least as good), which keeps unknown reads free.
//!
//! # Explanations
//!
//! A violation ([`Violation`]) reports the deepest point any path reached: the longest
//! linearizable prefix, with the state after each operation; the operation that returned
//! first among those not placed, which had to come next or earlier; and every operation that
//! could have come next, each marked impossible from that state or possible-but-leading-
//! nowhere. Printed, these carry their clients, times, inputs and outputs, so that a person
//! can find them in the logs. The deepest prefix is a heuristic: the first wrong output is
//! usually at or just after it, but every order fails, so no single operation is provably
//! "the" culprit.
//!
//! # Where this departs from porcupine and Knossos
//!
//! - Unknown outcomes are first class. Porcupine gives such an operation a return at the end
//!   of time, so it must still be placed (at the very end, if it never happened), and the
//!   model must recognise a marker output meaning "anything"; Knossos likewise keeps it
//!   pending forever. Here it has no return event at all, the search succeeds once every
//!   completed operation is placed, and the model is told the output is unknown, so it can
//!   say precisely what the operation would have changed.
//! - Models are deterministic; porcupine also offers nondeterministic models and Knossos
//!   explores sets of states. Uncertainty goes into the state (see [`versioned`]), which
//!   keeps the memo small and the search a plain depth-first walk.
//! - Operations of unknown outcome are tried only after every completed candidate, and the
//!   memo subsumes configurations that placed more of them. Without this, a few dozen such
//!   writes on one object made our generated histories time out: every path that placed an
//!   overwritten unknown write, or not, was explored separately.
//! - Budgets: a step limit (reproducible) and a time limit, with an explicit "unknown"
//!   verdict, where porcupine has only a timeout.
//! - Explanations are text, not porcupine's HTML visualisation or Knossos' final
//!   configuration sets: the harness prints them into a test failure.
//! - Partitions are checked one after another and the first violation is reported;
//!   porcupine checks them in parallel. Most histories are dominated by one partition's
//!   worst moment, and sequential checking keeps results reproducible.
//! - No dependencies beyond `std`.

mod check;
mod history;
mod model;
mod search;
pub mod versioned;

pub use check::{Candidate, Checker, Placed, Verdict, Violation, check};
pub use history::{ClientId, History, Operation, Outcome};
pub use model::Model;
pub use search::Inconclusive;
