//! `callinvite-load`: a benchmark, not a test. It starts `callinvite-server`
//! (and, with `--peerjs`, peerjs-server from npm) on 127.0.0.1, drives
//! invitation cycles between P concurrent caller/callee pairs —
//! send → callee received → accept → caller accepted → hang-up — and the
//! equivalent OFFER → ANSWER relay through peerjs-server, then prints cycles/s,
//! latency percentiles, server CPU and RSS for both, and the ratios. With
//! `--idle N` it also measures the server's memory per idle connection. With
//! `--rate R` the pairs start R cycles per second in all instead of running
//! back to back, and `--rss-every` prints the server's RSS over the run. With
//! `--cluster` it also runs the cycle across two server nodes on a private
//! redis-server (callers on one node, callees on the other).
//! Everything stays on loopback; every loop is bounded in time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use callinvite_client::{Client, Event, LoginOptions};

#[derive(Parser)]
#[command(
    name = "callinvite-load",
    about = "Invitation-cycle benchmark against callinvite-server and peerjs-server"
)]
struct Args {
    /// Concurrent caller/callee pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// How long to drive cycles, per server.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Idle logged-in connections to open for the memory-per-connection figure (0: skip).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Also drive peerjs-server (npm package `peer`, installed into --npm-dir if missing).
    #[arg(long)]
    peerjs: bool,
    /// Where `npm install peer` goes.
    #[arg(long, default_value = "target/loadtest-npm")]
    npm_dir: PathBuf,
    /// Also run the cycle across two nodes on Redis (starts its own redis-server).
    #[arg(long)]
    cluster: bool,
    /// The server binary (default: next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Drive callinvite through the client library (its driver task, state
    /// machines and event stream per client) instead of raw WebSocket
    /// frames. The default, raw frames, is how peerjs-server is driven, so
    /// both rows measure the servers with the same kind of client.
    #[arg(long)]
    client_library: bool,
    /// Hold the `--idle` connections on this many nodes of one cluster on
    /// Redis, each fed by its own worker process: one process may not hold
    /// more file descriptors than its limit (`ulimit -n`), and 100 000
    /// connections need more than one process on each side here.
    #[arg(long, default_value_t = 1)]
    idle_nodes: usize,
    /// (internal) Be an idle-connection worker for the server on this port.
    #[arg(long, hide = true)]
    idle_worker: Option<u16>,
    /// (internal) The worker's user ids start with this.
    #[arg(long, hide = true, default_value = "idle")]
    idle_prefix: String,
    /// Fixed rate: start this many cycles per second in all (spread over the
    /// pairs; a pair whose cycle runs late starts its next one at once).
    /// Without it each pair runs cycles back to back (a closed loop, the
    /// saturated rate). Raw-frame driver only.
    #[arg(long)]
    rate: Option<f64>,
    /// Print the servers' RSS this often during the cycles (for memory over
    /// time, e.g. whether it levels off once ended invitations are forgotten).
    #[arg(long, value_parser = humantime::parse_duration)]
    rss_every: Option<Duration>,
    /// Only the single callinvite-server row (skip --cluster, --peerjs, --idle).
    #[arg(long)]
    only_single: bool,
}

