//! One module per command: parse its arguments, apply it, render the result.

pub mod daemon;
pub mod version;
