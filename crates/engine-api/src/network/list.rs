//! `GET /networks?filters=…`: the swarm's networks.
//!
//! Filters (moby's set): `driver` (exact), `id` and `name` (substrings; moby matches regular
//! expressions), `label` (`key` or `key=value`), `scope` (`swarm` matches every network,
//! `local` and `global` none; other values are a 400), `type` (`custom` matches every
//! network, `builtin` none: the built-in networks are the engine's). Several values of one
//! filter match any of them; different filters must all match.

use shoal_api::v1::ListNetworksRequest;

use super::{Network, SWARM_SCOPE};
use crate::backend::Backend;
use crate::error::EngineError;
use crate::query::Filters;
use crate::request::{Reply, Request, Result};

/// The filters `GET /networks` accepts.
pub const FILTERS: &[&str] = &["driver", "id", "label", "name", "scope", "type"];

pub async fn handle(backend: &Backend, request: Request) -> Result {
    let filters = request.query.filters()?;
    check(&filters)?;
    let listed = backend
        .call(async |mut c| c.list_networks(ListNetworksRequest::default()).await)
        .await?;
    let networks: Vec<Network> = listed
        .networks
        .iter()
        .map(Network::from_proto)
        .filter(|n| matches(n, &filters))
        .collect();
    Reply::json(&networks)
}

/// Refuses unknown filters and values `scope` and `type` cannot have.
pub fn check(filters: &Filters) -> Result<(), EngineError> {
    filters.only(FILTERS)?;
    for (name, allowed) in [
        ("scope", &["swarm", "global", "local"][..]),
        ("type", &["custom", "builtin"][..]),
    ] {
        if let Some(bad) = filters
            .values(name)
            .iter()
            .find(|v| !allowed.contains(&v.as_str()))
        {
            return Err(EngineError::bad_request(format!(
                "invalid filter '{name}={bad}': use one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether `network` passes every filter given.
pub fn matches(network: &Network, filters: &Filters) -> bool {
    let any = |name: &str, test: &dyn Fn(&str) -> bool| {
        !filters.has(name) || filters.values(name).iter().any(|v| test(v))
    };
    let labels: std::collections::HashMap<String, String> = network
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    any("driver", &|v| v == network.driver)
        && any("id", &|v| network.id.contains(v))
        && any("name", &|v| network.name.contains(v))
        && any("scope", &|v| v == SWARM_SCOPE)
        && any("type", &|v| v == "custom")
        && filters.labels_match("label", &labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, id: &str, labels: &[(&str, &str)]) -> Network {
        Network {
            name: name.into(),
            id: id.into(),
            driver: "overlay".into(),
            scope: "swarm".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_match_as_moby_does() {
        let front = network("front", "abc123", &[("tier", "web")]);
        let back = network("back", "def456", &[]);
        let pass = |raw: &str, n: &Network| {
            let f = Filters::parse(raw).unwrap();
            check(&f).unwrap();
            matches(n, &f)
        };
        assert!(pass("", &front));
        assert!(pass(r#"{"name":{"fro":true}}"#, &front));
        assert!(!pass(r#"{"name":{"fro":true}}"#, &back));
        assert!(pass(r#"{"id":["abc"]}"#, &front));
        assert!(pass(r#"{"driver":["overlay"]}"#, &back));
        assert!(!pass(r#"{"driver":["bridge"]}"#, &back));
        assert!(pass(r#"{"label":["tier=web"]}"#, &front));
        assert!(!pass(r#"{"label":["tier"]}"#, &back));
        assert!(pass(r#"{"scope":["swarm"]}"#, &front));
        assert!(!pass(r#"{"scope":["local"]}"#, &front));
        assert!(pass(r#"{"type":["custom"]}"#, &front));
        assert!(!pass(r#"{"type":["builtin"]}"#, &front));
        assert!(
            pass(r#"{"name":["nope","back"]}"#, &back),
            "any value of one filter"
        );
    }

    #[test]
    fn bad_filters_are_refused() {
        for raw in [
            r#"{"scope":["galaxy"]}"#,
            r#"{"type":["weird"]}"#,
            r#"{"dangling":["true"]}"#,
        ] {
            let e = check(&Filters::parse(raw).unwrap()).unwrap_err();
            assert_eq!(e.status, 400, "{raw}");
        }
    }
}
