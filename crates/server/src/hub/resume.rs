//! Resuming a session on a new connection: here, through another node (the
//! session's home, which its secret names), or by taking over the session
//! of a node that is gone. [`RemoteResumes`] owns the connections here whose
//! session lives on another node, and the resumes not settled yet.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::info;

use callinvite_protocol::invitation::GoneCause;
use callinvite_protocol::session::ResumeRefusal;
use callinvite_protocol::wire::encode;
use callinvite_protocol::{DeviceId, ErrorCode, ServerMessage, UserId};

use super::link::{close_reason, ConnHandle, Link, Outbound, CLOSE_TAKEN_OVER};
use super::login::Admission;
use super::Hub;
use crate::cluster::{Claim, Envelope, Target};

/// A session and its user, as a connection holds it once logged in.
/// (Between nodes it travels as the pair `[device, user]`.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "(DeviceId, UserId)", into = "(DeviceId, UserId)")]
pub(crate) struct LoggedIn {
    pub(crate) device: DeviceId,
    pub(crate) user: UserId,
}

impl From<(DeviceId, UserId)> for LoggedIn {
    fn from((device, user): (DeviceId, UserId)) -> Self {
        LoggedIn { device, user }
    }
}

impl From<LoggedIn> for (DeviceId, UserId) {
    fn from(l: LoggedIn) -> Self {
        (l.device, l.user)
    }
}

/// Where the answer to a connection's `login` or `resume` goes: the
/// session, or `None` if it was refused (the connection was told why).
pub(crate) type Answer<T> = oneshot::Sender<Option<T>>;

/// What became of a `resume` handed to the hub.
pub(super) enum ResumeStart {
    /// Settled: the session, or `None` (refused; the connection was told).
    Settled(Option<LoggedIn>),
    /// The session lives on another node: answered when that node replies,
    /// when this one takes the session over, or when the connection gives up.
    Pending,
}

/// A connection here attached to a session of another node.
pub(super) struct RemoteConn {
    pub(super) conn: ConnHandle,
    /// The session's node.
    pub(super) home: u32,
}

/// A `resume` on a connection here for a session of another node, until
/// that node answers or, if it is dead, the session is taken over here.
pub(super) struct ResumeAsk {
    pub(super) home: u32,
    pub(super) session: String,
    pub(super) req: Option<u64>,
    /// The `last_seq` it named, for asking the session's node.
    pub(super) last_seq: u64,
    /// A claim is on its way to Redis.
    pub(super) claimed: bool,
    /// The session's node was asked (once only: a second resume of the
    /// same connection there would close the first).
    pub(super) asked: bool,
}

/// The connections here whose session lives on another node, by number.
#[derive(Default)]
pub(super) struct RemoteResumes {
    /// Connections here whose session lives on another node (resumed here).
    pub(super) conns: HashMap<u64, RemoteConn>,
    /// Resumes sent to another node, waiting for its answer.
    pub(super) replies: HashMap<u64, Answer<LoggedIn>>,
    /// Resumes of sessions of other nodes not settled yet.
    pub(super) asks: HashMap<u64, ResumeAsk>,
}

/// The node a session secret names (`n<node>.…`), if any.
fn home_of(secret: &str) -> Option<u32> {
    secret
        .strip_prefix('n')
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, _)| n.parse::<u32>().ok())
}

impl Hub {
    /// A `resume` on a connection here: the session is here, or on the node
    /// its secret names (then that node answers through the cluster).
    pub(super) fn resume_here(
        &mut self,
        session: String,
        last_seq: u64,
        req: Option<u64>,
        conn: ConnHandle,
        now: Instant,
    ) -> ResumeStart {
        let me = self.me();
        match home_of(&session) {
            Some(home) if self.bus.clustered() && home != me => {
                let id = conn.id;
                self.resumes.conns.insert(id, RemoteConn { conn, home });
                self.resumes.asks.insert(
                    id,
                    ResumeAsk {
                        home,
                        session,
                        req,
                        last_seq,
                        claimed: false,
                        asked: false,
                    },
                );
                if self.cluster.knows(home) {
                    self.ask_home(id);
                } else {
                    // A node this one does not know: dead, or too new to
                    // have been heard. Redis knows which.
                    self.claim_orphaned_sessions();
                }
                ResumeStart::Pending
            }
            _ => {
                let link = Link::local(me, conn);
                ResumeStart::Settled(self.resume(&session, last_seq, req, link, now))
            }
        }
    }

