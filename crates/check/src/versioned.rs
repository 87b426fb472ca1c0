//! A model of Shoal's versioned objects, as clients of the Control API see them.
//!
//! Objects are named; each holds a value and the version of the write that produced it.
//! Versions come from one store-wide counter that every committed write raises, so a client
//! cannot predict the version its write will get, only that it is larger than any version
//! the object had before. Updates and removals name the version they read and fail with
//! "out of sequence" if the object has changed since.
//!
//! The model keeps, per object, what the clients can know: the value, and either the exact
//! version or, after a write whose outcome is unknown, only a lower bound ("some version
//! above 12"). The first read that sees the object pins the version down. This keeps the
//! model deterministic, which the checker requires, instead of branching over every
//! possible version.
//!
//! Limits: each object is checked separately, so the model cannot see that versions of
//! different objects come from one counter (that a write which returned before another was
//! called got the smaller version). And after an out-of-sequence failure against a version
//! known only by its lower bound, it does not remember that the version differs from the
//! one that failed; it may then accept a history it could have rejected, never the reverse.

use crate::model::Model;

/// The value an object holds. Tests write a different value each time, so that a read
/// shows which write it saw.
pub type Value = u64;

/// A version assigned by the store's counter.
pub type Version = u64;

/// A request to the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Returns `Created` or `AlreadyExists`.
    Create { name: String, value: Value },
    /// Returns `Updated`, `OutOfSequence` or `NotFound`.
    Update {
        name: String,
        read_version: Version,
        value: Value,
    },
    /// Returns `Found` or `NotFound`.
    Read { name: String },
    /// Returns `Removed`, `OutOfSequence` or `NotFound`.
    Remove { name: String, read_version: Version },
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
}

/// What the store answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Created { version: Version },
    AlreadyExists,
    Updated { version: Version },
    OutOfSequence,
    NotFound,
    Found { value: Value, version: Version },
    Removed,
}

/// What the clients can know about one object's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KnownVersion {
    Exact(Version),
    /// Written by an operation whose outcome is unknown: larger than this, nothing more.
    Above(Version),
}

impl KnownVersion {
    /// Whether the object's version may be `version`.
    fn may_be(self, version: Version) -> bool {
        match self {
            KnownVersion::Exact(exact) => exact == version,
            KnownVersion::Above(bound) => version > bound,
        }
    }

    /// Whether the object's version may differ from `version`.
    fn may_differ_from(self, version: Version) -> bool {
        match self {
            KnownVersion::Exact(exact) => exact != version,
            KnownVersion::Above(_) => true,
        }
    }
}

/// One object, as far as the clients can know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectState {
    /// The object does not exist; a new one will get a version above `floor`.
    Absent {
        floor: Version,
    },
    Present {
        value: Value,
        version: KnownVersion,
    },
}

/// The model: one partition per object name.
#[derive(Clone, Copy, Debug, Default)]
pub struct VersionedObjects;

impl Model for VersionedObjects {
    type State = ObjectState;
    type Input = Input;
    type Output = Output;
    type Partition = String;

    fn init(&self) -> ObjectState {
        ObjectState::Absent { floor: 0 }
    }

