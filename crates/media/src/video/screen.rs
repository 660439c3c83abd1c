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

// Where there is no X11, the helpers below serve the tests only.
#![cfg_attr(
    not(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )),
    allow(dead_code)
)]

use std::time::{Duration, Instant};

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

#[allow(unused_imports)] // VideoSource: for the docs' links
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

/// Frame pacing at a fixed rate from a schedule (no drift: the n-th frame
/// is due at start + n × period), skipping ahead rather than bursting when
/// a capture took longer than a period.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    pub(crate) fn new(fps: u32) -> Self {
        Pacer {
            period: Duration::from_secs(1) / fps.clamp(1, 120),
            next: Instant::now(),
        }
    }

    /// Sleeps until the next frame is due.
    pub(crate) fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
            self.next += self.period;
        } else if now - self.next > self.period {
            // More than a frame late: start the schedule afresh.
            self.next = now + self.period;
        } else {
            self.next += self.period;
        }
    }
}

/// The even size that `width × height` scales down to so as to fit in
/// `max_width × max_height`, keeping the aspect ratio (never scaled up).
pub(crate) fn fit_size(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width.max(2)), u64::from(height.max(2)));
    let (mw, mh) = (u64::from(max_width.max(2)), u64::from(max_height.max(2)));
    let (mut dw, mut dh) = (w, h);
    if dw > mw {
        dh = dh * mw / dw;
        dw = mw;
    }
    if dh > mh {
        dw = dw * mh / dh;
        dh = mh;
    }
    ((dw as u32 & !1).max(2), (dh as u32 & !1).max(2))
}

/// Scales (box filter: each output pixel is the mean of the source pixels
/// it covers) or crops 4-byte pixels (`stride` bytes a row) to exactly
/// `dw × dh`, tightly packed. `dw ≤ sw` and `dh ≤ sh`.
pub(crate) fn scale_bgrx(
    src: &[u8],
    sw: usize,
    sh: usize,
    stride: usize,
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; dw * dh * 4];
    if dw + 1 >= sw && dh + 1 >= sh {
        // The same size but for an odd column or row: a copy.
        for row in 0..dh {
            out[row * dw * 4..(row + 1) * dw * 4]
                .copy_from_slice(&src[row * stride..row * stride + dw * 4]);
        }
        return out;
    }
    // Source column and row ranges of each output column and row.
    let cols: Vec<(usize, usize)> = (0..dw)
        .map(|x| {
            let a = x * sw / dw;
            let b = ((x + 1) * sw / dw).max(a + 1);
            (a, b)
        })
        .collect();
    let mut acc = vec![[0u32; 3]; dw];
    for y in 0..dh {
        let (ra, rb) = (y * sh / dh, ((y + 1) * sh / dh).max(y * sh / dh + 1));
        acc.iter_mut().for_each(|a| *a = [0; 3]);
        for row in ra..rb {
            let line = &src[row * stride..];
            for (a, &(ca, cb)) in acc.iter_mut().zip(&cols) {
                for px in line[ca * 4..cb * 4].chunks_exact(4) {
                    a[0] += u32::from(px[0]);
                    a[1] += u32::from(px[1]);
                    a[2] += u32::from(px[2]);
                }
            }
        }
        let dst = &mut out[y * dw * 4..(y + 1) * dw * 4];
        for ((px, a), &(ca, cb)) in dst.chunks_exact_mut(4).zip(&acc).zip(&cols) {
            let n = ((cb - ca) * (rb - ra)) as u32;
            px[0] = ((a[0] + n / 2) / n) as u8;
            px[1] = ((a[1] + n / 2) / n) as u8;
            px[2] = ((a[2] + n / 2) / n) as u8;
            px[3] = 255;
        }
    }
    out
}

/// How the X server lays out a ZPixmap image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PixelLayout {
    /// 8, 16, 24 or 32.
    pub bits_per_pixel: u8,
    /// Row padding, in bits (8, 16 or 32).
    pub scanline_pad: u8,
    /// `true`: least significant byte first (the X server's image byte
    /// order).
    pub lsb_first: bool,
    pub red_mask: u32,
    pub green_mask: u32,
    pub blue_mask: u32,
}

impl PixelLayout {
    /// Bytes a row of `width` pixels takes.
    pub(crate) fn stride(self, width: usize) -> usize {
        let pad = usize::from(self.scanline_pad.max(8));
        (width * usize::from(self.bits_per_pixel)).div_ceil(pad) * pad / 8
    }

