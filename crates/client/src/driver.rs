//! The background task behind a [`crate::Client`]: owns the WebSocket, keeps
//! the caller/callee state machine of every invitation this device knows,
//! acknowledges deliveries (`ack`), correlates replies by `ref`, and emits
//! [`Event`]s in the order the server's messages arrive.
//!
//! When the connection drops, the driver reconnects with exponential backoff
//! and jitter and `resume`s the session: the server replays what this client
//! has not processed (each message's `seq` is processed once), requests the
//! server never applied are sent again, and the app sees only
//! `reconnecting` → `connected`. Past the server's grace window the session
//! is over and every invitation ends with `not_logged_in`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use callinvite_protocol::invitation::callee::{RemoteEvent, RemoteInvitationState};
use callinvite_protocol::invitation::caller::{CancelAction, LocalEvent, LocalInvitationState};
use callinvite_protocol::wire::{decode_server, encode, AckOf, PresenceEntry};
use callinvite_protocol::{ClientMessage, ErrorCode, InvitationId, ServerMessage, UserId};

use crate::client::{LocalInvitation, LoginOptions, SessionInfo};
use crate::error::{misuse_message, ClientError};
use crate::event::{
    ConnectionReason, ConnectionState, Event, EventStream, LocalInvitationInfo,
    RemoteInvitationInfo,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// How many finished invitations are remembered (to answer late calls with `already_*`).
const KEEP_FINISHED: usize = 256;

/// Acknowledge processed messages (`seen`) after this many, or after [`SEEN_DELAY`].
const SEEN_EVERY: u64 = 32;
const SEEN_DELAY: Duration = Duration::from_millis(500);
/// Recent `ack`s, sent again after a resume in case the old connection lost them
/// (the server ignores duplicates).
const KEEP_ACKS: usize = 64;
/// Reconnect backoff: the first wait, the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

pub(crate) enum Command {
    Send {
        invitation: LocalInvitation,
        reply: Reply<InvitationId>,
    },
    Cancel {
        handle: u64,
        reply: Reply<()>,
    },
    Accept {
        id: InvitationId,
        response: String,
        reply: Reply<()>,
    },
    Refuse {
        id: InvitationId,
        response: String,
        busy: bool,
        reply: Reply<()>,
    },
    Hangup {
        id: InvitationId,
        reply: Reply<()>,
    },
    QueryPresence {
        users: Vec<String>,
        reply: Reply<Vec<PresenceEntry>>,
    },
    SubscribePresence {
        users: Vec<String>,
        reply: Reply<Vec<PresenceEntry>>,
    },
    UnsubscribePresence {
        users: Vec<String>,
        reply: Reply<()>,
    },
    ClearMissedCalls {
        ids: Vec<InvitationId>,
        reply: Reply<()>,
    },
    SendMedia {
        id: InvitationId,
        signal: callinvite_protocol::MediaSignal,
        reply: Reply<()>,
    },
    GetIceServers {
        reply: Reply<Vec<callinvite_protocol::IceServer>>,
    },
    Logout {
        reply: Reply<()>,
    },
}

/// A request waiting for its reply, by `ref`.
enum Pending {
    Invite {
        handle: u64,
        reply: Reply<InvitationId>,
    },
    /// `reply` is `None` for a deferred cancel whose caller was already answered.
    Cancel {
        reply: Option<Reply<()>>,
    },
    Accept {
        id: InvitationId,
        reply: Reply<()>,
    },
    Refuse {
        id: InvitationId,
        reply: Reply<()>,
    },
    Done {
        reply: Reply<()>,
    },
    Presence {
        reply: Reply<Vec<PresenceEntry>>,
    },
    IceServers {
        reply: Reply<Vec<callinvite_protocol::IceServer>>,
    },
    Logout {
        reply: Reply<()>,
    },
}

impl Pending {
    fn fail(self, err: impl Fn() -> ClientError) {
        match self {
            Pending::Invite { reply, .. } => drop(reply.send(Err(err()))),
            Pending::Cancel { reply: Some(reply) }
            | Pending::Accept { reply, .. }
            | Pending::Refuse { reply, .. }
            | Pending::Done { reply }
            | Pending::Logout { reply } => drop(reply.send(Err(err()))),
            Pending::Cancel { reply: None } => {}
            Pending::Presence { reply } => drop(reply.send(Err(err()))),
            Pending::IceServers { reply } => drop(reply.send(Err(err()))),
        }
    }
}

struct Local {
    state: LocalInvitationState,
    callee: UserId,
    content: String,
}

struct Remote {
    state: RemoteInvitationState,
    caller: String,
    content: String,
}

/// Whether the session may continue on a new connection after this one ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The connection failed; try to resume.
    Lost,
    /// The session is over; report this.
    Over(ConnectionState, ConnectionReason),
}

