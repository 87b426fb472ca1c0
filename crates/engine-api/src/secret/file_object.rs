//! What secrets and configs share: Go's `[]byte` as base64, the `Driver` shape, labels, the
//! list filters, and the checks of a create or update request. SwarmKit calls both kinds
//! "file objects": named blobs that tasks see as files.
//!
//! `Data` is Go's `[]byte` in JSON: standard base64 with padding, line breaks ignored,
//! non-zero trailing bits accepted (Go's `base64.StdEncoding`, which is not strict). A bad
//! string is a 400 naming the field and the offset, as Go reports it
//! (`illegal base64 data at input byte N`). Its `Debug` prints the length only, so that a
//! secret never reaches a log by accident.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_api::v1::{self, Label, ListFilters};

use crate::error::EngineError;
use crate::query::Filters;
use crate::request::ApiVersion;

/// Go's `base64.StdEncoding` when decoding: padding required, trailing bits ignored.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// The filters `GET /secrets` and `GET /configs` accept (moby's list).
pub const LIST_FILTERS: &[&str] = &["id", "label", "name", "names"];

/// Bytes sent and shown as base64 (Go's `[]byte`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Data(<{} bytes>)", self.0.len())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode_base64(&text)
            .map(Data)
            .map_err(|e| serde::de::Error::custom(format!("Data: {e}")))
    }
}

/// Decodes base64 the way Go's `encoding/json` decodes a `[]byte`.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let stripped: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    GO_STD.decode(stripped.as_bytes()).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(len) => len,
            base64::DecodeError::InvalidPadding => stripped.len(),
        };
        format!("illegal base64 data at input byte {at}")
    })
}

/// A driver and its options (`Driver`, `Templating`): `{Name, Options}`, both omitted when
/// empty, as Go's `omitempty` does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Driver {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl Driver {
    pub fn to_proto(&self) -> v1::Driver {
        v1::Driver {
            name: self.name.clone(),
            options: self.options.clone(),
        }
    }

    pub fn from_proto(driver: &v1::Driver) -> Self {
        Driver {
            name: driver.name.clone(),
            options: driver.options.clone(),
        }
    }

    /// A driver given without a name says nothing (`"Driver":{}`).
    pub fn is_set(driver: &Option<Driver>) -> bool {
        driver.as_ref().is_some_and(|d| !d.name.is_empty())
    }
}

/// Docker's `Labels` map as the Control API's sorted label list.
pub fn labels_to_proto(labels: &BTreeMap<String, String>) -> Vec<Label> {
    shoal_api::labels::labels(labels.iter().map(|(k, v)| (k.clone(), v.clone())))
}

/// The Control API's label list as Docker's `Labels` map.
pub fn labels_from_proto(labels: &[Label]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect()
}

/// The Control API filters for `GET /secrets` and `GET /configs`: `names` exact, `name` and
/// `id` prefixes, `label` `key` or `key=value` (anything else is moby's "invalid filter").
pub fn list_filters(filters: &Filters) -> Result<ListFilters, EngineError> {
    filters.only(LIST_FILTERS)?;
    Ok(ListFilters {
        names: filters.values("names").to_vec(),
        name_prefixes: filters.values("name").to_vec(),
        id_prefixes: filters.values("id").to_vec(),
        labels: filters
            .labels("label")
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
    })
}

/// The checks of a create request both kinds share: a name, data, and `Templating` only from
/// API 1.37 on (moby's rule). `kind` is "secret" or "config".
pub fn check_new(
    kind: &str,
    name: &str,
    data: Option<&Data>,
    templating: &Option<Driver>,
    version: ApiVersion,
) -> Result<(), EngineError> {
    if name.is_empty() {
        return Err(EngineError::bad_request(format!(
            "invalid Name: a {kind} needs a name; give Name in the request body"
        )));
    }
    if data.is_none_or(|d| d.0.is_empty()) {
        return Err(EngineError::bad_request(format!(
            "invalid Data: {kind} {name} has no data; give its content base64-encoded in Data"
        )));
    }
    if templating.is_some() && !version.at_least(1, 37) {
        return Err(EngineError::bad_request(format!(
            "{kind} templating is not supported on the specified API version: {version}"
        )));
    }
    Ok(())
}

/// moby's (SwarmKit's) refusal of an update that changes more than the labels.
pub fn only_labels() -> EngineError {
    EngineError::bad_request("only updates to Labels are allowed")
}

/// `{"ID": …}`: the answer to a create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Created {
    #[serde(rename = "ID")]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_like_go() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(
            decode_base64("aGVs\nbG8=\r\n").unwrap(),
            b"hello",
            "line breaks"
        );
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(
            decode_base64("aGVsbG9=").unwrap(),
            b"hello",
            "trailing bits"
        );
        assert_eq!(
            decode_base64("aGVsbG8").unwrap_err(),
            "illegal base64 data at input byte 7",
            "padding is required"
        );
        assert_eq!(
            decode_base64("aGV*bG8=").unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        assert!(
            decode_base64("aGVsbG8-").is_err(),
            "the URL alphabet is not Go's Std"
        );
    }

    #[test]
    fn data_debug_hides_the_bytes() {
        assert_eq!(format!("{:?}", Data(b"pw".to_vec())), "Data(<2 bytes>)");
    }

    #[test]
    fn filters_become_the_control_api_filters() {
        let f = Filters::parse(
            r#"{"name":{"we":true},"names":{"web":true},"id":["ab"],"label":["a=b","c"]}"#,
        )
        .unwrap();
        let l = list_filters(&f).unwrap();
        assert_eq!(l.names, ["web"]);
        assert_eq!(l.name_prefixes, ["we"]);
        assert_eq!(l.id_prefixes, ["ab"]);
        assert_eq!(l.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(l.labels.get("c").map(String::as_str), Some(""));
        let e = list_filters(&Filters::parse(r#"{"driver":["x"]}"#).unwrap()).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "invalid filter 'driver'")
        );
    }

    #[test]
    fn new_objects_need_a_name_and_data() {
        let data = Data(b"x".to_vec());
        let v = ApiVersion::MAX;
        assert!(check_new("secret", "s", Some(&data), &None, v).is_ok());
        let e = check_new("secret", "", Some(&data), &None, v).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("Name"), "{e:?}");
        let e = check_new("config", "c", None, &None, v).unwrap_err();
        assert!(e.message.contains("Data"), "{e:?}");
        let old = ApiVersion::parse("1.36").unwrap();
        let e = check_new("config", "c", Some(&data), &Some(Driver::default()), old).unwrap_err();
        assert_eq!(
            e.message,
            "config templating is not supported on the specified API version: 1.36"
        );
    }
}