    /// Hands connection `conn`'s resume to the node of its session.
    fn ask_home(&mut self, conn: u64) {
        let me = self.me();
        let Some(ask) = self.resumes.asks.get_mut(&conn).filter(|a| !a.asked) else {
            return;
        };
        ask.asked = true;
        info!(
            home = ask.home,
            conn, "resume of a session that lives on another node: asking it"
        );
        self.bus.publish(
            Target::Node(ask.home),
            &Envelope::ResumeVia {
                node: me,
                conn,
                session: ask.session.clone(),
                last_seq: ask.last_seq,
                req: ask.req,
            },
        );
    }

    /// Claims (from Redis) the sessions that connections here want to
    /// resume and whose nodes are not among the live ones here.
    pub(super) fn claim_orphaned_sessions(&mut self) {
        for (conn, ask) in &mut self.resumes.asks {
            if !ask.claimed && !self.cluster.knows(ask.home) {
                ask.claimed = true;
                info!(
                    node = ask.home,
                    conn, "resume of a session of a node that is gone: taking it over"
                );
                self.bus.claim_session(ask.home, &ask.session, *conn);
            }
        }
    }

    /// Connection `conn` gave up waiting for its resume: if nothing settled
    /// it meanwhile, it is answered `session_expired` here, and a claim still
    /// on its way gives its record back when it comes.
    pub(super) fn resume_abandoned(&mut self, conn: u64) {
        let Some(ask) = self.resumes.asks.remove(&conn) else {
            return;
        };
        info!(
            home = ask.home,
            conn, "resume not settled in time: the client is told to log in again"
        );
        if let Some(remote) = self.resumes.conns.remove(&conn) {
            let msg = ServerMessage::error(
                ask.req,
                ErrorCode::SessionExpired,
                "the node that kept this session did not answer; log in again",
            );
            remote.conn.put_text(encode(&msg));
        }
        if let Some(reply) = self.resumes.replies.remove(&conn) {
            let _ = reply.send(None);
        }
    }

    /// The session's node answered a resume of connection `conn` here.
    pub(super) fn resume_answered(&mut self, conn: u64, answer: Option<LoggedIn>) {
        self.resumes.asks.remove(&conn);
        if answer.is_none() {
            self.resumes.conns.remove(&conn);
        }
        if let Some(reply) = self.resumes.replies.remove(&conn) {
            let _ = reply.send(answer);
        }
    }

    /// Redis answered a claim: take the session over on connection `conn`
    /// as a new device of its user, ask its node if that is alive after
    /// all, or tell the client the session has expired.
    pub(super) fn session_claimed(
        &mut self,
        conn: u64,
        node: u32,
        session: String,
        claim: Claim,
        now: Instant,
    ) {
        let record = match claim {
            Claim::NodeAlive => {
                // Alive, or dead for less than its key's life: ask it, and
                // claim again at the next heartbeat if it is still unknown.
                if let Some(ask) = self.resumes.asks.get_mut(&conn) {
                    ask.claimed = false;
                    self.ask_home(conn);
                }
                return;
            }
            Claim::Gone => None,
            Claim::Taken(record) => Some(record),
        };
        // The connection may have given up meanwhile (`resume_abandoned`).
        let reply = self
            .resumes
            .replies
            .remove(&conn)
            .filter(|r| !r.is_closed());
        let ask = self.resumes.asks.remove(&conn);
        let remote = self.resumes.conns.remove(&conn);
        let (Some(reply), Some(ask), Some(remote)) = (reply, ask, remote) else {
            if let Some(record) = record {
                // The record goes back, for the client's next attempt.
                self.bus.keep_session(
                    node,
                    &session,
                    Some(&record),
                    Some(self.config.resume_grace),
                );
            }
            return;
        };
        let Some(record) = record else {
            self.config.metrics.login("resume_session_expired");
            let msg = ServerMessage::error(
                ask.req,
                ErrorCode::SessionExpired,
                "the node that kept this session is gone and the session with it (its resume window passed); log in again",
            );
            remote.conn.put_text(encode(&msg));
            let _ = reply.send(None);
            return;
        };
        let user = record.user.clone();
        let how = Admission::Moved {
            follows: record.subscriptions,
        };
        let device = self.admit(record.user, ask.req, remote.conn, how, now);
        let _ = reply.send(Some(LoggedIn { device, user }));
    }

