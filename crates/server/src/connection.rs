//! One client connection: the WebSocket handshake, a reader that decodes
//! frames and forwards requests to the hub, a writer that drains the
//! connection's queue and sends heartbeat pings, and the dead-peer check.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, timeout, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use callinvite_protocol::limits::{CLOSE_GOING_AWAY, CLOSE_MESSAGE_TOO_BIG};
use callinvite_protocol::wire::{decode_client, encode};
use callinvite_protocol::{ClientMessage, ErrorCode, ServerMessage, UserId};

use crate::config::Config;
use crate::guard::Permit;
use crate::hub::{sending, Command, ConnHandle, Departure, LoggedIn, Outbound, Sending};
use crate::rate::{Rate, RateLimit, Refill};

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

/// The writer: the only place that writes frames, so replies keep their
/// order. It drains the connection's queue and sends heartbeat pings; a
/// write that takes longer than the heartbeat means the peer stopped reading.
fn write<S>(
    mut sink: futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<S>, Message>,
    mut out_rx: crate::hub::OutRx,
    writer_kill: CancellationToken,
    config: &Config,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ping_every = (config.heartbeat / 3).max(Duration::from_millis(100));
    let write_timeout = config.heartbeat;
    async move {
        let mut ping = interval(ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let mut frame = tokio::select! {
                next = out_rx.recv() => match next {
                    Some(Outbound::Text(text)) => Message::text(text),
                    Some(Outbound::Close(code, reason)) => {
                        let _ = timeout(write_timeout, sink.send(close_frame(code, reason))).await;
                        break;
                    }
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
                // Too slow: the queue is full, so the close frame goes straight to the socket.
                _ = writer_kill.cancelled() => {
                    let _ = timeout(write_timeout, sink.send(close_frame(CLOSE_POLICY, "too slow: outbound queue full"))).await;
                    break;
                }
            };
            // Everything already queued (up to 64 frames) goes out with one
            // flush: each is buffered as the next one is taken, the last sent.
            let mut close = None;
            if matches!(frame, Message::Text(_)) {
                for _ in 1..64 {
                    let next = match out_rx.try_recv() {
                        Ok(Outbound::Text(t)) => Message::text(t),
                        Ok(Outbound::Close(code, reason)) => {
                            close = Some((code, reason));
                            break;
                        }
                        Err(_) => break,
                    };
                    let buffered = std::mem::replace(&mut frame, next);
                    if !matches!(
                        timeout(write_timeout, sink.feed(buffered)).await,
                        Ok(Ok(()))
                    ) {
                        return;
                    }
                }
            }
            if let Some((code, reason)) = close {
                let _ = timeout(write_timeout, sink.feed(frame)).await;
                let _ = timeout(write_timeout, sink.send(close_frame(code, reason))).await;
                break;
            }
            match timeout(write_timeout, sink.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    writer_kill.cancel();
                    break;
                }
            }
        }
    }
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

/// The WebSocket handshake, refused for a web page's `Origin` unless allowed;
/// `None` if it failed or took too long.
async fn handshake<S>(
    stream: S,
    peer: SocketAddr,
    config: &Config,
) -> Option<tokio_tungstenite::WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Small buffers: tungstenite's default read buffer is 128 KiB per connection,
    // which would dominate the memory of an idle connection, and every
    // connection keeps its read buffer for good. Frames here are small (a
    // request is 60–300 bytes); reads go in 512-byte chunks, so a larger
    // frame (an 8 KiB invitation, an SDP offer) takes a few reads.
    // The write buffer grows only as needed; 16 KiB lets a batch go out in one write.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024);
    // Web pages are kept out: a browser always says which page opened the
    // WebSocket (`Origin`), native clients say nothing.
    let mut refused_origin = None;
    // The callback's type is tungstenite's; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let check_origin = |request: &Request, response: Response| match origin_refusal(
        request,
        &config.allowed_origins,
    ) {
        None => Ok(response),
        Some((origin, answer)) => {
            refused_origin = Some(origin);
            Err(answer)
        }
    };
    let handshake = timeout(
        config.handshake_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_origin, Some(ws_config)),
    )
    .await;
    match handshake {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            match refused_origin {
                Some(origin) => {
                    config.metrics.refused("origin");
                    info!(%peer, %origin, "WebSocket handshake refused: a web page's origin that is not allowed (--allowed-origin)");
                }
                None => debug!(%peer, error = %e, "WebSocket handshake failed"),
            }
            None
        }
        Err(_) => {
            debug!(%peer, "WebSocket handshake timed out");
            None
        }
    }
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
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

/// Whether a handshake must be refused for its `Origin`: the origin and the
/// HTTP answer (403) when it must.
fn origin_refusal(request: &Request, allowed: &[String]) -> Option<(String, ErrorResponse)> {
    let origin = request.headers().get(ORIGIN)?;
    let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    if origin_allowed(&text, allowed) {
        return None;
    }
    let body = format!(
        "this server does not accept connections from web pages (Origin: {text}); \
         its operator can allow an origin with --allowed-origin\n"
    );
    let length = HeaderValue::from(body.len());
    let mut answer = ErrorResponse::new(Some(body));
    *answer.status_mut() = StatusCode::FORBIDDEN;
    answer.headers_mut().insert(CONTENT_LENGTH, length);
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Some((text, answer))
}

