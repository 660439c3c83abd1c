//! One client's side of a session, sans-I/O.
//!
//! ```text
//!            on_disconnected              on_connected (sends `resume`)
//!   Up ───────────────────────► Down ─────────────────────────► Resuming
//!    ▲                           ▲  ◄──── on_disconnected ────────┘  │
//!    │                           │                                   │
//!    └──── `resumed` (send again what the server lacks) ─────────────┤
//!    └──── `session_moved` (a new device: fail what was in flight) ──┤
//!                                                                    │
//!   Over ◄── `error` (resume refused) ───────────────────────────────┘
//!   Over ◄── on_disconnected after a logout, a `going_away`, or without resume
//! ```
//!
//! While up, every numbered message is passed on once and in order
//! ([`SessionEvent::Message`], or [`SessionEvent::Reply`] for the reply to a
//! request), and acknowledged with `seen` every [`SEEN_EVERY`] messages or
//! [`SEEN_DELAY`] after the first unacknowledged one. Requests get increasing
//! `ref`s and are kept, as sent, until their reply: after a resume the ones
//! above the server's `last_ref` are sent again, followed by the last
//! [`KEEP_ACKS`] `ack`s. Requests made while down are kept and go out the same
//! way once resumed.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::codes::ErrorCode;
use crate::wire::{AckOf, ClientMessage, InvitationId, ServerMessage};

/// Acknowledge processed messages (`seen`) once this many are unacknowledged…
pub const SEEN_EVERY: u64 = 32;
/// …or this long after the first unacknowledged one ("every few dozen
/// messages or after half a second", PROTOCOL.md §1.8).
pub const SEEN_DELAY: Duration = Duration::from_millis(500);
/// How many recent `ack`s are sent again after a resume, in case the old
/// connection lost them (the server ignores duplicates).
pub const KEEP_ACKS: usize = 64;
/// The `ref` of the `login` that starts a session: it counts as the session's
/// first `last_ref` (PROTOCOL.md §1.2), so requests are numbered from 1.
pub const LOGIN_REF: u64 = 0;

/// What a session needs to know from its `login_ok`, and how often to
/// acknowledge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The secret from `login_ok` that lets a new connection `resume` the
    /// session. Empty when the server offers no resume.
    pub secret: String,
    /// How long the server keeps the session after its connection drops
    /// (`resume_ms`). Zero turns resume off on this side (the app may not want
    /// it): a drop then ends the session, and no `seen` is sent, since nothing
    /// would ever be replayed.
    pub resume_window: Duration,
    /// The server's heartbeat: it may take this long to notice a silent drop,
    /// and only then does its resume window start. So after a drop the session
    /// is certainly gone by `heartbeat` + `resume_window`.
    pub heartbeat: Duration,
    /// `seen` once this many messages are unacknowledged ([`SEEN_EVERY`]).
    pub seen_every: u64,
    /// `seen` this long after the first unacknowledged message ([`SEEN_DELAY`]).
    pub seen_delay: Duration,
    /// How many recent `ack`s to send again after a resume ([`KEEP_ACKS`]).
    pub keep_acks: usize,
}

impl Config {
    /// The documented batching and ack history, with the session's own figures.
    pub fn new(secret: impl Into<String>, resume_window: Duration, heartbeat: Duration) -> Self {
        Config {
            secret: secret.into(),
            resume_window,
            heartbeat,
            seen_every: SEEN_EVERY,
            seen_delay: SEEN_DELAY,
            keep_acks: KEEP_ACKS,
        }
    }

    /// Whether a dropped connection can be resumed at all.
    pub fn resumable(&self) -> bool {
        !self.secret.is_empty() && !self.resume_window.is_zero()
    }
}

/// Misuse of the session API (a bug in the code driving it, never the peer's doing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// [`ClientSession::send_request`] was given a message that does not carry
    /// the `ref` it was handed (an `ack`, a `seen`, or a wrong number).
    #[error("a request must carry the ref {given} it was given; this message has {found:?}")]
    WrongRef { given: u64, found: Option<u64> },
    /// `login` and `resume` start a session or a connection; they are not
    /// requests within a session.
    #[error("a {0} is not a request within a session")]
    NotARequest(&'static str),
    /// [`ClientSession::on_connected`] while a connection is already up or resuming.
    #[error("the session already has a connection; call on_disconnected first")]
    AlreadyConnected,
    /// [`ClientSession::on_connected`] on a session that is over.
    #[error("the session is over; log in again")]
    Over,
}

