//! The callinvite signaling server.
//!
//! Clients connect over WebSocket, log in with a user id (and a token when the
//! server has a secret), and exchange the JSON messages of
//! [`callinvite_protocol::wire`]. The server routes invitations by user id to
//! every device of the callee, owns every invitation timer, and tracks presence.
//!
//! Layout:
//! - [`config`]: every window and limit, with defaults.
//! - [`auth`]: HS256 tokens (mint and verify).
//! - `connection`: one task per connection — handshake (with the `Origin`
//!   policy), frame decoding, token check, heartbeat, writer queue.
//! - [`guard`]: what one source address, and the server as a whole, may
//!   hold: open connections (capped per address and in all, below the
//!   file-descriptor limit) and failed logins.
//! - `rate`: the one rate limiter (sans-I/O, `now` passed in) behind the
//!   message rate of a connection, the logins of a user id and the failed
//!   logins of an address.
//! - [`metrics`] and `http`: Prometheus metrics and `/healthz` on an operations
//!   port (feature `metrics`; without it the gauges are kept but not served).
//! - `tls`: serving `wss://` from PEM files (feature `tls`).
//! - `hub`: one task that owns all shared state and applies requests in
//!   arrival order, split by what each part owns: sessions and their outboxes
//!   (the sans-I/O [`callinvite_protocol::session::ServerSession`]; login and
//!   resume), presence, the invitations owned here (the sans-I/O
//!   [`callinvite_protocol::invitation::Record`]s with their timers and
//!   indexes), and what other nodes say (`hub/nodes.rs`). It reads no clock
//!   itself, so its unit tests feed it commands at a chosen instant (the
//!   cluster's paths with several hubs on an in-memory `Bus`).
//! - [`cluster`]: the `Bus` a hub talks to other nodes through — `SingleNode`
//!   (none) or `Cluster` (Redis pub/sub, missed calls in Redis; in
//!   `cluster/redis.rs`, feature `cluster`: without it `Config::cluster` is
//!   refused).
//! - [`missed`]: missed calls of offline users, optionally kept in a file.
//! - [`ice`]: the STUN/TURN servers handed to clients for their calls' media,
//!   with short-lived TURN credentials (coturn's shared-secret scheme).
//!
//! Start it with [`run`], giving it a bound listener (tests bind
//! `127.0.0.1:0`) and a [`CancellationToken`] that stops it.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub mod auth;
pub mod cluster;
pub mod config;
mod connection;
pub mod guard;
#[cfg(feature = "metrics")]
pub mod http;
mod hub;
pub mod ice;
pub mod metrics;
pub mod missed;
mod outq;
mod rate;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::Config;
pub use guard::raise_fd_limit;

