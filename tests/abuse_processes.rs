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

use callinvite_e2e::{binary, cli};

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
    assert!(metrics_failures >= 1 && metrics_failures <= 2, "{log}");
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
