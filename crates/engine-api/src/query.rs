//! Query strings: Go's boolean spelling, versions, and `filters` in both encodings.
//!
//! Booleans follow Go's `strconv.ParseBool` (`1 t T TRUE true True` / `0 f F FALSE false
//! False`), since docker-py sends `True`; anything else is a 400 naming the parameter.
//! `filters` is JSON, either `{"name":{"web":true}}` (the docker CLI) or `{"name":["web"]}`
//! (docker-py); both become a map from a filter to its values.

use std::collections::BTreeMap;

use crate::error::EngineError;

/// A request's query parameters (the last value wins when one repeats).
#[derive(Clone, Debug, Default)]
pub struct Query {
    params: BTreeMap<String, String>,
}

impl Query {
    /// Parses `a=1&b=x` (percent-decoded).
    pub fn parse(query: Option<&str>) -> Self {
        let params = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        Self { params }
    }

    /// A parameter's raw value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A boolean parameter with Go's spelling; absent or empty is `false`.
    pub fn bool(&self, name: &str) -> Result<bool, EngineError> {
        match self.get(name) {
            None | Some("") => Ok(false),
            Some(value) => parse_bool(value).ok_or_else(|| {
                EngineError::bad_request(format!(
                    "invalid value for {name}: {value:?} is not a boolean (use 1/0 or true/false)"
                ))
            }),
        }
    }

    /// The `version` parameter an update must carry: the `Version.Index` it read.
    pub fn version(&self, what: &str) -> Result<u64, EngineError> {
        let raw = self.get("version").unwrap_or_default();
        raw.parse().map_err(|_| {
            EngineError::bad_request(format!(
                "invalid {what} version '{raw}': pass ?version=N with the Version.Index you read"
            ))
        })
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<Filters, EngineError> {
        Filters::parse(self.get("filters").unwrap_or_default())
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The `filters` of a list call: each filter's values, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    filters: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Parses either encoding; an empty string is no filter.
    pub fn parse(raw: &str) -> Result<Self, EngineError> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let bad = |why: String| {
            EngineError::bad_request(format!(
                "invalid filters {raw:?}: {why}; write {{\"name\":[\"web\"]}} or \
                 {{\"name\":{{\"web\":true}}}}"
            ))
        };
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let mut filters = BTreeMap::new();
        for (name, values) in map {
            let values = match values {
                serde_json::Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(bad(format!("{name}: {other} is not a string"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                serde_json::Value::Object(set) => set
                    .into_iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(v, _)| v)
                    .collect(),
                other => return Err(bad(format!("{name}: {other} is not a list of values"))),
            };
            filters.insert(name, values);
        }
        Ok(Self { filters })
    }

    /// The values given for `name` (empty when the filter is absent).
    pub fn values(&self, name: &str) -> &[String] {
        self.filters
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.filters.contains_key(name)
    }

    /// Refuses filters other than `allowed`, as moby does ("invalid filter 'x'").
    pub fn only(&self, allowed: &[&str]) -> Result<(), EngineError> {
        match self.filters.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(EngineError::bad_request(format!(
                "invalid filter '{unknown}'"
            ))),
            None => Ok(()),
        }
    }

    /// Label filters `key` or `key=value`, as (key, value) pairs.
    pub fn labels(&self, name: &str) -> Vec<(String, Option<String>)> {
        self.values(name)
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (l.clone(), None),
            })
            .collect()
    }

    /// Whether `labels` satisfy every label filter under `name`.
    pub fn labels_match(
        &self,
        name: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        self.labels(name)
            .iter()
            .all(|(k, v)| match (labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_go() {
        let q = Query::parse(Some("a=True&b=0&c=1&d=false&e=yes"));
        assert!(q.bool("a").unwrap());
        assert!(!q.bool("b").unwrap());
        assert!(q.bool("c").unwrap());
        assert!(!q.bool("d").unwrap());
        assert!(!q.bool("missing").unwrap());
        let e = q.bool("e").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("e"), "{e:?}");
    }

    #[test]
    fn both_filter_encodings_parse_the_same() {
        let cli = Filters::parse(r#"{"name":{"web":true},"label":{"a=b":true}}"#).unwrap();
        let py = Filters::parse(r#"{"name":["web"],"label":["a=b"]}"#).unwrap();
        assert_eq!(cli, py);
        assert_eq!(cli.values("name"), ["web"]);
        assert_eq!(
            cli.labels("label"),
            vec![("a".to_string(), Some("b".to_string()))]
        );
        let q = Query::parse(Some("filters=%7B%22name%22%3A%5B%22x%22%5D%7D"));
        assert_eq!(q.filters().unwrap().values("name"), ["x"]);
    }

    #[test]
    fn bad_filters_and_versions_are_refused() {
        assert_eq!(Filters::parse("{").unwrap_err().status, 400);
        assert_eq!(Filters::parse("[1]").unwrap_err().status, 400);
        assert_eq!(Filters::parse(r#"{"name":3}"#).unwrap_err().status, 400);
        let f = Filters::parse(r#"{"nme":["x"]}"#).unwrap();
        assert_eq!(
            f.only(&["name"]).unwrap_err().message,
            "invalid filter 'nme'"
        );
        let e = Query::parse(Some("version=abc"))
            .version("service")
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("invalid service version 'abc'"));
        assert_eq!(
            Query::parse(Some("version=12")).version("node").unwrap(),
            12
        );
    }
}
