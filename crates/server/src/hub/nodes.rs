//! The hub's side of a cluster: what other nodes say (devices coming and
//! going, deliveries, inputs for invitations owned here, resumes), handing
//! requests to the node that owns an invitation, heartbeats, and what to do
//! when a node is gone. With a single node none of this runs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use callinvite_protocol::invitation::{GoneCause, Input};
use callinvite_protocol::{
    ClientMessage, DeviceId, ErrorCode, InvitationId, ServerMessage, UserId,
};

use callinvite_protocol::limits::CLOSE_GOING_AWAY;

use super::link::{close_reason, Link, Outbound, Via};
use super::presence::Arrival;
use super::Hub;
use crate::cluster::{owner_of, Envelope, Frame, Target};

/// Another node of the cluster.
pub(super) struct RemoteNode {
    pub(super) last_heard: Instant,
    // Its devices are those in the hub's presence whose id names it: no
    // second copy here (each node knows every device of the cluster, so a
    // copy would cost every node memory for every connection).
}

/// An invitation owned by another node that devices here take part in, so
/// they can be told if that node dies.
#[derive(Default)]
pub(super) struct Foreign {
    pub(super) devices: HashSet<DeviceId>,
    /// Devices in the call (or whose accept is on its way).
    pub(super) in_call: HashSet<DeviceId>,
}

/// A request of a device here, handed to the node that owns its invitation:
/// answered here with `already_ended` if that node dies first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Forwarded {
    pub(super) device: DeviceId,
    pub(super) req: u64,
}

/// What this node knows of the others. Empty on a single node.
#[derive(Default)]
pub(super) struct ClusterState {
    /// The other nodes, by number.
    nodes: HashMap<u32, RemoteNode>,
    /// Invitations owned by other nodes that devices here take part in.
    foreign: HashMap<InvitationId, Foreign>,
    /// Requests forwarded to each node and not answered yet.
    forwarded: HashMap<u32, HashSet<Forwarded>>,
}

impl ClusterState {
    /// Whether `node` is alive as far as this node knows.
    pub(super) fn knows(&self, node: u32) -> bool {
        self.nodes.contains_key(&node)
    }

    /// `node` was heard from at `now`.
    pub(super) fn heard(&mut self, node: u32, now: Instant) {
        self.nodes
            .entry(node)
            .or_insert_with(|| RemoteNode { last_heard: now })
            .last_heard = now;
    }

    /// Forgets `node`; false if it was not known.
    fn forget(&mut self, node: u32) -> bool {
        self.nodes.remove(&node).is_some()
    }

    /// The nodes not heard from for longer than `timeout`.
    fn silent(&self, now: Instant, timeout: Duration) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_heard) > timeout)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `device` accepted invitation `id` of another node: if that node dies,
    /// it may already be in the call.
    pub(super) fn will_be_in_call(&mut self, id: &InvitationId, device: DeviceId) {
        self.foreign
            .entry(id.clone())
            .or_default()
            .in_call
            .insert(device);
    }

    /// `device` is gone: it takes part in no invitation of another node.
    pub(super) fn device_gone(&mut self, device: DeviceId) {
        self.foreign.retain(|_, f| {
            f.devices.remove(&device);
            f.in_call.remove(&device);
            !f.devices.is_empty()
        });
    }

    /// `device` was told about invitation `id` of another node: it takes
    /// part (and maybe is in the call), or it is over for it (`ends`).
    fn track(&mut self, id: &InvitationId, device: DeviceId, ends: bool, call: bool) {
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

    /// The invitations `node` owned that devices here took part in, forgotten.
    fn take_owned_by(&mut self, node: u32) -> Vec<(InvitationId, Foreign)> {
        let owned: Vec<InvitationId> = self
            .foreign
            .keys()
            .filter(|id| owner_of(id) == Some(node))
            .cloned()
            .collect();
        owned
            .into_iter()
            .filter_map(|id| self.foreign.remove(&id).map(|f| (id, f)))
            .collect()
    }
}

// What the cluster tests (`tests/cluster.rs`) look at.
#[cfg(test)]
impl ClusterState {
    /// How many forwarded requests wait for an answer.
    pub(super) fn unanswered(&self) -> usize {
        self.forwarded.values().map(HashSet::len).sum()
    }

    /// Whether `device` takes part in invitation `id` of another node
    /// (`None` if not), and whether it may be in its call.
    pub(super) fn part_in(&self, id: &InvitationId, device: DeviceId) -> Option<bool> {
        let f = self.foreign.get(id)?;
        let in_call = f.in_call.contains(&device);
        (f.devices.contains(&device) || in_call).then_some(in_call)
    }
}

