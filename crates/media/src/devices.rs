//! Real audio devices through cpal (cargo feature `devices`; on Linux it
//! needs ALSA's headers, `libasound2-dev`, to build).
//!
//! [`MicSource`] and [`SpeakerSink`] run the device stream on a thread of
//! their own (a cpal stream is not `Send` on every platform) and meet the
//! engine's 20 ms frames through a small buffer: the device's own rate and
//! channel count are converted to and from 48 kHz mono (channel average,
//! linear interpolation). A device that delivers late or stops makes the
//! source return silence and the speaker play silence; neither blocks the
//! engine.

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

use crate::audio::{AudioSink, AudioSource, SAMPLE_RATE};
use crate::MediaError;

/// Most audio buffered between a device and the engine (200 ms at 48 kHz):
/// beyond it the oldest is dropped, so latency cannot grow.
const MAX_BUFFERED: usize = 48 * 200;

/// Names of the input devices (microphones).
pub fn list_inputs() -> Result<Vec<String>, MediaError> {
    let host = cpal::default_host();
    let devices = host.input_devices().map_err(device_error)?;
    Ok(devices.filter_map(|d| device_name(&d)).collect())
}

/// Names of the output devices (speakers, headsets).
pub fn list_outputs() -> Result<Vec<String>, MediaError> {
    let host = cpal::default_host();
    let devices = host.output_devices().map_err(device_error)?;
    Ok(devices.filter_map(|d| device_name(&d)).collect())
}

fn device_name(d: &cpal::Device) -> Option<String> {
    d.description().ok().map(|desc| desc.name().to_owned())
}

fn device_error(e: cpal::Error) -> MediaError {
    match e.kind() {
        cpal::ErrorKind::PermissionDenied => MediaError::PermissionDenied(e.to_string()),
        cpal::ErrorKind::DeviceNotAvailable => MediaError::NoDevice(e.to_string()),
        _ => MediaError::Device(e.to_string()),
    }
}

/// The named device or the default one.
fn find_device(input: bool, name: Option<&str>) -> Result<cpal::Device, MediaError> {
    let host = cpal::default_host();
    let what = if input { "input" } else { "output" };
    match name {
        None => if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
        .ok_or_else(|| MediaError::NoDevice(format!("no default {what} device"))),
        Some(name) => {
            let mut devices: Box<dyn Iterator<Item = cpal::Device>> = if input {
                Box::new(host.input_devices().map_err(device_error)?)
            } else {
                Box::new(host.output_devices().map_err(device_error)?)
            };
            devices
                .find(|d| device_name(d).as_deref() == Some(name))
                .ok_or_else(|| MediaError::NoDevice(format!("no {what} device named {name:?}")))
        }
    }
}

/// Streaming linear-interpolation resampler.
#[derive(Debug, Clone)]
pub(crate) struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output between `last` (0) and the next input (1).
    pos: f64,
    /// The previous input sample.
    last: Option<f32>,
}

impl Resampler {
    pub(crate) fn new(from_rate: u32, to_rate: u32) -> Self {
        Resampler {
            step: f64::from(from_rate) / f64::from(to_rate),
            pos: 0.0,
            last: None,
        }
    }

    /// Feeds one input sample; calls `emit` for each output sample due.
    pub(crate) fn push(&mut self, x: f32, mut emit: impl FnMut(f32)) {
        let Some(prev) = self.last else {
            self.last = Some(x);
            return;
        };
        while self.pos < 1.0 {
            emit(prev + (x - prev) * self.pos as f32);
            self.pos += self.step;
        }
        self.pos -= 1.0;
        self.last = Some(x);
    }
}

/// Samples shared between a device callback and the engine.
type Shared = Arc<Mutex<VecDeque<i16>>>;

fn lock(s: &Shared) -> MutexGuard<'_, VecDeque<i16>> {
    // A panic while holding the lock cannot leave a VecDeque<i16> invalid.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn push_bounded(q: &mut VecDeque<i16>, v: i16) {
    if q.len() >= MAX_BUFFERED {
        q.pop_front();
    }
    q.push_back(v);
}

/// A device stream living on its own thread until dropped.
struct StreamThread {
    /// Dropping (or sending on) it ends the thread and the stream.
    stop: Option<std_mpsc::Sender<()>>,
    /// The thread.
    thread: Option<JoinHandle<()>>,
}

