//! The call's pictures on screen: the peer's video and our own preview, from
//! the media engine's video threads to the webview's `<canvas>`es.
//!
//! Each picture stream has a [`FrameSlot`] that keeps only the **latest**
//! decoded picture (a slow reader skips pictures, it never queues them), and
//! an [`EncodedQueue`] of its **compressed** VP8 frames since the latest
//! keyframe. The engine puts pictures in ([`SlotSink`]: the peer's as they
//! are, our preview to be halved and mirrored, like a mirror; [`EncodedTap`]:
//! the frames as our decoder took them and as our encoder made them), and
//! the webview takes them out through the `frame:` URI scheme ([`serve`]):
//!
//! - `GET frame://localhost/remote?after=SEQ&format=F` (on Windows
//!   `http://frame.localhost/remote?…`; the UI builds the URL with
//!   `convertFileSrc('remote', 'frame')`), or `/local` for the preview, is
//!   answered with what is newer than `SEQ`: at once if there is something,
//!   else as soon as there is (a long poll: no polling, no delay), or
//!   `204 No Content` after [`WAIT`] without it.
//! - `&format=vp8` (format 2; what the UI asks for their picture when the
//!   webview decodes VP8 with WebCodecs, as WebKitGTK 2.50 does): the
//!   compressed frames, 2–10 kB each, which the page decodes itself
//!   (`VideoDecoder`). The page must decode every frame in order, so the
//!   answer carries **all** frames after `SEQ`, each a 40-byte record header
//!   — `u32` width, `u32` height, `u64` sequence number, `u64` when it came
//!   (Unix ms), `u32` format 2, `u32` flags (bit 0 show at half size, bit 1
//!   mirrored, bit 2 keyframe), `u32` length, `u32` zero, little-endian —
//!   then the frame. A page that starts, or lost its place (more than
//!   [`QUEUE_FRAMES`] behind, e.g. after its window was hidden), gets the
//!   frames from the latest keyframe on; when there is none to start from, a
//!   keyframe is asked for (the peer's by PLI, ours from our encoder: see
//!   [`EncodedVideoSink`]) and the request waits for it.
//! - `&format=i420` (format 1): the latest decoded picture, as its planes
//!   (Y, then U and V at half resolution: 1.5 bytes a pixel) after a 32-byte
//!   header — `u32` width, `u32` height, `u64` sequence number, `u64` when it
//!   came, `u32` format, `u32` look (bit 0 half size, bit 1 mirrored). Our
//!   preview is halved here first, and with `&fit=WxH` (the box it is shown
//!   in, device pixels) halved again while it still covers the box: 160×120
//!   (29 kB) for the app's corner. The page converts the planes to RGBA
//!   (mirroring the preview) as it draws. What the UI asks for our preview
//!   (at 15 fps), and for their picture in a webview without WebCodecs.
//! - `&format=rgba` (format 0, the default): RGBA, 4 bytes a pixel, the look
//!   already applied, ready for `putImageData` — converted here
//!   ([`to_rgba`]), on a blocking thread of the async runtime (kept for
//!   comparison).
//!
//! Why: carrying bytes through WebKit's custom-scheme path into the page is
//! what costs most (about 12 µs a kilobyte, and more in the app's process
//! than in WebKit's); a VP8 frame is 50–200 times smaller than its I420,
//! which is 2.7 times smaller than RGBA. The page's decoding and converting
//! costs less than that saves, though not by much: decoding our own 640×480
//! VP8 for a 108×81 corner costs more than 160×120 of I420 at 15 fps.
//! Measured in one call, alternating, release build, by the e2e test "what
//! showing the video costs" (see the README): their VP8 and our small I420
//! 61.5 % of a core, both as VP8 67 %, both as I420 84 % (17 % hidden).
//!
//! The sinks only keep the decoded picture (a copy of its planes) or the
//! compressed frame; nothing is done on a video thread (decoding and encoding
//! go on at their pace), and only what the page draws is sent — nothing
//! while the window is hidden in the tray (its refresh loop stops asking).
//!
//! [`DeliveryStats`] counts what went through (pictures in, served, and the
//! time taken), for the logs and the tests' figures.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use callinvite_client::media::video::EncodedVideoSink;
use callinvite_client::media::{VideoFrame, VideoSink};

