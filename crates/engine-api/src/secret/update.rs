//! `POST /secrets/{id|name}/update?version=N` with a `SecretSpec`: changes the labels.
//!
//! Only the labels may change (SwarmKit's rule): a different name, `Driver` or `Templating`,
//! or data other than the secret's own, is refused with moby's 400 "only updates to Labels
//! are allowed". `Data`, `Driver` and `Templating` may be left out (clients never see the
//! data). The name and the other fields are checked here against the secret as it is; the
//! data, which only the Control API sees, is compared there. A stale version is moby's 500
//! "update out of sequence".

use shoal_api::v1::{GetSecretRequest, UpdateSecretRequest};
use tonic::Code;

use super::SecretSpec;
use super::file_object::{labels_to_proto, only_labels};
use crate::backend::Backend;
use crate::lenient;
use crate::request::{Reply, Request, Result};

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let version = request.query.version("secret")?;
    let spec: SecretSpec = lenient::require(&request.body)?;
    let reference = request.segment(1).to_string();
    let current = backend
        .call(async |mut c| {
            c.get_secret(GetSecretRequest {
                secret_id: reference,
            })
            .await
        })
        .await?
        .secret
        .unwrap_or_default();
    let id = current.meta.clone().unwrap_or_default().id;
    let shown = SecretSpec::from_proto(&current.spec.clone().unwrap_or_default());
    if !only_labels_change(&shown, &spec) {
        return Err(only_labels());
    }
    let mut proto = current.spec.unwrap_or_default();
    proto
        .annotations
        .get_or_insert_with(Default::default)
        .labels = labels_to_proto(&spec.labels);
    // The Control API compares the data, if given, with the secret's own.
    proto.data = spec.data.map(|d| d.0).unwrap_or_default();
    match backend
        .control()
        .update_secret(UpdateSecretRequest {
            secret_id: id,
            secret_version: version,
            spec: Some(proto),
        })
        .await
    {
        Ok(_) => Ok(Reply::Empty(200)),
        Err(status)
            if status.code() == Code::InvalidArgument
                && status.message().contains("cannot be changed") =>
        {
            Err(only_labels())
        }
        Err(status) => Err(backend.control_error(status).await),
    }
}

/// Whether `wanted` differs from the secret as shown (`current`, without data) in its labels
/// only: the same name, and `Driver`/`Templating` either left out or the same.
pub fn only_labels_change(current: &SecretSpec, wanted: &SecretSpec) -> bool {
    wanted.name == current.name
        && (wanted.driver.is_none() || wanted.driver == current.driver)
        && (wanted.templating.is_none() || wanted.templating == current.templating)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::file_object::Driver;

    #[test]
    fn only_the_labels_may_change() {
        let current = SecretSpec {
            name: "s1".into(),
            ..Default::default()
        };
        let mut wanted = current.clone();
        wanted.labels.insert("a".into(), "b".into());
        assert!(only_labels_change(&current, &wanted));
        let mut renamed = wanted.clone();
        renamed.name = "s2".into();
        assert!(!only_labels_change(&current, &renamed));
        let mut templated = wanted.clone();
        templated.templating = Some(Driver {
            name: "golang".into(),
            ..Default::default()
        });
        assert!(!only_labels_change(&current, &templated));
    }
}
