//! Measures a 640×480/30 video call between two engines over 127.0.0.1:
//!
//! - **CPU per side**: the whole process's CPU time (`getrusage`) over the
//!   run, halved (both ends of the call run here, symmetric): capture of
//!   the test pattern, VP8 encode and decode, str0m, the audio path.
//!   Rendering is the application's and is measured there.
//! - **frame latency**: from a picture being taken (the source hands it
//!   over) to the peer's decoder handing it to the sink — encoding,
//!   packetizing, the network, reassembly, decoding. The picture is known
//!   by the test pattern's moving block: its position is the frame number
//!   modulo 73.
//! - received frame rate, picture size, bitrate, and the process's memory.
//!
//! `--noise` adds camera-like sensor noise to the pattern (a real camera's
//! picture costs the encoder more than flat colour bars).
//!
//! `cargo run --release -p callinvite-media --example video_call [-- --noise]`

#[path = "common/mod.rs"]
mod common;
use common::cpu_time;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callinvite_media::{
    start_with_video, MediaConfig, MediaEvent, MediaHandle, MediaState, NoProcessing, NullSink,
    Role, SilenceSource, TestPattern, VideoFrame, VideoIo, VideoSink, VideoSource,
};
use tokio::sync::mpsc::UnboundedReceiver;

const RUN: Duration = Duration::from_secs(10);
const W: u32 = 640;
const H: u32 = 480;
/// The pattern's moving block at 640 wide: 64 px wide, 8 px a frame, 73
/// positions; its rows are around 420.
const STEP: usize = 8;
const TRAVEL: u64 = 73;
const BLOCK_ROW: u32 = 420;

/// The test pattern (with optional noise), noting when each frame was taken.
struct Recorded {
    pattern: TestPattern,
    taken: Arc<Mutex<Vec<Instant>>>,
    /// Pre-made noise planes (luma offsets), cycled.
    noise: Vec<Vec<i8>>,
}

impl VideoSource for Recorded {
    fn next_frame(&mut self) -> Option<VideoFrame> {
        let mut f = self.pattern.next_frame()?;
        let mut taken = self.taken.lock().unwrap();
        if !self.noise.is_empty() {
            let noise = &self.noise[taken.len() % self.noise.len()];
            let (y, _, _) = f.planes_mut();
            for (p, n) in y.iter_mut().zip(noise) {
                *p = p.saturating_add_signed(*n);
            }
        }
        taken.push(f.captured);
        Some(f)
    }
}

/// Notes, for each decoded picture, when and which frame (mod 73) it was.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Instant, u64, u32)>>>);

impl VideoSink for Seen {
    fn frame(&mut self, f: &VideoFrame) {
        let now = Instant::now();
        // Scale the block row and positions from 640 wide to this size.
        let scale = W as usize / f.width() as usize;
        let row = BLOCK_ROW / scale as u32;
        let (y, _, _) = f.planes();
        let w = f.width() as usize;
        let line = &y[row as usize * w..(row as usize + 1) * w];
        // The block's left edge: the first bright pixel.
        if let Some(x) = line.iter().position(|&v| v > 140) {
            let pos = ((x * scale + STEP / 2) / STEP) as u64 % TRAVEL;
            self.0.lock().unwrap().push((now, pos, f.width()));
        }
    }
}

fn forward(
    mut events: UnboundedReceiver<MediaEvent>,
    to: MediaHandle,
    states: tokio::sync::watch::Sender<Option<MediaState>>,
    stats: Arc<Mutex<Option<callinvite_media::CallStats>>>,
) {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                MediaEvent::Signal(s) => to.signal(s),
                MediaEvent::State(s) => {
                    let _ = states.send(Some(s));
                }
                MediaEvent::Stats(s) => *stats.lock().unwrap() = Some(s),
                MediaEvent::Failed(e) => eprintln!("failed: {e}"),
                MediaEvent::RemoteVideo(_) => {}
            }
        }
    });
}

