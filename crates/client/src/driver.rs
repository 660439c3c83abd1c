//! The background task behind a [`crate::Client`]: owns the WebSocket, keeps
//! the caller/callee state machine of every invitation this device knows,
//! acknowledges deliveries (`ack`), correlates replies by `ref`, and emits
//! [`Event`]s in the order the server's messages arrive.

use std::collections::{HashMap, VecDeque};
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
use callinvite_protocol::wire::{encode, AckOf, PresenceEntry};
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

struct Driver {
    ws: Ws,
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
        connector,
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
                    ..
                }) => {
                    let user = UserId::parse(&user)
                        .map_err(|e| ClientError::api(ErrorCode::Internal, e.to_string()))?;
                    return Ok(SessionInfo {
                        user,
                        device_id,
                        auth,
                        timers,
                    });
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

    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, rx) = mpsc::unbounded_channel();
    let _ = events.send(Event::ConnectionStateChanged {
        state: ConnectionState::Connected,
        reason: ConnectionReason::LoginSuccess,
    });
    let driver = Driver {
        ws,
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
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        if self.on_command(cmd).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        // Every Client handle was dropped: leave politely.
                        let _ = self.ws.close(None).await;
                        break;
                    }
                },
                frame = self.ws.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if self.on_text(text.as_str()).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            debug!(?frame, "server closed the connection");
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            debug!(error = %e, "connection error");
                            break;
                        }
                        None => break,
                    }
                }
                _ = sleep_until(last_heard + self.heartbeat) => {
                    warn!("nothing heard from the server within {:?}: connection lost", self.heartbeat);
                    break;
                }
            }
        }
        self.end_session();
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn write(&mut self, msg: &ClientMessage) -> Result<(), ()> {
        self.ws
            .send(Message::text(encode(msg)))
            .await
            .map_err(|e| debug!(error = %e, "write failed"))
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
        self.write(&make(req)).await
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
        let msg: ServerMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                // A newer server may send messages this client does not know; skip them.
                debug!(error = %e, "ignoring a message this client does not understand");
                return Ok(());
            }
        };
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
            ServerMessage::GoingAway { reason } => {
                debug!(%reason, "the server is going away");
                self.server_going_away = true;
            }
            ServerMessage::LoginOk { .. }
            | ServerMessage::Resumed { .. }
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
    fn end_session(mut self) {
        for (_, p) in self.pending.drain() {
            p.fail(|| ClientError::NotLoggedIn);
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
        let reason = if self.logged_out {
            ConnectionReason::Logout
        } else if self.server_going_away {
            ConnectionReason::ServerShutdown
        } else {
            ConnectionReason::Interrupted
        };
        self.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Disconnected,
            reason,
        });
    }
}
