//! Objects named as users name them: a whole ID, a name, or a unique ID prefix, in that order.

/// How to find an object of one kind among a listing.
pub struct Resolver<'a, T> {
    /// "node", "service", ...
    pub kind: &'a str,
    pub id: fn(&T) -> &str,
    /// The names an object answers to (empty names are ignored).
    pub names: fn(&T) -> Vec<&str>,
    /// A short description shown beside its ID in "ambiguous" errors.
    pub describe: fn(&T) -> String,
}

impl<T> Resolver<'_, T> {
    /// The one object `query` names among `items`.
    pub fn resolve<'i>(&self, items: &'i [T], query: &str) -> Result<&'i T, String> {
        let kind = self.kind;
        if query.is_empty() {
            return Err(format!(
                "no such {kind}: \"\" (name a {kind} by ID or name)"
            ));
        }
        if let Some(item) = items.iter().find(|i| (self.id)(i) == query) {
            return Ok(item);
        }
        let named: Vec<&T> = items
            .iter()
            .filter(|i| (self.names)(i).iter().any(|n| !n.is_empty() && *n == query))
            .collect();
        match named.as_slice() {
            [one] => return Ok(one),
            [] => {}
            many => {
                return Err(format!(
                    "{kind} name {query:?} is ambiguous: {} {kind}s have it ({}); use an ID",
                    many.len(),
                    self.candidates(many)
                ));
            }
        }
        let prefixed: Vec<&T> = items
            .iter()
            .filter(|i| (self.id)(i).starts_with(query))
            .collect();
        match prefixed.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("no such {kind}: {query}")),
            many => Err(format!(
                "{kind} ID prefix {query:?} is ambiguous: it matches {} ({}); give more \
                 characters of the ID",
                many.len(),
                self.candidates(many)
            )),
        }
    }

    fn candidates(&self, items: &[&T]) -> String {
        items
            .iter()
            .map(|i| {
                let description = (self.describe)(i);
                if description.is_empty() {
                    (self.id)(i).to_string()
                } else {
                    format!("{} {}", (self.id)(i), description)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Thing {
        id: &'static str,
        name: &'static str,
    }

    const RESOLVER: Resolver<'static, Thing> = Resolver {
        kind: "node",
        id: |t| t.id,
        names: |t| vec![t.name],
        describe: |t| format!("({})", t.name),
    };

    fn things() -> Vec<Thing> {
        vec![
            Thing {
                id: "abc111",
                name: "alpha",
            },
            Thing {
                id: "abc222",
                name: "beta",
            },
            Thing {
                id: "xyz333",
                name: "twin",
            },
            Thing {
                id: "xyz444",
                name: "twin",
            },
            // A name that is another object's ID prefix: the name wins.
            Thing {
                id: "qqq555",
                name: "abc1",
            },
            Thing {
                id: "rrr666",
                name: "",
            },
        ]
    }

    #[test]
    fn ids_names_then_unique_prefixes() {
        let t = things();
        let id = |q: &str| RESOLVER.resolve(&t, q).map(|x| x.id);
        assert_eq!(id("abc222"), Ok("abc222"));
        assert_eq!(id("alpha"), Ok("abc111"));
        assert_eq!(id("abc2"), Ok("abc222"));
        assert_eq!(id("abc1"), Ok("qqq555"));
        assert_eq!(id("r"), Ok("rrr666"));
    }

    #[test]
    fn unknown_and_ambiguous_names_are_explained() {
        let t = things();
        let err = |q: &str| RESOLVER.resolve(&t, q).map(|x| x.id).unwrap_err();
        assert_eq!(err("nope"), "no such node: nope");
        assert!(err("").starts_with("no such node: \"\""));
        assert_eq!(
            err("abc"),
            "node ID prefix \"abc\" is ambiguous: it matches 2 (abc111 (alpha), abc222 (beta)); \
             give more characters of the ID"
        );
        assert_eq!(
            err("twin"),
            "node name \"twin\" is ambiguous: 2 nodes have it (xyz333 (twin), xyz444 (twin)); \
             use an ID"
        );
    }
}
