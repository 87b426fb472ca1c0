//! `shoal swarm unlock-key [--rotate] [-q]`: shows the cluster's unlock key (autolock), or
//! rotates it. After a rotation every running manager seals its keys with the new key at
//! once; a manager that was down keeps the old seal until it is unlocked with the old key, so
//! the command says to keep the previous key until every manager has been up.

use std::path::PathBuf;

use shoal_api::v1::{GetUnlockKeyRequest, KeyRotation, UpdateClusterRequest};

use crate::commands::client::{self, Client};
use crate::commands::output;

/// Arguments of `shoal swarm unlock-key`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Replace the unlock key with a new one
    #[arg(long)]
    pub rotate: bool,
    /// Print the key only
    #[arg(short, long)]
    pub quiet: bool,
}

/// The cluster's unlock key, or why there is none.
pub async fn current_key(c: &mut Client) -> Result<String, String> {
    let key = c
        .control()
        .get_unlock_key(GetUnlockKeyRequest {})
        .await
        .map_err(|s| c.error("GetUnlockKey", &s))?
        .into_inner()
        .unlock_key;
    if key.is_empty() {
        return Err(
            "no unlock key is set: autolock is off (turn it on with `shoal swarm update \
             --autolock=true`)"
                .to_string(),
        );
    }
    Ok(shoal_api::unlock_key::format(&key))
}

/// What `swarm init --autolock`, `swarm update --autolock=true` and this command print.
pub fn instructions(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run `shoal swarm unlock` and give it \
         this key:\n\n    {key}\n\nKeep it in a password manager: without it a restarted \
         manager cannot read its state.\n"
    )
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let key = client::run(socket, async |c| {
        if args.rotate {
            // Refused clearly when autolock is off: there is no key to rotate.
            current_key(c).await?;
            let cluster = c.cluster().await?;
            let meta = cluster.meta.unwrap_or_default();
            c.control()
                .update_cluster(UpdateClusterRequest {
                    cluster_id: meta.id,
                    cluster_version: meta.version,
                    spec: cluster.spec,
                    rotation: Some(KeyRotation {
                        manager_unlock_key: true,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|s| c.error("UpdateCluster", &s))?;
        }
        current_key(c).await
    })?;
    if args.quiet {
        return output::print(&format!("{key}\n"));
    }
    let mut text = String::new();
    if args.rotate {
        text.push_str(
            "Successfully rotated the manager unlock key. Keep the previous key until every \
             manager has run since: one that was down still needs it to unlock.\n\n",
        );
    }
    text.push_str(&instructions(&key));
    output::print(&text)
}
