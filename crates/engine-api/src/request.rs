//! What a handler gets and what it answers: a parsed request and a [`Reply`].

use bytes::Bytes;
use hyper::{HeaderMap, Method};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::query::Query;

/// The API version a request asked for in its path (`/v1.41/…`), or the highest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    /// The highest version served (docker 28.2's).
    pub const MAX: ApiVersion = ApiVersion {
        major: 1,
        minor: 50,
    };
    /// The lowest version served (swarm mode's first).
    pub const MIN: ApiVersion = ApiVersion {
        major: 1,
        minor: 24,
    };

    /// `1.41` → version 1.41.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        if major.is_empty()
            || minor.is_empty()
            || !major.bytes().all(|b| b.is_ascii_digit())
            || !minor.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// Whether this version is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ApiVersion { major, minor }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A request, routed: the path without its version prefix, split into segments.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The path's segments after the version prefix, percent-decoded.
    pub segments: Vec<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: ApiVersion,
}

impl Request {
    /// Path segment `i` (0 is the first after the version).
    pub fn segment(&self, i: usize) -> &str {
        self.segments.get(i).map(String::as_str).unwrap_or_default()
    }
}

/// A handler's answer.
pub enum Reply {
    /// A JSON body.
    Json(u16, Vec<u8>),
    /// No body.
    Empty(u16),
    /// A `text/plain` body.
    Text(u16, String),
    /// A body streamed as it comes, with its content type; the stream ends when the sender
    /// is dropped.
    Stream(u16, &'static str, mpsc::Receiver<Bytes>),
    /// Another reply with extra headers.
    Headers(Vec<(&'static str, String)>, Box<Reply>),
}

impl Reply {
    /// 200 with `value` as JSON.
    pub fn json(value: &impl Serialize) -> Result<Reply, EngineError> {
        Self::json_with(200, value)
    }

    /// `status` with `value` as JSON.
    pub fn json_with(status: u16, value: &impl Serialize) -> Result<Reply, EngineError> {
        serde_json::to_vec(value)
            .map(|body| Reply::Json(status, body))
            .map_err(|e| EngineError::internal(format!("encoding the answer: {e}")))
    }
}

/// What every handler returns.
pub type Result<T = Reply, E = EngineError> = std::result::Result<T, E>;
