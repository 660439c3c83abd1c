//! The call's picture sources: which one is open (the camera chosen, the
//! screen, or none), changed one at a time as the user turns the camera on
//! or off, switches cameras or shares the screen; opening them (a camera
//! takes a while, so off the async threads); and the cameras Settings and
//! calls can choose from.

use tauri::{AppHandle, Manager, Runtime};
use tracing::{info, warn};

use callinvite_client::media::{MediaError, TestPattern, VideoSource};
use callinvite_client::InvitationId;

use super::update;
use crate::calls::{MediaUpdate, VideoWanted};
use crate::options::AppOptions;
use crate::session::{emit_state, AppState};

/// The picture sources of a call: the cameras' ids, and which source is open.
#[derive(Default)]
pub struct VideoControl {
    /// The cameras' ids, in the order of `VideoStatus::cameras`.
    pub(super) camera_ids: std::sync::Mutex<Vec<String>>,
    /// What was last applied (opened, or failed to open). Held while a source
    /// opens, so that changes are applied one at a time and the last wins.
    applied: tokio::sync::Mutex<Option<VideoWanted>>,
}

/// Size of the pictures asked of a camera (and of the test pattern).
const CAMERA_SIZE: (u32, u32, u32) = (640, 480, 30);
/// Largest picture sent of a shared screen, and its rate (screens change little).
const SCREEN_SIZE: (u32, u32, u32) = (1280, 720, 10);

/// The call on screen, if it has media here.
async fn media_call<R: Runtime>(app: &AppHandle<R>) -> Option<InvitationId> {
    let state = app.state::<AppState>();
    let inner = state.inner.lock().await;
    inner
        .media
        .as_ref()
        .map(|r| r.media.invitation_id().clone())
}

/// Turns the camera of the running call on or off; says whether there is a call with media.
pub async fn set_camera<R: Runtime>(app: &AppHandle<R>, on: bool) -> bool {
    change_video(app, |calls| calls.set_camera(on)).await
}

/// Moves to the next camera; says whether there was another.
pub async fn switch_camera<R: Runtime>(app: &AppHandle<R>) -> bool {
    change_video(app, |calls| calls.switch_camera()).await
}

/// Starts or stops sharing the screen; says whether it could.
pub async fn share_screen<R: Runtime>(app: &AppHandle<R>, on: bool) -> bool {
    change_video(app, |calls| calls.set_sharing_screen(on)).await
}

/// Changes the picture state with `change`, shows it, and opens what it wants.
async fn change_video<R: Runtime>(
    app: &AppHandle<R>,
    change: impl FnOnce(&mut crate::calls::Calls) -> bool,
) -> bool {
    let Some(id) = media_call(app).await else {
        return false;
    };
    let changed = {
        let state = app.state::<AppState>();
        let mut inner = state.inner.lock().await;
        change(&mut inner.calls)
    };
    if changed {
        emit_state(app).await;
        let app = app.clone();
        tauri::async_runtime::spawn(async move { apply_video(&app, &id).await });
    }
    changed
}

/// Opens the picture source the state wants for call `id` (the camera, the
/// screen, or none) and hands it to the engine, until what is open is what
/// is wanted (the user may change it again while a camera opens). One at a
/// time per call.
pub async fn apply_video<R: Runtime>(app: &AppHandle<R>, id: &InvitationId) {
    let state = app.state::<AppState>();
    let control = {
        let inner = state.inner.lock().await;
        match inner
            .media
            .as_ref()
            .filter(|r| r.media.invitation_id() == id)
        {
            Some(r) => r.video.clone(),
            None => return,
        }
    };
    let mut applied = control.applied.lock().await;
    loop {
        let wanted = state.inner.lock().await.calls.video_wanted(id);
        let Some(wanted) = wanted else { return };
        if *applied == Some(wanted) {
            return;
        }
        let camera_id = match wanted {
            VideoWanted::Camera(n) => control
                .camera_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(n)
                .cloned(),
            _ => None,
        };
        let options = state.options.clone();
        let opened = tauri::async_runtime::spawn_blocking(move || {
            open_video(&options, wanted, camera_id.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(VideoSourceError::Stopped(e.to_string())));
        let result = {
            let inner = state.inner.lock().await;
            let Some(running) = inner
                .media
                .as_ref()
                .filter(|r| r.media.invitation_id() == id)
            else {
                return; // the call ended meanwhile; the source is dropped
            };
            match opened {
                Ok(source) => {
                    // Our camera is previewed as in a mirror; a shared screen as it is.
                    state.frames.mirror_local.store(
                        wanted != VideoWanted::Screen,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    running.media.set_video_source(source);
                    Ok(())
                }
                Err(message) => {
                    // Nothing goes out rather than the previous source.
                    running.media.set_video_source(None);
                    Err(message)
                }
            }
        };
        match &result {
            Ok(()) => info!(invitation = %id, ?wanted, "picture source set"),
            Err(e) => warn!(invitation = %id, ?wanted, error = %e, "picture source failed"),
        }
        if wanted == VideoWanted::Off || result.is_err() {
            state.frames.clear_local();
        }
        *applied = Some(wanted);
        update(app, id, MediaUpdate::VideoSource { wanted, result }).await;
    }
}

/// Why the picture source a call wants could not be opened. The in-call
/// screen shows it; nothing goes out meanwhile and the call goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VideoSourceError {
    /// The test pattern (`--fake-video-input pattern`) could not be made.
    #[error("Test pattern: {0}")]
    TestPattern(MediaError),
    /// The camera could not be opened: busy in another app, unplugged, not
    /// allowed, or none in this build.
    #[error(
        "Camera: {0}. They cannot see you; close other apps that use the camera, or choose another in Settings."
    )]
    Camera(MediaError),
    /// The screen cannot be captured here (e.g. Wayland without X11); the
    /// sharing ends.
    #[error("Screen sharing: {0}. Sharing stopped (your camera is sent again if it is on).")]
    Screen(MediaError),
    /// The cameras could not be listed (Settings shows why its list is empty).
    #[error("Cameras cannot be listed: {0}. Check that a camera is plugged in and that this account may use it.")]
    CameraList(MediaError),
    /// This build was made without camera support (feature `camera`).
    #[error("This build has no camera support; use a build made with the `camera` feature.")]
    NoCameraSupport,
    /// The task that opened the source stopped before it said (a bug).
    #[error("opening the picture source failed: {0}; turn the camera off and on to try again")]
    Stopped(String),
}

