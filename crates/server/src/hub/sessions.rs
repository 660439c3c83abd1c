//! Sessions and the connections they are attached to: sending to a link
//! (here, or on another node), detaching when a connection drops, resuming
//! on a new connection (here or through another node), and the requests and
//! endings of attached connections.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use callinvite_protocol::invitation::GoneCause;
use callinvite_protocol::wire::encode;
use callinvite_protocol::{ClientMessage, DeviceId, ErrorCode, ServerMessage, UserId};

use super::{close_reason, Departure, Hub, Link, Outbound, Via, CLOSE_POLICY, CLOSE_TAKEN_OVER};
use crate::cluster::{Bus, Envelope, Target};

impl Hub {
    /// Sends an envelope to the node that keeps `device`'s session.
    pub(super) fn to_session_node(&self, device: DeviceId, envelope: Envelope) {
        self.bus
            .publish(Target::Node(crate::cluster::node_of(device)), &envelope);
    }

    /// A request from connection `conn` on `node` for `device` (whose session is here).
    pub(super) fn request_from(
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
    pub(super) fn conn_gone(
        &mut self,
        node: u32,
        conn: u64,
        device: DeviceId,
        how: Departure,
        now: Instant,
    ) {
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
    pub(super) fn attached(&self, device: DeviceId, node: u32, conn: u64) -> bool {
        self.devices
            .get(&device)
            .and_then(|d| d.link.as_ref())
            .is_some_and(|l| l.conn == conn && l.node == node)
    }

    /// The connection of `device` dropped: keep the session for the grace window.
    pub(super) fn detach(&mut self, device: DeviceId, now: Instant) {
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
    pub(super) fn resume_here(
        &mut self,
        session: String,
        last_seq: u64,
        req: Option<u64>,
        conn: u64,
        out: crate::hub::OutTx,
        kill: CancellationToken,
        now: Instant,
    ) -> Option<Option<(DeviceId, UserId)>> {
        let me = self.me();
        let home = session
            .strip_prefix('n')
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<u32>().ok());
        match home {
            Some(home) if self.bus.clustered() && home != me => {
                self.remote_conns.insert(conn, (out, kill, home));
                self.resume_asks.insert(
                    conn,
                    super::ResumeAsk {
                        home,
                        session,
                        req,
                        last_seq,
                        claimed: false,
                        asked: false,
                    },
                );
                if self.nodes.contains_key(&home) {
                    self.ask_home(conn);
                } else {
                    // A node this one does not know: dead, or too new to
                    // have been heard. Redis knows which.
                    self.claim_orphaned_sessions();
                }
                // Answered when that node replies, when this one takes the
                // session over, or when the connection gives up.
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

    /// Hands connection `conn`'s resume to the node of its session.
    fn ask_home(&mut self, conn: u64) {
        let me = self.me();
        let Some(ask) = self.resume_asks.get_mut(&conn).filter(|a| !a.asked) else {
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
        for (conn, ask) in &mut self.resume_asks {
            if !ask.claimed && !self.nodes.contains_key(&ask.home) {
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
        let Some(ask) = self.resume_asks.remove(&conn) else {
            return;
        };
        info!(
            home = ask.home,
            conn, "resume not settled in time: the client is told to log in again"
        );
        if let Some((out, _, _)) = self.remote_conns.remove(&conn) {
            let msg = ServerMessage::error(
                ask.req,
                ErrorCode::SessionExpired,
                "the node that kept this session did not answer; log in again",
            );
            let _ = out.try_send(Outbound::Text(encode(&msg).into()));
        }
        if let Some(reply) = self.pending_resumes.remove(&conn) {
            let _ = reply.send(None);
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
        claim: crate::cluster::Claim,
        now: Instant,
    ) {
        use crate::cluster::Claim;
        let record = match claim {
            Claim::NodeAlive => {
                // Alive, or dead for less than its key's life: ask it, and
                // claim again at the next heartbeat if it is still unknown.
                if let Some(ask) = self.resume_asks.get_mut(&conn) {
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
            .pending_resumes
            .remove(&conn)
            .filter(|r| !r.is_closed());
        let ask = self.resume_asks.remove(&conn);
        let link = self.remote_conns.remove(&conn);
        let (Some(reply), Some(ask), Some((out, kill, _))) = (reply, ask, link) else {
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
            let _ = out.try_send(Outbound::Text(encode(&msg).into()));
            let _ = reply.send(None);
            return;
        };
        let user = record.user.clone();
        let device = self.admit(
            record.user,
            ask.req,
            conn,
            out,
            kill,
            Some(record.subscriptions),
            now,
        );
        let _ = reply.send(Some((device, user)));
    }

    pub(super) fn resume(
        &mut self,
        session: &str,
        last_seq: u64,
        req: Option<u64>,
        link: Link,
        now: Instant,
    ) -> Option<(DeviceId, UserId)> {
        let refuse = |hub: &Hub, link: &Link, code, message: String| {
            let msg = ServerMessage::error(req, code, message);
            link.put(&*hub.bus, Outbound::Text(encode(&msg).into()));
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
        let d = self.devices.get_mut(&device)?;
        let old = d.link.take();
        if let Some(until) = d.detached_until.take() {
            self.detached.remove(&(until, device));
        }
        while d.outbox.front().is_some_and(|(s, _)| *s <= last_seq) {
            d.outbox.pop_front();
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
        let d = &self.devices[&device];
        let resumed = ServerMessage::Resumed {
            req,
            device_id: device,
            last_ref: d.last_ref,
            seq: d.seq,
        };
        link.put(&*self.bus, Outbound::Text(encode(&resumed).into()));
        let replay = d.outbox.len();
        for (_, text) in &d.outbox {
            if !link.put(&*self.bus, Outbound::Text(text.clone())) {
                link.kill(&*self.bus);
                break;
            }
        }
        info!(user = %d.user, %device, last_seq, replay, via_node = link.node, "session resumed");
        let d = self.devices.get_mut(&device)?;
        self.config.metrics.login("resumed");
        let user = d.user.clone();
        d.link = Some(link);
        Some((device, user))
    }
}

impl Link {
    /// Queues a frame for the link's connection (here, or through `bus` on
    /// another node); false if its queue is full.
    pub(super) fn put(&self, bus: &dyn Bus, frame: Outbound) -> bool {
        match &self.via {
            Via::Local { out, .. } => {
                !matches!(out.try_send(frame), Err(mpsc::error::TrySendError::Full(_)))
            }
            Via::Remote => {
                let frame = match frame {
                    Outbound::Text(t) => crate::cluster::Frame::Text(t.as_str().to_owned()),
                    Outbound::Close(code, _) => crate::cluster::Frame::Close(code),
                };
                bus.publish(
                    Target::Node(self.node),
                    &Envelope::ToConn {
                        conn: self.conn,
                        frame,
                    },
                );
                true
            }
        }
    }

    /// Makes the link's connection close itself as too slow.
    pub(super) fn kill(&self, bus: &dyn Bus) {
        match &self.via {
            Via::Local { kill, .. } => kill.cancel(),
            Via::Remote => {
                self.put(bus, Outbound::Close(CLOSE_POLICY, ""));
            }
        }
    }
}
