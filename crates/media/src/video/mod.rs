//! Video: frames, where they come from and where they go, and the VP8
//! codec.
//!
//! A call's video is one VP8 stream each way on a second (`video`) m-line.
//! The sending side runs on a thread of its own (`send`): it pulls frames
//! from a [`VideoSource`] (which paces itself: a camera blocks until its
//! next frame), scales them to what the bandwidth estimate allows, encodes
//! them and hands them to the engine task, which packetizes them through
//! str0m. The receiving side (`receive`) is another thread: it decodes
//! what the engine hands it and gives each picture to a [`VideoSink`].
//! Neither thread ever blocks the engine's 20 ms audio clock.
//!
//! - [`frame`]: [`VideoFrame`], one I420 picture, and conversions (RGBA,
//!   halving, mirroring).
//! - `vp8`: the libvpx VP8 encoder (real-time, error resilient, bitrate
//!   changeable on the fly, keyframes on request) and decoder.
//! - [`pattern`]: [`TestPattern`], a moving colour-bar source, and
//!   [`bar_colours`], which reads the bars back out of a received frame —
//!   how the tests and the CLI show that the picture got through.
//! - `camera` (cargo feature `camera`): `CameraSource`, a camera through
//!   nokhwa (V4L2, AVFoundation, Media Foundation; raw YUYV/NV12 converted
//!   to I420), and `cameras`, the list.
//! - `screen` (cargo feature `screen`): `ScreenSource`, a screen, monitor
//!   or window through X11 (`x11rb`; not supported yet on Wayland without
//!   X11, Windows or macOS), and `screens`, the list.
//!
//! Besides the decoded pictures ([`VideoSink`]), a caller can tap the
//! compressed frames ([`EncodedVideoSink`], [`crate::VideoIo::encoded`]):
//! the peer's as our decoder took them and ours as they were encoded, each
//! stream starting with a keyframe. A window that decodes VP8 itself (a
//! webview's WebCodecs) gets 2–10 kB a picture instead of 460 kB of I420.

#[cfg(feature = "camera")]
pub mod camera;
pub mod frame;
pub(crate) mod path;
pub mod pattern;
pub(crate) mod receive;
#[cfg(feature = "screen")]
pub mod screen;
pub(crate) mod send;
pub(crate) mod vp8;

#[cfg(feature = "camera")]
pub use camera::{cameras, CameraInfo, CameraSource};
pub use frame::VideoFrame;
pub use pattern::{bar_colours, bars_error, TestPattern, BARS};
pub use receive::VideoReceiveStats;
#[cfg(feature = "screen")]
pub use screen::{screens, ScreenInfo, ScreenSource};
pub use send::VideoSendStats;
pub use vp8::Vp8Decoder;

use std::sync::{Arc, Mutex};

/// Pictures to send. Called from the video send thread only, so an
/// implementation may block (a camera waits for its next frame; the test
/// pattern sleeps until its next frame is due): the source sets the frame
/// rate.
pub trait VideoSource: Send + 'static {
    /// The next picture. `None`: the source ended or failed for good (the
    /// camera was unplugged); nothing more is sent until another source is
    /// set.
    fn next_frame(&mut self) -> Option<VideoFrame>;
}

/// Where pictures go: the peer's decoded video, or our own preview. Called
/// from a video thread, never from the engine task.
pub trait VideoSink: Send + 'static {
    /// Takes one picture.
    fn frame(&mut self, frame: &VideoFrame);
}

impl<S: VideoSource + ?Sized> VideoSource for Box<S> {
    fn next_frame(&mut self) -> Option<VideoFrame> {
        (**self).next_frame()
    }
}

impl<S: VideoSink + ?Sized> VideoSink for Box<S> {
    fn frame(&mut self, frame: &VideoFrame) {
        (**self).frame(frame)
    }
}

/// Where the call's **compressed** VP8 frames go, besides being decoded or
/// sent: for a window that decodes them itself. Optional
/// ([`crate::VideoIo::encoded`]); called from the video threads (both
/// methods, from two threads, never at once), so it must be quick.
///
/// Each stream is decodable as it comes: it starts with a keyframe, and
/// every frame follows the one before it — after a loss, the next frame
/// given is a keyframe.
pub trait EncodedVideoSink: Send + 'static {
    /// A frame of the peer's that our own decoder accepted (the frames it
    /// dropped — lost, undecodable, joined mid-stream — are not given, so
    /// the stream restarts at the keyframe that repaired the loss).
    /// `width`×`height`: the picture it decoded to. Return `true` to ask
    /// the peer for a keyframe (PLI; repeated at most every 500 ms while
    /// `true` is returned): the reader lost its place.
    fn remote(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool;
    /// A frame we encoded (and send, once connected: also before, so a
    /// preview shows at once), at the size it was encoded (the bandwidth
    /// estimate may make it smaller than the source). A new source, size
    /// or encoder starts with a keyframe. Return `true` to make the next
    /// frame a keyframe (the peer gets it too).
    fn local(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool;
}

/// An [`EncodedVideoSink`] shared by the two video threads.
pub(crate) type SharedEncodedSink = Arc<Mutex<Box<dyn EncodedVideoSink>>>;

/// Discards every picture.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullVideoSink;

impl VideoSink for NullVideoSink {
    fn frame(&mut self, _frame: &VideoFrame) {}
}

/// A recording [`EncodedVideoSink`] for the video threads' tests.
#[cfg(test)]
pub(crate) mod tap_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// One tapped frame: data, keyframe, width, height.
    pub type Tapped = (Vec<u8>, bool, u32, u32);

    /// Notes what it is given (remote and local apart); asks for a
    /// keyframe once when `want_keyframe` is set.
    #[derive(Clone, Default)]
    pub struct Recorder {
        pub remote: Arc<Mutex<Vec<Tapped>>>,
        pub local: Arc<Mutex<Vec<Tapped>>>,
        pub want_keyframe: Arc<AtomicBool>,
    }

    impl Recorder {
        pub fn shared(&self) -> SharedEncodedSink {
            Arc::new(Mutex::new(Box::new(self.clone())))
        }
    }

    impl EncodedVideoSink for Recorder {
        fn remote(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool {
            self.remote
                .lock()
                .unwrap()
                .push((data.to_vec(), keyframe, width, height));
            self.want_keyframe.swap(false, Ordering::SeqCst)
        }
        fn local(&mut self, data: &[u8], keyframe: bool, width: u32, height: u32) -> bool {
            self.local
                .lock()
                .unwrap()
                .push((data.to_vec(), keyframe, width, height));
            self.want_keyframe.swap(false, Ordering::SeqCst)
        }
    }

    /// Decodes a tapped stream from its start with a fresh decoder, as a
    /// window would: every frame must give a picture of its stated size.
    pub fn assert_decodes(what: &str, frames: &[Tapped]) {
        assert!(!frames.is_empty(), "{what}: nothing tapped");
        assert!(frames[0].1, "{what}: does not start with a keyframe");
        let mut decoder = Vp8Decoder::new().unwrap();
        for (i, (data, key, w, h)) in frames.iter().enumerate() {
            assert_eq!(
                *key,
                vp8::is_keyframe(data),
                "{what}: frame {i}'s keyframe flag"
            );
            let picture = decoder
                .decode(data)
                .unwrap_or_else(|e| panic!("{what}: frame {i} does not decode: {e}"))
                .unwrap_or_else(|| panic!("{what}: frame {i} gave no picture"));
            assert_eq!(
                (picture.width(), picture.height()),
                (*w, *h),
                "{what}: frame {i}"
            );
        }
    }
}
