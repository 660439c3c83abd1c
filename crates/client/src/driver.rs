//! The background task behind a [`crate::Client`]: owns the WebSocket, runs
//! the select loop over the app's calls, the server's frames and the timers,
//! and reconnects with exponential backoff and jitter when the connection
//! drops.
//!
//! What keeps the session going across connections (request numbering,
//! replies by `ref`, each `seq` processed once, `seen`, the acks worth sending
//! again, `resume`) is [`callinvite_protocol::session::ClientSession`], a
//! sans-I/O state machine: this task feeds it what arrives and the time,
//! writes out what it wants sent, and acts on its events. So after a drop the
//! server replays what this client has not processed, requests the server
//! never applied are sent again, and the app sees only `reconnecting` →
//! `connected`. Past the server's grace window the session is over and every
//! invitation ends with `not_logged_in`.
//!
//! - [`connect`]: the first connection and its `login`, and the connections a
//!   resume goes over (TLS for `wss://`).
//! - [`requests`]: the app's calls, checked against the local state machines
//!   and sent as requests; their replies.
//! - [`invitations`]: the caller/callee state machine of every invitation
//!   this device knows; server messages become the app's events, in the order
//!   they arrive.

mod connect;
mod invitations;
mod requests;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use callinvite_protocol::session::{
    Disconnected, Received, ResumeRefused, SessionEnd, SessionEvent,
};
use callinvite_protocol::wire::{decode_server, encode};

use crate::client::LoginOptions;
use crate::event::{ConnectionReason, ConnectionState, Event};
use invitations::Invitations;
use requests::{Pending, Session};

pub(crate) use connect::start;
pub(crate) use requests::{Answer, Command};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Whether the session may continue on a new connection after this one ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The connection failed; the session says whether to resume.
    Lost,
    /// The session is over; report this.
    Over(ConnectionState, ConnectionReason),
}

/// How one resume attempt went.
enum Attempt {
    /// The session goes on; the session layer queued what to send again.
    Resumed {
        last_ref: u64,
        requests: usize,
        acks: usize,
    },
    /// The session's node is gone; another node took the session over as a
    /// new device, and these requests went with the old one.
    Moved { unanswered: Vec<Pending> },
    /// The server answered: the session is gone.
    Refused(ResumeRefused),
    /// Every `Client` handle was dropped meanwhile.
    Closed,
    /// No answer (network, timeout): try again later.
    Failed(String),
}

struct Driver {
    /// `None` while reconnecting.
    ws: Option<Ws>,
    /// Where to reconnect to, and how long a connection may take.
    options: LoginOptions,
    /// TLS for `wss://`, built once at login.
    connector: Option<tokio_tungstenite::Connector>,
    /// The session layer: numbering, replies, `seq`, `seen`, acks, resume.
    session: Session,
    /// The invitations and calls of this device, and the app's events.
    invitations: Invitations,
    /// Silence longer than this means the server is gone (it pings every third of it).
    heartbeat: Duration,
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
                Ending::Lost => {
                    self.ws = None;
                    match self.session.on_disconnected(now()) {
                        Disconnected::Over(end) => {
                            break (ConnectionState::Disconnected, reason(end))
                        }
                        Disconnected::Reconnect { give_up } => {
                            if let Some(over) = self.reconnect(give_up, &mut commands).await {
                                break over;
                            }
                        }
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
            let wake = self.session.poll_timeout().map(Instant::from_std);
            let Some(ws) = self.ws.as_mut() else {
                return Ending::Lost;
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.invitations.command(cmd, &mut self.session),
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
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
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
                _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {
                    self.session.handle_timeout(now());
                }
            }
            if self.flush().await.is_err() {
                return Ending::Lost;
            }
        }
    }

