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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use nokhwa::{Camera, NokhwaError};

use crate::video::frame::i420_len;
use crate::video::{VideoFrame, VideoSource};
use crate::MediaError;

/// A camera, as [`cameras`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// What to pass to [`CameraSource::open`]: the device path on Linux
    /// (`/dev/video0`), nokhwa's index elsewhere (`0`).
    pub id: String,
    /// For people: "HD Webcam C525".
    pub name: String,
}

/// The cameras there are; an empty list when there are none.
pub fn cameras() -> Result<Vec<CameraInfo>, MediaError> {
    Ok(list()?.into_iter().map(|(info, _)| info).collect())
}

/// The cameras with the index nokhwa opens them by.
#[cfg(target_os = "linux")]
fn list() -> Result<Vec<(CameraInfo, CameraIndex)>, MediaError> {
    use v4l::capability::Flags;
    let entries = match std::fs::read_dir("/dev") {
        Ok(entries) => entries,
        Err(e) => return Err(MediaError::Camera(format!("cannot read /dev: {e}"))),
    };
    let mut nodes: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("video")?.parse().ok())
        .collect();
    nodes.sort_unstable();
    let mut out = Vec::new();
    for n in nodes {
        let path = format!("/dev/video{n}");
        // A node we may not open (permissions) or that went away is left
        // out, as is one that does not capture video (a UVC camera's
        // metadata node, an output or M2M device).
        let caps = match v4l::Device::with_path(&path).and_then(|d| d.query_caps()) {
            Ok(caps) => caps,
            Err(e) => {
                tracing::debug!("camera list: {path} skipped: {e}");
                continue;
            }
        };
        if !caps.capabilities.contains(Flags::VIDEO_CAPTURE) {
            continue;
        }
        out.push((
            CameraInfo {
                id: path,
                name: caps.card,
            },
            CameraIndex::Index(n),
        ));
    }
    Ok(out)
}

#[cfg(not(target_os = "linux"))]
fn list() -> Result<Vec<(CameraInfo, CameraIndex)>, MediaError> {
    let Some(backend) = nokhwa::native_api_backend() else {
        return Err(MediaError::Camera(format!(
            "cameras are not supported on {}",
            std::env::consts::OS
        )));
    };
    let found = nokhwa::query(backend).map_err(|e| camera_error("listing cameras", e))?;
    Ok(found
        .into_iter()
        .map(|c| {
            let index = c.index().clone();
            (
                CameraInfo {
                    id: index.as_string(),
                    name: c.human_name(),
                },
                index,
            )
        })
        .collect())
}

fn camera_error(what: &str, e: NokhwaError) -> MediaError {
    MediaError::Camera(format!("{what}: {e}"))
}

/// The frame formats we convert ourselves.
const RAW_FORMATS: [FrameFormat; 5] = [
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::GRAY,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
];

/// Every format, so that a camera opens whatever it offers and we can see
/// its modes.
const ALL_FORMATS: [FrameFormat; 6] = [
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::GRAY,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::MJPEG,
];

/// The raw mode closest to `width × height` at `fps`: the cost is the size
/// ratio's log plus twice the log of any rate shortfall (a third of the
/// rate costs more than twice or half the size), a little for a rate above
/// what was asked, and a little for grey or RGB over YUYV and NV12. `None`
/// when nothing raw is offered.
pub(crate) fn choose_format(
    modes: &[CameraFormat],
    width: u32,
    height: u32,
    fps: u32,
) -> Option<CameraFormat> {
    let want_area = f64::from(width.max(2)) * f64::from(height.max(2));
    let want_fps = f64::from(fps.max(1));
    let cost = |m: &CameraFormat| {
        let area = f64::from(m.width().max(1)) * f64::from(m.height().max(1));
        let rate = f64::from(m.frame_rate().max(1));
        let size = (area / want_area).ln().abs();
        let slow = (want_fps / rate).ln().max(0.0) * 2.0;
        let fast = (rate / want_fps).ln().max(0.0) * 0.1;
        let format = match m.format() {
            FrameFormat::YUYV | FrameFormat::NV12 => 0.0,
            FrameFormat::RAWRGB | FrameFormat::RAWBGR => 0.2,
            _ => 1.0,
        };
        size + slow + fast + format
    };
    modes
        .iter()
        .filter(|m| RAW_FORMATS.contains(&m.format()) && m.width() >= 2 && m.height() >= 2)
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .copied()
}

