//! The compressed VP8 frames of one stream since its latest keyframe
//! ([`EncodedQueue`]), for a page that decodes them itself (`format=vp8`)
//! and so needs every frame, in order; and the engine's tap that puts them
//! in ([`EncodedTap`]: the frames as our decoder took them and as our
//! encoder made them). A page with no keyframe to start from makes the
//! queue ask the engine for one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use callinvite_client::media::video::EncodedVideoSink;

use super::{header, unix_ms, DeliveryStats, Format, Look, HEADER_BYTES};

/// Bytes before each compressed frame in a `format=vp8` response body.
pub const VP8_RECORD_BYTES: usize = 40;
/// Compressed frames an [`EncodedQueue`] keeps at most (two seconds at 30
/// fps): a page further behind starts again at the next keyframe.
pub const QUEUE_FRAMES: usize = 60;
/// Bytes an [`EncodedQueue`] keeps at most (a few keyframes of a shared
/// screen).
pub const QUEUE_BYTES: usize = 4 << 20;

/// One compressed frame kept for the page.
struct Encoded {
    seq: u64,
    data: Vec<u8>,
    keyframe: bool,
    width: u32,
    height: u32,
    look: Look,
    /// When it came (Unix ms).
    at_ms: u64,
}

/// The compressed frames of one stream since its latest keyframe (at most
/// [`QUEUE_FRAMES`] and [`QUEUE_BYTES`]), for a page that decodes them
/// itself and so needs every one, in order: see [`crate::video`].
pub struct EncodedQueue {
    state: Mutex<QueueState>,
    /// The latest frame's number: wakes the waiting requests.
    latest: watch::Sender<u64>,
}

#[derive(Default)]
struct QueueState {
    /// Numbers the frames, from 1; never goes back, also across calls.
    seq: u64,
    /// Consecutive numbers; a keyframe empties it first.
    frames: VecDeque<Encoded>,
    bytes: usize,
    /// A page is waiting for a keyframe: the engine is asked for one with
    /// each frame until it comes.
    want_keyframe: bool,
    stats: DeliveryStats,
    respond_time: Duration,
}

impl Default for EncodedQueue {
    fn default() -> Self {
        EncodedQueue {
            state: Mutex::new(QueueState::default()),
            latest: watch::channel(0).0,
        }
    }
}

/// What a page asking for the frames after `after` gets.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The frames from this index of the queue on.
    From(usize),
    /// Nothing newer yet.
    Nothing,
    /// It cannot go on from `after` (frames it needs are gone) and there
    /// is no keyframe to start again from.
    Gap,
}

impl QueueState {
    fn next(&self, after: u64) -> Next {
        let (Some(first), Some(last)) = (self.frames.front(), self.frames.back()) else {
            return Next::Nothing;
        };
        if after >= last.seq {
            Next::Nothing
        } else if after > 0 && after + 1 >= first.seq {
            // Goes on where it was (frame numbers follow the tap's stream,
            // which our own decoder took in this order).
            Next::From((after + 1 - first.seq) as usize)
        } else if first.keyframe {
            // Starts (again) at the latest keyframe.
            Next::From(0)
        } else {
            Next::Gap
        }
    }
}

