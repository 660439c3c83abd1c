//! The sound of the call on screen: starts the media engine
//! (`callinvite_client::media`) when a call is accepted, hands it the peer's
//! signals, turns what it reports into the in-call screen's media status
//! ([`crate::calls::MediaStatus`]), and stops it when the call ends.
//!
//! The microphone and speaker are the system's (cpal), chosen in Settings.
//! `--fake-audio-input` / `--fake-audio-output` replace them with a tone or
//! WAV file and a WAV recording, for tests and machines without sound
//! devices. A missing microphone or speaker does not stop the call: the
//! other direction still works, and the screen says what is missing.
//!
//! Every call is a video call (`start_with_video`): the peer's pictures and
//! our preview go to the screen through [`crate::video`]; what we send is the
//! camera chosen in Settings (cargo feature `camera`, always on for Linux),
//! the screen while it is shared (feature `screen`, X11; always on for
//! Linux), or nothing while the camera is off —
//! then the source is dropped, so a real camera is released and its light
//! goes off. `--fake-video-input pattern` offers the test pattern as the one
//! camera. No camera does not stop the call: the screen says "No camera:
//! they cannot see you." Which source is wanted is the pure state's
//! ([`crate::calls::VideoStatus::wanted`]); [`apply_video`] opens it.
//!
//! A real microphone goes through voice processing (cargo feature
//! `voice-processing`, always on for Linux): echo cancellation against what the
//! speaker plays, noise suppression, high-pass filter and gain control. A
//! fake input is sent as it is (a test tone would be taken for noise), and
//! if the processing cannot be set up the call goes on without it.

use std::sync::Arc;

use tauri::{AppHandle, Manager, Runtime};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use callinvite_client::media::{
    AudioProcessing, AudioSink, AudioSource, CallMedia, MediaError, MediaEvent, MediaState,
    NoProcessing, NullSink, Role, SilenceSource, TestPattern, ToneSource, VideoIo, VideoSource,
    WavSink, WavSource,
};
use callinvite_client::{Event, InvitationId};

use crate::calls::{MediaRole, MediaUpdate, VideoFlow, VideoWanted};
use crate::options::AppOptions;
use crate::session::{emit_state, AppState};
use crate::store::Settings;
use crate::video::SlotSink;

/// The media of the call on screen.
pub struct Running {
    /// The engine, signaled through the client.
    media: CallMedia,
    /// Its picture sources.
    video: Arc<VideoControl>,
}

/// The picture sources of a call: the cameras' ids, and which source is open.
#[derive(Default)]
pub struct VideoControl {
    /// The cameras' ids, in the order of `VideoStatus::cameras`.
    camera_ids: std::sync::Mutex<Vec<String>>,
    /// What was last applied (opened, or failed to open). Held while a source
    /// opens, so that changes are applied one at a time and the last wins.
    applied: tokio::sync::Mutex<Option<VideoWanted>>,
}

/// Size of the pictures asked of a camera (and of the test pattern).
const CAMERA_SIZE: (u32, u32, u32) = (640, 480, 30);
/// Largest picture sent of a shared screen, and its rate (screens change little).
const SCREEN_SIZE: (u32, u32, u32) = (1280, 720, 10);

