//! A transaction as the state machine applies it, and as it travels through Raft.
//!
//! A [`ChangeSet`] holds the changes of one transaction as shared in-memory objects; applying
//! it locally needs no copy. [`ChangeSet::to_proto`] and [`ChangeSet::from_proto`] convert it
//! to and from the `Transaction` message that a Raft log entry carries.

use shoal_api::v1::{ObjectVersion, StoreAction, Transaction, store_action};

use crate::error::{Result, StoreError};
use crate::object::Object;
use crate::watch::Action;

/// One change: create, update or remove an object. For updates and removals the object's
/// `meta.version` is the version that was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub action: Action,
    pub object: Object,
}

/// The changes of one transaction and the versions it relied on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
    pub reads: Vec<ObjectVersion>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.reads.is_empty()
    }

    pub fn to_proto(&self) -> Transaction {
        Transaction {
            actions: self
                .changes
                .iter()
                .map(|c| StoreAction {
                    kind: match c.action {
                        Action::Create => store_action::Kind::Create,
                        Action::Update => store_action::Kind::Update,
                        Action::Remove => store_action::Kind::Remove,
                    } as i32,
                    target: Some(c.object.to_target()),
                })
                .collect(),
            reads: self.reads.clone(),
        }
    }

    /// Encodes as a `Transaction` message, straight from the shared objects (no copy):
    /// the same bytes as `self.to_proto().encode_to_vec()`.
    pub fn encode(&self) -> Vec<u8> {
        use prost::encoding::{
            WireType, encode_key, encode_varint, encoded_len_varint, int32, key_len, message,
        };
        fn kind(c: &Change) -> i32 {
            match c.action {
                Action::Create => store_action::Kind::Create as i32,
                Action::Update => store_action::Kind::Update as i32,
                Action::Remove => store_action::Kind::Remove as i32,
            }
        }
        fn object_len(o: &Object) -> usize {
            match o {
                Object::Node(v) => message::encoded_len(2, v.as_ref()),
                Object::Service(v) => message::encoded_len(3, v.as_ref()),
                Object::Task(v) => message::encoded_len(4, v.as_ref()),
                Object::Network(v) => message::encoded_len(5, v.as_ref()),
                Object::Cluster(v) => message::encoded_len(6, v.as_ref()),
                Object::Secret(v) => message::encoded_len(7, v.as_ref()),
                Object::Config(v) => message::encoded_len(8, v.as_ref()),
            }
        }
        fn encode_object(o: &Object, buf: &mut Vec<u8>) {
            match o {
                Object::Node(v) => message::encode(2, v.as_ref(), buf),
                Object::Service(v) => message::encode(3, v.as_ref(), buf),
                Object::Task(v) => message::encode(4, v.as_ref(), buf),
                Object::Network(v) => message::encode(5, v.as_ref(), buf),
                Object::Cluster(v) => message::encode(6, v.as_ref(), buf),
                Object::Secret(v) => message::encode(7, v.as_ref(), buf),
                Object::Config(v) => message::encode(8, v.as_ref(), buf),
            }
        }
        let action_len = |c: &Change| int32::encoded_len(1, &kind(c)) + object_len(&c.object);
        let total: usize = self
            .changes
            .iter()
            .map(|c| {
                let len = action_len(c);
                key_len(1) + encoded_len_varint(len as u64) + len
            })
            .sum::<usize>()
            + message::encoded_len_repeated(2, &self.reads);
        let mut buf = Vec::with_capacity(total);
        for c in &self.changes {
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(action_len(c) as u64, &mut buf);
            int32::encode(1, &kind(c), &mut buf);
            encode_object(&c.object, &mut buf);
        }
        for r in &self.reads {
            message::encode(2, r, &mut buf);
        }
        buf
    }

    /// Decodes a transaction; malformed actions are refused whole.
    pub fn from_proto(txn: Transaction) -> Result<ChangeSet> {
        let mut changes = Vec::with_capacity(txn.actions.len());
        for action in txn.actions {
            let kind = match store_action::Kind::try_from(action.kind) {
                Ok(store_action::Kind::Create) => Action::Create,
                Ok(store_action::Kind::Update) => Action::Update,
                Ok(store_action::Kind::Remove) => Action::Remove,
                _ => {
                    return Err(StoreError::InvalidTransaction(format!(
                        "unknown action kind {}",
                        action.kind
                    )));
                }
            };
            let target = action.target.ok_or_else(|| {
                StoreError::InvalidTransaction("an action without an object".into())
            })?;
            changes.push(Change {
                action: kind,
                object: Object::from_target(target),
            });
        }
        Ok(ChangeSet {
            changes,
            reads: txn.reads,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;
    use shoal_api::v1::{Config, Meta, ObjectVersion, Task};

    use super::*;

    #[test]
    fn direct_encoding_matches_the_message() {
        let changes = ChangeSet {
            changes: vec![
                Change {
                    action: Action::Create,
                    object: Object::Config(Arc::new(Config {
                        meta: Some(Meta {
                            id: "c".into(),
                            version: 3,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                },
                Change {
                    action: Action::Remove,
                    object: Object::Task(Arc::new(Task {
                        slot: 4,
                        ..Default::default()
                    })),
                },
            ],
            reads: vec![ObjectVersion {
                kind: 2,
                id: "s".into(),
                version: 9,
            }],
        };
        let bytes = changes.encode();
        assert_eq!(bytes, changes.to_proto().encode_to_vec());
        let back =
            ChangeSet::from_proto(shoal_api::v1::Transaction::decode(bytes.as_slice()).unwrap())
                .unwrap();
        assert_eq!(back, changes);
    }
}
