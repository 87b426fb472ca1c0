//! Label lists: `Vec<Label>` used like a map.
//!
//! Labels are a list of key/value pairs sorted by key with unique keys (see `Annotations` in
//! `types.proto`; on the wire this is exactly a `map<string, string>`). These helpers keep
//! that order, so lookups are binary searches and equal label sets encode to equal bytes.

use crate::v1::Label;

/// Map-like operations on a sorted list of labels.
pub trait Labels {
    /// The value of `key`.
    fn get_label(&self, key: &str) -> Option<&str>;
    /// Sets `key` to `value`; returns the previous value.
    fn set_label(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String>;
    /// Removes `key`; returns its value.
    fn remove_label(&mut self, key: &str) -> Option<String>;
    /// Sorts by key and keeps the last value of a repeated key (as protobuf maps do).
    fn normalize_labels(&mut self);
}

/// The value of `key` in a label list.
pub fn get<'a>(labels: &'a [Label], key: &str) -> Option<&'a str> {
    match labels.binary_search_by(|l| l.key.as_str().cmp(key)) {
        Ok(i) => Some(labels[i].value.as_str()),
        // Not sorted (straight off the wire): fall back to a scan.
        Err(_) => labels
            .iter()
            .rev()
            .find(|l| l.key == key)
            .map(|l| l.value.as_str()),
    }
}

impl Labels for Vec<Label> {
    fn get_label(&self, key: &str) -> Option<&str> {
        get(self, key)
    }

    fn set_label(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let key = key.into();
        let value = value.into();
        match self.binary_search_by(|l| l.key.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self[i].value, value)),
            Err(i) => {
                self.insert(i, Label { key, value });
                None
            }
        }
    }

    fn remove_label(&mut self, key: &str) -> Option<String> {
        match self.binary_search_by(|l| l.key.as_str().cmp(key)) {
            Ok(i) => Some(self.remove(i).value),
            Err(_) => None,
        }
    }

    fn normalize_labels(&mut self) {
        // A stable sort keeps repeated keys in arrival order; keep the last of each.
        self.sort_by(|a, b| a.key.cmp(&b.key));
        let mut i = 0;
        while i + 1 < self.len() {
            if self[i].key == self[i + 1].key {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        self.shrink_to_fit();
    }
}

/// A sorted label list from pairs.
pub fn labels<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<Label> {
    let mut out: Vec<Label> = pairs
        .into_iter()
        .map(|(k, v)| Label {
            key: k.into(),
            value: v.into(),
        })
        .collect();
    out.normalize_labels();
    out
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::Annotations;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut l = labels([("zone", "east"), ("rack", "1"), ("zone", "west")]);
        assert_eq!(
            l.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["rack", "zone"]
        );
        assert_eq!(l.get_label("zone"), Some("west"));
        assert_eq!(l.set_label("a", "x"), None);
        assert_eq!(l.set_label("a", "y"), Some("x".into()));
        assert_eq!(l.remove_label("rack"), Some("1".into()));
        assert_eq!(l.get_label("rack"), None);
        assert_eq!(
            l.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["a", "zone"]
        );
    }

    /// A label list is read by map<string, string> decoders and vice versa: same wire format.
    #[test]
    fn wire_compatible_with_a_protobuf_map() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct MapAnnotations {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(btree_map = "string, string", tag = "2")]
            labels: std::collections::BTreeMap<String, String>,
        }
        let ours = Annotations {
            name: "web".into(),
            labels: labels([("b", "2"), ("a", "1")]),
        };
        let theirs = MapAnnotations::decode(ours.encode_to_vec().as_slice()).unwrap();
        assert_eq!(theirs.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(theirs.encode_to_vec(), ours.encode_to_vec());
        let back = Annotations::decode(theirs.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, ours);
    }
}
