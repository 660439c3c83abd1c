//! The video send thread: source → scale → VP8 → the engine task.
//!
//! One OS thread per call, because a source blocks (a camera waits for its
//! next frame) and encoding a 640×480 picture takes milliseconds — neither
//! may hold up the engine's 20 ms audio clock. The thread pulls a picture,
//! shows it to the preview sink, scales it to the rung of [`LADDER`] that
//! the bandwidth estimate allows, encodes it and hands the compressed frame
//! to the engine over its command channel (and to the encoded tap, if
//! there is one: a window decoding our preview itself; a tap that lost its
//! place gets a keyframe next). The engine talks back through
//! [`VideoSender`]: a new source (or none: camera off), a keyframe request
//! from the peer, a new bandwidth estimate.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::vp8::Vp8Encoder;
use super::{SharedEncodedSink, VideoFrame, VideoSink, VideoSource};
use crate::engine::Command;

/// Frame rate the encoder's rate control plans for (sources may deliver
/// fewer; the encoder's timestamps follow the real capture times).
pub const TARGET_FPS: u32 = 30;
/// Bitrate the estimate starts from before any feedback, bits/s.
pub const START_BITRATE: u64 = 600_000;
/// Most the encoder is ever asked for, bits/s (640×480 at 30 fps looks good
/// at about 1 Mbit/s; more is wasted on a call).
pub const MAX_BITRATE: u64 = 1_500_000;
/// Least the encoder is asked for, bits/s.
pub const MIN_BITRATE: u64 = 60_000;
/// Share of the estimate given to video (the rest: audio, RTCP, headroom).
const ESTIMATE_SHARE: f64 = 0.85;
/// Resolution rungs: (halvings of the source picture, the bitrate from
/// which this rung is used, bits/s). At 640×480 capture: 640×480 from
/// 450 kbit/s, 320×240 from 150 kbit/s, else 160×120.
const LADDER: [(u32, u64); 3] = [(0, 450_000), (1, 150_000), (2, 0)];
/// A rung is left for a larger picture only this far above its threshold,
/// so that an estimate wobbling around a threshold does not flip the size
/// (each change costs a keyframe).
const UPSCALE_MARGIN: f64 = 1.25;

/// What the engine asks of the thread.
pub(crate) enum SendCommand {
    /// Use this source from now on (`None`: send nothing — camera off).
    Source(Option<Box<dyn VideoSource>>),
    /// Make the next picture a keyframe: the peer asked (PLI/FIR), or a
    /// keyframe could not be sent (before the connection was up).
    Keyframe { from_peer: bool },
    /// The bandwidth estimate changed, bits/s.
    Estimate(u64),
    /// End the thread.
    Stop,
}

/// What the sending side did, read by the engine for its stats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoSendStats {
    /// Pictures encoded and handed to the engine since the start.
    pub frames_sent: u64,
    /// Keyframes among them.
    pub keyframes_sent: u64,
    /// Keyframes sent because the peer asked.
    pub keyframe_requests: u64,
    /// Size of the last picture sent (0×0 before any, or with no source).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// The encoder's target, bits/s.
    pub target_bitrate: u64,
    /// Encoding time of the last picture, microseconds.
    pub encode_us: u64,
    /// A source is set (the camera is on).
    pub source_on: bool,
}

/// A compressed frame for the engine to packetize.
pub(crate) struct OutgoingFrame {
    /// The VP8 frame.
    pub data: Vec<u8>,
    /// When its picture was taken: RTP time is derived from it.
    pub captured: Instant,
}

/// The engine's handle on the thread. Dropping it stops the thread (and
/// drops the source: a camera is released).
pub(crate) struct VideoSender {
    commands: Sender<SendCommand>,
    pub stats: Arc<Mutex<VideoSendStats>>,
    thread: Option<JoinHandle<()>>,
}

impl VideoSender {
    /// Starts the thread. Encoded frames go to `engine` as
    /// [`Command::VideoOut`].
    pub fn spawn(
        source: Option<Box<dyn VideoSource>>,
        preview: Option<Box<dyn VideoSink>>,
        encoded: Option<SharedEncodedSink>,
        engine: UnboundedSender<Command>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(VideoSendStats {
            target_bitrate: START_BITRATE,
            source_on: source.is_some(),
            ..Default::default()
        }));
        let worker = Worker {
            commands: rx,
            source,
            preview,
            encoded,
            engine,
            stats: stats.clone(),
            encoder: None,
            estimate: START_BITRATE,
            rung: 0,
            keyframe_due: true,
            started: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("video-send".into())
            .spawn(move || worker.run())?;
        Ok(VideoSender {
            commands: tx,
            stats,
            thread: Some(thread),
        })
    }

