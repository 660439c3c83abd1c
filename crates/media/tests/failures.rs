//! Bad input and impossible setups end cleanly: an event, a `Bye` for the
//! peer, `Closed` — never a panic.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callinvite_media::{
    start, IceServer, MediaConfig, MediaError, MediaEvent, MediaSignal, MediaState, NullSink, Role,
    SilenceSource,
};
use support::loopback;
use tokio::sync::mpsc::UnboundedReceiver;

/// Every event until the channel closes (at most `within`).
async fn all_events(mut rx: UnboundedReceiver<MediaEvent>, within: Duration) -> Vec<MediaEvent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => out.push(e),
            Ok(None) => return out,
            Err(_) => panic!("the event channel did not close; got {out:?}"),
        }
    }
}

/// Asserts the failure sequence: Failed(matching), Bye, Closed, and
/// returns the failure.
fn expect_failure(events: &[MediaEvent], matches: impl Fn(&MediaError) -> bool) -> MediaError {
    let failures: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Failed(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1, "{events:?}");
    assert!(matches(&failures[0]), "{:?}", failures[0]);
    let bye = events.iter().position(
        |e| matches!(e, MediaEvent::Signal(MediaSignal::Bye { reason }) if !reason.is_empty()),
    );
    let failed = events
        .iter()
        .position(|e| matches!(e, MediaEvent::Failed(_)));
    assert!(
        bye > failed,
        "a Bye for the peer follows the failure: {events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&MediaEvent::State(MediaState::Closed)),
        "{events:?}"
    );
    failures[0].clone()
}

fn answerer(config: MediaConfig) -> (callinvite_media::MediaHandle, UnboundedReceiver<MediaEvent>) {
    start(
        Role::Answerer,
        config,
        Box::new(SilenceSource),
        Box::new(NullSink),
    )
    .unwrap()
}

#[tokio::test]
async fn malformed_remote_sdp_fails_cleanly() {
    support::init_tracing();
    let (h, rx) = answerer(loopback());
    h.signal(MediaSignal::Offer {
        sdp: "v=0\r\nm=garbage".into(),
    });
    let events = all_events(rx, Duration::from_secs(5)).await;
    let e = expect_failure(
        &events,
        |e| matches!(e, MediaError::RemoteSdp(m) if !m.is_empty()),
    );
    eprintln!("failure: {e}");
    assert!(e.to_string().starts_with("remote sdp: "));
    // Nothing else was signalled (no answer to garbage).
    assert!(!events
        .iter()
        .any(|e| matches!(e, MediaEvent::Signal(MediaSignal::Answer { .. }))));
}

#[tokio::test]
async fn an_answer_without_a_pending_offer_fails_cleanly() {
    support::init_tracing();
    // A valid answer, taken from a real exchange between two engines.
    let (offerer, mut offers) = start(
        Role::Offerer,
        loopback(),
        Box::new(SilenceSource),
        Box::new(NullSink),
    )
    .unwrap();
    let (answering, mut answers) = answerer(loopback());
    let offer = loop {
        match offers.recv().await {
            Some(MediaEvent::Signal(s @ MediaSignal::Offer { .. })) => break s,
            Some(_) => continue,
            None => panic!("no offer"),
        }
    };
    answering.signal(offer);
    let answer = loop {
        match answers.recv().await {
            Some(MediaEvent::Signal(s @ MediaSignal::Answer { .. })) => break s,
            Some(_) => continue,
            None => panic!("no answer"),
        }
    };
    drop((offerer, answering));

    // An answerer has no offer pending.
    let (h, rx) = answerer(loopback());
    h.signal(answer);
    let events = all_events(rx, Duration::from_secs(5)).await;
    let e = expect_failure(&events, |e| matches!(e, MediaError::Negotiation(_)));
    eprintln!("failure: {e}");
}

#[tokio::test]
async fn no_peer_means_a_timeout() {
    support::init_tracing();
    let config = MediaConfig {
        connect_timeout: Duration::from_millis(500),
        ..loopback()
    };
    let started = Instant::now();
    let (_h, rx) = start(
        Role::Offerer,
        config,
        Box::new(SilenceSource),
        Box::new(NullSink),
    )
    .unwrap();
    let events = all_events(rx, Duration::from_secs(5)).await;
    eprintln!("timed out after {:?}", started.elapsed());
    expect_failure(&events, |e| *e == MediaError::Timeout(500));
    // The offer and our candidate went out before.
    assert!(matches!(
        events[1],
        MediaEvent::Signal(MediaSignal::Offer { .. })
    ));
    assert!(events
        .iter()
        .any(|e| matches!(e, MediaEvent::Signal(MediaSignal::EndOfCandidates))));
}

