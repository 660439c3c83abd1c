//! The callinvite cycle drivers: raw WebSocket frames (the default) and the
//! client library.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use callinvite_client::{Client, Event, LoginOptions};

use crate::measure::{
    collect, cpu_seconds_all, fetch_metrics, metric, own_cpu_seconds, rss_kib, Run,
};
use crate::ws::{ws_config, Ws};

/// The callinvite cycle: alice_i calls bob_i, bob accepts at once, alice hangs up, again.
pub(crate) async fn drive_callinvite(
    caller_port: u16,
    callee_port: u16,
    pairs: usize,
    duration: Duration,
    pids: &[u32],
) -> Run {
    let url = format!("ws://127.0.0.1:{caller_port}");
    let callee_url = format!("ws://127.0.0.1:{callee_port}");
    // Times keyed by the invitation's content ("<pair>-<n>").
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let received: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let accepted_at: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let stop_at = Instant::now() + duration;
    let cpu0 = cpu_seconds_all(pids);
    let gen0 = own_cpu_seconds();
    let (mut callers, mut callees) = (vec![], vec![]);
    for i in 0..pairs {
        let (bob, mut bob_events) =
            Client::login(LoginOptions::new(&callee_url, format!("bob{i}")))
                .await
                .expect("bob login");
        let (alice, mut alice_events) = Client::login(LoginOptions::new(&url, format!("alice{i}")))
            .await
            .expect("alice login");
        let (received2, accepted2) = (received.clone(), accepted_at.clone());
        callees.push(tokio::spawn(async move {
            while let Some(e) = bob_events.next().await {
                if let Event::RemoteInvitationReceived { invitation } = e {
                    let now = Instant::now();
                    received2
                        .lock()
                        .unwrap()
                        .insert(invitation.content.clone(), now);
                    accepted2
                        .lock()
                        .unwrap()
                        .insert(invitation.content.clone(), Instant::now());
                    let _ = bob
                        .accept_remote_invitation(&invitation.invitation_id, "")
                        .await;
                }
            }
        }));
        let (sent2, received3, accepted3) = (sent.clone(), received.clone(), accepted_at.clone());
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut samples = (vec![], vec![]);
            while Instant::now() < stop_at {
                let key = format!("{i}-{n}");
                n += 1;
                let inv = alice
                    .create_local_invitation(&format!("bob{i}"))
                    .expect("callee")
                    .with_content(key.clone());
                sent2.lock().unwrap().insert(key.clone(), Instant::now());
                let Ok(id) = alice.send_local_invitation(&inv).await else {
                    break;
                };
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), alice_events.next()).await {
                        Ok(Some(Event::LocalInvitationAccepted { .. })) => {
                            let now = Instant::now();
                            if let (Some(s), Some(r)) = (
                                sent2.lock().unwrap().remove(&key),
                                received3.lock().unwrap().remove(&key),
                            ) {
                                samples.0.push(r.saturating_duration_since(s));
                            }
                            if let Some(a) = accepted3.lock().unwrap().remove(&key) {
                                samples.1.push(now.saturating_duration_since(a));
                            }
                            break;
                        }
                        Ok(Some(_)) => {}
                        _ => return (n, samples),
                    }
                }
                let _ = alice.hang_up(&id).await;
                // Wait for our call_ended so the next cycle starts clean.
                while let Ok(Some(e)) =
                    tokio::time::timeout(Duration::from_secs(10), alice_events.next()).await
                {
                    if matches!(e, Event::CallEnded { .. }) {
                        break;
                    }
                }
            }
            (n, samples)
        }));
    }
    collect(callers, callees, duration, cpu0, gen0, pids).await
}

/// A callinvite client speaking the wire protocol directly (docs/PROTOCOL.md),
/// as the peerjs driver does: the same frames the client library sends
/// (login, invite, ack, accept, hangup, seen), without its tasks and state.
pub(crate) struct RawClient {
    ws: Ws,
    next_ref: u64,
    /// Highest `seq` read, and the last one acknowledged with `seen`.
    seq: u64,
    seen: u64,
}

impl RawClient {
    async fn login(url: &str, user: &str) -> RawClient {
        // No Nagle delay (as the client library and the peerjs driver).
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, ws_config(), true, None)
                .await
                .expect("callinvite connect");
        let mut c = RawClient {
            ws,
            next_ref: 1,
            seq: 0,
            seen: 0,
        };
        c.send(json!({"type": "login", "ref": 0, "user": user}))
            .await;
        while c.recv().await["type"] != "login_ok" {}
        c
    }

    async fn send(&mut self, v: Value) -> bool {
        self.ws.send(Message::text(v.to_string())).await.is_ok()
    }

    async fn request(&mut self, mut v: Value) -> bool {
        v["ref"] = json!(self.next_ref);
        self.next_ref += 1;
        self.send(v).await
    }

    /// The next server message (Null when the connection ends); acknowledges
    /// every 32 messages with `seen`, as the client library does.
    async fn recv(&mut self) -> Value {
        while let Some(Ok(m)) = self.ws.next().await {
            let Message::Text(t) = m else { continue };
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            if let Some(seq) = v["seq"].as_u64() {
                self.seq = seq;
                if self.seq >= self.seen + 32 {
                    self.seen = self.seq;
                    let seen = json!({"type": "seen", "seq": self.seq});
                    self.send(seen).await;
                }
            }
            return v;
        }
        Value::Null
    }
}

