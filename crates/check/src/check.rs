//! Checking a whole history: partitioning, budgets, verdicts and their explanations.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::history::{History, Milliseconds, Operation};
use crate::model::Model;
use crate::search::{Budget, Conclusion, Inconclusive, search};

/// Checks histories against a model, within optional limits.
///
/// ```
/// use std::time::Duration;
/// use shoal_check::versioned::{Input, Output, VersionedObjects};
/// use shoal_check::{Checker, ClientId, History};
///
/// let ms = Duration::from_millis;
/// let mut history = History::new();
/// let create = Input::Create { name: "a".into(), value: 1 };
/// history.returned(ClientId(0), create, ms(0), ms(2), Output::Created { version: 4 });
/// let read = Input::Read { name: "a".into() };
/// // Concurrent with the create, so it may see the object or not.
/// history.returned(ClientId(1), read, ms(1), ms(3), Output::NotFound);
///
/// let checker = Checker::new(VersionedObjects).time_limit(Duration::from_secs(10));
/// assert!(checker.check(&history).is_linearizable());
/// ```
#[derive(Clone, Debug)]
pub struct Checker<M> {
    model: M,
    time_limit: Option<Duration>,
    step_limit: Option<u64>,
}

impl<M: Model> Checker<M> {
    /// A checker with no limits: it answers every history, however long that takes.
    pub fn new(model: M) -> Self {
        Checker {
            model,
            time_limit: None,
            step_limit: None,
        }
    }

    /// Gives up with [`Inconclusive::TimedOut`] once a check has run this long.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Gives up with [`Inconclusive::OutOfSteps`] after this many steps in one check (a step
    /// is an attempt to place an operation, or a call of [`Model::step`]; a check of a few
    /// thousand operations takes tens of thousands). Unlike a time limit, this gives the
    /// same answer on every machine.
    pub fn step_limit(mut self, steps: u64) -> Self {
        self.step_limit = Some(steps);
        self
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// Decides whether `history` is linearizable. Partitions are checked one after another,
    /// in the order of their first operation; the first violation found is returned.
    pub fn check(&self, history: &History<M::Input, M::Output>) -> Verdict<M> {
        let deadline = self.time_limit.map(|limit| Instant::now() + limit);
        let mut budget = Budget::new(self.step_limit, deadline);
        if self.time_limit == Some(Duration::ZERO) {
            return Verdict::Unknown(Inconclusive::TimedOut);
        }

        for (partition, indexes) in partitions(&self.model, history) {
            let operations: Vec<&Operation<M::Input, M::Output>> = indexes
                .iter()
                .map(|&index| &history.operations()[index])
                .collect();
            match search(&self.model, &operations, &mut budget) {
                Conclusion::Linearizable => {}
                Conclusion::Inconclusive(reason) => return Verdict::Unknown(reason),
                Conclusion::NotLinearizable(failure) => {
                    let operation = |position: usize| {
                        let index = indexes[position];
                        (index, history.operations()[index].clone())
                    };
                    let state = match failure.prefix.last() {
                        Some((_, state)) => state.clone(),
                        None => self.model.init(),
                    };
                    let prefix = failure
                        .prefix
                        .into_iter()
                        .map(|(position, state_after)| {
                            let (index, operation) = operation(position);
                            Placed {
                                index,
                                operation,
                                state_after,
                            }
                        })
                        .collect();
                    let candidates = failure
                        .candidates
                        .into_iter()
                        .map(|(position, possible)| {
                            let (index, operation) = operation(position);
                            Candidate {
                                index,
                                operation,
                                possible,
                            }
                        })
                        .collect();
                    return Verdict::NotLinearizable(Box::new(Violation {
                        partition,
                        partition_size: indexes.len(),
                        prefix,
                        state,
                        candidates,
                        blocking: indexes[failure.blocking],
                    }));
                }
            }
            if budget.deadline_passed() {
                return Verdict::Unknown(Inconclusive::TimedOut);
            }
        }
        Verdict::Linearizable
    }
}

/// Checks `history` against `model` with no limits.
pub fn check<M: Model>(model: M, history: &History<M::Input, M::Output>) -> Verdict<M> {
    Checker::new(model).check(history)
}

/// The operations of each partition, as indexes into the history, partitions in the order
/// their first operation appears.
fn partitions<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> Vec<(M::Partition, Vec<usize>)> {
    let mut positions: HashMap<M::Partition, usize> = HashMap::new();
    let mut partitions: Vec<(M::Partition, Vec<usize>)> = Vec::new();
    for (index, operation) in history.operations().iter().enumerate() {
        let key = model.partition(&operation.input);
        let position = *positions.entry(key.clone()).or_insert_with(|| {
            partitions.push((key, Vec::new()));
            partitions.len() - 1
        });
        partitions[position].1.push(index);
    }
    partitions
}

/// The answer of a check.
pub enum Verdict<M: Model> {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// No order does; the violation says where the search got furthest.
    NotLinearizable(Box<Violation<M>>),
    /// The check ran out of budget before deciding.
    Unknown(Inconclusive),
}

impl<M: Model> Verdict<M> {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    pub fn violation(&self) -> Option<&Violation<M>> {
        match self {
            Verdict::NotLinearizable(violation) => Some(violation),
            _ => None,
        }
    }
}

impl<M: Model> fmt::Display for Verdict<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable(violation) => fmt::Display::fmt(violation, f),
            Verdict::Unknown(Inconclusive::TimedOut) => {
                write!(f, "unknown: the check timed out before deciding")
            }
            Verdict::Unknown(Inconclusive::OutOfSteps) => {
                write!(
                    f,
                    "unknown: the check used up its step limit before deciding"
                )
            }
        }
    }
}

