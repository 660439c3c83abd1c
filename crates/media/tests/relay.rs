//! Calls through a real TURN server: a private coturn on 127.0.0.1 with a
//! shared secret, engines that get coturn REST credentials as the
//! callinvite server hands them out.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use callinvite_media::{
    start, IceServer, MediaConfig, MediaError, MediaEvent, MediaSignal, MediaState, NullSink, Role,
    SilenceSource,
};
use support::coturn::Coturn;
use support::{assert_hears, call, samples, unchanged, wait_until, Peer};

/// Generous bound for connecting (allocations, permissions, ICE).
const CONNECT: Duration = Duration::from_secs(15);
/// How long the call runs once connected.
const TALK: Duration = Duration::from_secs(3);
const SECRET: &str = "relay-test-secret-0123456789";

fn relay_only(server: IceServer) -> MediaConfig {
    MediaConfig {
        ice_servers: vec![server],
        relay_only: true,
        bind_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..MediaConfig::default()
    }
}

/// Every candidate line `p` sent: trickled ones and those in its SDP.
fn candidates(p: &Peer) -> Vec<String> {
    let mut out = Vec::new();
    for s in &p.log().signals {
        match s {
            MediaSignal::Candidate { candidate } => out.push(candidate.clone()),
            MediaSignal::Offer { sdp } | MediaSignal::Answer { sdp } => out.extend(
                sdp.lines()
                    .filter_map(|l| l.strip_prefix("a="))
                    .filter(|l| l.starts_with("candidate:"))
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    out
}

fn print_stats(who: &str, p: &Peer) {
    let s = p.last_stats().expect("stats");
    eprintln!(
        "{who}: rtt {:?} ms, relayed {}, relay packets {}, sent {}, received {}, loss {:.3}, \
         jitter {:.1} ms, delay {} ms",
        s.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
        s.relayed,
        s.relay_packets,
        s.packets_sent,
        s.packets_received,
        s.loss,
        s.jitter_ms,
        s.playout_delay_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_goes_through_coturn() {
    support::init_tracing();
    let coturn = Coturn::start(SECRET);
    eprintln!(
        "coturn on {} relaying on 127.0.0.1:{}-{}",
        coturn.addr, coturn.relay_ports.0, coturn.relay_ports.1
    );
    let started = Instant::now();
    let (a, b) = call(
        relay_only(coturn.ice_server("alice")),
        relay_only(coturn.ice_server("bob")),
        440.0,
        880.0,
        unchanged(),
        unchanged(),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    eprintln!("connected through the relay in {:?}", started.elapsed());
    tokio::time::sleep(TALK).await;

    let (rec_a, rec_b) = (a.sink.samples(), b.sink.samples());
    let second = samples(1000);
    assert!(rec_a.len() >= 2 * second && rec_b.len() >= 2 * second);
    assert_hears("A hears B", &rec_a[rec_a.len() - second..], 880.0, 440.0);
    assert_hears("B hears A", &rec_b[rec_b.len() - second..], 440.0, 880.0);

    // Only relay candidates, on coturn's relay ports, ever left either side.
    for (who, p) in [("A", &a), ("B", &b)] {
        let cands = candidates(p);
        eprintln!("{who}'s candidates: {cands:?}");
        assert!(!cands.is_empty(), "{who} sent no candidate");
        for c in &cands {
            assert!(
                c.contains(" typ relay"),
                "{who} sent a non-relay candidate: {c}"
            );
            let port: u16 = c.split(' ').nth(5).unwrap().parse().unwrap();
            assert!(
                (coturn.relay_ports.0..=coturn.relay_ports.1).contains(&port),
                "{who}: {c} is not on coturn's relay ports"
            );
        }
        assert!(p
            .log()
            .signals
            .iter()
            .any(|s| matches!(s, MediaSignal::EndOfCandidates)));
    }

    // The media itself went through the relays: each engine's selected
    // pair is its relay candidate, and most datagrams (50 RTP packets a
    // second each way, plus RTCP and ICE) went through TURN.
    for (who, p) in [("A", &a), ("B", &b)] {
        print_stats(who, p);
        let s = p.last_stats().unwrap();
        assert!(
            s.relayed,
            "{who}: the selected pair is not the relay: {s:?}"
        );
        assert!(
            s.relay_packets >= s.packets_sent + s.packets_received,
            "{who}: {s:?}"
        );
        assert!(s.packets_received > 100, "{who}: {s:?}");
    }

    // coturn's side: an allocation for each user (the REST user name is
    // `<expiry>:<user>`), and channels bound.
    for user in ["alice", "bob"] {
        let lines = coturn.log_lines(&[&format!(":{user}>"), "ALLOCATE", "success"]);
        assert!(
            !lines.is_empty(),
            "coturn logged no allocation for {user}:\n{}",
            coturn.log().join("\n")
        );
    }
    let binds = coturn.log_lines(&["CHANNEL_BIND", "success"]);
    eprintln!(
        "coturn: {} channel binds, e.g. {:?}",
        binds.len(),
        binds.first()
    );
    assert!(
        !binds.is_empty(),
        "coturn logged no channel bind:\n{}",
        coturn.log().join("\n")
    );

    // Hang up: both close, and both allocations are given back at once
    // (Refresh with lifetime 0), not left to expire. The allocations live
    // 600 s and are refreshed a minute before that, so a successful
    // REFRESH this early is the deallocation; coturn then closes the
    // session (its log says "allocation timeout" for lifetime 0).
    a.handle.close();
    a.wait_for(MediaState::Closed, CONNECT).await;
    b.wait_for(MediaState::Closed, CONNECT).await;
    b.handle.close();
    wait_until("coturn deleting both allocations", CONNECT, || {
        coturn.log_lines(&["REFRESH", "success"]).len() >= 2
            && coturn.log_lines(&["closed"]).len() >= 2
    })
    .await;
    for line in coturn
        .log_lines(&["REFRESH", "success"])
        .iter()
        .chain(&coturn.log_lines(&["closed"]))
    {
        eprintln!("coturn: {line}");
    }
    assert!(a.log().failures.is_empty() && b.log().failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_adds_a_relay_candidate_beside_the_host_one() {
    support::init_tracing();
    let coturn = Coturn::start(SECRET);
    let config = |user| MediaConfig {
        ice_servers: vec![coturn.ice_server(user)],
        ..support::loopback()
    };
    let (a, b) = call(
        config("alice"),
        config("bob"),
        440.0,
        880.0,
        unchanged(),
        unchanged(),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    wait_until("A's end of candidates", CONNECT, || {
        a.log()
            .signals
            .iter()
            .any(|s| matches!(s, MediaSignal::EndOfCandidates))
    })
    .await;
    let cands = candidates(&a);
    eprintln!("A's candidates: {cands:?}");
    assert!(cands.iter().any(|c| c.contains(" typ host")), "{cands:?}");
    assert!(cands.iter().any(|c| c.contains(" typ relay")), "{cands:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rec_b = b.sink.samples();
    assert_hears(
        "B hears A",
        &rec_b[rec_b.len() - samples(1000)..],
        440.0,
        880.0,
    );
    a.handle.close();
    b.handle.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_turn_credentials_fail_clearly() {
    support::init_tracing();
    let coturn = Coturn::start(SECRET);
    let mut server = coturn.ice_server("alice");
    server.credential = Some("not-the-password".into());
    let started = Instant::now();
    let (_handle, mut events) = start(
        Role::Offerer,
        relay_only(server),
        Box::new(SilenceSource),
        Box::new(NullSink),
    )
    .expect("the configuration itself is fine");
    let mut seen = Vec::new();
    // Hang guard only: the refusal takes one round trip.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => seen.push(e),
            Ok(None) => break,
            Err(_) => panic!("no end in sight: {seen:?}"),
        }
    }
    eprintln!("failed after {:?}: {:?}", started.elapsed(), seen);
    let failure = seen
        .iter()
        .find_map(|e| match e {
            MediaEvent::Failed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a failure");
    match &failure {
        MediaError::Turn(m) => assert!(m.contains("refused the TURN credentials"), "{m}"),
        other => panic!("{other:?}"),
    }
    eprintln!("{failure}");
    assert_eq!(seen.last(), Some(&MediaEvent::State(MediaState::Closed)));
    // Nothing about our addresses went out.
    for e in &seen {
        if let MediaEvent::Signal(MediaSignal::Candidate { candidate }) = e {
            panic!("a candidate went out: {candidate}");
        }
    }
    assert!(
        !coturn.log_lines(&["401"]).is_empty(),
        "coturn logged no 401"
    );
}
