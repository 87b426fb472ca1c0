//! `shoal swarm update [--cert-expiry DUR] [--task-history-limit N] [--dispatcher-heartbeat DUR]`:
//! changes the given settings of the cluster spec, against the version read.

use std::path::PathBuf;
use std::time::Duration;

use shoal_api::v1::{ClusterSpec, UpdateClusterRequest};

use crate::commands::client;
use crate::commands::duration;
use crate::commands::output;

/// Arguments of `shoal swarm update`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long node certificates are valid (at least 1h), e.g. 2160h
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub cert_expiry: Option<Duration>,
    /// Old tasks kept per slot (a negative number keeps none)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub task_history_limit: Option<i64>,
    /// How often nodes report to the dispatcher, e.g. 5s
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub dispatcher_heartbeat: Option<Duration>,
    /// Lock the managers with a key (true) or stop locking them (false); turning it on
    /// prints the key
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub autolock: Option<bool>,
}

impl Args {
    /// Sets the fields given on the command line; leaves the others as they are.
    pub fn apply(&self, spec: &mut ClusterSpec) {
        if let Some(d) = self.cert_expiry {
            spec.ca_config
                .get_or_insert_with(Default::default)
                .node_cert_expiry = Some(duration::to_proto(d));
        }
        if let Some(n) = self.task_history_limit {
            spec.orchestration
                .get_or_insert_with(Default::default)
                .task_history_retention_limit = n;
        }
        if let Some(d) = self.dispatcher_heartbeat {
            spec.dispatcher
                .get_or_insert_with(Default::default)
                .heartbeat_period = Some(duration::to_proto(d));
        }
        if let Some(on) = self.autolock {
            spec.encryption_config
                .get_or_insert_with(Default::default)
                .auto_lock_managers = on;
        }
    }
}

pub fn run(socket: Option<PathBuf>, args: Args) -> Result<(), String> {
    let locked_now = client::run(socket, async |c| {
        let cluster = c.cluster().await?;
        let meta = cluster.meta.unwrap_or_default();
        let mut spec = cluster.spec.unwrap_or_default();
        let was_locked = spec
            .encryption_config
            .as_ref()
            .is_some_and(|e| e.auto_lock_managers);
        args.apply(&mut spec);
        // The manager validates the spec (minimums included) and refuses a stale version.
        c.control()
            .update_cluster(UpdateClusterRequest {
                cluster_id: meta.id,
                cluster_version: meta.version,
                spec: Some(spec),
                rotation: None,
            })
            .await
            .map_err(|s| c.error("UpdateCluster", &s))?;
        // Turned on: the key is shown now, as by `swarm init --autolock`.
        if !was_locked && args.autolock == Some(true) {
            return Ok(Some(super::unlock_key::current_key(c).await?));
        }
        Ok(None)
    })?;
    match locked_now {
        Some(key) => output::print(&format!(
            "Swarm updated.\n\n{}",
            super::unlock_key::instructions(&key)
        )),
        None => output::print("Swarm updated.\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_settings_change() {
        let original = crate::commands::swarm::tests::cluster().spec.unwrap();
        let mut spec = original.clone();
        Args {
            cert_expiry: Some(Duration::from_secs(7200)),
            task_history_limit: None,
            dispatcher_heartbeat: None,
            autolock: None,
        }
        .apply(&mut spec);
        let expiry = spec.ca_config.as_ref().unwrap().node_cert_expiry.unwrap();
        assert_eq!((expiry.seconds, expiry.nanos), (7200, 0));
        spec.ca_config = original.ca_config.clone();
        assert_eq!(spec, original);

        let mut spec = ClusterSpec::default();
        Args {
            cert_expiry: None,
            task_history_limit: Some(-1),
            dispatcher_heartbeat: Some(Duration::from_millis(1500)),
            autolock: Some(true),
        }
        .apply(&mut spec);
        assert_eq!(spec.orchestration.unwrap().task_history_retention_limit, -1);
        let hb = spec.dispatcher.unwrap().heartbeat_period.unwrap();
        assert_eq!((hb.seconds, hb.nanos), (1, 500_000_000));
        assert!(spec.ca_config.is_none());
        assert!(spec.encryption_config.unwrap().auto_lock_managers);
    }
}
