//! The video receive thread: the engine task → VP8 decoder → the sink.
//!
//! Decoding (and whatever the sink does: converting for a window) runs off
//! the engine task, on a thread fed through a bounded queue. A frame that
//! cannot be used — the queue is full, the decoder rejects it, or str0m
//! says frames were lost before it — means the pictures that follow may
//! refer to what we lack, so the thread waits for the next keyframe and
//! asks the engine to request one from the peer (PLI).
//!
//! The encoded tap, if there is one, gets exactly the frames the decoder
//! accepted, so its stream too starts at a keyframe and restarts at the
//! keyframe that repaired a loss; when it says it lost its place, a
//! keyframe is asked for as after a loss of ours.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::vp8::{is_keyframe, keyframe_size, Vp8Decoder};
use super::{SharedEncodedSink, VideoSink};
use crate::engine::Command;

/// Frames queued for the decoder; more means it cannot keep up, and the
/// newest are dropped (then a keyframe is asked for).
const QUEUE: usize = 30;
/// Largest picture we decode (a keyframe announcing more is dropped before
/// the decoder allocates for it): 1920×1088 — far above what we send, and
/// what browsers send in a call.
const MAX_PIXELS: u32 = 1920 * 1088;
/// While waiting for a keyframe, ask again this often.
const REPEAT_REQUEST: Duration = Duration::from_millis(500);

/// What the receiving side did, read by the engine for its stats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoReceiveStats {
    /// Pictures decoded and shown since the start.
    pub frames_decoded: u64,
    /// Frames dropped while waiting for a keyframe, undecodable, or
    /// because the queue was full.
    pub frames_dropped: u64,
    /// Keyframes received.
    pub keyframes_received: u64,
    /// Keyframes we asked for.
    pub keyframes_requested: u64,
    /// Size of the last picture.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// When the last picture was decoded.
    pub last_frame: Option<Instant>,
    /// Decoding time of the last picture, microseconds.
    pub decode_us: u64,
}

/// One received frame.
pub(crate) struct IncomingFrame {
    /// The VP8 frame (all its packets).
    pub data: Vec<u8>,
    /// str0m saw no gap before it.
    pub contiguous: bool,
}

/// The engine's handle on the thread. Dropping it ends the thread.
pub(crate) struct VideoReceiver {
    queue: SyncSender<IncomingFrame>,
    pub stats: Arc<Mutex<VideoReceiveStats>>,
    /// Ask for a keyframe the next time the engine looks.
    engine: UnboundedSender<Command>,
    _thread: JoinHandle<()>,
}

impl VideoReceiver {
    pub fn spawn(
        sink: Box<dyn VideoSink>,
        encoded: Option<SharedEncodedSink>,
        engine: UnboundedSender<Command>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stats = Arc::new(Mutex::new(VideoReceiveStats::default()));
        let worker = Worker {
            queue: rx,
            sink,
            encoded,
            engine: engine.clone(),
            stats: stats.clone(),
            decoder: None,
            waiting_for_keyframe: true,
            last_request: None,
            warned_oversize: false,
        };
        let thread = std::thread::Builder::new()
            .name("video-receive".into())
            .spawn(move || worker.run())?;
        Ok(VideoReceiver {
            queue: tx,
            stats,
            engine,
            _thread: thread,
        })
    }

