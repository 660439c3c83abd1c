//! The camera thread: opens the camera in its chosen raw mode, reads
//! and converts its pictures at the asked rate into the source's slot,
//! and lets the camera go without nokhwa's panicking `Drop`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nokhwa::utils::{ApiBackend, CameraIndex, RequestedFormat, RequestedFormatType};
use nokhwa::Camera;

use super::camera_error;
use super::convert::convert;
use super::mode::{choose_format, ALL_FORMATS, RAW_FORMATS};
use super::source::Shared;
use crate::video::VideoFrame;
use crate::MediaError;

/// Consecutive unreadable pictures after which the camera counts as lost.
const MAX_BAD_FRAMES: u32 = 30;

/// The camera on its thread.
pub(super) struct Capture {
    /// `None` once the camera is let go.
    camera: Option<Camera>,
    what: String,
    period: Duration,
    next_due: Option<Instant>,
    bad_frames: u32,
}

impl Capture {
    pub(super) fn open(
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

    pub(super) fn mode(&self) -> String {
        self.camera
            .as_ref()
            .map(|c| c.camera_format().to_string())
            .unwrap_or_default()
    }

    /// Reads pictures into the slot until the camera is lost or the
    /// source is dropped.
    pub(super) fn run(&mut self, shared: &Shared) {
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
