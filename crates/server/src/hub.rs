//! The hub: one task that owns all shared state — logged-in devices, the
//! invitation records and their timers, presence subscriptions — and applies
//! every request in arrival order. Connections talk to it over a channel, so
//! races (cancel vs accept, two devices accepting, expiry vs accept) are
//! decided by the order in which the hub receives them, and both parties
//! always get the same outcome.
//!
//! The hub never blocks on a connection: messages go to a bounded queue per
//! connection, and a connection whose queue is full is closed as too slow.
//!
//! Sessions survive their connection: every message to a device carries a
//! sequence number and stays in the device's outbox until the client says it
//! has `seen` it. A connection that drops without a close frame or a logout
//! leaves its device *detached* for the resume grace window: it stays online,
//! its invitations and calls go on, and its messages wait in the outbox. A
//! `resume` on a new connection reattaches it and replays what it missed;
//! when the window passes, the device is gone as if the connection had closed.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use callinvite_protocol::invitation::{GoneCause, Input, Party, Record};
use callinvite_protocol::limits::{
    CLOSE_GOING_AWAY, CLOSE_NORMAL, MAX_CONTENT_BYTES, MAX_PRESENCE_QUERY,
    MAX_PRESENCE_SUBSCRIPTIONS, MAX_RESPONSE_BYTES,
};
use callinvite_protocol::wire::{encode, encode_seq, AuthMode, PresenceEntry, TimersMs};
use callinvite_protocol::{
    ClientMessage, DeviceId, ErrorCode, InvitationId, ServerMessage, UserId,
};

use crate::cluster::{owner_of, Cluster, Envelope, Target};
use crate::config::Config;
use crate::missed::MissedCalls;

/// What the hub asks a connection's writer to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// Close code for a connection whose session was resumed on another one.
const CLOSE_TAKEN_OVER: u16 = 4001;
/// Close code 1008: policy violation (here: too slow to keep up).
const CLOSE_POLICY: u16 = 1008;

/// How a connection ended, as its task saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Departure {
    /// The client logged out.
    Logout,
    /// The client closed the WebSocket (a close frame): it meant to leave.
    Closed,
    /// The transport failed, the heartbeat was missed, or the connection was
    /// too slow: the client may come back and `resume`.
    Lost,
}

/// The connection a device is attached to.
struct Link {
    /// The node the connection is on, and its number there (so a stale
    /// connection's requests are ignored after a resume).
    node: u32,
    conn: u64,
    via: Via,
}

/// How to reach a connection.
enum Via {
    /// On this node.
    Local {
        /// Its writer's queue.
        out: mpsc::Sender<Outbound>,
        /// Cancelled to make the connection close itself (too slow).
        kill: CancellationToken,
    },
    /// On another node (the session was resumed there): frames travel as
    /// [`Envelope::ToConn`].
    Remote,
}

/// The reason text sent with a close code.
pub(crate) fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_NORMAL => "logged out",
        CLOSE_GOING_AWAY => "server shutting down",
        CLOSE_TAKEN_OVER => "session resumed on another connection",
        _ => "too slow: outbound queue full",
    }
}

/// What connections tell the hub.
pub(crate) enum Command {
    /// A connection with a verified user id wants to log in. The hub sends
    /// `login_ok` or the error itself, and answers `reply` with the device id.
    Login {
        user: UserId,
        token: Option<String>,
        req: Option<u64>,
        conn: u64,
        out: mpsc::Sender<Outbound>,
        kill: CancellationToken,
        reply: oneshot::Sender<Option<DeviceId>>,
    },
    /// A new connection wants to continue a session. The hub sends `resumed`
    /// and the missed messages, or the error, and answers `reply`.
    Resume {
        session: String,
        last_seq: u64,
        req: Option<u64>,
        conn: u64,
        out: mpsc::Sender<Outbound>,
        kill: CancellationToken,
        reply: oneshot::Sender<Option<(DeviceId, UserId)>>,
    },
    /// Any request of a logged-in device other than login.
    Request {
        device: DeviceId,
        conn: u64,
        msg: ClientMessage,
    },
    /// The device's connection is gone.
    Gone {
        device: DeviceId,
        conn: u64,
        how: Departure,
    },
    /// Another node said something.
    Cluster(Envelope),
    /// The node's Redis subscription is back after an outage.
    ClusterRejoined,
}

/// A logged-in session ("device"), attached to a connection or waiting for a resume.
struct Device {
    user: UserId,
    /// The connection it is attached to; `None` while detached.
    link: Option<Link>,
    /// The secret a `resume` must name.
    session: String,
    /// When a detached device is given up (gone for good).
    detached_until: Option<Instant>,
    /// The `seq` of the last message sent to it.
    seq: u64,
    /// Messages it has not acknowledged (`seen`), oldest first, for a resume.
    outbox: VecDeque<(u64, Utf8Bytes)>,
    /// The highest request `ref` applied for it (reported on resume).
    last_ref: u64,
    /// Users whose presence it follows.
    subscriptions: HashSet<UserId>,
}

/// Another node of the cluster.
struct RemoteNode {
    last_heard: Instant,
    /// Its logged-in devices.
    devices: HashMap<DeviceId, UserId>,
}

/// An invitation owned by another node that devices here take part in, so
/// they can be told if that node dies.
#[derive(Default)]
struct Foreign {
    devices: HashSet<DeviceId>,
    /// Devices in the call (or whose accept is on its way).
    in_call: HashSet<DeviceId>,
}

pub(crate) struct Hub {
    config: Config,
    next_device: u64,
    devices: HashMap<DeviceId, Device>,
    /// Online devices of each user; a user is online while this is non-empty.
    users: HashMap<UserId, Vec<DeviceId>>,
    records: HashMap<InvitationId, Record>,
    /// Invitations still ringing for each callee, delivered to devices that log in.
    ringing_for: HashMap<UserId, HashSet<InvitationId>>,
    /// Invitations still ringing from each caller (for the per-user limit).
    ringing_from: HashMap<UserId, HashSet<InvitationId>>,
    /// Timer queue: (deadline, invitation) for each record that wants a tick.
    timers: BTreeSet<(Instant, InvitationId)>,
    scheduled: HashMap<InvitationId, Instant>,
    /// Devices following each user's presence.
    subscribers: HashMap<UserId, HashSet<DeviceId>>,
    /// Login rate per user id: (window start, logins in window).
    login_rate: HashMap<UserId, (Instant, u32)>,
    /// Device of each session secret.
    sessions: HashMap<String, DeviceId>,
    /// Detached devices by the time their grace window ends.
    detached: BTreeSet<(Instant, DeviceId)>,
    /// Calls users missed while offline.
    missed: MissedCalls,
    /// The cluster, when there is one; `None` is a single node.
    cluster: Option<Cluster>,
    /// The other nodes, by number.
    nodes: HashMap<u32, RemoteNode>,
    /// Devices (here or on other nodes) taking part in invitations owned
    /// here, so that their departure reaches those invitations.
    involved: HashMap<DeviceId, HashSet<InvitationId>>,
    /// Invitations owned by other nodes that devices here take part in.
    foreign: HashMap<InvitationId, Foreign>,
    /// Connections here whose session lives on another node (resumed here),
    /// with that node.
    remote_conns: HashMap<u64, (mpsc::Sender<Outbound>, CancellationToken, u32)>,
    /// Resumes sent to another node, waiting for its answer.
    pending_resumes: HashMap<u64, oneshot::Sender<Option<(DeviceId, UserId)>>>,
    /// Requests of devices here handed to the node that owns the invitation
    /// and not answered yet, by that node: answered here if it dies.
    forwarded: HashMap<u32, HashSet<(DeviceId, u64)>>,
}

