//! The cluster on Redis (feature `cluster`): [`join`] takes a node number,
//! subscribes, and starts the tasks that receive from and write to Redis;
//! [`Cluster`] is the [`Bus`] a hub of a clustered node talks through.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::UserId;

use super::{Bus, Claim, ClusterConfig, ClusterError, Envelope, SessionRecord, Target};
use crate::hub::Command;

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

/// The first wait before subscribing again after Redis went away, and the longest.
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// Waits between attempts to subscribe again: from 100 ms, doubling, at
/// most 5 s, without end (no jitter: one node, one Redis).
fn resubscribe_waits() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(RESUBSCRIBE_FIRST)
        .with_max_delay(RESUBSCRIBE_MAX)
        .with_factor(2.0)
        .without_max_times()
        .build()
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
    let mut waits = resubscribe_waits();
    loop {
        let mut pubsub = match next.take() {
            Some(p) => p,
            None => match subscribe(&client, node).await {
                Ok(p) => {
                    info!(node, %url, "subscribed to Redis again: rejoining the cluster");
                    waits = resubscribe_waits();
                    if hub.send(Command::ClusterRejoined).await.is_err() {
                        return;
                    }
                    p
                }
                Err(e) => {
                    debug!(node, error = %e, "Redis still unreachable");
                    let wait = waits.next().unwrap_or(RESUBSCRIBE_MAX);
                    tokio::time::sleep(wait).await;
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
#[cfg(test)]
mod tests {
    use super::super::first_device;
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

    #[test]
    fn resubscribe_waits_double_from_100_ms_to_5_s() {
        let ms: Vec<u128> = resubscribe_waits().take(9).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
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
