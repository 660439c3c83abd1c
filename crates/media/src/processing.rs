//! The hook for voice processing — echo cancellation, noise suppression,
//! automatic gain — between the devices and the codec.
//!
//! [`NoProcessing`] passes audio through; `VoiceProcessing` (cargo feature
//! `voice-processing`, module `voice`) is WebRTC's audio processing module.
//! An echo canceller needs both directions, so the engine calls
//! [`AudioProcessing::process_render`] with every frame it plays (the
//! far-end reference) and [`AudioProcessing::process_capture`] with every
//! microphone frame before it is encoded, in the same task and at the same
//! 20 ms cadence: in each tick the microphone frame first, then the frame
//! played. The delay from a played frame to its echo in the microphone
//! (device buffers) is not known to the engine; an echo canceller estimates
//! it.

/// Voice processing between the devices and the codec; see the module
/// documentation. Pass one to [`crate::start_with_processing`].
pub trait AudioProcessing: Send + 'static {
    /// A microphone frame (20 ms, 48 kHz mono) before encoding: clean it in
    /// place (remove the echo of what was played, suppress noise, …).
    fn process_capture(&mut self, frame: &mut [i16]);

    /// A frame just handed to the sink: what the loudspeaker plays, the
    /// reference an echo canceller subtracts from the microphone.
    fn process_render(&mut self, frame: &[i16]);

    /// For [`crate::CallStats::echo`], about once a second: the share
    /// (0..=1) of microphone frames since the last call in which echo of
    /// the speaker was found; `None` (the default) if this processor does
    /// not tell.
    fn echo(&mut self) -> Option<f32> {
        None
    }
}

/// Passes audio through untouched (what [`crate::start`] uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProcessing;

impl AudioProcessing for NoProcessing {
    fn process_capture(&mut self, _frame: &mut [i16]) {}
    fn process_render(&mut self, _frame: &[i16]) {}
}
