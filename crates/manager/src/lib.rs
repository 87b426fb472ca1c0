//! Shoal's manager: the components every manager runs on top of the replicated store.
//!
//! The Control API (`controlapi`), the CA server (`ca_server`), the dispatcher's sessions,
//! heartbeats, assignments and task statuses (`dispatcher`), the log broker (`logbroker`),
//! the leader's orchestrator (`orchestrator`) with its scheduler (`scheduler`), and the
//! authorizer every network call goes through (`authorize`), the allocator of ports and
//! addresses (`allocator`). Control API calls reaching a follower are forwarded to the leader
//! in one hop (`forward`), so any manager answers any call.
//! The Watch API (`watchapi`) streams committed changes from any manager's own store.
//! The leader's root rotation reconciler (`root_rotation`) carries a root CA rotation to its
//! end.

pub mod allocator;
pub mod authorize;
pub mod ca_server;
pub mod cluster;
pub mod controlapi;
pub mod dispatcher;
pub mod forward;
pub mod logbroker;
pub mod orchestrator;
pub mod root_rotation;
pub mod scheduler;
mod status;
pub mod watchapi;

pub use status::store_status;