#[tokio::test]
async fn relay_only_without_a_usable_turn_server_is_refused() {
    let server = |url: &str, creds: bool| IceServer {
        urls: vec![url.into()],
        username: creds.then(|| "u".into()),
        credential: creds.then(|| "p".into()),
    };
    for ice_servers in [
        vec![],
        vec![server("stun:127.0.0.1:3478", false)],
        vec![server("turn:127.0.0.1:3478", false)],
        vec![server("turns:127.0.0.1:5349", true)],
        vec![server("turn:127.0.0.1:3478?transport=tcp", true)],
    ] {
        let config = MediaConfig {
            relay_only: true,
            ice_servers,
            ..loopback()
        };
        let r = start(
            Role::Offerer,
            config,
            Box::new(SilenceSource),
            Box::new(NullSink),
        );
        match r {
            Err(MediaError::Config(m)) => {
                eprintln!("refused: {m}");
                assert!(m.contains("relay_only needs a usable TURN server"), "{m}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn relay_only_with_a_silent_turn_server_fails() {
    support::init_tracing();
    // A socket that reads nothing: requests vanish, no ICMP either.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = MediaConfig {
        relay_only: true,
        ice_servers: vec![IceServer {
            urls: vec![format!("turn:{}", silent.local_addr().unwrap())],
            username: Some("1:u".into()),
            credential: Some("p".into()),
        }],
        connect_timeout: Duration::from_secs(30),
        ..loopback()
    };
    let started = Instant::now();
    let (_handle, rx) = start(
        Role::Offerer,
        config,
        Box::new(SilenceSource),
        Box::new(NullSink),
    )
    .unwrap();
    // The allocation gives up after 5 s, long before the connect timeout.
    let events = all_events(rx, Duration::from_secs(20)).await;
    eprintln!("failed after {:?}", started.elapsed());
    let e = expect_failure(&events, |e| matches!(e, MediaError::Turn(_)));
    eprintln!("{e}");
    assert!(e.to_string().contains("no answer"), "{e}");
    assert!(!events
        .iter()
        .any(|e| matches!(e, MediaEvent::Signal(MediaSignal::Candidate { .. }))));
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let r = start(
        Role::Offerer,
        loopback(),
        Box::new(SilenceSource),
        Box::new(NullSink),
    );
    assert_eq!(r.map(|_| ()).unwrap_err(), MediaError::NoRuntime);
}

#[tokio::test]
async fn a_stun_server_yields_a_server_reflexive_candidate() {
    support::init_tracing();
    // A fake STUN server that says every client is at 192.0.2.1 (a
    // "public" address), same port.
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            if n < 20 || buf[0..2] != [0, 1] {
                continue;
            }
            let mapped: SocketAddr = SocketAddr::new([192, 0, 2, 1].into(), from.port());
            let _ = server
                .send_to(&binding_success(&buf[8..20], mapped), from)
                .await;
        }
    });
    let config = MediaConfig {
        ice_servers: vec![IceServer {
            urls: vec![format!("stun:{server_addr}")],
            username: None,
            credential: None,
        }],
        ..loopback()
    };
    let (h, mut rx) = start(
        Role::Offerer,
        config,
        Box::new(SilenceSource),
        Box::new(NullSink),
    )
    .unwrap();
    let mut candidates = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(MediaEvent::Signal(MediaSignal::Candidate { candidate }))) => {
                candidates.push(candidate)
            }
            Ok(Some(MediaEvent::Signal(MediaSignal::EndOfCandidates))) => break,
            Ok(Some(_)) => {}
            other => panic!("no end of candidates: {other:?} after {candidates:?}"),
        }
    }
    eprintln!("candidates: {candidates:#?}");
    assert!(candidates.iter().any(|c| c.contains(" typ host")));
    let srflx = candidates
        .iter()
        .find(|c| c.contains(" typ srflx"))
        .expect("a server-reflexive candidate");
    assert!(srflx.contains(" 192.0.2.1 "), "{srflx}");
    h.close();
}

/// A STUN Binding success for transaction `tid` with XOR-MAPPED-ADDRESS
/// `mapped` (IPv4), written out by hand from RFC 8489.
fn binding_success(tid: &[u8], mapped: SocketAddr) -> Vec<u8> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let SocketAddr::V4(v4) = mapped else {
        unreachable!()
    };
    let port = mapped.port() ^ 0x2112;
    let mut m = vec![0x01, 0x01, 0, 12];
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(tid);
    m.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
    m.extend_from_slice(&port.to_be_bytes());
    m.extend(v4.ip().octets().iter().zip(COOKIE).map(|(a, c)| a ^ c));
    m
}
