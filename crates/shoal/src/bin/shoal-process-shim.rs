//! `shoal-process-shim`: the supervisor each process task runs under (see
//! `shoal_executor::process::shim`). The daemon runs it from beside its own binary; it is the
//! same code as `shoal process-shim`, without the rest of `shoal` to load, which makes a task
//! start about ten times faster (docs/BENCHMARKS.md).

fn main() -> std::process::ExitCode {
    shoal_executor::process::shim::main(std::env::args_os().skip(1).collect())
}
