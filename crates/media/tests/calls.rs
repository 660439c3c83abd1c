//! Two real engines on 127.0.0.1 talking WebRTC to each other, wired by
//! forwarding each other's signals as the server would.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use callinvite_media::{MediaConfig, MediaSignal, MediaState};
use support::{assert_hears, call, loopback, rms, samples, unchanged, via, wait_until, Relay};

/// Generous bound for anything that should take milliseconds.
const CONNECT: Duration = Duration::from_secs(10);
/// How long the call runs once connected.
const TALK: Duration = Duration::from_secs(3);

fn print_stats(who: &str, p: &support::Peer) {
    match p.last_stats() {
        Some(s) => eprintln!(
            "{who}: rtt {:?} ms, loss {:.3}, jitter {:.1} ms, sent {}, received {}, \
             fec {}, concealed {}, late {}, delay {} ms, mic {:.3}, speaker {:.3}",
            s.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
            s.loss,
            s.jitter_ms,
            s.packets_sent,
            s.packets_received,
            s.fec_frames,
            s.concealed_frames,
            s.late_packets,
            s.playout_delay_ms,
            s.mic_level,
            s.speaker_level
        ),
        None => eprintln!("{who}: no stats"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_exchange_tones() {
    support::init_tracing();
    let (a, b) = call(
        loopback(),
        loopback(),
        440.0,
        880.0,
        unchanged(),
        unchanged(),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    tokio::time::sleep(TALK).await;

    let rec_a = a.sink.samples();
    let rec_b = b.sink.samples();
    eprintln!(
        "recorded {} ms at A, {} ms at B",
        rec_a.len() / samples(1),
        rec_b.len() / samples(1)
    );
    assert!(rec_a.len() >= samples(2000) && rec_b.len() >= samples(2000));
    let second = samples(1000);
    assert_hears("A hears B", &rec_a[rec_a.len() - second..], 880.0, 440.0);
    assert_hears("B hears A", &rec_b[rec_b.len() - second..], 440.0, 880.0);
    print_stats("A", &a);
    print_stats("B", &b);
    let stats = b.last_stats().expect("stats arrive about once a second");
    assert!(stats.packets_received > 0 && stats.packets_sent > 0);
    assert!(
        stats.mic_level > 0.1 && stats.speaker_level > 0.1,
        "{stats:?}"
    );
    let tone_rms = rms(&rec_b[rec_b.len() - second..]);

    // A hangs up: B learns it (Bye signal, RTCP BYE, DTLS close) and its
    // playout goes on with silence until B is closed too.
    let close_at = b.sink.len();
    a.handle.close();
    a.wait_for(MediaState::Closed, CONNECT).await;
    b.wait_for(MediaState::Closed, CONNECT).await;
    assert!(
        a.log()
            .signals
            .iter()
            .any(|s| matches!(s, MediaSignal::Bye { .. })),
        "A said bye"
    );
    wait_until("B's playout after the close", CONNECT, || {
        b.sink.len() >= close_at + samples(400)
    })
    .await;
    let rec_b = b.sink.samples();
    let after = &rec_b[close_at..];
    let tail = &after[after.len() - samples(200)..];
    eprintln!(
        "B after the close: rms of the last 200 ms {:.4} (tone {:.3})",
        rms(tail),
        tone_rms
    );
    assert!(rms(tail) < tone_rms / 10.0);
    b.handle.close();
    wait_until("B's event channel to close", CONNECT, || b.log().ended).await;
    assert!(a.log().failures.is_empty() && b.log().failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_path_keeps_the_tone() {
    support::init_tracing();
    let relay = Relay::start(0.05, Duration::from_millis(50)).await;
    // Each engine only learns the relay's address as the other's candidate.
    let (a, b) = call(
        loopback(),
        loopback(),
        440.0,
        880.0,
        via(relay.for_b),
        via(relay.for_a),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    tokio::time::sleep(TALK + Duration::from_secs(1)).await;

    let second = samples(1000);
    let rec_a = a.sink.samples();
    let rec_b = b.sink.samples();
    assert_hears("A hears B", &rec_a[rec_a.len() - second..], 880.0, 440.0);
    assert_hears("B hears A", &rec_b[rec_b.len() - second..], 440.0, 880.0);
    let forwarded = relay.counters.forwarded.load(Ordering::Relaxed);
    let dropped = relay.counters.dropped.load(Ordering::Relaxed);
    eprintln!(
        "relay: {forwarded} forwarded, {dropped} dropped ({:.1} %)",
        100.0 * dropped as f64 / (forwarded + dropped) as f64
    );
    print_stats("A", &a);
    print_stats("B", &b);
    for (who, p) in [("A", &a), ("B", &b)] {
        let log = p.log();
        let states: Vec<_> = log.states.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            states,
            [MediaState::Connecting, MediaState::Connected],
            "{who} stayed connected"
        );
        assert!(log.failures.is_empty(), "{who}: {:?}", log.failures);
        let s = log.stats.last().expect("stats");
        assert!(s.packets_received > 0);
        let concealed_or_recovered = s.fec_frames + s.concealed_frames + s.late_packets;
        assert!(concealed_or_recovered > 0, "{who}: nothing was lost? {s:?}");
    }

    // The path goes dead: B's playout conceals, fades, then plays silence.
    let tone_rms = rms(&rec_b[rec_b.len() - second..]);
    relay.blackout.store(true, Ordering::Relaxed);
    let cut_at = b.sink.len();
    wait_until("B's playout during the blackout", CONNECT, || {
        b.sink.len() >= cut_at + samples(600)
    })
    .await;
    let rec_b = b.sink.samples();
    let tail = &rec_b[rec_b.len() - samples(200)..];
    eprintln!(
        "B during the blackout: rms of the last 200 ms {:.4} (tone {tone_rms:.3})",
        rms(tail)
    );
    assert!(rms(tail) < tone_rms / 10.0);
    a.handle.close();
    b.handle.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_candidates_are_skipped_and_the_call_still_connects() {
    support::init_tracing();
    let garbage = |s: MediaSignal| {
        let mut out = vec![];
        if let MediaSignal::Candidate { .. } = s {
            for bad in [
                "candidate:garbage",
                "candidate:1 1 udp 2130706431 abcd.local 5000 typ host",
                "candidate:1 1 udp 2130706431 192.0.2.1 99999 typ host",
            ] {
                out.push(MediaSignal::Candidate {
                    candidate: bad.into(),
                });
            }
        }
        out.push(s);
        out
    };
    let (a, b) = call(
        loopback(),
        loopback(),
        440.0,
        880.0,
        Box::new(garbage),
        Box::new(garbage),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    assert!(a.log().failures.is_empty() && b.log().failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_with_an_ice_restart() {
    support::init_tracing();
    let relay = Relay::start(0.0, Duration::ZERO).await;
    let config = MediaConfig {
        connect_timeout: Duration::from_secs(30),
        ..loopback()
    };
    let (a, b) = call(
        config.clone(),
        config,
        440.0,
        880.0,
        via(relay.for_b),
        via(relay.for_a),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    let cut = std::time::Instant::now();
    relay.blackout.store(true, Ordering::Relaxed);
    a.wait_for(MediaState::Reconnecting, Duration::from_secs(30))
        .await;
    eprintln!("A noticed the outage after {:?}", cut.elapsed());
    wait_until("A's ICE restart offer", Duration::from_secs(10), || {
        a.log()
            .signals
            .iter()
            .filter(|s| matches!(s, MediaSignal::Offer { .. }))
            .count()
            == 2
    })
    .await;
    eprintln!("A offered an ICE restart after {:?}", cut.elapsed());
    relay.blackout.store(false, Ordering::Relaxed);
    let back = std::time::Instant::now();
    for p in [&a, &b] {
        wait_until("reconnected", Duration::from_secs(20), || {
            p.log().states.last().map(|(_, s)| *s) == Some(MediaState::Connected)
        })
        .await;
    }
    eprintln!("reconnected {:?} after the path came back", back.elapsed());
    eprintln!(
        "A: {:?}",
        a.log().states.iter().map(|(_, s)| *s).collect::<Vec<_>>()
    );
    eprintln!(
        "B: {:?}",
        b.log().states.iter().map(|(_, s)| *s).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rec_b = b.sink.samples();
    assert_hears(
        "B hears A again",
        &rec_b[rec_b.len() - samples(1000)..],
        440.0,
        880.0,
    );
    assert!(a.log().failures.is_empty() && b.log().failures.is_empty());
}
