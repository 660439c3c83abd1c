//! Helpers for end-to-end tests that run the real binaries as processes.
//!
//! The binaries are found next to the test executable's `target/<profile>/`
//! directory; `cargo test --workspace` and `cargo nextest run --workspace`
//! build them before any test runs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Path of a workspace binary (`callinvite-server`, `callinvite`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>  →  target/<profile>/<name>
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A running process whose stdout lines are collected as they come.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let tx2 = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let label = name.to_owned();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
                // Server log lines are also offered, prefixed, for address discovery.
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Proc {
            child,
            lines,
            seen: vec![],
            name: name.to_owned(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line containing {needle:?}; saw:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for a JSON event line with `"event": name`.
    pub fn wait_event(&mut self, name: &str) -> Value {
        let needle = format!("\"event\":\"{name}\"");
        let line = self.wait_line(&needle);
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not JSON: {line}: {e}", self.name))
    }

    /// Waits for the process to exit; returns its status and every JSON event it printed.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit; saw:\n{}", self.name, self.seen.join("\n"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        // Drain what is left of stdout.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        let events = self
            .seen
            .iter()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (status, events)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `callinvite-server` on a free loopback port; returns it and its ws:// URL.
pub fn start_server(extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(binary("callinvite-server"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--log",
        "info",
        "--data-dir",
        "-",
    ])
    .args(extra);
    let mut server = Proc::spawn("server", cmd);
    let line = server.wait_line("listening");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
        .to_owned();
    (server, format!("ws://{addr}"))
}

/// Runs `callinvite --server URL --user USER ARGS...`.
pub fn cli(name: &str, url: &str, user: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(binary("callinvite"));
    cmd.args(["--server", url, "--user", user]).args(args);
    Proc::spawn(name, cmd)
}

/// The events of a given name.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Starts a private `redis-server` on a free loopback port; returns it and its redis:// URL.
pub fn start_redis() -> (callinvite_test_support::Redis, String) {
    let redis = callinvite_test_support::Redis::start();
    let url = redis.url.clone();
    (redis, url)
}

/// A TCP forwarder standing in for a load balancer: each new connection goes
/// to the current target, and [`Forwarder::retarget`] changes it. When either
/// side of a forwarded connection closes, both do.
pub struct Forwarder {
    /// `ws://127.0.0.1:<port>`, for clients.
    pub url: String,
    target: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Forwarder {
    pub fn start(target_url: &str) -> Forwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("ws://{}", listener.local_addr().expect("local addr"));
        let target = std::sync::Arc::new(std::sync::Mutex::new(host_port(target_url)));
        let current = target.clone();
        thread::spawn(move || {
            for down in listener.incoming().flatten() {
                let to = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                thread::spawn(move || {
                    // Refused upstream: dropping `down` closes the client's connection.
                    let Ok(up) = std::net::TcpStream::connect(&to) else {
                        return;
                    };
                    let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                        return;
                    };
                    let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    };
                    thread::spawn(move || pipe(down2, up2));
                    pipe(up, down);
                });
            }
        });
        Forwarder { url, target }
    }

    /// New connections go to `url` from now on.
    pub fn retarget(&self, url: &str) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = host_port(url);
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned()
}

/// Reads a 16-bit mono WAV file (what `callinvite --record` writes): samples and rate.
pub fn read_wav(path: &std::path::Path) -> (Vec<i16>, u32) {
    let mut reader = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let rate = reader.spec().sample_rate;
    let samples = reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("bad samples in {}: {e}", path.display()));
    (samples, rate)
}

/// The power of one frequency in `samples` (Goertzel), as a fraction of a
/// full-scale sine's: about 0.09 for a sine of amplitude 0.3, near 0 when absent.
pub fn tone_power(samples: &[i16], rate: u32, freq: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A full-scale sine over n samples gives (n/2)^2.
    let n = samples.len() as f64;
    power / (n * n / 4.0)
}

/// Root mean square of `samples`, 0..=1 of full scale.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|&s| (f64::from(s) / 32768.0).powi(2))
        .sum();
    (sum / samples.len() as f64).sqrt()
}

