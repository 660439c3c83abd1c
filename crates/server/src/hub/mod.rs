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

mod ended;
mod nodes;
mod sessions;

use nodes::{Foreign, RemoteNode};

use crate::cluster::{owner_of, Bus, Envelope, Target};
use crate::config::Config;
use crate::missed::MissedCalls;

/// A user's online devices: almost always one, kept inline (every node has
/// an entry for every online user of the cluster).
type DeviceList = smallvec::SmallVec<[DeviceId; 1]>;

/// What the hub asks a connection's writer to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// The sending side of a connection's outbound queue (bounded: a full queue
/// means a client too slow to keep up). See [`crate::outq`] for why it is
/// not tokio's channel.
#[derive(Clone, Debug)]
pub(crate) struct OutTx(crate::outq::Sender<Outbound>);

/// The writer's side of the queue.
pub(crate) struct OutRx(crate::outq::Receiver<Outbound>);

/// A connection's outbound queue holding at most `capacity` messages.
pub(crate) fn out_queue(capacity: usize) -> (OutTx, OutRx) {
    let (tx, rx) = crate::outq::queue(capacity);
    (OutTx(tx), OutRx(rx))
}

impl OutTx {
    pub(crate) fn try_send(
        &self,
        frame: Outbound,
    ) -> Result<(), mpsc::error::TrySendError<Outbound>> {
        self.0.try_send(frame)
    }

    /// Waits for room (the connection's own replies, which may wait).
    pub(crate) fn send(&self, frame: Outbound) -> Sending<'_> {
        match self.0.try_send(frame) {
            Ok(()) => Sending::Done(true),
            Err(mpsc::error::TrySendError::Closed(_)) => Sending::Done(false),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                Sending::Waiting(Box::pin(self.0.send(frame)))
            }
        }
    }
}

impl OutRx {
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        self.0.recv().await
    }

    pub(crate) fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        self.0.try_recv()
    }
}

/// A send on a bounded channel that takes no room in the future awaiting it
/// unless it must wait: done at once when the channel has room (almost
/// always), else a boxed wait. A connection's task holds whatever its
/// awaits may hold for as long as it lives, so its sends are kept small.
pub(crate) enum Sending<'a> {
    /// Sent (true), or the receiver is gone (false).
    Done(bool),
    Waiting(std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>),
}

impl std::future::Future for Sending<'_> {
    type Output = bool;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        match self.get_mut() {
            Sending::Done(sent) => std::task::Poll::Ready(*sent),
            Sending::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}

/// Sends `value` on `tx`: see [`Sending`].
pub(crate) fn sending<T: Send + 'static>(tx: &mpsc::Sender<T>, value: T) -> Sending<'_> {
    use mpsc::error::TrySendError;
    match tx.try_send(value) {
        Ok(()) => Sending::Done(true),
        Err(TrySendError::Closed(_)) => Sending::Done(false),
        Err(TrySendError::Full(value)) => {
            Sending::Waiting(Box::pin(async move { tx.send(value).await.is_ok() }))
        }
    }
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
        out: OutTx,
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
    /// A connection with a valid user id (and, with a secret, a valid token
    /// for it) wants to log in. The hub sends `login_ok` or the error itself,
    /// and answers `reply` with the device id.
    Login {
        user: UserId,
        req: Option<u64>,
        conn: u64,
        out: OutTx,
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
        out: OutTx,
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
    /// What a claim of the session `session` of node `node` (thought dead)
    /// for connection `conn` found.
    SessionClaimed {
        conn: u64,
        node: u32,
        session: String,
        claim: crate::cluster::Claim,
    },
    /// Connection `conn` waited too long for its `resume` of a session on
    /// another node: answer it now (`session_expired`) if it is not settled.
    ResumeAbandoned { conn: u64 },
}

/// A `resume` on a connection here for a session of another node, until
/// that node answers or, if it is dead, the session is taken over here.
struct ResumeAsk {
    home: u32,
    session: String,
    req: Option<u64>,
    /// The `last_seq` it named, for asking the session's node.
    last_seq: u64,
    /// A claim is on its way to Redis.
    claimed: bool,
    /// The session's node was asked (once only: a second resume of the
    /// same connection there would close the first).
    asked: bool,
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
    subscriptions: Follows,
}

/// The users a device follows: most follow none, and an empty set is still
/// 48 bytes in every device, so the set is boxed and made on first use.
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes inline, not 48
struct Follows(Option<Box<HashSet<UserId>>>);

impl Follows {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
    fn contains(&self, user: &UserId) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(user))
    }
    fn iter(&self) -> impl Iterator<Item = &UserId> {
        self.0.iter().flat_map(|s| s.iter())
    }
    fn extend(&mut self, users: impl IntoIterator<Item = UserId>) {
        self.0.get_or_insert_default().extend(users);
    }
    fn remove(&mut self, user: &UserId) {
        if let Some(s) = &mut self.0 {
            s.remove(user);
            if s.is_empty() {
                self.0 = None;
            }
        }
    }
}