/// How long a request waits for a newer picture before `204`.
pub const WAIT: Duration = Duration::from_millis(1000);
/// Bytes before the pixels in a response body.
pub const HEADER_BYTES: usize = 32;
/// Bytes before each compressed frame in a `format=vp8` response body.
pub const VP8_RECORD_BYTES: usize = 40;
/// Compressed frames an [`EncodedQueue`] keeps at most (two seconds at 30
/// fps): a page further behind starts again at the next keyframe.
pub const QUEUE_FRAMES: usize = 60;
/// Bytes an [`EncodedQueue`] keeps at most (a few keyframes of a shared
/// screen).
pub const QUEUE_BYTES: usize = 4 << 20;

/// The two picture streams of the call on screen, decoded and compressed.
pub struct Frames {
    /// The peer's video.
    pub remote: Arc<FrameSlot>,
    /// Our own picture as it is sent (halved; mirrored while `mirror_local`).
    pub local: Arc<FrameSlot>,
    /// The peer's video, compressed, as our decoder took it.
    pub remote_vp8: Arc<EncodedQueue>,
    /// Our video, compressed, as encoded.
    pub local_vp8: Arc<EncodedQueue>,
    /// Our picture is a camera's (mirror it), not a shared screen.
    pub mirror_local: Arc<AtomicBool>,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            remote: Arc::default(),
            local: Arc::default(),
            remote_vp8: Arc::default(),
            local_vp8: Arc::default(),
            mirror_local: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Frames {
    /// The slot a request path names: `remote` or `local`.
    pub fn slot(&self, name: &str) -> Option<&Arc<FrameSlot>> {
        match name {
            "remote" => Some(&self.remote),
            "local" => Some(&self.local),
            _ => None,
        }
    }

    /// The compressed stream a request path names: `remote` or `local`.
    pub fn queue(&self, name: &str) -> Option<&Arc<EncodedQueue>> {
        match name {
            "remote" => Some(&self.remote_vp8),
            "local" => Some(&self.local_vp8),
            _ => None,
        }
    }

    /// The engine's tap for the compressed frames, into the two queues.
    pub fn tap(&self) -> EncodedTap {
        EncodedTap {
            remote: self.remote_vp8.clone(),
            local: self.local_vp8.clone(),
            mirror_local: self.mirror_local.clone(),
        }
    }

    /// Forgets both pictures (a new call must not show the last one's).
    pub fn clear(&self) {
        self.clear_remote();
        self.clear_local();
    }

    /// Forgets the peer's picture (it stopped).
    pub fn clear_remote(&self) {
        self.remote.clear();
        self.remote_vp8.clear();
    }

    /// Forgets our picture (camera off).
    pub fn clear_local(&self) {
        self.local.clear();
        self.local_vp8.clear();
    }
}

/// What a slot has delivered, since the app started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeliveryStats {
    /// Pictures the engine handed over.
    pub frames_in: u64,
    /// Pictures converted to RGBA and sent to the page.
    pub frames_served: u64,
    /// Mean time to make one response (copy the planes, or convert to
    /// RGBA, into the body), ms.
    pub respond_ms: f64,
    /// Bytes sent to the page.
    pub bytes_served: u64,
    /// Size of the last picture (as decoded).
    pub width: u32,
    pub height: u32,
    /// Answers with pictures (compressed: several frames each).
    pub responses: u64,
    /// Compressed: times the page could not go on from where it was (it
    /// fell behind, or started with no keyframe to start from) and waited
    /// for a keyframe.
    pub gaps: u64,
}

/// How a slot's pictures are shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// At half the width and height (our preview: a corner needs no more).
    pub half: bool,
    /// Flipped left to right (our camera's preview: people expect a mirror
    /// image of themselves; not a shared screen, whose text must read).
    pub mirror: bool,
}

