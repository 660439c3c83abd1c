//! Video calls between two engines on 127.0.0.1: the test pattern goes
//! through VP8 and str0m both ways and comes out with its colour bars, at
//! a measured frame rate; the camera switched off and on; a lossy path
//! recovers with keyframe requests; a relay-only call through coturn; a
//! peer without video still talks; the compressed frames tapped for a
//! window decode from a keyframe on, also over a lossy path.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use callinvite_media::video::{bars_error, Vp8Decoder};
use callinvite_media::{
    EncodedVideoSink, IceServer, MediaConfig, MediaState, NoProcessing, NullVideoSink, TestPattern,
    ToneSource, VideoIo,
};
use support::coturn::Coturn;
use support::{
    assert_hears, call_av, loopback, samples, unchanged, via, wait_until, FrameLog, Peer, Relay,
    Side,
};

const CONNECT: Duration = Duration::from_secs(15);
/// The colour bars must come through VP8 this close (0–255 per channel).
const MAX_BARS_ERROR: u8 = 40;

fn side(config: MediaConfig, hz: f32) -> Side {
    (
        config,
        Box::new(ToneSource::new(hz, 0.3)),
        Box::new(NoProcessing),
    )
}

/// Video with the 640×480/30 test pattern, received into `log`.
fn pattern_video(log: &FrameLog) -> VideoIo {
    VideoIo {
        source: Some(Box::new(TestPattern::new(640, 480, 30).unwrap())),
        preview: None,
        sink: Box::new(log.clone()),
        encoded: None,
    }
}

/// Frames per second in `frames` (first to last).
fn fps(frames: &[support::SeenFrame]) -> f64 {
    if frames.len() < 2 {
        return 0.0;
    }
    let span = frames[frames.len() - 1].at - frames[0].at;
    (frames.len() - 1) as f64 / span.as_secs_f64().max(0.001)
}

/// Asserts that `log` shows the pattern: pictures in the last second, of
/// the right size (`None`: any of the sender's rungs, 640×480 halved
/// down to 160×120 as the bandwidth estimate allows), with the bars'
/// colours. Prints the figures.
fn assert_sees_pattern(who: &str, log: &FrameLog, size: impl Into<Option<(u32, u32)>>) {
    let size = size.into();
    let allowed = |s: (u32, u32)| match size {
        Some(want) => s == want,
        None => [(640, 480), (320, 240), (160, 120)].contains(&s),
    };
    let recent = log.recent(Duration::from_secs(1));
    let all = log.frames();
    let worst = recent.iter().map(|f| f.bars_error).max().unwrap_or(255);
    eprintln!(
        "{who}: {} pictures in all, {} in the last second ({:.1} fps), worst bars error {worst}, size {:?}",
        all.len(),
        recent.len(),
        fps(&recent),
        recent.last().map(|f| (f.width, f.height)),
    );
    assert!(
        recent.len() >= 5,
        "{who}: hardly any pictures in the last second: {}",
        recent.len()
    );
    assert!(
        recent.iter().all(|f| allowed((f.width, f.height))),
        "{who}: sizes {:?}",
        recent
            .iter()
            .map(|f| (f.width, f.height))
            .collect::<Vec<_>>()
    );
    assert!(
        worst <= MAX_BARS_ERROR,
        "{who}: the colour bars are off by {worst}"
    );
}

