//! Memory per idle connection: connections held open, on one server or on
//! several nodes of a cluster fed by worker processes.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::measure::rss_kib;
use crate::servers::{start_node, start_redis};
use crate::ws::ws_config;

/// `--idle` connections held by `--idle-nodes` nodes of one cluster: a
/// worker process per node opens its share; then the nodes' RSS growth per
/// connection (Redis's growth reported apart).
pub(crate) async fn idle_memory_cluster(args: &Args) {
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
pub(crate) fn worker_count(
    out: &mut std::io::BufReader<std::process::ChildStdout>,
    label: &str,
) -> usize {
    use std::io::BufRead;
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    line.trim()
        .strip_prefix(label)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Idle connections being held: how many are still open, and the tasks
/// that read them (reading answers the server's pings, so its heartbeat
/// does not drop them; an idle client in the field does the same).
pub(crate) struct Idle {
    alive: Arc<std::sync::atomic::AtomicUsize>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Idle {
    pub(crate) fn alive(&self) -> usize {
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
pub(crate) async fn open_idle(port: u16, n: usize, prefix: &str) -> Idle {
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

pub(crate) async fn idle_memory(port: u16, pid: u32, n: usize) {
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