/// Serves connections on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    #[cfg(feature = "tls")]
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    #[cfg(not(feature = "tls"))]
    let scheme = "ws";
    info!(%addr, scheme, "serving");
    if config.secret.is_some() {
        info!(%addr, "listening; logins need a token signed with the configured secret");
    } else {
        warn!(%addr, "listening with NO secret: the server is OPEN and anyone can log in as any user id (development only; pass --secret-file to require tokens)");
    }
    let config = Arc::new(config);
    let (hub_tx, hub_rx) = mpsc::channel(4096);
    // Only a cluster seeds it (with the missed calls kept in Redis).
    #[cfg_attr(not(feature = "cluster"), allow(unused_mut))]
    let mut missed =
        missed::MissedCalls::open(config.missed.clone()).map_err(std::io::Error::other)?;
    let bus: Box<dyn cluster::Bus> = match &config.cluster {
        #[cfg(feature = "cluster")]
        Some(c) => {
            let (cluster, snapshot) = cluster::join(c.clone(), hub_tx.clone())
                .await
                .map_err(std::io::Error::other)?;
            missed.seed(snapshot);
            Box::new(cluster)
        }
        #[cfg(not(feature = "cluster"))]
        Some(c) => {
            return Err(std::io::Error::other(cluster::ClusterError::NotBuiltIn {
                url: c.redis_url.clone(),
            }))
        }
        None => Box::new(cluster::SingleNode),
    };
    let hub = tokio::spawn(hub::run(
        hub::Hub::new((*config).clone(), missed, bus),
        hub_rx,
        shutdown.clone(),
    ));
    let connections = TaskTracker::new();
    let stop_connections = CancellationToken::new();
    let guard = guard::Guard::new(&config);
    if guard.max_connections() != usize::MAX {
        info!(
            max_connections = guard.max_connections(),
            max_connections_per_address = config.max_connections_per_address,
            fd_limit = ?guard::fd_limits().map(|(soft, _)| soft),
            "connection caps"
        );
    }
    let mut accept_failures = guard::Throttle::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Counted from here until the socket is closed: each holds a descriptor.
                    let permit = match guard.admit(peer.ip()) {
                        Ok(permit) => permit,
                        Err(refusal) => {
                            // Closed at once, with a word for plain HTTP clients (best effort).
                            #[cfg(feature = "tls")]
                            let plain = config.tls.is_none();
                            #[cfg(not(feature = "tls"))]
                            let plain = true;
                            if plain {
                                let _ = stream.try_write(refusal.http_response().as_bytes());
                            }
                            drop(stream);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (hub, config2, stop) = (hub_tx.clone(), config.clone(), stop_connections.clone());
                    let tasks = connections.clone();
                    #[cfg(feature = "tls")]
                    let tls = config.tls.clone();
                    #[cfg(not(feature = "tls"))]
                    let tls: Option<std::convert::Infallible> = None;
                    match tls {
                        None => {
                            connections.spawn(connection::serve(stream, peer, permit, hub, config2, stop, tasks));
                        }
                        #[cfg(not(feature = "tls"))]
                        Some(never) => match never {},
                        #[cfg(feature = "tls")]
                        Some(tls) => {
                            connections.spawn(async move {
                                match tokio::time::timeout(config2.handshake_timeout, tls.0.accept(stream)).await {
                                    Ok(Ok(stream)) => connection::serve(stream, peer, permit, hub, config2, stop, tasks).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning,
                    // and say so once in a while rather than ten times a second.
                    if let Some(skipped) = accept_failures.hit(tokio::time::Instant::now()) {
                        warn!(error = %e, failures_since_last_report = skipped, open = config.metrics.tcp_connections.get(), "accept failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
    // Graceful shutdown: no new connections; the hub ends every invitation and
    // call with `server_shutdown` and says `going_away` to every device; clients
    // get `shutdown_grace` to read that and close; then the rest are closed.
    drop(listener);
    info!("shutting down");
    let _ = hub.await;
    connections.close();
    if tokio::time::timeout(config.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        stop_connections.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), connections.wait()).await;
    }
    info!("stopped");
    Ok(())
}

// Only a server built without `cluster` has this refusal to make; run with
// `cargo test -p callinvite-server --no-default-features --lib`.
#[cfg(all(test, not(feature = "cluster")))]
mod tests {
    use super::*;

    /// Asked to join a cluster on Redis, a server built without the
    /// `cluster` feature does not start, and says why and what to do.
    #[tokio::test]
    async fn a_cluster_is_refused_by_a_server_built_without_it() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let config = Config {
            cluster: Some(cluster::ClusterConfig::new("redis://127.0.0.1:6379")),
            ..Config::default()
        };
        let stop = CancellationToken::new();
        let error = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            run(listener, config, stop),
        )
        .await
        .expect("refused at once, not serving")
        .expect_err("no cluster without the feature");
        let text = error.to_string();
        assert!(
            text.contains("built without the `cluster` feature")
                && text.contains("redis://127.0.0.1:6379")
                && text.contains("leave `cluster` unset"),
            "{text}"
        );
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<cluster::ClusterError>());
        assert!(
            matches!(inner, Some(cluster::ClusterError::NotBuiltIn { url }) if url == "redis://127.0.0.1:6379"),
            "{error:?}"
        );
    }
}
