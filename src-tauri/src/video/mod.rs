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
//!   [`EncodedVideoSink`](callinvite_client::media::video::EncodedVideoSink)) and the request waits for it.
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
//!
//! Layout, one file per concern: `slot.rs` keeps the latest decoded
//! picture of a stream ([`FrameSlot`]) and the sinks that fill it
//! ([`SlotSink`]: the peer's pictures, our preview); `encoded.rs` keeps the
//! compressed frames ([`EncodedQueue`]) and the engine's tap into them
//! ([`EncodedTap`]); `convert.rs` makes a response body of a decoded picture
//! (I420 halved to fit, or RGBA); `scheme.rs` reads a `frame:` request and
//! answers it ([`serve`]). This file holds what they share: the streams of a
//! call ([`Frames`]), how a picture is shown ([`Look`]) and carried
//! ([`Format`]), the header, and the figures ([`DeliveryStats`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;

mod convert;
mod encoded;
mod scheme;
mod slot;

pub use convert::{halvings, i420_body, to_rgba};
pub use encoded::{EncodedQueue, EncodedTap, QUEUE_BYTES, QUEUE_FRAMES, VP8_RECORD_BYTES};
pub use scheme::{parse_fit, parse_request, response, serve, WAIT};
pub use slot::{FrameSlot, Picture, SlotSink};

/// Bytes before the pixels in a response body.
pub const HEADER_BYTES: usize = 32;

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

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The test pattern at `w`×`h`: bars, white (75 %) on the left to black on
/// the right.
#[cfg(test)]
fn pattern(w: u32, h: u32) -> callinvite_client::media::VideoFrame {
    use callinvite_client::media::{TestPattern, VideoSource};
    TestPattern::unpaced(w, h).unwrap().next_frame().unwrap()
}
