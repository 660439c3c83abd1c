//! A private coturn (`turnserver`) on 127.0.0.1 for the relay tests:
//! listening and relaying on loopback only, with a shared secret (coturn's
//! `use-auth-secret`, as the callinvite server hands out credentials), no
//! TLS, no CLI, no config file, its database and pid file in a temp dir,
//! and its log (stdout) collected for the test to check.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use callinvite_media::IceServer;
use hmac::{Hmac, Mac};

/// The realm coturn announces.
pub const REALM: &str = "callinvite";
/// How long coturn may take to answer its first STUN request.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running coturn; killed (and its temp dir removed) on drop.
pub struct Coturn {
    child: Child,
    /// Where it listens (UDP, 127.0.0.1).
    pub addr: SocketAddr,
    /// Its `static-auth-secret`.
    pub secret: String,
    /// Its relay ports.
    pub relay_ports: (u16, u16),
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Coturn {
    /// Starts coturn with `secret` on a free loopback port and waits until
    /// it answers a STUN Binding request. Panics (with coturn's output)
    /// if it cannot.
    pub fn start(secret: &str) -> Coturn {
        let mut last = String::new();
        // A port found free may be taken by the time coturn binds it:
        // try a few.
        for _ in 0..3 {
            match Coturn::try_start(secret) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("coturn did not start: {last}");
    }

    fn try_start(secret: &str) -> Result<Coturn, String> {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        // Relay ports below Linux's ephemeral range (32768..), so that they
        // rarely collide with other sockets; coturn skips busy ones.
        let base = 20000 + 200 * fastrand::u16(0..60);
        let relay_ports = (base, base + 199);
        let dir =
            std::env::temp_dir().join(format!("callinvite-coturn-{}-{port}", std::process::id()));
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
            .arg(format!("--realm={REALM}"))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .arg("--log-file=stdout")
            .arg("--simple-log")
            .arg("--verbose")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            format!("cannot run turnserver ({e}); install coturn (apt-get install coturn)")
        })?;
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut coturn = Coturn {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            secret: secret.to_owned(),
            relay_ports,
            dir,
            log,
        };
        coturn.wait_ready()?;
        Ok(coturn)
    }

    /// Sends Binding requests until one is answered.
    fn wait_ready(&mut self) -> Result<(), String> {
        let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let mut request = [0u8; 20];
        request[1] = 0x01; // Binding request, no attributes
        request[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        request[8..20].copy_from_slice(&[7; 12]);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "turnserver exited ({status}):\n{}",
                    self.log_text()
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
            "turnserver did not answer on {} within {READY_TIMEOUT:?}:\n{}",
            self.addr,
            self.log_text()
        ))
    }

    /// coturn REST credentials for `user`, valid for an hour:
    /// `<expiry>:<user>` and base64(HMAC-SHA1(secret, that)).
    pub fn credentials(&self, user: &str) -> (String, String) {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3600;
        let username = format!("{expiry}:{user}");
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes()).expect("any key length");
        mac.update(username.as_bytes());
        let password =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        (username, password)
    }

    /// This server as the callinvite server would hand it out to `user`.
    pub fn ice_server(&self, user: &str) -> IceServer {
        let (username, credential) = self.credentials(user);
        IceServer {
            urls: vec![format!("turn:{}?transport=udp", self.addr)],
            username: Some(username),
            credential: Some(credential),
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log lines containing every one of `words`.
    pub fn log_lines(&self, words: &[&str]) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .collect()
    }

    fn log_text(&self) -> String {
        self.log().join("\n")
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
