//! The `config` endpoints of the Engine API (`/configs…`, API 1.30+), and the shapes of
//! configs.
//!
//! A config is a secret that is not secret: `{ID, Version, CreatedAt, UpdatedAt, Spec{Name,
//! Labels, Data, Templating?}}`, and `GET /configs/{id}` shows its `Data` (base64). What the
//! two kinds share (base64, drivers, labels, filters, the create checks) is in
//! [`crate::secret::file_object`].
//!
//! Endpoints: list (filters `id`, `name` prefixes, `names` exact, `label`), create (201
//! `{"ID"}`), inspect by ID, name or ID prefix, update (labels only, `?version=N`), remove
//! (204; refused while tasks use the config).
//!
//! # Where it departs from moby
//!
//! - `Templating` is stored and shown as given, but tasks receive the config's data as it is:
//!   Shoal does not render templates.
//! - Errors carry Shoal's texts (the Control API's), with moby's status codes; an update that
//!   changes more than the labels gets SwarmKit's "only updates to Labels are allowed".

pub mod create;
pub mod inspect;
pub mod list;
pub mod remove;
pub mod update;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_api::v1;

use crate::secret::file_object::{Data, Driver, labels_from_proto, labels_to_proto};
use crate::shapes::ObjectMeta;

/// A config's spec, as sent to create and update and shown by inspect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ConfigSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templating: Option<Driver>,
}

impl ConfigSpec {
    pub fn to_proto(&self) -> v1::ConfigSpec {
        v1::ConfigSpec {
            annotations: Some(v1::Annotations {
                name: self.name.clone(),
                labels: labels_to_proto(&self.labels),
            }),
            data: self.data.clone().unwrap_or_default().0,
            templating: self.templating.as_ref().map(Driver::to_proto),
        }
    }

    pub fn from_proto(spec: &v1::ConfigSpec) -> Self {
        let annotations = spec.annotations.clone().unwrap_or_default();
        ConfigSpec {
            name: annotations.name,
            labels: labels_from_proto(&annotations.labels),
            data: (!spec.data.is_empty()).then(|| Data(spec.data.clone())),
            templating: spec.templating.as_ref().map(Driver::from_proto),
        }
    }
}

/// A config as `GET /configs` shows it, data included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Config {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    pub spec: ConfigSpec,
}

impl Config {
    pub fn from_proto(config: &v1::Config) -> Self {
        Config {
            meta: ObjectMeta::from_proto(config.meta.as_ref()),
            spec: ConfigSpec::from_proto(&config.spec.clone().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient;

    fn stored() -> v1::Config {
        v1::Config {
            meta: Some(v1::Meta {
                id: "q7kvkx1hqqqbx2fp4a0p8ydqz".into(),
                version: 12,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5_000,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5_000,
                }),
            }),
            spec: Some(v1::ConfigSpec {
                annotations: Some(v1::Annotations {
                    name: "c1".into(),
                    labels: Vec::new(),
                }),
                data: b"listen 80;\n".to_vec(),
                templating: Some(v1::Driver {
                    name: "golang".into(),
                    options: Default::default(),
                }),
            }),
        }
    }

    #[test]
    fn the_cli_create_body_decodes() {
        // docker config create c1 FILE: the same body as a secret's.
        let spec: ConfigSpec =
            lenient::require(br#"{"Name":"c1","Labels":{},"Data":"bGlzdGVuIDgwOwo="}"#).unwrap();
        assert_eq!(spec.name, "c1");
        assert_eq!(spec.to_proto().data, b"listen 80;\n");
    }

    #[test]
    fn inspect_shows_the_data_and_templating() {
        let shown = Config::from_proto(&stored());
        assert_eq!(shown.spec.data, Some(Data(b"listen 80;\n".to_vec())));
        let json = serde_json::to_string_pretty(&shown).unwrap();
        insta::assert_snapshot!("config", json);
    }

    #[test]
    fn a_config_round_trips() {
        let sent: ConfigSpec = lenient::require(
            br#"{"name":"c2","labels":{"k":"v"},"data":"eA==","templating":{"name":"golang"}}"#,
        )
        .unwrap();
        assert_eq!(ConfigSpec::from_proto(&sent.to_proto()), sent);
    }
}
