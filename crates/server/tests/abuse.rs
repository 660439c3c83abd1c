//! Attacks on a real server on 127.0.0.1, each bounded in count and time,
//! and what the legitimate user still gets meanwhile:
//!
//! - naming a user in failed logins does not lock them out;
//! - one address holding many idle connections does not starve the others,
//!   and a full server closes new connections at once instead of failing to accept;
//! - the operations port closes slow and idle connections and caps them;
//! - web pages (a WebSocket handshake with `Origin`) are refused;
//! - binary frames count toward the message rate; unknown fields may hold
//!   any JSON number; user ids with a leading or trailing space are refused;
//! - invitations of the largest content that end at once leave no content
//!   behind (only a small tombstone each, for the retention window).
//!
//! Every test prints its figures (run with `--nocapture` to see them).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use callinvite_client::{Client, LoginOptions};
use callinvite_server::metrics::Metrics;
use callinvite_server::{auth, run, CancellationToken, Config};

use common::Raw;

const SECRET: &[u8] = b"abuse-tests-secret-0123456789";

/// A single server node on 127.0.0.1 (whatever `CALLINVITE_TEST_CLUSTER` says).
struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    async fn start(mut config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Arc::new(Metrics::new());
        config.metrics = metrics.clone();
        config.missed.file = None;
        let stop = CancellationToken::new();
        tokio::spawn(run(listener, config, stop.clone()));
        Server {
            addr,
            metrics,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A WebSocket from the loopback address `from` (any of 127.0.0.0/8).
    async fn raw_from(&self, from: &str) -> Raw {
        let tcp = tcp_from(from, self.addr).await;
        let (ws, _) = tokio_tungstenite::client_async(self.url(), MaybeTlsStream::Plain(tcp))
            .await
            .expect("WebSocket handshake");
        Raw { ws }
    }

    /// The value of a metric line (`name{labels} value`), 0 if absent.
    fn metric(&self, name: &str) -> i64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse().expect("an address"), 0))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

fn token(user: &str) -> String {
    auth::mint(SECRET, user, Duration::from_secs(600))
}

/// Median and largest of some durations, in milliseconds.
fn median_max(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(*samples.last().expect("samples")),
    )
}

