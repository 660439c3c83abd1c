//! Helpers for the engine tests: wiring two engines together through
//! their signals, a lossy UDP relay, tone analysis (Goertzel), and a
//! private coturn (`coturn`).

#![allow(dead_code)]

pub mod coturn;

use std::f64::consts::PI;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use callinvite_media::video::bars_error;
use callinvite_media::{
    start_with_video, AudioProcessing, AudioSource, CallStats, MediaConfig, MediaError, MediaEvent,
    MediaHandle, MediaSignal, MediaState, NoProcessing, Role, SharedSink, ToneSource, VideoFrame,
    VideoIo, VideoSink, SAMPLE_RATE,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Engines on 127.0.0.1 only.
pub fn loopback() -> MediaConfig {
    MediaConfig {
        bind_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..MediaConfig::default()
    }
}

/// Samples in `ms` milliseconds.
pub fn samples(ms: u64) -> usize {
    (SAMPLE_RATE as u64 * ms / 1000) as usize
}

/// Power of `freq` in `x` (Goertzel over a Hann window), normalised so a
/// full-scale sine gives about 1.
pub fn tone_power(x: &[i16], freq: f64) -> f64 {
    let n = x.len();
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * PI * freq / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &v) in x.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos();
        let s = f64::from(v) / 32768.0 * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A Hann window's coherent gain is 1/2: a unit sine gives (n/4)^2.
    p / (n as f64 / 4.0).powi(2)
}

/// RMS of `x` as a fraction of full scale.
pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let s: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    (s / x.len() as f64).sqrt() / 32768.0
}

/// Frequencies probed besides the two tones.
pub const OFF_FREQS: [f64; 5] = [300.0, 620.0, 1000.0, 1320.0, 1500.0];

