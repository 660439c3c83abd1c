//! Test harness: a real server on 127.0.0.1:0, real clients, and a raw
//! WebSocket client for speaking the protocol directly (bad input, races).
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use callinvite_client::{Client, Event, EventStream, LoginOptions};
use callinvite_server::{run, CancellationToken, Config};

pub use callinvite_test_support::WAIT;

pub struct TestServer {
    pub url: String,
    pub shutdown: CancellationToken,
    /// In cluster mode: more nodes, and the Redis they meet on.
    pub cluster: Option<TestCluster>,
}

/// The extra nodes of a server started in cluster mode.
pub struct TestCluster {
    pub nodes: Vec<TestServer>,
    pub redis: Redis,
    /// Logins go to the nodes in turn.
    next: std::sync::atomic::AtomicUsize,
    /// A client logged in on each node (by the node's URL), to see what that
    /// node has heard (with its events, so that its client keeps running).
    watchers: Vec<(String, Client, EventStream)>,
}

impl TestCluster {
    /// Waits until every node has heard what the node at `url` has said
    /// so far (see [`until_heard`]).
    async fn heard_everywhere(&self, url: &str) {
        for (_, watcher, _) in self.watchers.iter().filter(|(at, _, _)| at != url) {
            until_heard(url, watcher).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Whether the flow tests run against a cluster (`CALLINVITE_TEST_CLUSTER=1`):
/// two nodes on a private redis-server, users logging in on them in turn.
pub fn cluster_mode() -> bool {
    std::env::var_os("CALLINVITE_TEST_CLUSTER").is_some_and(|v| v != "0")
}

pub async fn start(config: Config) -> TestServer {
    if cluster_mode() {
        let redis = Redis::start().await;
        let mut first = start_node(&redis, config.clone()).await;
        let second = start_node(&redis, config).await;
        let mut watchers = vec![];
        for (i, url) in [&first.url, &second.url].into_iter().enumerate() {
            let (client, events) = Client::login(LoginOptions::new(url, format!("sync-watch-{i}")))
                .await
                .expect("watcher login");
            watchers.push((url.clone(), client, events));
        }
        first.cluster = Some(TestCluster {
            nodes: vec![second],
            redis,
            next: Default::default(),
            watchers,
        });
        return first;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("ws://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(run(listener, config, shutdown.clone()));
    TestServer {
        url,
        shutdown,
        cluster: None,
    }
}

pub async fn start_default() -> TestServer {
    start(Config::default()).await
}

impl TestServer {
    /// The node the next login goes to: this one, or in cluster mode each node in turn.
    fn next_url(&self) -> &str {
        match &self.cluster {
            None => &self.url,
            Some(c) => {
                let i =
                    c.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % (c.nodes.len() + 1);
                if i == 0 {
                    &self.url
                } else {
                    &c.nodes[i - 1].url
                }
            }
        }
    }

    pub async fn login(&self, user: &str) -> (Client, EventStream) {
        let url = self.next_url().to_owned();
        let (client, mut events) = Client::login(LoginOptions::new(&url, user))
            .await
            .expect("login");
        assert!(matches!(
            events.next().await,
            Some(Event::ConnectionStateChanged { .. })
        ));
        if let Some(cluster) = &self.cluster {
            // The other nodes hear of this device before the test goes on.
            cluster.heard_everywhere(&url).await;
        }
        (client, events)
    }

    pub async fn raw(&self) -> Raw {
        let url = self.next_url().to_owned();
        raw_at(&url).await
    }

    pub async fn raw_login(&self, user: &str) -> Raw {
        let url = self.next_url().to_owned();
        let mut raw = raw_at(&url).await;
        raw.send(json!({"type": "login", "ref": 0, "user": user}))
            .await;
        let reply = raw.recv().await;
        assert_eq!(reply["type"], "login_ok", "{reply}");
        if let Some(cluster) = &self.cluster {
            cluster.heard_everywhere(&url).await;
        }
        raw
    }
}

/// A raw WebSocket connection to `url`.
async fn raw_at(url: &str) -> Raw {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    Raw { ws }
}

/// Waits until the node of `watcher` has heard everything the node at
/// `url` has said so far: logs a fresh user in there, waits until `watcher`
/// sees it online, and logs it out. A node's messages reach another in the
/// order sent, so once its last device is known there, so is all before it.
pub async fn until_heard(url: &str, watcher: &Client) {
    static MARKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("sync-{n}");
    let (client, _events) = Client::login(LoginOptions::new(url, &marker))
        .await
        .expect("marker login");
    until_online(watcher, &[&marker]).await;
    client.logout().await.expect("marker logout");
}

// Not every test binary uses each of these.
#[allow(unused_imports)]
pub use callinvite_test_support::{expect, next, until};

/// Lets every task run until nothing is ready (a sync point under paused time).
/// In cluster mode messages also cross Redis, so it waits longer.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let wait = if cluster_mode() { 250 } else { 50 };
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// A protocol-level client: sends and receives JSON frames as they are.
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Raw {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::text(s.to_owned()))
            .await
            .expect("send");
    }

    /// Next text frame as JSON (pings are answered by the library and skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out")
                .expect("closed")
                .expect("error");
            match frame {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("server sent JSON")
                }
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Next frame of the given type, skipping others.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Waits for the connection to close; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Steps of virtual time taken by [`virtual_until`].
pub const STEP: Duration = Duration::from_millis(100);

/// Lets messages in flight on loopback be read and handled, without letting
/// the clock move: yielding keeps the runtime busy, so it never auto-advances.
pub async fn flush_io() {
    for _ in 0..40 {
        tokio::task::yield_now().await;
    }
}

/// Waits for the event named `name` on virtual time: pauses the clock, then
/// moves it in [`STEP`]s, letting all I/O settle between steps, so that
/// server timers fire exactly when due relative to the traffic. Returns the
/// event and the virtual time it took (to the step).
pub async fn virtual_until(events: &mut EventStream, name: &str) -> (Event, Duration) {
    tokio::time::pause();
    let mut waited = Duration::ZERO;
    let found = 'outer: loop {
        flush_io().await;
        while let Some(e) = events.try_next() {
            if e.name() == name {
                break 'outer e;
            }
        }
        assert!(waited < WAIT, "no {name} within {WAIT:?} of virtual time");
        tokio::time::advance(STEP).await;
        waited += STEP;
    };
    tokio::time::resume();
    (found, waited)
}

/// Lets `d` of virtual time pass, with I/O settling at every step.
pub async fn virtual_sleep(d: Duration) {
    tokio::time::pause();
    let mut waited = Duration::ZERO;
    while waited < d {
        flush_io().await;
        tokio::time::advance(STEP).await;
        waited += STEP;
    }
    flush_io().await;
    tokio::time::resume();
}

/// Asserts a server window of `secs` fired when due: after exactly that much
/// virtual time, to the step.
pub fn assert_window(waited: Duration, secs: u64) {
    let due = Duration::from_secs(secs);
    assert!(
        waited >= due && waited <= due + STEP,
        "fired after {waited:?} of virtual time; the window is {due:?}"
    );
}

/// Places a call from `caller` to `callee` and has it accepted; returns its id
/// once both sides have seen it (callee: received; caller: accepted).
pub async fn establish_call(
    caller: &Client,
    caller_events: &mut EventStream,
    callee: &Client,
    callee_events: &mut EventStream,
) -> callinvite_client::InvitationId {
    let invitation = caller
        .create_local_invitation(callee.user().as_str())
        .expect("callee id");
    let id = caller
        .send_local_invitation(&invitation)
        .await
        .expect("send");
    until(callee_events, "remote_invitation_received").await;
    callee
        .accept_remote_invitation(&id, "")
        .await
        .expect("accept");
    until(caller_events, "local_invitation_accepted").await;
    id
}

/// A TCP proxy in front of the server that can cut every connection through
/// it (a network drop: no close frame) and refuse new ones for a while (an
/// outage), so clients can be tested against the real network failures.
pub struct Proxy {
    /// `ws://` address of the proxy.
    pub url: String,
    cut: std::sync::Arc<std::sync::Mutex<CancellationToken>>,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `host:port`s new connections go to, in turn (a load balancer may change them).
    target: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Connections made through the proxy so far.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    /// Starts a proxy to the server at `url` (`ws://host:port`).
    pub async fn start(url: &str) -> Proxy {
        Proxy::start_many(&[url]).await
    }

    /// A proxy that sends new connections to the servers in turn (round robin).
    pub async fn start_many(urls: &[&str]) -> Proxy {
        use std::sync::atomic::Ordering;
        let target = std::sync::Arc::new(std::sync::Mutex::new(
            urls.iter()
                .map(|u| u.trim_start_matches("ws://").to_owned())
                .collect::<Vec<_>>(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("ws://{}", listener.local_addr().expect("local addr"));
        let proxy = Proxy {
            url,
            cut: Default::default(),
            blocked: Default::default(),
            accepted: Default::default(),
            target: target.clone(),
        };
        let (cut, blocked, accepted) = (
            proxy.cut.clone(),
            proxy.blocked.clone(),
            proxy.accepted.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if blocked.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let n = accepted.fetch_add(1, Ordering::SeqCst);
                let token = cut.lock().expect("proxy lock").clone();
                let target = {
                    let targets = target.lock().expect("proxy lock");
                    targets[n % targets.len().max(1)].clone()
                };
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Drops every connection through the proxy, as a network failure would.
    pub fn cut(&self) {
        let mut token = self.cut.lock().expect("proxy lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Sends new connections to the server at `url` from now on.
    pub fn retarget(&self, url: &str) {
        *self.target.lock().expect("proxy lock") = vec![url.trim_start_matches("ws://").to_owned()];
    }

    /// While on, new connections are closed as soon as they arrive.
    pub fn block(&self, on: bool) {
        self.blocked.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A private redis-server (from the shared test support), with a restart
/// that lets this runtime's tasks run while it is down.
pub struct Redis(callinvite_test_support::Redis);

impl std::ops::Deref for Redis {
    type Target = callinvite_test_support::Redis;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Redis {
    pub async fn start() -> Redis {
        Redis(callinvite_test_support::Redis::start())
    }

    /// Stops it (as a crash would) and starts a fresh one on the same port.
    pub async fn restart(&mut self, down_for: Duration) {
        self.0.kill();
        tokio::time::sleep(down_for).await;
        self.0.start_again();
    }
}

/// A server node joined to the cluster on `redis`.
pub async fn start_node(redis: &Redis, config: Config) -> TestServer {
    start_node_at(&redis.url, config).await
}

/// A server node joined to the cluster on the Redis at `redis_url`.
pub async fn start_node_at(redis_url: &str, mut config: Config) -> TestServer {
    let mut cluster = callinvite_server::cluster::ClusterConfig::new(redis_url);
    cluster.heartbeat_every = Duration::from_millis(300);
    cluster.node_timeout = Duration::from_millis(1500);
    config.cluster = Some(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("ws://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    tokio::spawn(run(listener, config, shutdown.clone()));
    // Wait until it has joined: it answers a login.
    let (c, _e) = Client::login(LoginOptions::new(&url, "node-probe"))
        .await
        .expect("node answers");
    c.logout().await.expect("probe logout");
    TestServer {
        url,
        shutdown,
        cluster: None,
    }
}

/// Waits until `client` sees every user in `users` online (presence travels between nodes).
pub async fn until_online(client: &Client, users: &[&str]) {
    let what = format!("{users:?} online");
    callinvite_test_support::eventually(&what, WAIT, Duration::from_millis(10), || async {
        let p = client.query_presence(users).await.expect("presence");
        p.iter().all(|e| e.online).then_some(())
    })
    .await
}

/// A cluster node that can die all at once: it runs in its own runtime on
/// its own thread, and [`DoomedNode::kill`] drops that runtime (its sockets
/// go, and it says no goodbye), as a crash would.
pub struct DoomedNode {
    pub url: String,
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl DoomedNode {
    pub async fn start(redis_url: &str) -> DoomedNode {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = std::sync::mpsc::channel::<()>();
        let redis_url = redis_url.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let node = rt.block_on(start_node_at(&redis_url, Config::default()));
            url_tx.send(node.url.clone()).expect("url");
            let _ = kill_rx.recv();
            std::mem::forget(node); // no orderly shutdown: the runtime just goes
            drop(rt);
        });
        let url = tokio::task::spawn_blocking(move || url_rx.recv().expect("node started"))
            .await
            .expect("join");
        DoomedNode { url, kill, thread }
    }

    /// Drops the node's runtime and waits until it is gone.
    pub async fn kill(self) {
        let _ = self.kill.send(());
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().expect("node thread"))
            .await
            .expect("join");
    }
}
