//! The WGL search over one partition's operations.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::history::Operation;
use crate::model::Model;

/// Why a check stopped before reaching a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inconclusive {
    /// The deadline passed.
    TimedOut,
    /// The search took as many steps as it was allowed.
    OutOfSteps,
}

/// The steps and time a check may still spend, shared by all its partitions.
pub(crate) struct Budget {
    steps_taken: u64,
    step_limit: Option<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    pub(crate) fn new(step_limit: Option<u64>, deadline: Option<Instant>) -> Self {
        Budget {
            steps_taken: 0,
            step_limit,
            deadline,
        }
    }

    /// Accounts for one step: an attempt to place an operation, or a call of
    /// [`Model::step`].
    fn spend_step(&mut self) -> Result<(), Inconclusive> {
        self.steps_taken += 1;
        if self
            .step_limit
            .is_some_and(|limit| self.steps_taken > limit)
        {
            return Err(Inconclusive::OutOfSteps);
        }
        // Reading the clock costs about as much as a cheap step: look every 1024 steps.
        if self.steps_taken.is_multiple_of(1024)
            && self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Err(Inconclusive::TimedOut);
        }
        Ok(())
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// What the search concluded about one partition.
pub(crate) enum Conclusion<S> {
    Linearizable,
    NotLinearizable(DeepestFailure<S>),
    Inconclusive(Inconclusive),
}

/// Where the search got furthest before every way forward failed. Operations are named by
/// their index in the partition.
pub(crate) struct DeepestFailure<S> {
    /// The linearizable prefix, in order, with the state after each operation.
    pub(crate) prefix: Vec<(usize, S)>,
    /// The operations that could have come next, each with whether its step from the state
    /// after the prefix is possible at all: the completed ones called before `blocking`
    /// returned, then those of unknown outcome that could have taken effect here.
    pub(crate) candidates: Vec<(usize, bool)>,
    /// The unplaced operation that returned first: nothing called after its return may be
    /// placed before it.
    pub(crate) blocking: usize,
}

/// Searches for a linearization of `operations` (one partition) against `model`.
pub(crate) fn search<M: Model>(
    model: &M,
    operations: &[&Operation<M::Input, M::Output>],
    budget: &mut Budget,
) -> Conclusion<M::State> {
    Search::new(model, operations).run(budget)
}

/// Where the search looks for the next operation to place.
#[derive(Clone, Copy)]
enum Cursor {
    /// At an entry of the list (a call, a return, or the end).
    List(Option<usize>),
    /// At the given ordinal of [`Search::unknown_move`], trying operations of unknown
    /// outcome after every completed candidate.
    Unknown(usize),
}

/// A placed operation: a call entry of the list, or a position in [`Search::unknown`]
/// reached as the `ordinal`-th move of [`Search::unknown_move`].
#[derive(Clone, Copy)]
enum Placement {
    Call(usize),
    Unknown { position: usize, ordinal: usize },
}

/// The operations of unknown outcome that can take effect from one state.
struct UnknownMoves<S> {
    /// How many operations of [`Search::unknown`], from the start, were asked about.
    scanned: usize,
    /// Their positions, ascending, with the state each leaves.
    moves: Vec<(usize, S)>,
}

impl<S> Default for UnknownMoves<S> {
    fn default() -> Self {
        UnknownMoves {
            scanned: 0,
            moves: Vec::new(),
        }
    }
}

struct Search<'a, M: Model> {
    model: &'a M,
    operations: &'a [&'a Operation<M::Input, M::Output>],
    /// The calls and returns of the completed operations.
    list: EntryList,
    /// The operations of unknown outcome, by call instant. They have no return, so they
    /// never force anything; they are tried only once no completed operation fits.
    unknown: Vec<usize>,
    /// For each operation, its position among the completed or among the unknown ones.
    group_position: Vec<usize>,
    /// Which completed operations, and which of unknown outcome, are placed.
    placed_completed: Bitset,
    placed_unknown: Bitset,
    returns_left: usize,
    state: M::State,
    /// The placements so far, each with the state before it.
    stack: Vec<(Placement, M::State)>,
    /// For each (placed completed operations, state) explored, the sets of placed operations
    /// of unknown outcome it was explored with. Placing more of those only removes options,
    /// so a configuration with a superset of one already explored is explored already.
    explored: HashMap<(Bitset, M::State), Vec<Bitset>, BuildHasherDefault<FastHasher>>,
    unknown_moves: HashMap<M::State, UnknownMoves<M::State>, BuildHasherDefault<FastHasher>>,
    deepest: Option<DeepestFailure<M::State>>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, operations: &'a [&'a Operation<M::Input, M::Output>]) -> Self {
        let mut group_position = vec![0; operations.len()];
        let mut completed = 0;
        let mut unknown = Vec::new();
        for (index, operation) in operations.iter().enumerate() {
            if operation.is_unknown() {
                unknown.push(index);
            } else {
                group_position[index] = completed;
                completed += 1;
            }
        }
        unknown.sort_by_key(|&index| (operations[index].call, index));
        for (position, &index) in unknown.iter().enumerate() {
            group_position[index] = position;
        }
        Search {
            model,
            operations,
            list: EntryList::new(operations),
            placed_completed: Bitset::new(completed),
            placed_unknown: Bitset::new(unknown.len()),
            unknown,
            group_position,
            returns_left: completed,
            state: model.init(),
            stack: Vec::new(),
            explored: HashMap::default(),
            unknown_moves: HashMap::default(),
            deepest: None,
        }
    }

    fn run(mut self, budget: &mut Budget) -> Conclusion<M::State> {
        if self.returns_left == 0 {
            return Conclusion::Linearizable;
        }
        let mut cursor = Cursor::List(self.list.first());
        loop {
            if let Err(reason) = budget.spend_step() {
                return Conclusion::Inconclusive(reason);
            }
            let (placement, next_state, skip) = match cursor {
                Cursor::List(Some(entry)) if self.list.entries[entry].is_call() => {
                    let skip = Cursor::List(self.list.next(entry));
                    let operation = self.operations[self.list.entries[entry].operation];
                    let next_state =
                        self.model
                            .step(&self.state, &operation.input, operation.output());
                    let Some(next_state) = next_state else {
                        cursor = skip;
                        continue;
                    };
                    (Placement::Call(entry), next_state, skip)
                }
                // A return (or the end): no more completed candidates.
                Cursor::List(_) => {
                    cursor = Cursor::Unknown(0);
                    continue;
                }
                Cursor::Unknown(ordinal) => match self.unknown_move(ordinal, budget) {
                    Err(reason) => return Conclusion::Inconclusive(reason),
                    Ok(Some((ordinal, position, next_state))) => {
                        let placement = Placement::Unknown { position, ordinal };
                        (placement, next_state, Cursor::Unknown(ordinal + 1))
                    }
                    Ok(None) => {
                        // Stuck: the first return in the list belongs to an operation that
                        // should have been placed already. Note how far we got, then undo
                        // the last placement and try what comes after it.
                        self.note_failure();
                        match self.backtrack() {
                            Some(next) => cursor = next,
                            None => {
                                let deepest = self.deepest.take().expect("noted when stuck");
                                return Conclusion::NotLinearizable(deepest);
                            }
                        }
                        continue;
                    }
                },
            };

            self.set_placed(placement, true);
            if !self.remember(next_state.clone()) {
                self.set_placed(placement, false);
                cursor = skip;
                continue;
            }
            let before = std::mem::replace(&mut self.state, next_state);
            self.stack.push((placement, before));
            if let Placement::Call(entry) = placement {
                self.list.lift(entry);
                self.returns_left -= 1;
                if self.returns_left == 0 {
                    return Conclusion::Linearizable;
                }
            }
            cursor = Cursor::List(self.list.first());
        }
    }

    /// The `ordinal`-th way, or the first later one still open, to place an operation of
    /// unknown outcome from the current state: its ordinal, its position in
    /// [`Search::unknown`] and the state it leaves; `None` if there is no other way.
    ///
    /// Which of those operations can take effect from a state, and what they change, is
    /// worked out once per state and kept: operations that will never happen stay
    /// candidates to the end, and asking the model about each of them at every dead end
    /// would dominate the search. Placing one that changes nothing never helps (leaving it
    /// out is always allowed and constrains nothing), so those are not listed.
    fn unknown_move(
        &mut self,
        mut ordinal: usize,
        budget: &mut Budget,
    ) -> Result<Option<(usize, usize, M::State)>, Inconclusive> {
        let candidates = self.unknown_candidates();
        let moves = self.unknown_moves.entry(self.state.clone()).or_default();
        while moves.scanned < candidates {
            budget.spend_step()?;
            let operation = self.operations[self.unknown[moves.scanned]];
            if let Some(next) = self.model.step(&self.state, &operation.input, None)
                && next != self.state
            {
                moves.moves.push((moves.scanned, next));
            }
            moves.scanned += 1;
        }
        while let Some((position, next)) = moves.moves.get(ordinal) {
            if *position >= candidates {
                return Ok(None);
            }
            if !self.placed_unknown.contains(*position) {
                return Ok(Some((ordinal, *position, next.clone())));
            }
            ordinal += 1;
        }
        Ok(None)
    }

    /// How many operations of unknown outcome, from the start of [`Search::unknown`], were
    /// called before the first return still in the list (at the same instant counts as
    /// before), so that they may be placed now.
    fn unknown_candidates(&self) -> usize {
        match self.list.first_return() {
            Some(entry) => {
                let returned = self.list.entries[entry].instant;
                self.unknown
                    .partition_point(|&index| self.operations[index].call <= returned)
            }
            None => self.unknown.len(),
        }
    }

    fn set_placed(&mut self, placement: Placement, placed: bool) {
        let (set, position) = match placement {
            Placement::Call(entry) => {
                let operation = self.list.entries[entry].operation;
                (&mut self.placed_completed, self.group_position[operation])
            }
            Placement::Unknown { position, .. } => (&mut self.placed_unknown, position),
        };
        if placed {
            set.insert(position);
        } else {
            set.remove(position);
        }
    }

    /// Records the configuration of the placed sets and `state`; false if it, or one with
    /// fewer operations of unknown outcome placed, was explored already.
    fn remember(&mut self, state: M::State) -> bool {
        let explored_with = self
            .explored
            .entry((self.placed_completed.clone(), state))
            .or_default();
        if explored_with
            .iter()
            .any(|unknown| unknown.is_subset_of(&self.placed_unknown))
        {
            return false;
        }
        explored_with.push(self.placed_unknown.clone());
        true
    }

    /// Undoes the last placement; returns where to continue, or `None` if nothing was
    /// placed.
    fn backtrack(&mut self) -> Option<Cursor> {
        let (placement, before) = self.stack.pop()?;
        self.state = before;
        self.set_placed(placement, false);
        Some(match placement {
            Placement::Call(entry) => {
                self.list.restore(entry);
                self.returns_left += 1;
                Cursor::List(self.list.next(entry))
            }
            Placement::Unknown { ordinal, .. } => Cursor::Unknown(ordinal + 1),
        })
    }

    /// Keeps a description of the current dead end if it is the deepest so far.
    fn note_failure(&mut self) {
        if self
            .deepest
            .as_ref()
            .is_some_and(|deepest| deepest.prefix.len() >= self.stack.len())
        {
            return;
        }
        let operation_of = |placement: Placement| match placement {
            Placement::Call(entry) => self.list.entries[entry].operation,
            Placement::Unknown { position, .. } => self.unknown[position],
        };
        let prefix = self
            .stack
            .iter()
            .enumerate()
            .map(|(depth, &(placement, _))| {
                let after = match self.stack.get(depth + 1) {
                    Some((_, before_next)) => before_next.clone(),
                    None => self.state.clone(),
                };
                (operation_of(placement), after)
            })
            .collect();

        let possible = |index: usize| {
            let operation = self.operations[index];
            self.model
                .step(&self.state, &operation.input, operation.output())
        };
        let mut candidates = Vec::new();
        let mut entry = self.list.first();
        while let Some(current) = entry {
            if !self.list.entries[current].is_call() {
                break;
            }
            let index = self.list.entries[current].operation;
            candidates.push((index, possible(index).is_some()));
            entry = self.list.next(current);
        }
        // Of the operations of unknown outcome, only those that could have taken effect
        // here say anything; the others simply did not happen yet.
        for position in 0..self.unknown_candidates() {
            let index = self.unknown[position];
            if !self.placed_unknown.contains(position)
                && possible(index).is_some_and(|next| next != self.state)
            {
                candidates.push((index, true));
            }
        }
        let blocking = match self.list.first_return() {
            Some(entry) => self.list.entries[entry].operation,
            None => candidates.first().map_or(0, |&(index, _)| index),
        };
        self.deepest = Some(DeepestFailure {
            prefix,
            candidates,
            blocking,
        });
    }
}