pub(crate) struct Hub {
    config: Config,
    next_device: u64,
    devices: HashMap<DeviceId, Device>,
    /// Online devices of each user; a user is online while this is non-empty.
    users: HashMap<UserId, DeviceList>,
    /// Invitations that have not ended.
    records: HashMap<InvitationId, Record>,
    /// Invitations that ended within the retention window: what answers late requests.
    ended: ended::Ended,
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
    /// Past this many entries, `login_rate` drops the windows that are over
    /// (then this becomes twice what is left: amortized O(1) per login, and
    /// at most about twice the users who logged in within the last second,
    /// not an entry per user who ever logged in).
    login_rate_prune_at: usize,
    /// Device of each session secret.
    sessions: HashMap<String, DeviceId>,
    /// Detached devices by the time their grace window ends.
    detached: BTreeSet<(Instant, DeviceId)>,
    /// Calls users missed while offline.
    missed: MissedCalls,
    /// The other nodes: [`crate::cluster::SingleNode`] (none) or a cluster on Redis.
    bus: Box<dyn Bus>,
    /// The other nodes, by number.
    nodes: HashMap<u32, RemoteNode>,
    /// Devices (here or on other nodes) taking part in invitations owned
    /// here, so that their departure reaches those invitations.
    involved: HashMap<DeviceId, HashSet<InvitationId>>,
    /// Invitations owned by other nodes that devices here take part in.
    foreign: HashMap<InvitationId, Foreign>,
    /// Connections here whose session lives on another node (resumed here),
    /// with that node.
    remote_conns: HashMap<u64, (OutTx, CancellationToken, u32)>,
    /// Resumes sent to another node, waiting for its answer.
    pending_resumes: HashMap<u64, oneshot::Sender<Option<(DeviceId, UserId)>>>,
    /// Requests of devices here handed to the node that owns the invitation
    /// and not answered yet, by that node: answered here if it dies.
    forwarded: HashMap<u32, HashSet<(DeviceId, u64)>>,
    /// Resumes of sessions of other nodes not settled yet, by connection.
    resume_asks: HashMap<u64, ResumeAsk>,
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
        .bus
        .liveness()
        .map_or(Duration::from_secs(3600), |(every, _)| every);
    let mut heartbeat = tokio::time::interval(beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if hub.bus.clustered() {
        hub.bus.publish(
            Target::All,
            &Envelope::Hello {
                from: hub.bus.node(),
            },
        );
    }
    loop {
        let next = [
            hub.timers.first().map(|(t, _)| *t),
            hub.detached.first().map(|(t, _)| *t),
            hub.ended.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min();
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
            _ = heartbeat.tick(), if hub.bus.clustered() => hub.cluster_tick(now()),
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
    pub(crate) fn new(config: Config, missed: MissedCalls, bus: Box<dyn Bus>) -> Self {
        let ended = ended::Ended::new(config.timeouts.retention, now());
        Hub {
            config,
            next_device: if bus.clustered() {
                crate::cluster::first_device(bus.node())
            } else {
                1
            },
            devices: HashMap::new(),
            users: HashMap::new(),
            records: HashMap::new(),
            ended,
            ringing_for: HashMap::new(),
            ringing_from: HashMap::new(),
            timers: BTreeSet::new(),
            scheduled: HashMap::new(),
            subscribers: HashMap::new(),
            login_rate: HashMap::new(),
            login_rate_prune_at: 1024,
            sessions: HashMap::new(),
            detached: BTreeSet::new(),
            missed,
            bus,
            nodes: HashMap::new(),
            involved: HashMap::new(),
            foreign: HashMap::new(),
            remote_conns: HashMap::new(),
            pending_resumes: HashMap::new(),
            forwarded: HashMap::new(),
            resume_asks: HashMap::new(),
        }
    }

    fn handle(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Login {
                user,
                req,
                conn,
                out,
                kill,
                reply,
            } => {
                let device = self.login(user, req, conn, out, kill, now);
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
            Command::SessionClaimed {
                conn,
                node,
                session,
                claim,
            } => self.session_claimed(conn, node, session, claim, now),
            Command::ResumeAbandoned { conn } => self.resume_abandoned(conn),
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

    /// This node's number (0 without a cluster).
    fn me(&self) -> u32 {
        self.bus.node()
    }

    /// Sends one message of the device's session: numbered, kept until seen
    /// (when sessions can resume), and written if a connection is attached.
    fn send(&mut self, device: DeviceId, msg: &ServerMessage) {
        let keep = !self.config.resume_grace.is_zero();
        let limit = self.config.resume_buffer;
        let Some(d) = self.devices.get_mut(&device) else {
            // A device on another node: its node delivers it.
            let node = crate::cluster::node_of(device);
            if node != self.bus.node() {
                self.bus.publish(
                    Target::Node(node),
                    &Envelope::Deliver {
                        device,
                        msg: msg.clone(),
                    },
                );
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
        let Some(link) = &d.link else {
            return;
        };
        if !link.put(&*self.bus, Outbound::Text(text)) {
            warn!(%device, user = %d.user, "outbound queue full: closing the connection as too slow");
            link.kill(&*self.bus);
        }
    }

    /// A login whose credentials were checked by its connection. Only logins
    /// that succeed count toward the user id's rate, so a stranger naming the
    /// user with bad tokens cannot lock them out.
    fn login(
        &mut self,
        user: UserId,
        req: Option<u64>,
        conn: u64,
        out: OutTx,
        kill: CancellationToken,
        now: Instant,
    ) -> Option<DeviceId> {
        let out = &out;
        if let Some((start, n)) = self.login_rate.get(&user) {
            if now.duration_since(*start) < Duration::from_secs(1)
                && *n >= self.config.logins_per_second
            {
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
        }
        if self.login_rate.len() > self.login_rate_prune_at {
            self.login_rate
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
            self.login_rate.shrink_to_fit();
            self.login_rate_prune_at = (2 * self.login_rate.len()).max(1024);
        }

        let mut online = self.users.get(&user).map_or(0, |l| l.len());
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
        let window = self.login_rate.entry(user.clone()).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        Some(self.admit(user, req, conn, out.clone(), kill, None, now))
    }

    /// Makes a new device of `user` on connection `conn`: a fresh login, or
    /// (`moved` has the subscriptions) a session taken over from a dead node.
    /// Sends `login_ok` or `session_moved`, then what the device must hear.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        &mut self,
        user: UserId,
        req: Option<u64>,
        conn: u64,
        out: OutTx,
        kill: CancellationToken,
        moved: Option<Vec<UserId>>,
        now: Instant,
    ) -> DeviceId {
        let device = DeviceId(self.next_device);
        self.next_device += 1;
        // In a cluster the secret names its node, so a resume on another node finds it.
        let session = if self.bus.clustered() {
            format!("n{}.{}", self.bus.node(), uuid::Uuid::new_v4().simple())
        } else {
            uuid::Uuid::new_v4().simple().to_string()
        };
        // login_ok is about this connection, so it is sent before the session's numbered messages.
        let t = &self.config.timeouts;
        let timers = TimersMs {
            offline_ms: t.offline.as_millis() as u64,
            no_response_ms: t.no_response.as_millis() as u64,
            ring_ms: t.ring.as_millis() as u64,
            heartbeat_ms: self.config.heartbeat.as_millis() as u64,
            resume_ms: self.config.resume_grace.as_millis() as u64,
        };
        let ok = match &moved {
            None => ServerMessage::LoginOk {
                req,
                user: user.to_string(),
                device_id: device,
                auth: if self.config.secret.is_some() {
                    AuthMode::Token
                } else {
                    AuthMode::Open
                },
                timers,
                session: session.clone(),
                ice_servers: self
                    .config
                    .ice
                    .servers_for(user.as_str(), std::time::SystemTime::now()),
            },
            Some(_) => ServerMessage::SessionMoved {
                req,
                user: user.to_string(),
                device_id: device,
                timers,
                session: session.clone(),
                ice_servers: self
                    .config
                    .ice
                    .servers_for(user.as_str(), std::time::SystemTime::now()),
            },
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
                subscriptions: Follows::default(),
            },
        );
        let devices = self.users.entry(user.clone()).or_default();
        let came_online = devices.is_empty();
        devices.push(device);
        if moved.is_some() {
            info!(%user, %device, "session taken over from a node that is gone");
            self.config.metrics.login("session_moved");
        } else {
            info!(%user, %device, devices = self.users.get(&user).map_or(0, |l| l.len()), "logged in");
            self.config.metrics.login("ok");
        }
        self.config.metrics.devices.inc();
        if came_online {
            self.notify_presence(&user, true);
        }
        self.bus.publish(
            Target::All,
            &Envelope::DeviceOnline {
                from: self.bus.node(),
                user: user.clone(),
                device,
            },
        );
        let missed = self.missed.of(&user);
        if !missed.is_empty() {
            self.send(device, &ServerMessage::MissedCalls { calls: missed });
        }
        self.ring_new_device(&user, device, now);
        let follows = moved.unwrap_or_default();
        if !follows.is_empty() {
            // The subscriptions go on; what changed meanwhile may have been
            // lost with the old node, so each user's presence comes afresh.
            self.follow(device, &follows);
            for p in self.presence_of(&follows) {
                self.send(
                    device,
                    &ServerMessage::PresenceChanged {
                        user: p.user,
                        online: p.online,
                    },
                );
            }
        }
        self.keep_session_record(device);
        device
    }

    /// `device` follows the presence of `users` from now on.
    fn follow(&mut self, device: DeviceId, users: &[UserId]) {
        for u in users {
            self.subscribers
                .entry(u.clone())
                .or_default()
                .insert(device);
        }
        if let Some(d) = self.devices.get_mut(&device) {
            d.subscriptions.extend(users.iter().cloned());
        }
    }

    /// Keeps the device's session record in Redis up to date (a cluster only),
    /// so another node can take the session over if this one dies.
    fn keep_session_record(&self, device: DeviceId) {
        if !self.bus.clustered() {
            return;
        }
        if let Some(d) = self.devices.get(&device) {
            let record = crate::cluster::SessionRecord {
                user: d.user.clone(),
                subscriptions: d.subscriptions.iter().cloned().collect(),
            };
            self.bus
                .keep_session(self.me(), &d.session, Some(&record), None);
        }
    }

    /// Every invitation owned here that is still ringing for `user` rings on
    /// its new `device` too (a device here, or on another node).
    fn ring_new_device(&mut self, user: &UserId, device: DeviceId, now: Instant) {
        let pending: Vec<InvitationId> = self
            .ringing_for
            .get(user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for id in pending {
            self.drive(&id, Input::CalleeDeviceOnline(device), now);
        }
    }

    /// Takes `device` off its user's online list; true if the user went offline.
    fn take_offline(&mut self, user: &UserId, device: DeviceId) -> bool {
        let Some(list) = self.users.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|x| *x != device);
        let went_offline = before != list.len() && list.is_empty();
        if list.is_empty() {
            self.users.remove(user);
        }
        went_offline
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
                self.bus.store_missed(
                    &party.user,
                    &self.missed.of(&party.user),
                    self.config.missed.max_age,
                );
                self.bus.publish(
                    Target::All,
                    &Envelope::MissedCleared {
                        from: self.bus.node(),
                        user: party.user.clone(),
                        ids: invitation_ids,
                    },
                );
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
                    l.put(
                        &*self.bus,
                        Outbound::Close(CLOSE_NORMAL, close_reason(CLOSE_NORMAL)),
                    );
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
                let id = if self.bus.clustered() {
                    // The id names the node that owns it.
                    InvitationId(format!("n{}.{}", self.bus.node(), uuid::Uuid::new_v4()))
                } else {
                    InvitationId(uuid::Uuid::new_v4().to_string())
                };
                // An online callee's id is shared with the hub's copy.
                let (callee, online): (UserId, Vec<DeviceId>) =
                    match self.users.get_key_value(&callee) {
                        Some((user, list)) => (user.clone(), list.to_vec()),
                        None => (callee, Vec::new()),
                    };
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
                self.config
                    .metrics
                    .invitations_open
                    .set(self.records.len() as i64);
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
            ClientMessage::Media {
                req,
                invitation_id,
                signal,
            } => self.drive_request(
                &invitation_id,
                Input::Media {
                    from: party,
                    req,
                    signal,
                },
                now,
            ),
            ClientMessage::GetIceServers { req } => {
                let msg = ServerMessage::IceServers {
                    req,
                    ice_servers: self
                        .config
                        .ice
                        .servers_for(party.user.as_str(), std::time::SystemTime::now()),
                    ttl_ms: self.config.ice.turn_ttl.as_millis() as u64,
                };
                self.send(device, &msg);
                Ok(())
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
                        .filter(|u| !subs.contains(u))
                        .collect::<HashSet<_>>()
                        .len();
                if total > MAX_PRESENCE_SUBSCRIPTIONS {
                    return Err(invalid(format!(
                        "a device may follow at most {MAX_PRESENCE_SUBSCRIPTIONS} users; this would make {total}"
                    )));
                }
                self.follow(device, &users);
                self.keep_session_record(device);
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
                self.keep_session_record(device);
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
            | Input::Hangup { from, req }
            | Input::Media { from, req, .. } => Some((from.device, *req)),
            _ => None,
        };
        if let Input::Accept { from, .. } = &input {
            if self.bus.clustered() && owner_of(id).is_some_and(|n| n != self.bus.node()) {
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
            if self.late(id, input, now) {
                return Ok(());
            }
            return Err((ErrorCode::NotFound, format!("no invitation {id} for you")));
        }
        self.drive(id, input, now);
        Ok(())
    }

    /// Answers an input for an invitation that ended within the retention
    /// window, as its record would have; false if none did.
    pub(super) fn late(&mut self, id: &InvitationId, input: Input, now: Instant) -> bool {
        let Some(tomb) = self.ended.get(id, now) else {
            return false;
        };
        if let Some(e) = tomb.handle(input) {
            self.send(e.to, &e.msg);
        }
        true
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
                self.bus.publish(
                    Target::All,
                    &Envelope::Missed {
                        from: self.bus.node(),
                        user: callee.clone(),
                        call: call.clone(),
                    },
                );
                // The bounds may have dropped other users' calls too (the
                // caller's oldest elsewhere, or the oldest overall): the
                // cluster's copy of each changed user is rewritten.
                for user in self.missed.record(&callee, call) {
                    let calls = self.missed.of(&user);
                    self.bus
                        .store_missed(&user, &calls, self.config.missed.max_age);
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
        let tombstone = record.tombstone();
        if let Some(old) = self.scheduled.remove(id) {
            self.timers.remove(&(old, id.clone()));
        }
        if let Some(tomb) = tombstone {
            // Ended: only late requests are left to answer, and the
            // tombstone answers them as the record would, without its
            // content, responses, devices or timers.
            if let Some(record) = self.records.remove(id) {
                for d in record.devices() {
                    if let Some(set) = self.involved.get_mut(&d) {
                        set.remove(id);
                        if set.is_empty() {
                            self.involved.remove(&d);
                        }
                    }
                }
            }
            self.ended.insert(id, tomb, now);
            self.count_kept();
        } else if let Some(t) = deadline {
            self.scheduled.insert(id.clone(), t);
            self.timers.insert((t, id.clone()));
        }
    }

    /// The gauges of invitations kept: open ones and ended ones.
    fn count_kept(&self) {
        let m = &self.config.metrics;
        m.invitations_open.set(self.records.len() as i64);
        m.ended_invitations.set(self.ended.len() as i64);
        m.ended_invitations_bytes.set(self.ended.bytes() as i64);
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
        // Clients that come back to another node may have their sessions
        // taken over there without waiting for this node's key to expire.
        self.bus.leaving();
        self.bus.publish(
            Target::All,
            &Envelope::Bye {
                from: self.bus.node(),
            },
        );
        let bye = ServerMessage::GoingAway {
            reason: "the server is shutting down".into(),
        };
        let devices: Vec<DeviceId> = self.devices.keys().copied().collect();
        for device in devices {
            self.send(device, &bye);
            if let Some(l) = self.devices.get(&device).and_then(|d| d.link.as_ref()) {
                l.put(
                    &*self.bus,
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
        if self.ended.next_expiry().is_some_and(|t| t <= now) {
            self.ended.expire(now);
            self.count_kept();
        }
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
        self.bus.keep_session(self.me(), &d.session, None, None);
        if let Some(until) = d.detached_until {
            self.detached.remove(&(until, device));
        }
        info!(user = %d.user, %device, ?cause, "device gone");
        self.config.metrics.devices.dec();
        for u in d.subscriptions.iter() {
            self.unsubscribe(device, u);
        }
        let went_offline = self.take_offline(&d.user, device);
        self.bus.publish(
            Target::All,
            &Envelope::DeviceOffline {
                from: self.bus.node(),
                user: d.user.clone(),
                device,
                cause,
            },
        );
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