/// Packed YUYV (Y0 U Y1 V per two pixels, rows `stride` bytes apart) to
/// I420 at `width × height` rounded down to even; the chroma of two rows is
/// averaged. `None` if `src` is too short.
pub fn yuyv_to_i420(src: &[u8], width: u32, height: u32, stride: usize) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 || stride < w * 2 || src.len() < stride * (h - 1) + w * 2 {
        return None;
    }
    let mut data = vec![0u8; i420_len(w as u32, h as u32)];
    let (y, uv) = data.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut((w / 2) * (h / 2));
    for row in 0..h {
        let line = &src[row * stride..row * stride + w * 2];
        for (dst, px) in y[row * w..(row + 1) * w]
            .iter_mut()
            .zip(line.iter().step_by(2))
        {
            *dst = *px;
        }
    }
    for row in 0..h / 2 {
        let a = &src[2 * row * stride..2 * row * stride + w * 2];
        let b = &src[(2 * row + 1) * stride..(2 * row + 1) * stride + w * 2];
        for col in 0..w / 2 {
            let i = col * 4;
            u[row * (w / 2) + col] = (u16::from(a[i + 1]) + u16::from(b[i + 1])).div_ceil(2) as u8;
            v[row * (w / 2) + col] = (u16::from(a[i + 3]) + u16::from(b[i + 3])).div_ceil(2) as u8;
        }
    }
    VideoFrame::from_i420(w as u32, h as u32, data).ok()
}

/// NV12 (a Y plane, then one plane of interleaved U, V at half size; rows
/// `stride` bytes apart in both, the UV plane at `uv_offset`) to I420 at
/// `width × height` rounded down to even. `None` if `src` is too short.
pub fn nv12_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    uv_offset: usize,
) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0
        || h == 0
        || stride < w
        || uv_offset < stride * (h - 1) + w
        || src.len() < uv_offset + stride * (h / 2 - 1) + w
    {
        return None;
    }
    let mut data = vec![0u8; i420_len(w as u32, h as u32)];
    let (y, uv) = data.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut((w / 2) * (h / 2));
    for row in 0..h {
        y[row * w..(row + 1) * w].copy_from_slice(&src[row * stride..row * stride + w]);
    }
    for row in 0..h / 2 {
        let line = &src[uv_offset + row * stride..uv_offset + row * stride + w];
        for col in 0..w / 2 {
            u[row * (w / 2) + col] = line[2 * col];
            v[row * (w / 2) + col] = line[2 * col + 1];
        }
    }
    VideoFrame::from_i420(w as u32, h as u32, data).ok()
}

/// One byte per pixel of luma to I420 (grey chroma).
fn gray_to_i420(src: &[u8], width: u32, height: u32, stride: usize) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 || stride < w || src.len() < stride * (h - 1) + w {
        return None;
    }
    let mut frame = VideoFrame::black(w as u32, h as u32).ok()?;
    let (y, _, _) = frame.planes_mut();
    for row in 0..h {
        y[row * w..(row + 1) * w].copy_from_slice(&src[row * stride..row * stride + w]);
    }
    Some(frame)
}

/// Three bytes per pixel, R, G, B (`bgr`: B, G, R), to I420.
fn rgb_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    bgr: bool,
) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 || stride < w * 3 || src.len() < stride * (h - 1) + w * 3 {
        return None;
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        let line = &src[row * stride..row * stride + w * 3];
        if bgr {
            for px in line.chunks_exact(3) {
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        } else {
            rgb.extend_from_slice(line);
        }
    }
    VideoFrame::from_rgb(w as u32, h as u32, &rgb).ok()
}

