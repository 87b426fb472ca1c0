//! How client commands print: aligned tables, IDs alone (`-q`), JSON (one object per line for
//! `ls --format json`, an indented array for `inspect`).
//!
//! JSON is written by a small ordered tree ([`Json`]) rather than a map, so that fields come out
//! in the order a reader expects (`ID` first, as docker prints them).

use std::io::Write;

/// Characters of an ID shown in tables.
pub const SHORT_ID_LEN: usize = 12;

/// An ID as tables show it: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// How `ls` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    /// `--format`: absent or `table` for a table, `json` for one JSON object per line.
    pub fn parse(format: Option<&str>) -> Result<Format, String> {
        match format {
            None | Some("table") => Ok(Format::Table),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "unknown format {other:?}; use --format json or leave it out"
            )),
        }
    }
}

/// An aligned table: columns padded to their widest cell plus three spaces, as docker does.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout. A closed pipe (`shoal node ls | head -1`) is not an error.
pub fn print(text: &str) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("writing output: {e}")),
    }
}

/// A JSON value whose objects keep their fields in the order they were built.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(field, value)` pairs, in order.
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// On one line, no spaces.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None, 0);
        out
    }

    /// Indented by four spaces per level, as `docker inspect` prints.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(4), 0);
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, depth: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => out.push_str(&n.to_string()),
            Json::UInt(n) => out.push_str(&n.to_string()),
            Json::Str(s) => write_string(out, s),
            Json::Array(items) => {
                write_container(out, indent, depth, '[', ']', items, |out, item, depth| {
                    item.write(out, indent, depth)
                })
            }
            Json::Object(fields) => write_container(
                out,
                indent,
                depth,
                '{',
                '}',
                fields,
                |out, (key, value), depth| {
                    write_string(out, key);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    value.write(out, indent, depth);
                },
            ),
        }
    }
}

fn write_container<T>(
    out: &mut String,
    indent: Option<usize>,
    depth: usize,
    open: char,
    close: char,
    items: &[T],
    mut each: impl FnMut(&mut String, &T, usize),
) {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return;
    }
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * depth));
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(out, depth + 1);
        each(out, item, depth + 1);
    }
    newline(out, depth);
    out.push(close);
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `inspect`: a JSON array of the objects, indented, ending with a newline.
pub fn json_array(items: Vec<Json>) -> String {
    let mut out = Json::Array(items).pretty();
    out.push('\n');
    out
}

/// `ls --format json`: one object per line.
pub fn json_lines(items: &[Json]) -> String {
    items.iter().map(|j| j.compact() + "\n").collect()
}

/// A protobuf timestamp as RFC 3339 in UTC, with nanoseconds when it has them
/// (`2024-05-01T12:00:00.5Z`). Missing timestamps are `null`.
pub fn timestamp(t: Option<&prost_types::Timestamp>) -> Json {
    let Some(t) = t else {
        return Json::Null;
    };
    let days = t.seconds.div_euclid(86_400);
    let secs_of_day = t.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    );
    if t.nanos > 0 {
        let frac = format!("{:09}", t.nanos);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    Json::Str(s)
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days end each 400-year era's years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Labels as a JSON object, in key order.
pub fn labels(labels: &[shoal_api::v1::Label]) -> Json {
    let mut sorted: Vec<&shoal_api::v1::Label> = labels.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    Json::object(
        sorted
            .into_iter()
            .map(|l| (l.key.clone(), Json::str(&l.value))),
    )
}

/// `{"Index": N}`, as docker shows an object's version.
pub fn version(meta: Option<&shoal_api::v1::Meta>) -> Json {
    Json::object([("Index", Json::UInt(meta.map(|m| m.version).unwrap_or(0)))])
}

/// Standard base64 with padding, as docker shows byte fields in JSON.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_have_twelve_characters() {
        assert_eq!(short_id("abcdefghijklmnopqrstuvwxy"), "abcdefghijkl");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse(None).unwrap(), Format::Table);
        assert_eq!(Format::parse(Some("table")).unwrap(), Format::Table);
        assert_eq!(Format::parse(Some("json")).unwrap(), Format::Json);
        let e = Format::parse(Some("yaml")).unwrap_err();
        assert!(e.contains("unknown format \"yaml\""), "{e}");
    }

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["ID", "HOSTNAME", "STATUS"],
            &[
                vec!["a1 *".into(), "m1".into(), "Ready".into()],
                vec!["b2".into(), "longer-name".into(), "".into()],
            ],
        );
        assert_eq!(
            out,
            "ID     HOSTNAME      STATUS\n\
             a1 *   m1            Ready\n\
             b2     longer-name\n"
        );
        assert_eq!(table(&["ID", "NAME"], &[]), "ID   NAME\n");
    }

    #[test]
    fn json_is_ordered_escaped_and_valid() {
        let v = Json::object([
            ("ID", Json::str("x\"y\\z\n\u{1}é")),
            ("Version", Json::object([("Index", Json::UInt(7))])),
            ("Neg", Json::Int(-3)),
            ("On", Json::Bool(true)),
            ("None", Json::Null),
            ("Empty", Json::Array(vec![])),
            ("EmptyObject", Json::object(Vec::<(String, Json)>::new())),
            ("List", Json::Array(vec![Json::UInt(1), Json::Int(-2)])),
        ]);
        let compact = v.compact();
        assert!(
            compact.starts_with("{\"ID\":\"x\\\"y\\\\z\\n\\u0001é\",\"Version\":{\"Index\":7}")
        );
        let parsed: serde_json::Value = serde_json::from_str(&compact).unwrap();
        assert_eq!(parsed["ID"], "x\"y\\z\n\u{1}é");
        assert_eq!(parsed["List"][1], -2);
        let pretty = v.pretty();
        assert!(pretty.starts_with("{\n    \"ID\": "), "{pretty}");
        assert!(pretty.contains("\n    \"Version\": {\n        \"Index\": 7\n    },"));
        assert!(pretty.contains("\"Empty\": [],"), "{pretty}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&pretty).unwrap(),
            parsed
        );
        assert_eq!(json_array(vec![]), "[]\n");
        assert_eq!(json_lines(&[Json::UInt(1), Json::str("a")]), "1\n\"a\"\n");
    }

    #[test]
    fn base64_of_bytes() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(timestamp(None), Json::Null);
        assert_eq!(
            timestamp(Some(&ts(0, 0))),
            Json::str("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            timestamp(Some(&ts(951_782_400, 500_000_000))),
            Json::str("2000-02-29T00:00:00.5Z")
        );
        assert_eq!(
            timestamp(Some(&ts(1_714_564_805, 123))),
            Json::str("2024-05-01T12:00:05.000000123Z")
        );
        assert_eq!(
            timestamp(Some(&ts(-1, 0))),
            Json::str("1969-12-31T23:59:59Z")
        );
        assert_eq!(
            timestamp(Some(&ts(4_102_444_799, 0))),
            Json::str("2099-12-31T23:59:59Z")
        );
    }
}
