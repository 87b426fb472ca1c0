//! What the `secret` and `config` commands share: both are named files of data a service's
//! tasks can use, created from a file or standard input, listed, inspected and removed the same
//! way. The one difference: a secret's data never leaves the managers (the API does not return
//! it), while `config inspect` shows a config's data, base64-encoded, as docker does.

use std::io::Read;
use std::path::PathBuf;
use std::time::SystemTime;

use shoal_api::labels::Labels;
use shoal_api::v1::{Annotations, Label, Meta};

use super::client::{self, Client};
use super::node::join_errors;
use super::output::{self, Format, Json};
use super::resolve::Resolver;
use super::service::ps::human_duration;

/// A secret or a config, as the commands handle them.
pub(crate) trait FileObject: Sized + Clone {
    /// "secret" or "config".
    const KIND: &'static str;
    fn meta(&self) -> Option<&Meta>;
    fn annotations(&self) -> Option<&Annotations>;
    /// The spec's fields beyond the name and labels, as `inspect` shows them.
    fn spec_extra(&self) -> Vec<(&'static str, Json)>;
    /// Every object of this kind.
    async fn list(c: &mut Client) -> Result<Vec<Self>, String>;
    /// Creates one; returns its ID.
    async fn create(
        c: &mut Client,
        name: String,
        labels: Vec<Label>,
        data: Vec<u8>,
    ) -> Result<String, String>;
    async fn remove(c: &mut Client, id: String) -> Result<(), String>;
}

pub(crate) fn id<T: FileObject>(o: &T) -> &str {
    o.meta().map(|m| m.id.as_str()).unwrap_or("")
}

pub(crate) fn name<T: FileObject>(o: &T) -> &str {
    o.annotations().map(|a| a.name.as_str()).unwrap_or("")
}

fn names<T: FileObject>(o: &T) -> Vec<&str> {
    vec![name(o)]
}

fn describe<T: FileObject>(o: &T) -> String {
    format!("({})", name(o))
}

/// Secrets and configs are named by ID, name, or a unique ID prefix.
pub(crate) fn resolver<T: FileObject>() -> Resolver<'static, T> {
    Resolver {
        kind: T::KIND,
        id: id::<T>,
        names: names::<T>,
        describe: describe::<T>,
    }
}

/// The content of `FILE`, or of standard input for `-`.
pub(crate) fn read_data(kind: &str, file: &str) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .lock()
            .read_to_end(&mut data)
            .map_err(|e| format!("reading the {kind} from standard input: {e}"))?;
    } else {
        data = std::fs::read(file).map_err(|e| {
            format!(
                "reading the {kind} from {file}: {e} (give a readable file, or - to read \
                 standard input)"
            )
        })?;
    }
    if data.is_empty() {
        return Err(format!(
            "the {kind} is empty: {} gave no data; a {kind} needs at least one byte",
            if file == "-" { "standard input" } else { file }
        ));
    }
    Ok(data)
}