/// Starts the sound of call `id`, this device being `role`.
pub async fn start<R: Runtime>(app: &AppHandle<R>, id: InvitationId, role: MediaRole) {
    let state = app.state::<AppState>();
    let (client, settings, muted) = {
        let inner = state.inner.lock().await;
        let muted = inner
            .calls
            .call
            .as_ref()
            .and_then(|c| c.media.as_ref())
            .is_some_and(|m| m.muted);
        (inner.client.clone(), inner.settings.clone(), muted)
    };
    let Some(client) = client else { return };
    let mut config = CallMedia::config(&client).await;
    config.bind_ip = state.options.media_ip;
    let mut warnings = Vec::new();
    let (source, processor) = match open_source(&state.options, &settings) {
        // A real microphone: clean it up (echo, noise, level).
        Ok(source) if state.options.fake_audio_input.is_none() => (source, voice_processing()),
        Ok(source) => (source, Box::new(NoProcessing) as Box<dyn AudioProcessing>),
        Err(e) => {
            warn!(error = %e, "no microphone: sending silence");
            warnings.push(format!("No microphone ({e}): they cannot hear you."));
            (
                Box::new(SilenceSource) as Box<dyn AudioSource>,
                Box::new(NoProcessing) as Box<dyn AudioProcessing>,
            )
        }
    };
    let sink = open_sink(&state.options, &settings).unwrap_or_else(|e| {
        warn!(error = %e, "no speaker: the peer's sound is dropped");
        warnings.push(format!("No speaker ({e}): you cannot hear them."));
        Box::new(NullSink)
    });
    let role = match role {
        MediaRole::Offerer => Role::Offerer,
        MediaRole::Answerer => Role::Answerer,
    };
    // Pictures: none sent until the cameras are listed and the wanted one is
    // open (apply_video); the peer's and our preview go to the screen.
    state.frames.clear();
    let video = VideoIo {
        source: None,
        preview: Some(Box::new(SlotSink::preview(
            state.frames.local.clone(),
            state.frames.mirror_local.clone(),
        ))),
        sink: Box::new(SlotSink::remote(state.frames.remote.clone())),
        // The same pictures compressed, for a page that decodes VP8 itself.
        encoded: Some(Box::new(state.frames.tap())),
    };
    match CallMedia::start_with_video(
        &client,
        &id,
        role,
        config,
        source,
        sink,
        processor,
        Some(video),
    ) {
        Ok((media, events)) => {
            media.set_muted(muted);
            info!(invitation = %id, ?role, "call media started");
            let control = Arc::new(VideoControl::default());
            let old = state.inner.lock().await.media.replace(Running {
                media,
                video: control.clone(),
            });
            if let Some(old) = old {
                old.media.close();
            }
            if !warnings.is_empty() {
                update(app, &id, MediaUpdate::Warning(warnings.join(" "))).await;
            }
            tauri::async_runtime::spawn(follow(app.clone(), id.clone(), events));
            // List the cameras and screens (slow: devices), then open the wanted source.
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                let options = app.state::<AppState>().options.clone();
                let listed =
                    tauri::async_runtime::spawn_blocking(move || video_devices_for(&options))
                        .await
                        .unwrap_or_default();
                let selected = listed
                    .cameras
                    .iter()
                    .position(|c| c.id == settings.camera)
                    .unwrap_or(0);
                if let Some(e) = &listed.error {
                    warn!(error = %e, "cannot list the cameras");
                }
                info!(
                    cameras = listed.cameras.len(),
                    screen = listed.screen_sharing,
                    "video sources"
                );
                *control.camera_ids.lock().unwrap_or_else(|e| e.into_inner()) =
                    listed.cameras.iter().map(|c| c.id.clone()).collect();
                update(
                    &app,
                    &id,
                    MediaUpdate::VideoDevices {
                        cameras: listed.cameras.into_iter().map(|c| c.name).collect(),
                        selected,
                        can_share_screen: listed.screen_sharing,
                    },
                )
                .await;
                apply_video(&app, &id).await;
            });
        }
        Err(e) => {
            warn!(invitation = %id, error = %e, "call media could not start");
            update(app, &id, MediaUpdate::Failed(explain(&e))).await;
        }
    }
}

/// Stops the sound of the call (the call ended, or the session).
pub async fn stop<R: Runtime>(app: &AppHandle<R>) {
    let state = app.state::<AppState>();
    let running = state.inner.lock().await.media.take();
    if let Some(running) = running {
        info!(invitation = %running.media.invitation_id(), "call media stopped");
        running.media.close();
        info!(
            remote = ?state.frames.remote.stats(),
            local = ?state.frames.local.stats(),
            remote_vp8 = ?state.frames.remote_vp8.stats(),
            local_vp8 = ?state.frames.local_vp8.stats(),
            "video delivered to the window so far"
        );
    }
    state.frames.clear();
}

/// Hands a media signal of the peer to the engine; says whether `event` was one.
pub async fn route<R: Runtime>(app: &AppHandle<R>, event: &Event) -> bool {
    if !matches!(event, Event::MediaSignal { .. }) {
        return false;
    }
    let state = app.state::<AppState>();
    let inner = state.inner.lock().await;
    if !inner
        .media
        .as_ref()
        .is_some_and(|r| r.media.on_event(event))
    {
        info!(invitation = ?event.invitation_id(), "media signal for a call without media here: ignored");
    }
    true
}