    /// Queues a frame; a full queue drops it and asks for a keyframe.
    pub fn push(&self, f: IncomingFrame) {
        match self.queue.try_send(f) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!("video decoder behind: dropping a frame");
                if let Ok(mut s) = self.stats.lock() {
                    s.frames_dropped += 1;
                }
                let _ = self.engine.send(Command::RequestKeyframe);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub fn stats(&self) -> VideoReceiveStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

struct Worker {
    queue: Receiver<IncomingFrame>,
    sink: Box<dyn VideoSink>,
    /// The frames the decoder accepted, compressed.
    encoded: Option<SharedEncodedSink>,
    engine: UnboundedSender<Command>,
    stats: Arc<Mutex<VideoReceiveStats>>,
    /// Made on the first frame.
    decoder: Option<Vp8Decoder>,
    /// Frames are dropped until a keyframe arrives.
    waiting_for_keyframe: bool,
    /// When we last asked for a keyframe (asked again every
    /// [`REPEAT_REQUEST`] while still waiting: a PLI can be lost too).
    last_request: Option<Instant>,
    /// The oversize warning was logged (once per call).
    warned_oversize: bool,
}

impl Worker {
    fn run(mut self) {
        while let Ok(f) = self.queue.recv() {
            self.on_frame(f);
        }
    }

    fn lost(&mut self, why: &str) {
        tracing::debug!("video: {why}; waiting for a keyframe");
        if let Ok(mut s) = self.stats.lock() {
            s.frames_dropped += 1;
        }
        self.waiting_for_keyframe = true;
        self.maybe_request();
    }

    /// Asks for a keyframe unless one was asked for just now.
    fn maybe_request(&mut self) {
        let now = Instant::now();
        if self
            .last_request
            .is_some_and(|t| now.duration_since(t) < REPEAT_REQUEST)
        {
            return;
        }
        self.last_request = Some(now);
        if let Ok(mut s) = self.stats.lock() {
            s.keyframes_requested += 1;
        }
        let _ = self.engine.send(Command::RequestKeyframe);
    }

    fn on_frame(&mut self, f: IncomingFrame) {
        let key = is_keyframe(&f.data);
        if let Some((w, h)) = keyframe_size(&f.data).filter(|(w, h)| w * h > MAX_PIXELS) {
            if let Ok(mut s) = self.stats.lock() {
                s.frames_dropped += 1;
            }
            self.waiting_for_keyframe = true;
            if !std::mem::replace(&mut self.warned_oversize, true) {
                tracing::warn!(
                    "video: the peer sends {w}x{h} pictures, larger than we show: dropped"
                );
            }
            return;
        }
        if key {
            self.waiting_for_keyframe = false;
            if let Ok(mut s) = self.stats.lock() {
                s.keyframes_received += 1;
            }
        } else if !f.contiguous {
            return self.lost("frames were lost");
        } else if self.waiting_for_keyframe {
            if let Ok(mut s) = self.stats.lock() {
                s.frames_dropped += 1;
            }
            // Joined mid-stream (the first keyframe was lost) or the
            // request went missing: ask (again).
            return self.maybe_request();
        }
        if self.decoder.is_none() {
            match Vp8Decoder::new() {
                Ok(d) => self.decoder = Some(d),
                Err(e) => {
                    tracing::warn!("video decoder: {e}");
                    return;
                }
            }
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let t0 = Instant::now();
        match decoder.decode(&f.data) {
            Ok(Some(picture)) => {
                let decode_us = t0.elapsed().as_micros() as u64;
                self.tap(&f.data, key, picture.width(), picture.height());
                self.sink.frame(&picture);
                if let Ok(mut s) = self.stats.lock() {
                    s.frames_decoded += 1;
                    s.width = picture.width();
                    s.height = picture.height();
                    s.last_frame = Some(Instant::now());
                    s.decode_us = decode_us;
                }
            }
            // Accepted, but nothing to show (a hidden frame): later frames
            // may refer to it, so the tap gets it too, at the last size.
            Ok(None) => {
                let (w, h) = self
                    .stats
                    .lock()
                    .map(|s| (s.width, s.height))
                    .unwrap_or_default();
                self.tap(&f.data, key, w, h);
            }
            Err(e) => self.lost(&format!("undecodable frame ({e})")),
        }
    }

    /// Hands a frame the decoder accepted to the encoded tap; asks for a
    /// keyframe if it wants one.
    fn tap(&mut self, data: &[u8], key: bool, width: u32, height: u32) {
        let Some(tap) = &self.encoded else { return };
        let wants_keyframe = tap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remote(data, key, width, height);
        if wants_keyframe {
            self.maybe_request();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::vp8::Vp8Encoder;
    use crate::video::VideoFrame;

    /// Counts the pictures it is given.
    struct Count(Arc<Mutex<Vec<(u32, u32)>>>);

    impl VideoSink for Count {
        fn frame(&mut self, f: &VideoFrame) {
            self.0.lock().unwrap().push((f.width(), f.height()));
        }
    }

    fn keyframe(w: u32, h: u32) -> Vec<u8> {
        let mut enc = Vp8Encoder::new(w, h, 30, 500).unwrap();
        let f = VideoFrame::black(w, h).unwrap();
        enc.encode(&f, 0, true).unwrap().unwrap().data
    }

    #[test]
    fn a_picture_larger_than_we_show_is_never_decoded() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let shown = Arc::new(Mutex::new(Vec::new()));
        let receiver = VideoReceiver::spawn(Box::new(Count(shown.clone())), None, tx).unwrap();
        receiver.push(IncomingFrame {
            data: keyframe(2560, 1440),
            contiguous: true,
        });
        receiver.push(IncomingFrame {
            data: keyframe(640, 480),
            contiguous: true,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while shown.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the 640x480 keyframe was not shown"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*shown.lock().unwrap(), vec![(640, 480)]);
        assert_eq!(receiver.stats().frames_dropped, 1);
    }

    #[test]
    fn the_tap_gets_what_the_decoder_took_from_a_keyframe_on() {
        use crate::video::tap_tests::{assert_decodes, Recorder};
        use std::sync::atomic::Ordering;

        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let tap = Recorder::default();
        let receiver =
            VideoReceiver::spawn(Box::new(NullVideoSinkForTest), Some(tap.shared()), tx).unwrap();
        // A stream with keyframes at 0 and 6.
        let mut enc = Vp8Encoder::new(320, 240, 30, 500).unwrap();
        let mut pattern = crate::video::TestPattern::unpaced(320, 240).unwrap();
        let frames: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                use crate::video::VideoSource;
                let f = pattern.next_frame().unwrap();
                enc.encode(&f, i * 3000, i == 0 || i == 6)
                    .unwrap()
                    .unwrap()
                    .data
            })
            .collect();
        let push = |i: usize, contiguous: bool| {
            receiver.push(IncomingFrame {
                data: frames[i].clone(),
                contiguous,
            })
        };
        // Joined mid-stream: 1 before 0 is dropped; 3 comes after a loss,
        // so 3, 4 and 5 are dropped until the keyframe 6.
        push(1, true);
        for i in 0..3 {
            push(i, true);
        }
        push(3, false);
        for i in 4..8 {
            push(i, true);
        }
        let tapped = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while tap.remote.lock().unwrap().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "{:?} tapped",
                    tap.remote.lock().unwrap().len()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            tap.remote.lock().unwrap().clone()
        };
        let got = tapped(5);
        let expected: Vec<&Vec<u8>> = [0, 1, 2, 6, 7].iter().map(|&i| &frames[i]).collect();
        assert_eq!(got.iter().map(|t| &t.0).collect::<Vec<_>>(), expected);
        assert_eq!(
            got.iter().map(|t| t.1).collect::<Vec<_>>(),
            [true, false, false, true, false]
        );
        assert_decodes("the peer's stream", &got);
        // The tap lost its place: a keyframe is asked for (after the
        // request for the loss above has aged).
        std::thread::sleep(REPEAT_REQUEST + Duration::from_millis(50));
        let asked = receiver.stats().keyframes_requested;
        tap.want_keyframe.store(true, Ordering::SeqCst);
        push(8, true);
        tapped(6);
        assert_eq!(receiver.stats().keyframes_requested, asked + 1);
    }

    struct NullVideoSinkForTest;

    impl VideoSink for NullVideoSinkForTest {
        fn frame(&mut self, _f: &VideoFrame) {}
    }
}
