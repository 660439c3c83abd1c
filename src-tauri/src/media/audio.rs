//! The call's sound devices: the microphone (through voice processing) and
//! the speaker chosen in Settings, or the fake input and output the options
//! name (a tone, a WAV file, a recording); and the lists Settings offers.

use callinvite_client::media::{
    AudioProcessing, AudioSink, AudioSource, MediaError, NoProcessing, SilenceSource, ToneSource,
    WavSink, WavSource,
};

use crate::options::AppOptions;
use crate::store::Settings;

/// The microphone, or the fake input the options name.
pub(super) fn open_source(
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
pub(super) fn voice_processing() -> Box<dyn AudioProcessing> {
    match callinvite_client::media::VoiceProcessing::new() {
        Ok(p) => {
            tracing::info!(
                "voice processing on: echo cancellation, noise suppression, gain control"
            );
            Box::new(p)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no voice processing: the microphone is sent as it is");
            Box::new(NoProcessing)
        }
    }
}

#[cfg(not(any(feature = "voice-processing", target_os = "linux")))]
pub(super) fn voice_processing() -> Box<dyn AudioProcessing> {
    Box::new(NoProcessing)
}

/// The speaker, or the recording the options name.
pub(super) fn open_sink(
    options: &AppOptions,
    settings: &Settings,
) -> Result<Box<dyn AudioSink>, MediaError> {
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
