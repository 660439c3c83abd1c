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
//!
//! The hub is split by what it owns; each part keeps its state private and
//! is changed only through its methods, and [`Hub`] ties them together:
//!
//! - `link`: how a connection is reached — its outbound queue, the
//!   [`ConnHandle`] a connection gives the hub, a session's `Link` to a
//!   connection here or on another node.
//! - `sessions`: the sessions (devices) of this node with their outboxes
//!   (the protocol crate's sans-I/O `ServerSession`), and sending on them;
//!   `login`: the login rate and making a session; `resume`: resuming one
//!   here, through another node, or by taking over a dead node's.
//! - `presence`: who is online (cluster-wide) and who follows whom.
//! - `invitations`: the records owned here, their timers and indexes, and the
//!   tombstones of ended ones (`ended`); `drive`: stepping a record and what
//!   follows a step; `requests`: a device's requests, one function each.
//! - `nodes`: the other nodes of a cluster and what they say.
//!
//! Nothing in the hub reads a clock or awaits: [`run`] passes `now` to
//! [`Hub::handle`] and [`Hub::fire_timers`], so the unit tests (`tests`)
//! feed commands at chosen instants and read what each connection's queue got
//! — one hub, or several joined by an in-memory [`Bus`] (`tests/cluster.rs`).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use callinvite_protocol::invitation::{GoneCause, Input};
use callinvite_protocol::limits::CLOSE_GOING_AWAY;
use callinvite_protocol::{ClientMessage, DeviceId, ServerMessage, UserId};

mod drive;
mod ended;
mod invitations;
mod link;
mod login;
mod nodes;
mod presence;
mod requests;
mod resume;
mod sessions;
#[cfg(test)]
mod tests;

pub(crate) use link::{close_reason, out_queue, sending, ConnHandle, OutRx, Outbound, Sending};
pub(crate) use resume::{Answer, LoggedIn};

use invitations::Invitations;
use login::LoginRate;
use nodes::ClusterState;
use presence::Presence;
use resume::{RemoteResumes, ResumeStart};
use sessions::Sessions;

use crate::cluster::{Bus, Envelope, Target};
use crate::config::Config;
use crate::missed::MissedCalls;

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

