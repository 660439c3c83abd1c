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
//! - `connection`: one task per connection — handshake, frame decoding,
//!   heartbeat, writer queue.
//! - [`metrics`] and [`http`]: Prometheus metrics and `/healthz` on an operations port.
//! - `hub`: one task that owns all shared state and applies requests in
//!   arrival order, driving the sans-I/O [`callinvite_protocol::invitation::Record`]s
//!   (`hub/mod.rs`); sessions, their numbered messages and resume
//!   (`hub/sessions.rs`); what other nodes say and what to do when one is gone
//!   (`hub/nodes.rs`).
//! - [`cluster`]: the `Bus` a hub talks to other nodes through — `SingleNode`
//!   (none) or `Cluster` (Redis pub/sub, missed calls in Redis).
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
pub mod http;
mod hub;
pub mod ice;
pub mod metrics;
pub mod missed;
pub mod tls;

pub use config::Config;

/// Serves connections on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    info!(%addr, scheme, "serving");
    if config.secret.is_some() {
        info!(%addr, "listening; logins need a token signed with the configured secret");
    } else {
        warn!(%addr, "listening with NO secret: the server is OPEN and anyone can log in as any user id (development only; pass --secret-file to require tokens)");
    }
    let config = Arc::new(config);
    let (hub_tx, hub_rx) = mpsc::channel(4096);
    let mut missed =
        missed::MissedCalls::open(config.missed.clone()).map_err(std::io::Error::other)?;
    let bus: Box<dyn cluster::Bus> = match &config.cluster {
        Some(c) => {
            let (cluster, snapshot) = cluster::join(c.clone(), hub_tx.clone())
                .await
                .map_err(std::io::Error::other)?;
            missed.seed(snapshot);
            Box::new(cluster)
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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (hub, config2, stop) = (hub_tx.clone(), config.clone(), stop_connections.clone());
                    match config.tls.clone() {
                        None => {
                            connections.spawn(connection::serve(stream, peer, hub, config2, stop));
                        }
                        Some(tls) => {
                            connections.spawn(async move {
                                match tokio::time::timeout(config2.handshake_timeout, tls.0.accept(stream)).await {
                                    Ok(Ok(stream)) => connection::serve(stream, peer, hub, config2, stop).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
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
