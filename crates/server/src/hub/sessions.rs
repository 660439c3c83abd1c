//! Sessions ("devices") whose home is this node: each one's user, the
//! connection it is attached to, its outbox (the sans-I/O
//! [`ServerSession`] of the protocol crate: numbering, `seen`, replay), and
//! the users it follows. [`Sessions`] owns them with their indexes; the hub
//! methods here send on a session, detach it when its connection drops, and
//! end it.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{info, warn};

use callinvite_protocol::invitation::GoneCause;
use callinvite_protocol::session::{OutboxLimits, ServerSession};
use callinvite_protocol::wire::encode_seq;
use callinvite_protocol::{ClientMessage, DeviceId, ServerMessage, UserId};

use super::link::{Link, Outbound};
use super::presence::Follows;
use super::{Departure, Hub};
use crate::cluster::{Envelope, Target};

/// A logged-in session ("device"), attached to a connection or waiting for a resume.
pub(super) struct Device {
    pub(super) user: UserId,
    /// The connection it is attached to; `None` while detached.
    pub(super) link: Option<Link>,
    /// The secret a `resume` must name.
    pub(super) secret: String,
    /// Its numbered messages, kept until `seen`, and whether and until when
    /// it waits for a resume.
    pub(super) outbox: ServerSession<Utf8Bytes>,
    /// Users whose presence it follows.
    pub(super) follows: Follows,
}

/// The sessions of this node.
pub(super) struct Sessions {
    /// The id the next device gets (in a cluster, ids name their node).
    next_device: u64,
    devices: HashMap<DeviceId, Device>,
    /// Device of each session secret.
    by_secret: HashMap<String, DeviceId>,
    /// Detached devices by the time their grace window ends.
    detached: BTreeSet<(Instant, DeviceId)>,
}

impl Sessions {
    /// Device ids are handed out from `first_device` on.
    pub(super) fn new(first_device: u64) -> Self {
        Sessions {
            next_device: first_device,
            devices: HashMap::new(),
            by_secret: HashMap::new(),
            detached: BTreeSet::new(),
        }
    }

    /// A device id never handed out before.
    pub(super) fn new_id(&mut self) -> DeviceId {
        let id = DeviceId(self.next_device);
        self.next_device += 1;
        id
    }

    pub(super) fn len(&self) -> usize {
        self.devices.len()
    }

    pub(super) fn contains(&self, device: DeviceId) -> bool {
        self.devices.contains_key(&device)
    }

    pub(super) fn get(&self, device: DeviceId) -> Option<&Device> {
        self.devices.get(&device)
    }

    pub(super) fn get_mut(&mut self, device: DeviceId) -> Option<&mut Device> {
        self.devices.get_mut(&device)
    }

    /// Every device here, with its user.
    pub(super) fn users(&self) -> impl Iterator<Item = (DeviceId, &UserId)> {
        self.devices.iter().map(|(id, d)| (*id, &d.user))
    }

    /// The device whose session secret is `secret`.
    pub(super) fn by_secret(&self, secret: &str) -> Option<DeviceId> {
        self.by_secret.get(secret).copied()
    }

    /// A new session.
    pub(super) fn insert(&mut self, device: DeviceId, d: Device) {
        self.by_secret.insert(d.secret.clone(), device);
        self.devices.insert(device, d);
    }

    /// Ends a session: it is forgotten with its indexes.
    pub(super) fn remove(&mut self, device: DeviceId) -> Option<Device> {
        let d = self.devices.remove(&device)?;
        self.by_secret.remove(&d.secret);
        if let Some(until) = d.outbox.poll_timeout() {
            self.detached.remove(&(until, device));
        }
        Some(d)
    }

    /// Whether `device` is attached to connection `conn` on `node`.
    pub(super) fn attached(&self, device: DeviceId, node: u32, conn: u64) -> bool {
        self.devices
            .get(&device)
            .and_then(|d| d.link.as_ref())
            .is_some_and(|l| l.conn == conn && l.node == node)
    }

    /// The connection of `device` dropped: the session waits for a resume.
    pub(super) fn detach(
        &mut self,
        device: DeviceId,
        limits: &OutboxLimits,
        now: Instant,
    ) -> Option<&Device> {
        let d = self.devices.get_mut(&device)?;
        if let Some(until) = d.outbox.poll_timeout() {
            self.detached.remove(&(until, device));
        }
        d.link = None;
        let until = d.outbox.handle_detach(limits, now);
        self.detached.insert((until, device));
        Some(d)
    }

    /// A device detached until `until` was resumed: off the queue of
    /// detached ones.
    pub(super) fn reattached(&mut self, device: DeviceId, until: Instant) {
        self.detached.remove(&(until, device));
    }