fn print_video_stats(who: &str, p: &Peer) {
    let s = p.last_stats().expect("stats");
    eprintln!("{who}: {:?}", s.video);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_exchange_the_test_pattern() {
    support::init_tracing();
    let (log_a, log_b) = (FrameLog::default(), FrameLog::default());
    let (a, b) = call_av(
        side(loopback(), 440.0),
        side(loopback(), 880.0),
        Some(pattern_video(&log_a)),
        Some(pattern_video(&log_b)),
        unchanged(),
        unchanged(),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    let connected = Instant::now();
    wait_until("A's first picture", CONNECT, || !log_a.frames().is_empty()).await;
    wait_until("B's first picture", CONNECT, || !log_b.frames().is_empty()).await;
    eprintln!(
        "first pictures {:?} / {:?} after connecting",
        log_a.frames()[0].at.saturating_duration_since(connected),
        log_b.frames()[0].at.saturating_duration_since(connected)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_sees_pattern("A sees B", &log_a, (640, 480));
    assert_sees_pattern("B sees A", &log_b, (640, 480));
    // The sound goes on beside the picture.
    let (rec_a, rec_b) = (a.sink.samples(), b.sink.samples());
    let second = samples(1000);
    assert_hears("A hears B", &rec_a[rec_a.len() - second..], 880.0, 440.0);
    assert_hears("B hears A", &rec_b[rec_b.len() - second..], 440.0, 880.0);
    for (who, p) in [("A", &a), ("B", &b)] {
        print_video_stats(who, p);
        let v = p.last_stats().unwrap().video.expect("video stats");
        assert!(v.camera_on && v.receiving, "{who}: {v:?}");
        assert!(v.frames_sent > 0 && v.frames_decoded > 0, "{who}: {v:?}");
        assert!(v.keyframes_received >= 1, "{who}: {v:?}");
        assert!(
            p.log().remote_video.first().is_some_and(|(_, on)| *on),
            "{who}: no RemoteVideo(true)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_goes_off_and_on_again() {
    support::init_tracing();
    let (log_a, log_b) = (FrameLog::default(), FrameLog::default());
    let (a, b) = call_av(
        side(loopback(), 440.0),
        side(loopback(), 880.0),
        Some(pattern_video(&log_a)),
        Some(pattern_video(&log_b)),
        unchanged(),
        unchanged(),
    );
    b.wait_for(MediaState::Connected, CONNECT).await;
    wait_until("B sees A", CONNECT, || {
        b.log().remote_video.last().is_some_and(|(_, on)| *on)
    })
    .await;

    // Camera off: B is told the picture stopped; the sound goes on.
    let off = Instant::now();
    a.handle.set_video_source(None);
    wait_until(
        "B is told A's video stopped",
        Duration::from_secs(5),
        || b.log().remote_video.last().is_some_and(|(_, on)| !*on),
    )
    .await;
    eprintln!(
        "RemoteVideo(false) {:?} after the camera went off",
        off.elapsed()
    );
    let frames_off = log_b.frames().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        log_b.frames().len(),
        frames_off,
        "pictures while the camera is off"
    );
    let rec = b.sink.samples();
    assert_hears("B hears A", &rec[rec.len() - samples(1000)..], 440.0, 880.0);
    let v = a.last_stats().unwrap().video.unwrap();
    assert!(!v.camera_on, "{v:?}");

    // On again: the picture is back, starting with a keyframe.
    let on = Instant::now();
    a.handle
        .set_video_source(Some(Box::new(TestPattern::new(640, 480, 30).unwrap())));
    wait_until(
        "B is told A's video is back",
        Duration::from_secs(5),
        || b.log().remote_video.last().is_some_and(|(_, on)| *on),
    )
    .await;
    eprintln!(
        "RemoteVideo(true) {:?} after the camera came on",
        on.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_sees_pattern("B sees A again", &log_b, (640, 480));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_path_recovers_with_keyframe_requests() {
    support::init_tracing();
    // 5 % loss each way and 0–30 ms of jitter (so also reordering).
    let relay = Relay::start(0.05, Duration::from_millis(30)).await;
    let (log_a, log_b) = (FrameLog::default(), FrameLog::default());
    let (a, b) = call_av(
        side(loopback(), 440.0),
        side(loopback(), 880.0),
        Some(pattern_video(&log_a)),
        Some(pattern_video(&log_b)),
        via(relay.for_b),
        via(relay.for_a),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    eprintln!(
        "relay: {} forwarded, {} dropped",
        relay
            .counters
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed),
        relay
            .counters
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    for (who, log, receiver, sender) in [("A sees B", &log_a, &a, &b), ("B sees A", &log_b, &b, &a)]
    {
        let frames = log.frames();
        // Freezes: gaps between pictures over 100 ms.
        let mut freezes: Vec<Duration> = frames
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .filter(|d| *d > Duration::from_millis(100))
            .collect();
        freezes.sort();
        eprintln!(
            "{who}: {} pictures, {} freezes over 100 ms, longest {:?}",
            frames.len(),
            freezes.len(),
            freezes.last()
        );
        print_video_stats(who, receiver);
        // The picture keeps coming and stays right (smaller, if the
        // sender's estimate went down with the loss).
        assert_sees_pattern(who, log, None);
        let rv = receiver.last_stats().unwrap().video.unwrap();
        let sv = sender.last_stats().unwrap().video.unwrap();
        // Whatever was lost beyond retransmission was repaired by a later
        // keyframe: one the receiver asked for, or one the sender made
        // anyway (a new picture size) — its PLIs cross the same lossy path.
        eprintln!(
            "{who}: the sender's keyframes {} ({} asked for)",
            sv.keyframes_sent, sv.keyframe_requests_received
        );
        if rv.frames_dropped > 0 {
            assert!(rv.keyframes_requested > 0, "{who}: {rv:?}");
            assert!(rv.keyframes_received > 1, "{who}: {rv:?}");
        }
    }
}

/// The compressed frames a window would get: (data, keyframe, width, height).
type Tapped = Vec<(Vec<u8>, bool, u32, u32)>;

/// Records the tapped streams, the peer's and ours.
#[derive(Clone, Default)]
struct TapLog {
    remote: Arc<Mutex<Tapped>>,
    local: Arc<Mutex<Tapped>>,
}

impl EncodedVideoSink for TapLog {
    fn remote(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool {
        let f = (data.to_vec(), keyframe, width, height);
        self.remote.lock().unwrap().push(f);
        false
    }
    fn local(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool {
        let f = (data.to_vec(), keyframe, width, height);
        self.local.lock().unwrap().push(f);
        false
    }
}

/// Decodes a tapped stream from its first frame with one decoder, as a
/// window does: it must start with a keyframe, every frame must decode to
/// its stated size, and the pictures must show the pattern. Returns the
/// number of keyframes.
fn assert_tapped_stream_decodes(who: &str, frames: &Tapped) -> usize {
    assert!(frames.len() > 30, "{who}: {} frames tapped", frames.len());
    assert!(
        frames[0].1,
        "{who}: the stream does not start with a keyframe"
    );
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut worst = 0;
    for (i, (data, _, w, h)) in frames.iter().enumerate() {
        let picture = decoder
            .decode(data)
            .unwrap_or_else(|e| panic!("{who}: tapped frame {i} does not decode: {e}"))
            .unwrap_or_else(|| panic!("{who}: tapped frame {i} gave no picture"));
        assert_eq!(
            (picture.width(), picture.height()),
            (*w, *h),
            "{who}: frame {i}"
        );
        worst = worst.max(bars_error(&picture));
    }
    let keyframes = frames.iter().filter(|f| f.1).count();
    eprintln!(
        "{who}: {} frames tapped ({keyframes} keyframes, {} kB), decoded in order, worst bars error {worst}",
        frames.len(),
        frames.iter().map(|f| f.0.len()).sum::<usize>() / 1000
    );
    assert!(worst <= MAX_BARS_ERROR, "{who}: bars error {worst}");
    keyframes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tapped_compressed_frames_decode_from_a_keyframe_on_over_a_lossy_path() {
    support::init_tracing();
    // As in the lossy test: 5 % loss each way, jitter.
    let relay = Relay::start(0.05, Duration::from_millis(30)).await;
    let (log_a, log_b) = (FrameLog::default(), FrameLog::default());
    let tap = TapLog::default();
    let mut video_a = pattern_video(&log_a);
    video_a.encoded = Some(Box::new(tap.clone()));
    let (a, b) = call_av(
        side(loopback(), 440.0),
        side(loopback(), 880.0),
        Some(video_a),
        Some(pattern_video(&log_b)),
        via(relay.for_b),
        via(relay.for_a),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop((a, b));
    let remote = tap.remote.lock().unwrap().clone();
    let local = tap.local.lock().unwrap().clone();
    // The peer's: exactly the frames decoded into the sink, in order.
    let shown = log_a.frames().len();
    assert!(
        remote.len().abs_diff(shown) <= 2,
        "{} tapped against {shown} decoded",
        remote.len()
    );
    assert_tapped_stream_decodes("the peer's frames as tapped", &remote);
    // Ours: every frame encoded, the first a keyframe (before the
    // connection was up: the preview shows from the start).
    assert_tapped_stream_decodes("our frames as tapped", &local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_video_call_goes_through_coturn() {
    support::init_tracing();
    let coturn = Coturn::start("video-relay-secret-0123456789");
    let relay_only = |server: IceServer| MediaConfig {
        ice_servers: vec![server],
        relay_only: true,
        bind_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..MediaConfig::default()
    };
    let (log_a, log_b) = (FrameLog::default(), FrameLog::default());
    let (a, b) = call_av(
        side(relay_only(coturn.ice_server("alice")), 440.0),
        side(relay_only(coturn.ice_server("bob")), 880.0),
        Some(pattern_video(&log_a)),
        Some(pattern_video(&log_b)),
        unchanged(),
        unchanged(),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_sees_pattern("A sees B through coturn", &log_a, (640, 480));
    assert_sees_pattern("B sees A through coturn", &log_b, (640, 480));
    for (who, p) in [("A", &a), ("B", &b)] {
        let s = p.last_stats().unwrap();
        print_video_stats(who, p);
        assert!(s.relayed, "{who}: not through the relay: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_video_still_talks() {
    support::init_tracing();
    let log_b = FrameLog::default();
    // A offers video; B has none (an audio-only build or peer).
    let (a, b) = call_av(
        side(loopback(), 440.0),
        side(loopback(), 880.0),
        Some(VideoIo {
            source: Some(Box::new(TestPattern::new(320, 240, 15).unwrap())),
            preview: None,
            sink: Box::new(NullVideoSink),
            encoded: None,
        }),
        None,
        unchanged(),
        unchanged(),
    );
    a.wait_for(MediaState::Connected, CONNECT).await;
    b.wait_for(MediaState::Connected, CONNECT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rec_a, rec_b) = (a.sink.samples(), b.sink.samples());
    assert_hears(
        "A hears B",
        &rec_a[rec_a.len() - samples(1000)..],
        880.0,
        440.0,
    );
    assert_hears(
        "B hears A",
        &rec_b[rec_b.len() - samples(1000)..],
        440.0,
        880.0,
    );
    assert!(a.log().failures.is_empty() && b.log().failures.is_empty());
    assert!(log_b.frames().is_empty());
    assert!(b.last_stats().unwrap().video.is_none());
}

/// What PROTOCOL.md §3b.2 promises about the offer of a call with video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_video_offer_is_what_the_protocol_doc_says() {
    let (a, b) = call_av(
        side(loopback(), 440.0),
        side(loopback(), 880.0),
        Some(pattern_video(&FrameLog::default())),
        Some(pattern_video(&FrameLog::default())),
        unchanged(),
        unchanged(),
    );
    b.wait_for(MediaState::Connected, CONNECT).await;
    let offer = a
        .log()
        .signals
        .iter()
        .find_map(|s| match s {
            callinvite_media::MediaSignal::Offer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .expect("an offer");
    eprintln!("{offer}");
    for needed in [
        "a=group:BUNDLE",
        "a=rtcp-mux",
        "m=audio",
        "opus/48000/2",
        "useinbandfec=1",
        "m=video",
        "VP8/90000",
        "rtx/90000",
        "nack pli",
        "ccm fir",
        "transport-cc",
        "transport-wide-cc",
    ] {
        assert!(offer.contains(needed), "the offer lacks {needed}:\n{offer}");
    }
    assert!(!offer.contains("H264"), "we offer VP8 only:\n{offer}");
}
