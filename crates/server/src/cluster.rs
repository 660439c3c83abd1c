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

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use callinvite_protocol::invitation::{GoneCause, Input};
use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{DeviceId, InvitationId, ServerMessage, UserId};

use crate::hub::Command;

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
    #[error("cannot reach Redis at {url}: {source}; check --redis and that redis-server runs")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
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
pub(crate) enum Target {
    All,
    Node(u32),
}

const ALL: &str = "callinvite:all";
/// Node numbers run from 1 to this.
const MAX_NODE: u64 = 8190;
fn node_channel(node: u32) -> String {
    format!("callinvite:node:{node}")
}

/// What the writer task sends to Redis, in order.
enum Out {
    Publish(Target, String),
    /// Keep a user's missed calls (JSON) under a key that expires; empty deletes it.
    StoreMissed {
        user: UserId,
        calls: String,
        ttl_ms: u64,
    },
    /// Keep (JSON) or forget (`None`) a session record of `node`; with
    /// `expire_ms`, the whole hash expires then (a record given back to a
    /// dead node's hash must not make it live forever).
    KeepSession {
        node: u32,
        session: String,
        record: Option<String>,
        expire_ms: Option<u64>,
    },
    /// This node is alive for `alive_ms` more, and its session records stay
    /// for `ttl_ms` more.
    RenewSessions {
        node: u32,
        alive_ms: u64,
        ttl_ms: u64,
    },
    /// This node is leaving: it is no longer alive.
    Leaving {
        node: u32,
    },
}

/// What a claim of another node's session found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The session, now this node's to keep.
    Taken(SessionRecord),
    /// That node is alive (its key has not expired): ask it instead.
    NodeAlive,
    /// No such session (expired, ended, or taken by another node).
    Gone,
}

/// `callinvite:alive:<node>` exists while the node says it is alive; a claim
/// of its sessions fails until it expires. Then the record is taken
/// (HGET + HDEL) in the same step, so only one node can have it.
const CLAIM_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'alive'} end
local r = redis.call('HGET', KEYS[2], ARGV[1])
if r then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {'taken', r}
end
return {'gone'}
"#;

fn alive_key(node: u32) -> String {
    format!("callinvite:alive:{node}")
}

fn sessions_key(node: u32) -> String {
    format!("callinvite:sessions:{node}")
}

/// What a hub needs from the rest of the service: a number, a way to reach
/// the other nodes, and a durable place for missed calls. Two implementations:
/// [`SingleNode`] (nothing to reach; the default and the app's embedded
/// server) and [`Cluster`] (Redis).
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
    /// node can), and tells the hub with [`Command::SessionClaimed`] for
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

/// This node's handle on the cluster: its number, and the queue of the task
/// that writes to Redis in order.
pub(crate) struct Cluster {
    pub node: u32,
    pub config: ClusterConfig,
    out: mpsc::UnboundedSender<Out>,
    /// For the requests that need an answer (session claims).
    redis: redis::aio::ConnectionManager,
    /// Where claim answers go.
    hub: mpsc::Sender<Command>,
}

impl Bus for Cluster {
    fn node(&self) -> u32 {
        self.node
    }

    fn liveness(&self) -> Option<(Duration, Duration)> {
        Some((self.config.heartbeat_every, self.config.node_timeout))
    }

    fn publish(&self, target: Target, envelope: &Envelope) {
        match serde_json::to_string(envelope) {
            Ok(text) => {
                let _ = self.out.send(Out::Publish(target, text));
            }
            Err(e) => warn!(error = %e, "cannot encode a cluster message"),
        }
    }

    /// Saves a user's missed calls in Redis (the cluster's durable copy).
    fn store_missed(&self, user: &UserId, calls: &[MissedCall], ttl: Duration) {
        let calls = if calls.is_empty() {
            String::new()
        } else {
            serde_json::to_string(calls).unwrap_or_default()
        };
        let _ = self.out.send(Out::StoreMissed {
            user: user.clone(),
            calls,
            ttl_ms: ttl.as_millis() as u64,
        });
    }

    fn keep_session(
        &self,
        node: u32,
        session: &str,
        record: Option<&SessionRecord>,
        expire: Option<Duration>,
    ) {
        let record = record.and_then(|r| serde_json::to_string(r).ok());
        let _ = self.out.send(Out::KeepSession {
            node,
            session: session.to_owned(),
            record,
            expire_ms: expire.map(|d| d.as_millis() as u64),
        });
    }

    fn renew_sessions(&self, alive: Duration, ttl: Duration) {
        let _ = self.out.send(Out::RenewSessions {
            node: self.node,
            alive_ms: alive.as_millis() as u64,
            ttl_ms: ttl.as_millis() as u64,
        });
    }

    fn leaving(&self) {
        let _ = self.out.send(Out::Leaving { node: self.node });
    }

