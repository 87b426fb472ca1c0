//! One module per command: parse its arguments, apply it, render the result.
//!
//! Client commands share `client` (the socket, the connection, status messages), `output`
//! (tables, JSON), `duration` (durations as users write them) and `resolve` (objects named by
//! name, ID or ID prefix).

pub mod client;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod file_object;
pub mod network;
pub mod node;
pub mod output;
pub mod resolve;
pub mod secret;
pub mod service;
pub mod swarm;
pub mod task;
pub mod version;
