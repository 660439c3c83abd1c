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
//!
//! Layout: this file starts and stops the engine and turns its reports into
//! the screen's media status; `audio.rs` opens the microphone and speaker
//! (or the fake ones) and lists them for Settings; `video_sources.rs` opens
//! the camera or screen the state wants, applies the user's changes, and
//! lists the cameras.

use std::sync::Arc;

use tauri::{AppHandle, Manager, Runtime};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use callinvite_client::media::{
    AudioProcessing, AudioSource, CallMedia, MediaError, MediaEvent, MediaState, NoProcessing,
    NullSink, Role, SilenceSource, VideoIo,
};
use callinvite_client::{Event, InvitationId};

use crate::calls::{MediaRole, MediaUpdate, VideoFlow};
use crate::session::{emit_state, AppState};
use crate::video::SlotSink;

mod audio;
mod video_sources;

pub use audio::{audio_devices, AudioDevices};
use audio::{open_sink, open_source, voice_processing};
pub use video_sources::{
    apply_video, set_camera, share_screen, switch_camera, video_devices_for, Camera, VideoControl,
    VideoDevices, VideoSourceError,
};

/// The media of the call on screen.
pub struct Running {
    /// The engine, signaled through the client.
    media: CallMedia,
    /// Its picture sources.
    video: Arc<VideoControl>,
}

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
