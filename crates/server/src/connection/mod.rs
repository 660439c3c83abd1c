//! One client connection: the WebSocket handshake, a reader that decodes
//! frames and forwards requests to the hub, a writer that drains the
//! connection's queue and sends heartbeat pings, and the dead-peer check.
//!
//! Here: [`serve`], the reader and a connection's own answers; `handshake`:
//! the WebSocket handshake and the `Origin` policy; `write`: the writer;
//! `login`: the token check and failed-login limits, login and resume.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use callinvite_protocol::limits::{CLOSE_GOING_AWAY, CLOSE_MESSAGE_TOO_BIG};
use callinvite_protocol::wire::{decode_client, encode};
use callinvite_protocol::{ClientMessage, ErrorCode, ServerMessage};

use crate::config::Config;
use crate::guard::Permit;
use crate::hub::{sending, Command, ConnHandle, Departure, LoggedIn, Outbound, Sending};
use crate::rate::{Rate, RateLimit, Refill};

mod handshake;
mod login;
mod write;

use handshake::handshake;
use write::write;

/// Numbers connections, so the hub can tell a session's current connection from a stale one.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// WebSocket close code 1007: a text frame that is not UTF-8.
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// WebSocket close code 1008: policy violation (here: too slow to keep up).
const CLOSE_POLICY: u16 = 1008;

/// Serves one accepted connection: the WebSocket handshake here, then the
/// connection in two tasks of its own — a reader ([`read`]) and a writer
/// ([`write`]) — spawned on `tasks`. Split so that an open connection's
/// tasks hold only what an open connection needs: the handshake's state and
/// this function's arguments are gone once it returns.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    permit: Permit,
    hub: mpsc::Sender<Command>,
    config: Arc<Config>,
    stop: CancellationToken,
    tasks: TaskTracker,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(ws) = handshake(stream, peer, &config).await else {
        return;
    };
    config.metrics.connections.inc();
    let (sink, frames) = ws.split();
    let (out, out_rx) = crate::hub::out_queue(config.outbound_queue);
    let kill = CancellationToken::new();
    let writer = tokio::spawn(write(sink, out_rx, kill.clone(), &config));
    let conn = Conn {
        peer,
        hub,
        handle: ConnHandle {
            id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            out,
            kill,
        },
        config,
        session: None,
        // Held until the socket is closed (after the writer has finished).
        permit: Arc::new(permit),
        failed_logins: 0,
        close: None,
    };
    tasks.spawn(read(frames, conn, writer, stop));
}

/// The reader: decodes frames, answers what the connection answers itself,
/// hands requests to the hub and watches the heartbeat and the login
/// deadline; when the connection ends, tells the hub and lets the writer
/// flush a close frame. (Not an `async fn`: its arguments are used in place
/// instead of being copied into the task once more.)
#[allow(clippy::manual_async_fn)]
fn read<S>(
    mut frames: futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<S>>,
    mut conn: Conn,
    writer: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    async move {
        // Only the state is kept across frames (24 bytes); the `Rate` is
        // made from the config at each frame.
        let mut messages = RateLimit::default();
        let login_deadline = tokio::time::Instant::now() + conn.config.login_timeout;
        // A connection that just stops (no close frame) may come back and resume.
        let mut how = Departure::Lost;
        loop {
            // A connection must log in soon, or it only holds a slot: until it
            // has, a read waits no longer than the login deadline either (one
            // timer, not two, in every connection's task).
            let wait = match conn.session {
                None => login_deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(conn.config.heartbeat),
                Some(_) => conn.config.heartbeat,
            };
            let frame = tokio::select! {
                f = timeout(wait, frames.next()) => f,
                _ = conn.handle.kill.cancelled() => {
                    info!(peer = %conn.peer, "closing a connection that does not keep up");
                    break;
                }
                // The hub has said goodbye to logged-in devices; whoever is still here is closed now.
                _ = stop.cancelled() => {
                    let _ = conn.handle.out.try_send(Outbound::Close(CLOSE_GOING_AWAY, "server shutting down"));
                    how = Departure::Closed;
                    break;
                }
            };
            match frame {
                Err(_)
                    if conn.session.is_none() && tokio::time::Instant::now() >= login_deadline =>
                {
                    info!(peer = %conn.peer, "no login within {:?}: closing", conn.config.login_timeout);
                    let _ = conn
                        .handle
                        .out
                        .send(Outbound::Close(CLOSE_POLICY, "log in sooner"))
                        .await;
                    break;
                }
                Err(_) => {
                    info!(peer = %conn.peer, "no frame within the heartbeat window: connection is dead");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(WsError::Capacity(e)))) => {
                    warn!(peer = %conn.peer, error = %e, "frame too big: closing with 1009");
                    let _ = conn
                        .handle
                        .out
                        .send(Outbound::Close(CLOSE_MESSAGE_TOO_BIG, "message too big"))
                        .await;
                    how = Departure::Closed;
                    break;
                }
                Ok(Some(Err(WsError::Utf8(e)))) => {
                    info!(peer = %conn.peer, error = %e, "text frame is not UTF-8: closing with 1007");
                    let _ = conn
                        .handle
                        .out
                        .send(Outbound::Close(
                            CLOSE_INVALID_PAYLOAD,
                            "text frames must be UTF-8",
                        ))
                        .await;
                    how = Departure::Closed;
                    break;
                }
                Ok(Some(Err(e))) => {
                    debug!(peer = %conn.peer, error = %e, "connection error");
                    break;
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    if !messages.try_take(
                        &message_rate(&conn.config),
                        tokio::time::Instant::now().into_std(),
                    ) {
                        let req = decode_client(text.as_str()).ok().and_then(|m| m.req());
                        conn.rate_limited(req).await;
                        continue;
                    }
                    if conn.on_text(text.as_str()).await {
                        // Logged out: the hub sends `ok` and a close frame; nothing more is read.
                        how = Departure::Logout;
                        break;
                    }
                    if let Some(reason) = conn.close {
                        // Too many failed logins: the error went out; now the close frame.
                        let _ = conn
                            .handle
                            .out
                            .send(Outbound::Close(CLOSE_POLICY, reason))
                            .await;
                        how = Departure::Closed;
                        break;
                    }
                }
                Ok(Some(Ok(Message::Binary(_)))) => {
                    // Binary frames count toward the message rate like any other.
                    if !messages.try_take(
                        &message_rate(&conn.config),
                        tokio::time::Instant::now().into_std(),
                    ) {
                        conn.rate_limited(None).await;
                        continue;
                    }
                    conn.reply(ServerMessage::error(
                        None,
                        ErrorCode::BinaryNotSupported,
                        "binary frames are not part of the protocol; send JSON text frames",
                    ))
                    .await;
                }
                Ok(Some(Ok(Message::Close(_)))) => {
                    // The client meant to leave: its session ends now, no resume.
                    how = Departure::Closed;
                    break;
                }
                Ok(Some(Ok(_))) => {} // ping, pong: liveness only
            }
        }
        if let Some(LoggedIn { device, .. }) = conn.session.take() {
            let gone = Command::Gone {
                device,
                conn: conn.handle.id,
                how,
            };
            sending(&conn.hub, gone).await;
        }
        conn.config.metrics.connections.dec();
        let permit = conn.permit.clone();
        drop(conn);
        // Let the writer flush a close frame; it ends once the hub drops its sender.
        let abort = writer.abort_handle();
        if timeout(Duration::from_secs(2), writer).await.is_err() {
            abort.abort();
        }
        drop(frames);
        drop(permit);
    }
}

