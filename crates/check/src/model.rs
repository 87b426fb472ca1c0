//! The sequential specification a history is checked against.

use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification: what one operation may return from a given state, and the
/// state it leaves behind.
///
/// A model must be deterministic: from one state, one input and one output there is at most
/// one next state. Uncertainty the clients cannot resolve (a version the system chose but
/// nobody saw) belongs in the state, as "some value above 7", not in several next states; see
/// [`crate::versioned`] for an example.
pub trait Model {
    /// The state of one partition. Compared and hashed to remember which (operations placed,
    /// state) configurations the search has already explored, so it should be small.
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;
    /// Names a part of the state that operations on other parts cannot observe or change,
    /// such as one object of a key-value store.
    type Partition: Clone + Eq + Hash + Debug;

    /// The state of every partition before the first operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state` and returns `output`, or `None` if
    /// `state` cannot return `output` for `input`.
    ///
    /// `output` is `None` when the client never learned the outcome: return the state the
    /// operation leaves if it took effect, or `None` if it cannot take effect from `state`
    /// (it could only have failed without changing anything). The checker separately
    /// considers the case where it never took effect at all.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// The partition an operation belongs to. Operations of different partitions are checked
    /// separately, which is sound only if they are truly independent: a history is then
    /// linearizable if and only if each partition's sub-history is (linearizability is
    /// compositional, Herlihy & Wing 1990). Return the same value for every input to check
    /// the whole history as one.
    fn partition(&self, input: &Self::Input) -> Self::Partition;
}