impl Look {
    /// As it is (the peer's pictures).
    pub const AS_IS: Look = Look {
        half: false,
        mirror: false,
    };
}

impl Look {
    /// The header's look field: bit 0 half, bit 1 mirror.
    pub fn bits(self) -> u32 {
        u32::from(self.half) | (u32::from(self.mirror) << 1)
    }
}

/// How the page gets a picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// RGBA with the look applied (format 0).
    #[default]
    Rgba,
    /// The I420 planes as decoded; the page applies the look (format 1).
    I420,
    /// The compressed VP8 frames, for the page to decode (format 2): from
    /// an [`EncodedQueue`], not a [`FrameSlot`].
    Vp8,
}

impl Format {
    /// The header's format field.
    pub fn code(self) -> u32 {
        match self {
            Format::Rgba => 0,
            Format::I420 => 1,
            Format::Vp8 => 2,
        }
    }
}

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

/// The 32 bytes before the pixels: width, height (u32), sequence number,
/// when the picture came (u64, Unix ms), format and look (u32), little-endian.
pub fn header(
    width: u32,
    height: u32,
    seq: u64,
    at_ms: u64,
    format: Format,
    look: Look,
) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&width.to_le_bytes());
    h[4..8].copy_from_slice(&height.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&at_ms.to_le_bytes());
    h[24..28].copy_from_slice(&format.code().to_le_bytes());
    h[28..32].copy_from_slice(&look.bits().to_le_bytes());
    h
}

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
/// itself and so needs every one, in order: see the module doc.
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
    remote: Arc<EncodedQueue>,
    local: Arc<EncodedQueue>,
    mirror_local: Arc<AtomicBool>,
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

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lookup tables of BT.601 studio-range YUV to RGB — the formulas of the
/// media crate's `yuv_to_rgb`, so the colours are the same to the bit —
/// one lookup per term instead of multiplications and clamps per pixel.
struct Tables {
    /// 298 × (y − 16) + 128 (the rounding).
    y: [i32; 256],
    /// 409 × (v − 128), −100 × (u − 128), −208 × (v − 128), 516 × (u − 128).
    rv: [i32; 256],
    gu: [i32; 256],
    gv: [i32; 256],
    bu: [i32; 256],
    /// `clamp[(x >> 8) + CLAMP_OFFSET]` is x >> 8 clamped to 0..=255.
    clamp: [u8; CLAMP_LEN],
}

const CLAMP_OFFSET: i32 = 384;
const CLAMP_LEN: usize = 1024;

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Tables {
            y: [0; 256],
            rv: [0; 256],
            gu: [0; 256],
            gv: [0; 256],
            bu: [0; 256],
            clamp: [0; CLAMP_LEN],
        };
        for i in 0..256 {
            let c = i as i32 - 16;
            let d = i as i32 - 128;
            t.y[i] = 298 * c + 128;
            t.rv[i] = 409 * d;
            t.gu[i] = -100 * d;
            t.gv[i] = -208 * d;
            t.bu[i] = 516 * d;
        }
        for (i, v) in t.clamp.iter_mut().enumerate() {
            *v = (i as i32 - CLAMP_OFFSET).clamp(0, 255) as u8;
        }
        t
    })
}

/// How many times to halve a `w`×`h` picture: once if `half`, and more
/// while the result still covers `fit` (at most to an eighth).
pub fn halvings(w: u32, h: u32, half: bool, fit: Option<(u32, u32)>) -> u32 {
    let mut n = u32::from(half);
    if let Some((fw, fh)) = fit {
        while n < 3 && (w >> (n + 1)) >= fw.max(2) && (h >> (n + 1)) >= fh.max(2) {
            n += 1;
        }
    }
    n
}