    /// One frame from the live connection, through the session to the app.
    fn on_text(&mut self, text: &str) {
        let (seq, msg) = match decode_server(text) {
            Ok(m) => m,
            Err(e) => {
                // A newer server may send messages this client does not know; skip them.
                debug!(error = %e, "ignoring a message this client does not understand");
                return;
            }
        };
        match self.session.handle_incoming(seq, msg, now()) {
            Received::Processed => {}
            // Replayed after a resume, but already processed.
            Received::Duplicate => debug!(?seq, "skipping a message already processed"),
            Received::AfterGap { expected } => {
                warn!(?seq, expected, "gap in the server's message sequence")
            }
            Received::Ignored => debug!(?seq, "ignoring a message about another connection"),
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Message(msg) => self.invitations.on_message(msg, &mut self.session),
                SessionEvent::Reply { tag, reply, .. } => {
                    self.invitations.on_reply(tag, reply, &mut self.session)
                }
                // Only while resuming (see `handshake`).
                SessionEvent::Resumed { .. }
                | SessionEvent::Moved { .. }
                | SessionEvent::ResumeRefused(_) => {}
            }
        }
    }

    /// Writes what the session wants sent. While reconnecting there is
    /// nothing: requests and acks wait in the session for the resume.
    async fn flush(&mut self) -> Result<(), ()> {
        let Some(ws) = self.ws.as_mut() else {
            return Ok(());
        };
        while let Some(msg) = self.session.poll_transmit() {
            ws.send(Message::text(encode(&msg)))
                .await
                .map_err(|e| debug!(error = %e, "write failed"))?;
        }
        Ok(())
    }

    /// Reconnects with backoff and jitter and resumes the session, until
    /// `give_up`. Returns how the session ended if it could not be resumed;
    /// `None` once resumed.
    async fn reconnect(
        &mut self,
        give_up: std::time::Instant,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Option<(ConnectionState, ConnectionReason)> {
        self.invitations.emit(Event::ConnectionStateChanged {
            state: ConnectionState::Reconnecting,
            reason: ConnectionReason::Interrupted,
        });
        let give_up = Instant::from_std(give_up);
        let mut waits = crate::backoff::reconnect_waits(
            crate::backoff::RESUME_FIRST,
            crate::backoff::RESUME_MAX,
        );
        let mut attempts = 0u32;
        let mut attempt = Box::pin(connect::open_after(
            &self.options,
            self.connector.clone(),
            waits.next().unwrap_or(crate::backoff::RESUME_MAX),
        ));
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    // Requests are kept and sent once resumed.
                    Some(cmd) => self.invitations.command(cmd, &mut self.session),
                    None => return Some((ConnectionState::Disconnected, ConnectionReason::Logout)),
                },
                result = &mut attempt => {
                    attempts += 1;
                    let outcome = match result {
                        Ok((ws, deadline)) => {
                            self.ws = Some(ws);
                            self.handshake(deadline, commands).await
                        }
                        Err(why) => Attempt::Failed(why),
                    };
                    match outcome {
                        Attempt::Resumed { last_ref, requests, acks } => {
                            debug!(attempts, last_ref, "session resumed");
                            self.invitations.emit(Event::ConnectionStateChanged {
                                state: ConnectionState::Connected,
                                reason: ConnectionReason::Resumed,
                            });
                            debug!(requests, acks, "sending again after resume");
                            if self.flush().await.is_err() {
                                // Lost again at once: try again.
                                self.ws = None;
                                return match self.session.on_disconnected(now()) {
                                    Disconnected::Reconnect { give_up } => {
                                        Box::pin(self.reconnect(give_up, commands)).await
                                    }
                                    Disconnected::Over(end) => Some((ConnectionState::Disconnected, reason(end))),
                                };
                            }
                            return None;
                        }
                        Attempt::Moved { unanswered } => {
                            warn!(attempts, "the server node of this session is gone: another node took it over; what was in flight is lost");
                            // What the old device had ends first; then the new device is connected.
                            self.invitations.moved(unanswered);
                            self.invitations.emit(Event::ConnectionStateChanged {
                                state: ConnectionState::Connected,
                                reason: ConnectionReason::SessionMoved,
                            });
                            return None;
                        }
                        Attempt::Refused(refused) => {
                            warn!(code = %refused.code, message = %refused.message, "the server refused to resume the session");
                            return Some((ConnectionState::Aborted, ConnectionReason::SessionExpired));
                        }
                        Attempt::Closed => {
                            return Some((ConnectionState::Disconnected, ConnectionReason::Logout))
                        }
                        Attempt::Failed(why) => {
                            debug!(attempts, %why, "reconnect attempt failed");
                            self.ws = None;
                            if let Disconnected::Over(end) = self.session.on_disconnected(now()) {
                                return Some((ConnectionState::Disconnected, reason(end)));
                            }
                            if Instant::now() >= give_up {
                                warn!(attempts, "could not reconnect within the resume window: the session is over");
                                return Some((ConnectionState::Disconnected, ConnectionReason::Interrupted));
                            }
                            let wait = waits
                                .next()
                                .unwrap_or(crate::backoff::RESUME_MAX)
                                .min(give_up.saturating_duration_since(Instant::now()));
                            attempt = Box::pin(connect::open_after(&self.options, self.connector.clone(), wait));
                        }
                    }
                }
            }
        }
    }

    /// Sends `resume` on the new connection and reads its answer (by
    /// `deadline`), taking the app's calls meanwhile.
    async fn handshake(
        &mut self,
        deadline: Instant,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Attempt {
        if let Err(e) = self.session.on_connected() {
            return Attempt::Failed(e.to_string());
        }
        if self.flush().await.is_err() {
            return Attempt::Failed("could not send resume".into());
        }
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return Attempt::Failed("no connection".into());
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    // Kept, and sent once resumed.
                    Some(cmd) => self.invitations.command(cmd, &mut self.session),
                    None => return Attempt::Closed,
                },
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let Ok((seq, msg)) = decode_server(text.as_str()) else {
                            continue;
                        };
                        let _ = self.session.handle_incoming(seq, msg, now());
                        while let Some(event) = self.session.poll_event() {
                            match event {
                                SessionEvent::Resumed { last_ref, requests, acks } => {
                                    return Attempt::Resumed { last_ref, requests, acks }
                                }
                                SessionEvent::Moved { unanswered } => return Attempt::Moved { unanswered },
                                SessionEvent::ResumeRefused(r) => return Attempt::Refused(r),
                                // Nothing else comes before the answer.
                                SessionEvent::Message(_) | SessionEvent::Reply { .. } => {}
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Attempt::Failed(e.to_string()),
                    None => return Attempt::Failed("closed during resume".into()),
                },
                _ = sleep_until(deadline) => return Attempt::Failed("timed out".into()),
            }
        }
    }

    /// The session is over: every pending thing ends here, with a reason.
    fn end_session(mut self, (state, why): (ConnectionState, ConnectionReason)) {
        let unanswered = self.session.take_pending().into_iter().map(|(_, p)| p);
        self.invitations
            .end(unanswered.collect(), || crate::ClientError::NotLoggedIn);
        let reason = match self.session.closing() {
            Some(SessionEnd::LoggedOut) => ConnectionReason::Logout,
            Some(SessionEnd::ServerShutdown) => ConnectionReason::ServerShutdown,
            _ => why,
        };
        self.invitations
            .emit(Event::ConnectionStateChanged { state, reason });
    }
}

/// How a session that ends with its connection is reported.
fn reason(end: SessionEnd) -> ConnectionReason {
    match end {
        SessionEnd::LoggedOut => ConnectionReason::Logout,
        SessionEnd::ServerShutdown => ConnectionReason::ServerShutdown,
        SessionEnd::NoResume => ConnectionReason::Interrupted,
    }
}

/// The session layer's clock: tokio's, so that paused test time applies.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
