//! Several server nodes behind one address, on Redis pub/sub (the way
//! socket.io's Redis adapter and Centrifugo's broker do it).
//!
//! Each node keeps its own hub. What the hubs must share travels as
//! [`Envelope`]s over two kinds of Redis channels:
//!
//! - `callinvite:all`: every node hears it. Devices coming online and going
//!   offline (so every node knows who is online where, for routing, presence
//!   and multi-device ringing), node heartbeats, hello and goodbye.
//! - `callinvite:node:<n>`: one node hears it. A message for a device
//!   connected there ([`Envelope::Deliver`]), or an input for an invitation
//!   that node owns ([`Envelope::Drive`]).
//!
//! An invitation lives on the node of its caller's device (its id says
//! which: `n<node>.<uuid>`); that node runs its state machine and timers, so
//! every race still has one arbiter. A device id also names its node (the
//! top bits), so a node knows where to deliver without asking anyone.
//!
//! Order: one node publishes from one connection, and Redis delivers a
//! publisher's messages to a subscriber in order, so what one node sends to
//! another arrives in the order sent. The protocol's own orderings (the
//! callee hears first) are enforced by the state machine's acks.
//!
//! A node that stops sending heartbeats for [`ClusterConfig::node_timeout`]
//! is dead: its devices go offline everywhere (with `connection lost`
//! effects on invitations and calls), and invitations it owned end with
//! `server_shutdown` on the devices that took part in them. Its sessions
//! can be taken over: each node keeps a [`SessionRecord`] per session in
//! Redis and a `callinvite:alive:<node>` key while it lives, and a node that
//! gets a `resume` for a session of a dead node claims the record (once the
//! key has expired; one node only) and carries on as a new device of the
//! same user (`session_moved`).
//!
//! Here: what every build has — the [`Bus`] a hub talks through, what
//! travels on it, and [`SingleNode`]. The Redis client (`Cluster`, `join`)
//! is in `redis.rs`, behind the `cluster` feature (on by default; the desktop
//! app's embedded server leaves it out and is always a single node).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use callinvite_protocol::invitation::{GoneCause, Input};
use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{DeviceId, InvitationId, ServerMessage, UserId};

// The Redis client (feature `cluster`); without it a server is one node.
#[cfg(feature = "cluster")]
mod redis;
#[cfg(feature = "cluster")]
pub(crate) use self::redis::join;

/// Where the cluster meets.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`.
    pub redis_url: String,
    /// How often a node says it is alive.
    pub heartbeat_every: Duration,
    /// A node not heard from for this long is dead.
    pub node_timeout: Duration,
}

impl ClusterConfig {
    pub fn new(redis_url: impl Into<String>) -> Self {
        ClusterConfig {
            redis_url: redis_url.into(),
            heartbeat_every: Duration::from_secs(1),
            node_timeout: Duration::from_secs(3),
        }
    }
}

/// Why the node could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[cfg(feature = "cluster")]
    #[error("cannot reach Redis at {url}: {source}; check --redis and that redis-server runs")]
    Redis {
        url: String,
        source: ::redis::RedisError,
    },
    /// `Config::cluster` was set on a server built without Redis.
    #[error("this server was built without the `cluster` feature, so it cannot join a cluster on Redis ({url}); leave `cluster` unset, or build callinvite-server with its default features")]
    NotBuiltIn { url: String },
}

/// What nodes tell each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Envelope {
    /// A node started: the others tell it about their devices.
    Hello { from: u32 },
    /// A node is alive.
    Heartbeat { from: u32 },
    /// A node is shutting down: its devices are gone.
    Bye { from: u32 },
    DeviceOnline {
        from: u32,
        user: UserId,
        device: DeviceId,
    },
    DeviceOffline {
        from: u32,
        user: UserId,
        device: DeviceId,
        cause: GoneCause,
    },
    /// Send this to a device connected to the receiving node.
    Deliver {
        device: DeviceId,
        msg: ServerMessage,
    },
    /// Apply this to an invitation the receiving node owns. `reply_to` names
    /// the device and `ref` to answer `not_found` if there is no such invitation.
    Drive {
        id: InvitationId,
        input: Input,
        reply_to: Option<(DeviceId, u64)>,
    },
    /// A connection here resumed a session that lives on the receiving node.
    ResumeVia {
        node: u32,
        conn: u64,
        session: String,
        last_seq: u64,
        req: Option<u64>,
    },
    /// The answer to [`Envelope::ResumeVia`]: the session, or `None` (the
    /// error frame was sent to the connection already).
    ResumeAnswer {
        conn: u64,
        answer: Option<crate::hub::LoggedIn>,
    },
    /// A frame for a connection on the receiving node whose session lives elsewhere.
    ToConn { conn: u64, frame: Frame },
    /// A request from such a connection, for the node of its session.
    FromConn {
        node: u32,
        conn: u64,
        device: DeviceId,
        msg: callinvite_protocol::ClientMessage,
    },
    /// Such a connection ended.
    ConnGone {
        node: u32,
        conn: u64,
        device: DeviceId,
        how: crate::hub::Departure,
    },
    /// A user missed a call (kept by every node, so any node can deliver it).
    Missed {
        from: u32,
        user: UserId,
        call: MissedCall,
    },
    /// A user cleared missed calls.
    MissedCleared {
        from: u32,
        user: UserId,
        ids: Vec<InvitationId>,
    },
}

