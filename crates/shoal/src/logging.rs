//! Logs go to stderr through `tracing`, filtered by `--log-level` (or `RUST_LOG`).

use tracing_subscriber::EnvFilter;

pub fn init(level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| {
        format!("invalid --log-level {level:?}: {e}; use error, warn, info, debug or trace")
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    Ok(())
}