    /// Passes a command; a thread that has ended ignores it.
    pub fn send(&self, c: SendCommand) {
        let _ = self.commands.send(c);
    }

    /// A copy of the stats.
    pub fn stats(&self) -> VideoSendStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        let _ = self.commands.send(SendCommand::Stop);
        // Not joined: a camera may take up to a frame interval to return
        // from `next_frame`, and the engine must not wait for it. The
        // thread ends (dropping the source) as soon as it sees `Stop`.
        drop(self.thread.take());
    }
}

/// The thread's state.
struct Worker {
    commands: Receiver<SendCommand>,
    source: Option<Box<dyn VideoSource>>,
    preview: Option<Box<dyn VideoSink>>,
    /// Our compressed frames, as encoded.
    encoded: Option<SharedEncodedSink>,
    engine: UnboundedSender<Command>,
    stats: Arc<Mutex<VideoSendStats>>,
    /// Made (again) whenever the picture size changes.
    encoder: Option<Vp8Encoder>,
    /// Latest bandwidth estimate, bits/s.
    estimate: u64,
    /// Current rung of [`LADDER`].
    rung: usize,
    /// The next picture is encoded as a keyframe.
    keyframe_due: bool,
    /// Origin of the encoder's timestamps.
    started: Instant,
}

impl Worker {
    fn run(mut self) {
        loop {
            // Without a source, wait for a command; with one, only look.
            let command = if self.source.is_none() {
                match self.commands.recv_timeout(Duration::from_secs(1)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match self.commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            if let Some(c) = command {
                if !self.on_command(c) {
                    return;
                }
                continue;
            }
            let Some(source) = self.source.as_mut() else {
                continue;
            };
            let Some(picture) = source.next_frame() else {
                tracing::warn!("the video source ended; sending no video");
                self.set_source(None);
                continue;
            };
            if let Some(p) = self.preview.as_mut() {
                p.frame(&picture);
            }
            if !self.encode_and_send(picture) {
                return;
            }
        }
    }

    /// Returns false to end the thread.
    fn on_command(&mut self, c: SendCommand) -> bool {
        match c {
            SendCommand::Source(s) => self.set_source(s),
            SendCommand::Keyframe { from_peer } => {
                self.keyframe_due = true;
                if from_peer {
                    if let Ok(mut s) = self.stats.lock() {
                        s.keyframe_requests += 1;
                    }
                }
            }
            SendCommand::Estimate(bps) => self.on_estimate(bps),
            SendCommand::Stop => return false,
        }
        true
    }

    fn set_source(&mut self, s: Option<Box<dyn VideoSource>>) {
        let on = s.is_some();
        self.source = s;
        // A new source starts with a keyframe, so the peer can show it at
        // once whatever it had before.
        self.keyframe_due = true;
        if let Ok(mut st) = self.stats.lock() {
            st.source_on = on;
            if !on {
                st.width = 0;
                st.height = 0;
            }
        }
    }

    fn video_bitrate(&self) -> u64 {
        ((self.estimate as f64 * ESTIMATE_SHARE) as u64).clamp(MIN_BITRATE, MAX_BITRATE)
    }

    fn on_estimate(&mut self, bps: u64) {
        self.estimate = bps;
        let target = self.video_bitrate();
        self.rung = pick_rung(self.rung, target);
        if let Some(enc) = self.encoder.as_mut() {
            if let Err(e) = enc.set_bitrate((target / 1000) as u32) {
                tracing::warn!("{e}");
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            s.target_bitrate = target;
        }
    }

    /// Returns false when the engine is gone.
    fn encode_and_send(&mut self, picture: VideoFrame) -> bool {
        let captured = picture.captured;
        let mut picture = picture;
        for _ in 0..LADDER[self.rung].0 {
            if picture.width() < 64 || picture.height() < 64 {
                break;
            }
            picture = picture.half();
        }
        let size = (picture.width(), picture.height());
        if self.encoder.as_ref().map(|e| e.size()) != Some(size) {
            let kbps = (self.video_bitrate() / 1000) as u32;
            match Vp8Encoder::new(size.0, size.1, TARGET_FPS, kbps) {
                Ok(e) => {
                    tracing::info!("video: encoding {}x{} at {kbps} kbit/s", size.0, size.1);
                    self.encoder = Some(e);
                    self.keyframe_due = true;
                }
                Err(e) => {
                    tracing::warn!("video encoder: {e}; sending no video");
                    self.set_source(None);
                    return true;
                }
            }
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return true;
        };
        let pts = (captured.saturating_duration_since(self.started).as_micros() * 9 / 100) as i64;
        let t0 = Instant::now();
        let force = std::mem::take(&mut self.keyframe_due);
        let encoded = match encoder.encode(&picture, pts, force) {
            Ok(Some(f)) => f,
            Ok(None) => return true, // dropped by rate control
            Err(e) => {
                tracing::warn!("{e}");
                self.keyframe_due = true;
                return true;
            }
        };
        if let Ok(mut s) = self.stats.lock() {
            s.frames_sent += 1;
            s.keyframes_sent += u64::from(encoded.keyframe);
            s.width = size.0;
            s.height = size.1;
            s.encode_us = t0.elapsed().as_micros() as u64;
        }
        if let Some(tap) = &self.encoded {
            let mut tap = tap.lock().unwrap_or_else(|e| e.into_inner());
            if tap.local(&encoded.data, encoded.keyframe, size.0, size.1) {
                self.keyframe_due = true;
            }
        }
        self.engine
            .send(Command::VideoOut(OutgoingFrame {
                data: encoded.data,
                captured,
            }))
            .is_ok()
    }
}

/// The rung for `bitrate`, moving up (to a larger picture) only with
/// [`UPSCALE_MARGIN`] to spare.
fn pick_rung(current: usize, bitrate: u64) -> usize {
    let wanted = LADDER
        .iter()
        .position(|&(_, from)| bitrate >= from)
        .unwrap_or(LADDER.len() - 1);
    if wanted < current {
        // Larger: only if clearly above the threshold.
        let from = LADDER[wanted].1 as f64 * UPSCALE_MARGIN;
        if (bitrate as f64) < from {
            return (wanted + 1).min(current);
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_shrinks_with_the_bitrate_and_grows_back_with_margin() {
        assert_eq!(pick_rung(0, 1_000_000), 0);
        assert_eq!(pick_rung(0, 400_000), 1);
        assert_eq!(pick_rung(1, 100_000), 2);
        // Just above the threshold: stay small.
        assert_eq!(pick_rung(1, 460_000), 1);
        assert_eq!(pick_rung(2, 160_000), 2);
        // Well above: grow.
        assert_eq!(pick_rung(1, 600_000), 0);
        assert_eq!(pick_rung(2, 600_000), 0);
    }

    #[test]
    fn the_tap_gets_our_frames_from_a_keyframe_on_and_a_keyframe_when_it_asks() {
        use crate::video::tap_tests::{assert_decodes, Recorder};
        use crate::video::TestPattern;
        use std::sync::atomic::Ordering;

        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let tap = Recorder::default();
        let source = TestPattern::new(320, 240, 60).unwrap();
        let sender =
            VideoSender::spawn(Some(Box::new(source)), None, Some(tap.shared()), tx).unwrap();
        let wait_for = |what: &str, done: &dyn Fn(&[crate::video::tap_tests::Tapped]) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let frames = tap.local.lock().unwrap().clone();
                if done(&frames) {
                    return frames;
                }
                assert!(Instant::now() < deadline, "{what}: {} frames", frames.len());
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let first = wait_for("ten frames", &|f| f.len() >= 10);
        assert_eq!((first[0].2, first[0].3), (320, 240));
        assert!(
            first[1..].iter().all(|f| !f.1),
            "no keyframe but the first unasked"
        );
        tap.want_keyframe.store(true, Ordering::SeqCst);
        let n = first.len();
        let all = wait_for("a keyframe when asked", &|f| {
            f.len() > n + 2 && f[n..].iter().any(|t| t.1)
        });
        drop(sender);
        assert_decodes("our stream", &all);
        let again = all[n..].iter().position(|t| t.1).unwrap();
        assert!(again <= 2, "the keyframe came {again} frames after the ask");
    }
}
