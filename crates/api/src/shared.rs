//! `TaskSpec`, shared between the tasks of a service.
//!
//! Every task carries the spec it runs, and the tasks of one service version all carry the
//! same one. SwarmKit copies the spec into every task, which is most of its ~4.5 KB per task.
//! Here `TaskSpec` is a handle to a reference-counted [`TaskSpecFields`]: creating N tasks from
//! a service clones a pointer N times, and the store (see `shoal-store`) re-shares the spec of
//! tasks that arrive encoded (from Raft or a snapshot) with their service's spec.
//!
//! On the wire nothing changes: `TaskSpec` encodes exactly as the `TaskSpec` message of
//! `specs.proto` (a test checks that the fields below match the proto). Reading goes through
//! `Deref`; writing through `DerefMut`, which copies the fields first if they are shared
//! (copy-on-write), so code reads like it would with a plain struct.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};

use crate::v1::{
    LogDriver, NetworkAttachmentConfig, Placement, ResourceRequirements, RestartPolicy,
};

/// The fields of the `TaskSpec` message of `specs.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskSpecFields {
    #[prost(oneof = "task_spec::Runtime", tags = "1, 2")]
    pub runtime: Option<task_spec::Runtime>,
    #[prost(message, optional, boxed, tag = "3")]
    pub resources: Option<Box<ResourceRequirements>>,
    #[prost(message, optional, tag = "4")]
    pub restart: Option<RestartPolicy>,
    #[prost(message, optional, boxed, tag = "5")]
    pub placement: Option<Box<Placement>>,
    #[prost(message, optional, tag = "6")]
    pub log_driver: Option<LogDriver>,
    #[prost(message, repeated, tag = "7")]
    pub networks: Vec<NetworkAttachmentConfig>,
    /// Changing this value redeploys the tasks even when nothing else changed.
    #[prost(uint64, tag = "8")]
    pub force_update: u64,
}

/// Nested types of `TaskSpec`.
pub mod task_spec {
    /// How the task runs: as a container, or as a host process.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Runtime {
        #[prost(message, tag = "1")]
        Container(Box<crate::v1::ContainerSpec>),
        #[prost(message, tag = "2")]
        Process(Box<crate::v1::ProcessSpec>),
    }
}

/// A task spec, shared: cloning it is cheap, changing it copies it first if it is shared.
#[derive(Clone, Default)]
pub struct TaskSpec(Arc<TaskSpecFields>);

impl TaskSpec {
    /// Whether `a` and `b` share the same fields (not merely equal ones).
    pub fn ptr_eq(a: &TaskSpec, b: &TaskSpec) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl From<TaskSpecFields> for TaskSpec {
    fn from(fields: TaskSpecFields) -> Self {
        TaskSpec(Arc::new(fields))
    }
}

impl Deref for TaskSpec {
    type Target = TaskSpecFields;

    fn deref(&self) -> &TaskSpecFields {
        &self.0
    }
}

impl DerefMut for TaskSpec {
    fn deref_mut(&mut self) -> &mut TaskSpecFields {
        Arc::make_mut(&mut self.0)
    }
}

impl PartialEq for TaskSpec {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl prost::Message for TaskSpec {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.0.encode_raw(buf)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        Arc::make_mut(&mut self.0).merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        *self = TaskSpec::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::{ContainerSpec, Task};

    fn spec() -> TaskSpec {
        TaskSpecFields {
            runtime: Some(task_spec::Runtime::Container(Box::new(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            }))),
            force_update: 3,
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn clones_share_and_writes_copy() {
        let a = spec();
        let mut b = a.clone();
        assert!(TaskSpec::ptr_eq(&a, &b));
        b.force_update = 4;
        assert!(!TaskSpec::ptr_eq(&a, &b));
        assert_eq!(a.force_update, 3);
        assert_ne!(a, b);
    }

    #[test]
    fn encodes_as_a_plain_message() {
        let task = Task {
            spec: Some(spec()),
            slot: 7,
            ..Default::default()
        };
        let bytes = task.encode_to_vec();
        let decoded = Task::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, task);
        assert_eq!(decoded.encode_to_vec(), bytes);
    }

    /// The hand-written fields must match `TaskSpec` in `specs.proto`, name for name and
    /// number for number.
    #[test]
    fn fields_match_the_proto() {
        let descriptors =
            protox::compile(["shoal/v1/specs.proto"], ["proto"]).expect("compile protos");
        let file = descriptors
            .file
            .iter()
            .find(|f| f.name() == "shoal/v1/specs.proto")
            .unwrap();
        let message = file
            .message_type
            .iter()
            .find(|m| m.name() == "TaskSpec")
            .unwrap();
        let mut fields: Vec<(String, i32)> = message
            .field
            .iter()
            .map(|f| (f.name().to_string(), f.number()))
            .collect();
        fields.sort_by_key(|f| f.1);
        let expected = [
            ("container", 1),
            ("process", 2),
            ("resources", 3),
            ("restart", 4),
            ("placement", 5),
            ("log_driver", 6),
            ("networks", 7),
            ("force_update", 8),
        ];
        let expected: Vec<(String, i32)> =
            expected.iter().map(|(n, i)| (n.to_string(), *i)).collect();
        assert_eq!(fields, expected, "update shared.rs to match specs.proto");
        // And every field round-trips through the hand-written struct.
        let full = TaskSpecFields {
            runtime: Some(task_spec::Runtime::Process(Box::default())),
            resources: Some(Box::default()),
            restart: Some(Default::default()),
            placement: Some(Box::default()),
            log_driver: Some(Default::default()),
            networks: vec![Default::default()],
            force_update: 1,
        };
        let bytes = full.encode_to_vec();
        assert_eq!(TaskSpecFields::decode(bytes.as_slice()).unwrap(), full);
    }
}
