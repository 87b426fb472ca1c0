//! Forwarding of Control API calls from a follower to the leader, so that any manager answers
//! any call.
//!
//! [`ForwardToLeader`] wraps the Control service (below the authorizing interceptor on the
//! remote API, so a caller is checked by the manager it reached before anything is
//! forwarded). On the leader a call goes straight to the service. On a follower the call's
//! HTTP/2 request is sent, unchanged but for one header, to the leader over a mutual-TLS
//! channel with this manager's certificate, and the leader's answer is returned as it is:
//! the caller cannot tell the difference, except for the extra hop's latency.
//!
//! Invariants:
//! - **One hop.** A forwarded call carries `shoal-forwarded-by: <node ID>`. A manager that
//!   receives a forwarded call and is not the leader (leadership moved while the call
//!   travelled) refuses it with UNAVAILABLE rather than forwarding it again, so calls cannot
//!   loop between managers that disagree about the leader; the caller retries.
//! - **Authorization first.** The follower authorizes its caller (managers only on the remote
//!   API; the local socket is trusted), then speaks to the leader as itself — a manager — so
//!   the leader authorizes the forwarding manager. A worker's certificate never reaches the
//!   leader by way of a follower.
//! - With no leader known (an election, or lost quorum) the call fails at once with the
//!   reason, as a call on the leader would; a forwarded call in flight when leadership moves
//!   fails at once (UNAVAILABLE, outcome unknown) instead of waiting on a leader this follower
//!   may no longer reach.
//!
//! Departure from SwarmKit: SwarmKit generates a proxy per gRPC service
//! (`protobuf/plugin/raftproxy`) that re-issues each call typed; here one service forwards
//! raw HTTP/2 requests, so every Control call (present and future) is forwarded without
//! per-method code. Its hop limit is the same idea as SwarmKit's `redirect` metadata check.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use shoal_raft::RaftHandle;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::Channel;

/// The header that marks a forwarded call, naming the manager that forwarded it.
pub const FORWARDED_BY: &str = "shoal-forwarded-by";

/// A Control service that forwards calls to the leader when this manager does not lead.
#[derive(Clone)]
pub struct ForwardToLeader<S> {
    inner: S,
    raft: RaftHandle,
    forwarder: Arc<Forwarder>,
}

/// What forwarding needs: this manager's credentials and name, and a channel to the leader.
struct Forwarder {
    dialer: shoal_tls::Dialer,
    node_id: http::HeaderValue,
    /// The channel to the current leader, by its address.
    leader: Mutex<Option<(String, Channel)>>,
}

impl<S> ForwardToLeader<S> {
    /// Wraps `inner`; `dialer` carries this manager's credentials, `node_id` names it.
    pub fn new(inner: S, raft: RaftHandle, dialer: shoal_tls::Dialer, node_id: &str) -> Self {
        Self {
            inner,
            raft,
            forwarder: Arc::new(Forwarder {
                dialer,
                node_id: http::HeaderValue::from_str(node_id)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
                leader: Mutex::new(None),
            }),
        }
    }
}

impl<S: NamedService> NamedService for ForwardToLeader<S> {
    const NAME: &'static str = S::NAME;
}

/// What a follower does with a call.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// This manager leads: serve it.
    Serve,
    /// Send it to the leader at this address.
    Forward(String),
    /// Refuse it with this status.
    Refuse(String),
}

/// Decides where a call goes, from whether this manager leads, the leader's address if
/// known, and whether the call was forwarded already.
fn route(is_leader: bool, leader_addr: Option<String>, forwarded_by: Option<&str>) -> Route {
    if is_leader {
        return Route::Serve;
    }
    if let Some(by) = forwarded_by {
        return Route::Refuse(format!(
            "manager {by} forwarded this call here, but this manager is no longer the leader \
             (leadership is moving); retry the call"
        ));
    }
    match leader_addr {
        Some(addr) => Route::Forward(addr),
        // The reason (election, lost quorum) comes from Raft's own status.
        None => Route::Serve,
    }
}

