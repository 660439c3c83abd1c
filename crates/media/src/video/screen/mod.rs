//! Screen and window capture (cargo feature `screen`): [`screens`] lists
//! what can be shared, [`ScreenSource`] captures it as a [`VideoSource`].
//!
//! # What works where
//!
//! - **Linux and the BSDs with X11** (`$DISPLAY` set, including an Xwayland
//!   session's X clients): whole X screens, RandR monitors (when there is
//!   more than one) and top-level windows, through `x11rb` (pure Rust: it
//!   speaks the X protocol over the socket, no libxcb or libX11, nothing to
//!   install to build). Each frame is one core-protocol `GetImage`
//!   (ZPixmap) — no MIT-SHM, so a 1920×1080 screen is 8 MB through the
//!   socket per frame; fine for a screen share at 5–15 fps.
//! - **Wayland without X11** (no `$DISPLAY`), **Windows, macOS**: not
//!   supported yet; [`screens`] and [`ScreenSource::open`] return
//!   [`MediaError::ScreenCapture`] saying so. (Wayland needs the
//!   xdg-desktop-portal ScreenCast portal and PipeWire; Windows the
//!   Desktop Duplication or Windows.Graphics.Capture API; macOS
//!   ScreenCaptureKit.)
//!
//! Under Xwayland the root window only shows X clients, not native Wayland
//! windows: a Wayland desktop should share through the portal once it
//! exists.
//!
//! # Ids
//!
//! - `screen:N`: X screen `N` as a whole (its root window). `None` opens the
//!   display's default screen.
//! - `monitor:NAME`: one RandR monitor (e.g. `monitor:HDMI-1`), a rectangle
//!   of its screen.
//! - `window:0xHEX`: one top-level window (a bare `0x…` or decimal window
//!   id works too). Its picture follows its size; parts covered by other
//!   windows show what covers them, or garbage (the X server keeps no
//!   hidden contents without a compositor's help); while it is unmapped
//!   (minimized) the last picture is repeated. A closed window ends the
//!   source.
//!
//! Pictures larger than the `max_width × max_height` given to
//! [`ScreenSource::open`] are scaled down (box filter, aspect kept) to fit;
//! every picture is cropped to even width and height.
//!
//! # Layout
//!
//! - `x11`: the X11 backend — listing screens, monitors and windows,
//!   resolving an id, and capturing one `GetImage` per frame.
//! - `unsupported`: the same API where there is no X11 (always an error).
//! - `pixels`: the backend-independent image work — reading the X
//!   server's pixel layouts, scaling down to fit, and the [`VideoFrame`].
//! - `pacer`: the fixed frame rate a screen source keeps.

// Where there is no X11, `pixels` and `pacer` serve the tests only.
#![cfg_attr(
    not(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )),
    allow(dead_code)
)]

mod pacer;
mod pixels;
#[cfg(not(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
)))]
mod unsupported;
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod x11;

#[cfg(test)]
mod tests;

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
pub use x11::{screens, ScreenSource};

#[cfg(not(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
)))]
pub use unsupported::{screens, ScreenSource};

#[allow(unused_imports)] // VideoFrame, VideoSource: for the docs' links
use crate::video::{VideoFrame, VideoSource};
use crate::MediaError;

/// Something that can be captured: a whole screen, a monitor or a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenInfo {
    /// What to pass to [`ScreenSource::open`]: `screen:N`, `monitor:NAME`
    /// or `window:0xHEX`.
    pub id: String,
    /// For people: "Screen 0", "Monitor HDMI-1", or the window's title.
    pub name: String,
    /// Size in pixels at listing time.
    pub width: u32,
    /// Size in pixels at listing time.
    pub height: u32,
}

fn check_open_args(max_width: u32, max_height: u32, fps: u32) -> Result<(), MediaError> {
    if max_width < 2 || max_height < 2 || fps == 0 {
        return Err(MediaError::Video(format!(
            "screen capture at most {max_width}x{max_height} at {fps} fps: sizes must be 2 or more, fps 1 or more"
        )));
    }
    Ok(())
}
