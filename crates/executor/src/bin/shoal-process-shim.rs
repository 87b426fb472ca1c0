//! The process shim as a binary of its own, for this crate's tests (in production the shim is
//! `shoal process-shim`). See `shoal_executor::process::shim`.

fn main() -> std::process::ExitCode {
    shoal_executor::process::shim::main(std::env::args_os().skip(1).collect())
}