    /// Already B, G, R, X bytes in memory.
    fn is_bgrx(self) -> bool {
        self.bits_per_pixel == 32
            && self.lsb_first
            && (self.red_mask, self.green_mask, self.blue_mask) == (0xff_0000, 0xff00, 0xff)
    }

    /// The image as tightly packed B, G, R, X bytes (X = 255); `None` for
    /// a pixel size we cannot read (indexed colour, under 15 bits).
    pub(crate) fn to_bgrx(self, data: &[u8], width: usize, height: usize) -> Option<Vec<u8>> {
        let stride = self.stride(width);
        let bytes = usize::from(self.bits_per_pixel) / 8;
        if !matches!(self.bits_per_pixel, 16 | 24 | 32)
            || self.red_mask == 0
            || self.green_mask == 0
            || self.blue_mask == 0
            || data.len() < stride * height.saturating_sub(1) + width * bytes
        {
            return None;
        }
        let channel = |mask: u32| {
            let shift = mask.trailing_zeros();
            let max = mask >> shift;
            move |p: u32| -> u8 { (((p & mask) >> shift) * 255 / max) as u8 }
        };
        let (r, g, b) = (
            channel(self.red_mask),
            channel(self.green_mask),
            channel(self.blue_mask),
        );
        let mut out = Vec::with_capacity(width * height * 4);
        for row in 0..height {
            let line = &data[row * stride..row * stride + width * bytes];
            for px in line.chunks_exact(bytes) {
                let mut p = 0u32;
                for (i, &byte) in px.iter().enumerate() {
                    let shift = if self.lsb_first {
                        8 * i
                    } else {
                        8 * (bytes - 1 - i)
                    };
                    p |= u32::from(byte) << shift;
                }
                out.extend_from_slice(&[b(p), g(p), r(p), 255]);
            }
        }
        Some(out)
    }
}

/// A captured image in the server's layout to a [`VideoFrame`] no larger
/// than `max_width × max_height`.
pub(crate) fn image_to_frame(
    layout: &PixelLayout,
    data: &[u8],
    width: u32,
    height: u32,
    max_width: u32,
    max_height: u32,
) -> Result<VideoFrame, MediaError> {
    if width < 2 || height < 2 {
        return Err(MediaError::ScreenCapture(format!(
            "a {width}x{height} image is too small"
        )));
    }
    let (w, h) = (width as usize, height as usize);
    let converted;
    let (pixels, stride) = if layout.is_bgrx() {
        (data, layout.stride(w))
    } else {
        converted = layout.to_bgrx(data, w, h).ok_or_else(|| {
            MediaError::ScreenCapture(format!(
                "unsupported pixel layout {layout:?} ({} bytes for {width}x{height})",
                data.len()
            ))
        })?;
        (&converted[..], w * 4)
    };
    if pixels.len() < stride * (h - 1) + w * 4 {
        return Err(MediaError::ScreenCapture(format!(
            "{} bytes for a {width}x{height} image",
            pixels.len()
        )));
    }
    let (dw, dh) = fit_size(width, height, max_width.min(8192), max_height.min(8192));
    let scaled = scale_bgrx(pixels, w, h, stride, dw as usize, dh as usize);
    VideoFrame::from_bgra(dw, dh, &scaled)
}

fn check_open_args(max_width: u32, max_height: u32, fps: u32) -> Result<(), MediaError> {
    if max_width < 2 || max_height < 2 || fps == 0 {
        return Err(MediaError::Video(format!(
            "screen capture at most {max_width}x{max_height} at {fps} fps: sizes must be 2 or more, fps 1 or more"
        )));
    }
    Ok(())
}

