//! The latest decoded picture of one stream ([`FrameSlot`]), and the
//! engine's sinks that put pictures in ([`SlotSink`]: the peer's as they
//! are, our preview to be halved and mirrored). A slot keeps only the
//! latest picture, so a slow page skips pictures and never queues them; it
//! makes the body only when the page asks (see `convert.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use callinvite_client::media::{VideoFrame, VideoSink};

use super::convert::{i420_body, to_rgba};
use super::{unix_ms, DeliveryStats, Format, Look};

/// The latest picture of one stream.
pub struct FrameSlot {
    state: Mutex<SlotState>,
    /// (sequence number of the latest picture, whether there is one): wakes
    /// the requests waiting for a newer picture.
    latest: watch::Sender<(u64, bool)>,
}

#[derive(Default)]
struct SlotState {
    /// Numbers the pictures, from 1; never goes back, also across calls.
    seq: u64,
    /// The latest picture, as decoded (I420), how to show it, and when it
    /// came (Unix ms).
    frame: Option<(Arc<VideoFrame>, Look, u64)>,
    stats: DeliveryStats,
    respond_time: Duration,
}

impl Default for FrameSlot {
    fn default() -> Self {
        FrameSlot {
            state: Mutex::new(SlotState::default()),
            latest: watch::channel((0, false)).0,
        }
    }
}

/// A picture ready for the page.
#[derive(Debug, PartialEq, Eq)]
pub struct Picture {
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    /// Header and RGBA, as sent.
    pub body: Vec<u8>,
}

impl FrameSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a new picture (the sinks call this on a video thread): kept, not converted.
    pub fn put(&self, frame: VideoFrame, look: Look) {
        let seq = {
            let mut s = self.lock();
            s.seq += 1;
            s.stats.frames_in += 1;
            s.frame = Some((Arc::new(frame), look, unix_ms()));
            s.seq
        };
        self.latest.send_replace((seq, true));
    }

    /// Forgets the picture (camera off, call over): nothing is served until the next.
    pub fn clear(&self) {
        let seq = {
            let mut s = self.lock();
            s.frame = None;
            s.seq
        };
        self.latest.send_replace((seq, false));
    }

    /// The latest picture if it is newer than `after`, as the page gets it
    /// (converted here for RGBA: call it off the async threads).
    pub fn newer_than(&self, after: u64, format: Format) -> Option<Picture> {
        self.newer_than_fit(after, format, None)
    }

    /// [`FrameSlot::newer_than`], I420 made smaller by halvings while it
    /// still covers `fit` (width, height: the box it is shown in, in device
    /// pixels) — our preview in its corner needs a sixteenth of the bytes.
    pub fn newer_than_fit(
        &self,
        after: u64,
        format: Format,
        fit: Option<(u32, u32)>,
    ) -> Option<Picture> {
        let (seq, frame, look, at_ms) = {
            let s = self.lock();
            match &s.frame {
                Some((frame, look, at_ms)) if s.seq > after => {
                    (s.seq, frame.clone(), *look, *at_ms)
                }
                _ => return None,
            }
        };
        let started = Instant::now();
        let (width, height, body) = match format {
            Format::Rgba => to_rgba(&frame, look, seq, at_ms),
            // (VP8 is served by the EncodedQueue: see `serve`.)
            Format::I420 | Format::Vp8 => i420_body(&frame, look, seq, at_ms, fit),
        };
        let took = started.elapsed();
        let mut s = self.lock();
        s.respond_time += took;
        s.stats.frames_served += 1;
        s.stats.responses += 1;
        s.stats.bytes_served += body.len() as u64;
        s.stats.width = frame.width();
        s.stats.height = frame.height();
        Some(Picture {
            seq,
            width,
            height,
            body,
        })
    }

    /// Waits up to `wait` for a picture newer than `after`, then makes the
    /// response on a blocking thread.
    pub async fn wait_newer_than(
        self: Arc<Self>,
        after: u64,
        format: Format,
        fit: Option<(u32, u32)>,
        wait: Duration,
    ) -> Option<Picture> {
        let mut rx = self.latest.subscribe();
        let _ =
            tokio::time::timeout(wait, rx.wait_for(|&(seq, present)| present && seq > after)).await;
        tokio::task::spawn_blocking(move || self.newer_than_fit(after, format, fit))
            .await
            .ok()
            .flatten()
    }

    /// What the slot delivered so far.
    pub fn stats(&self) -> DeliveryStats {
        let s = self.lock();
        let mut out = s.stats.clone();
        if out.frames_served > 0 {
            out.respond_ms = s.respond_time.as_secs_f64() * 1000.0 / out.frames_served as f64;
        }
        out
    }
}

/// A [`VideoSink`] into a [`FrameSlot`]: the peer's pictures
/// ([`SlotSink::remote`]) or our own preview ([`SlotSink::preview`]).
pub struct SlotSink {
    slot: Arc<FrameSlot>,
    /// For the preview: mirror it (the camera) or not (a shared screen).
    mirror: Option<Arc<AtomicBool>>,
}

impl SlotSink {
    pub fn remote(slot: Arc<FrameSlot>) -> Self {
        SlotSink { slot, mirror: None }
    }

    /// Our pictures at half size, mirrored while `mirror` holds.
    pub fn preview(slot: Arc<FrameSlot>, mirror: Arc<AtomicBool>) -> Self {
        SlotSink {
            slot,
            mirror: Some(mirror),
        }
    }
}

