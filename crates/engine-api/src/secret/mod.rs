//! The `secret` endpoints of the Engine API (`/secrets…`, API 1.25+), and the shapes of
//! secrets.
//!
//! A secret is `{ID, Version, CreatedAt, UpdatedAt, Spec{Name, Labels, Data?, Driver?,
//! Templating?}}`. The Control API keeps a secret's data and never gives it back, so `Data`
//! is only ever *read* here (on create), never shown: `GET /secrets/{id}` answers without it,
//! as moby does. Nothing in this module logs a spec.
//!
//! Endpoints: list (filters `id`, `name` prefixes, `names` exact, `label`), create (201
//! `{"ID"}`), inspect by ID, name or ID prefix, update (labels only, `?version=N`), remove
//! (204; refused while a service uses the secret).
//!
//! # Where it departs from moby
//!
//! - Secret drivers (plugins that hold the data elsewhere) do not exist in Shoal: a create
//!   with a `Driver` answers 501 and says to leave it out.
//! - `Templating` is stored and shown as given, but tasks receive the secret's data as it is:
//!   Shoal does not render templates.
//! - Errors carry Shoal's texts (the Control API's), with moby's status codes; an update that
//!   changes more than the labels gets SwarmKit's "only updates to Labels are allowed".

pub mod create;
pub mod file_object;
pub mod inspect;
pub mod list;
pub mod remove;
pub mod update;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_api::v1;

use crate::shapes::ObjectMeta;
use file_object::{Data, Driver, labels_from_proto, labels_to_proto};

/// A secret's spec, as sent to create and update and shown (without `Data`) by inspect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SecretSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

impl SecretSpec {
    /// The Control API's spec (a `Driver` without a name is no driver).
    pub fn to_proto(&self) -> v1::SecretSpec {
        v1::SecretSpec {
            annotations: Some(v1::Annotations {
                name: self.name.clone(),
                labels: labels_to_proto(&self.labels),
            }),
            data: self.data.clone().unwrap_or_default().0,
            templating: self.templating.as_ref().map(Driver::to_proto),
            driver: self
                .driver
                .as_ref()
                .filter(|d| !d.name.is_empty())
                .map(Driver::to_proto),
        }
    }

    /// The spec as shown: never with its data.
    pub fn from_proto(spec: &v1::SecretSpec) -> Self {
        let annotations = spec.annotations.clone().unwrap_or_default();
        SecretSpec {
            name: annotations.name,
            labels: labels_from_proto(&annotations.labels),
            data: None,
            driver: spec.driver.as_ref().map(Driver::from_proto),
            templating: spec.templating.as_ref().map(Driver::from_proto),
        }
    }
}

/// A secret as `GET /secrets` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Secret {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    pub spec: SecretSpec,
}

impl Secret {
    pub fn from_proto(secret: &v1::Secret) -> Self {
        Secret {
            meta: ObjectMeta::from_proto(secret.meta.as_ref()),
            spec: SecretSpec::from_proto(&secret.spec.clone().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient;

    fn stored() -> v1::Secret {
        v1::Secret {
            meta: Some(v1::Meta {
                id: "x2bhx3ifbcmt8pzpm5oxuk8ie".into(),
                version: 11,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 123_456_789,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_100,
                    nanos: 0,
                }),
            }),
            spec: Some(v1::SecretSpec {
                annotations: Some(v1::Annotations {
                    name: "s1".into(),
                    labels: shoal_api::labels::labels([("env", "prod")]),
                }),
                data: b"top secret".to_vec(),
                templating: None,
                driver: None,
            }),
            internal: false,
        }
    }

    #[test]
    fn the_cli_create_body_decodes() {
        // docker secret create s1 FILE (engine-api.md §6), "hello\n" as data.
        let spec: SecretSpec =
            lenient::require(br#"{"Name":"s1","Labels":{},"Data":"aGVsbG8K"}"#).unwrap();
        assert_eq!(spec.name, "s1");
        assert_eq!(spec.data, Some(Data(b"hello\n".to_vec())));
        let proto = spec.to_proto();
        assert_eq!(proto.data, b"hello\n");
        assert_eq!(proto.annotations.unwrap().name, "s1");
        assert_eq!(proto.driver, None);
    }

    #[test]
    fn the_docker_py_create_body_decodes() {
        // docker-py: create_secret(name, data, labels=None, driver=None).
        let spec: SecretSpec = lenient::require(
            br#"{"Data":"ZGF0YQ==","Name":"dockerpytest_1","Labels":null,"Driver":null}"#,
        )
        .unwrap();
        assert_eq!(spec.name, "dockerpytest_1");
        assert_eq!(spec.data, Some(Data(b"data".to_vec())));
        assert!(spec.labels.is_empty());
        assert_eq!(spec.driver, None);
    }

    #[test]
    fn bad_base64_is_a_bad_request_naming_the_field() {
        let e =
            lenient::require::<SecretSpec>(br#"{"Name":"s1","Data":"not base64!"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message
                .contains("Data: illegal base64 data at input byte"),
            "{e:?}"
        );
    }

    #[test]
    fn inspect_never_shows_the_data() {
        let shown = Secret::from_proto(&stored());
        assert_eq!(shown.spec.data, None);
        let json = serde_json::to_string_pretty(&shown).unwrap();
        assert!(!json.contains("Data"), "{json}");
        insta::assert_snapshot!("secret", json);
    }

    #[test]
    fn labels_and_drivers_round_trip() {
        let sent: SecretSpec = lenient::require(
            br#"{"Name":"s2","Labels":{"b":"2","a":"1"},"Data":"eA==",
                "Templating":{"Name":"golang","Options":{"k":"v"}}}"#,
        )
        .unwrap();
        let mut back = SecretSpec::from_proto(&sent.to_proto());
        assert_eq!(back.data, None);
        back.data = sent.data.clone();
        assert_eq!(
            back, sent,
            "what a client sent is what it reads back (but Data)"
        );
    }
}