/// `--idle` connections held by `--idle-nodes` nodes of one cluster: a
/// worker process per node opens its share; then the nodes' RSS growth per
/// connection (Redis's growth reported apart).
async fn idle_memory_cluster(args: &Args) {
    let (redis, url) = start_redis().await;
    let mut nodes = vec![];
    for _ in 0..args.idle_nodes {
        nodes.push(start_node(args, Some(&url)).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids: Vec<u32> = nodes.iter().map(|(n, _)| n.child.id()).collect();
    let before: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let redis_before = rss_kib(redis.child.id());
    let share = args.idle.div_ceil(args.idle_nodes);
    let me = std::env::current_exe().expect("own path");
    let mut workers = vec![];
    for (k, (_, port)) in nodes.iter().enumerate() {
        let child = Command::new(&me)
            .args(["--idle-worker", &port.to_string()])
            .args(["--idle", &share.to_string()])
            .args(["--idle-prefix", &format!("idle{k}-")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start an idle worker");
        workers.push(child);
    }
    let mut held = 0usize;
    let mut outs: Vec<std::io::BufReader<std::process::ChildStdout>> = workers
        .iter_mut()
        .filter_map(|w| w.stdout.take().map(std::io::BufReader::new))
        .collect();
    for out in &mut outs {
        held += worker_count(out, "ready ");
    }
    let opened = held;
    // Let every node hear of every other node's devices.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    // How many are still open now (the first ones have been open for minutes).
    let mut held = 0usize;
    for (w, out) in workers.iter_mut().zip(outs.iter_mut()) {
        use std::io::Write;
        if let Some(stdin) = w.stdin.as_mut() {
            let _ = writeln!(stdin, "count");
        }
        held += worker_count(out, "alive ");
    }
    if held != opened {
        println!("({opened} opened, {held} still open when measured)");
    }
    let redis_after = rss_kib(redis.child.id());
    let per = after.saturating_sub(before) as f64 * 1024.0 / held.max(1) as f64;
    let redis_per = redis_after.saturating_sub(redis_before) as f64 * 1024.0 / held.max(1) as f64;
    println!(
        "idle connections: {held} held by {} nodes of one cluster; nodes' RSS {} → {} MiB; {:.2} KiB per idle connection (each node also tracks the others' devices); Redis {} → {} MiB ({:.0} B per connection: session records)",
        nodes.len(),
        before / 1024,
        after / 1024,
        per / 1024.0,
        redis_before / 1024,
        redis_after / 1024,
        redis_per
    );
    for mut w in workers {
        drop(w.stdin.take());
        let _ = w.wait();
    }
    drop(nodes);
    drop(redis);
}

/// The number in a worker's next line `<label><n>` (0 if it said something else).
fn worker_count(out: &mut std::io::BufReader<std::process::ChildStdout>, label: &str) -> usize {
    use std::io::BufRead;
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    line.trim()
        .strip_prefix(label)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn start_redis() -> (Server, String) {
    let redis_port = free_port();
    let redis = Server {
        metrics: None,
        child: Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install -y redis-server)"),
    };
    wait_port(redis_port).await;
    (redis, format!("redis://127.0.0.1:{redis_port}"))
}

/// Latency samples and counts of one run.
#[derive(Default)]
struct Run {
    cycles: u64,
    invite_to_received: Vec<Duration>,
    accept_to_accepted: Vec<Duration>,
    cpu_seconds: f64,
    rss_kib: u64,
    elapsed: Duration,
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// utime+stime of a process, in seconds (Linux /proc).
fn cpu_seconds_all(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(47_123)
}

struct Server {
    child: Child,
    /// The callinvite-server's operations port (`/metrics`), if any.
    metrics: Option<u16>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

fn server_bin(args: &Args) -> PathBuf {
    args.server_bin.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().expect("own path");
        me.with_file_name("callinvite-server")
    })
}

async fn start_callinvite(args: &Args) -> (Server, u16) {
    start_node(args, None).await
}

/// A server process; with `redis`, a node of the cluster on it.
async fn start_node(args: &Args, redis: Option<&str>) -> (Server, u16) {
    let port = free_port();
    let metrics = free_port();
    let mut cmd = Command::new(server_bin(args));
    if let Some(url) = redis {
        cmd.args(["--redis", url]);
    }
    let child = cmd
        .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--data-dir", "-"])
        .args([
            "--messages-per-second",
            "1000000",
            "--logins-per-second",
            "1000000",
        ])
        .args([
            "--max-outgoing-invitations",
            "1000000",
            "--max-devices-per-user",
            "1000000",
        ])
        // Every client comes from 127.0.0.1.
        .args(["--max-connections-per-address", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start callinvite-server (build it: cargo build --release -p callinvite-server)");
    wait_port(port).await;
    let metrics = Some(metrics);
    (Server { child, metrics }, port)
}

/// The callinvite cycle: alice_i calls bob_i, bob accepts at once, alice hangs up, again.
async fn drive_callinvite(
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
    collect(callers, callees, duration, cpu0, pids).await
}

/// The load tool's WebSocket settings. tungstenite zero-fills its read
/// buffer up to `read_buffer_size` before every read: at the default 128 KiB
/// that memset was 39 % of the load tool's CPU (perf), taken from the servers
/// it shares the cores with. 4 KiB holds every frame of these runs.
fn ws_config() -> Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig> {
    Some(
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A callinvite client speaking the wire protocol directly (docs/PROTOCOL.md),
/// as the peerjs driver does: the same frames the client library sends
/// (login, invite, ack, accept, hangup, seen), without its tasks and state.
struct RawClient {
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
struct Pace {
    /// Cycles per second in all; `None`: back to back.
    rate: Option<f64>,
    /// Print the servers' RSS this often.
    rss_every: Option<Duration>,
    /// The servers' operations ports, for their gauges.
    metrics: Vec<u16>,
}

/// `/metrics` of the server whose operations port is `port` ("" if it fails).
async fn fetch_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The value of the metric line `name value` (0 if absent).
fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The invitation cycle over raw frames: alice invites bob with a key as
/// content, bob acks and accepts, alice waits for `accepted`, hangs up, and
/// both wait for `call_ended`.
async fn drive_callinvite_raw(
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
    } = pace;
    // Each pair's share of a fixed rate: one cycle per `period`.
    let period = rate.map(|r| Duration::from_secs_f64(pairs as f64 / r.max(0.001)));
    let mut clients = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let bob =
            RawClient::login(&format!("ws://127.0.0.1:{callee_port}"), &format!("bob{i}")).await;
        let alice = RawClient::login(
            &format!("ws://127.0.0.1:{caller_port}"),
            &format!("alice{i}"),
        )
        .await;
        clients.push((bob, alice));
    }
    // The clock starts once every pair is logged in.
    let start = Instant::now();
    let stop_at = start + duration;
    let cpu0 = cpu_seconds_all(pids);
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
                let invite = json!({"type": "invite", "callee": format!("bob{i}"), "content": key});
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
    let run = collect(callers, callees, duration, cpu0, pids).await;
    if let Some(s) = sampler {
        s.abort();
    }
    run
}

/// peerjs: a_i sends OFFER to b_i, b_i answers with ANSWER at once, again.
async fn drive_peerjs(port: u16, pairs: usize, duration: Duration, pid: u32) -> Run {
    let stop_at = Instant::now() + duration;
    let cpu0 = cpu_seconds(pid);
    let (mut callers, mut callees) = (vec![], vec![]);
    let open = |id: String| async move {
        let url = format!("ws://127.0.0.1:{port}/peerjs?key=peerjs&id={id}&token=t{id}");
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url.as_str(), ws_config(), true, None)
                .await
                .expect("peerjs connect");
        // The server greets with OPEN.
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.as_str().contains("OPEN") {
                    break;
                }
            }
        }
        ws
    };
    for i in 0..pairs {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let mut bob = open(b.clone()).await;
        let mut alice = open(a.clone()).await;
        let a2 = a.clone();
        let received: Arc<Mutex<HashMap<u64, (Instant, Instant)>>> = Default::default();
        let received2 = received.clone();
        callees.push(tokio::spawn(async move {
            while let Some(Ok(m)) = bob.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["type"] == "OFFER" {
                    let seq = v["payload"]["seq"].as_u64().unwrap_or(0);
                    let now = Instant::now();
                    received2.lock().unwrap().insert(seq, (now, Instant::now()));
                    let answer = json!({"type": "ANSWER", "dst": a2, "payload": {"seq": seq}});
                    if bob.send(Message::text(answer.to_string())).await.is_err() {
                        break;
                    }
                }
            }
        }));
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut samples = (vec![], vec![]);
            while Instant::now() < stop_at {
                let seq = n;
                n += 1;
                let sent = Instant::now();
                let offer = json!({"type": "OFFER", "dst": b, "payload": {"seq": seq}});
                if alice.send(Message::text(offer.to_string())).await.is_err() {
                    break;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), alice.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("ANSWER") => {
                            let now = Instant::now();
                            if let Some((r, answered)) = received.lock().unwrap().remove(&seq) {
                                samples.0.push(r.saturating_duration_since(sent));
                                samples.1.push(now.saturating_duration_since(answered));
                            }
                            break;
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => return (n, samples),
                    }
                }
            }
            (n, samples)
        }));
    }
    collect(callers, callees, duration, cpu0, &[pid]).await
}

