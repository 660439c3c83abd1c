//! The screen API where there is no X11 (Windows, macOS, Android):
//! every call says capture is not supported on this platform yet.

use super::{check_open_args, ScreenInfo};
use crate::video::{VideoFrame, VideoSource};
use crate::MediaError;

fn not_supported() -> MediaError {
    MediaError::ScreenCapture(format!(
        "screen capture is not supported on this platform yet ({}); only X11 is",
        std::env::consts::OS
    ))
}

/// What can be captured: on this platform, an error (not supported yet).
pub fn screens() -> Result<Vec<ScreenInfo>, MediaError> {
    Err(not_supported())
}

/// A screen or window as a video source (not supported on this
/// platform yet).
#[derive(Debug)]
pub struct ScreenSource {
    _private: (),
}

impl ScreenSource {
    /// Always an error here: not supported on this platform yet.
    pub fn open(
        _id: Option<&str>,
        max_width: u32,
        max_height: u32,
        fps: u32,
    ) -> Result<Self, MediaError> {
        check_open_args(max_width, max_height, fps)?;
        Err(not_supported())
    }
}

impl VideoSource for ScreenSource {
    fn next_frame(&mut self) -> Option<VideoFrame> {
        None
    }
}
