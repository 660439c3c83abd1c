//! [`VoiceProcessing`]: echo cancellation, noise suppression, a high-pass
//! filter and automatic gain control from WebRTC's audio processing module
//! (cargo feature `voice-processing`).
//!
//! The module is the one PulseAudio packages (`webrtc-audio-processing`
//! 0.3, WebRTC of about 2016), reached through the `webrtc-audio-processing`
//! crate 0.5, which links the system library found by pkg-config (Debian:
//! `libwebrtc-audio-processing-dev`; bindgen needs `libclang-dev`). Its echo
//! canceller is the classic AEC (not AEC3), here in its delay-agnostic mode
//! with the extended filter: the delay between a frame handed to the
//! speaker and its echo in the microphone is not known to the engine (the
//! device buffers of `devices` hold up to 200 ms each) and need not stay
//! put, so the module estimates it from the two streams.
//!
//! The module works on 10 ms frames: each 20 ms frame of the engine is
//! processed as two. Played frames are the render (far-end) stream,
//! microphone frames the capture stream; the engine hands both over in the
//! same task, capture then render in each tick (see [`AudioProcessing`]).
//!
//! What it does, measured by `tests/voice_processing.rs` on synthetic
//! rooms (deterministic):
//!
//! - Echo at −10 dB ERL, 40 ms late with a 150 ms tail: converged within
//!   2–3 s, the echo comes out ~47 dB weaker (ERLE); the near end alone
//!   passes within 1 dB (+10 dB with the gain control, which brings a
//!   −25 dBFS talker up); in double talk the echo suppressor takes ~12 dB
//!   off the near end too (before the gain control).
//! - A talker in white noise at 10 dB SNR: ~12 dB better SNR.
//! - A *steady* tone is noise to the noise suppressor: it is taken down by
//!   ~19 dB within a second or two. Feed it speech (or tones in bursts),
//!   not a test tone.
//! - Digital silence (exact zeros between words, as synthetic sources have
//!   and no microphone does) throws the noise suppressor off: it then takes
//!   ~19 dB off the voice too. The capture gets ±1 LSB of dither (about
//!   −100 dBFS) before the module, which keeps it right.

use std::fmt;

use webrtc_audio_processing as apm;

use crate::audio::FRAME_SAMPLES;
use crate::processing::AudioProcessing;
use crate::MediaError;

/// Samples of one of the module's 10 ms frames at 48 kHz.
const CHUNK: usize = apm::NUM_SAMPLES_PER_FRAME as usize;

/// Which stages [`VoiceProcessing`] runs. [`Default`]: all of them, the
/// echo delay estimated by the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceConfig {
    /// Remove the echo of what the speaker plays from the microphone (AEC
    /// with the extended filter, moderate suppression of the residual
    /// echo).
    pub echo_cancellation: bool,
    /// Suppress stationary noise (fans, hiss) in the microphone, at the
    /// module's "high" level.
    pub noise_suppression: bool,
    /// Remove DC and low-frequency rumble from the microphone.
    pub high_pass_filter: bool,
    /// Adaptive digital gain: bring a quiet microphone up towards −3 dBFS
    /// peaks (at most +9 dB) and limit a loud one.
    pub gain_control: bool,
    /// The delay from a frame given to [`AudioProcessing::process_render`] to
    /// its echo reaching [`AudioProcessing::process_capture`], if it is known
    /// and stable; `None` (the default): estimated by the module
    /// (delay-agnostic AEC).
    pub echo_delay_ms: Option<u16>,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            echo_cancellation: true,
            noise_suppression: true,
            high_pass_filter: true,
            gain_control: true,
            echo_delay_ms: None,
        }
    }
}

/// What the module reports about the microphone; see
/// [`VoiceProcessing::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VoiceStats {
    /// Share (0..=1) of the 10 ms microphone frames since the last
    /// [`VoiceProcessing::stats`] in which the echo canceller found echo of
    /// the far end (its `stream_has_echo`: "might contain echo"); `None`
    /// without echo cancellation or before any frame.
    pub echo_fraction: Option<f32>,
    /// The echo canceller's echo return loss enhancement (how much echo it
    /// removes), in dB, from its last measurement; `None` until it has one.
    pub erle_db: Option<f64>,
    /// Its echo return loss (far-end level over echo level), in dB.
    pub erl_db: Option<f64>,
    /// The echo delay the module estimated, in ms (median of the last
    /// second); `None` until it has one.
    pub delay_ms: Option<i32>,
}

/// Echo cancellation, noise suppression, high-pass filter and automatic
/// gain control on the microphone, with every played frame as the echo
/// reference. Pass one to [`crate::start_with_processing`].
pub struct VoiceProcessing {
    /// The module.
    processor: apm::Processor,
    /// What it runs.
    config: VoiceConfig,
    /// One 10 ms frame, as floats in −1..1.
    chunk: [f32; CHUNK],
    /// Capture frames processed since the last [`Self::stats`].
    frames: u32,
    /// Of them, those the echo canceller flagged as echo.
    echo_frames: u32,
    /// Processing errors so far (logged once).
    errors: u64,
    /// State of the dither's random numbers (xorshift32).
    dither: u32,
}

