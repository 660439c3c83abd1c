//! Cameras (cargo feature `camera`): [`cameras`] lists them,
//! [`CameraSource`] captures one as a [`VideoSource`].
//!
//! Through nokhwa's native backends: V4L2 on Linux, AVFoundation on macOS,
//! Media Foundation on Windows. On Linux the list comes from V4L2 itself
//! (`/dev/video*` nodes that capture video; a UVC camera's metadata node is
//! left out) and ids are the device paths, `/dev/video0`; elsewhere ids are
//! nokhwa's indices, `0`, `1`, …. [`CameraSource::open`] also takes a
//! camera's name.
//!
//! Only uncompressed formats are used — YUYV (4:2:2), NV12, and the rare
//! grey and RGB ones — converted to I420 here, so no JPEG decoder is built
//! in (nokhwa's `decoding` feature would bring mozjpeg, which wants nasm).
//! Of what the camera offers, the raw mode closest to the asked size and
//! rate is taken, a lower size at the full rate before the full size at a
//! poor rate (UVC cameras often give 1280×720 YUYV at 10 fps only, but
//! 640×480 at 30). A camera that offers MJPEG only is refused with a
//! [`MediaError::Camera`] saying so.
//!
//! On macOS the first [`CameraSource::open`] asks the user for camera
//! access (the system's dialog) and waits for the answer; a refusal is a
//! [`MediaError::Camera`]. The app's `Info.plist` needs an
//! `NSCameraUsageDescription`.
//!
//! The camera paces the source: [`VideoSource::next_frame`] blocks until
//! the next picture. The camera runs on a thread of its own, which drops
//! pictures that come faster than the asked rate and keeps only the newest
//! for the reader. Pictures keep the camera's size, cropped to even width and height.
//! A camera that is unplugged or fails ends the source (`None`, the reason
//! logged).
//!
//! Tested here without a camera (conversions, mode choice, errors); the
//! capture path itself is exercised only on machines with one.
//!
//! # Layout
//!
//! - `list`: which cameras there are ([`cameras`], [`CameraInfo`]).
//! - `mode`: which of a camera's modes to ask for.
//! - `convert`: its raw pictures to I420 ([`yuyv_to_i420`],
//!   [`nv12_to_i420`], and the rarer grey and RGB).
//! - `source`: [`CameraSource`], what the send thread reads: the newest
//!   picture in a one-picture slot, and access to the camera on macOS.
//! - `capture`: the camera thread: opening the camera in its mode,
//!   reading at the asked rate, letting it go without nokhwa's panic.

mod capture;
mod convert;
mod list;
mod mode;
mod source;

pub use convert::{nv12_to_i420, yuyv_to_i420};
pub use list::{cameras, CameraInfo};
pub use source::CameraSource;

use nokhwa::NokhwaError;

use crate::MediaError;

/// A nokhwa error, saying what we were doing.
fn camera_error(what: &str, e: NokhwaError) -> MediaError {
    MediaError::Camera(format!("{what}: {e}"))
}