    fn step(
        &self,
        state: &ObjectState,
        input: &Input,
        output: Option<&Output>,
    ) -> Option<ObjectState> {
        use ObjectState::{Absent, Present};
        let state = *state;
        match (input, state) {
            (Input::Create { value, .. }, Absent { floor }) => match output {
                Some(&Output::Created { version }) if version > floor => Some(Present {
                    value: *value,
                    version: KnownVersion::Exact(version),
                }),
                None => Some(Present {
                    value: *value,
                    version: KnownVersion::Above(floor),
                }),
                _ => None,
            },
            (Input::Create { .. }, Present { .. }) => match output {
                Some(Output::AlreadyExists) => Some(state),
                // An unknown create of an existing object could only have failed.
                _ => None,
            },

            (
                Input::Update {
                    read_version,
                    value,
                    ..
                },
                Present { version, .. },
            ) => match output {
                Some(&Output::Updated { version: new }) => {
                    (version.may_be(*read_version) && new > *read_version).then_some(Present {
                        value: *value,
                        version: KnownVersion::Exact(new),
                    })
                }
                Some(Output::OutOfSequence) => {
                    version.may_differ_from(*read_version).then_some(state)
                }
                None => version.may_be(*read_version).then_some(Present {
                    value: *value,
                    version: KnownVersion::Above(*read_version),
                }),
                _ => None,
            },
            (Input::Update { .. } | Input::Remove { .. }, Absent { .. }) => match output {
                Some(Output::NotFound) => Some(state),
                _ => None,
            },

            (Input::Read { .. }, Absent { .. }) => match output {
                Some(Output::NotFound) | None => Some(state),
                _ => None,
            },
            (Input::Read { .. }, Present { value, version }) => match output {
                Some(&Output::Found {
                    value: seen,
                    version: seen_version,
                }) => (seen == value && version.may_be(seen_version)).then_some(Present {
                    value,
                    version: KnownVersion::Exact(seen_version),
                }),
                None => Some(state),
                _ => None,
            },

            (Input::Remove { read_version, .. }, Present { version, .. }) => match output {
                Some(Output::Removed) | None => version.may_be(*read_version).then_some(Absent {
                    floor: *read_version,
                }),
                Some(Output::OutOfSequence) => {
                    version.may_differ_from(*read_version).then_some(state)
                }
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

    fn step(state: ObjectState, input: Input, output: Option<Output>) -> Option<ObjectState> {
        VersionedObjects.step(&state, &input, output.as_ref())
    }

    fn present(value: Value, version: Version) -> ObjectState {
        ObjectState::Present {
            value,
            version: KnownVersion::Exact(version),
        }
    }

    fn update(read_version: Version, value: Value) -> Input {
        Input::Update {
            name: "a".into(),
            read_version,
            value,
        }
    }

    fn read() -> Input {
        Input::Read { name: "a".into() }
    }

    #[test]
    fn writes_must_raise_the_version() {
        let absent = ObjectState::Absent { floor: 5 };
        let create = Input::Create {
            name: "a".into(),
            value: 1,
        };
        let created = |version| Some(Output::Created { version });
        assert_eq!(step(absent, create.clone(), created(5)), None);
        assert_eq!(step(absent, create, created(6)), Some(present(1, 6)));
        let updated = |version| Some(Output::Updated { version });
        assert_eq!(step(present(1, 6), update(6, 2), updated(6)), None);
        assert_eq!(
            step(present(1, 6), update(6, 2), updated(9)),
            Some(present(2, 9))
        );
        assert_eq!(step(present(1, 6), update(5, 2), updated(9)), None);
    }

    #[test]
    fn an_unknown_write_leaves_a_lower_bound_that_a_read_pins_down() {
        let after = step(present(1, 6), update(6, 2), None).unwrap();
        assert_eq!(
            after,
            ObjectState::Present {
                value: 2,
                version: KnownVersion::Above(6)
            }
        );
        let found = |version| Some(Output::Found { value: 2, version });
        assert_eq!(step(after, read(), found(6)), None);
        assert_eq!(step(after, read(), found(11)), Some(present(2, 11)));
        // The unknown write cannot have happened from a version it did not read.
        assert_eq!(step(present(1, 7), update(6, 2), None), None);
    }

    #[test]
    fn a_read_must_match_value_and_version() {
        let found = |value, version| Some(Output::Found { value, version });
        assert_eq!(
            step(present(1, 6), read(), found(1, 6)),
            Some(present(1, 6))
        );
        assert_eq!(step(present(1, 6), read(), found(2, 6)), None);
        assert_eq!(step(present(1, 6), read(), found(1, 7)), None);
        assert_eq!(step(present(1, 6), read(), Some(Output::NotFound)), None);
    }

    #[test]
    fn removal_keeps_the_floor() {
        let remove = Input::Remove {
            name: "a".into(),
            read_version: 6,
        };
        let absent = step(present(1, 6), remove.clone(), Some(Output::Removed)).unwrap();
        assert_eq!(absent, ObjectState::Absent { floor: 6 });
        assert_eq!(step(absent, remove, Some(Output::NotFound)), Some(absent));
        let create = Input::Create {
            name: "a".into(),
            value: 3,
        };
        assert_eq!(
            step(absent, create, Some(Output::Created { version: 4 })),
            None
        );
    }
}