/// Attack 1: a connection that never logs in sends `login` for alice with a
/// garbage token every 50 ms (reconnecting whenever the server closes it).
/// Before the fix each attempt was charged to alice's user id, and alice's
/// own logins with a valid token got `too_often`. Now failures count against
/// the connection and the address; alice, even from the attacker's own
/// address, logs in every time.
#[tokio::test]
async fn failed_logins_naming_a_user_do_not_lock_them_out() {
    let server = Server::start(Config {
        secret: Some(SECRET.to_vec()),
        ..Config::default()
    })
    .await;
    let url = server.url();
    let attack_for = Duration::from_secs(3);

    let addr = server.addr;
    let attacker = tokio::spawn(async move {
        let started = Instant::now();
        let (mut attempts, mut invalid, mut too_often, mut closed, mut connections) =
            (0u32, 0u32, 0u32, 0u32, 1u32);
        let mut raw = raw_plain(addr).await;
        let mut i = 0u64;
        while started.elapsed() < attack_for {
            i += 1;
            attempts += 1;
            let sent = raw
                .ws
                .send(Message::text(
                    json!({"type": "login", "ref": i, "user": "alice", "token": format!("garbage-{i}")})
                        .to_string(),
                ))
                .await;
            let mut reply = None;
            if sent.is_ok() {
                // The reply, then (past a limit) the close frame.
                while let Ok(Some(Ok(frame))) =
                    tokio::time::timeout(Duration::from_secs(5), raw.ws.next()).await
                {
                    match frame {
                        Message::Text(t) => {
                            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                            reply = Some(v["code"].as_str().unwrap_or_default().to_owned());
                            break;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            }
            match reply.as_deref() {
                Some("invalid_token") => invalid += 1,
                Some("too_often") => too_often += 1,
                Some(other) => panic!("unexpected answer to a bad login: {other}"),
                None => {}
            }
            // Closed by the server after this answer? Then come back on a new connection.
            let gone = match reply {
                None => true,
                Some(_) => matches!(
                    tokio::time::timeout(Duration::from_millis(50), raw.ws.next()).await,
                    Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_)))
                ),
            };
            if gone {
                closed += 1;
                raw = raw_plain(addr).await;
                connections += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        (attempts, invalid, too_often, closed, connections)
    });

    // Meanwhile alice logs in (and out) with her valid token, from the same
    // address as the attacker, every 250 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = vec![];
    let started = Instant::now();
    while started.elapsed() < attack_for - Duration::from_millis(300) {
        let t = Instant::now();
        let (alice, _events) =
            Client::login(LoginOptions::new(&url, "alice").token(token("alice")))
                .await
                .unwrap_or_else(|e| panic!("alice's login under attack failed: {e}"));
        latencies.push(t.elapsed());
        alice.logout().await.expect("logout");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (attempts, invalid, too_often, closed, connections) = attacker.await.unwrap();
    let (median, max) = median_max(&mut latencies);
    println!(
        "attack 1: {attempts} bad logins naming alice in {attack_for:?} on {connections} connections: \
         {invalid} answered invalid_token, {too_often} too_often; the server closed the attacker's connection {closed} times"
    );
    println!(
        "attack 1: alice logged in {}/{} times meanwhile (same address), login latency median {median:.1} ms, max {max:.1} ms",
        latencies.len(),
        latencies.len()
    );
    assert!(attempts >= 20, "the attack ran ({attempts} attempts)");
    assert!(too_often > 0, "the address was limited");
    assert!(closed > 0, "attacking connections were closed");
    assert!(latencies.len() >= 5);
    assert!(max < 2000.0, "alice's logins stayed prompt: {max} ms");
    // From another address nothing is limited either.
    let mut bob = server.raw_from("127.0.0.2").await;
    bob.send(json!({"type": "login", "ref": 1, "user": "bob", "token": token("bob")}))
        .await;
    assert_eq!(bob.recv().await["type"], "login_ok");
}

/// A WebSocket from 127.0.0.1 (the default source).
async fn raw_plain(addr: SocketAddr) -> Raw {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
        .await
        .expect("connect");
    Raw { ws }
}

/// Whether the server closed `tcp` within `wait` (EOF, reset, or an HTTP
/// refusal followed by EOF), and how long it took.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = wait.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    started.elapsed(),
                    String::from_utf8_lossy(&got).into_owned(),
                ))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Attack 2: one address opens more connections than the per-address cap
/// (256 by default) and leaves them idle. Before the fix, ~1 050 of them
/// used up the server's descriptors: new logins timed out and the server
/// logged "accept failed" ten times a second. Now the extra ones are closed
/// at once, and a user from another address logs in as usual.
#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let (old, new) = callinvite_server::raise_fd_limit().expect("raise the fd limit");
    println!("attack 2: this test process's fd limit: {old} -> {new}");
    let cap = Config::default().max_connections_per_address;
    assert_eq!(cap, 256, "the default cap");
    let server = Server::start(Config {
        secret: Some(SECRET.to_vec()),
        // The held connections must outlive the test, not its handshake window.
        handshake_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .await;
    let total = cap + 44;
    let mut held = Vec::with_capacity(total);
    for _ in 0..total {
        held.push(tcp_from("127.0.0.1", server.addr).await);
    }
    // Each connection: closed by the server within 2 s, or still open.
    let mut checks = tokio::task::JoinSet::new();
    for (i, mut tcp) in held.into_iter().enumerate() {
        checks.spawn(async move {
            let closed = closed_within(&mut tcp, Duration::from_secs(2)).await;
            (i, closed, tcp)
        });
    }
    let mut refused = vec![];
    let mut still_open = vec![];
    while let Some(done) = checks.join_next().await {
        let (i, closed, tcp) = done.unwrap();
        match closed {
            Some((after, text)) => refused.push((i, after, text)),
            None => still_open.push(tcp),
        }
    }
    refused.sort_by_key(|r| r.0);
    let mut close_times: Vec<Duration> = refused.iter().map(|r| r.1).collect();
    let (median, max) = median_max(&mut close_times);
    let with_429 = refused
        .iter()
        .filter(|r| r.2.starts_with("HTTP/1.1 429"))
        .count();
    println!(
        "attack 2: {total} idle connections from 127.0.0.1: {} held, {} closed by the server \
         (median {median:.1} ms, max {max:.1} ms after the check began; {with_429} of them with a 429 answer)",
        still_open.len(),
        refused.len()
    );
    assert_eq!(still_open.len(), cap);
    assert_eq!(refused.len(), total - cap);
    assert!(
        refused.iter().all(|r| r.0 >= cap),
        "the newest ones are closed"
    );
    assert_eq!(
        server.metric(r#"callinvite_connections_refused_total{reason="per_address"}"#),
        (total - cap) as i64
    );
    assert_eq!(server.metric("callinvite_tcp_connections"), cap as i64);

    // A user at another address logs in as usual meanwhile.
    let t = Instant::now();
    let mut alice = server.raw_from("127.0.0.2").await;
    alice
        .send(json!({"type": "login", "ref": 1, "user": "alice", "token": token("alice")}))
        .await;
    assert_eq!(alice.recv().await["type"], "login_ok");
    let login = t.elapsed();
    println!(
        "attack 2: alice from 127.0.0.2 connected and logged in in {:.1} ms",
        login.as_secs_f64() * 1000.0
    );
    assert!(login < Duration::from_secs(2));
    // The attacker's address gets nothing more until it lets go.
    let mut extra = tcp_from("127.0.0.1", server.addr).await;
    assert!(closed_within(&mut extra, Duration::from_secs(2))
        .await
        .is_some());
    drop(still_open);
    let mut back = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if server.metric("callinvite_tcp_connections") <= 1 {
            back = Some(server.raw_from("127.0.0.1").await);
            break;
        }
    }
    let mut bob = back.expect("the attacker's connections were let go");
    bob.send(json!({"type": "login", "ref": 1, "user": "bob", "token": token("bob")}))
        .await;
    assert_eq!(bob.recv().await["type"], "login_ok");
}

/// Attack 2, the whole server: with a connection cap (by default the
/// file-descriptor limit less 128), connections beyond it are closed at once
/// with a 503 instead of piling up until accept fails; the gauges on
/// /metrics show how close the server is.
#[tokio::test]
async fn a_full_server_closes_new_connections_at_once() {
    let server = Server::start(Config {
        max_connections: Some(40),
        max_connections_per_address: 0,
        handshake_timeout: Duration::from_secs(60),
        ..Config::default()
    })
    .await;
    let mut held = vec![];
    for _ in 0..40 {
        held.push(tcp_from("127.0.0.1", server.addr).await);
    }
    let mut refused = 0;
    let mut answers = vec![];
    let started = Instant::now();
    for _ in 0..20 {
        let mut tcp = tcp_from("127.0.0.3", server.addr).await;
        if let Some((after, text)) = closed_within(&mut tcp, Duration::from_secs(2)).await {
            refused += 1;
            answers.push(after);
            if !text.is_empty() {
                assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            }
        }
    }
    let (median, max) = median_max(&mut answers);
    println!(
        "full server: 40 held, {refused}/20 more closed at once (median {median:.1} ms, max {max:.1} ms) in {:?}",
        started.elapsed()
    );
    assert_eq!(refused, 20);
    assert_eq!(server.metric("callinvite_tcp_connections"), 40);
    assert_eq!(server.metric("callinvite_max_connections"), 40);
    assert_eq!(
        server.metric(r#"callinvite_connections_refused_total{reason="server_full"}"#),
        20
    );
    let (soft, _) = callinvite_server::guard::fd_limits().expect("an fd limit");
    assert_eq!(server.metric("callinvite_fd_limit") as u64, soft);
    assert!(
        server.metric("callinvite_open_fds") > 80,
        "{}",
        server.metrics.encode()
    );
    // Room again once some go.
    held.truncate(30);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut alice = server.raw_from("127.0.0.2").await;
    alice
        .send(json!({"type": "login", "ref": 1, "user": "alice"}))
        .await;
    assert_eq!(alice.recv().await["type"], "login_ok");
}

/// The operations port on 127.0.0.1 with these limits.
async fn metrics_port(
    limits: callinvite_server::http::Limits,
) -> (SocketAddr, Arc<Metrics>, CancellationToken) {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    tokio::spawn(callinvite_server::http::serve_with(
        http,
        metrics.clone(),
        stop.clone(),
        limits,
    ));
    (addr, metrics, stop)
}

/// A connection that sends one request and reads its answer, then stays idle.
async fn answered_then_idle(addr: SocketAddr) -> TcpStream {
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    kept
}

fn assert_about(what: &str, after: Duration, secs: u64) {
    assert!(
        after >= Duration::from_millis(secs * 1000 - 100)
            && after < Duration::from_millis(secs * 1000 + 1500),
        "{what}: closed after {after:?}, expected about {secs} s"
    );
}

/// Attacks 3 and 4: the operations port used to keep every connection open
/// as long as the client liked. Now a request head must arrive within the
/// header timeout (which also ends a kept-alive connection that asks nothing
/// more), a connection with no traffic is closed after the idle timeout, a
/// full port answers 503 at once, and /healthz answers afterwards.
#[tokio::test]
async fn the_metrics_port_closes_slow_and_idle_connections_and_caps_them() {
    let wait = Duration::from_secs(5);
    let (addr, metrics, stop) = metrics_port(callinvite_server::http::Limits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        max_connections: 4,
    })
    .await;

    // A head trickled a byte every 200 ms (slowloris): never idle, never done.
    let (mut slow_rx, mut slow_tx) = TcpStream::connect(addr).await.unwrap().into_split();
    let trickle = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n"
            .iter()
            .cycle()
        {
            if slow_tx.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let cut = loop {
        match tokio::time::timeout(wait, slow_rx.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("a trickled head is never cut off"),
        }
    };
    trickle.abort();
    // Connected, then nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (silent_after, _) = closed_within(&mut silent, wait)
        .await
        .expect("a silent connection is closed");
    // A kept-alive connection idle after its answer.
    let mut kept = answered_then_idle(addr).await;
    let (kept_after, _) = closed_within(&mut kept, wait)
        .await
        .expect("an idle kept-alive connection is closed");
    // A body that stalls after its head: answered, then closed.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    let (stalled_after, answer) = closed_within(&mut stalled, wait)
        .await
        .expect("a stalled body is cut off");
    println!(
        "metrics port (header timeout 1 s): trickled head closed after {cut:?}, silent connection after {silent_after:?}, \
         idle kept-alive after {kept_after:?}, stalled body answered ({:?}) and closed after {stalled_after:?}",
        answer.lines().next().unwrap_or_default()
    );
    assert_about("trickled head", cut, 1);
    assert_about("silent", silent_after, 1);
    assert_about("kept alive", kept_after, 1);
    assert!(stalled_after < Duration::from_secs(2), "{stalled_after:?}");

    // Four connections fill the port; a fifth is answered 503 at once.
    let mut hogs = vec![];
    for _ in 0..4 {
        hogs.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let (extra_after, text) = closed_within(&mut extra, Duration::from_secs(1))
        .await
        .expect("a fifth connection is refused at once");
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    // The hogs are closed by the header timeout, and /healthz answers again.
    let started = Instant::now();
    let healthy = loop {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_string(&mut text)).await;
        if text.starts_with("HTTP/1.1 200") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no /healthz: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let refused = metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"callinvite_connections_refused_total{reason="metrics_port_full"} "#)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "metrics port: with 4 of 4 connections held, a fifth was refused (503) after {extra_after:?}; \
         /healthz answered {healthy:?} later; refused: {refused}"
    );
    assert!(refused.parse::<u32>().unwrap_or(0) >= 1);
    stop.cancel();

    // The idle timeout on its own (a header timeout too long to matter).
    let (addr, _metrics, stop) = metrics_port(callinvite_server::http::Limits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(1),
        max_connections: 4,
    })
    .await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (silent_after, _) = closed_within(&mut silent, wait)
        .await
        .expect("a silent connection is closed");
    let mut kept = answered_then_idle(addr).await;
    let (kept_after, _) = closed_within(&mut kept, wait)
        .await
        .expect("an idle kept-alive connection is closed");
    println!(
        "metrics port (idle timeout 1 s): silent connection closed after {silent_after:?}, idle kept-alive after {kept_after:?}"
    );
    assert_about("silent (idle)", silent_after, 1);
    assert_about("kept alive (idle)", kept_after, 1);
    stop.cancel();
}

/// The HTTP answer to a hand-made WebSocket handshake, with an `Origin` or without.
async fn handshake(addr: SocketAddr, origin: Option<&str>) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    tcp.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                // A 101 keeps the connection open: its head is all there is to read.
                if got.starts_with(b"HTTP/1.1 101") && got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Attack 5: a web page in the user's browser opens a WebSocket to the local
/// server (browsers send `Origin`). It is refused with 403; native clients,
/// which send no `Origin`, get in; an allowed origin gets in.
#[tokio::test]
async fn web_pages_are_refused_unless_their_origin_is_allowed() {
    let server = Server::start(Config::default()).await;
    let evil = handshake(server.addr, Some("https://evil.example")).await;
    println!(
        "origin: a handshake from https://evil.example got: {:?}",
        evil.lines().next().unwrap_or_default()
    );
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(
        evil.contains("does not accept connections from web pages"),
        "{evil}"
    );
    let native = handshake(server.addr, None).await;
    assert!(native.starts_with("HTTP/1.1 101"), "{native}");
    assert_eq!(
        server.metric(r#"callinvite_connections_refused_total{reason="origin"}"#),
        1
    );
    // The real client logs in as usual.
    let (client, _events) = Client::login(LoginOptions::new(server.url(), "alice"))
        .await
        .expect("a native client is not a web page");
    client.logout().await.unwrap();

    let server = Server::start(Config {
        allowed_origins: vec!["https://app.example.org".into()],
        ..Config::default()
    })
    .await;
    for (origin, ok) in [
        ("https://app.example.org", true),
        ("HTTPS://APP.example.org/", true),
        ("https://app.example.org:8443", false),
        ("https://evil.example", false),
        ("null", false),
    ] {
        let answer = handshake(server.addr, Some(origin)).await;
        let status = answer.lines().next().unwrap_or_default().to_owned();
        assert_eq!(status.contains(" 101 "), ok, "{origin}: {status}");
        assert_eq!(status.contains(" 403 "), !ok, "{origin}: {status}");
    }
}

/// What a WebSocket client sends in its handshake, seen by a listener that
/// only records it.
async fn recorded_handshake(connect: impl FnOnce(String) -> tokio::task::JoinHandle<()>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let client = connect(url);
    let (mut tcp, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client hung up mid-request");
        got.extend_from_slice(&buf[..n]);
    }
    drop(tcp);
    client.abort();
    String::from_utf8_lossy(&got).into_owned()
}

/// The default policy relies on native clients sending no `Origin`: check
/// that tokio-tungstenite's client (which our client library and CLI use)
/// sends none, and neither does `Client::login`.
#[tokio::test]
async fn native_clients_send_no_origin() {
    let plain = recorded_handshake(|url| {
        tokio::spawn(async move {
            let _ = tokio_tungstenite::connect_async(url).await;
        })
    })
    .await;
    let ours = recorded_handshake(|url| {
        tokio::spawn(async move {
            let mut options = LoginOptions::new(url, "alice");
            options.login_timeout = Duration::from_secs(5);
            let _ = Client::login(options).await;
        })
    })
    .await;
    for request in [&plain, &ours] {
        assert!(request.starts_with("GET / HTTP/1.1\r\n"), "{request}");
        assert!(
            !request
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("origin:")),
            "{request}"
        );
    }
    println!(
        "origin: the client library's handshake headers: {:?}",
        ours.lines()
            .skip(1)
            .filter_map(|l| l.split(':').next())
            .filter(|h| !h.is_empty())
            .collect::<Vec<_>>()
    );
}

/// Attack 6a: binary frames used to skip the per-connection message rate
/// (each got its error, without limit). They now count like text frames.
#[tokio::test]
async fn binary_frames_count_toward_the_message_rate() {
    let server = Server::start(Config {
        messages_per_second: 5,
        ..Config::default()
    })
    .await;
    let mut raw = server.raw_from("127.0.0.1").await;
    raw.send(json!({"type": "login", "ref": 0, "user": "mallory"}))
        .await;
    assert_eq!(raw.recv().await["type"], "login_ok");
    for _ in 0..30 {
        raw.ws.send(Message::binary(vec![0u8; 16])).await.unwrap();
    }
    let (mut binary, mut limited) = (0, 0);
    for _ in 0..30 {
        match raw.recv().await["code"].as_str() {
            Some("binary_not_supported") => binary += 1,
            Some("rate_limited") => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    println!("binary flood: 30 binary frames at 5 messages/s: {binary} answered binary_not_supported, {limited} rate_limited");
    assert!(limited >= 20, "{limited} rate limited");
    // The connection goes on once the rate allows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    raw.send(json!({"type": "query_presence", "ref": 7, "users": ["bob"]}))
        .await;
    assert_eq!(raw.recv_type("presence").await["ref"], 7);
}

/// 6b: an unknown field holding a number JSON allows but an f64 cannot hold
/// (`1e400`) used to reject the whole message; it is now ignored like any
/// unknown field. In a known field it is still refused.
#[tokio::test]
async fn unknown_fields_may_hold_huge_numbers() {
    let server = Server::start(Config::default()).await;
    let mut raw = server.raw_from("127.0.0.1").await;
    raw.send_text(r#"{"type":"login","user":"a","x":1e400}"#)
        .await;
    assert_eq!(raw.recv().await["type"], "login_ok");
    raw.send_text(r#"{"type":"query_presence","ref":2,"users":["b"],"later":{"n":-1E999}}"#)
        .await;
    assert_eq!(raw.recv_type("presence").await["ref"], 2);
    raw.send_text(r#"{"type":"invite","ref":3,"callee":1e400}"#)
        .await;
    let e = raw.recv().await;
    assert_eq!(e["code"], "bad_message", "{e}");
    assert_eq!(e["ref"], 3, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("number out of range"),
        "{e}"
    );
}

/// 6c: user ids with a leading or trailing space (or other white space) are
/// refused with `invalid_argument`, saying which rule: `"alice "` cannot pass
/// for `"alice"`.
#[tokio::test]
async fn user_ids_with_surrounding_white_space_are_refused() {
    let server = Server::start(Config::default()).await;
    let mut raw = server.raw_from("127.0.0.1").await;
    for (user, says) in [
        ("alice ", "user id: user id must not end with a space"),
        (" alice", "user id: user id must not start with a space"),
        ("alice\t", "user id: user id contains '\\t'"),
        ("\nalice", "user id: user id contains '\\n'"),
    ] {
        raw.send(json!({"type": "login", "ref": 1, "user": user}))
            .await;
        let e = raw.recv().await;
        assert_eq!(e["code"], "invalid_argument", "{user:?}: {e}");
        assert!(
            e["message"].as_str().unwrap().starts_with(says),
            "{user:?}: {e}"
        );
    }
    raw.send(json!({"type": "login", "ref": 2, "user": "alice smith"}))
        .await;
    assert_eq!(raw.recv().await["type"], "login_ok");
    raw.send(json!({"type": "invite", "ref": 3, "callee": "bob "}))
        .await;
    let e = raw.recv().await;
    assert_eq!(e["code"], "invalid_argument");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("callee: user id must not end with a space"),
        "{e}"
    );
}

/// This process's resident memory, in KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One invitation from `caller` to `callee` with `content`, refused at once;
/// the callee acknowledges what it read (`seen`), as clients do. Returns its id.
async fn invite_and_refuse(caller: &mut Raw, callee: &mut Raw, req: u64, content: &str) -> String {
    caller
        .send(json!({"type": "invite", "ref": req, "callee": "bob", "content": content}))
        .await;
    let inv = callee.recv_type("invitation").await;
    let id = inv["invitation_id"].as_str().expect("an id").to_owned();
    callee
        .send(json!({"type": "refuse", "ref": req, "invitation_id": id}))
        .await;
    callee
        .send(json!({"type": "seen", "seq": inv["seq"]}))
        .await;
    caller.recv_type("refused").await;
    id
}

/// Attack 7: ended invitations used to be kept whole for the 60 s retention
/// window, content and all, so a connection sending 8 KiB invitations that
/// end at once held about 8 KiB more server memory per invitation for a
/// minute (≈29 MB per flooding connection at 60 messages/s). Now only a
/// tombstone is kept: who called whom from which device and how it ended,
/// ~80 bytes. A late answer still gets its precise error from it.
#[tokio::test]
async fn ended_invitations_keep_no_content() {
    const FLOOD: u64 = 3000;
    let server = Server::start(Config {
        messages_per_second: 1_000_000,
        ..Config::default()
    })
    .await;
    let mut mallory = server.raw_from("127.0.0.1").await;
    mallory
        .send(json!({"type": "login", "ref": 0, "user": "mallory"}))
        .await;
    assert_eq!(mallory.recv().await["type"], "login_ok");
    let mut bob = server.raw_from("127.0.0.1").await;
    bob.send(json!({"type": "login", "ref": 0, "user": "bob"}))
        .await;
    assert_eq!(bob.recv().await["type"], "login_ok");
    let content = "x".repeat(callinvite_protocol::limits::MAX_CONTENT_BYTES);
    // Warm up (allocator, buffers) before the first figure.
    let first = invite_and_refuse(&mut mallory, &mut bob, 1, &content).await;
    for i in 0..50 {
        invite_and_refuse(&mut mallory, &mut bob, 2 + i, &content).await;
    }
    let rss_before = rss_kib();
    let kept_before = server.metric("callinvite_ended_invitations");
    for i in 0..FLOOD {
        invite_and_refuse(&mut mallory, &mut bob, 100 + i, &content).await;
    }
    let rss_after = rss_kib();
    let kept = server.metric("callinvite_ended_invitations");
    let bytes = server.metric("callinvite_ended_invitations_bytes");
    let grew_kib = rss_after.saturating_sub(rss_before);
    println!(
        "{FLOOD} invitations of 8 KiB, each refused: {kept} ended ones kept in {bytes} bytes ({} per invitation); RSS {rss_before} → {rss_after} KiB (+{grew_kib} KiB, {:.0} bytes per invitation)",
        bytes / kept.max(1),
        grew_kib as f64 * 1024.0 / FLOOD as f64
    );
    assert_eq!(
        kept - kept_before,
        FLOOD as i64,
        "every ended one is remembered"
    );
    assert_eq!(server.metric("callinvite_invitations_open"), 0);
    assert!(
        bytes / kept <= 160,
        "{} bytes per ended invitation: no content may be kept",
        bytes / kept
    );
    // 3 000 × 8 KiB is 24 MiB of content; kept, the RSS would grow by that.
    assert!(
        grew_kib < 8 * 1024,
        "RSS grew by {grew_kib} KiB over {FLOOD} ended invitations of 8 KiB"
    );
    // A late answer to the first one still gets its precise error.
    bob.send(json!({"type": "accept", "ref": 9999, "invitation_id": first}))
        .await;
    let late = bob.recv_type("error").await;
    assert_eq!(late["code"], "already_refused", "{late}");
    assert_eq!(late["ref"], 9999, "{late}");
    mallory
        .send(json!({"type": "cancel", "ref": 9999, "invitation_id": first}))
        .await;
    assert_eq!(mallory.recv_type("error").await["code"], "already_refused");
}

/// Past the retention window an ended invitation is forgotten — its late
/// answers get `not_found` — and so is its memory.
#[tokio::test]
async fn ended_invitations_are_forgotten_after_the_window() {
    let mut config = Config::default();
    config.timeouts.retention = Duration::from_millis(300);
    let server = Server::start(config).await;
    let mut alice = server.raw_from("127.0.0.1").await;
    alice
        .send(json!({"type": "login", "ref": 0, "user": "alice"}))
        .await;
    assert_eq!(alice.recv().await["type"], "login_ok");
    let mut bob = server.raw_from("127.0.0.1").await;
    bob.send(json!({"type": "login", "ref": 0, "user": "bob"}))
        .await;
    assert_eq!(bob.recv().await["type"], "login_ok");
    let id = invite_and_refuse(&mut alice, &mut bob, 1, "hi").await;
    assert_eq!(server.metric("callinvite_ended_invitations"), 1);
    // Freed by the hub's own timer, without any other request.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("callinvite_ended_invitations") != 0 {
        assert!(Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.metric("callinvite_ended_invitations_bytes"), 0);
    bob.send(json!({"type": "accept", "ref": 2, "invitation_id": id}))
        .await;
    let late = bob.recv_type("error").await;
    assert_eq!(late["code"], "not_found", "{late}");
    assert_eq!(
        late["message"],
        format!("no invitation {id} for you"),
        "{late}"
    );
}
