//! What the fuzz target `decode` and the stable test `tests/decode_corpus.rs` both run: every
//! decoder of untrusted request input, fed the same bytes.
//!
//! Each decoder must return (never panic, never hang) and refuse with a 4xx/5xx
//! [`EngineError`], never anything else: bodies through [`lenient::from_slice`] into every
//! request type of the crate (400 on failure); the checks that follow decoding (a network
//! create's `to_spec`, 400 or 501); the query string, its booleans, versions and filters; the
//! path split; base64. Types that are also shown round-trip: what decoded, encoded and
//! decoded again, is the same.

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_engine_api::error::EngineError;
use shoal_engine_api::query::{Filters, Query};
use shoal_engine_api::{config, lenient, network, secret, server, service, swarm};

/// Runs every decoder on `data`.
pub fn decode(data: &[u8]) {
    round_trip::<secret::SecretSpec>(data);
    round_trip::<config::ConfigSpec>(data);
    round_trip::<network::Network>(data);
    if let Some(create) = body::<network::NetworkCreate>(data)
        && let Err(e) = create.to_spec()
    {
        assert!(matches!(e.status, 400 | 501), "{e:?}");
    }
    body::<service::spec::ServiceSpec>(data);
    body::<swarm::init::InitRequest>(data);
    body::<swarm::spec::Spec>(data);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = secret::file_object::decode_base64(text);
    if let Some(filters) = refused_with_400(Filters::parse(text)) {
        filtered(&filters);
    }
    let query = Query::parse(Some(text));
    for name in ["status", "force", "insertDefaults", "verbose"] {
        refused_with_400(query.bool(name));
    }
    refused_with_400(query.version("service"));
    if let Some(filters) = refused_with_400(query.filters()) {
        filtered(&filters);
    }
    if let Some((version, segments)) = refused_with_400(server::split_path(text)) {
        assert!(version.at_least(1, 24), "{version}");
        assert!(segments.iter().all(|s| !s.is_empty()), "{segments:?}");
    }
}

/// Decodes a body into `T`.
fn body<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    refused_with_400(lenient::from_slice::<T>(data))
}

/// Decodes a body into `T` and checks that encoding it and decoding again gives the same.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Some(value) = body::<T>(data) {
        let encoded = serde_json::to_vec(&value).expect("a decoded value encodes");
        let again: T = lenient::from_slice(&encoded).expect("an encoded value decodes");
        assert_eq!(
            again,
            value,
            "round trip of {}",
            String::from_utf8_lossy(&encoded)
        );
    }
}

/// What every list endpoint does with its filters.
fn filtered(filters: &Filters) {
    let _ = secret::file_object::list_filters(filters);
    if network::list::check(filters).is_ok() {
        network::list::matches(&network::Network::default(), filters);
    }
    let _ = filters.labels("label");
}

/// `Some` on success; a failure must be a 400.
fn refused_with_400<T>(result: Result<T, EngineError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            None
        }
    }
}