impl<M: Model> fmt::Debug for Verdict<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "Linearizable"),
            Verdict::NotLinearizable(violation) => {
                f.debug_tuple("NotLinearizable").field(violation).finish()
            }
            Verdict::Unknown(reason) => f.debug_tuple("Unknown").field(reason).finish(),
        }
    }
}

/// Why one partition is not linearizable, from the deepest point the search reached.
///
/// Every order of the partition's operations fails; the one reported places the most
/// operations. After `prefix`, the model is in `state`, and the operation `blocking` has
/// returned, so it must be placed before anything called after its return. The candidates
/// (operations called before that return and not yet placed, `blocking` among them) were
/// each tried next: those not `possible` cannot return what they returned from `state`;
/// the possible ones led to dead ends later on. Operations of unknown outcome are listed
/// only if they could have taken effect from `state`.
///
/// `Display` shows the last ten operations of the prefix; the alternate form (`{:#}`) shows
/// all of them.
pub struct Violation<M: Model> {
    pub partition: M::Partition,
    /// How many operations the partition holds.
    pub partition_size: usize,
    pub prefix: Vec<Placed<M>>,
    /// The state after the prefix.
    pub state: M::State,
    pub candidates: Vec<Candidate<M>>,
    /// The history index of the unplaced operation that returned first.
    pub blocking: usize,
}

/// An operation of a linearizable prefix.
pub struct Placed<M: Model> {
    /// Index in the history.
    pub index: usize,
    pub operation: Operation<M::Input, M::Output>,
    pub state_after: M::State,
}

/// An operation that could have come after the prefix but did not fit.
pub struct Candidate<M: Model> {
    /// Index in the history.
    pub index: usize,
    pub operation: Operation<M::Input, M::Output>,
    /// Whether the model allows its output from the state after the prefix.
    pub possible: bool,
}

const PREFIX_SHOWN: usize = 10;

impl<M: Model> fmt::Display for Violation<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: partition {:?} ({} operations)",
            self.partition, self.partition_size
        )?;
        if self.prefix.is_empty() {
            writeln!(f, "no operation can be placed first; the initial state is")?;
            writeln!(f, "    {:?}", self.state)?;
        } else {
            writeln!(
                f,
                "the longest linearizable prefix found places {} of them:",
                self.prefix.len()
            )?;
            let hidden = if f.alternate() {
                0
            } else {
                self.prefix.len().saturating_sub(PREFIX_SHOWN)
            };
            if hidden > 0 {
                writeln!(f, "    ... {hidden} earlier operations ({{:#}} shows them)")?;
            }
            for placed in &self.prefix[hidden..] {
                writeln!(f, "  #{:<6} {}", placed.index, placed.operation)?;
                writeln!(f, "           state after: {:?}", placed.state_after)?;
            }
        }
        let blocking = self
            .candidates
            .iter()
            .find(|candidate| candidate.index == self.blocking);
        match blocking.and_then(|candidate| candidate.operation.return_instant()) {
            Some(returned) => writeln!(
                f,
                "then nothing fits: #{} returned at {}, so it must come before anything called \
                 later, yet neither it nor any operation called before that can come next:",
                self.blocking,
                Milliseconds(returned)
            )?,
            None => writeln!(f, "then no operation can come next:")?,
        }
        for candidate in &self.candidates {
            let verdict = if candidate.possible {
                "possible here, but every continuation fails later"
            } else {
                "impossible from the state above"
            };
            writeln!(f, "  #{:<6} {}", candidate.index, candidate.operation)?;
            writeln!(f, "           {verdict}")?;
        }
        Ok(())
    }
}

impl<M: Model> fmt::Debug for Violation<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Violation")
            .field("partition", &self.partition)
            .field("partition_size", &self.partition_size)
            .field("prefix", &self.prefix)
            .field("state", &self.state)
            .field("candidates", &self.candidates)
            .field("blocking", &self.blocking)
            .finish()
    }
}

impl<M: Model> fmt::Debug for Placed<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placed")
            .field("index", &self.index)
            .field("operation", &self.operation)
            .field("state_after", &self.state_after)
            .finish()
    }
}

impl<M: Model> fmt::Debug for Candidate<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("index", &self.index)
            .field("operation", &self.operation)
            .field("possible", &self.possible)
            .finish()
    }
}
