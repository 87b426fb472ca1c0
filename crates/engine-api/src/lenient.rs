//! Request bodies decoded the way Docker's Go server decodes them.
//!
//! `encoding/json` is forgiving, and the clients depend on it: docker-py sends
//! `{"Mode":{"replicated":{"Replicas":2}}}` in lower case, and both clients send `null` where
//! they mean "not given" (`"Args":null`, `"KeepOldSnapshots":null`). So a body is parsed to a
//! [`serde_json::Value`] first and then deserialized through [`Lenient`], which:
//!
//! - matches a struct's keys to its fields exactly, else case-insensitively (Go's rule), and
//!   never touches the keys of maps (`Labels`, `Options`, …: the user's keys);
//! - drops `null` members of structs, so that they take their defaults, and reads `null` as
//!   `None` for options;
//! - ignores unknown fields (serde's default; no type here denies them).
//!
//! The types deserialized this way are plain structs, options, strings, numbers, sequences
//! and maps: a Docker "one of" (a service mode) is a struct of optional members, as in Go,
//! so that enums need no case folding.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use serde_json::{Map, Value};

use crate::error::EngineError;

/// Decodes a request body into `T` with Docker's leniency; an empty body is `T`'s default
/// where `T` has one — callers that need a body use [`require`].
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, EngineError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| EngineError::bad_request(format!("invalid JSON: {e}")))?
    };
    from_value(value)
}

/// Decodes a body that must be present.
pub fn require<T: DeserializeOwned>(body: &[u8]) -> Result<T, EngineError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EngineError::bad_request(
            "the request needs a JSON body; none was sent",
        ));
    }
    from_slice(body)
}

/// Decodes an already parsed value into `T` with Docker's leniency.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, EngineError> {
    T::deserialize(Lenient(value))
        .map_err(|e| EngineError::bad_request(format!("invalid JSON: {e}")))
}

/// A JSON value deserialized with Go's leniency.
pub struct Lenient(pub Value);

fn struct_members(map: Map<String, Value>, fields: &'static [&'static str]) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        if fields.contains(&key.as_str()) {
            // An exact match wins over a folded one, whichever came first.
            out.insert(key, value);
        } else if let Some(field) = fields.iter().find(|f| f.eq_ignore_ascii_case(&key)) {
            out.entry(*field).or_insert(value);
        }
        // Anything else is unknown: ignored.
    }
    out
}

impl<'de> de::Deserializer<'de> for Lenient {
    type Error = serde_json::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n.deserialize_any(visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visitor.visit_seq(Seq(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Members {
                entries: map.into_iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Lenient(other)),
        }
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Members {
                entries: struct_members(map, fields).into_iter(),
                value: None,
            }),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Unit variants spelled as strings, without case folding (see the module notes).
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.0.next() {
            Some(value) => seed.deserialize(Lenient(value)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Members {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Members {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self.value.take().unwrap_or(Value::Null);
        seed.deserialize(Lenient(value))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct Replicated {
        replicas: Option<u64>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct Mode {
        replicated: Option<Replicated>,
        global: Option<BTreeMap<String, Value>>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "PascalCase")]
    struct Spec {
        name: String,
        labels: BTreeMap<String, String>,
        args: Vec<String>,
        mode: Option<Mode>,
        #[serde(rename = "TTY")]
        tty: bool,
    }

    #[test]
    fn keys_match_fields_case_insensitively_but_map_keys_stay() {
        let spec: Spec = from_slice(
            br#"{"name":"web","LABELS":{"Tier":"front"},"Mode":{"replicated":{"replicas":2}},
                "tty":true}"#,
        )
        .unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.labels.get("Tier").map(String::as_str), Some("front"));
        assert_eq!(
            spec.mode.unwrap().replicated.unwrap().replicas,
            Some(2),
            "docker-py's lower-case mode"
        );
        assert!(spec.tty);
    }

    #[test]
    fn null_means_absent_and_unknown_fields_are_ignored() {
        let spec: Spec =
            from_slice(br#"{"Name":"a","Args":null,"Mode":null,"Whatever":{"x":1}}"#).unwrap();
        assert_eq!(
            spec,
            Spec {
                name: "a".into(),
                ..Spec::default()
            }
        );
    }

    #[test]
    fn an_exact_key_wins_over_a_folded_one() {
        let spec: Spec = from_slice(br#"{"name":"folded","Name":"exact"}"#).unwrap();
        assert_eq!(spec.name, "exact");
        let spec: Spec = from_slice(br#"{"Name":"exact","name":"folded"}"#).unwrap();
        assert_eq!(spec.name, "exact");
    }

    #[test]
    fn wrong_types_and_malformed_json_are_bad_requests() {
        let e = from_slice::<Spec>(br#"{"Name":3}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("invalid JSON"), "{e:?}");
        let e = from_slice::<Spec>(br#"{"Mode":{"Replicated":{"Replicas":-1}}}"#).unwrap_err();
        assert_eq!(e.status, 400, "negative replicas");
        let e = from_slice::<Spec>(b"{").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(require::<Spec>(b"").is_err());
        assert_eq!(from_slice::<Spec>(b" ").unwrap(), Spec::default());
    }
}
