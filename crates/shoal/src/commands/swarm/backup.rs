//! `shoal swarm backup FILE`: a consistent copy of the whole cluster state, taken from the
//! running manager this node is (nothing stops), written to FILE. What the file holds and how
//! it is sealed: see `shoal_node::backup`. The file is written owner-only (0600) to a
//! temporary name, synced and renamed, so an interrupted backup never leaves a partial FILE.
//! Restore it on a new machine with `shoal daemon --restore FILE --force-new-cluster`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use shoal_api::v1::BackupRequest;

use crate::commands::client;
use crate::commands::output;

/// Arguments of `shoal swarm backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the backup
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Received bytes between progress lines.
const PROGRESS_EVERY: usize = 64 << 20;

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let file = args.file;
    let tmp = {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        file.with_file_name(name)
    };
    let bytes = client::run(socket, async |c| {
        let mut stream = c
            .swarm()
            .backup(BackupRequest {})
            .await
            .map_err(|s| c.error("Swarm.Backup", &s))?
            .into_inner();
        let mut out = Vec::new();
        let mut reported = 0;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| c.error("Swarm.Backup", &s))?
        {
            out.extend_from_slice(&chunk.data);
            if out.len() - reported >= PROGRESS_EVERY {
                reported = out.len();
                eprintln!("received {} MiB…", out.len() >> 20);
            }
        }
        Ok(out)
    })?;
    let backup = shoal_node::backup::Backup::parse(bytes.clone(), "the manager's answer")
        .map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing the backup to {}: {e}", file.display())
    })?;
    let header = &backup.header;
    let seal = if header.sealed {
        "It is sealed with the cluster's unlock key: restoring it needs that key (`shoal swarm \
         unlock-key` shows it)."
    } else {
        "It is NOT encrypted (autolock is off): it holds the cluster CA's key and every secret \
         in clear. Keep it as safe as the managers themselves, or turn autolock on (`shoal \
         swarm update --autolock=true`) so that backups are sealed."
    };
    output::print(&format!(
        "Backed up cluster {} at store version {} ({}) to {} ({} bytes).\n{seal}\nRestore \
         it with `shoal daemon --restore {} --force-new-cluster` on a machine with an empty \
         state directory.\n",
        header.cluster_id,
        header.store_version,
        header.contents(),
        file.display(),
        bytes.len(),
        file.display()
    ))
}
