//! Where the engine's audio comes from and goes to: the [`AudioSource`] and
//! [`AudioSink`] traits and the sources and sinks that need no device (a
//! tone, silence, WAV files, memory).
//!
//! The engine calls both traits from its own task once per 20 ms frame, so
//! an implementation must not block: a device-backed one hands samples over
//! through a buffer (see `devices`).

use std::f32::consts::TAU;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::MediaError;

/// The engine's one sample rate, in Hz (Opus's native rate).
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms mono frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 960;

/// Audio to send: 20 ms of mono 48 kHz 16-bit samples per call.
pub trait AudioSource: Send + 'static {
    /// Fills `frame` ([`FRAME_SAMPLES`] samples). Returns `false` when the
    /// source has finished; the engine then sends silence and stops calling.
    fn read(&mut self, frame: &mut [i16]) -> bool;
}

/// Where received audio goes: 20 ms of mono 48 kHz 16-bit samples per call,
/// decoded, concealed (a lost packet) or silence (nothing arrived).
pub trait AudioSink: Send + 'static {
    /// Takes one frame of [`FRAME_SAMPLES`] samples.
    fn write(&mut self, frame: &[i16]);
}

impl<S: AudioSource + ?Sized> AudioSource for Box<S> {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        (**self).read(frame)
    }
}

impl<S: AudioSink + ?Sized> AudioSink for Box<S> {
    fn write(&mut self, frame: &[i16]) {
        (**self).write(frame)
    }
}

/// A sine tone, for tests and "can you hear me" checks.
#[derive(Debug, Clone)]
pub struct ToneSource {
    /// Phase advance per sample, in radians.
    step: f32,
    /// Current phase in radians, kept in `0..TAU` so the tone stays clean
    /// however long it runs.
    phase: f32,
    /// Peak value in sample units.
    peak: f32,
}

impl ToneSource {
    /// A tone of `freq_hz` whose peak is `amplitude` (0..=1) of full scale.
    pub fn new(freq_hz: f32, amplitude: f32) -> Self {
        ToneSource {
            step: TAU * freq_hz / SAMPLE_RATE as f32,
            phase: 0.0,
            peak: amplitude.clamp(0.0, 1.0) * i16::MAX as f32,
        }
    }
}

impl AudioSource for ToneSource {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        for s in frame.iter_mut() {
            *s = (self.phase.sin() * self.peak) as i16;
            self.phase = (self.phase + self.step) % TAU;
        }
        true
    }
}

/// Digital silence forever (a receive-only endpoint, or a muted test peer).
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        frame.fill(0);
        true
    }
}

/// Plays a WAV file: integer PCM of 8 to 32 bits or 32-bit float, any rate
/// and channel count, downmixed (channel average) and resampled (linear
/// interpolation — simple, good enough for prompts and tests) to 48 kHz mono.
///
/// By default the source **ends** at the end of the file (the engine then
/// sends silence); [`WavSource::looping`] makes it start over instead.
pub struct WavSource {
    /// The open file; samples are streamed, not loaded whole.
    reader: hound::WavReader<BufReader<File>>,
    /// Interleaved channels per frame of the file.
    channels: usize,
    /// The file's sample rate.
    rate: u32,
    /// Multiplier that maps a sample of the file to `-1.0..=1.0`.
    scale: f32,
    /// Integer or float samples.
    format: hound::SampleFormat,
    /// Start over at the end instead of finishing.
    looping: bool,
    /// Position in the file (in input frames) of the next output sample,
    /// as a fraction past `prev` — the resampler's phase.
    frac: f64,
    /// Input frames advanced per output sample (`rate / 48000`).
    ratio: f64,
    /// The two input frames (mono) the next output sample lies between.
    prev: f32,
    next: f32,
    /// The file has no more samples (and does not loop).
    done: bool,
}

impl WavSource {
    /// Opens `path`; fails with [`MediaError::AudioFile`] if it is not a WAV
    /// file this source can play.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let reader = hound::WavReader::open(path)
            .map_err(|e| MediaError::AudioFile(format!("{}: {e}", path.display())))?;
        let spec = reader.spec();
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(MediaError::AudioFile(format!(
                "{}: no channels or no sample rate",
                path.display()
            )));
        }
        let scale = match spec.sample_format {
            hound::SampleFormat::Float if spec.bits_per_sample == 32 => 1.0,
            hound::SampleFormat::Int if (8..=32).contains(&spec.bits_per_sample) => {
                1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32
            }
            _ => {
                return Err(MediaError::AudioFile(format!(
                    "{}: unsupported sample format ({:?}, {} bits)",
                    path.display(),
                    spec.sample_format,
                    spec.bits_per_sample
                )))
            }
        };
        let mut source = WavSource {
            reader,
            channels: usize::from(spec.channels),
            rate: spec.sample_rate,
            scale,
            format: spec.sample_format,
            looping: false,
            frac: 0.0,
            ratio: f64::from(spec.sample_rate) / f64::from(SAMPLE_RATE),
            prev: 0.0,
            next: 0.0,
            done: false,
        };
        source.prev = source.next_input_frame().unwrap_or(0.0);
        source.next = source.next_input_frame().unwrap_or(source.prev);
        Ok(source)
    }

    /// Start over at the end of the file instead of finishing.
    pub fn looping(mut self, looping: bool) -> Self {
        self.looping = looping;
        self
    }

    /// The file's sample rate (before resampling), for logs.
    pub fn file_rate(&self) -> u32 {
        self.rate
    }

    /// The next input frame, downmixed, or `None` at the end of the file
    /// (after a rewind when looping). A damaged sample ends the file.
    fn next_input_frame(&mut self) -> Option<f32> {
        for attempt in 0..2 {
            let mut sum = 0.0f32;
            let mut got = 0usize;
            for _ in 0..self.channels {
                let sample = match self.format {
                    hound::SampleFormat::Float => {
                        self.reader.samples::<f32>().next().map(|r| r.ok())
                    }
                    hound::SampleFormat::Int => self
                        .reader
                        .samples::<i32>()
                        .next()
                        .map(|r| r.ok().map(|v| v as f32)),
                };
                match sample {
                    Some(Some(v)) => {
                        sum += v * self.scale;
                        got += 1;
                    }
                    _ => break,
                }
            }
            if got == self.channels {
                return Some(sum / self.channels as f32);
            }
            if attempt == 0 && self.looping && self.reader.seek(0).is_ok() {
                continue;
            }
            break;
        }
        None
    }
}