/// Asserts that `peer_hz` dominates `x` (the last second of a recording):
/// over 10× the power at `own_hz` and at every off frequency, and not
/// silence. Prints the measurements.
pub fn assert_hears(who: &str, x: &[i16], peer_hz: f64, own_hz: f64) {
    let peer = tone_power(x, peer_hz);
    let own = tone_power(x, own_hz);
    let level = rms(x);
    let offs: Vec<(f64, f64)> = OFF_FREQS.iter().map(|&f| (f, tone_power(x, f))).collect();
    eprintln!(
        "{who}: rms {level:.3}; power at {peer_hz} Hz {peer:.2e}, at {own_hz} Hz {own:.2e}, off {}",
        offs.iter()
            .map(|(f, p)| format!("{f} Hz {p:.1e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        level > 0.05,
        "{who}: the recording is (near) silence: rms {level}"
    );
    assert!(
        peer > 10.0 * own,
        "{who}: {peer_hz} Hz {peer:e} vs own {own_hz} Hz {own:e}"
    );
    for (f, p) in offs {
        assert!(
            peer > 10.0 * p,
            "{who}: {peer_hz} Hz {peer:e} vs {f} Hz {p:e}"
        );
    }
}

/// What one engine reported, as seen by its forwarder.
#[derive(Debug, Default)]
pub struct Log {
    /// Every state, with when.
    pub states: Vec<(Instant, MediaState)>,
    /// Every failure.
    pub failures: Vec<MediaError>,
    /// Every stats snapshot.
    pub stats: Vec<CallStats>,
    /// Every signal the engine emitted (before rewriting).
    pub signals: Vec<MediaSignal>,
    /// Every `RemoteVideo` report, with when.
    pub remote_video: Vec<(Instant, bool)>,
    /// The event channel closed.
    pub ended: bool,
}

/// One picture a [`FrameLog`] saw.
#[derive(Debug, Clone, Copy)]
pub struct SeenFrame {
    pub at: Instant,
    pub width: u32,
    pub height: u32,
    /// `bars_error` of the picture against the test pattern.
    pub bars_error: u8,
}

/// A video sink that notes every picture (and checks it against the test
/// pattern).
#[derive(Clone, Default)]
pub struct FrameLog(pub Arc<Mutex<Vec<SeenFrame>>>);

impl FrameLog {
    pub fn frames(&self) -> Vec<SeenFrame> {
        self.0.lock().unwrap().clone()
    }

    /// Pictures seen within `window` before now.
    pub fn recent(&self, window: Duration) -> Vec<SeenFrame> {
        let now = Instant::now();
        self.frames()
            .into_iter()
            .filter(|f| now.duration_since(f.at) <= window)
            .collect()
    }
}

impl VideoSink for FrameLog {
    fn frame(&mut self, frame: &VideoFrame) {
        let seen = SeenFrame {
            at: Instant::now(),
            width: frame.width(),
            height: frame.height(),
            bars_error: bars_error(frame),
        };
        self.0.lock().unwrap().push(seen);
    }
}

/// One engine under test.
pub struct Peer {
    /// Its handle.
    pub handle: MediaHandle,
    /// What it reported.
    pub log: Arc<Mutex<Log>>,
    /// What it played.
    pub sink: SharedSink,
}

impl Peer {
    pub fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    /// Whether the engine reported `s` at some point.
    pub fn reached(&self, s: MediaState) -> bool {
        self.log().states.iter().any(|(_, x)| *x == s)
    }

    /// Waits (at most `timeout`) until the engine reports `s`.
    pub async fn wait_for(&self, s: MediaState, timeout: Duration) {
        let what = format!("{s:?}");
        wait_until(&what, timeout, || self.reached(s)).await;
    }

    pub fn last_stats(&self) -> Option<CallStats> {
        self.log().stats.last().cloned()
    }
}

/// Polls `cond` every 10 ms; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A rewrite applied to signals on their way to the other engine: `None`
/// drops the signal; a vector may add signals.
pub type Rewrite = Box<dyn FnMut(MediaSignal) -> Vec<MediaSignal> + Send>;

/// Passes every signal unchanged.
pub fn unchanged() -> Rewrite {
    Box::new(|s| vec![s])
}

/// Forwards every signal of `events` to `to` (through `rewrite`), logging
/// everything into `log`, until the channel closes.
pub fn forward(
    mut events: UnboundedReceiver<MediaEvent>,
    to: MediaHandle,
    log: Arc<Mutex<Log>>,
    mut rewrite: Rewrite,
) {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                MediaEvent::Signal(s) => {
                    log.lock().unwrap().signals.push(s.clone());
                    for s in rewrite(s) {
                        to.signal(s);
                    }
                }
                MediaEvent::State(s) => log.lock().unwrap().states.push((Instant::now(), s)),
                MediaEvent::Failed(e) => log.lock().unwrap().failures.push(e),
                MediaEvent::Stats(s) => log.lock().unwrap().stats.push(s),
                MediaEvent::RemoteVideo(v) => {
                    log.lock().unwrap().remote_video.push((Instant::now(), v))
                }
            }
        }
        log.lock().unwrap().ended = true;
    });
}

/// Starts A (offerer, tone `a_hz`) and B (answerer, tone `b_hz`) and wires
/// their signals together through the rewrites.
pub fn call(
    config_a: MediaConfig,
    config_b: MediaConfig,
    a_hz: f32,
    b_hz: f32,
    a_to_b: Rewrite,
    b_to_a: Rewrite,
) -> (Peer, Peer) {
    call_with(
        (
            config_a,
            Box::new(ToneSource::new(a_hz, 0.3)),
            Box::new(NoProcessing),
        ),
        (
            config_b,
            Box::new(ToneSource::new(b_hz, 0.3)),
            Box::new(NoProcessing),
        ),
        a_to_b,
        b_to_a,
    )
}

/// One side of [`call_with`]: its configuration, what its microphone
/// hears, its voice processing.
pub type Side = (MediaConfig, Box<dyn AudioSource>, Box<dyn AudioProcessing>);

/// [`call`] with any sources and voice processing: A offers, B answers.
pub fn call_with(a: Side, b: Side, a_to_b: Rewrite, b_to_a: Rewrite) -> (Peer, Peer) {
    call_av(a, b, None, None, a_to_b, b_to_a)
}

