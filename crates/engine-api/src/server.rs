//! The HTTP shell: accepts connections on the Engine API socket, strips the version prefix,
//! hands each request to [`crate::routes::route`], and writes the answer with the headers
//! moby sends on every response (`Api-Version`, `Ostype`, `Server`).
//!
//! Request bodies are never logged (they carry secrets); a request is logged at debug level
//! as its method, path and status.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::backend::Backend;
use crate::error::EngineError;
use crate::query::Query;
use crate::request::{ApiVersion, Reply, Request};

/// The largest request body accepted (a secret is at most 500 KiB in Docker).
const MAX_BODY: usize = 16 << 20;

type Body = BoxBody<Bytes, Infallible>;

/// Serves the Engine API on `listener` until `stop` turns true; then drops every open
/// connection (log streams included) and returns once they are gone.
pub async fn serve(listener: UnixListener, backend: Backend, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let backend = backend.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let backend = backend.clone();
                            async move { Ok::<_, Infallible>(answer(&backend, request).await) }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!("engine API connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("engine API socket: accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Splits `/v1.41/services/x` into the version and the segments `["services", "x"]`.
pub fn split_path(path: &str) -> Result<(ApiVersion, Vec<String>), EngineError> {
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode(s)
                .ok_or_else(|| EngineError::bad_request(format!("invalid path segment {s:?}")))
        })
        .collect::<Result<_, _>>()?;
    let mut version = ApiVersion::MAX;
    if let Some(first) = segments.first()
        && let Some(asked) = first.strip_prefix('v').and_then(ApiVersion::parse)
        && path.starts_with(&format!("/{first}/"))
    {
        if asked > ApiVersion::MAX {
            return Err(EngineError::bad_request(format!(
                "client version {asked} is too new. Maximum supported API version is {}",
                ApiVersion::MAX
            )));
        }
        if asked < ApiVersion::MIN {
            return Err(EngineError::bad_request(format!(
                "client version {asked} is too old. Minimum supported API version is {}, please \
                 upgrade your client to a newer version",
                ApiVersion::MIN
            )));
        }
        version = asked;
        segments.remove(0);
    }
    Ok((version, segments))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn answer(backend: &Backend, request: hyper::Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let reply = match read(request).await {
        Ok(request) => crate::routes::route(backend, request).await,
        Err(e) => Err(e),
    };
    let response = match reply {
        Ok(reply) => render(reply, method == Method::HEAD),
        Err(e) => error_response(&e),
    };
    tracing::debug!(
        "engine API {method} {path} → {}",
        response.status().as_u16()
    );
    response
}

async fn read(request: hyper::Request<Incoming>) -> Result<Request, EngineError> {
    let (parts, body) = request.into_parts();
    let (version, segments) = split_path(parts.uri.path())?;
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| EngineError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    Ok(Request {
        method: parts.method,
        segments,
        query: Query::parse(parts.uri.query()),
        headers: parts.headers,
        body,
        version,
    })
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn base(status: u16) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("Api-Version", ApiVersion::MAX.to_string())
        .header("Ostype", "linux")
        .header("Docker-Experimental", "false")
        .header(
            "Server",
            concat!("Shoal/", env!("CARGO_PKG_VERSION"), " (linux)"),
        )
}

fn error_response(e: &EngineError) -> Response<Body> {
    base(e.status)
        .header(CONTENT_TYPE, "application/json")
        .body(full(e.body()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn render(reply: Reply, head: bool) -> Response<Body> {
    let (builder, body) = build(base(200), reply);
    let mut response = builder
        .body(body)
        .unwrap_or_else(|e| error_response(&EngineError::internal(e.to_string())));
    if head {
        *response.body_mut() = full(Bytes::new());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    response
}

fn build(
    builder: hyper::http::response::Builder,
    reply: Reply,
) -> (hyper::http::response::Builder, Body) {
    match reply {
        Reply::Json(status, body) => (
            builder
                .status(status)
                .header(CONTENT_TYPE, "application/json"),
            full(body),
        ),
        Reply::Empty(status) => (builder.status(status), full(Bytes::new())),
        Reply::Text(status, text) => (
            builder
                .status(status)
                .header(CONTENT_TYPE, "text/plain; charset=utf-8"),
            full(text),
        ),
        Reply::Stream(status, content_type, chunks) => (
            builder.status(status).header(CONTENT_TYPE, content_type),
            StreamBody::new(
                ReceiverStream::new(chunks).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
            )
            .boxed(),
        ),
        Reply::Headers(headers, reply) => {
            let builder = headers
                .into_iter()
                .fold(builder, |b, (name, value)| b.header(name, value));
            build(builder, *reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_are_stripped_and_checked() {
        let (v, s) = split_path("/v1.41/services/web").unwrap();
        assert_eq!(
            v,
            ApiVersion {
                major: 1,
                minor: 41
            }
        );
        assert_eq!(s, ["services", "web"]);
        let (v, s) = split_path("/services").unwrap();
        assert_eq!(v, ApiVersion::MAX);
        assert_eq!(s, ["services"]);
        // `/version` is an endpoint, not a version prefix.
        let (_, s) = split_path("/version").unwrap();
        assert_eq!(s, ["version"]);
        let e = split_path("/v1.52/info").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            "client version 1.52 is too new. Maximum supported API version is 1.50"
        );
        assert_eq!(split_path("/v1.12/info").unwrap_err().status, 400);
        let (_, s) = split_path("/v1.50/distribution/library%2Fbusybox:latest/json").unwrap();
        assert_eq!(s, ["distribution", "library/busybox:latest", "json"]);
    }
}
