//! The route table: method and path → the endpoint's handler (one file per endpoint, grouped
//! by object kind).

use hyper::Method;

use crate::backend::Backend;
use crate::error::EngineError;
use crate::request::{Request, Result};
use crate::{config, network, node, secret, service, swarm, system, task};

/// Runs the handler of `request`'s endpoint.
pub async fn route(backend: &Backend, request: Request) -> Result {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let method = request.method.clone();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    match segments.as_slice() {
        ["_ping"] if get || method == Method::HEAD => system::ping::handle(backend, request).await,
        ["version"] if get => system::version::handle(backend, request).await,
        ["info"] if get => system::info::handle(backend, request).await,
        ["distribution", .., "json"] if get && segments.len() > 2 => {
            system::distribution::handle(backend, request).await
        }

        ["swarm"] if get => swarm::inspect::handle(backend, request).await,
        ["swarm", "init"] if post => swarm::init::handle(backend, request).await,
        ["swarm", "join"] if post => swarm::join::handle(backend, request).await,
        ["swarm", "leave"] if post => swarm::leave::handle(backend, request).await,
        ["swarm", "update"] if post => swarm::update::handle(backend, request).await,
        ["swarm", "unlockkey"] if get => swarm::unlockkey::handle(backend, request).await,
        ["swarm", "unlock"] if post => swarm::unlock::handle(backend, request).await,

        ["nodes"] if get => node::list::handle(backend, request).await,
        ["nodes", _] if get => node::inspect::handle(backend, request).await,
        ["nodes", _] if delete => node::remove::handle(backend, request).await,
        ["nodes", _, "update"] if post => node::update::handle(backend, request).await,

        ["services"] if get => service::list::handle(backend, request).await,
        ["services", "create"] if post => service::create::handle(backend, request).await,
        ["services", _] if get => service::inspect::handle(backend, request).await,
        ["services", _] if delete => service::remove::handle(backend, request).await,
        ["services", _, "update"] if post => service::update::handle(backend, request).await,
        ["services", _, "logs"] if get => service::logs::handle(backend, request).await,

        ["tasks"] if get => task::list::handle(backend, request).await,
        ["tasks", _] if get => task::inspect::handle(backend, request).await,
        ["tasks", _, "logs"] if get => task::logs::handle(backend, request).await,

        ["secrets"] if get => secret::list::handle(backend, request).await,
        ["secrets", "create"] if post => secret::create::handle(backend, request).await,
        ["secrets", _] if get => secret::inspect::handle(backend, request).await,
        ["secrets", _] if delete => secret::remove::handle(backend, request).await,
        ["secrets", _, "update"] if post => secret::update::handle(backend, request).await,

        ["configs"] if get => config::list::handle(backend, request).await,
        ["configs", "create"] if post => config::create::handle(backend, request).await,
        ["configs", _] if get => config::inspect::handle(backend, request).await,
        ["configs", _] if delete => config::remove::handle(backend, request).await,
        ["configs", _, "update"] if post => config::update::handle(backend, request).await,

        ["networks"] if get => network::list::handle(backend, request).await,
        ["networks", "create"] if post => network::create::handle(backend, request).await,
        ["networks", _] if get => network::inspect::handle(backend, request).await,
        ["networks", _] if delete => network::remove::handle(backend, request).await,

        _ => Err(not_served(&method, &request.segments)),
    }
}

/// The answer for a path Shoal does not serve.
fn not_served(method: &Method, segments: &[String]) -> EngineError {
    let path = format!("/{}", segments.join("/"));
    let known = matches!(
        segments.first().map(String::as_str),
        Some(
            "_ping"
                | "version"
                | "info"
                | "distribution"
                | "swarm"
                | "nodes"
                | "services"
                | "tasks"
                | "secrets"
                | "configs"
                | "networks"
        )
    );
    if known {
        EngineError::new(405, format!("{method} {path} is not allowed"))
    } else {
        EngineError::not_found(format!(
            "page not found: Shoal serves the swarm-mode part of the Docker Engine API; {method} \
             {path} is not part of it"
        ))
    }
}