/// The calls and returns of one partition in time order, as a doubly linked list from which
/// placed operations are lifted out and restored on backtracking ("dancing links").
struct EntryList {
    /// Index 0 is the head sentinel.
    entries: Vec<Entry>,
}

const NONE: usize = usize::MAX;
const HEAD: usize = 0;

struct Entry {
    operation: usize,
    /// When the call or return happened.
    instant: Duration,
    /// For a call: its return entry. For a return: `NONE`.
    matching_return: usize,
    is_return: bool,
    previous: usize,
    next: usize,
}

impl Entry {
    fn is_call(&self) -> bool {
        !self.is_return
    }
}

impl EntryList {
    /// The list of the completed operations' calls and returns.
    fn new<I, O>(operations: &[&Operation<I, O>]) -> Self {
        // (instant, is_return, operation): at equal instants calls sort before returns, so
        // operations that touch count as concurrent, and clock granularity never makes a
        // correct history look wrong.
        let mut events = Vec::with_capacity(operations.len() * 2);
        for (index, operation) in operations.iter().enumerate() {
            if let Some(returned) = operation.return_instant() {
                events.push((operation.call, false, index));
                events.push((returned.max(operation.call), true, index));
            }
        }
        events.sort_unstable();

        let mut entries = Vec::with_capacity(events.len() + 1);
        entries.push(Entry {
            operation: NONE,
            instant: Duration::ZERO,
            matching_return: NONE,
            is_return: false,
            previous: NONE,
            next: NONE,
        });
        let mut call_entry = vec![NONE; operations.len()];
        for (position, &(instant, is_return, operation)) in events.iter().enumerate() {
            let index = position + 1;
            if is_return {
                entries[call_entry[operation]].matching_return = index;
            } else {
                call_entry[operation] = index;
            }
            entries.push(Entry {
                operation,
                instant,
                matching_return: NONE,
                is_return,
                previous: index - 1,
                next: if index == events.len() {
                    NONE
                } else {
                    index + 1
                },
            });
        }
        entries[HEAD].next = if events.is_empty() { NONE } else { 1 };
        EntryList { entries }
    }