#[cfg(not(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
)))]
mod unsupported {
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
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod x11 {
    use std::time::Instant;

    use x11rb::connection::{Connection, RequestConnection};
    use x11rb::errors::ReplyError;
    use x11rb::protocol::randr::ConnectionExt as _;
    use x11rb::protocol::xproto::{
        Atom, AtomEnum, ConnectionExt as _, ImageFormat, ImageOrder, MapState, Screen, Window,
    };
    use x11rb::protocol::ErrorKind;
    use x11rb::rust_connection::RustConnection;

    use super::{check_open_args, image_to_frame, Pacer, PixelLayout, ScreenInfo};
    use crate::video::{VideoFrame, VideoSource};
    use crate::MediaError;

    fn connect(display: Option<&str>) -> Result<(RustConnection, usize), MediaError> {
        if display.is_none() && std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
            let wayland = std::env::var_os("WAYLAND_DISPLAY").is_some();
            return Err(MediaError::ScreenCapture(if wayland {
                "Wayland without X11 ($DISPLAY unset): screen capture through the desktop portal is not supported on this platform yet".into()
            } else {
                "no X display ($DISPLAY unset): screen capture needs X11; other platforms are not supported yet".into()
            }));
        }
        x11rb::connect(display).map_err(|e| {
            let shown = display
                .map(str::to_owned)
                .or_else(|| std::env::var("DISPLAY").ok())
                .unwrap_or_default();
            MediaError::ScreenCapture(format!("cannot connect to the X display {shown:?}: {e}"))
        })
    }

    fn x_error(what: &str, e: impl std::fmt::Display) -> MediaError {
        MediaError::ScreenCapture(format!("{what}: {e}"))
    }