/// [`call_with`] with video on either side.
pub fn call_av(
    a: Side,
    b: Side,
    video_a: Option<VideoIo>,
    video_b: Option<VideoIo>,
    a_to_b: Rewrite,
    b_to_a: Rewrite,
) -> (Peer, Peer) {
    let sink_a = SharedSink::new();
    let sink_b = SharedSink::new();
    let (ha, ea) = start_with_video(
        Role::Offerer,
        a.0,
        a.1,
        Box::new(sink_a.clone()),
        a.2,
        video_a,
    )
    .expect("start A");
    let (hb, eb) = start_with_video(
        Role::Answerer,
        b.0,
        b.1,
        Box::new(sink_b.clone()),
        b.2,
        video_b,
    )
    .expect("start B");
    let a = Peer {
        handle: ha,
        log: Arc::default(),
        sink: sink_a,
    };
    let b = Peer {
        handle: hb,
        log: Arc::default(),
        sink: sink_b,
    };
    forward(ea, b.handle.clone(), a.log.clone(), a_to_b);
    forward(eb, a.handle.clone(), b.log.clone(), b_to_a);
    (a, b)
}

/// Replaces the address of every host candidate in `text` (an SDP or a
/// candidate line) by `to`.
pub fn rewrite_host_candidates(text: &str, to: SocketAddr) -> String {
    text.split('\n')
        .map(|line| {
            let (body, cr) = match line.strip_suffix('\r') {
                Some(b) => (b, "\r"),
                None => (line, ""),
            };
            if !body.contains("candidate:") || !body.contains(" typ host") {
                return line.to_owned();
            }
            let mut tokens: Vec<String> = body.split(' ').map(str::to_owned).collect();
            if tokens.len() > 5 {
                tokens[4] = to.ip().to_string();
                tokens[5] = to.port().to_string();
            }
            format!("{}{cr}", tokens.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rewrite that makes the other engine see `to` as this engine's address.
pub fn via(to: SocketAddr) -> Rewrite {
    Box::new(move |s| {
        vec![match s {
            MediaSignal::Offer { sdp } => MediaSignal::Offer {
                sdp: rewrite_host_candidates(&sdp, to),
            },
            MediaSignal::Answer { sdp } => MediaSignal::Answer {
                sdp: rewrite_host_candidates(&sdp, to),
            },
            MediaSignal::Candidate { candidate } => MediaSignal::Candidate {
                candidate: rewrite_host_candidates(&candidate, to),
            },
            other => other,
        }]
    })
}

/// Counters of a [`Relay`].
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
}

/// A UDP relay between A and B that loses and delays packets: A sends to
/// `for_a` (B's address as A knows it), B sends to `for_b`.
pub struct Relay {
    /// Where A's packets go (advertise to A as B's address).
    pub for_a: SocketAddr,
    /// Where B's packets go (advertise to B as A's address).
    pub for_b: SocketAddr,
    /// Forwarded and dropped packets.
    pub counters: Arc<RelayCounters>,
    /// While set, every packet is dropped.
    pub blackout: Arc<AtomicBool>,
}

impl Relay {
    /// A relay dropping `loss` (0..1) of the packets and delaying each by a
    /// uniformly random 0..`max_delay` (so packets also get reordered).
    pub async fn start(loss: f64, max_delay: Duration) -> Relay {
        let from_a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let from_b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let relay = Relay {
            for_a: from_a.local_addr().unwrap(),
            for_b: from_b.local_addr().unwrap(),
            counters: Arc::default(),
            blackout: Arc::default(),
        };
        let counters = relay.counters.clone();
        let blackout = relay.blackout.clone();
        tokio::spawn(async move {
            let (mut a_addr, mut b_addr) = (None, None);
            let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
            loop {
                // A packet from A goes out of `from_b` (where B expects A)
                // to B, and vice versa.
                let (data, out, to) = tokio::select! {
                    r = from_a.recv_from(&mut buf_a) => {
                        let Ok((n, src)) = r else { continue };
                        a_addr = Some(src);
                        (buf_a[..n].to_vec(), from_b.clone(), b_addr)
                    }
                    r = from_b.recv_from(&mut buf_b) => {
                        let Ok((n, src)) = r else { continue };
                        b_addr = Some(src);
                        (buf_b[..n].to_vec(), from_a.clone(), a_addr)
                    }
                };
                let Some(to) = to else {
                    // The other side has not sent anything yet: we cannot
                    // know where it is. ICE retransmits.
                    continue;
                };
                if blackout.load(Ordering::Relaxed) || fastrand::f64() < loss {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counters.forwarded.fetch_add(1, Ordering::Relaxed);
                let delay = max_delay.mul_f64(fastrand::f64());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = out.send_to(&data, to).await;
                });
            }
        });
        relay
    }
}