/// Mutes or unmutes the microphone of the running call.
pub async fn set_muted<R: Runtime>(app: &AppHandle<R>, muted: bool) -> bool {
    let state = app.state::<AppState>();
    let changed = {
        let mut inner = state.inner.lock().await;
        if let Some(r) = &inner.media {
            r.media.set_muted(muted);
        }
        inner.calls.set_muted(muted)
    };
    if changed {
        emit_state(app).await;
    }
    changed
}

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
        .unwrap_or_else(|e| Err(format!("opening the picture source failed: {e}")));
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

/// Opens a picture source (blocking: a camera takes a while).
fn open_video(
    options: &AppOptions,
    wanted: VideoWanted,
    camera_id: Option<&str>,
) -> Result<Option<Box<dyn VideoSource>>, String> {
    let (w, h, fps) = CAMERA_SIZE;
    match wanted {
        VideoWanted::Off => Ok(None),
        VideoWanted::Camera(_) if options.fake_video_input.as_deref() == Some("pattern") => {
            TestPattern::new(w, h, fps)
                .map(|p| Some(Box::new(p) as Box<dyn VideoSource>))
                .map_err(|e| format!("Test pattern: {e}"))
        }
        VideoWanted::Camera(_) => open_camera(camera_id)
            .map(Some)
            .map_err(|e| format!("Camera: {e}. They cannot see you.")),
        VideoWanted::Screen => open_screen()
            .map(Some)
            .map_err(|e| format!("Screen sharing: {e}.")),
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
            Err(e) => out.error = Some(e),
        },
    }
    out
}

#[cfg(any(feature = "camera", target_os = "linux"))]
fn list_cameras() -> Result<Vec<Camera>, String> {
    callinvite_media::video::cameras()
        .map(|list| {
            list.into_iter()
                .map(|c| Camera {
                    id: c.id,
                    name: c.name,
                })
                .collect()
        })
        .map_err(|e| e.to_string())
}

#[cfg(not(any(feature = "camera", target_os = "linux")))]
fn list_cameras() -> Result<Vec<Camera>, String> {
    Err("this build has no camera support".into())
}

#[cfg(any(feature = "screen", target_os = "linux"))]
fn screen_sharing() -> bool {
    callinvite_media::video::screens().is_ok_and(|s| !s.is_empty())
}

#[cfg(not(any(feature = "screen", target_os = "linux")))]
fn screen_sharing() -> bool {
    false
}

/// Applies the engine's reports to the screen until it stops.
async fn follow<R: Runtime>(
    app: AppHandle<R>,
    id: InvitationId,
    mut events: UnboundedReceiver<MediaEvent>,
) {
    while let Some(event) = events.recv().await {
        let upd = match event {
            MediaEvent::State(MediaState::Connecting) => MediaUpdate::Connecting,
            MediaEvent::State(MediaState::Connected) => {
                info!(invitation = %id, "call media connected");
                MediaUpdate::Connected
            }
            MediaEvent::State(MediaState::Reconnecting) => {
                warn!(invitation = %id, "call media path lost; reconnecting");
                MediaUpdate::Reconnecting
            }
            MediaEvent::State(MediaState::Closed) => break,
            MediaEvent::Failed(e) => {
                warn!(invitation = %id, error = %e, "call media failed");
                MediaUpdate::Failed(explain(&e))
            }
            MediaEvent::Stats(s) => MediaUpdate::Stats {
                rtt_ms: s.rtt_ms,
                loss: s.loss,
                jitter_ms: s.jitter_ms,
                mic_level: s.mic_level,
                speaker_level: s.speaker_level,
                relayed: s.relayed,
                video: s.video.map(|v| {
                    let received = (v.receiving && v.received_width > 0).then_some(VideoFlow {
                        width: v.received_width,
                        height: v.received_height,
                        fps: v.received_fps,
                    });
                    let sent = (v.camera_on && v.sent_width > 0).then_some(VideoFlow {
                        width: v.sent_width,
                        height: v.sent_height,
                        fps: v.sent_fps,
                    });
                    (received, sent)
                }),
            },
            MediaEvent::RemoteVideo(on) => {
                info!(invitation = %id, on, "their video");
                if !on {
                    app.state::<AppState>().frames.clear_remote();
                }
                MediaUpdate::RemoteVideo(on)
            }
            MediaEvent::Signal(_) => continue,
        };
        update(&app, &id, upd).await;
    }
}

async fn update<R: Runtime>(app: &AppHandle<R>, id: &InvitationId, upd: MediaUpdate) {
    let state = app.state::<AppState>();
    let changed = state.inner.lock().await.calls.on_media(id, upd);
    if changed {
        emit_state(app).await;
    }
}

