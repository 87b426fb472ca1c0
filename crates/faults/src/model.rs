//! The sequential model the workload's history is checked against: Shoal's configs, as the
//! Control API exposes them.
//!
//! `shoal-check`'s [`versioned`](shoal_check::versioned) model describes an object addressed
//! by name whose removal names the version it read. Shoal's configs differ in two ways that
//! matter to a checker, so this model extends it rather than reusing it as is:
//!
//! - `UpdateConfig` and `RemoveConfig` address an object by **ID**, and a name removed and
//!   created again gets a new ID. An update carrying the ID of an earlier incarnation answers
//!   NotFound even though an object of that name exists. The state therefore also remembers the
//!   incarnation's ID (interned as a small number), or that it is unknown (created by a write
//!   whose outcome is unknown, until a read pins it down).
//! - `RemoveConfig` is **unconditional**: it carries no version. A removal of the current
//!   incarnation always succeeds.
//!
//! Everything else follows `versioned`: versions come from one store-wide counter, so a write
//! gets a version above the one it replaced and the client cannot predict which; after a write
//! of unknown outcome the model keeps a lower bound ([`KnownVersion::Above`]) that the next
//! read pins. A definite failure (refused before anything was proposed) is left out of the
//! history altogether: it is indistinguishable from an operation never issued.

use shoal_check::Model;
pub use shoal_check::versioned::{KnownVersion, Value, Version};

/// An incarnation of a config, interned: the workload maps each config ID it sees to a number.
pub type Incarnation = u32;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Input {
    /// `Created` or `AlreadyExists`.
    Create { name: String, value: Value },
    /// `Updated`, `OutOfSequence` or `NotFound` (also when `id` is not the current
    /// incarnation's).
    Update {
        name: String,
        id: Incarnation,
        read_version: Version,
        value: Value,
    },
    /// `Found` or `NotFound`.
    Read { name: String },
    /// `Removed` or `NotFound`.
    Remove { name: String, id: Incarnation },
}

impl Input {
    pub fn name(&self) -> &str {
        match self {
            Input::Create { name, .. }
            | Input::Update { name, .. }
            | Input::Read { name }
            | Input::Remove { name, .. } => name,
        }
    }

    /// Whether the operation may change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Input::Read { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Output {
    Created {
        id: Incarnation,
        version: Version,
    },
    AlreadyExists,
    Updated {
        version: Version,
    },
    OutOfSequence,
    NotFound,
    Found {
        id: Incarnation,
        value: Value,
        version: Version,
    },
    Removed,
}

impl Output {
    /// Whether this answer acknowledges a change of the store.
    pub fn acknowledges_write(&self) -> bool {
        matches!(
            self,
            Output::Created { .. } | Output::Updated { .. } | Output::Removed
        )
    }
}

/// One config name, as far as the clients can know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No config of this name; a new one gets a version above `floor`.
    Absent { floor: Version },
    Present {
        /// `None` after a create of unknown outcome, until a read or a write pins it.
        id: Option<Incarnation>,
        value: Value,
        version: KnownVersion,
    },
}

fn may_be(known: KnownVersion, version: Version) -> bool {
    match known {
        KnownVersion::Exact(exact) => exact == version,
        KnownVersion::Above(bound) => version > bound,
    }
}

fn may_differ_from(known: KnownVersion, version: Version) -> bool {
    match known {
        KnownVersion::Exact(exact) => exact != version,
        KnownVersion::Above(_) => true,
    }
}

fn lower_bound(known: KnownVersion) -> Version {
    match known {
        KnownVersion::Exact(v) | KnownVersion::Above(v) => v,
    }
}

/// The model: one partition per config name.
#[derive(Clone, Copy, Debug, Default)]
pub struct Configs;

impl Model for Configs {
    type State = State;
    type Input = Input;
    type Output = Output;
    type Partition = String;

    fn init(&self) -> State {
        State::Absent { floor: 0 }
    }