    /// When the next detached session is given up.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.detached.first().map(|(t, _)| *t)
    }

    /// The next detached device whose grace window is over by `now`.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<DeviceId> {
        let &(t, device) = self.detached.first()?;
        if t > now {
            return None;
        }
        self.detached.pop_first();
        Some(device)
    }

    /// Of `devices`, the one detached the longest (it gives up its place
    /// to a new login).
    pub(super) fn oldest_detached(&self, devices: &[DeviceId]) -> Option<DeviceId> {
        devices
            .iter()
            .filter_map(|id| Some((self.devices.get(id)?.outbox.poll_timeout()?, *id)))
            .min()
            .map(|(_, id)| id)
    }

    /// The devices here attached to a connection on `node`.
    pub(super) fn attached_via(&self, node: u32) -> Vec<DeviceId> {
        self.devices
            .iter()
            .filter(|(_, d)| d.link.as_ref().is_some_and(|l| l.node == node))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every device id here.
    pub(super) fn ids(&self) -> Vec<DeviceId> {
        self.devices.keys().copied().collect()
    }
}

impl Hub {
    /// What the sessions keep for a resume.
    pub(super) fn limits(&self) -> OutboxLimits {
        OutboxLimits {
            grace: self.config.resume_grace,
            keep: self.config.resume_buffer,
        }
    }

    /// Sends one message of the device's session: numbered, kept until seen
    /// (when sessions can resume), and written if a connection is attached.
    pub(super) fn send(&mut self, device: DeviceId, msg: &ServerMessage) {
        let limits = self.limits();
        let Some(d) = self.sessions.get_mut(device) else {
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
        d.outbox
            .send(&limits, |seq| Utf8Bytes::from(encode_seq(seq, msg)));
        let Some(link) = &d.link else {
            return;
        };
        while let Some(text) = d.outbox.poll_transmit(&limits) {
            if !link.put(&*self.bus, Outbound::Text(text)) {
                warn!(%device, user = %d.user, "outbound queue full: closing the connection as too slow");
                link.kill(&*self.bus);
                break;
            }
        }
    }

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
        if !self.sessions.attached(device, node, conn) {
            // A connection that lost its session to a resume elsewhere.
            return;
        }
        let req = msg.req();
        if let Some(d) = self.sessions.get_mut(device) {
            d.outbox.handle_request(req);
        }
        if let Err(refusal) = self.request(device, msg, now) {
            let error = ServerMessage::error(req, refusal.code, refusal.message);
            self.send(device, &error);
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
        if !self.sessions.attached(device, node, conn) {
            return;
        }
        match how {
            Departure::Lost if !self.config.resume_grace.is_zero() => self.detach(device, now),
            Departure::Logout => self.gone(device, GoneCause::Logout, now),
            _ => self.gone(device, GoneCause::ConnectionLost, now),
        }
    }

    /// The connection of `device` dropped: keep the session for the grace window.
    pub(super) fn detach(&mut self, device: DeviceId, now: Instant) {
        let limits = self.limits();
        if let Some(d) = self.sessions.detach(device, &limits, now) {
            info!(user = %d.user, %device, grace = ?limits.grace, unseen = d.outbox.unseen(), "connection lost: session kept for a resume");
        }
    }

    /// `device` follows the presence of `users` from now on.
    pub(super) fn follow(&mut self, device: DeviceId, users: &[UserId]) {
        self.presence.follow(device, users);
        if let Some(d) = self.sessions.get_mut(device) {
            d.follows.extend(users.iter().cloned());
        }
    }

    /// Keeps the device's session record in Redis up to date (a cluster only),
    /// so another node can take the session over if this one dies.
    pub(super) fn keep_session_record(&self, device: DeviceId) {
        if !self.bus.clustered() {
            return;
        }
        if let Some(d) = self.sessions.get(device) {
            let record = crate::cluster::SessionRecord {
                user: d.user.clone(),
                subscriptions: d.follows.iter().cloned().collect(),
            };
            self.bus
                .keep_session(self.me(), &d.secret, Some(&record), None);
        }
    }

    /// The session of `device` ends: everyone who must hear of it does.
    pub(super) fn gone(&mut self, device: DeviceId, cause: GoneCause, now: Instant) {
        let Some(d) = self.sessions.remove(device) else {
            return;
        };
        self.bus.keep_session(self.me(), &d.secret, None, None);
        info!(user = %d.user, %device, ?cause, "device gone");
        self.config.metrics.devices.dec();
        for u in d.follows.iter() {
            self.presence.unfollow(device, u);
        }
        let went_offline = self.presence.remove(&d.user, device);
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
        self.cluster.device_gone(device);
        if went_offline {
            self.notify_presence(&d.user, false);
        }
    }

    /// Tells the followers of `user` that it came online or went offline.
    pub(super) fn notify_presence(&mut self, user: &UserId, online: bool) {
        let followers = self.presence.followers(user);
        if followers.is_empty() {
            return;
        }
        let msg = ServerMessage::PresenceChanged {
            user: user.to_string(),
            online,
        };
        for d in followers {
            self.send(d, &msg);
        }
    }
}