/// How one resume attempt went.
enum Attempt {
    Resumed {
        ws: Ws,
        last_ref: u64,
    },
    /// The session's node is gone; another node took the session over as
    /// a new device with this secret.
    Moved {
        ws: Ws,
        session: String,
    },
    /// The server answered: the session is gone.
    Refused(ErrorCode, String),
    /// No answer (network, timeout): try again later.
    Failed(String),
}

type AttemptFuture = Pin<Box<dyn Future<Output = Attempt> + Send>>;

struct Driver {
    /// `None` while reconnecting.
    ws: Option<Ws>,
    options: LoginOptions,
    connector: Option<tokio_tungstenite::Connector>,
    /// The secret for `resume`; empty when the server does not offer resume.
    session: String,
    /// How long the server keeps the session after a drop (0: no resume).
    resume_window: Duration,
    /// The `seq` of the last server message processed.
    last_seq: u64,
    /// The `seq` last acknowledged with `seen`, and when the next `seen` is due.
    seen_sent: u64,
    seen_due: Option<Instant>,
    /// Requests awaiting a reply, as sent, for sending again after a resume.
    unanswered: BTreeMap<u64, ClientMessage>,
    /// Recent `ack`s, sent again after a resume.
    recent_acks: VecDeque<ClientMessage>,
    events: mpsc::UnboundedSender<Event>,
    next_ref: u64,
    pending: HashMap<u64, Pending>,
    locals: HashMap<u64, Local>,
    local_ids: HashMap<InvitationId, u64>,
    remotes: HashMap<InvitationId, Remote>,
    finished_locals: VecDeque<u64>,
    finished_remotes: VecDeque<InvitationId>,
    /// Silence longer than this means the server is gone (it pings every third of it).
    heartbeat: Duration,
    logged_out: bool,
    /// The server said `going_away`.
    server_going_away: bool,
}

/// Connects, logs in, and spawns the driver.
pub(crate) async fn start(
    options: LoginOptions,
    user: UserId,
) -> Result<(mpsc::UnboundedSender<Command>, SessionInfo, EventStream), ClientError> {
    let url = options.url.clone();
    let connector = if url.starts_with("wss://") {
        Some(tls_connector(&options)?)
    } else {
        None
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        options.url.as_str(),
        None,
        true,
        connector.clone(),
    );
    let (mut ws, _) = match timeout(options.login_timeout, connect).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            return Err(ClientError::Connect {
                url,
                reason: e.to_string(),
            })
        }
        Err(_) => return Err(ClientError::Timeout(options.login_timeout)),
    };
    let login = ClientMessage::Login {
        req: Some(0),
        user: user.to_string(),
        token: options.token.clone(),
    };
    ws.send(Message::text(encode(&login)))
        .await
        .map_err(|e| ClientError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let answer = timeout(options.login_timeout, async {
        while let Some(frame) = ws.next().await {
            let Ok(Message::Text(text)) = frame else {
                continue;
            };
            match serde_json::from_str::<ServerMessage>(text.as_str()) {
                Ok(ServerMessage::LoginOk {
                    user,
                    device_id,
                    auth,
                    timers,
                    session,
                    ice_servers,
                    ..
                }) => {
                    let user = UserId::parse(&user)
                        .map_err(|e| ClientError::api(ErrorCode::Internal, e.to_string()))?;
                    return Ok((
                        SessionInfo {
                            user,
                            device_id,
                            auth,
                            timers,
                            ice_servers,
                        },
                        session,
                    ));
                }
                Ok(ServerMessage::Error { code, message, .. }) => {
                    return Err(ClientError::Login { code, message })
                }
                _ => continue,
            }
        }
        Err(ClientError::Connect {
            url: url.clone(),
            reason: "the server closed the connection during login".into(),
        })
    })
    .await
    .map_err(|_| ClientError::Timeout(options.login_timeout))??;
    let (answer, session) = answer;

    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, rx) = mpsc::unbounded_channel();
    let _ = events.send(Event::ConnectionStateChanged {
        state: ConnectionState::Connected,
        reason: ConnectionReason::LoginSuccess,
    });
    let resume_window = if options.resume && !session.is_empty() {
        Duration::from_millis(answer.timers.resume_ms)
    } else {
        Duration::ZERO
    };
    let driver = Driver {
        ws: Some(ws),
        options,
        connector,
        session,
        resume_window,
        last_seq: 0,
        seen_sent: 0,
        seen_due: None,
        unanswered: BTreeMap::new(),
        recent_acks: VecDeque::new(),
        events,
        next_ref: 1,
        pending: HashMap::new(),
        locals: HashMap::new(),
        local_ids: HashMap::new(),
        remotes: HashMap::new(),
        finished_locals: VecDeque::new(),
        finished_remotes: VecDeque::new(),
        heartbeat: Duration::from_millis(answer.timers.heartbeat_ms.max(1000)),
        logged_out: false,
        server_going_away: false,
    };
    tokio::spawn(driver.run(command_rx));
    Ok((commands, answer, EventStream { rx }))
}

