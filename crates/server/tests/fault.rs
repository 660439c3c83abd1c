//! Fault test (modest size for CI): users on one server calling each other at
//! random — cancels, accepts, refusals, hang-ups — while the network between
//! them and the server fails: short cuts (the clients resume their sessions),
//! an outage longer than the resume grace window (sessions end), clients that
//! vanish, and a server restart in the middle. At the end it checks that
//! every invitation reached exactly one final state on each side, that the
//! sides agree, that nothing rang past its timeout, that no event came twice,
//! and that every short cut was survived; it prints the counts. Larger runs:
//! FAULT_USERS=40 FAULT_SECONDS=60.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callinvite_client::{
    Client, ConnectionReason, ConnectionState, Event, FailureReason, InvitationId, LoginOptions,
};
use callinvite_server::{CancellationToken, Config};

/// A small deterministic pseudo-random generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One event as seen by one session of one user.
#[derive(Clone, Debug)]
struct Seen {
    session: (usize, u32),
    at: Instant,
    event: Event,
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start_server(
    port: u16,
    config: Config,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(callinvite_server::run(listener, config, stop.clone()));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_invitation_ends_once_and_both_sides_agree() {
    chaos(false).await
}

/// The same on two nodes on a private redis-server, behind a round-robin
/// proxy: callers and callees land on either node, resumes cross nodes, and
/// the node restarted half-way is one of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_across_two_nodes_every_invitation_ends_once_and_both_sides_agree() {
    chaos(true).await
}

/// Whether another node took the session over (its node died): the events
/// after it are those of a new device, and are checked as a new session.
fn is_move(event: &Event) -> bool {
    matches!(
        event,
        Event::ConnectionStateChanged {
            reason: ConnectionReason::SessionMoved,
            ..
        }
    )
}

async fn chaos(cluster: bool) {
    let users = env("FAULT_USERS", 8) as usize;
    let seconds = env("FAULT_SECONDS", 6);
    let ring = Duration::from_secs(3);
    let mut config = Config::default();
    config.timeouts.ring = ring;
    config.timeouts.offline = Duration::from_secs(1);
    config.timeouts.no_response = Duration::from_secs(1);
    config.timeouts.cancel_ack = Duration::from_millis(500);
    config.logins_per_second = 1000;
    let grace = Duration::from_secs(1);
    config.resume_grace = grace;
    let redis = if cluster {
        Some(common::Redis::start().await)
    } else {
        None
    };
    if let Some(r) = &redis {
        let mut c = callinvite_server::cluster::ClusterConfig::new(&r.url);
        c.heartbeat_every = Duration::from_millis(300);
        c.node_timeout = Duration::from_millis(1500);
        config.cluster = Some(c);
    }
    let ports: Vec<u16> = (0..if cluster { 2 } else { 1 })
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let mut servers = vec![];
    for p in &ports {
        servers.push(start_server(*p, config.clone()).await);
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("ws://127.0.0.1:{p}"))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    // Clients reach the server(s) through a proxy that cuts the network.
    let proxy = Arc::new(common::Proxy::start_many(&urls).await);
    let url = proxy.url.clone();

    let log: Arc<Mutex<Vec<Seen>>> = Default::default();
    let drops = Arc::new(Mutex::new(0u32));
    let chaos_until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = vec![];
    for u in 0..users {
        let (url, log, drops) = (url.clone(), log.clone(), drops.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((u as u64 + 1) * 0x1000_0001));
            let mut session = 0u32;
            while Instant::now() < chaos_until {
                session += 1;
                let Ok((client, mut events)) = Client::login(LoginOptions::new(&url, format!("u{u}"))).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut outgoing = vec![];
                let mut incoming: Vec<InvitationId> = vec![];
                let mut calls: Vec<InvitationId> = vec![];
                // This session lives until a random drop, or the chaos ends.
                let session_end = Instant::now() + Duration::from_millis(300 + rng.below(2500));
                loop {
                    let pause = Duration::from_millis(20 + rng.below(150));
                    tokio::select! {
                        e = events.next() => match e {
                            Some(event) => {
                                match &event {
                                    Event::RemoteInvitationReceived { invitation } => incoming.push(invitation.invitation_id.clone()),
                                    Event::LocalInvitationAccepted { invitation, .. } => calls.extend(invitation.invitation_id.clone()),
                                    Event::RemoteInvitationAccepted { invitation } => calls.push(invitation.invitation_id.clone()),
                                    _ => {}
                                }
                                let moved = is_move(&event);
                                log.lock().unwrap().push(Seen { session: (u, session), at: Instant::now(), event });
                                if moved {
                                    // A new device of the user from here on: its own record.
                                    session += 1;
                                    incoming.clear();
                                    calls.clear();
                                }
                            }
                            None => break, // the server went away (restart)
                        },
                        _ = tokio::time::sleep(pause) => {
                            if Instant::now() >= session_end || Instant::now() >= chaos_until {
                                break;
                            }
                            match rng.below(10) {
                                0..=2 => {
                                    let callee = format!("u{}", (u + 1 + rng.below(users as u64 - 1) as usize) % users);
                                    if let Ok(inv) = client.create_local_invitation(&callee) {
                                        if client.send_local_invitation(&inv).await.is_ok() {
                                            outgoing.push(inv);
                                        }
                                    }
                                }
                                3 => {
                                    if let Some(inv) = outgoing.pop() {
                                        let _ = client.cancel_local_invitation(&inv).await;
                                    }
                                }
                                4..=5 => {
                                    if let Some(id) = incoming.pop() {
                                        let _ = client.accept_remote_invitation(&id, "").await;
                                    }
                                }
                                6 => {
                                    if let Some(id) = incoming.pop() {
                                        let _ = client.refuse_remote_invitation(&id, "", rng.below(2) == 0).await;
                                    }
                                }
                                7..=8 => {
                                    if let Some(id) = calls.pop() {
                                        let _ = client.hang_up(&id).await;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                // End the session: half the time by dropping the connection, else by logging out.
                if rng.below(2) == 0 {
                    *drops.lock().unwrap() += 1;
                    drop(client);
                } else {
                    let _ = client.logout().await;
                }
                // Whatever the client reports at the end of the session is part of the record.
                // A client may still be resuming (up to its give-up time, heartbeat + grace).
                while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(20), events.next()).await {
                    let moved = is_move(&event);
                    log.lock().unwrap().push(Seen { session: (u, session), at: Instant::now(), event });
                    if moved {
                        session += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            }
        }));
    }
    // The network: short cuts every few hundred milliseconds; at a quarter of
    // the run an outage longer than the grace window.
    let cuts = Arc::new(Mutex::new(0u32));
    let network = tokio::spawn({
        let (proxy, cuts) = (proxy.clone(), cuts.clone());
        async move {
            let mut rng = Rng(0xC0FFEE);
            let outage_at = Instant::now() + Duration::from_millis(seconds * 250);
            let mut outage_done = false;
            while Instant::now() < chaos_until {
                tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
                if !outage_done && Instant::now() >= outage_at {
                    outage_done = true;
                    proxy.block(true);
                    proxy.cut();
                    tokio::time::sleep(grace + Duration::from_millis(700)).await;
                    proxy.block(false);
                } else {
                    proxy.cut();
                    *cuts.lock().unwrap() += 1;
                }
            }
        }
    });
    // Restart the (last) server half-way through.
    tokio::time::sleep(Duration::from_millis(seconds * 500)).await;
    if let Some((stop, server)) = servers.pop() {
        stop.cancel();
        server.await.unwrap().unwrap();
    }
    let last = ports[ports.len() - 1];
    servers.push(start_server(last, config.clone()).await);
    network.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    for (stop, server) in servers {
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    // ---- the invariants ----
    let log = log.lock().unwrap().clone();
    let mut caller_final: HashMap<InvitationId, Vec<&Seen>> = HashMap::new();
    let mut sent_at: HashMap<InvitationId, Instant> = HashMap::new();
    let mut callee_final: HashMap<(InvitationId, (usize, u32)), Vec<&Seen>> = HashMap::new();
    let mut received: HashMap<(InvitationId, (usize, u32)), Vec<&Seen>> = HashMap::new();
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    for s in &log {
        let id = match s.event.invitation_id() {
            Some(id) => id.clone(),
            None => continue,
        };
        match &s.event {
            Event::LocalInvitationSent { .. } => {
                sent_at.insert(id, s.at);
            }
            Event::LocalInvitationAccepted { .. }
            | Event::LocalInvitationRefused { .. }
            | Event::LocalInvitationCanceled { .. }
            | Event::LocalInvitationFailure { .. } => {
                caller_final.entry(id).or_default().push(s);
            }
            Event::RemoteInvitationReceived { .. } => {
                received.entry((id, s.session)).or_default().push(s)
            }
            Event::RemoteInvitationAccepted { .. }
            | Event::RemoteInvitationRefused { .. }
            | Event::RemoteInvitationCanceled { .. }
            | Event::RemoteInvitationFailure { .. } => {
                callee_final.entry((id, s.session)).or_default().push(s);
            }
            _ => {}
        }
    }
    // 1. Every sent invitation has exactly one final state at its caller.
    for (id, at) in &sent_at {
        let finals = caller_final.get(id).map_or(0, Vec::len);
        assert_eq!(finals, 1, "invitation {id}: {finals} final caller events");
        let f = caller_final[id][0];
        let outcome = match &f.event {
            Event::LocalInvitationFailure { reason, .. } => format!("failure:{reason}"),
            e => e.name().trim_start_matches("local_invitation_").to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
        // Nothing rang past its timeout (plus slack for scheduling).
        if !matches!(f.event, Event::LocalInvitationAccepted { .. }) {
            assert!(
                f.at.duration_since(*at) <= ring + Duration::from_secs(2),
                "{id} ended after {:?}: {:?}",
                f.at.duration_since(*at),
                f.event
            );
        }
    }
    // 2. Every callee session that got it has exactly one final state, and got it once.
    for (key, r) in &received {
        assert_eq!(r.len(), 1, "{:?} received {} times", key, r.len());
        let finals = callee_final.get(key).map_or(0, Vec::len);
        assert_eq!(
            finals,
            1,
            "{:?}: {finals} final callee events; that session saw: {:#?}",
            key,
            log.iter()
                .filter(|s| s.session == key.1)
                .map(|s| &s.event)
                .collect::<Vec<_>>()
        );
        let f = callee_final[key][0];
        if !matches!(f.event, Event::RemoteInvitationAccepted { .. }) {
            assert!(
                f.at.duration_since(r[0].at) <= ring + Duration::from_secs(2),
                "{key:?} rang {:?}",
                f.at.duration_since(r[0].at)
            );
        }
    }
    // 3. The sides agree: an accept or refusal the caller saw happened on exactly one callee device,
    //    and a callee never saw an accept the caller did not (unless the caller's session ended first).
    for (id, finals) in &caller_final {
        let callee: Vec<&&Seen> = callee_final
            .iter()
            .filter(|((i, _), _)| i == id)
            .flat_map(|(_, v)| v.iter())
            .collect();
        let accepted_here = callee
            .iter()
            .filter(|s| matches!(s.event, Event::RemoteInvitationAccepted { .. }))
            .count();
        let refused_here = callee
            .iter()
            .filter(|s| matches!(s.event, Event::RemoteInvitationRefused { .. }))
            .count();
        match &finals[0].event {
            Event::LocalInvitationAccepted { .. } => assert_eq!(
                accepted_here, 1,
                "{id}: caller accepted, callees {callee:?}"
            ),
            Event::LocalInvitationRefused { .. } => {
                assert_eq!(refused_here, 1, "{id}: caller refused, callees {callee:?}")
            }
            Event::LocalInvitationFailure {
                reason: FailureReason::NotLoggedIn,
                ..
            } => {
                assert!(accepted_here + refused_here <= 1, "{id}: two answers")
            }
            other => assert_eq!(
                accepted_here + refused_here,
                0,
                "{id}: caller saw {other:?} but a callee answered: {callee:?}"
            ),
        }
    }
    // 4. No event came twice to one session, and every session that was cut
    //    either resumed or ended with a reason (never hung in `reconnecting`).
    let mut by_session: BTreeMap<(usize, u32), Vec<&Event>> = BTreeMap::new();
    for s in &log {
        by_session.entry(s.session).or_default().push(&s.event);
    }
    let (mut resumed, mut expired, mut moved) = (0u32, 0u32, 0u32);
    for (session, events) in &by_session {
        let mut seen = std::collections::HashSet::new();
        for e in events {
            if !matches!(
                e,
                Event::ConnectionStateChanged { .. } | Event::PresenceChanged { .. }
            ) {
                assert!(seen.insert(format!("{e:?}")), "{session:?} got {e:?} twice");
            }
        }
        let states: Vec<(ConnectionState, ConnectionReason)> = events
            .iter()
            .filter_map(|e| match e {
                Event::ConnectionStateChanged { state, reason } => Some((*state, *reason)),
                _ => None,
            })
            .collect();
        for w in states.windows(2) {
            if w[0].0 == ConnectionState::Reconnecting {
                assert_ne!(
                    w[1].0,
                    ConnectionState::Reconnecting,
                    "{session:?}: {states:?}"
                );
            }
        }
        if let Some(last) = states.last() {
            assert_ne!(
                last.0,
                ConnectionState::Reconnecting,
                "{session:?} still reconnecting"
            );
        }
        resumed += states
            .iter()
            .filter(|s| s.1 == ConnectionReason::Resumed)
            .count() as u32;
        expired += states
            .iter()
            .filter(|s| s.1 == ConnectionReason::SessionExpired)
            .count() as u32;
        moved += states
            .iter()
            .filter(|s| s.1 == ConnectionReason::SessionMoved)
            .count() as u32;
    }
    let total_events = log.len();
    println!(
        "fault test: {users} users, {} node(s), {seconds} s, 1 server restart, {} network cuts, 1 outage longer than the {grace:?} grace window, {} clients vanished; {resumed} sessions resumed, {moved} taken over by another node, {expired} expired; {} invitations, {} callee deliveries, {} events; caller outcomes: {:?}",
        ports.len(),
        cuts.lock().unwrap(),
        drops.lock().unwrap(),
        sent_at.len(),
        received.len(),
        total_events,
        outcomes
    );
    assert!(
        sent_at.len() > 10,
        "the chaos made too few invitations to mean anything"
    );
    assert!(
        resumed > 0,
        "no session was resumed: the cuts tested nothing"
    );
}