impl EncodedQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a frame (the engine's tap calls this on a video thread).
    /// Returns whether a keyframe is wanted.
    pub fn put(&self, data: &[u8], keyframe: bool, width: u32, height: u32, look: Look) -> bool {
        let (seq, want) = {
            let mut s = self.lock();
            s.seq += 1;
            s.stats.frames_in += 1;
            s.stats.width = width;
            s.stats.height = height;
            if keyframe {
                s.frames.clear();
                s.bytes = 0;
                s.want_keyframe = false;
            }
            let seq = s.seq;
            s.bytes += data.len();
            s.frames.push_back(Encoded {
                seq,
                data: data.to_vec(),
                keyframe,
                width,
                height,
                look,
                at_ms: unix_ms(),
            });
            // A page this far behind starts again at the next keyframe.
            while s.frames.len() > QUEUE_FRAMES || (s.bytes > QUEUE_BYTES && s.frames.len() > 1) {
                if let Some(old) = s.frames.pop_front() {
                    s.bytes -= old.data.len();
                }
            }
            (seq, s.want_keyframe)
        };
        self.latest.send_replace(seq);
        want
    }

    /// Forgets the frames (the picture stopped, the call ended): a page
    /// goes on at the next keyframe.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.frames.clear();
        s.bytes = 0;
        s.want_keyframe = false;
    }

    /// The body with every frame after `after` the page can decode, or
    /// `None` (nothing newer yet, or a keyframe is needed first: then one
    /// is asked for).
    pub fn after(&self, after: u64) -> Option<Vec<u8>> {
        let started = Instant::now();
        let mut s = self.lock();
        let from = match s.next(after) {
            Next::From(i) => i,
            Next::Nothing => return None,
            Next::Gap => {
                if !s.want_keyframe {
                    s.want_keyframe = true;
                    s.stats.gaps += 1;
                }
                return None;
            }
        };
        let frames = s.frames.range(from..);
        let size: usize = frames
            .clone()
            .map(|f| VP8_RECORD_BYTES + f.data.len())
            .sum();
        let mut body = Vec::with_capacity(size);
        let mut n = 0;
        for f in frames {
            body.extend_from_slice(&vp8_record_header(f));
            body.extend_from_slice(&f.data);
            n += 1;
        }
        s.stats.frames_served += n;
        s.stats.responses += 1;
        s.stats.bytes_served += body.len() as u64;
        s.respond_time += started.elapsed();
        Some(body)
    }

    /// Waits up to `wait` for frames after `after` the page can decode.
    pub async fn wait_after(self: Arc<Self>, after: u64, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.latest.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(body) = self.after(after) {
                return Some(body);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// What the queue delivered so far.
    pub fn stats(&self) -> DeliveryStats {
        let s = self.lock();
        let mut out = s.stats.clone();
        if out.responses > 0 {
            out.respond_ms = s.respond_time.as_secs_f64() * 1000.0 / out.responses as f64;
        }
        out
    }
}

/// A compressed frame's record header: width, height (u32), sequence
/// number, when it came (u64, Unix ms), format 2, flags (bit 0 half size,
/// bit 1 mirrored, bit 2 keyframe), length (u32), a zero u32; little-endian.
fn vp8_record_header(f: &Encoded) -> [u8; VP8_RECORD_BYTES] {
    let mut h = [0u8; VP8_RECORD_BYTES];
    h[..HEADER_BYTES].copy_from_slice(&header(
        f.width,
        f.height,
        f.seq,
        f.at_ms,
        Format::Vp8,
        f.look,
    ));
    if f.keyframe {
        h[28] |= 4;
    }
    h[32..36].copy_from_slice(&(f.data.len() as u32).to_le_bytes());
    h
}

/// The engine's [`EncodedVideoSink`]: the peer's frames as they are, ours
/// at half size (above 320 pixels wide: the corner needs no more) and
/// mirrored while the camera is ours.
pub struct EncodedTap {
    pub(super) remote: Arc<EncodedQueue>,
    pub(super) local: Arc<EncodedQueue>,
    pub(super) mirror_local: Arc<AtomicBool>,
}

impl EncodedVideoSink for EncodedTap {
    fn remote(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool {
        self.remote.put(data, keyframe, width, height, Look::AS_IS)
    }

    fn local(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool {
        let look = Look {
            half: width > 320,
            mirror: self.mirror_local.load(Ordering::Relaxed),
        };
        self.local.put(data, keyframe, width, height, look)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Frames, WAIT};
    use super::*;

    /// The records of a `format=vp8` body: (seq, keyframe, width, height, flags, data).
    fn records(body: &[u8]) -> Vec<(u64, bool, u32, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let h = &body[at..at + VP8_RECORD_BYTES];
            let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
            let seq = u64::from_le_bytes(h[8..16].try_into().unwrap());
            assert_eq!(u32_at(24), 2, "format vp8");
            let flags = u32_at(28);
            let len = u32_at(32) as usize;
            let data = body[at + VP8_RECORD_BYTES..at + VP8_RECORD_BYTES + len].to_vec();
            out.push((seq, flags & 4 != 0, u32_at(0), u32_at(4), flags, data));
            at += VP8_RECORD_BYTES + len;
        }
        out
    }

    fn seqs(body: &[u8]) -> Vec<u64> {
        records(body).iter().map(|r| r.0).collect()
    }

    #[test]
    fn the_page_gets_every_compressed_frame_in_order_from_a_keyframe_on() {
        let q = EncodedQueue::default();
        assert_eq!(q.after(0), None, "nothing yet");
        // A delta with no keyframe before it cannot start a page: a
        // keyframe is asked for (with the next frame) until one comes.
        assert!(!q.put(b"d1", false, 64, 48, Look::AS_IS));
        assert_eq!(q.after(0), None);
        assert!(
            q.put(b"d2", false, 64, 48, Look::AS_IS),
            "a keyframe is wanted"
        );
        assert!(!q.put(b"k3", true, 64, 48, Look::AS_IS), "it came");
        assert!(!q.put(b"d4", false, 64, 48, Look::AS_IS));
        let body = q.after(0).expect("from the keyframe");
        let r = records(&body);
        assert_eq!(seqs(&body), [3, 4]);
        assert_eq!(
            (r[0].1, r[0].2, r[0].3, r[0].5.as_slice()),
            (true, 64, 48, &b"k3"[..])
        );
        assert_eq!((r[1].1, r[1].5.as_slice()), (false, &b"d4"[..]));
        // Goes on where it was, several frames at once.
        q.put(b"d5", false, 64, 48, Look::AS_IS);
        q.put(b"d6", false, 64, 48, Look::AS_IS);
        assert_eq!(seqs(&q.after(4).unwrap()), [5, 6]);
        assert_eq!(q.after(6), None, "nothing newer");
        // A new keyframe: a page behind it starts there; one that has
        // everything before it goes on.
        q.put(b"k7", true, 64, 48, Look::AS_IS);
        q.put(b"d8", false, 64, 48, Look::AS_IS);
        assert_eq!(seqs(&q.after(4).unwrap()), [7, 8]);
        assert_eq!(seqs(&q.after(7).unwrap()), [8]);
        let s = q.stats();
        assert_eq!((s.frames_in, s.gaps, s.width), (8, 1, 64));
    }

    #[test]
    fn a_page_too_far_behind_waits_for_a_keyframe_which_is_asked_for() {
        let q = EncodedQueue::default();
        q.put(b"k", true, 640, 480, Look::AS_IS);
        assert_eq!(seqs(&q.after(0).unwrap()), [1]);
        // Hidden for a while: more frames than are kept.
        for _ in 0..QUEUE_FRAMES + 5 {
            assert!(!q.put(b"d", false, 640, 480, Look::AS_IS), "nobody asked");
        }
        assert_eq!(q.after(1), None, "frame 2 is gone");
        assert!(
            q.put(b"d", false, 640, 480, Look::AS_IS),
            "a keyframe is wanted"
        );
        assert!(!q.put(b"k", true, 640, 480, Look::AS_IS));
        let next = q.lock().seq;
        assert_eq!(seqs(&q.after(1).unwrap()), [next]);
        // Forgotten when the picture stops: nothing until the next keyframe.
        q.clear();
        assert_eq!(q.after(next), None);
        q.put(b"k", true, 640, 480, Look::AS_IS);
        assert_eq!(seqs(&q.after(next).unwrap()), [next + 1]);
        assert_eq!(q.stats().gaps, 1);
        // Bytes are bounded too (but the latest frame is kept).
        q.put(&vec![0; QUEUE_BYTES], false, 640, 480, Look::AS_IS);
        q.put(b"d", false, 640, 480, Look::AS_IS);
        assert!(q.lock().bytes <= QUEUE_BYTES);
    }

    #[test]
    fn the_tap_halves_and_mirrors_our_preview_only() {
        let frames = Frames::default();
        let mut tap = frames.tap();
        tap.remote(b"k", true, 640, 480);
        tap.local(b"k", true, 640, 480);
        let theirs = records(&frames.remote_vp8.after(0).unwrap());
        assert_eq!(theirs[0].4, 4, "keyframe, as it is");
        let ours = records(&frames.local_vp8.after(0).unwrap());
        assert_eq!(ours[0].4, 4 | 2 | 1, "keyframe, mirrored, half size");
        frames.mirror_local.store(false, Ordering::Relaxed);
        tap.local(b"k", true, 320, 240);
        let ours = records(&frames.local_vp8.after(1).unwrap());
        assert_eq!(
            ours[0].4, 4,
            "a shared screen as it is; 320 wide not halved"
        );
        frames.clear_local();
        assert_eq!(frames.local_vp8.after(0), None);
        assert!(frames.remote_vp8.after(0).is_some());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_compressed_request_waits_for_frames_it_can_use() {
        let q = Arc::new(EncodedQueue::default());
        let waiting = tokio::spawn(q.clone().wait_after(0, WAIT));
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.put(b"d", false, 64, 48, Look::AS_IS); // not a start
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        q.put(b"k", true, 64, 48, Look::AS_IS);
        assert_eq!(seqs(&waiting.await.unwrap().unwrap()), [2]);
        let started = tokio::time::Instant::now();
        assert_eq!(q.clone().wait_after(2, WAIT).await, None);
        assert!(started.elapsed() >= WAIT, "gave up after WAIT");
    }
}