/// What a media failure means to the user.
fn explain(e: &MediaError) -> String {
    match e {
        MediaError::Timeout(ms) => format!(
            "No audio: could not connect to them within {} s. A firewall may block it; the server's TURN relay helps.",
            ms / 1000
        ),
        MediaError::RemoteSdp(_) | MediaError::Negotiation(_) => {
            format!("No audio: their app could not agree on the audio format ({e}).")
        }
        MediaError::NoDevice(_) | MediaError::PermissionDenied(_) | MediaError::Device(_) => {
            format!("No audio: {e}.")
        }
        _ => format!("No audio: {e}."),
    }
}

/// The microphone, or the fake input the options name.
fn open_source(
    options: &AppOptions,
    settings: &Settings,
) -> Result<Box<dyn AudioSource>, MediaError> {
    match options.fake_audio_input.as_deref() {
        Some("silence") => Ok(Box::new(SilenceSource)),
        Some(tone) if tone.starts_with("tone:") => {
            let freq: f32 = tone["tone:".len()..].parse().map_err(|_| {
                MediaError::Device(format!("--fake-audio-input {tone}: not a frequency"))
            })?;
            Ok(Box::new(ToneSource::new(freq, 0.3)))
        }
        Some(path) => Ok(Box::new(WavSource::open(path)?.looping(true))),
        None => microphone(settings),
    }
}

/// Echo cancellation, noise suppression and gain control for a real
/// microphone; none (logged) if the processing cannot be set up.
#[cfg(any(feature = "voice-processing", target_os = "linux"))]
fn voice_processing() -> Box<dyn AudioProcessing> {
    match callinvite_client::media::VoiceProcessing::new() {
        Ok(p) => {
            info!("voice processing on: echo cancellation, noise suppression, gain control");
            Box::new(p)
        }
        Err(e) => {
            warn!(error = %e, "no voice processing: the microphone is sent as it is");
            Box::new(NoProcessing)
        }
    }
}

#[cfg(not(any(feature = "voice-processing", target_os = "linux")))]
fn voice_processing() -> Box<dyn AudioProcessing> {
    Box::new(NoProcessing)
}

/// The speaker, or the recording the options name.
fn open_sink(options: &AppOptions, settings: &Settings) -> Result<Box<dyn AudioSink>, MediaError> {
    match &options.fake_audio_output {
        Some(path) => Ok(Box::new(WavSink::create(path)?)),
        None => speaker(settings),
    }
}

#[cfg(feature = "devices")]
fn microphone(settings: &Settings) -> Result<Box<dyn AudioSource>, MediaError> {
    let name = Some(settings.microphone.as_str()).filter(|n| !n.is_empty());
    Ok(Box::new(callinvite_media::devices::MicSource::open(name)?))
}

#[cfg(feature = "devices")]
fn speaker(settings: &Settings) -> Result<Box<dyn AudioSink>, MediaError> {
    let name = Some(settings.speaker.as_str()).filter(|n| !n.is_empty());
    Ok(Box::new(callinvite_media::devices::SpeakerSink::open(
        name,
    )?))
}

#[cfg(not(feature = "devices"))]
fn microphone(_: &Settings) -> Result<Box<dyn AudioSource>, MediaError> {
    Err(MediaError::NoDevice(
        "this build has no audio device support".into(),
    ))
}

#[cfg(not(feature = "devices"))]
fn speaker(_: &Settings) -> Result<Box<dyn AudioSink>, MediaError> {
    Err(MediaError::NoDevice(
        "this build has no audio device support".into(),
    ))
}

/// The audio devices for Settings.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AudioDevices {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Why the list is empty or partial, if it is.
    pub error: Option<String>,
}

/// Lists microphones and speakers (blocking: call it off the async threads).
pub fn audio_devices() -> AudioDevices {
    #[cfg(feature = "devices")]
    {
        let mut out = AudioDevices::default();
        match callinvite_media::devices::list_inputs() {
            Ok(v) => out.inputs = v,
            Err(e) => out.error = Some(e.to_string()),
        }
        match callinvite_media::devices::list_outputs() {
            Ok(v) => out.outputs = v,
            Err(e) => out.error = Some(e.to_string()),
        }
        out
    }
    #[cfg(not(feature = "devices"))]
    AudioDevices {
        error: Some("this build has no audio device support".into()),
        ..Default::default()
    }
}