/// How a raw-frame run is paced and watched.
#[derive(Clone, Default)]
pub(crate) struct Pace {
    /// Cycles per second in all; `None`: back to back.
    pub(crate) rate: Option<f64>,
    /// Print the servers' RSS this often.
    pub(crate) rss_every: Option<Duration>,
    /// The servers' operations ports, for their gauges.
    pub(crate) metrics: Vec<u16>,
    /// Prefix of the user ids, so that runs on one server do not share users.
    pub(crate) users: String,
}

/// The invitation cycle over raw frames: alice invites bob with a key as
/// content, bob acks and accepts, alice waits for `accepted`, hangs up, and
/// both wait for `call_ended`.
pub(crate) async fn drive_callinvite_raw(
    caller_port: u16,
    callee_port: u16,
    pairs: usize,
    duration: Duration,
    pids: &[u32],
    pace: Pace,
) -> Run {
    let Pace {
        rate,
        rss_every,
        metrics,
        users,
    } = pace;
    // Each pair's share of a fixed rate: one cycle per `period`.
    let period = rate.map(|r| Duration::from_secs_f64(pairs as f64 / r.max(0.001)));
    let mut clients = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let bob = RawClient::login(
            &format!("ws://127.0.0.1:{callee_port}"),
            &format!("{users}bob{i}"),
        )
        .await;
        let alice = RawClient::login(
            &format!("ws://127.0.0.1:{caller_port}"),
            &format!("{users}alice{i}"),
        )
        .await;
        clients.push((bob, alice));
    }
    // The clock starts once every pair is logged in.
    let start = Instant::now();
    let stop_at = start + duration;
    let cpu0 = cpu_seconds_all(pids);
    let gen0 = own_cpu_seconds();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = rss_every.map(|every| {
        let (pids, done, metrics) = (pids.to_vec(), done.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(start) + every, every);
            loop {
                let t = tick.tick().await.into_std();
                if t > stop_at {
                    break;
                }
                let rss: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
                // What the servers say they keep of ended invitations (gauges
                // of servers that have them).
                let (mut kept, mut bytes) = (0i64, 0i64);
                for port in &metrics {
                    let text = fetch_metrics(*port).await;
                    kept += metric(&text, "callinvite_ended_invitations");
                    bytes += metric(&text, "callinvite_ended_invitations_bytes");
                }
                println!(
                    "  t={:>4.0} s  server RSS {:>5} MiB  cycles so far {:>7}  ended invitations kept {kept} in {:.1} MiB",
                    t.saturating_duration_since(start).as_secs_f64(),
                    rss / 1024,
                    done.load(std::sync::atomic::Ordering::Relaxed),
                    bytes as f64 / (1024.0 * 1024.0)
                );
            }
        })
    });
    let (mut callers, mut callees) = (vec![], vec![]);
    for (i, (mut bob, mut alice)) in clients.into_iter().enumerate() {
        // When bob got each invitation, and when he accepted it, by content.
        let received: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Default::default();
        let received2 = received.clone();
        callees.push(tokio::spawn(async move {
            loop {
                let v = bob.recv().await;
                match v["type"].as_str() {
                    None => break,
                    Some("invitation") => {
                        let now = Instant::now();
                        let id = v["invitation_id"].clone();
                        let ack = json!({"type": "ack", "invitation_id": id, "of": "invitation"});
                        let key = v["content"].as_str().unwrap_or("").to_owned();
                        received2.lock().unwrap().insert(key, (now, Instant::now()));
                        if !bob.send(ack).await
                            || !bob
                                .request(json!({"type": "accept", "invitation_id": id}))
                                .await
                        {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }));
        let done = done.clone();
        let callee = format!("{users}bob{i}");
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut samples = (vec![], vec![]);
            // At a fixed rate the pairs start spread over one period.
            let mut next =
                start + period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / pairs as f64));
            while Instant::now() < stop_at {
                if let Some(p) = period {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
                    // Late (the last cycle took longer than a period): no catching up,
                    // so the achieved rate is what the server kept up with.
                    next = (next + p).max(Instant::now());
                    if Instant::now() >= stop_at {
                        break;
                    }
                }
                let key = format!("{i}-{n}");
                n += 1;
                let sent = Instant::now();
                let invite = json!({"type": "invite", "callee": &callee, "content": key});
                if !alice.request(invite).await {
                    break;
                }
                let mut id = Value::Null;
                loop {
                    let v = match tokio::time::timeout(Duration::from_secs(10), alice.recv()).await
                    {
                        Ok(v) if !v.is_null() => v,
                        _ => return (n, samples),
                    };
                    match v["type"].as_str() {
                        Some("invite_ok") => id = v["invitation_id"].clone(),
                        Some("accepted") => {
                            let now = Instant::now();
                            if let Some((r, answered)) = received.lock().unwrap().remove(&key) {
                                samples.0.push(r.saturating_duration_since(sent));
                                samples.1.push(now.saturating_duration_since(answered));
                            }
                            break;
                        }
                        Some("error" | "failed" | "refused") => return (n, samples),
                        _ => {}
                    }
                }
                if !alice
                    .request(json!({"type": "hangup", "invitation_id": id}))
                    .await
                {
                    break;
                }
                // Wait for our call_ended so the next cycle starts clean.
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), alice.recv()).await {
                        Ok(v) if v["type"] == "call_ended" => break,
                        Ok(v) if !v.is_null() => {}
                        _ => return (n, samples),
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (n, samples)
        }));
    }
    let run = collect(callers, callees, duration, cpu0, gen0, pids).await;
    if let Some(s) = sampler {
        s.abort();
    }
    run
}