impl StreamThread {
    /// Runs `build` on a new thread; the stream it returns plays until the
    /// `StreamThread` is dropped.
    fn spawn<F>(build: F) -> Result<Self, MediaError>
    where
        F: FnOnce() -> Result<cpal::Stream, MediaError> + Send + 'static,
    {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("audio-device".into())
            .spawn(move || {
                let stream = build().and_then(|s| s.play().map(|()| s).map_err(device_error));
                match stream {
                    Ok(stream) => {
                        let _ = ready_tx.send(Ok(()));
                        // Blocks until the owner drops or signals.
                        let _ = stop_rx.recv();
                        drop(stream);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| MediaError::Device(format!("cannot start the audio thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(StreamThread {
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(MediaError::Device("the audio thread died".into())),
        }
    }
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The microphone as an [`AudioSource`].
pub struct MicSource {
    /// 48 kHz mono samples captured and not yet read.
    samples: Shared,
    /// Keeps the stream running.
    _stream: StreamThread,
}

impl MicSource {
    /// Opens the named input device, or the default one.
    pub fn open(name: Option<&str>) -> Result<Self, MediaError> {
        let samples: Shared = Arc::default();
        let stream = open_stream(true, name, samples.clone())?;
        Ok(MicSource {
            samples,
            _stream: stream,
        })
    }
}

/// Opens the named device (or the default one) for capture (`input`) or
/// playback, in its default format, on a stream thread that moves 48 kHz
/// mono samples through `shared`.
fn open_stream(
    input: bool,
    name: Option<&str>,
    shared: Shared,
) -> Result<StreamThread, MediaError> {
    let name = name.map(str::to_owned);
    StreamThread::spawn(move || {
        let device = find_device(input, name.as_deref())?;
        let supported = if input {
            device.default_input_config()
        } else {
            device.default_output_config()
        }
        .map_err(device_error)?;
        let format = supported.sample_format();
        let config = supported.config();
        tracing::info!(
            "{} {:?}: {} Hz, {} channels, {format}",
            if input { "microphone" } else { "speaker" },
            device_name(&device),
            config.sample_rate,
            config.channels
        );
        macro_rules! build {
            ($t:ty) => {
                if input {
                    build_input::<$t>(&device, config, shared)
                } else {
                    build_output::<$t>(&device, config, shared)
                }
            };
        }
        match format {
            SampleFormat::I8 => build!(i8),
            SampleFormat::I16 => build!(i16),
            SampleFormat::I32 => build!(i32),
            SampleFormat::U8 => build!(u8),
            SampleFormat::U16 => build!(u16),
            SampleFormat::U32 => build!(u32),
            SampleFormat::F32 => build!(f32),
            SampleFormat::F64 => build!(f64),
            other => Err(MediaError::Device(format!(
                "unsupported sample format {other}"
            ))),
        }
    })
}

fn build_input<T>(
    device: &cpal::Device,
    config: StreamConfig,
    shared: Shared,
) -> Result<cpal::Stream, MediaError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let mut resampler = Resampler::new(config.sample_rate, SAMPLE_RATE);
    device
        .build_input_stream(
            config,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let mut q = lock(&shared);
                for frame in data.chunks(channels) {
                    let mono = frame.iter().map(|&s| f32::from_sample(s)).sum::<f32>()
                        / frame.len() as f32;
                    resampler.push(mono, |v| {
                        push_bounded(&mut q, (v.clamp(-1.0, 1.0) * i16::MAX as f32) as i16)
                    });
                }
            },
            |e| tracing::warn!("microphone: {e}"),
            None,
        )
        .map_err(device_error)
}

impl AudioSource for MicSource {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        let mut q = lock(&self.samples);
        let n = frame.len().min(q.len());
        for (o, s) in frame.iter_mut().zip(q.drain(..n)) {
            *o = s;
        }
        // Not enough captured yet (device start-up, a late callback).
        frame[n..].fill(0);
        true
    }
}

/// The loudspeaker as an [`AudioSink`].
pub struct SpeakerSink {
    /// 48 kHz mono samples written and not yet played.
    samples: Shared,
    /// Keeps the stream running.
    _stream: StreamThread,
}

impl SpeakerSink {
    /// Opens the named output device, or the default one.
    pub fn open(name: Option<&str>) -> Result<Self, MediaError> {
        let samples: Shared = Arc::default();
        let stream = open_stream(false, name, samples.clone())?;
        Ok(SpeakerSink {
            samples,
            _stream: stream,
        })
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: StreamConfig,
    shared: Shared,
) -> Result<cpal::Stream, MediaError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels.max(1));
    let mut resampler = Resampler::new(SAMPLE_RATE, config.sample_rate);
    // Device-rate samples resampled but not yet played.
    let mut ready: VecDeque<f32> = VecDeque::new();
    device
        .build_output_stream(
            config,
            move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                let frames = data.len() / channels;
                {
                    let mut q = lock(&shared);
                    while ready.len() < frames {
                        let Some(s) = q.pop_front() else { break };
                        resampler.push(f32::from(s) / 32768.0, |v| ready.push_back(v));
                    }
                }
                for frame in data.chunks_mut(channels) {
                    // Underrun: silence.
                    let v = T::from_sample(ready.pop_front().unwrap_or(0.0));
                    frame.fill(v);
                }
            },
            |e| tracing::warn!("speaker: {e}"),
            None,
        )
        .map_err(device_error)
}

impl AudioSink for SpeakerSink {
    fn write(&mut self, frame: &[i16]) {
        let mut q = lock(&self.samples);
        for &s in frame {
            push_bounded(&mut q, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resampler_converts_rates() {
        for (from, to) in [(44_100, 48_000), (48_000, 16_000), (48_000, 48_000)] {
            let mut r = Resampler::new(from, to);
            let mut out = 0usize;
            for i in 0..from {
                r.push((i as f32 * 0.01).sin(), |_| out += 1);
            }
            // One second in, one second out (within a sample or two).
            assert!(
                (out as i64 - i64::from(to)).abs() <= 2,
                "{from}->{to}: {out}"
            );
        }
    }

    /// Runs only where a sound card exists (`cargo test --features devices
    /// -- --ignored`): a second of microphone into the speaker.
    #[test]
    #[ignore = "needs audio devices"]
    fn devices_open_and_run() {
        eprintln!("inputs: {:?}", list_inputs());
        eprintln!("outputs: {:?}", list_outputs());
        let mut mic = match MicSource::open(None) {
            Ok(m) => m,
            Err(e) => return eprintln!("no microphone here: {e}"),
        };
        let mut speaker = match SpeakerSink::open(None) {
            Ok(s) => s,
            Err(e) => return eprintln!("no speaker here: {e}"),
        };
        let mut frame = [0i16; crate::FRAME_SAMPLES];
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(mic.read(&mut frame));
            speaker.write(&frame);
        }
    }

    /// ALSA's "null" device (capture yields zeros, playback discards)
    /// exists even without a sound card: where it is listed, both streams
    /// must run end to end.
    #[test]
    fn the_null_device_streams_when_present() {
        const NULL: &str = "Discard all samples";
        let find = |names: Result<Vec<String>, MediaError>| {
            names
                .ok()
                .and_then(|n| n.into_iter().find(|n| n.starts_with(NULL)))
        };
        let (Some(input), Some(output)) = (find(list_inputs()), find(list_outputs())) else {
            return eprintln!("no ALSA null device here; skipped");
        };
        let mut mic = MicSource::open(Some(&input)).expect("null capture");
        let mut speaker = SpeakerSink::open(Some(&output)).expect("null playback");
        let mut frame = [1i16; crate::FRAME_SAMPLES];
        let mut captured = 0;
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            captured += lock(&mic.samples).len();
            assert!(mic.read(&mut frame));
            speaker.write(&frame);
            if captured > 0 {
                break;
            }
        }
        assert!(captured > 0, "the null device never delivered samples");
    }

    #[test]
    fn a_missing_device_is_a_clear_error() {
        match MicSource::open(Some("no such microphone, surely")) {
            Err(MediaError::NoDevice(m)) => assert!(m.contains("no such microphone")),
            Err(MediaError::Device(m)) | Err(MediaError::PermissionDenied(m)) => {
                // No audio system at all (e.g. a container without ALSA
                // devices): still a clear error, not a panic.
                eprintln!("{m}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("opened a device that does not exist"),
        }
    }
}