/// Checks that `samples` (the loudest `window` of them) carry `expect` Hz and
/// not `own` Hz nor a few frequencies in between; returns the powers for the log.
pub fn assert_hears(what: &str, samples: &[i16], rate: u32, expect: f64, own: f64) -> String {
    let window = rate as usize; // one second
    assert!(
        samples.len() >= window,
        "{what}: only {} samples recorded",
        samples.len()
    );
    // The loudest second (the call's middle, not the silence before media started).
    let best = (0..=samples.len() - window)
        .step_by(rate as usize / 10)
        .max_by(|&a, &b| rms(&samples[a..a + window]).total_cmp(&rms(&samples[b..b + window])))
        .unwrap_or(0);
    let s = &samples[best..best + window];
    let heard = tone_power(s, rate, expect);
    let mut report = format!("{what}: rms {:.3}, {expect} Hz {heard:.4}", rms(s));
    for other in [own, 300.0, 660.0, 1000.0, 1500.0] {
        let p = tone_power(s, rate, other);
        report += &format!(", {other} Hz {p:.5}");
        assert!(
            heard > 10.0 * p,
            "{what}: {expect} Hz should dominate {other} Hz: {report}"
        );
    }
    assert!(rms(s) > 0.05, "{what}: near silence: {report}");
    report
}

/// A private coturn (`turnserver`) for media tests: listening and relaying on
/// 127.0.0.1 only, with a shared secret (`use-auth-secret`, as the server's
/// `--turn-secret-file`), no TLS/DTLS/TCP/CLI, no config file, its database and
/// pid file in a temp dir, its log (stdout) collected. Killed on drop.
pub struct Coturn {
    proc: Proc,
    /// Where it listens (UDP).
    pub addr: std::net::SocketAddr,
    /// Its relay ports.
    pub relay_ports: (u16, u16),
    dir: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Coturn {
    /// Starts coturn with `secret` on a free loopback port and waits (at most
    /// 15 s) until it answers a STUN Binding request. Retries on another port if
    /// it cannot start.
    pub fn start(secret: &str) -> Coturn {
        let mut last = String::new();
        for attempt in 0..3 {
            match Coturn::try_start(secret, attempt) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("coturn did not start: {last}");
    }

    fn try_start(secret: &str, attempt: u32) -> Result<Coturn, String> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        // Relay ports below Linux's ephemeral range (32768..), so that they
        // rarely collide with other sockets; coturn skips busy ones.
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
            ^ attempt;
        let base = 20000 + 200 * (seed % 60) as u16;
        let relay_ports = (base, base + 199);
        let dir = std::env::temp_dir().join(format!(
            "callinvite-e2e-coturn-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let mut cmd = Command::new("turnserver");
        cmd.arg("-n")
            .arg("--listening-ip=127.0.0.1")
            .arg("--relay-ip=127.0.0.1")
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={}", relay_ports.0))
            .arg(format!("--max-port={}", relay_ports.1))
            .arg("--allow-loopback-peers")
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp",
                "--no-tcp-relay",
            ])
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={secret}"))
            .arg("--realm=callinvite")
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .args(["--log-file=stdout", "--simple-log", "--verbose"]);
        if Command::new("turnserver").arg("--help").output().is_err() {
            return Err("turnserver not found; install coturn (apt-get install coturn)".into());
        }
        let mut proc = Proc::spawn("coturn", cmd);
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        // Move the output lines into `log` as they come (stdout is the log).
        let lines = std::mem::replace(&mut proc.lines, mpsc::channel().1);
        let sink = log.clone();
        thread::spawn(move || {
            for line in lines.iter() {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut coturn = Coturn {
            proc,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            relay_ports,
            dir,
            log,
        };
        coturn.wait_ready()?;
        Ok(coturn)
    }

    /// Sends Binding requests until one is answered.
    fn wait_ready(&mut self) -> Result<(), String> {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let mut request = [0u8; 20];
        request[1] = 0x01; // Binding request, no attributes
        request[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        request[8..20].copy_from_slice(&[7; 12]);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                return Err(format!(
                    "turnserver exited ({status}):\n{}",
                    self.log().join("\n")
                ));
            }
            let _ = probe.send_to(&request, self.addr);
            if let Ok((n, from)) = probe.recv_from(&mut buf) {
                if from == self.addr && n >= 20 && buf[0..2] == [0x01, 0x01] {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "turnserver did not answer on {} within 15 s:\n{}",
            self.addr,
            self.log().join("\n")
        ))
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The log lines containing every one of `words`.
    pub fn log_lines(&self, words: &[&str]) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .collect()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