/// What another node needs to take a session over when the node that kept
/// it dies. Kept in Redis while the session lives: hash
/// `callinvite:sessions:<node>`, field = the session secret. The node renews
/// the hash's expiry at every heartbeat, so the records of a dead node stay
/// for about its timeout plus the resume window, and no longer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub user: UserId,
    /// Users whose presence the session follows.
    #[serde(default)]
    pub subscriptions: Vec<UserId>,
}

/// A WebSocket frame for a connection on another node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Frame {
    Text(String),
    Close(u16),
}

/// Where an envelope goes.
#[derive(Clone, Copy, Debug)]
// `Node`'s number is read by the Redis client only (feature `cluster`).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Target {
    All,
    Node(u32),
}

/// What a claim of another node's session found.
#[derive(Debug)]
// Made by the Redis client only (feature `cluster`).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Claim {
    /// The session, now this node's to keep.
    Taken(SessionRecord),
    /// That node is alive (its key has not expired): ask it instead.
    NodeAlive,
    /// No such session (expired, ended, or taken by another node).
    Gone,
}

/// What a hub needs from the rest of the service: a number, a way to reach
/// the other nodes, and a durable place for missed calls. Two implementations:
/// [`SingleNode`] (nothing to reach; the default and the app's embedded
/// server) and `Cluster` (Redis, feature `cluster`).
pub(crate) trait Bus: Send {
    /// This node's number; 0 on a single node.
    fn node(&self) -> u32;
    /// Whether there are other nodes at all.
    fn clustered(&self) -> bool {
        self.node() != 0
    }
    /// Sends an envelope to one node or to all.
    fn publish(&self, target: Target, envelope: &Envelope);
    /// Keeps a user's missed calls where every node finds them.
    fn store_missed(&self, user: &UserId, calls: &[MissedCall], ttl: Duration);
    /// How often to say "alive", and after how long a silent node is dead.
    fn liveness(&self) -> Option<(Duration, Duration)>;
    /// Keeps (or, with `None`, forgets) the record of a session of `node`,
    /// for taking it over should that node die. With `expire`, that node's
    /// records expire then (for a record given back to a dead node).
    fn keep_session(
        &self,
        node: u32,
        session: &str,
        record: Option<&SessionRecord>,
        expire: Option<Duration>,
    );
    /// Says (in Redis) that this node is alive for `alive` more, and renews
    /// the expiry of its session records to `ttl` (every heartbeat).
    fn renew_sessions(&self, alive: Duration, ttl: Duration);
    /// This node is leaving: its sessions may be taken over at once.
    fn leaving(&self);
    /// Takes the record of a session of dead `node` out of Redis (only one
    /// node can), and tells the hub with [`crate::hub::Command::SessionClaimed`] for
    /// connection `conn`.
    fn claim_session(&self, node: u32, session: &str, conn: u64);
}

/// The one and only node: nothing to tell anyone.
pub(crate) struct SingleNode;

impl Bus for SingleNode {
    fn node(&self) -> u32 {
        0
    }
    fn publish(&self, _: Target, _: &Envelope) {}
    fn store_missed(&self, _: &UserId, _: &[MissedCall], _: Duration) {}
    fn liveness(&self) -> Option<(Duration, Duration)> {
        None
    }
    fn keep_session(&self, _: u32, _: &str, _: Option<&SessionRecord>, _: Option<Duration>) {}
    fn renew_sessions(&self, _: Duration, _: Duration) {}
    fn leaving(&self) {}
    fn claim_session(&self, _: u32, _: &str, _: u64) {}
}

/// The node a device is connected to (its id's top bits; 0 without a cluster).
pub(crate) fn node_of(device: DeviceId) -> u32 {
    (device.0 >> 40) as u32
}

/// The first device id of `node`.
pub(crate) fn first_device(node: u32) -> u64 {
    ((node as u64) << 40) | 1
}

/// The node that owns an invitation, from its id (`n<node>.<uuid>`).
pub(crate) fn owner_of(id: &InvitationId) -> Option<u32> {
    let rest = id.0.strip_prefix('n')?;
    let (node, _) = rest.split_once('.')?;
    node.parse().ok()
}