    fn claim_session(&self, node: u32, session: &str, conn: u64) {
        let mut redis = self.redis.clone();
        let hub = self.hub.clone();
        let session = session.to_owned();
        tokio::spawn(async move {
            let claimed: redis::RedisResult<Vec<String>> = redis::Script::new(CLAIM_SCRIPT)
                .key(alive_key(node))
                .key(sessions_key(node))
                .arg(&session)
                .invoke_async(&mut redis)
                .await;
            let claim = match claimed.as_deref() {
                Ok([word]) if word == "alive" => Claim::NodeAlive,
                Ok([word, text]) if word == "taken" => {
                    match serde_json::from_str::<SessionRecord>(text) {
                        Ok(r) => Claim::Taken(r),
                        Err(e) => {
                            warn!(error = %e, "unreadable session record in Redis");
                            Claim::Gone
                        }
                    }
                }
                Ok(_) => Claim::Gone,
                Err(e) => {
                    // Redis is unreachable: try again at the next heartbeat.
                    warn!(error = %e, "cannot claim a session in Redis");
                    Claim::NodeAlive
                }
            };
            let _ = hub
                .send(Command::SessionClaimed {
                    conn,
                    node,
                    session,
                    claim,
                })
                .await;
        });
    }
}

fn missed_key(user: &UserId) -> String {
    format!("callinvite:missed:{user}")
}

/// The missed calls kept in Redis, by user (read when a node starts).
pub(crate) type MissedSnapshot = Vec<(UserId, Vec<MissedCall>)>;

/// Joins the cluster: takes a node number, reads the missed calls the
/// cluster keeps, subscribes, and starts the tasks that receive
/// ([`receive`]: envelopes go to the hub as commands) and publish
/// ([`write`]).
pub(crate) async fn join(
    config: ClusterConfig,
    hub: mpsc::Sender<Command>,
) -> Result<(Cluster, MissedSnapshot), ClusterError> {
    let err = |source| ClusterError::Redis {
        url: config.redis_url.clone(),
        source,
    };
    let client = redis::Client::open(config.redis_url.as_str()).map_err(err)?;
    // Reconnects by itself when Redis comes back.
    let mut conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .map_err(err)?;
    let n: u64 = redis::cmd("INCR")
        .arg("callinvite:nodes")
        .query_async(&mut conn)
        .await
        .map_err(err)?;
    let node = node_number(n);
    // Missed calls kept by the cluster: read them all once; from now on the
    // nodes tell each other about changes.
    let missed = read_missed(&mut conn).await.map_err(err)?;
    let pubsub = subscribe(&client, node).await.map_err(err)?;
    info!(node, url = %config.redis_url, "joined the cluster");
    tokio::spawn(receive(
        client,
        node,
        config.redis_url.clone(),
        pubsub,
        hub.clone(),
    ));
    let (out, rx) = mpsc::unbounded_channel::<Out>();
    tokio::spawn(write(conn.clone(), rx));
    let cluster = Cluster {
        node,
        config,
        out,
        redis: conn,
        hub,
    };
    Ok((cluster, missed))
}

/// The node number of the `n`th node to join: 1, 2, 3, … (0 is a server
/// without a cluster), wrapping below 8191 so that device ids
/// (node × 2^40 + n) stay below 2^53 and survive JSON libraries that use
/// doubles.
fn node_number(n: u64) -> u32 {
    ((n.saturating_sub(1) % MAX_NODE) + 1) as u32
}

