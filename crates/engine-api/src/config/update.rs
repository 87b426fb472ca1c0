//! `POST /configs/{id|name}/update?version=N` with a `ConfigSpec`: changes the labels.
//!
//! Only the labels may change (SwarmKit's rule): a different name, data or `Templating` is
//! refused with moby's 400 "only updates to Labels are allowed"; `Data` and `Templating` may
//! be left out. The Control API replaces a config's whole spec, so the spec sent is the
//! config as it is with the new labels. A stale version is moby's 500 "update out of
//! sequence".

use shoal_api::v1::{GetConfigRequest, UpdateConfigRequest};

use super::ConfigSpec;
use crate::backend::Backend;
use crate::lenient;
use crate::request::{Reply, Request, Result};
use crate::secret::file_object::{labels_to_proto, only_labels};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let version = request.query.version("config")?;
    let spec: ConfigSpec = lenient::require(&request.body)?;
    let reference = request.segment(1).to_string();
    let current = backend
        .call(async |mut c| {
            c.get_config(GetConfigRequest {
                config_id: reference,
            })
            .await
        })
        .await?
        .config
        .unwrap_or_default();
    let id = current.meta.clone().unwrap_or_default().id;
    let mut proto = current.spec.unwrap_or_default();
    if !only_labels_change(&ConfigSpec::from_proto(&proto), &spec) {
        return Err(only_labels());
    }
    proto
        .annotations
        .get_or_insert_with(Default::default)
        .labels = labels_to_proto(&spec.labels);
    backend
        .call(async |mut c| {
            c.update_config(UpdateConfigRequest {
                config_id: id,
                config_version: version,
                spec: Some(proto),
            })
            .await
        })
        .await?;
    Ok(Reply::Empty(200))
}

/// Whether `wanted` differs from `current` in its labels only (`Data` and `Templating` may
/// be left out).
pub fn only_labels_change(current: &ConfigSpec, wanted: &ConfigSpec) -> bool {
    wanted.name == current.name
        && (wanted.data.is_none() || wanted.data == current.data)
        && (wanted.templating.is_none() || wanted.templating == current.templating)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::file_object::Data;

    #[test]
    fn only_the_labels_may_change() {
        let current = ConfigSpec {
            name: "c1".into(),
            data: Some(Data(b"x".to_vec())),
            ..Default::default()
        };
        let mut wanted = current.clone();
        wanted.labels.insert("a".into(), "b".into());
        assert!(only_labels_change(&current, &wanted));
        wanted.data = None;
        assert!(only_labels_change(&current, &wanted), "data left out");
        wanted.data = Some(Data(b"y".to_vec()));
        assert!(!only_labels_change(&current, &wanted));
        let mut renamed = current.clone();
        renamed.name = "c2".into();
        assert!(!only_labels_change(&current, &renamed));
    }
}