/// Messages allowed per second on one connection: a bucket of
/// `--messages-per-second` tokens (at least one) refilled continuously.
fn message_rate(config: &Config) -> Rate {
    Rate {
        limit: config.messages_per_second.max(1),
        period: Duration::from_secs(1),
        refill: Refill::Steady,
    }
}

struct Conn {
    peer: SocketAddr,
    hub: mpsc::Sender<Command>,
    /// This connection's number, writer queue and kill switch, as the hub gets them.
    handle: ConnHandle,
    config: Arc<Config>,
    /// Set once logged in (or resumed).
    session: Option<LoggedIn>,
    /// Its place among the connections of its address and of the server.
    permit: Arc<Permit>,
    /// Logins refused on this connection for their token.
    failed_logins: u32,
    /// Set when the connection must be closed (1008) after the reply just sent.
    close: Option<&'static str>,
}

impl Conn {
    /// Queues a reply of this connection's own (see [`Sending`] for why it
    /// is not an `async fn`: the message would be held by the future).
    fn reply(&self, msg: ServerMessage) -> Sending<'_> {
        self.handle.out.send(Outbound::Text(encode(&msg).into()))
    }

    /// Answers a frame dropped for the message rate.
    fn rate_limited(&self, req: Option<u64>) -> Sending<'_> {
        let limit = self.config.messages_per_second;
        self.reply(ServerMessage::error(
            req,
            ErrorCode::RateLimited,
            format!("more than {limit} messages per second; this one was dropped — slow down"),
        ))
    }

    /// Handles one text frame. Returns true when it was a logout.
    async fn on_text(&mut self, text: &str) -> bool {
        let msg = match decode_client(text) {
            Ok(msg) => msg,
            Err((req, e)) => {
                debug!(peer = %self.peer, error = %e, "bad frame");
                self.reply(ServerMessage::error(req, e.code(), e.to_string()))
                    .await;
                return false;
            }
        };
        match (msg, &self.session) {
            (ClientMessage::Login { req, .. } | ClientMessage::Resume { req, .. }, Some(_)) => {
                self.reply(ServerMessage::error(
                    req,
                    ErrorCode::AlreadyLoggedIn,
                    "this connection is already logged in; log out first",
                ))
                .await;
            }
            // Boxed: once per connection, and it keeps every idle connection's task small.
            (ClientMessage::Login { req, user, token }, None) => {
                Box::pin(self.login(req, user, token)).await
            }
            (
                ClientMessage::Resume {
                    req,
                    session,
                    last_seq,
                },
                None,
            ) => Box::pin(self.resume(req, session, last_seq)).await,
            (msg, None) => {
                self.reply(ServerMessage::error(
                    msg.req(),
                    ErrorCode::NotLoggedIn,
                    "log in first",
                ))
                .await;
            }
            (msg @ ClientMessage::Logout { .. }, Some(LoggedIn { device, .. })) => {
                let device = *device;
                self.session = None;
                let conn = self.handle.id;
                sending(&self.hub, Command::Request { device, conn, msg }).await;
                return true;
            }
            (msg, Some(LoggedIn { device, .. })) => {
                let request = Command::Request {
                    device: *device,
                    conn: self.handle.id,
                    msg,
                };
                sending(&self.hub, request).await;
            }
        }
        false
    }
}
