//! Generates histories of Shoal's versioned objects from a simulated store: each client
//! issues operations one after another, each takes effect at a random instant between its
//! call and its return, and the outputs come from executing the operations in that order.
//! Such histories are linearizable by construction.

use std::collections::HashMap;
use std::time::Duration;

use shoal_check::versioned::{Input, Output};
use shoal_check::{ClientId, History, Outcome};

/// SplitMix64: small, fast, and reproducible from a seed.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The shape of a generated history.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub clients: u32,
    pub operations_per_client: usize,
    pub objects: usize,
    /// Each operation takes effect up to this many nanoseconds after its call, and returns up
    /// to this many nanoseconds after taking effect.
    pub latency: u64,
    /// The share of operations whose outcome the client never learns.
    pub unknown_percent: u64,
}

/// A generated history and facts the tests need about it.
pub struct Generated {
    pub history: History<Input, Output>,
    /// Larger than every version the store gave out.
    pub unused_version: u64,
    /// Different from every value any operation wrote.
    pub unused_value: u64,
}

struct Timed {
    client: u32,
    call: u64,
    effect: u64,
    returned: u64,
}

pub fn generate(plan: &Plan) -> Generated {
    let mut random = Random::new(plan.seed);

    // Each client's operations, sequential, with random gaps and latencies.
    let mut timeline = Vec::new();
    for client in 0..plan.clients {
        let mut now = random.below(plan.latency + 1);
        for _ in 0..plan.operations_per_client {
            let call = now;
            let effect = call + random.below(plan.latency + 1);
            let returned = effect + random.below(plan.latency + 1);
            timeline.push(Timed {
                client,
                call,
                effect,
                returned,
            });
            now = returned + 1 + random.below(plan.latency / 4 + 1);
        }
    }
    // The order the store executes them in. Ties may go either way: both operations then
    // contain the instant, so they overlap.
    timeline.sort_by_key(|timed| (timed.effect, timed.client));

    let mut store = Store::default();
    // The version each client last saw of each object, for updates built on stale reads.
    let mut seen: HashMap<(u32, usize), u64> = HashMap::new();
    let mut next_value = 1;
    let mut operations = Vec::with_capacity(timeline.len());
    for timed in &timeline {
        let object = random.below(plan.objects as u64) as usize;
        let name = format!("object-{object}");
        let current = store.objects.get(&name).map(|&(_, version)| version);
        let read_version = match (current, seen.get(&(timed.client, object))) {
            (Some(current), Some(&seen)) if random.percent(30) => seen.min(current),
            (Some(current), _) => current,
            (None, Some(&seen)) => seen,
            (None, None) => 1 + random.below(3),
        };
        let value = next_value;
        let input = match random.below(100) {
            0..40 => Input::Read { name },
            40..70 => Input::Update {
                name,
                read_version,
                value,
            },
            70..85 => Input::Create { name, value },
            _ => Input::Remove { name, read_version },
        };
        if matches!(input, Input::Create { .. } | Input::Update { .. }) {
            next_value += 1;
        }

        let unknown = random.percent(plan.unknown_percent);
        // Half of the unknown operations never reached the store.
        let output = if unknown && random.percent(50) {
            None
        } else {
            Some(store.execute(&input))
        };
        match &output {
            Some(Output::Found { version, .. } | Output::Created { version })
            | Some(Output::Updated { version })
                if !unknown =>
            {
                seen.insert((timed.client, object), *version);
            }
            _ => {}
        }
        let call = Duration::from_nanos(timed.call);
        let outcome = match output {
            Some(output) if !unknown => Outcome::Returned {
                at: Duration::from_nanos(timed.returned),
                output,
            },
            _ => Outcome::Unknown,
        };
        operations.push((timed.call, timed.client, input, call, outcome));
    }

    // Recorded in call order, as a harness would.
    operations.sort_by_key(|&(call, client, ..)| (call, client));
    let history = operations
        .into_iter()
        .map(|(_, client, input, call, outcome)| shoal_check::Operation {
            client: ClientId(client),
            input,
            call,
            outcome,
        })
        .collect();
    Generated {
        history,
        unused_version: store.version + 1000,
        unused_value: u64::MAX,
    }
}

/// The store being simulated: one version counter for all objects.
#[derive(Default)]
struct Store {
    version: u64,
    objects: HashMap<String, (u64, u64)>,
}

impl Store {
    fn execute(&mut self, input: &Input) -> Output {
        match input {
            Input::Create { name, value } => {
                if self.objects.contains_key(name) {
                    return Output::AlreadyExists;
                }
                self.version += 1;
                self.objects.insert(name.clone(), (*value, self.version));
                Output::Created {
                    version: self.version,
                }
            }
            Input::Update {
                name,
                read_version,
                value,
            } => match self.objects.get_mut(name) {
                None => Output::NotFound,
                Some((_, version)) if version != read_version => Output::OutOfSequence,
                Some(object) => {
                    self.version += 1;
                    *object = (*value, self.version);
                    Output::Updated {
                        version: self.version,
                    }
                }
            },
            Input::Read { name } => match self.objects.get(name) {
                None => Output::NotFound,
                Some(&(value, version)) => Output::Found { value, version },
            },
            Input::Remove { name, read_version } => match self.objects.get(name) {
                None => Output::NotFound,
                Some((_, version)) if version != read_version => Output::OutOfSequence,
                Some(_) => {
                    self.version += 1;
                    self.objects.remove(name);
                    Output::Removed
                }
            },
        }
    }
}
