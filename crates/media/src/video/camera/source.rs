//! [`CameraSource`]: the [`VideoSource`] the send thread reads — the
//! newest picture the camera thread left in a one-picture slot — and,
//! on macOS, the request for camera access before a camera opens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::capture::Capture;
use super::list::list;
use crate::video::{VideoFrame, VideoSource};
use crate::MediaError;

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

/// What the source and the camera thread share.
pub(super) struct Shared {
    slot: Mutex<Slot>,
    pub(super) ready: Condvar,
    pub(super) stop: AtomicBool,
}

/// The newest picture, taken by the reader.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) frame: Option<VideoFrame>,
    /// The camera thread ended (camera lost, or the source dropped).
    pub(super) ended: bool,
}

impl Shared {
    pub(super) fn slot(&self) -> MutexGuard<'_, Slot> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::camera::cameras;

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
}
