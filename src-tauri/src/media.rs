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
//! A real microphone goes through voice processing (cargo feature
//! `voice-processing`, always on for Linux): echo cancellation against what the
//! speaker plays, noise suppression, high-pass filter and gain control. A
//! fake input is sent as it is (a test tone would be taken for noise), and
//! if the processing cannot be set up the call goes on without it.

use tauri::{AppHandle, Manager, Runtime};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use callinvite_client::media::{
    AudioProcessing, AudioSink, AudioSource, CallMedia, MediaError, MediaEvent, MediaState,
    NoProcessing, NullSink, Role, SilenceSource, ToneSource, WavSink, WavSource,
};
use callinvite_client::{Event, InvitationId};

use crate::calls::{MediaRole, MediaUpdate};
use crate::options::AppOptions;
use crate::session::{emit_state, AppState};
use crate::store::Settings;

/// The media of the call on screen.
pub struct Running {
    /// The engine, signaled through the client.
    media: CallMedia,
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
    match CallMedia::start_with_processing(&client, &id, role, config, source, sink, processor) {
        Ok((media, events)) => {
            media.set_muted(muted);
            info!(invitation = %id, ?role, "call media started");
            let old = state.inner.lock().await.media.replace(Running { media });
            if let Some(old) = old {
                old.media.close();
            }
            if !warnings.is_empty() {
                update(app, &id, MediaUpdate::Warning(warnings.join(" "))).await;
            }
            tauri::async_runtime::spawn(follow(app.clone(), id, events));
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
    }
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
            },
            MediaEvent::Signal(_) | MediaEvent::RemoteVideo(_) => continue,
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