impl Forwarder {
    async fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut leader = self.leader.lock().await;
        if let Some((known, channel)) = leader.as_ref()
            && known == addr
        {
            return Ok(channel.clone());
        }
        let channel = self.dialer.connect(addr).await.map_err(|e| {
            Status::unavailable(format!(
                "this manager is not the leader and cannot reach the leader at {addr} to \
                 forward the call ({e}); retry, or call the leader directly"
            ))
        })?;
        *leader = Some((addr.to_string(), channel.clone()));
        Ok(channel)
    }
}

impl<S> Service<http::Request<Body>> for ForwardToLeader<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let status = self.raft.status();
        let leader_addr = status
            .leader
            .and_then(|l| status.members.get(&l))
            .map(|m| m.addr.clone());
        let forwarded_by = request
            .headers()
            .get(FORWARDED_BY)
            .map(|v| v.to_str().unwrap_or("?").to_string());
        match route(status.is_leader, leader_addr, forwarded_by.as_deref()) {
            Route::Serve => {
                let mut inner = self.inner.clone();
                Box::pin(async move { inner.call(request).await })
            }
            Route::Refuse(message) => {
                Box::pin(async move { Ok(Status::unavailable(message).into_http()) })
            }
            Route::Forward(addr) => {
                let this = self.forwarder.clone();
                // Leadership moving (this follower hears a new leader, or loses the one it
                // forwarded to) ends the call at once: a leader cut off from this follower
                // would otherwise hold it until the caller's deadline.
                let leader = status.leader;
                let mut moves = self.raft.watch_status();
                Box::pin(async move {
                    let moved = async move {
                        let _ = moves.wait_for(|s| s.leader != leader).await;
                    };
                    let forwarded = async {
                        let mut channel = this.channel(&addr).await?;
                        request
                            .headers_mut()
                            .insert(FORWARDED_BY, this.node_id.clone());
                        let ready = std::future::poll_fn(|cx| channel.poll_ready(cx)).await;
                        Ok::<_, Status>(match ready {
                            Ok(()) => channel.call(request).await,
                            Err(e) => Err(e),
                        })
                    };
                    let answer = tokio::select! {
                        answer = forwarded => match answer {
                            Ok(answer) => answer,
                            Err(status) => return Ok(status.into_http()),
                        },
                        () = moved => {
                            this.leader.lock().await.take();
                            return Ok(Status::unavailable(format!(
                                "leadership moved while the call was forwarded to {addr}; it \
                                 may or may not have been applied: read again, then retry"
                            ))
                            .into_http());
                        }
                    };
                    match answer {
                        Ok(response) => Ok(response),
                        Err(e) => {
                            // Drop the channel: the next call dials the leader afresh.
                            this.leader.lock().await.take();
                            Ok(Status::unavailable(format!(
                                "forwarding the call to the leader at {addr} failed ({e}); retry"
                            ))
                            .into_http())
                        }
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_serves_and_followers_forward_once() {
        assert_eq!(route(true, None, None), Route::Serve);
        assert_eq!(
            route(true, None, Some("m2")),
            Route::Serve,
            "forwarded to the leader"
        );
        assert_eq!(
            route(false, Some("10.0.0.1:4242".into()), None),
            Route::Forward("10.0.0.1:4242".into())
        );
        match route(false, Some("10.0.0.1:4242".into()), Some("m2")) {
            Route::Refuse(message) => {
                assert!(
                    message.contains("manager m2 forwarded this call"),
                    "{message}"
                );
                assert!(message.contains("retry"), "{message}");
            }
            other => panic!("a second hop: {other:?}"),
        }
        // No leader known: the service answers with Raft's reason.
        assert_eq!(route(false, None, None), Route::Serve);
    }
}