impl fmt::Debug for VoiceProcessing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoiceProcessing")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl VoiceProcessing {
    /// Every stage on (see [`VoiceConfig::default`]).
    pub fn new() -> Result<Self, MediaError> {
        Self::with_config(VoiceConfig::default())
    }

    /// The stages `config` asks for.
    pub fn with_config(config: VoiceConfig) -> Result<Self, MediaError> {
        let mut processor = apm::Processor::new(&apm::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..apm::InitializationConfig::default()
        })
        .map_err(|e| MediaError::Processing(e.to_string()))?;
        processor.set_config(apm::Config {
            echo_cancellation: config.echo_cancellation.then(|| apm::EchoCancellation {
                // `Moderate` is the module's default, whichever library is linked:
                // the system library (0.3) knows three levels (low, moderate,
                // high = 0, 1, 2) where the crate's enum has five (0..=4), so
                // `Moderate` (3) and `High` (4) are refused there and its default,
                // moderate, stays; the bundled library knows all five.
                suppression_level: apm::EchoCancellationSuppressionLevel::Moderate,
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                stream_delay_ms: config.echo_delay_ms.map(i32::from),
            }),
            noise_suppression: config.noise_suppression.then_some(apm::NoiseSuppression {
                suppression_level: apm::NoiseSuppressionLevel::High,
            }),
            gain_control: config.gain_control.then_some(apm::GainControl {
                mode: apm::GainControlMode::AdaptiveDigital,
                target_level_dbfs: 3,
                compression_gain_db: 9,
                enable_limiter: true,
            }),
            enable_high_pass_filter: config.high_pass_filter,
            ..apm::Config::default()
        });
        Ok(VoiceProcessing {
            processor,
            config,
            chunk: [0.0; CHUNK],
            frames: 0,
            echo_frames: 0,
            errors: 0,
            dither: 0x2545_f491,
        })
    }

    /// The stages it runs.
    pub fn config(&self) -> VoiceConfig {
        self.config
    }

    /// What the module measured; restarts the echo count (which the engine
    /// also reads, once a second, for [`crate::CallStats::echo`]).
    pub fn stats(&mut self) -> VoiceStats {
        let s = self.processor.get_stats();
        let echo_fraction = (self.config.echo_cancellation && self.frames > 0)
            .then(|| self.echo_frames as f32 / self.frames as f32);
        self.frames = 0;
        self.echo_frames = 0;
        VoiceStats {
            echo_fraction,
            // The module reports −100 dB when it has no measurement.
            erle_db: s.echo_return_loss_enhancement.filter(|&v| v > -100.0),
            erl_db: s.echo_return_loss.filter(|&v| v > -100.0),
            delay_ms: s.delay_median_ms.filter(|&v| v >= 0),
        }
    }

    fn error(&mut self, what: &str, e: apm::Error) {
        if self.errors == 0 {
            tracing::warn!("voice processing of a {what} frame failed (passed through): {e}");
        }
        self.errors += 1;
    }
}

/// `frame` (i16) into `out` (f32 in −1..1).
fn to_float(frame: &[i16], out: &mut [f32]) {
    for (o, &s) in out.iter_mut().zip(frame) {
        *o = f32::from(s) / 32768.0;
    }
}

/// Adds triangular dither of ±1 LSB (about −100 dBFS) to `chunk`. The
/// noise suppressor misjudges input with stretches of digital silence
/// (exact zeros, as synthetic or gated sources have and no microphone
/// does): it takes the voice for noise and removes ~19 dB of it. Any
/// noise floor, this one included, keeps it right.
fn dither(chunk: &mut [f32], state: &mut u32) {
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        (*state >> 8) as f32 / (1u32 << 24) as f32
    };
    for s in chunk {
        *s += (next() - next()) / 32768.0;
    }
}

/// `chunk` (f32) back into `frame` (i16), saturating.
fn to_int(chunk: &[f32], frame: &mut [i16]) {
    for (o, &s) in frame.iter_mut().zip(chunk) {
        *o = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
    }
}

impl AudioProcessing for VoiceProcessing {
    fn process_capture(&mut self, frame: &mut [i16]) {
        debug_assert_eq!(frame.len(), FRAME_SAMPLES);
        for part in frame.chunks_exact_mut(CHUNK) {
            to_float(part, &mut self.chunk);
            if self.config.noise_suppression {
                dither(&mut self.chunk, &mut self.dither);
            }
            match self.processor.process_capture_frame(&mut self.chunk) {
                Ok(()) => {
                    to_int(&self.chunk, part);
                    if self.config.echo_cancellation {
                        self.frames += 1;
                        if self.processor.get_stats().has_echo == Some(true) {
                            self.echo_frames += 1;
                        }
                    }
                }
                Err(e) => self.error("microphone", e),
            }
        }
    }

    fn process_render(&mut self, frame: &[i16]) {
        for part in frame.chunks_exact(CHUNK) {
            to_float(part, &mut self.chunk);
            if let Err(e) = self.processor.process_render_frame(&mut self.chunk) {
                self.error("speaker", e);
            }
        }
    }

    fn echo(&mut self) -> Option<f32> {
        self.stats().echo_fraction
    }
}
