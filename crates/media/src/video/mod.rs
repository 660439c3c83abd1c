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

/// Discards every picture.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullVideoSink;

impl VideoSink for NullVideoSink {
    fn frame(&mut self, _frame: &VideoFrame) {}
}