    /// What is captured.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Target {
        /// A rectangle of a root window (a whole screen or a monitor).
        Area {
            root: Window,
            x: i16,
            y: i16,
            width: u16,
            height: u16,
        },
        /// A window, at whatever size it has.
        Window(Window),
    }

    /// What can be captured on `$DISPLAY`: each X screen, each RandR
    /// monitor when a screen has more than one, then the top-level windows
    /// that are mapped and have a title (the window manager's
    /// `_NET_CLIENT_LIST` when there is one, else the root's viewable
    /// children), titles from `_NET_WM_NAME` or `WM_NAME`.
    pub fn screens() -> Result<Vec<ScreenInfo>, MediaError> {
        screens_on(None)
    }

    pub(super) fn screens_on(display: Option<&str>) -> Result<Vec<ScreenInfo>, MediaError> {
        let (conn, _) = connect(display)?;
        let names = Names::new(&conn)?;
        let mut out = Vec::new();
        for (n, screen) in conn.setup().roots.iter().enumerate() {
            out.push(ScreenInfo {
                id: format!("screen:{n}"),
                name: format!("Screen {n}"),
                width: screen.width_in_pixels.into(),
                height: screen.height_in_pixels.into(),
            });
            let monitors = monitors(&conn, screen.root);
            if monitors.len() > 1 {
                for m in monitors {
                    out.push(ScreenInfo {
                        id: format!("monitor:{}", m.name),
                        name: format!("Monitor {}", m.name),
                        width: m.width.into(),
                        height: m.height.into(),
                    });
                }
            }
        }
        for screen in &conn.setup().roots {
            for window in top_level_windows(&conn, screen, &names)? {
                let Some(title) = names.title(&conn, window) else {
                    continue;
                };
                let Ok(geometry) = conn
                    .get_geometry(window)
                    .map_err(ReplyError::from)
                    .and_then(|c| c.reply())
                else {
                    continue;
                };
                out.push(ScreenInfo {
                    id: format!("window:{window:#x}"),
                    name: title,
                    width: geometry.width.into(),
                    height: geometry.height.into(),
                });
            }
        }
        Ok(out)
    }

    struct Names {
        net_wm_name: Atom,
        utf8_string: Atom,
        net_client_list: Atom,
    }

    impl Names {
        fn new(conn: &RustConnection) -> Result<Self, MediaError> {
            let atom = |name: &[u8]| -> Result<Atom, MediaError> {
                Ok(conn
                    .intern_atom(false, name)
                    .map_err(|e| x_error("InternAtom", e))?
                    .reply()
                    .map_err(|e| x_error("InternAtom", e))?
                    .atom)
            };
            Ok(Names {
                net_wm_name: atom(b"_NET_WM_NAME")?,
                utf8_string: atom(b"UTF8_STRING")?,
                net_client_list: atom(b"_NET_CLIENT_LIST")?,
            })
        }

        /// `_NET_WM_NAME` (UTF-8), else `WM_NAME` (Latin-1); `None` when
        /// the window has neither or an empty one.
        fn title(&self, conn: &RustConnection, window: Window) -> Option<String> {
            let get = |property: Atom, type_: Atom| {
                conn.get_property(false, window, property, type_, 0, 1024)
                    .ok()?
                    .reply()
                    .ok()
                    .filter(|r| r.format == 8 && !r.value.is_empty())
                    .map(|r| r.value)
            };
            let title = get(self.net_wm_name, self.utf8_string)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .or_else(|| {
                    get(AtomEnum::WM_NAME.into(), AtomEnum::ANY.into())
                        .map(|v| v.iter().map(|&b| char::from(b)).collect())
                })?;
            let title = title.trim_end_matches('\0').to_owned();
            (!title.is_empty()).then_some(title)
        }
    }

    fn top_level_windows(
        conn: &RustConnection,
        screen: &Screen,
        names: &Names,
    ) -> Result<Vec<Window>, MediaError> {
        let clients = conn
            .get_property(
                false,
                screen.root,
                names.net_client_list,
                AtomEnum::WINDOW,
                0,
                4096,
            )
            .map_err(|e| x_error("GetProperty", e))?
            .reply()
            .map_err(|e| x_error("GetProperty", e))?;
        if let Some(list) = clients.value32() {
            let list: Vec<Window> = list.collect();
            if !list.is_empty() {
                return Ok(list);
            }
        }
        let children = conn
            .query_tree(screen.root)
            .map_err(|e| x_error("QueryTree", e))?
            .reply()
            .map_err(|e| x_error("QueryTree", e))?
            .children;
        Ok(children
            .into_iter()
            .filter(|&w| {
                conn.get_window_attributes(w)
                    .ok()
                    .and_then(|c| c.reply().ok())
                    .is_some_and(|a| a.map_state == MapState::VIEWABLE && !a.override_redirect)
            })
            .collect())
    }

    struct Monitor {
        name: String,
        x: i16,
        y: i16,
        width: u16,
        height: u16,
    }

    /// The screen's RandR monitors (RandR 1.5); none without RandR.
    fn monitors(conn: &RustConnection, root: Window) -> Vec<Monitor> {
        let has_randr = conn
            .extension_information(x11rb::protocol::randr::X11_EXTENSION_NAME)
            .ok()
            .flatten()
            .is_some();
        if !has_randr {
            return Vec::new();
        }
        let Some(version) = conn
            .randr_query_version(1, 5)
            .ok()
            .and_then(|c| c.reply().ok())
        else {
            return Vec::new();
        };
        if (version.major_version, version.minor_version) < (1, 5) {
            return Vec::new();
        }
        let Some(reply) = conn
            .randr_get_monitors(root, true)
            .ok()
            .and_then(|c| c.reply().ok())
        else {
            return Vec::new();
        };
        reply
            .monitors
            .iter()
            .map(|m| Monitor {
                name: conn
                    .get_atom_name(m.name)
                    .ok()
                    .and_then(|c| c.reply().ok())
                    .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                    .unwrap_or_else(|| format!("{}", m.name)),
                x: m.x,
                y: m.y,
                width: m.width,
                height: m.height,
            })
            .collect()
    }

    fn parse_window_id(s: &str) -> Option<Window> {
        let s = s.strip_prefix("window:").unwrap_or(s);
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => Window::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    }

    fn find_target(
        conn: &RustConnection,
        default_screen: usize,
        id: Option<&str>,
    ) -> Result<Target, MediaError> {
        let roots = &conn.setup().roots;
        let whole = |screen: &Screen| Target::Area {
            root: screen.root,
            x: 0,
            y: 0,
            width: screen.width_in_pixels,
            height: screen.height_in_pixels,
        };
        let Some(id) = id else {
            return Ok(whole(&roots[default_screen]));
        };
        if let Some(n) = id.strip_prefix("screen:") {
            return n
                .parse::<usize>()
                .ok()
                .and_then(|n| roots.get(n))
                .map(whole)
                .ok_or_else(|| {
                    MediaError::ScreenCapture(format!("no screen {id:?} on this display"))
                });
        }
        if let Some(name) = id.strip_prefix("monitor:") {
            for screen in roots {
                if let Some(m) = monitors(conn, screen.root)
                    .into_iter()
                    .find(|m| m.name == name)
                {
                    return Ok(Target::Area {
                        root: screen.root,
                        x: m.x,
                        y: m.y,
                        width: m.width,
                        height: m.height,
                    });
                }
            }
            return Err(MediaError::ScreenCapture(format!(
                "no monitor {name:?} on this display"
            )));
        }
        let window = parse_window_id(id).ok_or_else(|| {
            MediaError::ScreenCapture(format!("{id:?} is not a screen, monitor or window id"))
        })?;
        match conn
            .get_geometry(window)
            .map_err(ReplyError::from)
            .and_then(|c| c.reply())
        {
            Ok(_) => Ok(Target::Window(window)),
            Err(e) => Err(MediaError::ScreenCapture(format!("no window {id:?}: {e}"))),
        }
    }

    /// A screen, monitor or window of an X display as a [`VideoSource`]:
    /// one `GetImage` per frame, at `fps`, scaled down to fit
    /// `max_width × max_height`.
    #[derive(Debug)]
    pub struct ScreenSource {
        conn: RustConnection,
        target: Target,
        max_width: u32,
        max_height: u32,
        pacer: Pacer,
        /// Repeated while a window is unmapped.
        last: Option<VideoFrame>,
    }

    impl ScreenSource {
        /// Opens `id` (from [`screens`]; `None`: the default screen, whole)
        /// on `$DISPLAY`.
        pub fn open(
            id: Option<&str>,
            max_width: u32,
            max_height: u32,
            fps: u32,
        ) -> Result<Self, MediaError> {
            Self::open_on(None, id, max_width, max_height, fps)
        }

        /// The same on the given X display (e.g. `":1"`) instead of
        /// `$DISPLAY`.
        pub(crate) fn open_on(
            display: Option<&str>,
            id: Option<&str>,
            max_width: u32,
            max_height: u32,
            fps: u32,
        ) -> Result<Self, MediaError> {
            check_open_args(max_width, max_height, fps)?;
            let (conn, default_screen) = connect(display)?;
            let target = find_target(&conn, default_screen, id)?;
            let mut source = ScreenSource {
                conn,
                target,
                max_width,
                max_height,
                pacer: Pacer::new(fps),
                last: None,
            };
            // A first capture now, so that a target we cannot read fails
            // here rather than in the send thread.
            source.capture()?;
            Ok(source)
        }

        /// `Ok(None)`: a window that is not viewable right now.
        fn capture(&mut self) -> Result<Option<VideoFrame>, MediaError> {
            let (drawable, x, y, width, height) = match self.target {
                Target::Area {
                    root,
                    x,
                    y,
                    width,
                    height,
                } => (root, x, y, width, height),
                Target::Window(w) => {
                    let g = self
                        .conn
                        .get_geometry(w)
                        .map_err(ReplyError::from)
                        .and_then(|c| c.reply());
                    match g {
                        Ok(g) => (w, 0, 0, g.width, g.height),
                        Err(e) => return Err(x_error(&format!("window {w:#x} is gone"), e)),
                    }
                }
            };
            let taken = Instant::now();
            let reply = self
                .conn
                .get_image(ImageFormat::Z_PIXMAP, drawable, x, y, width, height, !0)
                .map_err(ReplyError::from)
                .and_then(|c| c.reply());
            let image = match reply {
                Ok(image) => image,
                Err(ReplyError::X11Error(e))
                    if e.error_kind == ErrorKind::Match
                        && matches!(self.target, Target::Window(_)) =>
                {
                    // Unmapped (minimized) or partly off the screen.
                    return Ok(None);
                }
                Err(e @ ReplyError::ConnectionError(_)) => {
                    return Err(x_error("the X server connection was lost", e))
                }
                Err(e) => return Err(x_error("GetImage", e)),
            };
            let layout = self.layout(image.depth)?;
            let mut frame = image_to_frame(
                &layout,
                &image.data,
                width.into(),
                height.into(),
                self.max_width,
                self.max_height,
            )?;
            frame.captured = taken;
            self.last = Some(frame.clone());
            Ok(Some(frame))
        }

        fn layout(&self, depth: u8) -> Result<PixelLayout, MediaError> {
            let setup = self.conn.setup();
            let format = setup
                .pixmap_formats
                .iter()
                .find(|f| f.depth == depth)
                .ok_or_else(|| {
                    MediaError::ScreenCapture(format!("no pixmap format of depth {depth}"))
                })?;
            // The visual of that depth (TrueColor masks); the root's own
            // first.
            let visual = setup
                .roots
                .iter()
                .flat_map(|s| {
                    let root_visual = s.root_visual;
                    s.allowed_depths
                        .iter()
                        .filter(move |d| d.depth == depth)
                        .flat_map(|d| d.visuals.iter())
                        .map(move |v| (v.visual_id != root_visual, v))
                })
                .min_by_key(|(not_root, _)| *not_root)
                .map(|(_, v)| *v)
                .ok_or_else(|| MediaError::ScreenCapture(format!("no visual of depth {depth}")))?;
            Ok(PixelLayout {
                bits_per_pixel: format.bits_per_pixel,
                scanline_pad: format.scanline_pad,
                lsb_first: setup.image_byte_order == ImageOrder::LSB_FIRST,
                red_mask: visual.red_mask,
                green_mask: visual.green_mask,
                blue_mask: visual.blue_mask,
            })
        }
    }

    impl VideoSource for ScreenSource {
        fn next_frame(&mut self) -> Option<VideoFrame> {
            self.pacer.wait();
            match self.capture() {
                Ok(Some(frame)) => Some(frame),
                Ok(None) => {
                    let mut last = match self.last.clone() {
                        Some(frame) => frame,
                        None => VideoFrame::black(
                            self.max_width.min(640) & !1,
                            self.max_height.min(360) & !1,
                        )
                        .ok()?,
                    };
                    last.captured = Instant::now();
                    Some(last)
                }
                Err(e) => {
                    tracing::warn!("screen capture ends: {e}");
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_even_sizes() {
        assert_eq!(fit_size(1920, 1080, 1280, 720), (1280, 720));
        assert_eq!(fit_size(1920, 1080, 640, 640), (640, 360));
        assert_eq!(fit_size(641, 481, 1920, 1080), (640, 480));
        assert_eq!(fit_size(1080, 1920, 1280, 720), (404, 720));
        assert_eq!(fit_size(3, 3, 1, 1), (2, 2));
    }

    #[test]
    fn box_scaling_averages_and_crop_copies() {
        // 4×2, left half white, right half black, 4-byte rows padded to 20.
        let mut src = vec![0u8; 20 * 2];
        for row in 0..2 {
            for col in 0..2 {
                src[row * 20 + col * 4..row * 20 + col * 4 + 4]
                    .copy_from_slice(&[255, 255, 255, 0]);
            }
        }
        let half = scale_bgrx(&src, 4, 2, 20, 2, 2);
        assert_eq!(&half[..4], &[255, 255, 255, 255]);
        assert_eq!(&half[4..8], &[0, 0, 0, 255]);
        let one = scale_bgrx(&src, 4, 2, 20, 2, 1);
        assert_eq!(one.len(), 8);
        // Crop of an odd width: 3×2 to 2×2 copies the first two columns.
        let crop = scale_bgrx(&src, 3, 2, 20, 2, 2);
        assert_eq!(&crop[..8], &src[..8]);
        assert_eq!(&crop[8..16], &src[20..28]);
    }

    #[test]
    fn layouts_other_than_bgrx_convert() {
        // 16-bit 5-6-5, LSB first, 2 pixels: pure red then pure blue; rows
        // padded to 32 bits.
        let layout = PixelLayout {
            bits_per_pixel: 16,
            scanline_pad: 32,
            lsb_first: true,
            red_mask: 0xf800,
            green_mask: 0x07e0,
            blue_mask: 0x001f,
        };
        assert_eq!(layout.stride(3), 8);
        let data = [0x00, 0xf8, 0x1f, 0x00];
        let bgrx = layout.to_bgrx(&data, 2, 1).unwrap();
        assert_eq!(bgrx, vec![0, 0, 255, 255, 255, 0, 0, 255]);
        // 24-bit packed, MSB first (R, G, B bytes).
        let layout = PixelLayout {
            bits_per_pixel: 24,
            scanline_pad: 8,
            lsb_first: false,
            red_mask: 0xff_0000,
            green_mask: 0xff00,
            blue_mask: 0xff,
        };
        let bgrx = layout.to_bgrx(&[10, 20, 30], 1, 1).unwrap();
        assert_eq!(bgrx, vec![30, 20, 10, 255]);
        // Indexed colour: refused.
        let layout = PixelLayout {
            bits_per_pixel: 8,
            ..layout
        };
        assert!(layout.to_bgrx(&[0; 4], 2, 2).is_none());
    }

    #[test]
    fn pacer_holds_the_rate_without_drift() {
        let mut pacer = Pacer::new(50);
        let start = Instant::now();
        for _ in 0..10 {
            pacer.wait();
        }
        // The first frame is due at once, the tenth at 9 × 20 ms.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(175) && elapsed < Duration::from_millis(400),
            "{elapsed:?}"
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(matches!(
            ScreenSource::open(None, 0, 480, 10),
            Err(MediaError::Video(_))
        ));
        assert!(matches!(
            ScreenSource::open(None, 640, 480, 0),
            Err(MediaError::Video(_))
        ));
    }

    #[cfg(all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    ))]
    mod xvfb {
        use std::io::{BufRead, BufReader};
        use std::process::{Child, Command, Stdio};

        use x11rb::connection::Connection;
        use x11rb::protocol::xproto::{
            AtomEnum, ConnectionExt as _, CreateWindowAux, PropMode, WindowClass,
        };
        use x11rb::wrapper::ConnectionExt as _;

        use super::super::x11::screens_on;
        use super::super::ScreenSource;
        use crate::video::VideoSource;
        use crate::MediaError;

        /// An Xvfb of our own, on a display number it picks itself
        /// (`-displayfd`), killed on drop.
        struct Xvfb {
            child: Child,
            display: String,
        }

        impl Xvfb {
            fn start(screen: &str) -> Xvfb {
                let mut child = match Command::new("Xvfb")
                    .args([
                        "-displayfd",
                        "1",
                        "-nolisten",
                        "tcp",
                        "-screen",
                        "0",
                        screen,
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    Ok(child) => child,
                    Err(e) => panic!(
                        "cannot run Xvfb ({e}): the screen capture tests need it — install the \
                         Debian package xvfb (scripts/ensure-tools.sh, TEST_PACKAGES)"
                    ),
                };
                let mut line = String::new();
                let stdout = child.stdout.take().expect("piped stdout");
                BufReader::new(stdout)
                    .read_line(&mut line)
                    .expect("read Xvfb's display number");
                let n: u32 = match line.trim().parse() {
                    Ok(n) => n,
                    Err(_) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("Xvfb did not start (it said {line:?} on its display fd)");
                    }
                };
                Xvfb {
                    child,
                    display: format!(":{n}"),
                }
            }
        }

        impl Drop for Xvfb {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        /// Two windows side by side filling the screen: left red (titled
        /// "left red"), right blue. Returns the connection (the windows
        /// live as long as it does) and the left window's id.
        fn paint_halves(display: &str) -> (x11rb::rust_connection::RustConnection, u32) {
            let (conn, n) = x11rb::connect(Some(display)).expect("connect to Xvfb");
            let screen = conn.setup().roots[n].clone();
            let (w, h) = (screen.width_in_pixels, screen.height_in_pixels);
            // Full red and full blue in the root visual's own masks (the
            // pixel values differ between 24 and 16 bits).
            let visual = screen
                .allowed_depths
                .iter()
                .flat_map(|d| &d.visuals)
                .find(|v| v.visual_id == screen.root_visual)
                .expect("the root visual");
            let mut left = 0;
            for (i, colour) in [visual.red_mask, visual.blue_mask].into_iter().enumerate() {
                let window = conn.generate_id().unwrap();
                conn.create_window(
                    screen.root_depth,
                    window,
                    screen.root,
                    (i as u16 * w / 2) as i16,
                    0,
                    w / 2,
                    h,
                    0,
                    WindowClass::INPUT_OUTPUT,
                    screen.root_visual,
                    &CreateWindowAux::new().background_pixel(colour),
                )
                .unwrap();
                if i == 0 {
                    conn.change_property8(
                        PropMode::REPLACE,
                        window,
                        AtomEnum::WM_NAME,
                        AtomEnum::STRING,
                        b"left red",
                    )
                    .unwrap();
                    left = window;
                }
                conn.map_window(window).unwrap();
            }
            conn.sync().unwrap();
            (conn, left)
        }

        fn assert_near(got: [u8; 3], want: [u8; 3], what: &str) {
            for i in 0..3 {
                assert!(
                    (i32::from(got[i]) - i32::from(want[i])).abs() <= 8,
                    "{what}: {got:?}, expected about {want:?}"
                );
            }
        }

        #[test]
        fn captures_the_screen_a_window_and_scales_under_xvfb() {
            let x = Xvfb::start("640x480x24");
            let (_conn, left) = paint_halves(&x.display);

            let list = screens_on(Some(&x.display)).unwrap();
            assert_eq!(list[0].id, "screen:0");
            assert_eq!((list[0].width, list[0].height), (640, 480));
            let window = list
                .iter()
                .find(|s| s.name == "left red")
                .expect("the titled window is listed");
            assert_eq!(window.id, format!("window:{left:#x}"));
            assert_eq!((window.width, window.height), (320, 480));
            // The untitled right window is not listed.
            assert_eq!(
                list.iter().filter(|s| s.id.starts_with("window:")).count(),
                1,
                "{list:?}"
            );

            // The whole screen.
            let mut screen = ScreenSource::open_on(Some(&x.display), None, 1920, 1080, 20).unwrap();
            let frame = screen.next_frame().unwrap();
            assert_eq!((frame.width(), frame.height()), (640, 480));
            assert_near(frame.rgb_at(10, 10), [255, 0, 0], "left");
            assert_near(frame.rgb_at(630, 470), [0, 0, 255], "right");
            assert_near(frame.rgb_at(300, 240), [255, 0, 0], "left of the middle");
            assert_near(frame.rgb_at(340, 240), [0, 0, 255], "right of the middle");

            // Scaled down to fit 160×160: 160×120, colours kept.
            let mut small =
                ScreenSource::open_on(Some(&x.display), Some("screen:0"), 160, 160, 30).unwrap();
            let frame = small.next_frame().unwrap();
            assert_eq!((frame.width(), frame.height()), (160, 120));
            assert_near(frame.rgb_at(20, 60), [255, 0, 0], "scaled left");
            assert_near(frame.rgb_at(140, 60), [0, 0, 255], "scaled right");

            // One window: all red, its own size.
            let mut win =
                ScreenSource::open_on(Some(&x.display), Some(&window.id), 1920, 1080, 30).unwrap();
            let frame = win.next_frame().unwrap();
            assert_eq!((frame.width(), frame.height()), (320, 480));
            assert_near(frame.rgb_at(0, 0), [255, 0, 0], "window");
            assert_near(frame.rgb_at(319, 479), [255, 0, 0], "window corner");

            // Paced at 20 fps: 6 more frames take about 250 ms (the first
            // is late already, so due at once).
            let start = std::time::Instant::now();
            for _ in 0..6 {
                assert!(screen.next_frame().is_some());
            }
            let elapsed = start.elapsed();
            // Paced, not free-running (a loose floor: a busy machine may
            // start the schedule late, and timing is for benchmarks).
            assert!(
                elapsed >= std::time::Duration::from_millis(150),
                "{elapsed:?}"
            );

            // Unknown ids are errors, not panics.
            for id in ["screen:7", "monitor:NOPE", "window:0x7fffff", "nonsense"] {
                let r = ScreenSource::open_on(Some(&x.display), Some(id), 640, 480, 10);
                assert!(
                    matches!(r, Err(MediaError::ScreenCapture(_))),
                    "{id}: {r:?}"
                );
            }

            // The X server going away ends the source.
            drop(x);
            assert!(screen.next_frame().is_none());
        }

        #[test]
        fn a_16_bit_screen_converts_under_xvfb() {
            let x = Xvfb::start("320x240x16");
            let (_conn, _) = paint_halves(&x.display);
            let mut screen = ScreenSource::open_on(Some(&x.display), None, 1920, 1080, 30).unwrap();
            let frame = screen.next_frame().unwrap();
            assert_eq!((frame.width(), frame.height()), (320, 240));
            assert_near(frame.rgb_at(10, 10), [255, 0, 0], "left");
            assert_near(frame.rgb_at(310, 230), [0, 0, 255], "right");
        }

        // (Not above 59535: x11rb adds the TCP port base, 6000, to the
        // display number in a u16.)
        #[test]
        fn no_such_display_is_an_error() {
            let r = ScreenSource::open_on(Some(":59123"), None, 640, 480, 10);
            assert!(matches!(r, Err(MediaError::ScreenCapture(_))), "{r:?}");
            assert!(matches!(
                screens_on(Some(":59123")),
                Err(MediaError::ScreenCapture(_))
            ));
        }
    }
}