/// Opens a picture source (blocking: a camera takes a while).
fn open_video(
    options: &AppOptions,
    wanted: VideoWanted,
    camera_id: Option<&str>,
) -> Result<Option<Box<dyn VideoSource>>, VideoSourceError> {
    let (w, h, fps) = CAMERA_SIZE;
    match wanted {
        VideoWanted::Off => Ok(None),
        VideoWanted::Camera(_) if options.fake_video_input.as_deref() == Some("pattern") => {
            TestPattern::new(w, h, fps)
                .map(|p| Some(Box::new(p) as Box<dyn VideoSource>))
                .map_err(VideoSourceError::TestPattern)
        }
        VideoWanted::Camera(_) => open_camera(camera_id)
            .map(Some)
            .map_err(VideoSourceError::Camera),
        VideoWanted::Screen => open_screen().map(Some).map_err(VideoSourceError::Screen),
    }
}

#[cfg(any(feature = "camera", target_os = "linux"))]
fn open_camera(id: Option<&str>) -> Result<Box<dyn VideoSource>, MediaError> {
    let (w, h, fps) = CAMERA_SIZE;
    let camera = callinvite_media::video::CameraSource::open(id, w, h, fps)?;
    Ok(Box::new(camera))
}

#[cfg(not(any(feature = "camera", target_os = "linux")))]
fn open_camera(_id: Option<&str>) -> Result<Box<dyn VideoSource>, MediaError> {
    Err(MediaError::Video("this build has no camera support".into()))
}

#[cfg(any(feature = "screen", target_os = "linux"))]
fn open_screen() -> Result<Box<dyn VideoSource>, MediaError> {
    let (w, h, fps) = SCREEN_SIZE;
    let screen = callinvite_media::video::ScreenSource::open(None, w, h, fps)?;
    Ok(Box::new(screen))
}

#[cfg(not(any(feature = "screen", target_os = "linux")))]
fn open_screen() -> Result<Box<dyn VideoSource>, MediaError> {
    let _ = SCREEN_SIZE;
    Err(MediaError::Video(
        "this build cannot share the screen".into(),
    ))
}

/// A camera Settings can choose.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Camera {
    /// What Settings keeps (`camera`).
    pub id: String,
    /// For people.
    pub name: String,
}

/// The picture sources for Settings and calls.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VideoDevices {
    pub cameras: Vec<Camera>,
    /// The screen can be shared here.
    pub screen_sharing: bool,
    /// Why the camera list is empty, if it is for a reason.
    pub error: Option<String>,
}

/// Lists the cameras (or the fake one) and whether the screen can be shared
/// (blocking: call it off the async threads).
pub fn video_devices_for(options: &AppOptions) -> VideoDevices {
    let mut out = VideoDevices {
        screen_sharing: screen_sharing(),
        ..VideoDevices::default()
    };
    match options.fake_video_input.as_deref() {
        Some("pattern") => out.cameras.push(Camera {
            id: "pattern".into(),
            name: "Test pattern (--fake-video-input)".into(),
        }),
        Some(_) => {}
        None => match list_cameras() {
            Ok(list) => out.cameras = list,
            Err(e) => out.error = Some(e.to_string()),
        },
    }
    out
}

#[cfg(any(feature = "camera", target_os = "linux"))]
fn list_cameras() -> Result<Vec<Camera>, VideoSourceError> {
    callinvite_media::video::cameras()
        .map(|list| {
            list.into_iter()
                .map(|c| Camera {
                    id: c.id,
                    name: c.name,
                })
                .collect()
        })
        .map_err(VideoSourceError::CameraList)
}

#[cfg(not(any(feature = "camera", target_os = "linux")))]
fn list_cameras() -> Result<Vec<Camera>, VideoSourceError> {
    Err(VideoSourceError::NoCameraSupport)
}

#[cfg(any(feature = "screen", target_os = "linux"))]
fn screen_sharing() -> bool {
    callinvite_media::video::screens().is_ok_and(|s| !s.is_empty())
}

#[cfg(not(any(feature = "screen", target_os = "linux")))]
fn screen_sharing() -> bool {
    false
}
