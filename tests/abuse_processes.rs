//! The real `callinvite-server` process under file-descriptor pressure, on
//! 127.0.0.1: it raises its own soft limit at start, closes connections
//! beyond its cap at once (so it never runs out of descriptors and never
//! spins on failing accepts), and, when it does run out (no cap), backs
//! off on both its ports instead of spinning. Every test is bounded in
//! connections (≤ 150) and time (a few seconds).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use callinvite_e2e::{binary, cli, start_server};

/// The server, started by `sh` with a file-descriptor limit, its log in a file.
struct Server {
    child: Child,
    log: PathBuf,
    ws: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Server {
    /// `ulimit` is the shell's ulimit arguments (e.g. `-Sn 256`).
    fn start(ulimit: &str, extra: &[&str]) -> Server {
        let log = std::env::temp_dir().join(format!(
            "callinvite-abuse-{}-{}.log",
            std::process::id(),
            extra.len() * 1000 + ulimit.len() + rand_suffix()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
            .arg(binary("callinvite-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--data-dir",
                "-",
                "--log",
                "info",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn the server");
        let mut server = Server {
            child,
            log,
            ws: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
        };
        server.ws = server.addr_in("listening");
        server.metrics = server.addr_in("serving /healthz and /metrics");
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `addr=` of the first log line containing `needle`.
    fn addr_in(&self, needle: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(addr) = log
                .lines()
                .filter(|l| l.contains(needle))
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            {
                return addr.parse().expect("an address");
            }
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time the process has used (user + system), in clock ticks (1/100 s).
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); `after` starts at field 3.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// The process's "Max open files" (soft, hard).
    fn fd_limits(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut words = line["Max open files".len()..].split_whitespace();
        (
            words.next().unwrap().to_owned(),
            words.next().unwrap().to_owned(),
        )
    }

    /// `GET path` on the operations port: (status line, body), or None if no answer in `wait`.
    fn get(&self, path: &str, wait: Duration) -> Option<(String, String)> {
        let mut tcp = TcpStream::connect(self.metrics).ok()?;
        tcp.set_read_timeout(Some(wait)).unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_owned(), body.to_owned()))
    }

    fn metric(&self, name: &str) -> i64 {
        let (_, body) = self
            .get("/metrics", Duration::from_secs(5))
            .expect("/metrics answers");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

fn rand_suffix() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
}

/// Opens `n` idle TCP connections to `addr`; after a moment, sorts them into
/// those the server closed (EOF, reset or an HTTP refusal) and those it holds.
fn flood(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, Vec<String>) {
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let (mut held, mut refused) = (vec![], vec![]);
    for mut tcp in conns {
        tcp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 256];
        match tcp.read(&mut buf) {
            Ok(n) => refused.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                held.push(tcp)
            }
            Err(e) => refused.push(format!("({e})")),
        }
    }
    (held, refused)
}

/// main.rs raises the soft RLIMIT_NOFILE to the hard limit before serving.
#[test]
fn the_server_raises_its_soft_file_limit_to_the_hard_one() {
    let server = Server::start("-Sn 256", &[]);
    let (soft, hard) = server.fd_limits();
    println!("fd limit: started with soft 256 and hard {hard}; the server now has soft {soft}");
    assert_eq!(soft, hard);
    assert!(server.log().contains("raised the file-descriptor limit"));
    if let Ok(hard) = hard.parse::<i64>() {
        assert_eq!(server.metric("callinvite_fd_limit"), hard);
    }
}

/// Attack 2 on the real process: with only 200 descriptors, 150 idle
/// connections from one address used to leave the server unable to accept
/// (and logging "accept failed" ten times a second). Now it holds 72 (200
/// less its reserve of 128), closes the rest at once with a 503, says how full
/// it is on /metrics, never fails an accept, and serves again as soon as room is made.
#[test]
fn with_few_descriptors_the_server_sheds_connections_instead_of_failing_to_accept() {
    let server = Server::start("-n 200", &["--handshake-timeout", "60s"]);
    let before = server.cpu_ticks();
    let started = Instant::now();
    let (held, refused) = flood(server.ws, 150);
    let with_503 = refused
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .count();
    thread::sleep(Duration::from_millis(1000));
    let cpu = server.cpu_ticks() - before;
    let health = server.get("/healthz", Duration::from_secs(2));
    println!(
        "fd pressure: fd limit 200, 150 connections from 127.0.0.1: {} held, {} closed at once ({with_503} with a 503); \
         server CPU {cpu} ticks (1/100 s) in {:?}; /healthz meanwhile: {:?}",
        held.len(),
        refused.len(),
        started.elapsed(),
        health.as_ref().map(|h| &h.0)
    );
    assert_eq!(held.len(), 72);
    assert_eq!(refused.len(), 78);
    assert!(health.is_some_and(|h| h.0.contains("200")));
    assert_eq!(server.metric("callinvite_fd_limit"), 200);
    assert_eq!(server.metric("callinvite_max_connections"), 72);
    assert_eq!(server.metric("callinvite_tcp_connections"), 72);
    assert_eq!(
        server.metric(r#"callinvite_connections_refused_total{reason="server_full"}"#),
        78
    );
    let open_fds = server.metric("callinvite_open_fds");
    assert!((72..200).contains(&open_fds), "{open_fds}");
    let log = server.log();
    assert_eq!(log.matches("accept failed").count(), 0, "{log}");
    assert!(log.contains("connection cap reached"), "{log}");
    assert!(log.contains("open connections near the cap"), "{log}");
    assert!(cpu < 50, "the server spun: {cpu} ticks");

    // Room is made; a user logs in at once.
    drop(held);
    thread::sleep(Duration::from_millis(300));
    let url = format!("ws://{}", server.ws);
    let t = Instant::now();
    let (status, _) = cli("alice", &url, "alice", &["presence", "bob"]).finish();
    println!(
        "fd pressure: after the flood ended, alice's CLI logged in and asked presence in {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(0));
}

/// Attack 4 on the real process: with the connection cap turned off and
/// only 64 descriptors, 100 connections do exhaust them. Both accept loops
/// (WebSocket and operations port) then back off instead of spinning, log
/// the failure once rather than hundreds of times, and recover by themselves.
#[test]
fn out_of_descriptors_both_ports_back_off_and_recover() {
    let server = Server::start(
        "-n 64",
        &[
            "--max-connections",
            "0",
            "--max-connections-per-address",
            "0",
            "--handshake-timeout",
            "60s",
        ],
    );
    let conns: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(server.ws).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    // A health check now: the kernel takes the connection, the server cannot accept it yet.
    let mut health = TcpStream::connect(server.metrics).expect("connect to the metrics port");
    health
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let before = server.cpu_ticks();
    thread::sleep(Duration::from_secs(2));
    let cpu = server.cpu_ticks() - before;
    let log = server.log();
    let (ws_failures, metrics_failures) = (
        log.lines()
            .filter(|l| l.contains("accept failed") && !l.contains("metrics accept failed"))
            .count(),
        log.matches("metrics accept failed").count(),
    );
    println!(
        "EMFILE: fd limit 64, 100 connections held: server CPU {cpu} ticks (1/100 s) in 2 s; \
         log lines: {ws_failures} \"accept failed\", {metrics_failures} \"metrics accept failed\""
    );
    assert!(ws_failures >= 1, "the descriptors did run out:\n{log}");
    assert!(
        ws_failures <= 2,
        "accept failures are reported once in a while:\n{log}"
    );
    assert!((1..=2).contains(&metrics_failures), "{log}");
    assert!(cpu < 50, "the server spun: {cpu} ticks");
    // Let go: the waiting health check is answered, and new ones too.
    drop(conns);
    let t = Instant::now();
    health
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut text = String::new();
    let _ = health.read_to_string(&mut text);
    println!(
        "EMFILE: once the connections closed, the waiting /healthz was answered after {:?}: {:?}",
        t.elapsed(),
        text.lines().next()
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
}

/// The status line of the HTTP answer to a hand-written WebSocket handshake
/// (at most `wait` for it), and the stream, positioned just after the answer's head.
fn ws_handshake(addr: &str, origin: Option<&str>, wait: Duration) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(wait)).unwrap();
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
    .expect("send the handshake");
    // Byte by byte, so as not to read past the head into the first frame.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (head.lines().next().unwrap_or_default().to_owned(), tcp)
}

/// Sends one masked text frame.
fn ws_send_text(tcp: &mut TcpStream, text: &str) -> std::io::Result<()> {
    let payload = text.as_bytes();
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81u8];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame)
}

/// Reads one frame: (opcode, payload).
fn ws_recv(tcp: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head)?;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut ext = [0u8; 2];
        tcp.read_exact(&mut ext)?;
        len = u64::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0u8; 8];
        tcp.read_exact(&mut ext)?;
        len = u64::from_be_bytes(ext);
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        tcp.read_exact(&mut mask)?;
    }
    assert!(len < 1 << 20, "a frame of {len} bytes");
    let mut payload = vec![0u8; len as usize];
    tcp.read_exact(&mut payload)?;
    if head[1] & 0x80 != 0 {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((head[0] & 0x0f, payload))
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A secret file for `--secret-file`, and a way to mint tokens with the server binary.
struct Secret {
    path: PathBuf,
}

impl Secret {
    fn new() -> Secret {
        let path = std::env::temp_dir().join(format!(
            "callinvite-abuse-secret-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, "a-test-secret-of-enough-length\n").unwrap();
        Secret { path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn token(&self, user: &str) -> String {
        let out = Command::new(binary("callinvite-server"))
            .args(["token", "--user", user, "--ttl", "1h", "--secret-file"])
            .arg(&self.path)
            .output()
            .expect("run callinvite-server token");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Attack 1 on the real process: an attacker sends `login` for alice with a
/// garbage token every 50 ms for 3 s, reconnecting whenever the server
/// closes it. Alice's own CLI, with a valid token and from the same address,
/// logs in every time meanwhile.
#[test]
fn failed_logins_naming_a_user_do_not_lock_them_out_of_the_binary() {
    let secret = Secret::new();
    let (_server, url) = start_server(&["--secret-file", secret.path()]);
    let addr = url.trim_start_matches("ws://").to_owned();
    let attack_for = Duration::from_secs(3);

    let target = addr.clone();
    let attacker = thread::spawn(move || {
        let started = Instant::now();
        let (mut attempts, mut invalid, mut too_often, mut closed, mut connections) =
            (0u32, 0u32, 0u32, 0u32, 0u32);
        let mut conn: Option<TcpStream> = None;
        // Bounded: 3 s, and at most 200 attempts.
        while started.elapsed() < attack_for && attempts < 200 {
            let attempt_started = Instant::now();
            let tcp = match conn.as_mut() {
                Some(tcp) => tcp,
                None => {
                    let (status, tcp) = ws_handshake(&target, None, Duration::from_secs(5));
                    assert!(status.contains(" 101 "), "attacker handshake: {status:?}");
                    connections += 1;
                    conn.insert(tcp)
                }
            };
            attempts += 1;
            let login = format!(
                r#"{{"type":"login","ref":{attempts},"user":"alice","token":"garbage-{attempts}"}}"#
            );
            let mut reply = None;
            if ws_send_text(tcp, &login).is_ok() {
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // The reply, then (past a limit) the close frame.
                while let Ok((op, payload)) = ws_recv(tcp) {
                    match op {
                        0x1 => {
                            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                            reply = Some(v["code"].as_str().unwrap_or_default().to_owned());
                            break;
                        }
                        0x8 => break,
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
            // Closed by the server after this answer? Then come back on a new
            // connection. Waiting 50 ms to find out paces the attack.
            let gone = reply.is_none() || {
                tcp.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                match ws_recv(tcp) {
                    Ok((0x8, _)) => true,
                    Ok(_) => false,
                    Err(e) => !timed_out(&e),
                }
            };
            if gone {
                closed += 1;
                conn = None;
            }
            // One attempt every 50 ms, on a connection kept or a new one.
            thread::sleep(Duration::from_millis(50).saturating_sub(attempt_started.elapsed()));
        }
        (
            attempts,
            invalid,
            too_often,
            closed,
            connections,
            started.elapsed(),
        )
    });

    // Meanwhile alice's CLI logs in with her valid token, 5 times, 500 ms apart.
    let token = secret.token("alice");
    let started = Instant::now();
    thread::sleep(Duration::from_millis(200));
    let mut latencies = vec![];
    for i in 0..5 {
        let t = Instant::now();
        let (status, events) = cli(
            &format!("alice-{i}"),
            &url,
            "alice",
            &["--token", &token, "presence", "alice"],
        )
        .finish();
        latencies.push(t.elapsed());
        assert_eq!(
            status.code(),
            Some(0),
            "alice's login {i} under attack failed: {events:?}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    let alice_done = started.elapsed();
    let (attempts, invalid, too_often, closed, connections, attack_took) = attacker.join().unwrap();
    eprintln!(
        "attack 1 (binary): {attempts} bad logins naming alice in {attack_took:?} on {connections} connections: \
         {invalid} answered invalid_token, {too_often} too_often; the server closed the attacker's connection {closed} times"
    );
    eprintln!(
        "attack 1 (binary): alice's CLI (valid token, same address) succeeded {}/5 times meanwhile; each run took {:?}",
        latencies.len(),
        latencies
    );
    assert!(attempts >= 20, "the attack ran ({attempts} attempts)");
    assert!(invalid > 0, "bad tokens were refused");
    assert!(too_often > 0, "the address was limited");
    assert!(closed > 0, "attacking connections were closed");
    assert_eq!(latencies.len(), 5);
    assert!(
        alice_done <= attack_took + Duration::from_millis(500),
        "alice's tries ({alice_done:?}) outlasted the attack ({attack_took:?})"
    );
}

/// Attack on the real process: a web page (a handshake with `Origin`) is
/// refused with 403; a native client (no `Origin`) gets in; an origin given
/// with `--allowed-origin` gets in.
#[test]
fn the_binary_refuses_web_pages_unless_their_origin_is_allowed() {
    let wait = Duration::from_secs(5);
    let (_server, url) = start_server(&[]);
    let addr = url.trim_start_matches("ws://");
    let (evil, _) = ws_handshake(addr, Some("https://evil.example"), wait);
    let (native, _) = ws_handshake(addr, None, wait);
    eprintln!(
        "origin (binary, default): https://evil.example got {evil:?}; no Origin got {native:?}"
    );
    assert!(evil.contains(" 403 "), "{evil:?}");
    assert!(native.contains(" 101 "), "{native:?}");

    let (_server, url) = start_server(&["--allowed-origin", "https://app.example.org"]);
    let addr = url.trim_start_matches("ws://");
    let (app, _) = ws_handshake(addr, Some("https://app.example.org"), wait);
    let (evil, _) = ws_handshake(addr, Some("https://evil.example"), wait);
    let (native, _) = ws_handshake(addr, None, wait);
    eprintln!(
        "origin (binary, --allowed-origin https://app.example.org): that origin got {app:?}; \
         https://evil.example got {evil:?}; no Origin got {native:?}"
    );
    assert!(app.contains(" 101 "), "{app:?}");
    assert!(evil.contains(" 403 "), "{evil:?}");
    assert!(native.contains(" 101 "), "{native:?}");
}

/// `GET /healthz` on `addr`: the status line, or None if no answer within 2 s.
fn healthz(addr: &str) -> Option<String> {
    let mut tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    Some(text.lines().next()?.to_owned())
}

/// Attacks 3 and 4 on the real process: 20 connections to the operations
/// port that send nothing and 20 that send half a request head are all
/// closed by the server's header timeout (5 s), and /healthz answers
/// during and after.
#[test]
fn the_binarys_metrics_port_closes_silent_and_unfinished_connections() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let (mut server, _url) = start_server(&["--metrics-listen", &metrics]);
    if !server
        .seen
        .iter()
        .any(|l| l.contains("serving /healthz and /metrics"))
    {
        server.wait_line("serving /healthz and /metrics");
    }
    assert_eq!(
        healthz(&metrics).as_deref(),
        Some("HTTP/1.1 200 OK"),
        "/healthz before"
    );

    let started = Instant::now();
    let mut conns = vec![];
    for _ in 0..20 {
        conns.push(("silent", TcpStream::connect(&metrics).expect("connect")));
    }
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(&metrics).expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n")
            .unwrap();
        conns.push(("unfinished", tcp));
    }
    thread::sleep(Duration::from_secs(1));
    let during = healthz(&metrics);
    let during_at = started.elapsed();

    // Each one, until the server closes it (at most 8 s after the start).
    let deadline = started + Duration::from_secs(8);
    let mut closed_after: Vec<(&str, Duration, String)> = vec![];
    let mut held = vec![];
    for (kind, mut tcp) in conns {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            tcp.set_read_timeout(Some(left)).unwrap();
            match tcp.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if timed_out(&e) => break false,
                Err(_) => break true,
            }
        };
        if closed {
            let answer = String::from_utf8_lossy(&got);
            closed_after.push((
                kind,
                started.elapsed(),
                answer.lines().next().unwrap_or_default().to_owned(),
            ));
        } else {
            held.push(kind);
        }
    }
    let after = healthz(&metrics);
    let times = |k: &str| -> Vec<Duration> {
        closed_after
            .iter()
            .filter(|c| c.0 == k)
            .map(|c| c.1)
            .collect()
    };
    let (silent, unfinished) = (times("silent"), times("unfinished"));
    let range = |v: &[Duration]| (v.iter().min().copied(), v.iter().max().copied());
    let answers: std::collections::BTreeSet<&str> =
        closed_after.iter().map(|c| c.2.as_str()).collect();
    eprintln!(
        "metrics port (binary, header timeout 5 s): {} silent connections closed after {:?} (min, max); \
         {} with an unfinished head closed after {:?}; answers before closing: {answers:?}; still open after 8 s: {}",
        silent.len(),
        range(&silent),
        unfinished.len(),
        range(&unfinished),
        held.len()
    );
    eprintln!(
        "metrics port (binary): /healthz during the attack ({during_at:?} in): {during:?}; after: {after:?}"
    );
    assert!(held.is_empty(), "not closed within 8 s: {held:?}");
    assert_eq!(silent.len(), 20);
    assert_eq!(unfinished.len(), 20);
    for (kind, after, _) in &closed_after {
        assert!(
            *after >= Duration::from_secs(4),
            "{kind} closed after {after:?}, before the header timeout"
        );
    }
    assert_eq!(during.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(after.as_deref(), Some("HTTP/1.1 200 OK"));
}