/// A camera picture in `format` (as the backend labels it) to I420. The
/// layout is checked against the buffer's length: rows may be padded, an
/// NV12 Y plane may have extra rows (Media Foundation aligns it), and
/// AVFoundation labels 4:2:0 bi-planar buffers YUYV — a buffer too short
/// for YUYV but right for NV12 is read as NV12.
pub(crate) fn convert(
    format: FrameFormat,
    data: &[u8],
    width: u32,
    height: u32,
) -> Result<VideoFrame, String> {
    let (w, h, len) = (width as usize, height as usize, data.len());
    if w < 2 || h < 2 {
        return Err(format!("a {width}x{height} picture"));
    }
    // Rows padded to a larger stride show as a length that is a whole
    // multiple of the height.
    let stride_for = |bytes_per_row: usize| {
        if len % h == 0 && len / h >= bytes_per_row {
            len / h
        } else {
            bytes_per_row
        }
    };
    let nv12 = || {
        // The Y plane is `stride × plane_rows`, then half as many UV rows.
        let plane_rows = if (len * 2) % (3 * w) == 0 && len * 2 / (3 * w) >= h {
            len * 2 / (3 * w)
        } else {
            h
        };
        nv12_to_i420(data, width, height, w, w * plane_rows)
    };
    let frame = match format {
        FrameFormat::YUYV if len >= w * h * 2 => {
            yuyv_to_i420(data, width, height, stride_for(w * 2))
        }
        FrameFormat::YUYV | FrameFormat::NV12 => nv12(),
        FrameFormat::GRAY => gray_to_i420(data, width, height, stride_for(w)),
        FrameFormat::RAWRGB => rgb_to_i420(data, width, height, stride_for(w * 3), false),
        FrameFormat::RAWBGR => rgb_to_i420(data, width, height, stride_for(w * 3), true),
        FrameFormat::MJPEG => return Err("MJPEG pictures are not supported".into()),
    };
    frame.ok_or_else(|| format!("{len} bytes do not make a {width}x{height} {format} picture"))
}

/// On macOS, asks for camera access unless it was given already, and waits
/// for the user's answer. Elsewhere nokhwa reports access as given.
fn ensure_access() -> Result<(), MediaError> {
    if nokhwa::nokhwa_check() {
        return Ok(());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    nokhwa::nokhwa_initialize(move |granted| {
        let _ = tx.send(granted);
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(MediaError::Camera(
            "camera access was refused (System Settings › Privacy & Security › Camera)".into(),
        )),
        Err(_) => Err(MediaError::Camera(
            "no answer to the request for camera access".into(),
        )),
    }
}

/// Consecutive unreadable pictures after which the camera counts as lost.
const MAX_BAD_FRAMES: u32 = 30;

/// How long dropping a [`CameraSource`] waits for its thread to let the
/// camera go (a camera that stalls inside a read is left to its thread).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A camera as a [`VideoSource`].
///
/// nokhwa's `Camera` is not `Send`, so the camera lives on a thread of its
/// own ("camera"), which opens it, reads and converts its pictures and
/// leaves the newest in a one-picture slot; [`VideoSource::next_frame`]
/// takes it from there (waiting for the next one if it was taken
/// already), so a slow reader gets the newest picture, never a backlog.
pub struct CameraSource {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    name: String,
    mode: String,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct Slot {
    frame: Option<VideoFrame>,
    /// The camera thread ended (camera lost, or the source dropped).
    ended: bool,
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish()
    }
}

impl CameraSource {
    /// Opens camera `id` (an id or a name from [`cameras`]; `None`: the
    /// first) in its raw mode closest to `width × height` at `fps`, and
    /// starts it. [`MediaError::NoCamera`] when there is no such camera,
    /// [`MediaError::Camera`] when it cannot be opened or offers no raw
    /// mode.
    pub fn open(id: Option<&str>, width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        if width < 2 || height < 2 || fps == 0 {
            return Err(MediaError::Video(format!(
                "a camera at {width}x{height}, {fps} fps: sizes must be 2 or more, fps 1 or more"
            )));
        }
        let found = list()?;
        let (info, index) = match id {
            None => found
                .into_iter()
                .next()
                .ok_or_else(|| MediaError::NoCamera("no camera found".into()))?,
            Some(id) => found
                .into_iter()
                .find(|(c, _)| c.id == id || c.name == id)
                .ok_or_else(|| MediaError::NoCamera(format!("no camera {id:?}")))?,
        };
        ensure_access()?;
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (opened_tx, opened_rx) = std_mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let name = info.name.clone();
        let thread = std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                let what = format!("camera {:?} ({})", info.name, info.id);
                let mut capture = match Capture::open(index, &what, width, height, fps) {
                    Ok(capture) => capture,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(capture.mode()));
                capture.run(&thread_shared);
            })
            .map_err(|e| MediaError::Camera(format!("cannot start the camera thread: {e}")))?;
        let mode = match opened_rx.recv() {
            Ok(Ok(mode)) => mode,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(MediaError::Camera(
                    "the camera thread ended while opening".into(),
                ));
            }
        };
        Ok(CameraSource {
            shared,
            thread: Some(thread),
            name,
            mode,
        })
    }

    /// The mode the camera runs in (size, format, rate), e.g.
    /// "640x480@30FPS in YUYV".
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// The camera's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let start = Instant::now();
        while !thread.is_finished() && start.elapsed() < CLOSE_WAIT {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::debug!(
                "camera {:?}: its thread is still in a read; left to end",
                self.name
            );
        }
    }
}