/// Cycles started by one caller, and its latency samples (invite→received, accept→accepted).
type Samples = (u64, (Vec<Duration>, Vec<Duration>));

/// Waits for the callers (they stop after `duration`), stops the callees, and sums up.
async fn collect(
    callers: Vec<tokio::task::JoinHandle<Samples>>,
    callees: Vec<tokio::task::JoinHandle<()>>,
    duration: Duration,
    cpu0: f64,
    pids: &[u32],
) -> Run {
    let mut run = Run::default();
    for caller in callers {
        // A caller stuck past the run's end plus a generous margin is counted as it stands: nothing.
        if let Ok(Ok((_started, (a, b)))) =
            tokio::time::timeout(duration + Duration::from_secs(15), caller).await
        {
            // Every completed cycle left one invite→received sample.
            run.cycles += a.len() as u64;
            run.invite_to_received.extend(a);
            run.accept_to_accepted.extend(b);
        }
    }
    run.elapsed = duration;
    run.cpu_seconds = cpu_seconds_all(pids) - cpu0;
    run.rss_kib = pids.iter().map(|p| rss_kib(*p)).sum();
    for callee in callees {
        callee.abort();
    }
    run
}

fn print_row(name: &str, run: &mut Run) {
    let rate = run.cycles as f64 / run.elapsed.as_secs_f64();
    let (a50, a99, a999) = (
        pct(&mut run.invite_to_received, 0.5),
        pct(&mut run.invite_to_received, 0.99),
        pct(&mut run.invite_to_received, 0.999),
    );
    let (b50, b99, b999) = (
        pct(&mut run.accept_to_accepted, 0.5),
        pct(&mut run.accept_to_accepted, 0.99),
        pct(&mut run.accept_to_accepted, 0.999),
    );
    println!(
        "| {name} | {rate:.0} | {a50:.2} / {a99:.2} / {a999:.2} | {b50:.2} / {b99:.2} / {b999:.2} | {:.0}% | {} MiB |",
        run.cpu_seconds / run.elapsed.as_secs_f64() * 100.0,
        run.rss_kib / 1024
    );
}

