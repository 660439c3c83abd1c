//! What the tests of callinvite share, so that no test file keeps its own
//! copy: a private `redis-server` ([`Redis`]), free loopback ports
//! ([`free_port`]), a test certificate authority ([`TestCa`]), assertions on a
//! client's events ([`next`], [`until`], [`expect`]) and waiting on a condition
//! with a deadline instead of sleeping ([`eventually`], [`wait_until`]).
//!
//! A dev-dependency only: nothing here is built into a program.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callinvite_client::{Event, EventStream};

/// How long an expected event may take. Longer than every server timer, so a
/// test waiting on a timer under paused time reaches the timer first; under
/// real time it only bounds a hang.
pub const WAIT: Duration = Duration::from_secs(300);

/// A TCP port on 127.0.0.1 that was free a moment ago (the system chose it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// Waits until `ready` holds, checking every 10 ms; panics saying `what` did
/// not happen if `deadline` passes first. For blocking tests.
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ready() {
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Awaits `attempt` until it gives `Some`, trying again every `every`; panics
/// saying `what` did not happen if `deadline` (real time) passes first.
pub async fn eventually<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        tokio::time::sleep(every).await;
    }
}

/// The next event, failing the test if none comes within [`WAIT`].
pub async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("timed out waiting for an event")
        .expect("event stream ended")
}

/// Skips events until one named `name` arrives (e.g. "remote_invitation_received").
pub async fn until(events: &mut EventStream, name: &str) -> Event {
    loop {
        let e = next(events).await;
        if e.name() == name {
            return e;
        }
    }
}

/// Asserts that the next event is named `name`.
pub async fn expect(events: &mut EventStream, name: &str) -> Event {
    let e = next(events).await;
    assert_eq!(e.name(), name, "unexpected event {e:?}");
    e
}

/// A private `redis-server` on a loopback port, without persistence; killed
/// when dropped.
pub struct Redis {
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts one on `port` and waits (at most 10 s) until it accepts connections.
    pub fn start_on(port: u16) -> Redis {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: apt-get install -y redis-server");
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= end || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Redis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: Some(child),
        }
    }

    /// Kills it at once, as a crash would (what it held is gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// After [`Redis::kill`]: a fresh one on the same port.
    pub fn start_again(&mut self) {
        self.kill();
        let fresh = Redis::start_on(self.port);
        *self = fresh;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A certificate authority made for one test, and a server certificate for
/// `localhost` and 127.0.0.1 signed by it, as PEM files in a temporary
/// directory that goes with it.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::Builder::new()
            .prefix("callinvite-ca-")
            .tempdir()
            .expect("temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server certificate parameters")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write a PEM file");
        };
        write("ca.pem", ca.pem());
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());
        TestCa { dir }
    }

    /// The CA's certificate, for a client to trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate chain.
    pub fn server_pem(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The directory holding them, for more files of the test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A temporary directory for one test, removed when dropped.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("callinvite-{name}-"))
        .tempdir()
        .expect("temporary directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn the_test_ca_writes_pem_files_and_removes_them() {
        let ca = TestCa::new();
        let dir = ca.dir().to_path_buf();
        for f in [ca.ca_pem(), ca.server_pem(), ca.server_key()] {
            let text = std::fs::read_to_string(&f).expect("read");
            assert!(text.starts_with("-----BEGIN"), "{}: {text}", f.display());
        }
        drop(ca);
        assert!(!dir.exists());
    }

    #[test]
    fn wait_until_returns_once_the_condition_holds_and_fails_at_the_deadline() {
        let mut n = 0;
        wait_until("three calls", Duration::from_secs(5), || {
            n += 1;
            n >= 3
        });
        assert_eq!(n, 3);
        let never = std::panic::catch_unwind(|| {
            wait_until("never", Duration::from_millis(30), || false);
        });
        assert!(never.is_err());
    }
}
