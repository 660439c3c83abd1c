//! The X11 backend: what a display offers (screens, RandR monitors,
//! titled top-level windows), an id resolved to what to capture, and
//! [`ScreenSource`] capturing it with one core-protocol `GetImage` a frame.

use std::time::Instant;

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::ReplyError;
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ConnectionExt as _, ImageFormat, ImageOrder, MapState, Screen, Window,
};
use x11rb::protocol::ErrorKind;
use x11rb::rust_connection::RustConnection;

use super::pacer::Pacer;
use super::pixels::{image_to_frame, PixelLayout};
use super::{check_open_args, ScreenInfo};
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
            .ok_or_else(|| MediaError::ScreenCapture(format!("no screen {id:?} on this display")));
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
                if e.error_kind == ErrorKind::Match && matches!(self.target, Target::Window(_)) =>
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