impl AudioSource for WavSource {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        if self.done {
            frame.fill(0);
            return false;
        }
        let mut written = 0;
        while written < frame.len() && !self.done {
            let v = self.prev + (self.next - self.prev) * self.frac as f32;
            frame[written] = (v.clamp(-1.0, 1.0) * i16::MAX as f32) as i16;
            written += 1;
            self.frac += self.ratio;
            while self.frac >= 1.0 && !self.done {
                self.frac -= 1.0;
                self.prev = self.next;
                match self.next_input_frame() {
                    Some(v) => self.next = v,
                    None => self.done = true,
                }
            }
        }
        // The frame that reached the end of the file is padded with silence.
        frame[written..].fill(0);
        true
    }
}

/// Records to a WAV file: 48 kHz, mono, 16-bit. The file is finalized
/// (its header completed) by [`WavSink::finalize`] or, ignoring errors, when
/// the sink is dropped — i.e. when the engine that owns it stops.
pub struct WavSink {
    /// `None` once finalized.
    writer: Option<hound::WavWriter<std::io::BufWriter<File>>>,
}

impl WavSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| MediaError::AudioFile(format!("{}: {e}", path.display())))?;
        Ok(WavSink {
            writer: Some(writer),
        })
    }

    /// Completes the file, reporting any error.
    pub fn finalize(mut self) -> Result<(), MediaError> {
        match self.writer.take() {
            Some(w) => w
                .finalize()
                .map_err(|e| MediaError::AudioFile(e.to_string())),
            None => Ok(()),
        }
    }
}

impl AudioSink for WavSink {
    fn write(&mut self, frame: &[i16]) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        for &s in frame {
            if let Err(e) = w.write_sample(s) {
                tracing::warn!("recording stopped: {e}");
                self.writer = None;
                return;
            }
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finalize() {
                tracing::warn!("could not finalize recording: {e}");
            }
        }
    }
}

/// Discards everything (a send-only endpoint).
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn write(&mut self, _frame: &[i16]) {}
}

/// Appends every frame to a shared buffer that the caller keeps a clone
/// of — for tests and measurements.
#[derive(Debug, Clone, Default)]
pub struct SharedSink {
    /// Every sample written so far.
    samples: Arc<Mutex<Vec<i16>>>,
}

impl SharedSink {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every sample written so far.
    pub fn samples(&self) -> Vec<i16> {
        self.lock().clone()
    }

    /// How many samples have been written.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<i16>> {
        // A panic while holding the lock cannot leave a Vec<i16> invalid.
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AudioSink for SharedSink {
    fn write(&mut self, frame: &[i16]) {
        self.lock().extend_from_slice(frame);
    }
}

/// Root mean square of `samples` as a fraction of full scale (0..=1).
pub fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    ((sum / samples.len() as f64).sqrt() / 32768.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_the_requested_amplitude() {
        let mut t = ToneSource::new(440.0, 0.5);
        let mut f = [0i16; FRAME_SAMPLES];
        assert!(t.read(&mut f));
        // A sine's RMS is peak / sqrt(2).
        let r = rms(&f);
        assert!((r - 0.5 / 2f32.sqrt()).abs() < 0.02, "rms {r}");
    }

    #[test]
    fn wav_round_trip_resamples_and_downmixes() {
        let dir = std::env::temp_dir().join(format!("callinvite-media-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.wav");
        // 100 ms of a stereo 16 kHz file: left = +8000, right = +4000.
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for _ in 0..1600 {
            w.write_sample(8000i16).unwrap();
            w.write_sample(4000i16).unwrap();
        }
        w.finalize().unwrap();

        let mut src = WavSource::open(&path).unwrap();
        assert_eq!(src.file_rate(), 16_000);
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut total = Vec::new();
        while src.read(&mut frame) {
            total.extend_from_slice(&frame);
            assert!(total.len() < 48_000, "the source never ended");
        }
        // 100 ms at 48 kHz, rounded up to whole frames.
        assert_eq!(total.len(), 5 * FRAME_SAMPLES);
        // The mean of the channels, within rounding.
        assert!((total[100] - 6000).abs() <= 2, "{}", total[100]);
        assert_eq!(total[total.len() - 1], 0, "the last frame is padded");

        // Looping never ends and starts over.
        let mut src = WavSource::open(&path).unwrap().looping(true);
        for _ in 0..20 {
            assert!(src.read(&mut frame));
        }
        assert!((frame[500] - 6000).abs() <= 2);

        let out = dir.join("out.wav");
        let mut sink = WavSink::create(&out).unwrap();
        sink.write(&frame);
        drop(sink);
        let r = hound::WavReader::open(&out).unwrap();
        assert_eq!(r.spec().sample_rate, SAMPLE_RATE);
        assert_eq!(r.len() as usize, FRAME_SAMPLES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