/// What connections (and the cluster's tasks) tell the hub.
pub(crate) enum Command {
    /// A connection with a valid user id (and, with a secret, a valid token
    /// for it) wants to log in. The hub sends `login_ok` or the error itself,
    /// and answers `reply` with the device id.
    Login {
        user: UserId,
        req: Option<u64>,
        conn: ConnHandle,
        reply: Answer<DeviceId>,
    },
    /// A new connection wants to continue a session. The hub sends `resumed`
    /// and the missed messages, or the error, and answers `reply`.
    Resume {
        session: String,
        last_seq: u64,
        req: Option<u64>,
        conn: ConnHandle,
        reply: Answer<LoggedIn>,
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
    // Sent by the Redis client only (feature `cluster`).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Another node said something.
    Cluster(Envelope),
    // Sent by the Redis client only (feature `cluster`).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// The node's Redis subscription is back after an outage.
    ClusterRejoined,
    // Sent by the Redis client only (feature `cluster`).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
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

pub(crate) struct Hub {
    /// Every window and limit, and the metrics.
    config: Config,
    /// The other nodes: [`crate::cluster::SingleNode`] (none) or a cluster on Redis.
    bus: Box<dyn Bus>,
    /// Calls users missed while offline.
    missed: MissedCalls,
    /// The sessions whose home is this node.
    sessions: Sessions,
    /// How often each user id logged in lately.
    logins: LoginRate,
    /// Who is online, and who follows whom.
    presence: Presence,
    /// The invitations owned here, open and recently ended.
    invitations: Invitations,
    /// What this node knows of the other nodes.
    cluster: ClusterState,
    /// Connections here whose session lives on another node.
    resumes: RemoteResumes,
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
    hub.start();
    loop {
        let next = hub.poll_timeout();
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

impl Hub {
    pub(crate) fn new(config: Config, missed: MissedCalls, bus: Box<dyn Bus>) -> Self {
        Self::new_at(config, missed, bus, now())
    }

    /// A hub whose clock starts at `now`.
    fn new_at(config: Config, missed: MissedCalls, bus: Box<dyn Bus>, now: Instant) -> Self {
        let first_device = if bus.clustered() {
            crate::cluster::first_device(bus.node())
        } else {
            1
        };
        Hub {
            invitations: Invitations::new(config.timeouts.retention, now),
            config,
            bus,
            missed,
            sessions: Sessions::new(first_device),
            logins: LoginRate::default(),
            presence: Presence::default(),
            cluster: ClusterState::default(),
            resumes: RemoteResumes::default(),
        }
    }

    /// Says hello to the other nodes (they answer with their devices).
    fn start(&self) {
        if self.bus.clustered() {
            self.bus.publish(
                Target::All,
                &Envelope::Hello {
                    from: self.bus.node(),
                },
            );
        }
    }

    /// When [`Hub::fire_timers`] has something to do next.
    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.invitations.next_deadline(),
            self.sessions.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Login {
                user,
                req,
                conn,
                reply,
            } => {
                let device = self.login(user, req, conn, now);
                let _ = reply.send(device);
            }
            Command::Resume {
                session,
                last_seq,
                req,
                conn,
                reply,
            } => {
                let id = conn.id;
                match self.resume_here(session, last_seq, req, conn, now) {
                    ResumeStart::Settled(answer) => {
                        let _ = reply.send(answer);
                    }
                    ResumeStart::Pending => {
                        self.resumes.replies.insert(id, reply);
                    }
                }
            }
            Command::Request { device, conn, msg } => {
                let node = self.me();
                if self.sessions.contains(device) {
                    self.request_from(node, conn, device, msg, now);
                } else {
                    // The session lives on another node: hand the request over.
                    let envelope = Envelope::FromConn {
                        node,
                        conn,
                        device,
                        msg,
                    };
                    self.to_session_node(device, envelope);
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
                let node = self.me();
                if self.sessions.contains(device) {
                    self.conn_gone(node, conn, device, how, now);
                } else {
                    self.resumes.conns.remove(&conn);
                    let envelope = Envelope::ConnGone {
                        node,
                        conn,
                        device,
                        how,
                    };
                    self.to_session_node(device, envelope);
                }
            }
        }
    }

    /// This node's number (0 without a cluster).
    fn me(&self) -> u32 {
        self.bus.node()
    }

    /// Applies every deadline due by `now`: ended invitations forgotten,
    /// detached sessions given up, invitation timers.
    fn fire_timers(&mut self, now: Instant) {
        if self.invitations.expire_ended(now) {
            self.count_kept();
        }
        while let Some(device) = self.sessions.pop_expired(now) {
            info!(%device, "no resume within the grace window: the device is gone");
            self.gone(device, GoneCause::ConnectionLost, now);
        }
        while let Some(id) = self.invitations.pop_due(now) {
            self.drive(&id, Input::Tick, now);
        }
    }

    /// Ends every invitation and call with `server_shutdown`, then tells every
    /// device the server is going away and closes it (1001), in that order on
    /// each connection.
    fn shutdown(&mut self, now: Instant) {
        let ids = self.invitations.ids();
        info!(
            invitations = ids.len(),
            devices = self.sessions.len(),
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
        for device in self.sessions.ids() {
            self.send(device, &bye);
            if let Some(l) = self.sessions.get(device).and_then(|d| d.link.as_ref()) {
                l.put(
                    &*self.bus,
                    Outbound::Close(CLOSE_GOING_AWAY, close_reason(CLOSE_GOING_AWAY)),
                );
            }
        }
    }
}
