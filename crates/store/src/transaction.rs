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