/// Whether a page of `origin` may connect: it is one of `allowed` (scheme,
/// host and port compared without regard to case, a trailing `/` ignored),
/// or `allowed` holds `*`.
pub(crate) fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    let origin = norm(origin);
    allowed.iter().any(|a| a == "*" || norm(a) == origin)
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

    async fn login(&mut self, req: Option<u64>, user: String, token: Option<String>) {
        let user = match UserId::parse(&user) {
            Ok(u) => u,
            Err(e) => {
                self.config.metrics.login("invalid_argument");
                self.reply(ServerMessage::error(
                    req,
                    ErrorCode::InvalidArgument,
                    format!("user id: {e}"),
                ))
                .await;
                return;
            }
        };
        // The token is checked here, before the hub: a failed login counts
        // against this connection and its address, never against the user id
        // it names, so nobody can lock a user out by naming them. The hub
        // counts successful logins per user id.
        if let Some(secret) = &self.config.secret {
            let checked = match token.as_deref() {
                None | Some("") => Err(crate::auth::TokenError::Missing),
                Some(t) => crate::auth::verify(secret, user.as_str(), t),
            };
            if let Err(e) = checked {
                return self.login_failed(req, &user, e).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Login {
            user: user.clone(),
            req,
            conn: self.handle.clone(),
            reply,
        };
        if !self.to_hub(cmd, req).await {
            return;
        }
        if let Ok(Some(device)) = answer.await {
            self.session = Some(LoggedIn { device, user });
        }
    }

    /// Answers a login whose token was refused, counting it against this
    /// connection and its address; past either limit, the connection is closed.
    async fn login_failed(&mut self, req: Option<u64>, user: &UserId, e: crate::auth::TokenError) {
        self.failed_logins = self.failed_logins.saturating_add(1);
        let per_connection = self.config.failed_logins_per_connection;
        let (over, first) = self.permit.login_failed();
        let address = self.permit.address();
        if over {
            // The address has failed too often: its failing logins are told
            // so, not why they failed, and their connections closed.
            if first {
                warn!(%address, limit = self.permit.failed_per_address(), %user, "too many failed logins from one address: refusing its failing logins for the rest of the minute");
            }
            self.config.metrics.login("too_often");
            let wait = self.permit.window_left();
            self.close = Some("too many failed logins");
            self.reply(ServerMessage::error(
                req,
                ErrorCode::TooOften,
                format!(
                    "more than {} failed logins from your address in a minute; try again in {wait} s with a valid token",
                    self.permit.failed_per_address()
                ),
            ))
            .await;
            return;
        }
        info!(peer = %self.peer, %user, error = %e, "login refused");
        self.config.metrics.login(e.code().as_str());
        self.reply(ServerMessage::error(req, e.code(), e.to_string()))
            .await;
        if per_connection > 0 && self.failed_logins >= per_connection {
            info!(peer = %self.peer, failed = self.failed_logins, "too many failed logins on one connection: closing it");
            self.close = Some("too many failed logins");
        }
    }

    /// Hands a login or resume to the hub; when the hub is gone (the server
    /// is shutting down), answers `rejected` instead.
    async fn to_hub(&self, cmd: Command, req: Option<u64>) -> bool {
        if sending(&self.hub, cmd).await {
            return true;
        }
        self.reply(ServerMessage::error(
            req,
            ErrorCode::Rejected,
            "the server is shutting down",
        ))
        .await;
        false
    }

    async fn resume(&mut self, req: Option<u64>, session: String, last_seq: u64) {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Resume {
            session,
            last_seq,
            req,
            conn: self.handle.clone(),
            reply,
        };
        if !self.to_hub(cmd, req).await {
            return;
        }
        // A session on another node is answered through the cluster, or, if
        // that node died, taken over here once it is found dead (within a
        // node timeout and a heartbeat); a few seconds more for Redis.
        let wait = self
            .config
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(5), |c| {
                c.node_timeout + c.heartbeat_every + Duration::from_secs(5)
            });
        let mut answer = answer;
        let answered = match timeout(wait, &mut answer).await {
            Ok(a) => a,
            Err(_) => {
                // Too long: the hub gives up on it (and answers the client),
                // unless it settled it just now; either way it says which.
                sending(
                    &self.hub,
                    Command::ResumeAbandoned {
                        conn: self.handle.id,
                    },
                )
                .await;
                match timeout(Duration::from_secs(5), answer).await {
                    Ok(a) => a,
                    Err(_) => {
                        self.reply(ServerMessage::error(
                            req,
                            ErrorCode::SessionExpired,
                            "the server did not settle this resume; log in again",
                        ))
                        .await;
                        return;
                    }
                }
            }
        };
        if let Ok(Some(session)) = answered {
            self.session = Some(session);
        }
    }
}
