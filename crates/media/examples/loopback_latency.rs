//! Measures two engines talking over 127.0.0.1:
//!
//! - **tone-onset latency**: A sends a 200 ms, 1 kHz burst once a second;
//!   the time from the source handing over the burst's first frame to the
//!   burst's first loud sample reaching B's sink — mouth to ear minus the
//!   devices (capture/playback buffers): framing, Opus, network, jitter
//!   buffer, decoding;
//! - **CPU time** of the whole process (both engines: one call, both ends)
//!   over 10 s, from `getrusage`.
//!
//! `cargo run --release -p callinvite-media --example loopback_latency`

#[path = "common/mod.rs"]
mod common;
use common::cpu_time;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callinvite_media::{
    start, AudioSink, AudioSource, MediaConfig, MediaEvent, MediaHandle, MediaState, Role,
    SilenceSource, ToneSource, FRAME_SAMPLES, SAMPLE_RATE,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long the measurement runs.
const RUN: Duration = Duration::from_secs(10);
/// A burst every this many frames (1 s), lasting `BURST_FRAMES` (200 ms).
const PERIOD_FRAMES: u64 = 50;
const BURST_FRAMES: u64 = 10;
/// A sample above this (of full scale) is "sound".
const THRESHOLD: f32 = 0.05;

/// Silence with a tone burst every second; notes when each burst starts.
struct BurstSource {
    tone: ToneSource,
    frame: u64,
    onsets: Arc<Mutex<Vec<Instant>>>,
}

impl AudioSource for BurstSource {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        let phase = self.frame % PERIOD_FRAMES;
        self.frame += 1;
        if phase < BURST_FRAMES {
            if phase == 0 {
                self.onsets.lock().unwrap().push(Instant::now());
            }
            self.tone.read(frame)
        } else {
            frame.fill(0);
            true
        }
    }
}

/// Notes when sound starts after a quiet spell, to the sample.
struct OnsetSink {
    quiet_frames: u32,
    onsets: Arc<Mutex<Vec<Instant>>>,
}

impl AudioSink for OnsetSink {
    fn write(&mut self, frame: &[i16]) {
        let now = Instant::now();
        let limit = (THRESHOLD * 32768.0) as i16;
        match frame.iter().position(|s| s.saturating_abs() > limit) {
            Some(i) if self.quiet_frames >= 5 => {
                let offset = Duration::from_secs_f64(i as f64 / f64::from(SAMPLE_RATE));
                self.onsets.lock().unwrap().push(now + offset);
                self.quiet_frames = 0;
            }
            Some(_) => self.quiet_frames = 0,
            None => self.quiet_frames += 1,
        }
    }
}

/// Forwards signals to `to`; reports states on `states`.
fn forward(
    mut events: UnboundedReceiver<MediaEvent>,
    to: MediaHandle,
    states: tokio::sync::watch::Sender<Option<MediaState>>,
) {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                MediaEvent::Signal(s) => to.signal(s),
                MediaEvent::State(s) => {
                    let _ = states.send(Some(s));
                }
                MediaEvent::Stats(s) => eprintln!("stats: {s:?}"),
                MediaEvent::Failed(e) => eprintln!("failed: {e}"),
                MediaEvent::RemoteVideo(on) => eprintln!("remote video: {on}"),
            }
        }
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = MediaConfig {
        bind_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..MediaConfig::default()
    };
    let sent = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let source = BurstSource {
        tone: ToneSource::new(1000.0, 0.3),
        frame: 0,
        onsets: sent.clone(),
    };
    let sink = OnsetSink {
        quiet_frames: 0,
        onsets: heard.clone(),
    };
    let (a, a_events) = start(
        Role::Offerer,
        config.clone(),
        Box::new(source),
        Box::new(callinvite_media::NullSink),
    )?;
    let (b, b_events) = start(
        Role::Answerer,
        config,
        Box::new(SilenceSource),
        Box::new(sink),
    )?;
    let (a_state, _) = tokio::sync::watch::channel(None);
    let (b_state, mut b_watch) = tokio::sync::watch::channel(None);
    forward(a_events, b.clone(), a_state);
    forward(b_events, a.clone(), b_state);
    tokio::time::timeout(
        Duration::from_secs(10),
        b_watch.wait_for(|s| *s == Some(MediaState::Connected)),
    )
    .await??;

    let cpu0 = cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(RUN).await;
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    a.close();
    b.close();

    let sent = sent.lock().unwrap().clone();
    let heard = heard.lock().unwrap().clone();
    let mut latencies: Vec<f64> = heard
        .iter()
        .filter_map(|h| {
            let s = sent.iter().rev().find(|s| *s <= h)?;
            Some(h.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "frame {} ms; {} bursts sent, {} heard",
        FRAME_SAMPLES * 1000 / SAMPLE_RATE as usize,
        sent.len(),
        heard.len()
    );
    if latencies.is_empty() {
        println!("no onset measured");
    } else {
        let median = latencies[latencies.len() / 2];
        println!(
            "tone-onset latency (source → sink, no device buffers): min {:.1} ms, median {median:.1} ms, max {:.1} ms",
            latencies[0],
            latencies[latencies.len() - 1]
        );
    }
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    println!(
        "CPU over {:.1} s: {:.3} s for both ends of the call = {share:.2} % of one core ({:.2} % per engine)",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        share / 2.0
    );
    Ok(())
}