impl VideoSink for SlotSink {
    fn frame(&mut self, frame: &VideoFrame) {
        let look = match &self.mirror {
            None => Look::AS_IS,
            Some(mirror) => Look {
                // A small picture is not halved again.
                half: frame.width() >= 320,
                mirror: mirror.load(Ordering::Relaxed),
            },
        };
        self.slot.put(frame.clone(), look);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{header, pattern, HEADER_BYTES, WAIT};
    use super::*;

    #[test]
    fn the_preview_is_halved_and_mirrored() {
        let slot = Arc::new(FrameSlot::default());
        let mirror = Arc::new(AtomicBool::new(true));
        let mut sink = SlotSink::preview(slot.clone(), mirror.clone());
        let frame = pattern(640, 480);
        sink.frame(&frame);
        let p = slot.newer_than(0, Format::Rgba).unwrap();
        assert_eq!((p.width, p.height), (320, 240));
        // Mirrored: the black bar is on the left, the white one on the right.
        let px = |x: usize, y: usize| {
            let o = HEADER_BYTES + (y * 320 + x) * 4;
            [p.body[o], p.body[o + 1], p.body[o + 2], p.body[o + 3]]
        };
        assert_eq!(px(2, 10), [0, 0, 0, 255]);
        assert_eq!(px(317, 10), [191, 191, 191, 255]);
        // Close to halving then converting (which averages the chroma too).
        let mut expected = Vec::new();
        frame.half().to_rgba(&mut expected, true);
        let worst = p.body[HEADER_BYTES..]
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 24, "off by {worst}");
        // A small picture (the lowest rung) is not halved again.
        sink.frame(&pattern(160, 120));
        let p = slot.newer_than(1, Format::Rgba).unwrap();
        assert_eq!((p.width, p.height), (160, 120));
    }

    #[test]
    fn only_a_newer_picture_is_served_with_its_size_and_number() {
        let slot = FrameSlot::default();
        assert_eq!(slot.newer_than(0, Format::Rgba), None, "nothing yet");
        slot.put(pattern(64, 48), Look::AS_IS);
        let p = slot.newer_than(0, Format::Rgba).expect("the first picture");
        assert_eq!((p.seq, p.width, p.height), (1, 64, 48));
        assert_eq!(p.body.len(), HEADER_BYTES + 64 * 48 * 4);
        assert_eq!(
            &p.body[..16],
            &header(64, 48, 1, 0, Format::Rgba, Look::AS_IS)[..16]
        );
        let at_ms = u64::from_le_bytes(p.body[16..24].try_into().unwrap());
        assert!(at_ms.abs_diff(unix_ms()) < 5_000, "when it came: {at_ms}");
        // The first pixel is the white bar (75 %), opaque.
        assert_eq!(
            &p.body[HEADER_BYTES..HEADER_BYTES + 4],
            &[191, 191, 191, 255]
        );
        assert_eq!(slot.newer_than(1, Format::Rgba), None, "not again");
        slot.put(pattern(64, 48), Look::AS_IS);
        slot.put(pattern(64, 48), Look::AS_IS);
        assert_eq!(
            slot.newer_than(1, Format::Rgba).unwrap().seq,
            3,
            "the latest, skipping the one between"
        );
        slot.clear();
        assert_eq!(
            slot.newer_than(0, Format::Rgba),
            None,
            "cleared: nothing until the next"
        );
        slot.put(pattern(32, 24), Look::AS_IS);
        assert_eq!(
            slot.newer_than(3, Format::Rgba).unwrap().seq,
            4,
            "numbers never go back"
        );
        let s = slot.stats();
        assert_eq!(
            (s.frames_in, s.frames_served),
            (4, 3),
            "only what was asked for is converted"
        );
        assert_eq!((s.width, s.height), (32, 24));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_request_waits_for_the_next_picture_or_gives_up() {
        let slot = Arc::new(FrameSlot::default());
        let waiting = tokio::spawn(slot.clone().wait_newer_than(0, Format::I420, None, WAIT));
        tokio::time::sleep(Duration::from_millis(100)).await;
        slot.put(pattern(64, 48), Look::AS_IS);
        let p = waiting.await.unwrap().expect("woken by the picture");
        assert_eq!(p.seq, 1);
        let started = tokio::time::Instant::now();
        assert_eq!(
            slot.clone()
                .wait_newer_than(1, Format::I420, None, WAIT)
                .await,
            None
        );
        assert!(started.elapsed() >= WAIT, "gave up after WAIT");
    }

    #[test]
    fn i420_is_the_planes_as_decoded_and_the_preview_halved_for_the_page_to_mirror() {
        let frame = pattern(640, 480);
        let remote = Arc::new(FrameSlot::default());
        SlotSink::remote(remote.clone()).frame(&frame);
        let p = remote.newer_than(0, Format::I420).unwrap();
        assert_eq!((p.width, p.height), (640, 480));
        assert_eq!(
            &p.body[24..32],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            "format i420, as it is"
        );
        assert!(p.body[HEADER_BYTES..] == *frame.data());

        let local = Arc::new(FrameSlot::default());
        SlotSink::preview(local.clone(), Arc::new(AtomicBool::new(true))).frame(&frame);
        let p = local.newer_than(0, Format::I420).unwrap();
        assert_eq!((p.width, p.height), (320, 240));
        assert_eq!(
            p.body.len(),
            HEADER_BYTES + 320 * 240 * 3 / 2,
            "a quarter of the bytes"
        );
        assert_eq!(
            &p.body[24..32],
            &[1, 0, 0, 0, 2, 0, 0, 0],
            "halved here, mirrored by the page"
        );
        assert!(
            p.body[HEADER_BYTES..] == *frame.half().data(),
            "the media crate's halving"
        );
        let s = local.stats();
        assert_eq!((s.frames_served, s.bytes_served), (1, p.body.len() as u64));
    }
}