/// The picture as the page gets it in I420: header, then the Y, U and V
/// planes. Halved here when the look says so, or more while it still
/// covers `fit` (fewer bytes to carry into the page: they cost more than
/// the halving); the mirroring is left to the page's conversion, which
/// does it for nothing.
pub fn i420_body(
    frame: &VideoFrame,
    look: Look,
    seq: u64,
    at_ms: u64,
    fit: Option<(u32, u32)>,
) -> (u32, u32, Vec<u8>) {
    let n = halvings(frame.width(), frame.height(), look.half, fit);
    // All but the last halving by the media crate, the last into the body.
    let smaller;
    let frame = if n > 1 {
        let mut f = frame.half();
        for _ in 2..n {
            f = f.half();
        }
        smaller = f;
        &smaller
    } else {
        frame
    };
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    if n == 0 {
        let mut body = Vec::with_capacity(HEADER_BYTES + frame.data().len());
        body.extend_from_slice(&header(w as u32, h as u32, seq, at_ms, Format::I420, look));
        body.extend_from_slice(frame.data());
        return (w as u32, h as u32, body);
    }
    // Even halves (I420 needs them): a pixel or two of a larger odd half is cropped.
    let (hw, hh) = (((w / 2) & !1).max(2), ((h / 2) & !1).max(2));
    let shown = Look {
        half: false,
        mirror: look.mirror,
    };
    let mut body = vec![0u8; HEADER_BYTES + hw * hh + 2 * (hw / 2) * (hh / 2)];
    body[..HEADER_BYTES].copy_from_slice(&header(
        hw as u32,
        hh as u32,
        seq,
        at_ms,
        Format::I420,
        shown,
    ));
    let (yp, up, vp) = frame.planes();
    let (dy, rest) = body[HEADER_BYTES..].split_at_mut(hw * hh);
    let (du, dv) = rest.split_at_mut((hw / 2) * (hh / 2));
    halve(yp, w, h, dy, hw, hh);
    halve(up, w / 2, h / 2, du, hw / 2, hh / 2);
    halve(vp, w / 2, h / 2, dv, hw / 2, hh / 2);
    (hw as u32, hh as u32, body)
}

/// 2×2 box filter of plane `src` (`sw × sh`) into `dst` (`dw × dh`, at most
/// half of each); plain index loops, for the debug build's sake.
fn halve(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for row in 0..dh {
        let r0 = (2 * row).min(sh - 1) * sw;
        let r1 = (2 * row + 1).min(sh - 1) * sw;
        let o = row * dw;
        let mut x = 0;
        while x < dw {
            let c = 2 * x;
            let c1 = if c + 1 < sw { c + 1 } else { c };
            let sum =
                src[r0 + c] as u32 + src[r0 + c1] as u32 + src[r1 + c] as u32 + src[r1 + c1] as u32;
            dst[o + x] = ((sum + 2) >> 2) as u8;
            x += 1;
        }
    }
}

/// One RGBA pixel as a native 32-bit word whose bytes in memory are R, G,
/// B, A (a macro, not a function: the debug build calls functions).
macro_rules! rgba_word {
    ($r:expr, $g:expr, $b:expr) => {
        if cfg!(target_endian = "little") {
            ($r as u32) | (($g as u32) << 8) | (($b as u32) << 16) | 0xFF00_0000
        } else {
            (($r as u32) << 24) | (($g as u32) << 16) | (($b as u32) << 8) | 0xFF
        }
    };
}