impl VideoSource for CameraSource {
    fn next_frame(&mut self) -> Option<VideoFrame> {
        let mut slot = self.shared.slot();
        loop {
            if let Some(frame) = slot.frame.take() {
                return Some(frame);
            }
            if slot.ended {
                return None;
            }
            slot = self
                .shared
                .ready
                .wait(slot)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The camera on its thread.
struct Capture {
    /// `None` once the camera is let go.
    camera: Option<Camera>,
    what: String,
    period: Duration,
    next_due: Option<Instant>,
    bad_frames: u32,
}

impl Capture {
    fn open(
        index: CameraIndex,
        what: &str,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<Self, MediaError> {
        let backend = nokhwa::native_api_backend().unwrap_or(ApiBackend::Auto);
        let mut camera = Camera::with_backend(
            index,
            RequestedFormat::with_formats(RequestedFormatType::None, &ALL_FORMATS),
            backend,
        )
        .map_err(|e| camera_error(&format!("opening {what}"), e))?;
        // From here on the camera is let go through `Capture`'s `Drop` on
        // every path (never through nokhwa's, which may panic).
        let mut capture = Capture {
            camera: None,
            what: what.to_owned(),
            period: Duration::from_secs(1) / fps.min(240),
            next_due: None,
            bad_frames: 0,
        };
        let modes = camera
            .compatible_camera_formats()
            .map_err(|e| camera_error(&format!("the modes of {what}"), e));
        let modes = match modes {
            Ok(modes) => modes,
            Err(e) => {
                capture.camera = Some(camera);
                return Err(e);
            }
        };
        let Some(mode) = choose_format(&modes, width, height, fps) else {
            let mut offered: Vec<String> = modes.iter().map(|m| m.format().to_string()).collect();
            offered.sort();
            offered.dedup();
            capture.camera = Some(camera);
            return Err(MediaError::Camera(format!(
                "{what} offers only {} — compressed formats are not supported, only YUYV, NV12, grey or RGB",
                if offered.is_empty() { "no modes".to_owned() } else { offered.join(", ") }
            )));
        };
        let started = (|| {
            if camera.camera_format() != mode {
                camera.set_camera_requset(RequestedFormat::with_formats(
                    RequestedFormatType::Exact(mode),
                    &RAW_FORMATS,
                ))?;
            }
            camera.open_stream()
        })();
        capture.camera = Some(camera);
        started.map_err(|e| camera_error(&format!("starting {what} in {mode}"), e))?;
        tracing::info!("{what}: {mode}");
        Ok(capture)
    }

    fn mode(&self) -> String {
        self.camera
            .as_ref()
            .map(|c| c.camera_format().to_string())
            .unwrap_or_default()
    }

    /// Reads pictures into the slot until the camera is lost or the
    /// source is dropped.
    fn run(&mut self, shared: &Shared) {
        while !shared.stop.load(Ordering::SeqCst) {
            let Some(frame) = self.read() else { break };
            shared.slot().frame = Some(frame);
            shared.ready.notify_one();
        }
        self.close();
        shared.slot().ended = true;
        shared.ready.notify_one();
    }

    /// The next picture due; `None` when the camera is lost.
    fn read(&mut self) -> Option<VideoFrame> {
        loop {
            let camera = self.camera.as_mut()?;
            let buffer = match camera.frame() {
                Ok(buffer) => buffer,
                Err(e) => {
                    tracing::warn!("{} lost: {e}", self.what);
                    return None;
                }
            };
            let now = Instant::now();
            if !self.due(now) {
                continue;
            }
            let res = buffer.resolution();
            match convert(
                buffer.source_frame_format(),
                buffer.buffer(),
                res.width(),
                res.height(),
            ) {
                Ok(mut frame) => {
                    self.bad_frames = 0;
                    frame.captured = now;
                    return Some(frame);
                }
                Err(why) => {
                    self.bad_frames += 1;
                    if self.bad_frames >= MAX_BAD_FRAMES {
                        tracing::warn!(
                            "{}: {MAX_BAD_FRAMES} unreadable pictures in a row ({why}); giving up",
                            self.what
                        );
                        return None;
                    }
                    tracing::debug!("{}: picture skipped: {why}", self.what);
                    // Not due after all: the next picture may be.
                    self.next_due = None;
                }
            }
        }
    }

    /// Whether a picture that came `now` is to be passed on, keeping to
    /// the asked rate.
    fn due(&mut self, now: Instant) -> bool {
        match self.next_due {
            Some(due) if now + self.period / 4 < due => false,
            Some(due) if now < due + self.period => {
                self.next_due = Some(due + self.period);
                true
            }
            _ => {
                self.next_due = Some(now + self.period);
                true
            }
        }
    }

    /// Stops the stream and lets the camera go — without panicking:
    /// nokhwa's `Camera` unwraps a failing stop in its `Drop`, so a camera
    /// whose stop fails (it is gone) is leaked rather than dropped.
    fn close(&mut self) {
        if let Some(mut camera) = self.camera.take() {
            match camera.stop_stream() {
                Ok(()) => drop(camera),
                Err(e) => {
                    tracing::debug!("{}: stopping: {e}", self.what);
                    std::mem::forget(camera);
                }
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nokhwa::utils::Resolution;

    fn mode(w: u32, h: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new(Resolution::new(w, h), format, fps)
    }

    #[test]
    fn yuyv_converts_and_crops_odd_sizes() {
        // 4×2: Y 10 20 30 40 / 50 60 70 80, U 100/110 and 120/130 in the
        // two rows, V 200/210 and 220/230.
        let src = [
            10, 100, 20, 200, 30, 120, 40, 220, //
            50, 110, 60, 210, 70, 130, 80, 230,
        ];
        let f = yuyv_to_i420(&src, 4, 2, 8).unwrap();
        let (y, u, v) = f.planes();
        assert_eq!(y, &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(u, &[105, 125]);
        assert_eq!(v, &[205, 225]);
        // 5×3 in rows of 12 bytes (padded): cropped to 4×2.
        let mut padded = vec![0u8; 12 * 3];
        for row in 0..2 {
            padded[row * 12..row * 12 + 8].copy_from_slice(&src[row * 8..row * 8 + 8]);
        }
        let f = yuyv_to_i420(&padded, 5, 3, 12).unwrap();
        assert_eq!((f.width(), f.height()), (4, 2));
        assert_eq!(f.planes().0, &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert!(yuyv_to_i420(&src[..15], 4, 2, 8).is_none());
    }

    #[test]
    fn nv12_converts_and_crops_odd_sizes() {
        // 4×2: Y plane, then one UV row: U 1, V 2, U 3, V 4.
        let src = [10, 20, 30, 40, 50, 60, 70, 80, 1, 2, 3, 4];
        let f = nv12_to_i420(&src, 4, 2, 4, 8).unwrap();
        let (y, u, v) = f.planes();
        assert_eq!(y, &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(u, &[1, 3]);
        assert_eq!(v, &[2, 4]);
        assert!(nv12_to_i420(&src[..11], 4, 2, 4, 8).is_none());
        // 3×3 is read as 2×2.
        let src = [10, 20, 0, 50, 60, 0, 0, 0, 0, 7, 8, 0];
        let f = nv12_to_i420(&src, 3, 3, 3, 9).unwrap();
        assert_eq!((f.width(), f.height()), (2, 2));
        assert_eq!(f.planes(), (&[10, 20, 50, 60][..], &[7][..], &[8][..]));
    }

    #[test]
    fn colours_survive_yuyv() {
        // Red in BT.601 studio range: Y 81, U 90, V 240.
        let src: Vec<u8> = std::iter::repeat_n([81, 90, 81, 240], 8)
            .flatten()
            .collect();
        let f = yuyv_to_i420(&src, 4, 4, 8).unwrap();
        let [r, g, b] = f.rgb_at(1, 1);
        assert!(r > 240 && g < 15 && b < 15, "{:?}", [r, g, b]);
    }

    #[test]
    fn convert_reads_the_layout_from_the_length() {
        // YUYV rows padded from 8 to 16 bytes.
        let mut src = vec![0u8; 16 * 2];
        src[..8].copy_from_slice(&[1, 128, 2, 128, 3, 128, 4, 128]);
        src[16..24].copy_from_slice(&[5, 128, 6, 128, 7, 128, 8, 128]);
        let f = convert(FrameFormat::YUYV, &src, 4, 2).unwrap();
        assert_eq!(f.planes().0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        // Labelled YUYV but NV12-sized (AVFoundation's 4:2:0 formats).
        let nv12 = [10, 20, 30, 40, 50, 60, 70, 80, 1, 2, 3, 4];
        let f = convert(FrameFormat::YUYV, &nv12, 4, 2).unwrap();
        assert_eq!(f.planes().1, &[1, 3]);
        // NV12 with a Y plane padded to 4 rows (as for a 16-row alignment).
        let mut tall = vec![0u8; 4 * 4 + 4 * 2];
        tall[..8].copy_from_slice(&nv12[..8]);
        tall[16..20].copy_from_slice(&[1, 2, 3, 4]);
        let f = convert(FrameFormat::NV12, &tall, 4, 2).unwrap();
        assert_eq!((f.planes().1, f.planes().2), (&[1, 3][..], &[2, 4][..]));
        // Grey, BGR.
        let f = convert(FrameFormat::GRAY, &[9; 4], 2, 2).unwrap();
        assert_eq!(f.planes(), (&[9, 9, 9, 9][..], &[128][..], &[128][..]));
        let f = convert(FrameFormat::RAWBGR, &[0, 0, 255].repeat(4), 2, 2).unwrap();
        assert!(f.rgb_at(0, 0)[0] > 240);
        // Short buffers and MJPEG are errors, not panics.
        assert!(convert(FrameFormat::YUYV, &[0; 5], 4, 2).is_err());
        assert!(convert(FrameFormat::MJPEG, &[0; 100], 4, 2).is_err());
        assert!(convert(FrameFormat::NV12, &[], 0, 0).is_err());
    }

    #[test]
    fn the_closest_raw_mode_is_chosen() {
        let modes = [
            mode(640, 480, FrameFormat::YUYV, 30),
            mode(1280, 720, FrameFormat::YUYV, 10),
            mode(1280, 720, FrameFormat::MJPEG, 30),
            mode(320, 240, FrameFormat::YUYV, 30),
            mode(640, 480, FrameFormat::YUYV, 15),
        ];
        // 720p30 asked: 640×480 at 30 beats 720p at 10; MJPEG is out.
        assert_eq!(choose_format(&modes, 1280, 720, 30), Some(modes[0]));
        // 720p at 10 fps is what was asked.
        assert_eq!(choose_format(&modes, 1280, 720, 10), Some(modes[1]));
        assert_eq!(choose_format(&modes, 320, 240, 30), Some(modes[3]));
        // 15 fps asked: 640×480 at 15 rather than at 30.
        assert_eq!(choose_format(&modes, 640, 480, 15), Some(modes[4]));
        // NV12 and YUYV before RGB.
        let modes = [
            mode(640, 480, FrameFormat::RAWRGB, 30),
            mode(640, 480, FrameFormat::NV12, 30),
        ];
        assert_eq!(choose_format(&modes, 640, 480, 30), Some(modes[1]));
        // MJPEG only: nothing.
        assert_eq!(
            choose_format(&[mode(640, 480, FrameFormat::MJPEG, 30)], 640, 480, 30),
            None
        );
    }

    #[test]
    fn listing_and_a_missing_camera_are_clean() {
        // Headless here: possibly an empty list, but Ok.
        let list = cameras().unwrap();
        for c in &list {
            assert!(!c.id.is_empty(), "{c:?}");
        }
        match CameraSource::open(Some("no-such-camera"), 640, 480, 30) {
            Err(MediaError::NoCamera(why)) => assert!(why.contains("no-such-camera"), "{why}"),
            other => panic!("expected NoCamera, got {other:?}"),
        }
        if list.is_empty() {
            assert!(matches!(
                CameraSource::open(None, 640, 480, 30),
                Err(MediaError::NoCamera(_))
            ));
        }
        assert!(matches!(
            CameraSource::open(None, 640, 480, 0),
            Err(MediaError::Video(_))
        ));
    }

    #[test]
    fn faster_pictures_are_dropped_to_the_asked_rate() {
        let mut s = Capture {
            camera: None,
            what: "test".into(),
            period: Duration::from_millis(66),
            next_due: None,
            bad_frames: 0,
        };
        let t0 = Instant::now();
        // A 30 fps camera for a 15 fps source: every other picture.
        let passed: Vec<bool> = (0..8)
            .map(|i| s.due(t0 + Duration::from_millis(33 * i)))
            .collect();
        assert_eq!(passed, [true, false, true, false, true, false, true, false]);
        // After a stall, the next picture passes and the schedule restarts.
        assert!(s.due(t0 + Duration::from_secs(5)));
        assert!(!s.due(t0 + Duration::from_millis(5033)));
    }
}