/// The server refused to resume the session (the answer to `resume` was an
/// `error`, e.g. `session_expired`). The session is over.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server refused to resume the session ({code}): {message}")]
pub struct ResumeRefused {
    pub code: ErrorCode,
    pub message: String,
}

/// What the session tells the code that drives it, in order.
#[derive(Debug)]
pub enum SessionEvent<T> {
    /// A server message for the application: every numbered one exactly once
    /// and in order, and the unnumbered ones (connection errors) as they come.
    /// Includes replies whose `ref` is not one of this session's requests.
    Message(ServerMessage),
    /// The reply to request `req`, with the `tag` it was sent with.
    Reply {
        req: u64,
        tag: T,
        reply: ServerMessage,
    },
    /// The server resumed the session. `requests` requests it never got and
    /// `acks` recent acks are queued to be sent again; the messages it kept
    /// follow as [`SessionEvent::Message`]s and replies.
    Resumed {
        last_ref: u64,
        requests: usize,
        acks: usize,
    },
    /// The session's server node is gone and another took it over as a new
    /// device (PROTOCOL.md §1.9): what was in flight is lost, so these
    /// requests failed (their outcome is unknown); numbering starts again.
    Moved { unanswered: Vec<T> },
    /// The resume was refused: the session is over.
    ResumeRefused(ResumeRefused),
}

/// How [`ClientSession::handle_incoming`] took a message (for logs; what to
/// do is in the events).
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Taken into account.
    Processed,
    /// Taken into account, though its `seq` skipped some: `expected` was due.
    AfterGap { expected: u64 },
    /// Its `seq` was processed before (a replay after a resume, or a
    /// duplicate): dropped.
    Duplicate,
    /// Means nothing in this state (say, a message before the answer to
    /// `resume`, or one after the connection was reported gone): dropped.
    Ignored,
}

/// Why a session is over without being resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server answered this session's `logout`.
    LoggedOut,
    /// The server said `going_away`: it is shutting down.
    ServerShutdown,
    /// Resume is off (on this side or the server's): a drop is final.
    NoResume,
}

/// What to do after the connection dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnected {
    /// Reconnect (with backoff) and call [`ClientSession::on_connected`];
    /// after `give_up` the server has certainly ended the session.
    Reconnect { give_up: Instant },
    /// The session is over.
    Over(SessionEnd),
}

/// Where the session's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// A connection is up and the session is live on it.
    Up,
    /// No connection; the server keeps the session at most until `give_up`.
    Down { give_up: Instant },
    /// `resume` is on its way on a new connection; its answer decides.
    Resuming { give_up: Instant },
    /// The session is over.
    Over,
}

/// A request waiting for its reply.
#[derive(Debug)]
struct Request<T> {
    /// As sent, to send again after a resume if the server never got it (and
    /// to know a `logout` when its `ok` comes).
    msg: ClientMessage,
    /// What the driver attached, handed back with the reply.
    tag: T,
}

/// One client's side of a session; `T` is what the driver attaches to each
/// request to act on its reply (a reply channel, say).
#[derive(Debug)]
pub struct ClientSession<T> {
    config: Config,
    link: Link,
    /// The next request's `ref`. Refs must increase within a session so that
    /// the server's `last_ref` tells which requests it applied; a
    /// `session_moved` does not reset it (increasing is all that is needed).
    next_ref: u64,
    /// Requests without a reply yet, by `ref` (ordered: replayed in order).
    pending: BTreeMap<u64, Request<T>>,
    /// The highest `seq` processed: anything at or below it is a duplicate,
    /// and it is what `resume` asks the server to continue after.
    last_seq: u64,
    /// The `seq` last acknowledged with `seen` (never ahead of `last_seq`).
    seen_sent: u64,
    /// When the next `seen` is due, if a processed message awaits one.
    seen_due: Option<Instant>,
    /// The last `keep_acks` acks, to send again after a resume.
    recent_acks: VecDeque<ClientMessage>,
    /// Frames to write to the connection, in order.
    transmit: VecDeque<ClientMessage>,
    /// Events for the driver, in order.
    events: VecDeque<SessionEvent<T>>,
    /// The server answered our `logout`: the coming drop ends the session.
    logged_out: bool,
    /// The server said `going_away`: the coming drop ends the session.
    going_away: bool,
}