/// The picture as the page gets it: header, then RGBA (alpha 255), `look`
/// applied. Returns the width and height served, and the body.
///
/// Written for the debug build as much as the release one: plain index
/// loops, no closures or iterators in the inner loop, one 32-bit store per
/// pixel.
pub fn to_rgba(frame: &VideoFrame, look: Look, seq: u64, at_ms: u64) -> (u32, u32, Vec<u8>) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (ow, oh) = if look.half { (w / 2, h / 2) } else { (w, h) };
    let mut body = vec![0u8; HEADER_BYTES + ow * oh * 4];
    // The look is applied: the page shows it as it is.
    body[..HEADER_BYTES].copy_from_slice(&header(
        ow as u32,
        oh as u32,
        seq,
        at_ms,
        Format::Rgba,
        Look::AS_IS,
    ));
    // SAFETY: every bit pattern is a valid u32 and a valid u8; align_to_mut
    // only hands out the part of the buffer that is aligned for u32.
    let (before, words, after) = unsafe { body[HEADER_BYTES..].align_to_mut::<u32>() };
    if before.is_empty() && after.is_empty() {
        convert(frame, look, words, ow, oh);
    } else {
        // An allocator that does not align to 4 (none we know of): via a copy.
        let mut words = vec![0u32; ow * oh];
        convert(frame, look, &mut words, ow, oh);
        for (dst, word) in body[HEADER_BYTES..].chunks_exact_mut(4).zip(&words) {
            dst.copy_from_slice(&word.to_ne_bytes());
        }
    }
    (ow as u32, oh as u32, body)
}