fn ensure_peerjs(dir: &Path) -> PathBuf {
    let script = dir.join("node_modules/peer/dist/bin/peerjs.js");
    if !script.exists() {
        std::fs::create_dir_all(dir).expect("npm dir");
        eprintln!(
            "installing peerjs-server: npm install --prefix {} peer@1",
            dir.display()
        );
        let ok = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .arg("peer@1")
            .status();
        assert!(
            ok.map(|s| s.success()).unwrap_or(false),
            "npm install peer failed"
        );
    }
    script
}

/// Idle connections being held: how many are still open, and the tasks
/// that read them (reading answers the server's pings, so its heartbeat
/// does not drop them; an idle client in the field does the same).
struct Idle {
    alive: Arc<std::sync::atomic::AtomicUsize>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Idle {
    fn alive(&self) -> usize {
        self.alive.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// Opens `n` logged-in connections to `port` and keeps reading them (fewer
/// if the server or this process ran out of something, which it reports).
async fn open_idle(port: u16, n: usize, prefix: &str) -> Idle {
    use std::sync::atomic::Ordering;
    let alive = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::with_capacity(n);
    let url = format!("ws://127.0.0.1:{port}");
    for i in 0..n {
        match tokio_tungstenite::connect_async_with_config(url.as_str(), ws_config(), false).await {
            Ok((mut ws, _)) => {
                let login = json!({"type": "login", "user": format!("{prefix}{i}")});
                let _ = ws.send(Message::text(login.to_string())).await;
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("login_ok") => {}
                    other => {
                        eprintln!("login {i} refused: {other:?}");
                        break;
                    }
                }
                alive.fetch_add(1, Ordering::SeqCst);
                let alive = alive.clone();
                readers.push(tokio::spawn(async move {
                    while let Some(Ok(_)) = ws.next().await {}
                    alive.fetch_sub(1, Ordering::SeqCst);
                }));
            }
            Err(e) => {
                eprintln!("stopped at {i} idle connections: {e}");
                break;
            }
        }
    }
    Idle { alive, readers }
}

async fn idle_memory(port: u16, pid: u32, n: usize) {
    let before = rss_kib(pid);
    let conns = open_idle(port, n, "idle").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = conns.alive();
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / held.max(1) as f64;
    println!(
        "idle connections: {} held; server RSS {} → {} MiB; {:.2} KiB ({:.0} bytes) per idle connection",
        held,
        before / 1024,
        after / 1024,
        per / 1024.0,
        per
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(port) = args.idle_worker {
        // A worker: open the connections, say how many, hold them until stdin closes.
        let conns = open_idle(port, args.idle, &args.idle_prefix).await;
        println!("ready {}", conns.alive());
        // A thread reads stdin: each line asks how many are open; EOF ends.
        let (tx, mut asks) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                if line.is_err() || tx.send(()).is_err() {
                    break;
                }
            }
        });
        while asks.recv().await.is_some() {
            println!("alive {}", conns.alive());
        }
        drop(conns);
        return;
    }
    println!(
        "{} pairs, {:?} per server, on {} cores",
        args.pairs,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "(callinvite driven by {}; peerjs by raw WebSocket frames)",
        if args.client_library {
            "the client library"
        } else {
            "raw WebSocket frames"
        }
    );
    if let Some(rate) = args.rate {
        println!("(fixed rate: {rate} cycles/s offered in all)");
    }
    println!("\n| server | cycles/s | invite→received p50/p99/p999 ms | accept→accepted p50/p99/p999 ms | server CPU | server RSS |\n|---|---|---|---|---|---|");
    let (server, port) = start_callinvite(&args).await;
    let pid = server.child.id();
    let drive = |caller: u16, callee: u16, pids: Vec<u32>, metrics: Vec<u16>| {
        let (pairs, duration, library) = (args.pairs, args.duration, args.client_library);
        let pace = Pace {
            rate: args.rate,
            rss_every: args.rss_every,
            metrics,
        };
        async move {
            if library {
                drive_callinvite(caller, callee, pairs, duration, &pids).await
            } else {
                drive_callinvite_raw(caller, callee, pairs, duration, &pids, pace).await
            }
        }
    };
    let mut ci = drive(port, port, vec![pid], server.metrics.into_iter().collect()).await;
    print_row("callinvite-server", &mut ci);
    if args.only_single {
        return;
    }
    if args.cluster {
        let (redis, url) = start_redis().await;
        let (a, port_a) = start_node(&args, Some(&url)).await;
        let (b, port_b) = start_node(&args, Some(&url)).await;
        // Let the nodes hear of each other.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids = [a.child.id(), b.child.id(), redis.child.id()];
        let metrics = a.metrics.into_iter().chain(b.metrics).collect();
        let mut cl = drive(port_a, port_b, pids.to_vec(), metrics).await;
        print_row("callinvite, 2 nodes + Redis (CPU, RSS: all three)", &mut cl);
        let ratio = cl.cycles as f64 / ci.cycles.max(1) as f64;
        println!("\n2 nodes / 1 node throughput: {ratio:.2}×\n");
        drop((a, b, redis));
    }
    if args.idle > 0 && args.idle_nodes > 1 {
        drop(server);
        idle_memory_cluster(&args).await;
    } else if args.idle > 0 {
        drop(server);
        let (server, port) = start_callinvite(&args).await;
        idle_memory(port, server.child.id(), args.idle).await;
        drop(server);
    }
    if args.peerjs {
        let script = ensure_peerjs(&args.npm_dir);
        let port = free_port();
        let child = Command::new("node")
            .arg(&script)
            .args(["--port", &port.to_string(), "--key", "peerjs"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start peerjs-server (is node installed?)");
        let server = Server {
            child,
            metrics: None,
        };
        wait_port(port).await;
        let mut pj = drive_peerjs(port, args.pairs, args.duration, server.child.id()).await;
        print_row("peerjs-server", &mut pj);
        let ratio = ci.cycles as f64 / pj.cycles.max(1) as f64;
        let p99 = pct(&mut ci.invite_to_received, 0.99) / pct(&mut pj.invite_to_received, 0.99);
        println!("\nthroughput ratio callinvite/peerjs: {ratio:.2}×; invite→received p99 ratio: {p99:.2} (below 1 is better)");
    }
}