impl<T> ClientSession<T> {
    /// A session that has just logged in (with ref [`LOGIN_REF`]) on a live connection.
    pub fn new(config: Config) -> Self {
        ClientSession {
            config,
            link: Link::Up,
            next_ref: LOGIN_REF + 1,
            pending: BTreeMap::new(),
            last_seq: 0,
            seen_sent: 0,
            seen_due: None,
            recent_acks: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            logged_out: false,
            going_away: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The highest `seq` processed in this session (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the session is live on a connection.
    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// How many requests wait for a reply.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Why the session will end when its connection does, if that is known
    /// already ([`SessionEnd::LoggedOut`] or [`SessionEnd::ServerShutdown`]).
    pub fn closing(&self) -> Option<SessionEnd> {
        if self.logged_out {
            Some(SessionEnd::LoggedOut)
        } else if self.going_away {
            Some(SessionEnd::ServerShutdown)
        } else {
            None
        }
    }

    /// Sends a request: `make` builds it with the `ref` given, `tag` comes
    /// back with its reply. While the connection is down the request is kept
    /// and sent once resumed. Returns the `ref`.
    pub fn send_request(
        &mut self,
        make: impl FnOnce(u64) -> ClientMessage,
        tag: T,
    ) -> Result<u64, SessionError> {
        let req = self.next_ref;
        let msg = make(req);
        match &msg {
            ClientMessage::Login { .. } => return Err(SessionError::NotARequest("login")),
            ClientMessage::Resume { .. } => return Err(SessionError::NotARequest("resume")),
            _ if msg.req() != Some(req) => {
                return Err(SessionError::WrongRef {
                    given: req,
                    found: msg.req(),
                })
            }
            _ => {}
        }
        self.next_ref += 1;
        if self.link == Link::Up {
            self.transmit.push_back(msg.clone());
        }
        self.pending.insert(req, Request { msg, tag });
        Ok(req)
    }

    /// Acknowledges an `invitation` or a `canceled` (PROTOCOL.md §3.6). Kept
    /// among the recent acks, which a resume sends again.
    pub fn send_ack(&mut self, invitation_id: InvitationId, of: AckOf) {
        let ack = ClientMessage::Ack { invitation_id, of };
        if self.config.resumable() && self.config.keep_acks > 0 {
            if self.recent_acks.len() == self.config.keep_acks {
                self.recent_acks.pop_front();
            }
            self.recent_acks.push_back(ack.clone());
        }
        if self.link == Link::Up {
            self.transmit.push_back(ack);
        }
    }

    /// Takes in one decoded server frame, with its `seq` if it had one.
    pub fn handle_incoming(
        &mut self,
        seq: Option<u64>,
        msg: ServerMessage,
        now: Instant,
    ) -> Received {
        match self.link {
            Link::Up => self.on_message(seq, msg, now),
            Link::Resuming { .. } => self.on_resume_answer(msg),
            Link::Down { .. } | Link::Over => Received::Ignored,
        }
    }

    /// When [`ClientSession::handle_timeout`] has something to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Up => self.seen_due,
            // A `seen` due while away waits for the connection (the `resume`
            // carries `last_seq` meanwhile).
            _ => None,
        }
    }

    /// Does what is due at `now`: a batched `seen`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.link == Link::Up && self.seen_due.is_some_and(|due| due <= now) {
            self.queue_seen();
        }
    }

    /// The next frame to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmit.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SessionEvent<T>> {
        self.events.pop_front()
    }

    /// The connection is gone. Frames not yet written are dropped: requests
    /// and recent acks are kept for the resume, and `resume` carries
    /// `last_seq` in place of a `seen`.
    pub fn on_disconnected(&mut self, now: Instant) -> Disconnected {
        self.transmit.clear();
        let end = if self.logged_out {
            Some(SessionEnd::LoggedOut)
        } else if self.going_away {
            Some(SessionEnd::ServerShutdown)
        } else if !self.config.resumable() {
            Some(SessionEnd::NoResume)
        } else {
            None
        };
        if let Some(end) = end {
            self.link = Link::Over;
            return Disconnected::Over(end);
        }
        let give_up = match self.link {
            // A failed resume attempt does not give the server more time.
            Link::Down { give_up } | Link::Resuming { give_up } => give_up,
            Link::Up | Link::Over => now + self.config.heartbeat + self.config.resume_window,
        };
        self.link = Link::Down { give_up };
        Disconnected::Reconnect { give_up }
    }

    /// A new connection is open: queues the `resume` to send first on it.
    pub fn on_connected(&mut self) -> Result<(), SessionError> {
        let give_up = match self.link {
            Link::Down { give_up } => give_up,
            Link::Up | Link::Resuming { .. } => return Err(SessionError::AlreadyConnected),
            Link::Over => return Err(SessionError::Over),
        };
        self.link = Link::Resuming { give_up };
        self.transmit.push_back(ClientMessage::Resume {
            req: None,
            session: self.config.secret.clone(),
            last_seq: self.last_seq,
        });
        Ok(())
    }

    /// The session is over for good: hands back every request still without a
    /// reply (in `ref` order), for failing.
    pub fn take_pending(&mut self) -> Vec<(u64, T)> {
        self.link = Link::Over;
        self.transmit.clear();
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(req, r)| (req, r.tag))
            .collect()
    }

    fn on_message(&mut self, seq: Option<u64>, msg: ServerMessage, now: Instant) -> Received {
        let mut received = Received::Processed;
        if let Some(seq) = seq {
            if seq <= self.last_seq {
                return Received::Duplicate;
            }
            if seq != self.last_seq + 1 {
                received = Received::AfterGap {
                    expected: self.last_seq + 1,
                };
            }
            self.last_seq = seq;
            if self.config.resumable() {
                if seq - self.seen_sent >= self.config.seen_every {
                    self.queue_seen();
                } else if self.seen_due.is_none() {
                    self.seen_due = Some(now + self.config.seen_delay);
                }
            }
        }
        let event = match reply_ref(&msg).and_then(|req| Some((req, self.pending.remove(&req)?))) {
            Some((req, request)) => {
                if matches!(request.msg, ClientMessage::Logout { .. })
                    && matches!(msg, ServerMessage::Ok { .. })
                {
                    self.logged_out = true;
                }
                SessionEvent::Reply {
                    req,
                    tag: request.tag,
                    reply: msg,
                }
            }
            None => match msg {
                // Answers about connections, not messages of the session.
                ServerMessage::LoginOk { .. }
                | ServerMessage::Resumed { .. }
                | ServerMessage::SessionMoved { .. } => return Received::Ignored,
                ServerMessage::GoingAway { .. } => {
                    self.going_away = true;
                    SessionEvent::Message(msg)
                }
                msg => SessionEvent::Message(msg),
            },
        };
        self.events.push_back(event);
        received
    }

    fn on_resume_answer(&mut self, msg: ServerMessage) -> Received {
        match msg {
            ServerMessage::Resumed { last_ref, .. } => {
                self.link = Link::Up;
                let mut requests = 0;
                for request in self.pending.range(last_ref + 1..).map(|(_, r)| r) {
                    self.transmit.push_back(request.msg.clone());
                    requests += 1;
                }
                self.transmit.extend(self.recent_acks.iter().cloned());
                self.events.push_back(SessionEvent::Resumed {
                    last_ref,
                    requests,
                    acks: self.recent_acks.len(),
                });
            }
            ServerMessage::SessionMoved { session, .. } => {
                self.link = Link::Up;
                self.config.secret = session;
                self.last_seq = 0;
                self.seen_sent = 0;
                self.seen_due = None;
                self.recent_acks.clear();
                let unanswered = std::mem::take(&mut self.pending)
                    .into_values()
                    .map(|r| r.tag)
                    .collect();
                self.events.push_back(SessionEvent::Moved { unanswered });
            }
            ServerMessage::Error { code, message, .. } => {
                self.link = Link::Over;
                self.transmit.clear();
                self.events
                    .push_back(SessionEvent::ResumeRefused(ResumeRefused { code, message }));
            }
            _ => return Received::Ignored,
        }
        Received::Processed
    }

    fn queue_seen(&mut self) {
        self.seen_due = None;
        if self.last_seq > self.seen_sent {
            self.seen_sent = self.last_seq;
            self.transmit
                .push_back(ClientMessage::Seen { seq: self.last_seq });
        }
    }
}

/// The `ref` a reply echoes, for the replies that answer a session's requests.
fn reply_ref(msg: &ServerMessage) -> Option<u64> {
    match msg {
        ServerMessage::Ok { req: Some(r) }
        | ServerMessage::Error { req: Some(r), .. }
        | ServerMessage::InviteOk { req: r, .. }
        | ServerMessage::Presence { req: r, .. }
        | ServerMessage::IceServers { req: r, .. } => Some(*r),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
