//! The hook for voice processing — echo cancellation, noise suppression,
//! automatic gain — between the devices and the codec.
//!
//! Nothing implements it yet beyond [`NoProcessing`]: the plan is to wrap
//! `webrtc-audio-processing` (AEC3) here. An echo canceller needs both
//! directions, so the engine calls [`AudioProcessing::process_render`] with
//! every frame it plays (the far-end reference) and
//! [`AudioProcessing::process_capture`] with every microphone frame before
//! it is encoded, in the same task and at the same 20 ms cadence.

/// Voice processing between the devices and the codec; see the module
/// documentation. Pass one to [`crate::start_with_processing`].
pub trait AudioProcessing: Send + 'static {
    /// A microphone frame (20 ms, 48 kHz mono) before encoding: clean it in
    /// place (remove the echo of what was played, suppress noise, …).
    fn process_capture(&mut self, frame: &mut [i16]);

    /// A frame just handed to the sink: what the loudspeaker plays, the
    /// reference an echo canceller subtracts from the microphone.
    fn process_render(&mut self, frame: &[i16]);
}

/// Passes audio through untouched (what [`crate::start`] uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProcessing;

impl AudioProcessing for NoProcessing {
    fn process_capture(&mut self, _frame: &mut [i16]) {}
    fn process_render(&mut self, _frame: &[i16]) {}
}