/// TLS for `wss://`: the system's root certificates plus the optional CA file.
fn tls_connector(options: &LoginOptions) -> Result<tokio_tungstenite::Connector, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &options.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientError::Connect {
                url: options.url.clone(),
                reason: format!("cannot read CA file {}: {e}", path.display()),
            })?;
        for cert in certs {
            roots.add(cert).map_err(|e| ClientError::Connect {
                url: options.url.clone(),
                reason: format!("bad CA certificate in {}: {e}", path.display()),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Connect {
        url: options.url.clone(),
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
        config,
    )))
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let ending = loop {
            let ending = match self.ws.is_some() {
                true => self.connected(&mut commands).await,
                false => Ending::Lost,
            };
            match ending {
                Ending::Over(state, reason) => break (state, reason),
                Ending::Lost if self.logged_out => {
                    break (ConnectionState::Disconnected, ConnectionReason::Logout)
                }
                Ending::Lost if self.server_going_away => {
                    break (
                        ConnectionState::Disconnected,
                        ConnectionReason::ServerShutdown,
                    )
                }
                Ending::Lost if self.resume_window.is_zero() => {
                    break (ConnectionState::Disconnected, ConnectionReason::Interrupted)
                }
                Ending::Lost => {
                    self.ws = None;
                    if let Some(over) = self.reconnect(&mut commands).await {
                        break over;
                    }
                }
            }
        };
        self.end_session(ending);
    }

    /// Serves the live connection until it ends.
    async fn connected(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ending {
        let mut last_heard = Instant::now();
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return Ending::Lost;
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        if self.on_command(cmd).await.is_err() {
                            return Ending::Lost;
                        }
                    }
                    None => {
                        // Every Client handle was dropped: leave politely.
                        if let Some(ws) = self.ws.as_mut() {
                            let _ = ws.close(None).await;
                        }
                        return Ending::Over(ConnectionState::Disconnected, ConnectionReason::Logout);
                    }
                },
                frame = ws.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if self.on_text(text.as_str()).await.is_err() {
                                return Ending::Lost;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            debug!(?frame, "server closed the connection");
                            let code = frame.map(|f| u16::from(f.code));
                            return match code {
                                // The session went on on another connection.
                                Some(4001) => Ending::Over(ConnectionState::Aborted, ConnectionReason::TakenOver),
                                // The server found this client broken (bad frames): no resume.
                                Some(1007 | 1009) => Ending::Over(ConnectionState::Aborted, ConnectionReason::Interrupted),
                                _ => Ending::Lost,
                            };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            debug!(error = %e, "connection error");
                            return Ending::Lost;
                        }
                        None => return Ending::Lost,
                    }
                }
                _ = sleep_until(last_heard + self.heartbeat) => {
                    warn!("nothing heard from the server within {:?}: connection lost", self.heartbeat);
                    return Ending::Lost;
                }
                _ = sleep_until(self.seen_due.unwrap_or_else(far_future)), if self.seen_due.is_some() => {
                    if self.send_seen().await.is_err() {
                        return Ending::Lost;
                    }
                }
            }
        }
    }

    /// Reconnects with backoff and jitter and resumes the session. Returns
    /// how the session ended if it could not be resumed; `None` once resumed.
    async fn reconnect(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Option<(ConnectionState, ConnectionReason)> {
        self.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Reconnecting,
            reason: ConnectionReason::Interrupted,
        });
        // The server notices the drop within a heartbeat and then keeps the
        // session for its resume window; after both, it is certainly gone.
        let give_up = Instant::now() + self.heartbeat + self.resume_window;
        let mut delay = BACKOFF_FIRST;
        let mut attempts = 0u32;
        let mut attempt: AttemptFuture = Box::pin(self.attempt(jitter(delay)));
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    // Requests are kept and sent once resumed.
                    Some(cmd) => { let _ = self.on_command(cmd).await; }
                    None => return Some((ConnectionState::Disconnected, ConnectionReason::Logout)),
                },
                result = &mut attempt => {
                    attempts += 1;
                    match result {
                        Attempt::Resumed { ws, last_ref } => {
                            debug!(attempts, last_ref, "session resumed");
                            self.ws = Some(ws);
                            self.emit(Event::ConnectionStateChanged {
                                state: ConnectionState::Connected,
                                reason: ConnectionReason::Resumed,
                            });
                            if self.after_resume(last_ref).await.is_err() {
                                // Lost again at once: the run loop tries again.
                                self.ws = None;
                                return Box::pin(self.reconnect(commands)).await;
                            }
                            return None;
                        }
                        Attempt::Moved { ws, session } => {
                            warn!(attempts, "the server node of this session is gone: another node took it over; what was in flight is lost");
                            self.ws = Some(ws);
                            self.moved(session);
                            return None;
                        }
                        Attempt::Refused(code, message) => {
                            warn!(%code, %message, "the server refused to resume the session");
                            return Some((ConnectionState::Aborted, ConnectionReason::SessionExpired));
                        }
                        Attempt::Failed(why) => {
                            debug!(attempts, %why, "reconnect attempt failed");
                            if self.logged_out {
                                return Some((ConnectionState::Disconnected, ConnectionReason::Logout));
                            }
                            if Instant::now() >= give_up {
                                warn!(attempts, "could not reconnect within the resume window: the session is over");
                                return Some((ConnectionState::Disconnected, ConnectionReason::Interrupted));
                            }
                            delay = (delay * 2).min(BACKOFF_MAX);
                            let wait = jitter(delay).min(give_up.saturating_duration_since(Instant::now()));
                            attempt = Box::pin(self.attempt(wait));
                        }
                    }
                }
            }
        }
    }

    /// One resume attempt after `wait`: connect, send `resume`, read the answer.
    fn attempt(&self, wait: Duration) -> impl Future<Output = Attempt> + Send + 'static {
        let url = self.options.url.clone();
        let connector = self.connector.clone();
        let limit = self.options.login_timeout;
        let resume = ClientMessage::Resume {
            req: None,
            session: self.session.clone(),
            last_seq: self.last_seq,
        };
        async move {
            tokio::time::sleep(wait).await;
            let work = async {
                let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    None,
                    true,
                    connector,
                )
                .await
                .map_err(|e| e.to_string())?;
                ws.send(Message::text(encode(&resume)))
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(frame) = ws.next().await {
                    let Ok(Message::Text(text)) = frame else {
                        continue;
                    };
                    match serde_json::from_str::<ServerMessage>(text.as_str()) {
                        Ok(ServerMessage::Resumed { last_ref, .. }) => {
                            return Ok(Attempt::Resumed { ws, last_ref })
                        }
                        Ok(ServerMessage::SessionMoved { session, .. }) => {
                            return Ok(Attempt::Moved { ws, session })
                        }
                        Ok(ServerMessage::Error { code, message, .. }) => {
                            return Ok(Attempt::Refused(code, message))
                        }
                        _ => continue,
                    }
                }
                Err("closed during resume".to_string())
            };
            match timeout(limit, work).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => Attempt::Failed(e),
                Err(_) => Attempt::Failed("timed out".into()),
            }
        }
    }

    /// Sends again what the old connection may have lost: requests the server
    /// never applied (ref above `last_ref`), and recent acks.
    async fn after_resume(&mut self, last_ref: u64) -> Result<(), ()> {
        let again: Vec<ClientMessage> = self
            .unanswered
            .range(last_ref + 1..)
            .map(|(_, m)| m.clone())
            .collect();
        let acks: Vec<ClientMessage> = self.recent_acks.iter().cloned().collect();
        debug!(
            requests = again.len(),
            acks = acks.len(),
            "sending again after resume"
        );
        for m in again.iter().chain(acks.iter()) {
            self.send_frame(m).await?;
        }
        Ok(())
    }

    async fn send_seen(&mut self) -> Result<(), ()> {
        self.seen_due = None;
        if self.last_seq > self.seen_sent {
            self.seen_sent = self.last_seq;
            let seen = ClientMessage::Seen { seq: self.last_seq };
            return self.send_frame(&seen).await;
        }
        Ok(())
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Writes one frame if connected; while reconnecting, requests and acks
    /// are kept and sent after the resume.
    async fn send_frame(&mut self, msg: &ClientMessage) -> Result<(), ()> {
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        ws.send(Message::text(encode(msg)))
            .await
            .map_err(|e| debug!(error = %e, "write failed"))
    }

    /// Sends a message that expects no reply (`ack`), remembering it for a resume.
    async fn write(&mut self, msg: &ClientMessage) -> Result<(), ()> {
        if matches!(msg, ClientMessage::Ack { .. }) {
            self.recent_acks.push_back(msg.clone());
            if self.recent_acks.len() > KEEP_ACKS {
                self.recent_acks.pop_front();
            }
        }
        self.send_frame(msg).await
    }

    /// Sends a request and remembers what to do with its reply.
    async fn request(
        &mut self,
        make: impl FnOnce(u64) -> ClientMessage,
        pending: Pending,
    ) -> Result<(), ()> {
        let req = self.next_ref;
        self.next_ref += 1;
        self.pending.insert(req, pending);
        let msg = make(req);
        if !self.resume_window.is_zero() {
            self.unanswered.insert(req, msg.clone());
        }
        self.send_frame(&msg).await
    }

    fn local_info(&self, handle: u64) -> Option<LocalInvitationInfo> {
        self.locals.get(&handle).map(|l| LocalInvitationInfo {
            handle,
            invitation_id: l.state.id().cloned(),
            callee: l.callee.to_string(),
            content: l.content.clone(),
            state: l.state.state(),
        })
    }

    fn remote_info(&self, id: &InvitationId) -> Option<RemoteInvitationInfo> {
        self.remotes.get(id).map(|r| RemoteInvitationInfo {
            invitation_id: id.clone(),
            caller: r.caller.clone(),
            content: r.content.clone(),
            state: r.state.state(),
        })
    }

    async fn on_command(&mut self, cmd: Command) -> Result<(), ()> {
        match cmd {
            Command::Send { invitation, reply } => {
                let local = self
                    .locals
                    .entry(invitation.handle)
                    .or_insert_with(|| Local {
                        state: LocalInvitationState::new(),
                        callee: invitation.callee().clone(),
                        content: invitation.content().to_owned(),
                    });
                if let Err(code) = local.state.send() {
                    let _ = reply.send(Err(ClientError::api(code, misuse_message(code))));
                    return Ok(());
                }
                local.content = invitation.content().to_owned();
                let (callee, content) = (local.callee.to_string(), local.content.clone());
                self.request(
                    |req| ClientMessage::Invite {
                        req,
                        callee,
                        content,
                    },
                    Pending::Invite {
                        handle: invitation.handle,
                        reply,
                    },
                )
                .await
            }
            Command::Cancel { handle, reply } => {
                let Some(local) = self.locals.get_mut(&handle) else {
                    let _ = reply.send(Err(ClientError::api(
                        ErrorCode::InvalidArgument,
                        "this invitation was never sent",
                    )));
                    return Ok(());
                };
                match local.state.cancel() {
                    Err(code) => {
                        let _ = reply.send(Err(ClientError::api(code, misuse_message(code))));
                        Ok(())
                    }
                    Ok(CancelAction::SendNow) => {
                        let Some(id) = local.state.id().cloned() else {
                            return Ok(());
                        };
                        self.request(
                            |req| ClientMessage::Cancel {
                                req,
                                invitation_id: id,
                            },
                            Pending::Cancel { reply: Some(reply) },
                        )
                        .await
                    }
                    Ok(CancelAction::Deferred) | Ok(CancelAction::AlreadyRequested) => {
                        let _ = reply.send(Ok(()));
                        Ok(())
                    }
                }
            }
            Command::Accept {
                id,
                response,
                reply,
            } => {
                match self.remotes.get_mut(&id).map(|r| r.state.accept()) {
                    None => drop(reply.send(Err(ClientError::api(
                        ErrorCode::NotFound,
                        format!("no invitation {id} received here"),
                    )))),
                    Some(Err(code)) => {
                        drop(reply.send(Err(ClientError::api(code, misuse_message(code)))))
                    }
                    Some(Ok(())) => {
                        let invitation_id = id.clone();
                        return self
                            .request(
                                |req| ClientMessage::Accept {
                                    req,
                                    invitation_id,
                                    response,
                                },
                                Pending::Accept { id, reply },
                            )
                            .await;
                    }
                }
                Ok(())
            }
            Command::Refuse {
                id,
                response,
                busy,
                reply,
            } => {
                match self.remotes.get_mut(&id).map(|r| r.state.refuse(busy)) {
                    None => drop(reply.send(Err(ClientError::api(
                        ErrorCode::NotFound,
                        format!("no invitation {id} received here"),
                    )))),
                    Some(Err(code)) => {
                        drop(reply.send(Err(ClientError::api(code, misuse_message(code)))))
                    }
                    Some(Ok(())) => {
                        let invitation_id = id.clone();
                        return self
                            .request(
                                |req| ClientMessage::Refuse {
                                    req,
                                    invitation_id,
                                    response,
                                    busy,
                                },
                                Pending::Refuse { id, reply },
                            )
                            .await;
                    }
                }
                Ok(())
            }
            Command::Hangup { id, reply } => {
                // Known here: check locally. Unknown: it may be a call of another device of this user.
                let check = match (
                    self.local_ids.get(&id).and_then(|h| self.locals.get(h)),
                    self.remotes.get(&id),
                ) {
                    (Some(l), _) => l.state.hang_up(),
                    (None, Some(r)) => r.state.hang_up(),
                    (None, None) => Ok(()),
                };
                if let Err(code) = check {
                    let msg = if code == ErrorCode::InvalidArgument {
                        "the call is not established; cancel or refuse instead"
                    } else {
                        "the call has already ended"
                    };
                    let _ = reply.send(Err(ClientError::api(code, msg)));
                    return Ok(());
                }
                self.request(
                    |req| ClientMessage::Hangup {
                        req,
                        invitation_id: id,
                    },
                    Pending::Done { reply },
                )
                .await
            }
            Command::QueryPresence { users, reply } => {
                self.request(
                    |req| ClientMessage::QueryPresence { req, users },
                    Pending::Presence { reply },
                )
                .await
            }
            Command::SubscribePresence { users, reply } => {
                self.request(
                    |req| ClientMessage::SubscribePresence { req, users },
                    Pending::Presence { reply },
                )
                .await
            }
            Command::UnsubscribePresence { users, reply } => {
                self.request(
                    |req| ClientMessage::UnsubscribePresence { req, users },
                    Pending::Done { reply },
                )
                .await
            }
            Command::ClearMissedCalls { ids, reply } => {
                self.request(
                    |req| ClientMessage::ClearMissedCalls {
                        req,
                        invitation_ids: ids,
                    },
                    Pending::Done { reply },
                )
                .await
            }
            Command::SendMedia { id, signal, reply } => {
                self.request(
                    |req| ClientMessage::Media {
                        req,
                        invitation_id: id,
                        signal,
                    },
                    Pending::Done { reply },
                )
                .await
            }
            Command::GetIceServers { reply } => {
                self.request(
                    |req| ClientMessage::GetIceServers { req },
                    Pending::IceServers { reply },
                )
                .await
            }
            Command::Logout { reply } => {
                self.request(
                    |req| ClientMessage::Logout { req: Some(req) },
                    Pending::Logout { reply },
                )
                .await
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), ()> {
        let (seq, msg) = match decode_server(text) {
            Ok(m) => m,
            Err(e) => {
                // A newer server may send messages this client does not know; skip them.
                debug!(error = %e, "ignoring a message this client does not understand");
                return Ok(());
            }
        };
        if let Some(seq) = seq {
            if seq <= self.last_seq {
                // Replayed after a resume, but already processed.
                debug!(seq, "skipping a message already processed");
                return Ok(());
            }
            if seq != self.last_seq + 1 {
                warn!(
                    seq,
                    expected = self.last_seq + 1,
                    "gap in the server's message sequence"
                );
            }
            self.last_seq = seq;
            if !self.resume_window.is_zero() {
                if seq - self.seen_sent >= SEEN_EVERY {
                    self.send_seen().await?;
                } else if self.seen_due.is_none() {
                    self.seen_due = Some(Instant::now() + SEEN_DELAY);
                }
            }
        }
        if let ServerMessage::Ok { req: Some(r) }
        | ServerMessage::Error { req: Some(r), .. }
        | ServerMessage::InviteOk { req: r, .. }
        | ServerMessage::Presence { req: r, .. }
        | ServerMessage::IceServers { req: r, .. } = &msg
        {
            self.unanswered.remove(r);
        }
        match &msg {
            ServerMessage::Ok { req: Some(req) } => match self.pending.remove(req) {
                Some(Pending::Accept { id, reply }) => {
                    let ev = self
                        .remotes
                        .get_mut(&id)
                        .and_then(|r| r.state.on_answer_ok());
                    self.emit_remote(&id, ev);
                    let _ = reply.send(Ok(()));
                }
                Some(Pending::Refuse { id, reply }) => {
                    let ev = self
                        .remotes
                        .get_mut(&id)
                        .and_then(|r| r.state.on_answer_ok());
                    self.emit_remote(&id, ev);
                    let _ = reply.send(Ok(()));
                }
                Some(Pending::Cancel { reply: Some(reply) }) | Some(Pending::Done { reply }) => {
                    drop(reply.send(Ok(())))
                }
                Some(Pending::Logout { reply }) => {
                    self.logged_out = true;
                    let _ = reply.send(Ok(()));
                }
                Some(other) => {
                    other.fail(|| ClientError::api(ErrorCode::Internal, "unexpected reply"))
                }
                None => {}
            },
            ServerMessage::Error {
                req: Some(req),
                code,
                message,
            } => match self.pending.remove(req) {
                Some(Pending::Invite { handle, reply }) => {
                    if let Some(l) = self.locals.get_mut(&handle) {
                        l.state.send_rejected();
                    }
                    let _ = reply.send(Err(ClientError::api(*code, message.clone())));
                }
                Some(Pending::Accept { id, reply }) | Some(Pending::Refuse { id, reply }) => {
                    if let Some(r) = self.remotes.get_mut(&id) {
                        r.state.on_answer_error();
                    }
                    let _ = reply.send(Err(ClientError::api(*code, message.clone())));
                }
                Some(p) => p.fail(|| ClientError::api(*code, message.clone())),
                None => self.emit(Event::ProtocolError {
                    code: *code,
                    message: message.clone(),
                }),
            },
            ServerMessage::Error {
                req: None,
                code,
                message,
            } => self.emit(Event::ProtocolError {
                code: *code,
                message: message.clone(),
            }),
            ServerMessage::InviteOk {
                req,
                invitation_id,
                callee_online,
            } => {
                let Some(Pending::Invite { handle, reply }) = self.pending.remove(req) else {
                    return Ok(());
                };
                let Some(local) = self.locals.get_mut(&handle) else {
                    return Ok(());
                };
                let (_, cancel_now) = local.state.on_server(&msg);
                self.local_ids.insert(invitation_id.clone(), handle);
                if let Some(invitation) = self.local_info(handle) {
                    self.emit(Event::LocalInvitationSent {
                        invitation,
                        callee_online: *callee_online,
                    });
                }
                let _ = reply.send(Ok(invitation_id.clone()));
                if cancel_now {
                    let id = invitation_id.clone();
                    self.request(
                        |req| ClientMessage::Cancel {
                            req,
                            invitation_id: id,
                        },
                        Pending::Cancel { reply: None },
                    )
                    .await?;
                }
            }
            ServerMessage::Presence { req, users } => match self.pending.remove(req) {
                Some(Pending::Presence { reply }) => drop(reply.send(Ok(users.clone()))),
                Some(other) => {
                    other.fail(|| ClientError::api(ErrorCode::Internal, "unexpected reply"))
                }
                None => {}
            },
            ServerMessage::MissedCalls { calls } => self.emit(Event::MissedCalls {
                calls: calls.clone(),
            }),
            ServerMessage::PresenceChanged { user, online } => self.emit(Event::PresenceChanged {
                user: user.clone(),
                online: *online,
            }),
            ServerMessage::Invitation {
                invitation_id,
                caller,
                content,
            } => {
                if !self.remotes.contains_key(invitation_id) {
                    self.remotes.insert(
                        invitation_id.clone(),
                        Remote {
                            state: RemoteInvitationState::new(),
                            caller: caller.clone(),
                            content: content.clone(),
                        },
                    );
                    if let Some(invitation) = self.remote_info(invitation_id) {
                        self.emit(Event::RemoteInvitationReceived { invitation });
                    }
                }
                // Acknowledge after the app was told: the caller's "received by peer" follows this.
                self.write(&ClientMessage::Ack {
                    invitation_id: invitation_id.clone(),
                    of: AckOf::Invitation,
                })
                .await?;
            }
            ServerMessage::ReceivedByPeer { invitation_id }
            | ServerMessage::Accepted { invitation_id, .. }
            | ServerMessage::Refused { invitation_id, .. }
            | ServerMessage::Canceled { invitation_id }
            | ServerMessage::Failed { invitation_id, .. }
            | ServerMessage::CallEnded { invitation_id, .. } => {
                let id = invitation_id.clone();
                if let Some(&handle) = self.local_ids.get(&id) {
                    let ev = self
                        .locals
                        .get_mut(&handle)
                        .and_then(|l| l.state.on_server(&msg).0);
                    self.emit_local(handle, ev);
                } else if self.remotes.contains_key(&id) {
                    let ev = self
                        .remotes
                        .get_mut(&id)
                        .and_then(|r| r.state.on_server(&msg));
                    self.emit_remote(&id, ev);
                    if matches!(msg, ServerMessage::Canceled { .. }) {
                        self.write(&ClientMessage::Ack {
                            invitation_id: id,
                            of: AckOf::Canceled,
                        })
                        .await?;
                    }
                }
            }
            ServerMessage::IceServers {
                req, ice_servers, ..
            } => match self.pending.remove(req) {
                Some(Pending::IceServers { reply }) => drop(reply.send(Ok(ice_servers.clone()))),
                Some(other) => {
                    other.fail(|| ClientError::api(ErrorCode::Internal, "unexpected reply"))
                }
                None => {}
            },
            ServerMessage::Media {
                invitation_id,
                from,
                signal,
            } => self.emit(Event::MediaSignal {
                invitation_id: invitation_id.clone(),
                from: from.clone(),
                signal: signal.clone(),
            }),
            ServerMessage::GoingAway { reason } => {
                debug!(%reason, "the server is going away");
                self.server_going_away = true;
            }
            ServerMessage::LoginOk { .. }
            | ServerMessage::Resumed { .. }
            | ServerMessage::SessionMoved { .. }
            | ServerMessage::Ok { req: None } => {}
        }
        Ok(())
    }

    fn emit_local(&mut self, handle: u64, ev: Option<LocalEvent>) {
        let (Some(ev), Some(invitation)) = (ev, self.local_info(handle)) else {
            return;
        };
        let event = match ev {
            LocalEvent::Sent { callee_online, .. } => Event::LocalInvitationSent {
                invitation,
                callee_online,
            },
            LocalEvent::ReceivedByPeer => Event::LocalInvitationReceivedByPeer { invitation },
            LocalEvent::Accepted { response } => Event::LocalInvitationAccepted {
                invitation,
                response,
            },
            LocalEvent::Refused { response, busy } => Event::LocalInvitationRefused {
                invitation,
                response,
                busy,
            },
            LocalEvent::Canceled => Event::LocalInvitationCanceled { invitation },
            LocalEvent::Failure(reason) => Event::LocalInvitationFailure { invitation, reason },
            LocalEvent::CallEnded { reason, by } => match invitation.invitation_id {
                Some(invitation_id) => Event::CallEnded {
                    invitation_id,
                    peer: invitation.callee,
                    reason,
                    by,
                },
                None => return,
            },
        };
        self.emit(event);
        if self.locals.get(&handle).is_some_and(|l| l.state.is_done()) {
            self.finished_locals.push_back(handle);
            while self.finished_locals.len() > KEEP_FINISHED {
                if let Some(old) = self.finished_locals.pop_front() {
                    if let Some(l) = self.locals.remove(&old) {
                        if let Some(id) = l.state.id() {
                            self.local_ids.remove(id);
                        }
                    }
                }
            }
        }
    }

    fn emit_remote(&mut self, id: &InvitationId, ev: Option<RemoteEvent>) {
        let (Some(ev), Some(invitation)) = (ev, self.remote_info(id)) else {
            return;
        };
        let event = match ev {
            RemoteEvent::Accepted => Event::RemoteInvitationAccepted { invitation },
            RemoteEvent::Refused { busy } => Event::RemoteInvitationRefused { invitation, busy },
            RemoteEvent::Canceled => Event::RemoteInvitationCanceled { invitation },
            RemoteEvent::Failure(reason) => Event::RemoteInvitationFailure { invitation, reason },
            RemoteEvent::CallEnded { reason, by } => Event::CallEnded {
                invitation_id: id.clone(),
                peer: invitation.caller,
                reason,
                by,
            },
        };
        self.emit(event);
        if self.remotes.get(id).is_some_and(|r| r.state.is_done()) {
            self.finished_remotes.push_back(id.clone());
            while self.finished_remotes.len() > KEEP_FINISHED {
                if let Some(old) = self.finished_remotes.pop_front() {
                    self.remotes.remove(&old);
                }
            }
        }
    }

    /// The session is over: every pending thing ends here, with a reason.
    /// Another node took the session over (its node died): a new secret,
    /// numbering from 1, and nothing of what was in flight. Requests without
    /// an answer fail, and this device's invitations and calls end as if the
    /// session had ended (the other parties saw this device or its node go).
    fn moved(&mut self, session: String) {
        self.session = session;
        self.last_seq = 0;
        self.seen_sent = 0;
        self.seen_due = None;
        self.unanswered.clear();
        self.recent_acks.clear();
        // What the old device had ends first; then the new device is connected.
        self.end_invitations(|| ClientError::SessionMoved);
        // The new device starts afresh: an invitation still ringing for the
        // user rings it as new, and must not be taken for one already seen.
        self.remotes.clear();
        self.finished_remotes.clear();
        self.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Connected,
            reason: ConnectionReason::SessionMoved,
        });
    }

    /// Fails the requests without an answer, and ends every invitation and call.
    fn end_invitations(&mut self, err: impl Fn() -> ClientError) {
        for (_, p) in self.pending.drain() {
            p.fail(&err);
        }
        let handles: Vec<u64> = self.locals.keys().copied().collect();
        for handle in handles {
            let ev = self
                .locals
                .get_mut(&handle)
                .and_then(|l| l.state.on_session_lost());
            self.emit_local(handle, ev);
        }
        let ids: Vec<InvitationId> = self.remotes.keys().cloned().collect();
        for id in ids {
            let ev = self
                .remotes
                .get_mut(&id)
                .and_then(|r| r.state.on_session_lost());
            self.emit_remote(&id, ev);
        }
    }

    fn end_session(mut self, (state, reason): (ConnectionState, ConnectionReason)) {
        self.end_invitations(|| ClientError::NotLoggedIn);
        let reason = if self.logged_out {
            ConnectionReason::Logout
        } else if self.server_going_away {
            ConnectionReason::ServerShutdown
        } else {
            reason
        };
        self.emit(Event::ConnectionStateChanged { state, reason });
    }
}

/// A wait of between half and all of `d`, so clients cut off together do not
/// all come back at the same instant.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
