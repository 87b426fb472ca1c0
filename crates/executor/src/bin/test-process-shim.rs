//! The process shim as a binary of its own, for this crate's tests (in production it is the
//! `shoal` package's `shoal-process-shim`, or `shoal process-shim`). See
//! `shoal_executor::process::shim`.

fn main() -> std::process::ExitCode {
    shoal_executor::process::shim::main(std::env::args_os().skip(1).collect())
}
