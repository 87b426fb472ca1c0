//! Shoal's API: the objects kept in the cluster store, their specs, the gRPC services between
//! clients, managers and agents, plus the rules every object obeys.
//!
//! - [`v1`] is generated from `proto/shoal/v1/*.proto` at build time. Names and numbers follow
//!   SwarmKit's `docker.swarmkit.v1`, so its design documents map onto ours; the differences are
//!   deliberate: `Meta` carries the object's ID; tasks have a `process` runtime beside `container`;
//!   the store's transactions carry the versions they read (see `store.proto`).
//! - [`id`] makes the 25-character base36 identifiers every object carries.
//! - [`defaults`] is the table of default values, one named constant each.
//! - [`validation`] checks specs before anything is written, with errors that name the field.
//! - [`task_state`] knows the order of task states.
//! - [`clock`] is time as an input, so that tests can drive it.
//! - [`labels`] gives label lists (sorted `Vec<Label>`) a map's operations.
//! - [`shared`] makes `TaskSpec` a shared, copy-on-write handle: tasks of a service share one.

pub mod clock;
pub mod codec;
pub mod defaults;
pub mod id;
pub mod labels;
pub mod naming;
pub mod shared;
pub mod task_state;
pub mod unlock_key;
pub mod validation;

/// Generated protobuf messages and gRPC services of package `shoal.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("shoal.v1");

    pub use crate::shared::{TaskSpec, TaskSpecFields, task_spec};
}