    fn step(&self, state: &State, input: &Input, output: Option<&Output>) -> Option<State> {
        use State::{Absent, Present};
        let state = *state;
        match (input, state) {
            (Input::Create { value, .. }, Absent { floor }) => match output {
                Some(&Output::Created { id, version }) if version > floor => Some(Present {
                    id: Some(id),
                    value: *value,
                    version: KnownVersion::Exact(version),
                }),
                None => Some(Present {
                    id: None,
                    value: *value,
                    version: KnownVersion::Above(floor),
                }),
                _ => None,
            },
            (Input::Create { .. }, Present { .. }) => match output {
                Some(Output::AlreadyExists) => Some(state),
                _ => None,
            },

            (Input::Update { .. } | Input::Remove { .. }, Absent { .. }) => match output {
                Some(Output::NotFound) => Some(state),
                _ => None,
            },
            (
                Input::Update {
                    id,
                    read_version,
                    value,
                    ..
                },
                Present {
                    id: current,
                    version,
                    value: old,
                },
            ) => {
                if current.is_some_and(|c| c != *id) {
                    // Another incarnation: the ID names nothing.
                    return matches!(output, Some(Output::NotFound)).then_some(state);
                }
                match output {
                    Some(&Output::Updated { version: new }) => {
                        (may_be(version, *read_version) && new > *read_version).then_some(Present {
                            id: Some(*id),
                            value: *value,
                            version: KnownVersion::Exact(new),
                        })
                    }
                    Some(Output::OutOfSequence) => may_differ_from(version, *read_version)
                        .then_some(Present {
                            id: Some(*id),
                            value: old,
                            version,
                        }),
                    // Only possible if the unknown incarnation is another one.
                    Some(Output::NotFound) => current.is_none().then_some(state),
                    None => may_be(version, *read_version).then_some(Present {
                        id: Some(*id),
                        value: *value,
                        version: KnownVersion::Above(*read_version),
                    }),
                    _ => None,
                }
            }

            (
                Input::Remove { id, .. },
                Present {
                    id: current,
                    value,
                    version,
                },
            ) => {
                if current.is_some_and(|c| c != *id) {
                    return matches!(output, Some(Output::NotFound)).then_some(state);
                }
                match output {
                    Some(Output::Removed) | None => Some(Absent {
                        floor: lower_bound(version),
                    }),
                    // Shoal builds the removal from the version it reads itself; a write
                    // committed between that read and the removal's commit makes it fail
                    // "out of sequence", with no effect (see the crate's notes).
                    Some(Output::OutOfSequence) => Some(Present {
                        id: Some(*id),
                        value,
                        version,
                    }),
                    Some(Output::NotFound) => current.is_none().then_some(state),
                    _ => None,
                }
            }

            (Input::Read { .. }, Absent { .. }) => match output {
                Some(Output::NotFound) | None => Some(state),
                _ => None,
            },
            (Input::Read { .. }, Present { id, value, version }) => match output {
                Some(&Output::Found {
                    id: seen_id,
                    value: seen,
                    version: seen_version,
                }) => (seen == value
                    && may_be(version, seen_version)
                    && id.is_none_or(|id| id == seen_id))
                .then_some(Present {
                    id: Some(seen_id),
                    value,
                    version: KnownVersion::Exact(seen_version),
                }),
                None => Some(state),
                _ => None,
            },
        }
    }

    fn partition(&self, input: &Input) -> String {
        input.name().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_check::{Checker, ClientId, History};
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn create(value: Value) -> Input {
        Input::Create {
            name: "a".into(),
            value,
        }
    }

    fn update(id: Incarnation, read_version: Version, value: Value) -> Input {
        Input::Update {
            name: "a".into(),
            id,
            read_version,
            value,
        }
    }

    fn read() -> Input {
        Input::Read { name: "a".into() }
    }

    fn check(history: &History<Input, Output>) -> bool {
        Checker::new(Configs)
            .time_limit(Duration::from_secs(10))
            .check(history)
            .is_linearizable()
    }

    #[test]
    fn an_update_of_an_old_incarnation_is_not_found() {
        let present = State::Present {
            id: Some(2),
            value: 5,
            version: KnownVersion::Exact(9),
        };
        let stale = update(1, 4, 6);
        assert_eq!(
            Configs.step(&present, &stale, Some(&Output::NotFound)),
            Some(present)
        );
        assert_eq!(
            Configs.step(&present, &stale, Some(&Output::Updated { version: 10 })),
            None
        );
        assert_eq!(Configs.step(&present, &stale, None), None);
    }

    #[test]
    fn removal_is_unconditional_and_keeps_the_floor() {
        let present = State::Present {
            id: Some(1),
            value: 5,
            version: KnownVersion::Exact(9),
        };
        let remove = Input::Remove {
            name: "a".into(),
            id: 1,
        };
        assert_eq!(
            Configs.step(&present, &remove, Some(&Output::Removed)),
            Some(State::Absent { floor: 9 })
        );
        let absent = State::Absent { floor: 9 };
        assert_eq!(
            Configs.step(
                &absent,
                &create(1),
                Some(&Output::Created { id: 2, version: 8 })
            ),
            None
        );
    }

    #[test]
    fn an_unknown_create_is_pinned_by_a_read() {
        let mut h = History::new();
        h.unknown(ClientId(0), create(1), ms(0));
        h.returned(
            ClientId(1),
            read(),
            ms(5),
            ms(6),
            Output::Found {
                id: 7,
                value: 1,
                version: 3,
            },
        );
        h.returned(
            ClientId(1),
            update(7, 3, 2),
            ms(7),
            ms(8),
            Output::Updated { version: 4 },
        );
        assert!(check(&h));
        // A later read that sees the overwritten value is a violation.
        h.returned(
            ClientId(2),
            read(),
            ms(9),
            ms(10),
            Output::Found {
                id: 7,
                value: 1,
                version: 3,
            },
        );
        assert!(!check(&h));
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let mut h = History::new();
        h.returned(
            ClientId(0),
            create(1),
            ms(0),
            ms(1),
            Output::Created { id: 1, version: 2 },
        );
        h.returned(ClientId(1), read(), ms(2), ms(3), Output::NotFound);
        assert!(!check(&h));
    }
}