impl Hub {
    /// Sends an input to the node that owns the invitation, if that is
    /// another node. Returns whether it did.
    pub(super) fn forward(
        &mut self,
        id: &InvitationId,
        input: &Input,
        reply_to: Option<(DeviceId, u64)>,
    ) -> bool {
        if !self.bus.clustered() {
            return false;
        }
        let me = self.me();
        match owner_of(id) {
            Some(owner) if owner != me && !self.cluster.knows(owner) => {
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
            Some(owner) if owner != me => {
                if let Some((device, req)) = reply_to {
                    let f = Forwarded { device, req };
                    self.cluster.forwarded.entry(owner).or_default().insert(f);
                }
                self.bus.publish(
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

    // ---- what other nodes say ----

    /// One envelope from the cluster: each kind to its handler below. A
    /// node hears its own broadcasts back from Redis; those are dropped here.
    pub(super) fn on_cluster(&mut self, envelope: Envelope, now: Instant) {
        let me = self.bus.node();
        match envelope {
            Envelope::Hello { from } if from != me => self.node_joined(from, now),
            Envelope::Heartbeat { from } if from != me => self.cluster.heard(from, now),
            Envelope::Bye { from } if from != me => self.node_left(from, now),
            Envelope::DeviceOnline { from, user, device } if from != me => {
                self.remote_device_online(from, &user, device, now)
            }
            Envelope::DeviceOffline {
                from,
                user,
                device,
                cause,
            } if from != me => self.remote_device_gone(&user, device, cause, now),
            Envelope::Deliver { device, msg } => self.deliver(device, &msg),
            Envelope::Drive {
                id,
                input,
                reply_to,
            } => self.drive_for_node(&id, input, reply_to, now),
            Envelope::ResumeVia {
                node,
                conn,
                session,
                last_seq,
                req,
            } => self.resume_for_node(node, conn, &session, last_seq, req, now),
            Envelope::ResumeAnswer { conn, answer } => self.resume_answered(conn, answer),
            Envelope::ToConn { conn, frame } => self.relay_frame(conn, frame),
            Envelope::FromConn {
                node,
                conn,
                device,
                msg,
            } => self.request_via_node(node, conn, device, msg, now),
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

    /// Node `from` started: it is alive, and hears who is online here.
    fn node_joined(&mut self, from: u32, now: Instant) {
        info!(node = from, "a node joined the cluster");
        self.cluster.heard(from, now);
        let me = self.me();
        let mine: Vec<(UserId, DeviceId)> = self
            .sessions
            .users()
            .map(|(id, user)| (user.clone(), id))
            .collect();
        for (user, device) in mine {
            self.bus.publish(
                Target::Node(from),
                &Envelope::DeviceOnline {
                    from: me,
                    user,
                    device,
                },
            );
        }
    }

    /// Node `from` is shutting down: as if it died.
    fn node_left(&mut self, from: u32, now: Instant) {
        info!(node = from, "a node left the cluster");
        self.node_gone(from, now);
    }

    /// `device` of `user` came online on node `from`: its followers here
    /// hear of the user coming online, and what rings for the user here
    /// rings on it too.
    fn remote_device_online(&mut self, from: u32, user: &UserId, device: DeviceId, now: Instant) {
        self.cluster.heard(from, now);
        match self.presence.add(user, device) {
            Arrival::Known => return,
            Arrival::CameOnline => self.notify_presence(user, true),
            Arrival::AnotherDevice => {}
        }
        self.ring_new_device(user, device, now);
    }

    /// A message from another node for a device here. An answer to a
    /// request this node forwarded settles it.
    fn deliver(&mut self, device: DeviceId, msg: &ServerMessage) {
        if let ServerMessage::Ok { req: Some(r) } | ServerMessage::Error { req: Some(r), .. } = msg
        {
            let f = Forwarded { device, req: *r };
            for set in self.cluster.forwarded.values_mut() {
                set.remove(&f);
            }
        }
        self.track_foreign(device, msg);
        self.send(device, msg);
    }

    /// An input from another node for invitation `id`, which this node owns:
    /// applied, answered as a recently ended one would, or (with `reply_to`)
    /// answered `not_found`.
    fn drive_for_node(
        &mut self,
        id: &InvitationId,
        input: Input,
        reply_to: Option<(DeviceId, u64)>,
        now: Instant,
    ) {
        if self.invitations.contains(id) {
            self.drive(id, input, now);
            return;
        }
        if self.late(id, input, now) {
            return;
        }
        if let Some((device, req)) = reply_to {
            let msg = ServerMessage::error(
                Some(req),
                ErrorCode::NotFound,
                format!("no invitation {id} for you"),
            );
            self.send(device, &msg);
        }
    }

    /// Connection `conn` on `node` resumes a session of this node: resumed
    /// (frames go back as [`Envelope::ToConn`]) or refused, and `node` hears which.
    fn resume_for_node(
        &mut self,
        node: u32,
        conn: u64,
        session: &str,
        last_seq: u64,
        req: Option<u64>,
        now: Instant,
    ) {
        let link = Link {
            node,
            conn,
            via: Via::Remote,
        };
        let answer = self.resume(session, last_seq, req, link, now);
        self.bus
            .publish(Target::Node(node), &Envelope::ResumeAnswer { conn, answer });
    }

    /// A frame from a session on another node for connection `conn` here.
    fn relay_frame(&mut self, conn: u64, frame: Frame) {
        let Some(remote) = self.resumes.conns.get(&conn) else {
            return;
        };
        let frame = match frame {
            Frame::Text(t) => Outbound::Text(t.into()),
            Frame::Close(code) => Outbound::Close(code, close_reason(code)),
        };
        match remote.conn.out.try_send(frame) {
            Err(mpsc::error::TrySendError::Full(_)) => remote.conn.kill.cancel(),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.resumes.conns.remove(&conn);
            }
            Ok(()) => {}
        }
    }

    /// A request from connection `conn` on `node` for `device`, whose
    /// session is here (if it still is).
    fn request_via_node(
        &mut self,
        node: u32,
        conn: u64,
        device: DeviceId,
        msg: ClientMessage,
        now: Instant,
    ) {
        if self.sessions.contains(device) {
            self.request_from(node, conn, device, msg, now);
        }
    }

    /// After a Redis outage: the other nodes may have given this one up, and
    /// this one them. Say hello (they answer with their devices) and tell
    /// everyone this node's devices again.
    pub(super) fn rejoin(&self) {
        if !self.bus.clustered() {
            return;
        }
        let c = &self.bus;
        c.publish(Target::All, &Envelope::Hello { from: c.node() });
        for (device, user) in self.sessions.users() {
            c.publish(
                Target::All,
                &Envelope::DeviceOnline {
                    from: c.node(),
                    user: user.clone(),
                    device,
                },
            );
        }
    }

    /// A device on another node is gone.
    pub(super) fn remote_device_gone(
        &mut self,
        user: &UserId,
        device: DeviceId,
        cause: GoneCause,
        now: Instant,
    ) {
        let went_offline = self.presence.remove(user, device);
        self.device_left(device, cause, now);
        if went_offline {
            self.notify_presence(user, false);
        }
    }

    /// Notes which invitations of other nodes a device here takes part in.
    pub(super) fn track_foreign(&mut self, device: DeviceId, msg: &ServerMessage) {
        let me = self.bus.node();
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
        self.cluster.track(id, device, ends, call);
    }

    /// Every heartbeat: say we are alive, and find nodes that are not.
    pub(super) fn cluster_tick(&mut self, now: Instant) {
        let Some((_, timeout)) = self.bus.liveness() else {
            return;
        };
        let c = &self.bus;
        c.publish(Target::All, &Envelope::Heartbeat { from: c.node() });
        for node in self.cluster.silent(now, timeout) {
            warn!(node, ?timeout, "node not heard from: treating it as dead");
            self.node_gone(node, now);
        }
        // This node's session records outlive it by about a node timeout
        // and the resume window: long enough for another node to take them.
        if let Some((every, _)) = self.bus.liveness() {
            self.bus
                .renew_sessions(timeout, every + timeout + self.config.resume_grace);
        }
        // Resumes that came before this node knew whether their node lives.
        self.claim_orphaned_sessions();
    }

    /// Another node is gone (dead or shut down): its devices leave, and the
    /// invitations it owned end for the devices here that took part.
    pub(super) fn node_gone(&mut self, node: u32, now: Instant) {
        if !self.cluster.forget(node) {
            return;
        }
        // Sessions here whose connection was on that node: detached, as if dropped.
        for device in self.sessions.attached_via(node) {
            if self.config.resume_grace.is_zero() {
                self.gone(device, GoneCause::ConnectionLost, now);
            } else {
                self.detach(device, now);
            }
        }
        // Connections here attached to a session on that node: close them,
        // so that their clients resume, and the session is taken over.
        // (Those still waiting for a resume answer are taken over below.)
        let homed: Vec<u64> = self
            .resumes
            .conns
            .iter()
            .filter(|(c, r)| r.home == node && !self.resumes.asks.contains_key(c))
            .map(|(c, _)| *c)
            .collect();
        for conn in homed {
            if let Some(remote) = self.resumes.conns.remove(&conn) {
                let _ = remote.conn.out.try_send(Outbound::Close(
                    CLOSE_GOING_AWAY,
                    close_reason(CLOSE_GOING_AWAY),
                ));
            }
            if let Some(reply) = self.resumes.replies.remove(&conn) {
                let _ = reply.send(None);
            }
        }
        for (device, user) in self.presence.devices_on(node) {
            self.remote_device_gone(&user, device, GoneCause::ConnectionLost, now);
        }
        // Requests it never answered.
        let unanswered = self.cluster.forwarded.remove(&node).unwrap_or_default();
        for Forwarded { device, req } in unanswered {
            let msg = ServerMessage::error(
                Some(req),
                ErrorCode::AlreadyEnded,
                "the invitation ended: the server node that kept it is gone",
            );
            self.send(device, &msg);
        }
        for (id, f) in self.cluster.take_owned_by(node) {
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
        // Connections here waiting to resume a session of that node take it over.
        self.claim_orphaned_sessions();
    }
}