    fn first(&self) -> Option<usize> {
        self.next(HEAD)
    }

    fn next(&self, index: usize) -> Option<usize> {
        let next = self.entries[index].next;
        (next != NONE).then_some(next)
    }

    /// The first return entry: calls before it are the candidates to place next.
    fn first_return(&self) -> Option<usize> {
        let mut entry = self.first();
        while let Some(index) = entry {
            if self.entries[index].is_return {
                return Some(index);
            }
            entry = self.next(index);
        }
        None
    }

    /// Removes a call entry and its return entry.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.entries[call].matching_return);
    }

    /// Undoes [`EntryList::lift`]; lifts must be restored in reverse order.
    fn restore(&mut self, call: usize) {
        self.relink(self.entries[call].matching_return);
        self.relink(call);
    }

    fn unlink(&mut self, index: usize) {
        let Entry { previous, next, .. } = self.entries[index];
        self.entries[previous].next = next;
        if next != NONE {
            self.entries[next].previous = previous;
        }
    }

    fn relink(&mut self, index: usize) {
        let Entry { previous, next, .. } = self.entries[index];
        self.entries[previous].next = index;
        if next != NONE {
            self.entries[next].previous = index;
        }
    }
}

/// The set of operations placed so far.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset {
    words: Box<[u64]>,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Bitset {
            words: vec![0; bits.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn remove(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }

    fn contains(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn is_subset_of(&self, other: &Bitset) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// A fast non-cryptographic hasher for the explored set (the FxHash multiply-rotate, with a
/// final mix so that the high bits hash tables use are well spread). The keys are not chosen
/// by an adversary, so SipHash's protection is not needed.
#[derive(Default)]
struct FastHasher {
    hash: u64,
}

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        if !rest.is_empty() {
            tail[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(tail));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // The murmur3 finaliser.
        let mut hash = self.hash;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}