/// `create NAME FILE|-`: prints the new object's ID.
pub(crate) fn create<T: FileObject>(
    socket: Option<PathBuf>,
    name: String,
    file: &str,
    labels: &[(String, String)],
) -> Result<(), String> {
    let data = read_data(T::KIND, file)?;
    let mut labels: Vec<Label> = labels
        .iter()
        .map(|(key, value)| Label {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    labels.normalize_labels();
    let created = client::run(socket, async |c| T::create(c, name, labels, data).await)?;
    output::print(&format!("{created}\n"))
}

/// `ls [-q] [--format json]`.
pub(crate) fn ls<T: FileObject>(
    socket: Option<PathBuf>,
    quiet: bool,
    format: Option<&str>,
) -> Result<(), String> {
    let format = Format::parse(format)?;
    let objects = client::run(socket, async |c| T::list(c).await)?;
    output::print(&render_ls(objects, quiet, format, SystemTime::now()))
}

/// "5 minutes ago", as docker's tables show times.
fn ago(t: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let then = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    format!("{} ago", human_duration(secs))
}

/// The listing, sorted by name: a table (ID, NAME, CREATED, UPDATED), IDs, or JSON lines.
pub(crate) fn render_ls<T: FileObject>(
    mut objects: Vec<T>,
    quiet: bool,
    format: Format,
    now: SystemTime,
) -> String {
    objects.sort_by(|a, b| (name(a), id(a)).cmp(&(name(b), id(b))));
    if quiet {
        return objects.iter().map(|o| format!("{}\n", id(o))).collect();
    }
    let created = |o: &T| o.meta().and_then(|m| m.created_at);
    let updated = |o: &T| o.meta().and_then(|m| m.updated_at.or(m.created_at));
    match format {
        Format::Table => output::table(
            &["ID", "NAME", "CREATED", "UPDATED"],
            &objects
                .iter()
                .map(|o| {
                    vec![
                        output::short_id(id(o)).to_string(),
                        name(o).to_string(),
                        ago(created(o).as_ref(), now),
                        ago(updated(o).as_ref(), now),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        Format::Json => output::json_lines(
            &objects
                .iter()
                .map(|o| {
                    Json::object([
                        ("ID", Json::str(id(o))),
                        ("Name", Json::str(name(o))),
                        ("CreatedAt", output::timestamp(created(o).as_ref())),
                        ("UpdatedAt", output::timestamp(updated(o).as_ref())),
                        (
                            "Labels",
                            output::labels(
                                o.annotations().map(|a| a.labels.as_slice()).unwrap_or(&[]),
                            ),
                        ),
                    ])
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// An object as `inspect` shows it (docker's field names).
pub(crate) fn to_json<T: FileObject>(o: &T) -> Json {
    let meta = o.meta();
    let mut spec = vec![
        ("Name", Json::str(name(o))),
        (
            "Labels",
            output::labels(o.annotations().map(|a| a.labels.as_slice()).unwrap_or(&[])),
        ),
    ];
    spec.extend(o.spec_extra());
    Json::object([
        ("ID", Json::str(id(o))),
        ("Version", output::version(meta)),
        (
            "CreatedAt",
            output::timestamp(meta.and_then(|m| m.created_at.as_ref())),
        ),
        (
            "UpdatedAt",
            output::timestamp(meta.and_then(|m| m.updated_at.as_ref())),
        ),
        ("Spec", Json::object(spec)),
    ])
}

/// A driver (`{"Name": ..., "Options": {...}}`), as docker shows one.
pub(crate) fn driver_json(d: &shoal_api::v1::Driver) -> Json {
    Json::object([
        ("Name", Json::str(&d.name)),
        (
            "Options",
            Json::object(d.options.iter().map(|(k, v)| (k.clone(), Json::str(v)))),
        ),
    ])
}

/// `inspect OBJECT...`: a JSON array of those found; the others' errors after it.
pub(crate) fn inspect<T: FileObject>(
    socket: Option<PathBuf>,
    wanted: &[String],
) -> Result<(), String> {
    let (text, result) = client::run(socket, async |c| {
        let all = T::list(c).await?;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for w in wanted {
            match resolver::<T>().resolve(&all, w) {
                Ok(o) => found.push(to_json(o)),
                Err(e) => errors.push(e),
            }
        }
        Ok((output::json_array(found), join_errors(errors)))
    })?;
    output::print(&text)?;
    result
}

/// `rm OBJECT...`: removes each, printing it as it was named; the errors come at the end.
pub(crate) fn rm<T: FileObject>(socket: Option<PathBuf>, wanted: &[String]) -> Result<(), String> {
    client::run(socket, async |c| {
        let all = T::list(c).await?;
        let mut errors = Vec::new();
        for w in wanted {
            let object_id = match resolver::<T>().resolve(&all, w) {
                Ok(o) => id(o).to_string(),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match T::remove(c, object_id).await {
                Ok(()) => output::print(&format!("{w}\n"))?,
                Err(e) => errors.push(e),
            }
        }
        join_errors(errors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::v1::{Secret, SecretSpec};

    fn secret(id: &str, name: &str, at: i64) -> Secret {
        Secret {
            meta: Some(Meta {
                id: id.into(),
                version: 3,
                created_at: Some(prost_types::Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
                updated_at: None,
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: vec![Label {
                        key: "k".into(),
                        value: "v".into(),
                    }],
                }),
                ..Default::default()
            }),
            internal: false,
        }
    }

    #[test]
    fn listings_are_sorted_by_name_with_times_ago() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let list = vec![
            secret("bbbbbbbbbbbbbbbbbbbbbbbbb", "zeta", 700),
            secret("aaaaaaaaaaaaaaaaaaaaaaaaa", "alpha", 990),
        ];
        assert_eq!(
            render_ls(list.clone(), false, Format::Table, now),
            "ID             NAME    CREATED          UPDATED\n\
             aaaaaaaaaaaa   alpha   10 seconds ago   10 seconds ago\n\
             bbbbbbbbbbbb   zeta    5 minutes ago    5 minutes ago\n"
        );
        assert_eq!(
            render_ls(list.clone(), true, Format::Table, now),
            "aaaaaaaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbb\n"
        );
        let json = render_ls(list, false, Format::Json, now);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["ID"], "aaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(first["Name"], "alpha");
        assert_eq!(first["CreatedAt"], "1970-01-01T00:16:30Z");
        assert_eq!(first["Labels"]["k"], "v");
    }

    #[test]
    fn objects_resolve_and_show_as_docker_does() {
        let list = vec![secret("abc1", "db", 0), secret("abd2", "web", 0)];
        let r = resolver::<Secret>();
        assert_eq!(id(r.resolve(&list, "web").unwrap()), "abd2");
        assert_eq!(id(r.resolve(&list, "abc").unwrap()), "abc1");
        let e = r.resolve(&list, "ab").unwrap_err();
        assert!(e.contains("secret ID prefix \"ab\" is ambiguous"), "{e}");
        let v: serde_json::Value = serde_json::from_str(&to_json(&list[0]).compact()).unwrap();
        assert_eq!(v["ID"], "abc1");
        assert_eq!(v["Version"]["Index"], 3);
        assert_eq!(v["Spec"]["Name"], "db");
        assert_eq!(v["Spec"]["Labels"]["k"], "v");
        assert!(v["Spec"].get("Data").is_none());
    }

    #[test]
    fn data_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(read_data("secret", path.to_str().unwrap()).unwrap(), b"abc");
        let e = read_data("secret", "/nonexistent/file").unwrap_err();
        assert!(
            e.starts_with("reading the secret from /nonexistent/file"),
            "{e}"
        );
        std::fs::write(&path, b"").unwrap();
        let e = read_data("config", path.to_str().unwrap()).unwrap_err();
        assert!(e.contains("the config is empty"), "{e}");
    }
}
