//! The server processes a run starts (callinvite-server, its Redis,
//! peerjs-server), on 127.0.0.1 free ports, killed when dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::args::Args;

/// `--server-cpus`: the CPUs every server process is started on (set once,
/// before any server starts; unset, servers run wherever the scheduler puts
/// them).
pub(crate) static SERVER_CPUS: OnceLock<String> = OnceLock::new();

/// A command for a server's process (callinvite-server, Kamailio), started
/// through `taskset -c CPUS` when `--server-cpus` is given. taskset execs the
/// program, so the child's pid is the server's.
pub(crate) fn server_command(program: impl AsRef<OsStr>) -> Command {
    match SERVER_CPUS.get() {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpus]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

pub(crate) async fn start_redis() -> (Server, String) {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(47_123)
}

pub(crate) struct Server {
    pub(crate) child: Child,
    /// The callinvite-server's operations port (`/metrics`), if any.
    pub(crate) metrics: Option<u16>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn wait_port(port: u16) {
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

pub(crate) fn server_bin(args: &Args) -> PathBuf {
    args.server_bin.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().expect("own path");
        me.with_file_name("callinvite-server")
    })
}

pub(crate) async fn start_callinvite(args: &Args) -> (Server, u16) {
    start_node(args, None).await
}

/// A server process; with `redis`, a node of the cluster on it.
pub(crate) async fn start_node(args: &Args, redis: Option<&str>) -> (Server, u16) {
    start_node_bin(&server_bin(args), redis).await
}

/// A server process of the build `bin`; with `redis`, a node of the cluster on it.
pub(crate) async fn start_node_bin(bin: &Path, redis: Option<&str>) -> (Server, u16) {
    let port = free_port();
    let metrics = free_port();
    let mut cmd = server_command(bin);
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

pub(crate) fn ensure_peerjs(dir: &Path) -> PathBuf {
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
