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
pub fn start_redis() -> (Proc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let mut redis = Proc::spawn("redis", cmd);
    redis.wait_line("Ready to accept connections");
    (redis, format!("redis://127.0.0.1:{port}"))
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