/// Resident memory in MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / 1048576.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let noisy = std::env::args().any(|a| a == "--noise");
    let config = MediaConfig {
        bind_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..MediaConfig::default()
    };
    let noise: Vec<Vec<i8>> = if noisy {
        (0..8)
            .map(|_| (0..W * H).map(|_| fastrand::i8(-12..=12)).collect())
            .collect()
    } else {
        Vec::new()
    };
    let rss0 = rss_mib();
    let taken_a = Arc::new(Mutex::new(Vec::new()));
    let taken_b = Arc::new(Mutex::new(Vec::new()));
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let io = |taken: &Arc<Mutex<Vec<Instant>>>, seen: &Seen| VideoIo {
        source: Some(Box::new(Recorded {
            pattern: TestPattern::new(W, H, 30).unwrap(),
            taken: taken.clone(),
            noise: noise.clone(),
        })),
        preview: None,
        sink: Box::new(seen.clone()),
        encoded: None,
    };
    let (a, a_events) = start_with_video(
        Role::Offerer,
        config.clone(),
        Box::new(SilenceSource),
        Box::new(NullSink),
        Box::new(NoProcessing),
        Some(io(&taken_a, &seen_a)),
    )?;
    let (b, b_events) = start_with_video(
        Role::Answerer,
        config,
        Box::new(SilenceSource),
        Box::new(NullSink),
        Box::new(NoProcessing),
        Some(io(&taken_b, &seen_b)),
    )?;
    let (a_state, _) = tokio::sync::watch::channel(None);
    let (b_state, mut b_watch) = tokio::sync::watch::channel(None);
    let (a_stats, b_stats) = (Arc::default(), Arc::default());
    forward(a_events, b.clone(), a_state, Arc::clone(&a_stats));
    forward(b_events, a.clone(), b_state, Arc::clone(&b_stats));
    tokio::time::timeout(
        Duration::from_secs(10),
        b_watch.wait_for(|s| *s == Some(MediaState::Connected)),
    )
    .await??;
    // Let the bandwidth estimate and the picture size settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let seen_from = seen_b.0.lock().unwrap().len();
    tokio::time::sleep(RUN).await;
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    let rss = rss_mib();

    // B's pictures are A's frames: match each to the latest frame of A
    // with that position taken before it was shown.
    let taken = taken_a.lock().unwrap().clone();
    let seen = seen_b.0.lock().unwrap()[seen_from..].to_vec();
    let mut latencies: Vec<f64> = seen
        .iter()
        .filter_map(|(at, pos, _)| {
            let n = (0..taken.len())
                .rev()
                .find(|&n| n as u64 % TRAVEL == *pos && taken[n] <= *at)?;
            Some(at.duration_since(taken[n]).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    a.close();
    b.close();

    println!(
        "640x480 at 30 fps{}, two engines on 127.0.0.1, {:.1} s measured",
        if noisy { " with sensor noise" } else { "" },
        wall.as_secs_f64()
    );
    if let Some(v) = b_stats
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|s| s.video.clone())
    {
        println!(
            "B receives {}x{} at {:.1} fps; A sends {:.0} kbit/s (target {} kbit/s); encode {:.2} ms, decode {:.2} ms per picture (last)",
            v.received_width,
            v.received_height,
            seen.len() as f64 / wall.as_secs_f64(),
            a_stats.lock().unwrap().as_ref().and_then(|s| s.video.as_ref()).map_or(0, |v| v.sent_kbps),
            v.target_kbps,
            v.encode_ms,
            v.decode_ms
        );
    }
    if latencies.is_empty() {
        println!("no frame latency measured");
    } else {
        println!(
            "frame latency (taken → decoded at the peer), {} pictures: min {:.1} ms, median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            latencies.len(),
            latencies[0],
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            latencies[latencies.len() - 1]
        );
    }
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "CPU: {share:.1} % of one core for both ends = {:.1} % per side",
        share / 2.0
    );
    println!(
        "memory: {rss:.0} MiB RSS, {:.0} MiB more than before the call ({:.0} per side)",
        rss - rss0,
        (rss - rss0) / 2.0
    );
    Ok(())
}
