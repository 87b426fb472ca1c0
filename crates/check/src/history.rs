//! What the clients saw: operations with their call and return instants, inputs and outputs.

use std::fmt;
use std::time::Duration;

/// The client that issued an operation.
///
/// The checker does not need operations of one client to be sequential; the id is recorded so
/// that explanations can say who saw what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The client received `output` at instant `at`.
    Returned { at: Duration, output: O },
    /// The client never learned the result: it timed out, or its connection broke. The
    /// operation may have taken effect at any instant after its call, or never.
    Unknown,
}

/// One operation of a history.
///
/// Instants are durations since a common origin (the start of the test), read from one
/// monotonic clock, so that "A returned before B was called" means `A.return < B.call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    pub client: ClientId,
    pub input: I,
    /// When the client sent the request.
    pub call: Duration,
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation whose client received `output` at `returned`.
    ///
    /// # Panics
    /// If `returned` is before `call`: the recorder's clock is not monotonic.
    pub fn returned(
        client: ClientId,
        input: I,
        call: Duration,
        returned: Duration,
        output: O,
    ) -> Self {
        assert!(
            returned >= call,
            "an operation cannot return ({returned:?}) before it is called ({call:?})"
        );
        Operation {
            client,
            input,
            call,
            outcome: Outcome::Returned {
                at: returned,
                output,
            },
        }
    }

    /// An operation whose outcome its client never learned.
    pub fn unknown(client: ClientId, input: I, call: Duration) -> Self {
        Operation {
            client,
            input,
            call,
            outcome: Outcome::Unknown,
        }
    }

    /// When the client received the output, if it did.
    pub fn return_instant(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Returned { at, .. } => Some(at),
            Outcome::Unknown => None,
        }
    }

    /// The output the client received, if it did.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }

    /// Whether the client never learned the outcome.
    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown)
    }
}

/// One line: `client 2  1.250ms..1.730ms  Read { .. } -> Found { .. }`.
impl<I: fmt::Debug, O: fmt::Debug> fmt::Display for Operation<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {}..", self.client, Milliseconds(self.call))?;
        match &self.outcome {
            Outcome::Returned { at, output } => {
                write!(f, "{}  {:?} -> {:?}", Milliseconds(*at), self.input, output)
            }
            Outcome::Unknown => write!(f, "?  {:?} -> outcome unknown", self.input),
        }
    }
}

/// An instant printed in milliseconds with microsecond precision.
pub(crate) struct Milliseconds(pub Duration);

impl fmt::Display for Milliseconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}ms", self.0.as_secs_f64() * 1e3)
    }
}

/// All the operations of a test run, in any order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    operations: Vec<Operation<I, O>>,
}

impl<I, O> History<I, O> {
    pub fn new() -> Self {
        History {
            operations: Vec::new(),
        }
    }

    /// Adds an operation; returns its index, which explanations use to name it.
    pub fn push(&mut self, operation: Operation<I, O>) -> usize {
        self.operations.push(operation);
        self.operations.len() - 1
    }

    /// Records an operation whose client received `output`.
    pub fn returned(
        &mut self,
        client: ClientId,
        input: I,
        call: Duration,
        returned: Duration,
        output: O,
    ) -> usize {
        self.push(Operation::returned(client, input, call, returned, output))
    }

    /// Records an operation whose outcome its client never learned.
    pub fn unknown(&mut self, client: ClientId, input: I, call: Duration) -> usize {
        self.push(Operation::unknown(client, input, call))
    }

    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.operations
    }

    pub fn operations_mut(&mut self) -> &mut [Operation<I, O>] {
        &mut self.operations
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History::new()
    }
}

impl<I, O> From<Vec<Operation<I, O>>> for History<I, O> {
    fn from(operations: Vec<Operation<I, O>>) -> Self {
        History { operations }
    }
}

impl<I, O> FromIterator<Operation<I, O>> for History<I, O> {
    fn from_iter<T: IntoIterator<Item = Operation<I, O>>>(iter: T) -> Self {
        History {
            operations: iter.into_iter().collect(),
        }
    }
}