/// Every user's missed calls kept in Redis.
async fn read_missed(
    conn: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<MissedSnapshot> {
    let mut keys: Vec<String> = vec![];
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("callinvite:missed:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut missed = MissedSnapshot::new();
    for key in keys {
        let text: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        let user = key.trim_start_matches("callinvite:missed:");
        if let (Ok(user), Some(Ok(calls))) = (
            UserId::parse(user),
            text.map(|t| serde_json::from_str::<Vec<MissedCall>>(&t)),
        ) {
            missed.push((user, calls));
        }
    }
    Ok(missed)
}

/// Receives for as long as the hub runs; when Redis goes away, subscribes
/// again (with backoff) and has the hub say hello again, since whatever
/// was said meanwhile is lost.
async fn receive(
    client: redis::Client,
    node: u32,
    url: String,
    pubsub: redis::aio::PubSub,
    hub: mpsc::Sender<Command>,
) {
    let mut next = Some(pubsub);
    let mut delay = Duration::from_millis(100);
    loop {
        let mut pubsub = match next.take() {
            Some(p) => p,
            None => match subscribe(&client, node).await {
                Ok(p) => {
                    info!(node, %url, "subscribed to Redis again: rejoining the cluster");
                    delay = Duration::from_millis(100);
                    if hub.send(Command::ClusterRejoined).await.is_err() {
                        return;
                    }
                    p
                }
                Err(e) => {
                    debug!(node, error = %e, "Redis still unreachable");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut messages = pubsub.on_message();
        while let Some(m) = messages.next().await {
            let Ok(text) = m.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Envelope>(&text) {
                Ok(envelope) => {
                    if hub.send(Command::Cluster(envelope)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "ignoring a cluster message this node cannot read")
                }
            }
        }
        if hub.is_closed() {
            return;
        }
        warn!(node, %url, "lost the Redis subscription: other nodes are out of reach until it is back");
    }
}

/// Writes what the hub queues to Redis, in order. Everything queued
/// meanwhile goes out as one pipeline: one round trip for many messages.
async fn write(mut conn: redis::aio::ConnectionManager, mut rx: mpsc::UnboundedReceiver<Out>) {
    while let Some(first) = rx.recv().await {
        let mut pipe = redis::pipe();
        first.add_to(&mut pipe);
        for _ in 0..512 {
            match rx.try_recv() {
                Ok(next) => next.add_to(&mut pipe),
                Err(_) => break,
            }
        }
        let sent: Result<(), redis::RedisError> = pipe.query_async(&mut conn).await;
        if let Err(e) = sent {
            warn!(error = %e, "cannot write to Redis");
        }
    }
}

impl Out {
    /// The Redis commands that do this, added to `pipe` (their replies ignored).
    fn add_to(self, pipe: &mut redis::Pipeline) {
        match self {
            Out::Publish(target, text) => {
                let channel = match target {
                    Target::All => ALL.to_string(),
                    Target::Node(n) => node_channel(n),
                };
                pipe.cmd("PUBLISH").arg(channel).arg(text).ignore();
            }
            Out::StoreMissed { user, calls, .. } if calls.is_empty() => {
                pipe.cmd("DEL").arg(missed_key(&user)).ignore();
            }
            Out::StoreMissed {
                user,
                calls,
                ttl_ms,
            } => {
                pipe.cmd("SET")
                    .arg(missed_key(&user))
                    .arg(calls)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .ignore();
            }
            Out::KeepSession {
                node,
                session,
                record: Some(record),
                expire_ms,
            } => {
                pipe.cmd("HSET")
                    .arg(sessions_key(node))
                    .arg(session)
                    .arg(record)
                    .ignore();
                if let Some(ms) = expire_ms {
                    pipe.cmd("PEXPIRE")
                        .arg(sessions_key(node))
                        .arg(ms.max(1))
                        .ignore();
                }
            }
            Out::KeepSession {
                node,
                session,
                record: None,
                ..
            } => {
                pipe.cmd("HDEL")
                    .arg(sessions_key(node))
                    .arg(session)
                    .ignore();
            }
            Out::RenewSessions {
                node,
                alive_ms,
                ttl_ms,
            } => {
                pipe.cmd("SET")
                    .arg(alive_key(node))
                    .arg(1)
                    .arg("PX")
                    .arg(alive_ms.max(1))
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(sessions_key(node))
                    .arg(ttl_ms.max(1))
                    .ignore();
            }
            Out::Leaving { node } => {
                pipe.cmd("DEL").arg(alive_key(node)).ignore();
            }
        }
    }
}

async fn subscribe(client: &redis::Client, node: u32) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(ALL).await?;
    pubsub.subscribe(node_channel(node)).await?;
    Ok(pubsub)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_numbers_wrap_below_8191() {
        assert_eq!(node_number(1), 1);
        assert_eq!(node_number(2), 2);
        assert_eq!(node_number(8190), 8190);
        assert_eq!(node_number(8191), 1);
        assert_eq!(node_number(0), 1);
        // The largest device id of the largest node stays below 2^53.
        assert!(first_device(8190) + (1 << 40) < 1 << 53);
    }

    /// The commands `out` adds to a pipeline, as Redis gets them.
    fn packed(outs: Vec<Out>) -> String {
        let mut pipe = redis::pipe();
        for out in outs {
            out.add_to(&mut pipe);
        }
        String::from_utf8_lossy(&pipe.get_packed_pipeline()).replace("\r\n", " ")
    }

    #[test]
    fn writes_become_redis_commands() {
        let user = UserId::parse("alice").expect("valid");
        let text = packed(vec![
            Out::Publish(Target::Node(3), "x".into()),
            Out::StoreMissed {
                user: user.clone(),
                calls: String::new(),
                ttl_ms: 5,
            },
            Out::KeepSession {
                node: 2,
                session: "s".into(),
                record: Some("{}".into()),
                expire_ms: Some(0),
            },
            Out::Leaving { node: 2 },
        ]);
        let words: Vec<&str> = text
            .split_whitespace()
            .filter(|w| !w.starts_with(['*', '$']))
            .collect();
        assert_eq!(
            words,
            [
                "PUBLISH",
                "callinvite:node:3",
                "x",
                "DEL",
                "callinvite:missed:alice",
                "HSET",
                "callinvite:sessions:2",
                "s",
                "{}",
                "PEXPIRE",
                "callinvite:sessions:2",
                "1",
                "DEL",
                "callinvite:alive:2",
            ]
        );
    }
}