/// Fills `out` (`ow × oh` pixels) from `frame` as `look` says.
fn convert(frame: &VideoFrame, look: Look, out: &mut [u32], ow: usize, oh: usize) {
    let t = tables();
    let (ty, clamp) = (&t.y, &t.clamp);
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (yp, up, vp) = frame.planes();
    let cw = w / 2;
    // The clamp table's offset, folded into the chroma terms:
    // (x >> 8) + 384 = (x + 384·256) >> 8.
    let off = CLAMP_OFFSET << 8;
    let mirror = look.mirror;
    if !look.half {
        for row in 0..h {
            let (yb, cb, ob) = (row * w, (row / 2) * cw, row * w);
            let mut cx = 0;
            while cx < cw {
                let (u, v) = (up[cb + cx] as usize, vp[cb + cx] as usize);
                let rv = t.rv[v] + off;
                let guv = t.gu[u] + t.gv[v] + off;
                let bu = t.bu[u] + off;
                let x = 2 * cx;
                let (d0, d1) = if mirror {
                    (ob + w - 1 - x, ob + w - 2 - x)
                } else {
                    (ob + x, ob + x + 1)
                };
                let c = ty[yp[yb + x] as usize];
                out[d0] = rgba_word!(
                    clamp[((c + rv) >> 8) as usize],
                    clamp[((c + guv) >> 8) as usize],
                    clamp[((c + bu) >> 8) as usize]
                );
                let c = ty[yp[yb + x + 1] as usize];
                out[d1] = rgba_word!(
                    clamp[((c + rv) >> 8) as usize],
                    clamp[((c + guv) >> 8) as usize],
                    clamp[((c + bu) >> 8) as usize]
                );
                cx += 1;
            }
        }
    } else {
        // Each output pixel: the mean of a 2×2 block of luma, and that
        // block's own chroma sample (I420 has one per 2×2 block).
        for row in 0..oh {
            let (y0, y1, cb, ob) = (2 * row * w, (2 * row + 1) * w, row * cw, row * ow);
            let mut x = 0;
            while x < ow {
                let (u, v) = (up[cb + x] as usize, vp[cb + x] as usize);
                let sum = yp[y0 + 2 * x] as usize
                    + yp[y0 + 2 * x + 1] as usize
                    + yp[y1 + 2 * x] as usize
                    + yp[y1 + 2 * x + 1] as usize;
                let c = ty[(sum + 2) >> 2];
                let d = if mirror { ob + ow - 1 - x } else { ob + x };
                out[d] = rgba_word!(
                    clamp[((c + t.rv[v] + off) >> 8) as usize],
                    clamp[((c + t.gu[u] + t.gv[v] + off) >> 8) as usize],
                    clamp[((c + t.bu[u] + off) >> 8) as usize]
                );
                x += 1;
            }
        }
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

/// What a `frame:` request asks for: the slot's name, `after` and the format.
pub fn parse_request(uri: &str) -> Option<(String, u64, Format)> {
    // frame://localhost/remote?after=12 or http://frame.localhost/remote?after=12
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path_and_query = rest.split_once('/').map(|(_, p)| p)?;
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let name = path.trim_matches('/');
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let after = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .map(|v| v.parse::<u64>().ok())
        .unwrap_or(Some(0))?;
    let format = match query.split('&').find_map(|kv| kv.strip_prefix("format=")) {
        None | Some("rgba") => Format::Rgba,
        Some("i420") => Format::I420,
        Some("vp8") => Format::Vp8,
        Some(_) => return None,
    };
    Some((name.to_owned(), after, format))
}

/// The box a request asks the picture to fit (`&fit=WxH`, device pixels), if any.
pub fn parse_fit(uri: &str) -> Option<(u32, u32)> {
    let query = uri.split_once('?')?.1;
    let (w, h) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("fit="))?
        .split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// The response for a picture, or for none (`204`), or a bad request (`400`/`404`).
pub fn response(
    result: Result<Option<Vec<u8>>, (u16, &'static str)>,
) -> tauri::http::Response<Cow<'static, [u8]>> {
    let builder = tauri::http::Response::builder()
        // The page's origin (tauri://localhost) is not frame://localhost.
        .header("Access-Control-Allow-Origin", "*")
        .header("Cache-Control", "no-store");
    let built = match result {
        Ok(Some(body)) => builder
            .status(200)
            .header("Content-Type", "application/octet-stream")
            .body(Cow::Owned(body)),
        Ok(None) => builder.status(204).body(Cow::Borrowed(&[][..])),
        Err((status, why)) => builder
            .status(status)
            .header("Content-Type", "text/plain")
            .body(Cow::Borrowed(why.as_bytes())),
    };
    built.unwrap_or_else(|_| tauri::http::Response::new(Cow::Borrowed(&[][..])))
}

/// Answers one `frame:` request (see the module's doc), on the async runtime.
pub fn serve(frames: Arc<Frames>, uri: String, responder: tauri::UriSchemeResponder) {
    let Some((name, after, format)) = parse_request(&uri) else {
        responder.respond(response(Err((
            400,
            "expected /remote or /local, ?after=N and &format=rgba, i420 or vp8",
        ))));
        return;
    };
    if format == Format::Vp8 {
        let Some(queue) = frames.queue(&name).cloned() else {
            responder.respond(response(Err((
                404,
                "no such picture stream: remote or local",
            ))));
            return;
        };
        tauri::async_runtime::spawn(async move {
            let body = queue.wait_after(after, WAIT).await;
            responder.respond(response(Ok(body)));
        });
        return;
    }
    let Some(slot) = frames.slot(&name).cloned() else {
        responder.respond(response(Err((
            404,
            "no such picture stream: remote or local",
        ))));
        return;
    };
    tauri::async_runtime::spawn(async move {
        let picture = slot
            .wait_newer_than(after, format, parse_fit(&uri), WAIT)
            .await;
        responder.respond(response(Ok(picture.map(|p| p.body))));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use callinvite_client::media::TestPattern;
    use callinvite_client::media::VideoSource;

    fn pattern(w: u32, h: u32) -> VideoFrame {
        TestPattern::unpaced(w, h).unwrap().next_frame().unwrap()
    }

    /// A picture of every colour the planes can carry, in blocks.
    fn noise(w: u32, h: u32) -> VideoFrame {
        let n = (w * h + 2 * (w / 2) * (h / 2)) as usize;
        let data = (0..n).map(|i| (i * 7919 % 251) as u8).collect();
        VideoFrame::from_i420(w, h, data).unwrap()
    }

    #[test]
    fn requests_name_a_stream_and_the_last_picture_seen() {
        assert_eq!(
            parse_request("frame://localhost/remote?after=12&format=i420"),
            Some(("remote".into(), 12, Format::I420))
        );
        assert_eq!(
            parse_request("http://frame.localhost/local?x=1&after=7"),
            Some(("local".into(), 7, Format::Rgba))
        );
        assert_eq!(
            parse_request("frame://localhost/remote"),
            Some(("remote".into(), 0, Format::Rgba))
        );
        assert_eq!(
            parse_request("frame://localhost/local?after=3&format=vp8"),
            Some(("local".into(), 3, Format::Vp8))
        );
        assert_eq!(parse_request("frame://localhost/remote?after=x"), None);
        assert_eq!(parse_request("frame://localhost/remote?format=png"), None);
        assert_eq!(parse_request("frame://localhost/"), None);
        assert_eq!(parse_request("frame://localhost/a/b"), None);
    }

    #[test]
    fn the_colours_are_the_media_crates_to_the_bit() {
        for (w, h) in [(640, 480), (18, 6)] {
            let frame = noise(w, h);
            let mut expected = Vec::new();
            frame.to_rgba(&mut expected, false);
            let (ow, oh, body) = to_rgba(&frame, Look::AS_IS, 9, 1234);
            assert_eq!((ow, oh), (w, h));
            assert_eq!(
                &body[..HEADER_BYTES],
                &header(w, h, 9, 1234, Format::Rgba, Look::AS_IS)
            );
            assert!(body[HEADER_BYTES..] == expected[..], "{w}x{h}");
        }
    }

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

    #[test]
    fn i420_is_halved_while_it_still_covers_the_box_it_is_shown_in() {
        assert_eq!(
            parse_fit("frame://localhost/local?after=1&fit=108x81"),
            Some((108, 81))
        );
        assert_eq!(parse_fit("frame://localhost/local?fit=108"), None);
        assert_eq!(parse_fit("frame://localhost/local?after=1"), None);
        assert_eq!(
            halvings(640, 480, true, Some((108, 81))),
            2,
            "160x120 covers 108x81"
        );
        assert_eq!(halvings(640, 480, true, Some((200, 150))), 1);
        assert_eq!(halvings(640, 480, false, Some((388, 291))), 0);
        assert_eq!(
            halvings(640, 480, false, Some((1, 1))),
            3,
            "an eighth at most"
        );
        assert_eq!(halvings(640, 480, false, None), 0);
        let local = FrameSlot::default();
        local.put(
            pattern(640, 480),
            Look {
                half: true,
                mirror: true,
            },
        );
        let p = local
            .newer_than_fit(0, Format::I420, Some((108, 81)))
            .unwrap();
        assert_eq!((p.width, p.height), (160, 120));
        assert_eq!(p.body.len(), HEADER_BYTES + 160 * 120 * 3 / 2);
        assert_eq!(
            &p.body[24..32],
            &[1, 0, 0, 0, 2, 0, 0, 0],
            "i420, mirrored by the page"
        );
        // The bars are still there: white on the left, black on the right (the page mirrors).
        let y = |x: usize, row: usize| p.body[HEADER_BYTES + row * 160 + x];
        assert!(y(2, 10) > 150, "the white bar: {}", y(2, 10));
        assert!(y(157, 10) < 30, "the black bar: {}", y(157, 10));
    }

    #[test]
    fn responses_allow_the_page_to_read_them() {
        let r = response(Ok(None));
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["Access-Control-Allow-Origin"], "*");
        let r = response(Err((404, "no")));
        assert_eq!(r.status(), 404);
    }

    /// Prints what a conversion costs in this build (`cargo test … -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn conversion_cost() {
        let frame = pattern(640, 480);
        for (look, name) in [
            (Look::AS_IS, "640x480"),
            (
                Look {
                    half: true,
                    mirror: true,
                },
                "preview 320x240",
            ),
        ] {
            let started = Instant::now();
            for i in 0..30 {
                std::hint::black_box(to_rgba(&frame, look, i, 0));
            }
            println!(
                "{name}: {:.2} ms",
                started.elapsed().as_secs_f64() * 1000.0 / 30.0
            );
        }
        let started = Instant::now();
        let mut out = Vec::new();
        for _ in 0..10 {
            frame.to_rgba(&mut out, false);
        }
        println!(
            "VideoFrame::to_rgba 640x480: {:.2} ms",
            started.elapsed().as_secs_f64() * 100.0
        );
    }
}
