//! The one error type of the crate.
//!
//! Every variant carries a message rather than a source error so that the
//! type is `Clone` and `PartialEq`: it travels inside [`crate::MediaEvent::Failed`],
//! which an application may fan out to its UI and its log.

/// What went wrong, from starting an engine to opening a WAV file or a device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// [`crate::start`] was called outside a tokio runtime.
    #[error("media engine must be started inside a tokio runtime")]
    NoRuntime,
    /// The [`crate::MediaConfig`] cannot be honoured (e.g. `relay_only`
    /// without a usable TURN server).
    #[error("media config: {0}")]
    Config(String),
    /// Binding or using a UDP socket failed.
    #[error("socket: {0}")]
    Socket(String),
    /// The peer's SDP could not be parsed or applied.
    #[error("remote sdp: {0}")]
    RemoteSdp(String),
    /// The offer/answer exchange went out of order (e.g. an answer arrived
    /// while no offer of ours was pending).
    #[error("negotiation: {0}")]
    Negotiation(String),
    /// A TURN relay could not be had or was lost, and the media needed it
    /// (`relay_only`): the server refused the credentials, did not answer,
    /// or could not be resolved.
    #[error("TURN relay: {0}")]
    Turn(String),
    /// No media connection was established (or re-established) in time.
    #[error("no media connection within {0} ms")]
    Timeout(u64),
    /// The WebRTC stack (str0m) reported an error.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// Creating or configuring the Opus encoder or decoder failed.
    #[error("opus: {0}")]
    Codec(String),
    /// Reading or writing an audio file failed.
    #[error("audio file: {0}")]
    AudioFile(String),
    /// No audio device (of that name) exists.
    #[error("no audio device: {0}")]
    NoDevice(String),
    /// The system refused access to the audio device.
    #[error("audio device permission denied: {0}")]
    PermissionDenied(String),
    /// Any other audio device failure (busy, unsupported format, …).
    #[error("audio device: {0}")]
    Device(String),
    /// The voice processing (echo cancellation, noise suppression) could
    /// not be set up.
    #[error("voice processing: {0}")]
    Processing(String),
    /// Creating, configuring or running the VP8 encoder or decoder failed.
    #[error("vp8: {0}")]
    VideoCodec(String),
    /// A video frame or video option is unusable (odd or zero size, a
    /// buffer of the wrong length).
    #[error("video: {0}")]
    Video(String),
    /// No camera (of that name) exists.
    #[error("no camera: {0}")]
    NoCamera(String),
    /// Opening or reading the camera failed (busy, permission, format).
    #[error("camera: {0}")]
    Camera(String),
    /// Capturing a screen or window failed or is not possible here.
    #[error("screen capture: {0}")]
    ScreenCapture(String),
}