    /// Resumes the session named `session` here on the connection of
    /// `link` (here or on another node): `resumed` and the replay, or the
    /// error; the session and its user if it went on.
    pub(super) fn resume(
        &mut self,
        session: &str,
        last_seq: u64,
        req: Option<u64>,
        link: Link,
        now: Instant,
    ) -> Option<LoggedIn> {
        let refuse = |hub: &Hub, link: &Link, code, message: String| {
            let msg = ServerMessage::error(req, code, message);
            link.put(&*hub.bus, Outbound::Text(encode(&msg).into()));
            None
        };
        let Some(device) = self.sessions.by_secret(session) else {
            self.config.metrics.login("resume_session_expired");
            return refuse(
                self,
                &link,
                ErrorCode::SessionExpired,
                "no such session here (its grace window passed, it logged out, or the server restarted); log in again".into(),
            );
        };
        let d = self.sessions.get_mut(device)?;
        let detached_until = d.outbox.poll_timeout();
        let resumed = match d.outbox.handle_resume(last_seq) {
            Ok(resumed) => resumed,
            Err(refusal) => {
                let user = d.user.clone();
                return match refusal {
                    ResumeRefusal::Ahead { .. } => {
                        self.config.metrics.login("resume_invalid");
                        refuse(self, &link, ErrorCode::InvalidArgument, refusal.to_string())
                    }
                    ResumeRefusal::TooFarBehind { missed } => {
                        // Messages it never saw are gone from the outbox: it cannot catch up.
                        info!(%user, %device, missed, "resume refused: too far behind; the session ends");
                        self.config.metrics.login("resume_too_far_behind");
                        self.gone(device, GoneCause::ConnectionLost, now);
                        refuse(self, &link, ErrorCode::SessionExpired, refusal.to_string())
                    }
                };
            }
        };
        let old = d.link.take();
        if let Some(until) = detached_until {
            self.sessions.reattached(device, until);
        }
        if let Some(old) = old {
            info!(%device, "session resumed on a new connection: closing the old one");
            if !old.put(
                &*self.bus,
                Outbound::Close(CLOSE_TAKEN_OVER, close_reason(CLOSE_TAKEN_OVER)),
            ) {
                old.kill(&*self.bus);
            }
        }
        let answer = ServerMessage::Resumed {
            req,
            device_id: device,
            last_ref: resumed.last_ref,
            seq: resumed.seq,
        };
        link.put(&*self.bus, Outbound::Text(encode(&answer).into()));
        let limits = self.limits();
        let d = self.sessions.get_mut(device)?;
        while let Some(text) = d.outbox.poll_transmit(&limits) {
            if !link.put(&*self.bus, Outbound::Text(text)) {
                link.kill(&*self.bus);
                break;
            }
        }
        info!(user = %d.user, %device, last_seq, replay = resumed.replay, via_node = link.node, "session resumed");
        let user = d.user.clone();
        d.link = Some(link);
        self.config.metrics.login("resumed");
        Some(LoggedIn { device, user })
    }
}