/// The hub's clock. `tokio::time::Instant` so tests can pause time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) async fn run(
    mut hub: Hub,
    mut rx: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) {
    let beat = hub
        .cluster
        .as_ref()
        .map_or(Duration::from_secs(3600), |c| c.config.heartbeat_every);
    let mut heartbeat = tokio::time::interval(beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Some(c) = &hub.cluster {
        c.publish(Target::All, &Envelope::Hello { from: c.node });
    }
    loop {
        let next = match (hub.timers.first(), hub.detached.first()) {
            (Some((a, _)), Some((b, _))) => Some(*a.min(b)),
            (Some((a, _)), None) | (None, Some((a, _))) => Some(*a),
            (None, None) => None,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                hub.shutdown(now());
                break;
            }
            cmd = rx.recv() => match cmd {
                Some(cmd) => {
                    // A deadline that passed before this request arrived is applied first,
                    // so "arrival order" holds between requests and timers too.
                    let now = now();
                    hub.fire_timers(now);
                    hub.handle(cmd, now);
                }
                None => break,
            },
            _ = sleep_until(next) => hub.fire_timers(now()),
            _ = heartbeat.tick(), if hub.cluster.is_some() => hub.cluster_tick(now()),
        }
    }
    hub.missed.close().await;
    debug!("hub stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

fn invalid(message: impl Into<String>) -> (ErrorCode, String) {
    (ErrorCode::InvalidArgument, message.into())
}

/// Validates a list of user ids for presence requests.
fn parse_users(users: &[String]) -> Result<Vec<UserId>, (ErrorCode, String)> {
    users
        .iter()
        .map(|u| UserId::parse(u).map_err(|e| invalid(format!("{u:?}: {e}"))))
        .collect()
}

impl Hub {
    pub(crate) fn new(config: Config, missed: MissedCalls, cluster: Option<Cluster>) -> Self {
        Hub {
            config,
            next_device: cluster
                .as_ref()
                .map_or(1, |c| crate::cluster::first_device(c.node)),
            devices: HashMap::new(),
            users: HashMap::new(),
            records: HashMap::new(),
            ringing_for: HashMap::new(),
            ringing_from: HashMap::new(),
            timers: BTreeSet::new(),
            scheduled: HashMap::new(),
            subscribers: HashMap::new(),
            login_rate: HashMap::new(),
            sessions: HashMap::new(),
            detached: BTreeSet::new(),
            missed,
            cluster,
            nodes: HashMap::new(),
            involved: HashMap::new(),
            foreign: HashMap::new(),
            remote_conns: HashMap::new(),
            pending_resumes: HashMap::new(),
            forwarded: HashMap::new(),
        }
    }

    fn handle(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Login {
                user,
                token,
                req,
                conn,
                out,
                kill,
                reply,
            } => {
                let device = self.login(user, token, req, conn, out, kill, now);
                let _ = reply.send(device);
            }
            Command::Resume {
                session,
                last_seq,
                req,
                conn,
                out,
                kill,
                reply,
            } => match self.resume_here(session, last_seq, req, conn, out, kill, now) {
                Some(answer) => {
                    let _ = reply.send(answer);
                }
                None => {
                    self.pending_resumes.insert(conn, reply);
                }
            },
            Command::Request { device, conn, msg } => {
                let me = self.me();
                if self.devices.contains_key(&device) {
                    self.request_from(me, conn, device, msg, now);
                } else {
                    // The session lives on another node: hand the request over.
                    let node = me;
                    self.to_session_node(
                        device,
                        Envelope::FromConn {
                            node,
                            conn,
                            device,
                            msg,
                        },
                    );
                }
            }
            Command::Cluster(envelope) => self.on_cluster(envelope, now),
            Command::ClusterRejoined => self.rejoin(),
            Command::Gone { device, conn, how } => {
                let me = self.me();
                if self.devices.contains_key(&device) {
                    self.conn_gone(me, conn, device, how, now);
                } else {
                    self.remote_conns.remove(&conn);
                    let node = me;
                    self.to_session_node(
                        device,
                        Envelope::ConnGone {
                            node,
                            conn,
                            device,
                            how,
                        },
                    );
                }
            }
        }
    }

    /// Sends an envelope to the node that keeps `device`'s session.
    fn to_session_node(&self, device: DeviceId, envelope: Envelope) {
        if let Some(c) = &self.cluster {
            c.publish(Target::Node(crate::cluster::node_of(device)), &envelope);
        }
    }

    /// This node's number (0 without a cluster).
    fn me(&self) -> u32 {
        self.cluster.as_ref().map_or(0, |c| c.node)
    }

    /// A request from connection `conn` on `node` for `device` (whose session is here).
    fn request_from(
        &mut self,
        node: u32,
        conn: u64,
        device: DeviceId,
        msg: ClientMessage,
        now: Instant,
    ) {
        if !self.attached(device, node, conn) {
            // A connection that lost its session to a resume elsewhere.
            return;
        }
        let req = msg.req();
        if let (Some(r), Some(d)) = (req, self.devices.get_mut(&device)) {
            d.last_ref = d.last_ref.max(r);
        }
        if let Err((code, message)) = self.request(device, msg, now) {
            self.send(device, &ServerMessage::error(req, code, message));
        }
    }

    /// Connection `conn` on `node` of `device` (whose session is here) ended.
    fn conn_gone(&mut self, node: u32, conn: u64, device: DeviceId, how: Departure, now: Instant) {
        if !self.attached(device, node, conn) {
            return;
        }
        match how {
            Departure::Lost if !self.config.resume_grace.is_zero() => self.detach(device, now),
            Departure::Logout => self.gone(device, GoneCause::Logout, now),
            _ => self.gone(device, GoneCause::ConnectionLost, now),
        }
    }

    /// Whether `device` is attached to connection `conn` on `node`.
    fn attached(&self, device: DeviceId, node: u32, conn: u64) -> bool {
        self.devices
            .get(&device)
            .and_then(|d| d.link.as_ref())
            .is_some_and(|l| l.conn == conn && l.node == node)
    }

    /// Queues a frame for a link's connection; false if its queue is full.
    fn put(&self, link: &Link, frame: Outbound) -> bool {
        match &link.via {
            Via::Local { out, .. } => {
                !matches!(out.try_send(frame), Err(mpsc::error::TrySendError::Full(_)))
            }
            Via::Remote => {
                if let Some(c) = &self.cluster {
                    let frame = match frame {
                        Outbound::Text(t) => crate::cluster::Frame::Text(t.as_str().to_owned()),
                        Outbound::Close(code, _) => crate::cluster::Frame::Close(code),
                    };
                    c.publish(
                        Target::Node(link.node),
                        &Envelope::ToConn {
                            conn: link.conn,
                            frame,
                        },
                    );
                }
                true
            }
        }
    }

    /// Makes a link's connection close itself as too slow.
    fn kill(&self, link: &Link) {
        match &link.via {
            Via::Local { kill, .. } => kill.cancel(),
            Via::Remote => {
                self.put(link, Outbound::Close(CLOSE_POLICY, ""));
            }
        }
    }

    /// Sends one message of the device's session: numbered, kept until seen
    /// (when sessions can resume), and written if a connection is attached.
    fn send(&mut self, device: DeviceId, msg: &ServerMessage) {
        let keep = !self.config.resume_grace.is_zero();
        let limit = self.config.resume_buffer;
        let Some(d) = self.devices.get_mut(&device) else {
            // A device on another node: its node delivers it.
            if let Some(c) = &self.cluster {
                let node = crate::cluster::node_of(device);
                if node != c.node {
                    c.publish(
                        Target::Node(node),
                        &Envelope::Deliver {
                            device,
                            msg: msg.clone(),
                        },
                    );
                }
            }
            return;
        };
        d.seq += 1;
        let text = Utf8Bytes::from(encode_seq(d.seq, msg));
        if keep {
            d.outbox.push_back((d.seq, text.clone()));
            if d.outbox.len() > limit {
                // Too far behind to resume from the start; a resume from
                // before the oldest kept message is refused.
                d.outbox.pop_front();
            }
        }
        let Some(d) = self.devices.get(&device) else {
            return;
        };
        let Some(link) = &d.link else {
            return;
        };
        if !self.put(link, Outbound::Text(text)) {
            warn!(%device, user = %d.user, "outbound queue full: closing the connection as too slow");
            self.kill(link);
        }
    }

    /// The connection of `device` dropped: keep the session for the grace window.
    fn detach(&mut self, device: DeviceId, now: Instant) {
        let until = now + self.config.resume_grace;
        let Some(d) = self.devices.get_mut(&device) else {
            return;
        };
        d.link = None;
        d.detached_until = Some(until);
        self.detached.insert((until, device));
        info!(user = %d.user, %device, grace = ?self.config.resume_grace, unseen = d.outbox.len(), "connection lost: session kept for a resume");
    }

    /// A `resume` on a connection here: the session is here, or on the node
    /// its secret names (then that node answers through the cluster).
    #[allow(clippy::too_many_arguments)]
    fn resume_here(
        &mut self,
        session: String,
        last_seq: u64,
        req: Option<u64>,
        conn: u64,
        out: mpsc::Sender<Outbound>,
        kill: CancellationToken,
        now: Instant,
    ) -> Option<Option<(DeviceId, UserId)>> {
        let me = self.me();
        let home = session
            .strip_prefix('n')
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<u32>().ok());
        match (&self.cluster, home) {
            (Some(c), Some(home)) if home != me && self.nodes.contains_key(&home) => {
                info!(
                    home,
                    conn, "resume of a session that lives on another node: asking it"
                );
                self.remote_conns.insert(conn, (out, kill, home));
                c.publish(
                    Target::Node(home),
                    &Envelope::ResumeVia {
                        node: me,
                        conn,
                        session,
                        last_seq,
                        req,
                    },
                );
                // Answered when that node replies (or the connection gives up).
                None
            }
            _ => {
                let link = Link {
                    node: me,
                    conn,
                    via: Via::Local { out, kill },
                };
                Some(self.resume(&session, last_seq, req, link, now))
            }
        }
    }

    fn resume(
        &mut self,
        session: &str,
        last_seq: u64,
        req: Option<u64>,
        link: Link,
        now: Instant,
    ) -> Option<(DeviceId, UserId)> {
        let refuse = |hub: &Hub, link: &Link, code, message: String| {
            let msg = ServerMessage::error(req, code, message);
            hub.put(link, Outbound::Text(encode(&msg).into()));
            None
        };
        let Some(&device) = self.sessions.get(session) else {
            self.config.metrics.login("resume_session_expired");
            return refuse(
                self,
                &link,
                ErrorCode::SessionExpired,
                "no such session here (its grace window passed, it logged out, or the server restarted); log in again".into(),
            );
        };
        let d = &self.devices[&device];
        if last_seq > d.seq {
            self.config.metrics.login("resume_invalid");
            return refuse(
                self,
                &link,
                ErrorCode::InvalidArgument,
                format!("last_seq {last_seq} is ahead of this session's {}", d.seq),
            );
        }
        let oldest = d.outbox.front().map_or(d.seq + 1, |(s, _)| *s);
        if last_seq + 1 < oldest {
            // Messages it never saw are gone from the outbox: it cannot catch up.
            let missed = oldest - last_seq - 1;
            info!(user = %d.user, %device, missed, "resume refused: too far behind; the session ends");
            self.config.metrics.login("resume_too_far_behind");
            self.gone(device, GoneCause::ConnectionLost, now);
            return refuse(
                self,
                &link,
                ErrorCode::SessionExpired,
                format!("{missed} messages of this session are no longer kept; log in again"),
            );
        }
        let Some(d) = self.devices.get_mut(&device) else {
            return None;
        };
        let old = d.link.take();
        if let Some(until) = d.detached_until.take() {
            self.detached.remove(&(until, device));
        }
        while d.outbox.front().is_some_and(|(s, _)| *s <= last_seq) {
            d.outbox.pop_front();
        }
        if let Some(old) = old {
            info!(%device, "session resumed on a new connection: closing the old one");
            if !self.put(
                &old,
                Outbound::Close(CLOSE_TAKEN_OVER, close_reason(CLOSE_TAKEN_OVER)),
            ) {
                self.kill(&old);
            }
        }
        let d = &self.devices[&device];
        let resumed = ServerMessage::Resumed {
            req,
            device_id: device,
            last_ref: d.last_ref,
            seq: d.seq,
        };
        self.put(&link, Outbound::Text(encode(&resumed).into()));
        let replay = d.outbox.len();
        for (_, text) in &d.outbox {
            if !self.put(&link, Outbound::Text(text.clone())) {
                self.kill(&link);
                break;
            }
        }
        info!(user = %d.user, %device, last_seq, replay, via_node = link.node, "session resumed");
        let Some(d) = self.devices.get_mut(&device) else {
            return None;
        };
        self.config.metrics.login("resumed");
        let user = d.user.clone();
        d.link = Some(link);
        Some((device, user))
    }

    fn login(
        &mut self,
        user: UserId,
        token: Option<String>,
        req: Option<u64>,
        conn: u64,
        out: mpsc::Sender<Outbound>,
        kill: CancellationToken,
        now: Instant,
    ) -> Option<DeviceId> {
        let out = &out;
        let window = self.login_rate.entry(user.clone()).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 > self.config.logins_per_second {
            info!(%user, "login refused: too often");
            self.config.metrics.login("too_often");
            let msg = ServerMessage::error(
                req,
                ErrorCode::TooOften,
                format!(
                    "more than {} logins per second for this user id; wait a second",
                    self.config.logins_per_second
                ),
            );
            let _ = out.try_send(Outbound::Text(encode(&msg).into()));
            return None;
        }
        if self.login_rate.len() > 100_000 {
            self.login_rate
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        if let Some(secret) = &self.config.secret {
            let checked = match token.as_deref() {
                None | Some("") => Err(crate::auth::TokenError::Missing),
                Some(t) => crate::auth::verify(secret, user.as_str(), t),
            };
            if let Err(e) = checked {
                info!(%user, error = %e, "login refused");
                self.config.metrics.login(e.code().as_str());
                let _ = out.try_send(Outbound::Text(
                    encode(&ServerMessage::error(req, e.code(), e.to_string())).into(),
                ));
                return None;
            }
        }

        let mut online = self.users.get(&user).map_or(0, Vec::len);
        if online >= self.config.max_devices_per_user {
            // A detached device is most likely this one coming back without
            // its session (say, the app restarted): it gives up its place.
            let oldest = self.users.get(&user).and_then(|list| {
                list.iter()
                    .filter_map(|id| Some((self.devices.get(id)?.detached_until?, *id)))
                    .min()
            });
            if let Some((_, old)) = oldest {
                info!(%user, device = %old, "device limit reached: ending a detached session to make room");
                self.gone(old, GoneCause::ConnectionLost, now);
                online -= 1;
            }
        }
        if online >= self.config.max_devices_per_user {
            info!(%user, online, "login refused: too many devices");
            self.config.metrics.login("too_many_devices");
            let msg = ServerMessage::error(
                req,
                ErrorCode::TooManyDevices,
                format!(
                    "{user} already has {online} devices logged in (the limit); log one out first"
                ),
            );
            let _ = out.try_send(Outbound::Text(encode(&msg).into()));
            return None;
        }
        let device = DeviceId(self.next_device);
        self.next_device += 1;
        // In a cluster the secret names its node, so a resume on another node finds it.
        let session = match &self.cluster {
            Some(c) => format!("n{}.{}", c.node, uuid::Uuid::new_v4().simple()),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        // login_ok is about this connection, so it is sent before the session's numbered messages.
        let t = &self.config.timeouts;
        let ok = ServerMessage::LoginOk {
            req,
            user: user.to_string(),
            device_id: device,
            auth: if self.config.secret.is_some() {
                AuthMode::Token
            } else {
                AuthMode::Open
            },
            timers: TimersMs {
                offline_ms: t.offline.as_millis() as u64,
                no_response_ms: t.no_response.as_millis() as u64,
                ring_ms: t.ring.as_millis() as u64,
                heartbeat_ms: self.config.heartbeat.as_millis() as u64,
                resume_ms: self.config.resume_grace.as_millis() as u64,
            },
            session: session.clone(),
        };
        let _ = out.try_send(Outbound::Text(encode(&ok).into()));
        self.sessions.insert(session.clone(), device);
        let link = Link {
            node: self.me(),
            conn,
            via: Via::Local {
                out: out.clone(),
                kill,
            },
        };
        self.devices.insert(
            device,
            Device {
                user: user.clone(),
                link: Some(link),
                session,
                detached_until: None,
                seq: 0,
                outbox: VecDeque::new(),
                last_ref: req.unwrap_or(0),
                subscriptions: HashSet::new(),
            },
        );
        let devices = self.users.entry(user.clone()).or_default();
        let came_online = devices.is_empty();
        devices.push(device);
        info!(%user, %device, devices = self.users.get(&user).map_or(0, Vec::len), "logged in");
        self.config.metrics.login("ok");
        self.config.metrics.devices.inc();
        if came_online {
            self.notify_presence(&user, true);
        }
        if let Some(c) = &self.cluster {
            c.publish(
                Target::All,
                &Envelope::DeviceOnline {
                    from: c.node,
                    user: user.clone(),
                    device,
                },
            );
        }
        let missed = self.missed.of(&user);
        if !missed.is_empty() {
            self.send(device, &ServerMessage::MissedCalls { calls: missed });
        }
        // Every invitation still ringing for this user rings on the new device too.
        let pending: Vec<InvitationId> = self
            .ringing_for
            .get(&user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for id in pending {
            self.drive(&id, Input::CalleeDeviceOnline(device), now);
        }
        Some(device)
    }

    fn request(
        &mut self,
        device: DeviceId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(d) = self.devices.get(&device) else {
            return Ok(());
        };
        let party = Party {
            user: d.user.clone(),
            device,
        };
        match msg {
            ClientMessage::Login { .. } | ClientMessage::Resume { .. } => Err((
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in; log out first".into(),
            )),
            ClientMessage::ClearMissedCalls {
                req,
                invitation_ids,
            } => {
                self.missed.clear(&party.user, &invitation_ids);
                if let Some(c) = &self.cluster {
                    c.store_missed(
                        &party.user,
                        &self.missed.of(&party.user),
                        self.config.missed.max_age,
                    );
                    c.publish(
                        Target::All,
                        &Envelope::MissedCleared {
                            from: c.node,
                            user: party.user.clone(),
                            ids: invitation_ids,
                        },
                    );
                }
                self.send(device, &ServerMessage::Ok { req: Some(req) });
                Ok(())
            }
            ClientMessage::Seen { seq } => {
                if let Some(d) = self.devices.get_mut(&device) {
                    while d.outbox.front().is_some_and(|(s, _)| *s <= seq) {
                        d.outbox.pop_front();
                    }
                }
                Ok(())
            }
            ClientMessage::Logout { req } => {
                self.send(device, &ServerMessage::Ok { req });
                if let Some(l) = self.devices.get(&device).and_then(|d| d.link.as_ref()) {
                    self.put(l, Outbound::Close(CLOSE_NORMAL, close_reason(CLOSE_NORMAL)));
                }
                self.gone(device, GoneCause::Logout, now);
                Ok(())
            }
            ClientMessage::Invite {
                req,
                callee,
                content,
            } => {
                let callee = UserId::parse(&callee).map_err(|e| invalid(format!("callee: {e}")))?;
                if callee == party.user {
                    return Err(invalid("you cannot call yourself"));
                }
                if content.len() > MAX_CONTENT_BYTES {
                    return Err(invalid(format!(
                        "content is {} bytes; the limit is {MAX_CONTENT_BYTES}",
                        content.len()
                    )));
                }
                let ringing = self.ringing_from.get(&party.user).map_or(0, HashSet::len);
                if ringing >= self.config.max_outgoing_invitations {
                    return Err((
                        ErrorCode::TooManyInvitations,
                        format!("you already have {ringing} invitations ringing (the limit); cancel one or wait"),
                    ));
                }
                let id = match &self.cluster {
                    // The id names the node that owns it.
                    Some(c) => InvitationId(format!("n{}.{}", c.node, uuid::Uuid::new_v4())),
                    None => InvitationId(uuid::Uuid::new_v4().to_string()),
                };
                let online: Vec<DeviceId> = self.users.get(&callee).cloned().unwrap_or_default();
                info!(invitation = %id, caller = %party.user, %device, %callee, callee_devices = online.len(), "invitation sent");
                let (record, effects) = Record::new(
                    id.clone(),
                    party,
                    req,
                    callee.clone(),
                    content,
                    &online,
                    self.config.timeouts,
                    now,
                );
                self.ringing_for
                    .entry(callee)
                    .or_default()
                    .insert(id.clone());
                self.ringing_from
                    .entry(record.caller().user.clone())
                    .or_default()
                    .insert(id.clone());
                self.records.insert(id.clone(), record);
                self.apply(&id, "new", effects, now);
                Ok(())
            }
            ClientMessage::Cancel { req, invitation_id } => {
                self.drive_request(&invitation_id, Input::Cancel { from: party, req }, now)
            }
            ClientMessage::Accept {
                req,
                invitation_id,
                response,
            } => {
                check_response(&response)?;
                self.drive_request(
                    &invitation_id,
                    Input::Accept {
                        from: party,
                        req,
                        response,
                    },
                    now,
                )
            }
            ClientMessage::Refuse {
                req,
                invitation_id,
                response,
                busy,
            } => {
                check_response(&response)?;
                self.drive_request(
                    &invitation_id,
                    Input::Refuse {
                        from: party,
                        req,
                        response,
                        busy,
                    },
                    now,
                )
            }
            ClientMessage::Hangup { req, invitation_id } => {
                self.drive_request(&invitation_id, Input::Hangup { from: party, req }, now)
            }
            ClientMessage::Ack { invitation_id, of } => {
                let input = Input::Ack { from: device, of };
                if !self.forward(&invitation_id, &input, None) {
                    self.drive(&invitation_id, input, now);
                }
                Ok(())
            }
            ClientMessage::QueryPresence { req, users } => {
                if users.is_empty() || users.len() > MAX_PRESENCE_QUERY {
                    return Err(invalid(format!(
                        "query 1 to {MAX_PRESENCE_QUERY} user ids at once"
                    )));
                }
                let users = parse_users(&users)?;
                let users = self.presence_of(&users);
                self.send(device, &ServerMessage::Presence { req, users });
                Ok(())
            }
            ClientMessage::SubscribePresence { req, users } => {
                if users.is_empty() {
                    return Err(invalid("name at least one user id"));
                }
                let users = parse_users(&users)?;
                let subs = &self.devices[&device].subscriptions;
                let total = subs.len()
                    + users
                        .iter()
                        .filter(|u| !subs.contains(*u))
                        .collect::<HashSet<_>>()
                        .len();
                if total > MAX_PRESENCE_SUBSCRIPTIONS {
                    return Err(invalid(format!(
                        "a device may follow at most {MAX_PRESENCE_SUBSCRIPTIONS} users; this would make {total}"
                    )));
                }
                for u in &users {
                    self.subscribers
                        .entry(u.clone())
                        .or_default()
                        .insert(device);
                }
                if let Some(d) = self.devices.get_mut(&device) {
                    d.subscriptions.extend(users.iter().cloned());
                }
                let snapshot = self.presence_of(&users);
                self.send(
                    device,
                    &ServerMessage::Presence {
                        req,
                        users: snapshot,
                    },
                );
                Ok(())
            }
            ClientMessage::UnsubscribePresence { req, users } => {
                if users.is_empty() {
                    return Err(invalid("name at least one user id"));
                }
                let users = parse_users(&users)?;
                for u in &users {
                    self.unsubscribe(device, u);
                    if let Some(d) = self.devices.get_mut(&device) {
                        d.subscriptions.remove(u);
                    }
                }
                self.send(device, &ServerMessage::Ok { req: Some(req) });
                Ok(())
            }
        }
    }

    fn presence_of(&self, users: &[UserId]) -> Vec<PresenceEntry> {
        users
            .iter()
            .map(|u| PresenceEntry {
                user: u.to_string(),
                online: self.users.contains_key(u),
            })
            .collect()
    }

    fn unsubscribe(&mut self, device: DeviceId, user: &UserId) {
        if let Some(set) = self.subscribers.get_mut(user) {
            set.remove(&device);
            if set.is_empty() {
                self.subscribers.remove(user);
            }
        }
    }

    fn notify_presence(&mut self, user: &UserId, online: bool) {
        let Some(subs) = self.subscribers.get(user) else {
            return;
        };
        let subs: Vec<DeviceId> = subs.iter().copied().collect();
        let msg = ServerMessage::PresenceChanged {
            user: user.to_string(),
            online,
        };
        for d in subs {
            self.send(d, &msg);
        }
    }

    /// Feeds an input from a request to a record; unknown ids are `not_found`.
    fn drive_request(
        &mut self,
        id: &InvitationId,
        input: Input,
        now: Instant,
    ) -> Result<(), (ErrorCode, String)> {
        let reply_to = match &input {
            Input::Accept { from, req, .. }
            | Input::Refuse { from, req, .. }
            | Input::Cancel { from, req }
            | Input::Hangup { from, req } => Some((from.device, *req)),
            _ => None,
        };
        if let (Input::Accept { from, .. }, Some(c)) = (&input, &self.cluster) {
            if owner_of(id).is_some_and(|n| n != c.node) {
                // If that node dies, this device may already be in the call.
                self.foreign
                    .entry(id.clone())
                    .or_default()
                    .in_call
                    .insert(from.device);
            }
        }
        if self.forward(id, &input, reply_to) {
            return Ok(());
        }
        if !self.records.contains_key(id) {
            return Err((ErrorCode::NotFound, format!("no invitation {id} for you")));
        }
        self.drive(id, input, now);
        Ok(())
    }

    /// Sends an input to the node that owns the invitation, if that is
    /// another node. Returns whether it did.
    fn forward(
        &mut self,
        id: &InvitationId,
        input: &Input,
        reply_to: Option<(DeviceId, u64)>,
    ) -> bool {
        let Some(c) = &self.cluster else {
            return false;
        };
        match owner_of(id) {
            Some(owner) if owner != c.node && !self.nodes.contains_key(&owner) => {
                // Its node is gone, and the invitation with it (its devices
                // here were told `server_shutdown`).
                if let Some((device, req)) = reply_to {
                    let msg = ServerMessage::error(
                        Some(req),
                        ErrorCode::AlreadyEnded,
                        format!("invitation {id} ended: the server node that kept it is gone"),
                    );
                    self.send(device, &msg);
                }
                true
            }
            Some(owner) if owner != c.node => {
                if let Some(r) = reply_to {
                    self.forwarded.entry(owner).or_default().insert(r);
                }
                let Some(c) = &self.cluster else {
                    return false;
                };
                c.publish(
                    Target::Node(owner),
                    &Envelope::Drive {
                        id: id.clone(),
                        input: input.clone(),
                        reply_to,
                    },
                );
                true
            }
            _ => false,
        }
    }

    fn drive(&mut self, id: &InvitationId, input: Input, now: Instant) {
        let Some(record) = self.records.get_mut(id) else {
            return;
        };
        let before = record.phase_name();
        let effects = record.handle(input, now);
        self.apply(id, before, effects, now);
    }

    /// Sends a record's effects in order, then updates the indexes and timers.
    fn apply(
        &mut self,
        id: &InvitationId,
        before: &'static str,
        effects: Vec<callinvite_protocol::invitation::Effect>,
        now: Instant,
    ) {
        // Index the invitation under the devices taking part in it (not, say, a
        // stranger who was told `not_found`), so their departure reaches it.
        for e in &effects {
            let party = self
                .records
                .get(id)
                .is_some_and(|r| r.devices().any(|d| d == e.to));
            if party {
                self.involved.entry(e.to).or_default().insert(id.clone());
            }
            self.send(e.to, &e.msg);
        }
        let Some(record) = self.records.get(id) else {
            return;
        };
        let after = record.phase_name();
        self.count(record, before, after, &effects, now);
        if before != after && !self.users.contains_key(record.callee()) {
            use callinvite_protocol::invitation::Outcome;
            use callinvite_protocol::wire::{MissedCall, MissedReason};
            let reason = match record.outcome() {
                Some(Outcome::Canceled) => Some(MissedReason::Canceled),
                Some(Outcome::Failed(r)) => match r {
                    callinvite_protocol::FailureReason::PeerOffline => {
                        Some(MissedReason::PeerOffline)
                    }
                    callinvite_protocol::FailureReason::NoResponse => {
                        Some(MissedReason::NoResponse)
                    }
                    callinvite_protocol::FailureReason::Expired => Some(MissedReason::Expired),
                    callinvite_protocol::FailureReason::ServerShutdown => {
                        Some(MissedReason::ServerShutdown)
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(reason) = reason {
                let age = now
                    .saturating_duration_since(record.created_at())
                    .as_millis() as u64;
                let call = MissedCall {
                    invitation_id: id.clone(),
                    caller: record.caller().user.to_string(),
                    content: record.content().to_owned(),
                    at_ms: crate::missed::now_ms().saturating_sub(age),
                    reason,
                };
                let callee = record.callee().clone();
                if let Some(c) = &self.cluster {
                    c.publish(
                        Target::All,
                        &Envelope::Missed {
                            from: c.node,
                            user: callee.clone(),
                            call: call.clone(),
                        },
                    );
                }
                self.missed.record(&callee, call);
                if let Some(c) = &self.cluster {
                    c.store_missed(
                        &callee,
                        &self.missed.of(&callee),
                        self.config.missed.max_age,
                    );
                }
            }
        }
        let Some(record) = self.records.get(id) else {
            return;
        };
        if before != after {
            match record.outcome() {
                Some(outcome) if before != "new" => {
                    info!(invitation = %id, caller = %record.caller().user, callee = %record.callee(), from = before, ?outcome, "invitation ended")
                }
                _ => info!(invitation = %id, from = before, to = after, "invitation state"),
            }
        }
        if !record.is_ringing() {
            for (index, user) in [
                (&mut self.ringing_for, record.callee()),
                (&mut self.ringing_from, &record.caller().user),
            ] {
                if let Some(set) = index.get_mut(user) {
                    set.remove(id);
                    if set.is_empty() {
                        index.remove(user);
                    }
                }
            }
        }
        let deadline = record.deadline();
        let finished = record.is_finished(now);
        if let Some(old) = self.scheduled.remove(id) {
            self.timers.remove(&(old, id.clone()));
        }
        if finished {
            if let Some(record) = self.records.remove(id) {
                for d in record.devices() {
                    if let Some(set) = self.involved.get_mut(&d) {
                        set.remove(id);
                        if set.is_empty() {
                            self.involved.remove(&d);
                        }
                    }
                }
                debug!(invitation = %id, "record forgotten");
            }
        } else if let Some(t) = deadline {
            self.scheduled.insert(id.clone(), t);
            self.timers.insert((t, id.clone()));
        }
    }

    /// Ends every invitation and call with `server_shutdown`, then tells every
    /// device the server is going away and closes it (1001), in that order on
    /// each connection.
    fn shutdown(&mut self, now: Instant) {
        let ids: Vec<InvitationId> = self.records.keys().cloned().collect();
        info!(
            invitations = ids.len(),
            devices = self.devices.len(),
            "shutting down: ending invitations and closing connections"
        );
        for id in ids {
            self.drive(&id, Input::Shutdown, now);
        }
        if let Some(c) = &self.cluster {
            c.publish(Target::All, &Envelope::Bye { from: c.node });
        }
        let bye = ServerMessage::GoingAway {
            reason: "the server is shutting down".into(),
        };
        let devices: Vec<DeviceId> = self.devices.keys().copied().collect();
        for device in devices {
            self.send(device, &bye);
            if let Some(l) = self.devices.get(&device).and_then(|d| d.link.as_ref()) {
                self.put(
                    l,
                    Outbound::Close(CLOSE_GOING_AWAY, close_reason(CLOSE_GOING_AWAY)),
                );
            }
        }
    }

    /// Metrics for one step of a record: outcomes and latencies.
    fn count(
        &self,
        record: &Record,
        before: &str,
        after: &str,
        effects: &[callinvite_protocol::invitation::Effect],
        now: Instant,
    ) {
        use callinvite_protocol::invitation::Outcome;
        let m = &self.config.metrics;
        let since = now.saturating_duration_since(record.created_at());
        if effects
            .iter()
            .any(|e| matches!(e.msg, ServerMessage::ReceivedByPeer { .. }))
        {
            crate::metrics::Metrics::observe(&m.delivery_seconds, since);
        }
        if before == after || before == "in_call" {
            return;
        }
        if after == "in_call" {
            m.invitation("accepted");
            crate::metrics::Metrics::observe(&m.answer_seconds, since);
            return;
        }
        match record.outcome() {
            Some(Outcome::Refused { busy, .. }) => {
                m.invitation(if busy { "busy" } else { "refused" });
                crate::metrics::Metrics::observe(&m.answer_seconds, since);
            }
            Some(Outcome::Canceled) => m.invitation("canceled"),
            Some(Outcome::Failed(reason)) => m.invitation(reason.as_str()),
            Some(Outcome::CallEnded { .. }) | None => {}
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(t, device)) = self.detached.first() {
            if t > now {
                break;
            }
            self.detached.pop_first();
            info!(%device, "no resume within the grace window: the device is gone");
            self.gone(device, GoneCause::ConnectionLost, now);
        }
        while let Some((t, id)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.scheduled.remove(&id);
            self.drive(&id, Input::Tick, now);
        }
    }

    fn gone(&mut self, device: DeviceId, cause: GoneCause, now: Instant) {
        let Some(d) = self.devices.remove(&device) else {
            return;
        };
        self.sessions.remove(&d.session);
        if let Some(until) = d.detached_until {
            self.detached.remove(&(until, device));
        }
        info!(user = %d.user, %device, ?cause, "device gone");
        self.config.metrics.devices.dec();
        for u in &d.subscriptions {
            self.unsubscribe(device, u);
        }
        let went_offline = match self.users.get_mut(&d.user) {
            Some(list) => {
                list.retain(|x| *x != device);
                list.is_empty()
            }
            None => false,
        };
        if went_offline {
            self.users.remove(&d.user);
        }
        if let Some(c) = &self.cluster {
            c.publish(
                Target::All,
                &Envelope::DeviceOffline {
                    from: c.node,
                    user: d.user.clone(),
                    device,
                    cause,
                },
            );
        }
        self.device_left(device, cause, now);
        // Invitations of other nodes it took part in: their nodes hear of it
        // from the DeviceOffline above.
        self.foreign.retain(|_, f| {
            f.devices.remove(&device);
            f.in_call.remove(&device);
            !f.devices.is_empty()
        });
        if went_offline {
            self.notify_presence(&d.user, false);
        }
    }

    /// A device (here or elsewhere) is gone: the invitations owned here that
    /// it took part in hear of it.
    fn device_left(&mut self, device: DeviceId, cause: GoneCause, now: Instant) {
        if let Some(ids) = self.involved.remove(&device) {
            for id in ids {
                self.drive(&id, Input::DeviceGone { device, cause }, now);
            }
        }
    }

    // ---- the cluster ----

    fn on_cluster(&mut self, envelope: Envelope, now: Instant) {
        let me = self.cluster.as_ref().map_or(0, |c| c.node);
        match envelope {
            Envelope::Hello { from } if from != me => {
                info!(node = from, "a node joined the cluster");
                self.heard(from, now);
                // Tell it who is online here.
                let mine: Vec<(UserId, DeviceId)> = self
                    .devices
                    .iter()
                    .map(|(id, d)| (d.user.clone(), *id))
                    .collect();
                if let Some(c) = &self.cluster {
                    for (user, device) in mine {
                        c.publish(
                            Target::Node(from),
                            &Envelope::DeviceOnline {
                                from: me,
                                user,
                                device,
                            },
                        );
                    }
                }
            }
            Envelope::Heartbeat { from } if from != me => self.heard(from, now),
            Envelope::Bye { from } if from != me => {
                info!(node = from, "a node left the cluster");
                self.node_gone(from, now);
            }
            Envelope::DeviceOnline { from, user, device } if from != me => {
                self.heard(from, now);
                if let Some(n) = self.nodes.get_mut(&from) {
                    n.devices.insert(device, user.clone());
                }
                let devices = self.users.entry(user.clone()).or_default();
                if devices.contains(&device) {
                    return;
                }
                let came_online = devices.is_empty();
                devices.push(device);
                if came_online {
                    self.notify_presence(&user, true);
                }
                // Invitations owned here that are ringing for this user ring there too.
                let pending: Vec<InvitationId> = self
                    .ringing_for
                    .get(&user)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                for id in pending {
                    self.drive(&id, Input::CalleeDeviceOnline(device), now);
                }
            }
            Envelope::DeviceOffline {
                from,
                user,
                device,
                cause,
            } if from != me => {
                if let Some(n) = self.nodes.get_mut(&from) {
                    n.devices.remove(&device);
                }
                self.remote_device_gone(&user, device, cause, now);
            }
            Envelope::Deliver { device, msg } => {
                if let ServerMessage::Ok { req: Some(r) }
                | ServerMessage::Error { req: Some(r), .. } = &msg
                {
                    for set in self.forwarded.values_mut() {
                        set.remove(&(device, *r));
                    }
                }
                self.track_foreign(device, &msg);
                self.send(device, &msg);
            }
            Envelope::Drive {
                id,
                input,
                reply_to,
            } => {
                if self.records.contains_key(&id) {
                    self.drive(&id, input, now);
                } else if let Some((device, req)) = reply_to {
                    let msg = ServerMessage::error(
                        Some(req),
                        ErrorCode::NotFound,
                        format!("no invitation {id} for you"),
                    );
                    self.send(device, &msg);
                }
            }
            Envelope::ResumeVia {
                node,
                conn,
                session,
                last_seq,
                req,
            } => {
                let link = Link {
                    node,
                    conn,
                    via: Via::Remote,
                };
                let answer = self.resume(&session, last_seq, req, link, now);
                if let Some(c) = &self.cluster {
                    c.publish(Target::Node(node), &Envelope::ResumeAnswer { conn, answer });
                }
            }
            Envelope::ResumeAnswer { conn, answer } => {
                if answer.is_none() {
                    self.remote_conns.remove(&conn);
                }
                if let Some(reply) = self.pending_resumes.remove(&conn) {
                    let _ = reply.send(answer);
                }
            }
            Envelope::ToConn { conn, frame } => {
                if let Some((out, kill, _)) = self.remote_conns.get(&conn) {
                    let frame = match frame {
                        crate::cluster::Frame::Text(t) => Outbound::Text(t.into()),
                        crate::cluster::Frame::Close(code) => {
                            Outbound::Close(code, close_reason(code))
                        }
                    };
                    match out.try_send(frame) {
                        Err(mpsc::error::TrySendError::Full(_)) => kill.cancel(),
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.remote_conns.remove(&conn);
                        }
                        Ok(()) => {}
                    }
                }
            }
            Envelope::FromConn {
                node,
                conn,
                device,
                msg,
            } => {
                if self.devices.contains_key(&device) {
                    self.request_from(node, conn, device, msg, now);
                }
            }
            Envelope::ConnGone {
                node,
                conn,
                device,
                how,
            } => self.conn_gone(node, conn, device, how, now),
            Envelope::Missed { from, user, call } if from != me => {
                self.missed.remember(&user, call)
            }
            Envelope::MissedCleared { from, user, ids } if from != me => {
                self.missed.clear(&user, &ids)
            }
            // Our own broadcasts, back from Redis.
            Envelope::Hello { .. }
            | Envelope::Heartbeat { .. }
            | Envelope::Bye { .. }
            | Envelope::DeviceOnline { .. }
            | Envelope::DeviceOffline { .. }
            | Envelope::Missed { .. }
            | Envelope::MissedCleared { .. } => {}
        }
    }

    /// After a Redis outage: the other nodes may have given this one up, and
    /// this one them. Say hello (they answer with their devices) and tell
    /// everyone this node's devices again.
    fn rejoin(&self) {
        let Some(c) = &self.cluster else {
            return;
        };
        c.publish(Target::All, &Envelope::Hello { from: c.node });
        for (device, d) in &self.devices {
            c.publish(
                Target::All,
                &Envelope::DeviceOnline {
                    from: c.node,
                    user: d.user.clone(),
                    device: *device,
                },
            );
        }
    }

    fn heard(&mut self, node: u32, now: Instant) {
        self.nodes
            .entry(node)
            .or_insert_with(|| RemoteNode {
                last_heard: now,
                devices: HashMap::new(),
            })
            .last_heard = now;
    }

    /// A device on another node is gone.
    fn remote_device_gone(
        &mut self,
        user: &UserId,
        device: DeviceId,
        cause: GoneCause,
        now: Instant,
    ) {
        let went_offline = match self.users.get_mut(user) {
            Some(list) => {
                let before = list.len();
                list.retain(|x| *x != device);
                before != list.len() && list.is_empty()
            }
            None => false,
        };
        if went_offline {
            self.users.remove(user);
        }
        self.device_left(device, cause, now);
        if went_offline {
            self.notify_presence(user, false);
        }
    }

    /// Notes which invitations of other nodes a device here takes part in.
    fn track_foreign(&mut self, device: DeviceId, msg: &ServerMessage) {
        let me = self.cluster.as_ref().map_or(0, |c| c.node);
        let (id, ends, call) = match msg {
            ServerMessage::Invitation { invitation_id, .. }
            | ServerMessage::InviteOk { invitation_id, .. }
            | ServerMessage::ReceivedByPeer { invitation_id } => (invitation_id, false, false),
            ServerMessage::Accepted { invitation_id, .. } => (invitation_id, false, true),
            ServerMessage::Refused { invitation_id, .. }
            | ServerMessage::Canceled { invitation_id }
            | ServerMessage::Failed { invitation_id, .. }
            | ServerMessage::CallEnded { invitation_id, .. } => (invitation_id, true, false),
            _ => return,
        };
        if owner_of(id).is_none_or(|n| n == me) {
            return;
        }
        if ends {
            if let Some(f) = self.foreign.get_mut(id) {
                f.devices.remove(&device);
                f.in_call.remove(&device);
                if f.devices.is_empty() {
                    self.foreign.remove(id);
                }
            }
            return;
        }
        let f = self.foreign.entry(id.clone()).or_default();
        f.devices.insert(device);
        if call {
            f.in_call.insert(device);
        }
    }

    /// Every heartbeat: say we are alive, and find nodes that are not.
    fn cluster_tick(&mut self, now: Instant) {
        let Some(c) = &self.cluster else {
            return;
        };
        c.publish(Target::All, &Envelope::Heartbeat { from: c.node });
        let timeout = c.config.node_timeout;
        let dead: Vec<u32> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_heard) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for node in dead {
            warn!(node, ?timeout, "node not heard from: treating it as dead");
            self.node_gone(node, now);
        }
    }

    /// Another node is gone (dead or shut down): its devices leave, and the
    /// invitations it owned end for the devices here that took part.
    fn node_gone(&mut self, node: u32, now: Instant) {
        let Some(n) = self.nodes.remove(&node) else {
            return;
        };
        // Sessions here whose connection was on that node: detached, as if dropped.
        let via_dead: Vec<DeviceId> = self
            .devices
            .iter()
            .filter(|(_, d)| d.link.as_ref().is_some_and(|l| l.node == node))
            .map(|(id, _)| *id)
            .collect();
        for device in via_dead {
            if self.config.resume_grace.is_zero() {
                self.gone(device, GoneCause::ConnectionLost, now);
            } else {
                self.detach(device, now);
            }
        }
        // Connections here whose session was on that node: the session is
        // gone; close them so their clients log in again.
        let homed: Vec<u64> = self
            .remote_conns
            .iter()
            .filter(|(_, (_, _, home))| *home == node)
            .map(|(c, _)| *c)
            .collect();
        for conn in homed {
            if let Some((out, _, _)) = self.remote_conns.remove(&conn) {
                let _ = out.try_send(Outbound::Close(
                    CLOSE_GOING_AWAY,
                    close_reason(CLOSE_GOING_AWAY),
                ));
            }
            if let Some(reply) = self.pending_resumes.remove(&conn) {
                let _ = reply.send(None);
            }
        }
        for (device, user) in n.devices {
            self.remote_device_gone(&user, device, GoneCause::ConnectionLost, now);
        }
        // Requests it never answered.
        for (device, req) in self.forwarded.remove(&node).unwrap_or_default() {
            let msg = ServerMessage::error(
                Some(req),
                ErrorCode::AlreadyEnded,
                "the invitation ended: the server node that kept it is gone",
            );
            self.send(device, &msg);
        }
        let owned: Vec<InvitationId> = self
            .foreign
            .keys()
            .filter(|id| owner_of(id) == Some(node))
            .cloned()
            .collect();
        for id in owned {
            let Some(f) = self.foreign.remove(&id) else {
                continue;
            };
            info!(invitation = %id, node, "the node that owned this invitation is gone: ending it here");
            for device in f.devices {
                // A device that may be in the call gets both; its state machine
                // applies whichever fits (a ringing one takes `failed`).
                self.send(
                    device,
                    &ServerMessage::Failed {
                        invitation_id: id.clone(),
                        reason: callinvite_protocol::FailureReason::ServerShutdown,
                    },
                );
                if f.in_call.contains(&device) {
                    self.send(
                        device,
                        &ServerMessage::CallEnded {
                            invitation_id: id.clone(),
                            reason: callinvite_protocol::CallEndReason::ServerShutdown,
                            by: None,
                        },
                    );
                }
            }
        }
    }
}

fn check_response(response: &str) -> Result<(), (ErrorCode, String)> {
    if response.len() > MAX_RESPONSE_BYTES {
        return Err(invalid(format!(
            "response is {} bytes; the limit is {MAX_RESPONSE_BYTES}",
            response.len()
        )));
    }
    Ok(())
}
