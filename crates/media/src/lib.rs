//! callinvite-media: the media engine of a 1:1 call, sound and picture —
//! standard WebRTC (ICE, DTLS-SRTP, RTP/RTCP, Opus, VP8), so the other end
//! can be another callinvite device, a browser or any standard peer such as
//! aiortc.
//!
//! Signaling is the caller's business: it feeds the peer's
//! [`MediaSignal`]s (offer, answer, candidates, bye — relayed by the
//! callinvite server) into [`MediaHandle::signal`] and sends every
//! [`MediaEvent::Signal`] to the peer. The caller's device offers
//! ([`Role::Offerer`]), the callee's device answers.
//!
//! ```no_run
//! # async fn example() -> Result<(), callinvite_media::MediaError> {
//! use callinvite_media::*;
//! let (handle, mut events) = start(
//!     Role::Offerer,
//!     MediaConfig::default(),
//!     Box::new(ToneSource::new(440.0, 0.3)),
//!     Box::new(WavSink::create("call.wav")?),
//! )?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         MediaEvent::Signal(s) => { /* send s to the peer through the server */ }
//!         MediaEvent::State(MediaState::Closed) => break,
//!         other => println!("{other:?}"),
//!     }
//! }
//! # drop(handle); Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - The offerer offers at once (one `sendrecv` audio m-line: Opus
//!   48000/2, `useinbandfec=1`; with [`start_with_video`] also a `sendrecv`
//!   VP8 video m-line with RTX, NACK, PLI/FIR and transport-cc), then
//!   trickles its candidates and
//!   `end_of_candidates` (the offer carries them too, for peers that do not
//!   trickle). The answerer answers the offer, then trickles the same way.
//!   `end_of_candidates` follows the last STUN answer and TURN allocation
//!   (or their timeouts, 2.5 s and 5 s).
//! - Media starts at the first `Connected`: every 20 ms one frame is read
//!   from the source, Opus-encoded and sent, and one frame is played from
//!   the jitter buffer into the sink — from then on exactly one per tick,
//!   silence when nothing arrives, and on until the handle is closed (so a
//!   recording is as long as the call).
//! - Nothing from the peer for 3 s (or ICE losing the path) reports
//!   `Reconnecting`; after 2 more seconds the offerer offers an ICE restart,
//!   and an offer received while connected is answered as one. Not back
//!   within `connect_timeout`: `Failed`.
//! - Video (see [`video`]): from the first `Connected` each picture the
//!   source gives is scaled to what the bandwidth estimate allows
//!   (640×480 from 450 kbit/s, 320×240 from 150, else 160×120), VP8-encoded
//!   on the send thread and packetized by str0m; received frames are
//!   decoded on the receive thread and given to the sink. Lost packets are
//!   retransmitted (NACK/RTX); a picture that still cannot be decoded
//!   drops frames until a keyframe, which is asked for (PLI, repeated every
//!   500 ms while waiting). [`MediaEvent::RemoteVideo`] says when the
//!   peer's pictures start and stop (none for [`REMOTE_VIDEO_GONE`]).
//!   [`MediaHandle::set_video_source`] switches the camera off, on, or to
//!   another source (a screen). [`VideoIo::encoded`] taps the compressed
//!   frames both ways, each stream starting with a keyframe and going on
//!   only with frames our decoder accepted (a window can decode them
//!   itself; returning `true` asks for a keyframe).
//! - Anything wrong from the peer — unparsable or unacceptable SDP, an
//!   answer with no offer pending — ends the media with
//!   [`MediaEvent::Failed`], a `Bye` for the peer and `State(Closed)`; a
//!   candidate that does not parse (e.g. a browser's mDNS `*.local` host
//!   candidate, which is not resolved) is logged and skipped. Peer input
//!   never panics the engine.
//! - A `Bye` from the peer, or its DTLS close, ends our media too
//!   (`State(Closed)`). [`MediaHandle::close`] sends a `Bye`, RTCP BYE and
//!   DTLS close_notify.
//!
//! # Layout
//!
//! One module per concept:
//!
//! - `engine`: the one tokio task per call — owns the str0m `Rtc`, the UDP
//!   sockets and the audio path; a single `select!` loop over commands,
//!   datagrams, a 20 ms media clock and str0m's timeouts (`engine/mod.rs`),
//!   its parts one file each: `spawn` (configuration, sockets, the `Rtc`),
//!   `negotiation` (offer/answer, ICE restarts, trickling), `gathering`
//!   (STUN and TURN servers, relays), `network` (datagrams in, transmits
//!   out), `events` (str0m's events routed), `audio` (the audio path),
//!   `stats`, and `state` (the reported state and the end of the media).
//! - `signals`: [`MediaSignal`] ⇄ SDP and ICE candidates (peer input is
//!   parsed here, never trusted, never unwrapped).
//! - `net`: local addresses, one UDP socket per host candidate, reading
//!   them all from one task. `stun`: server-reflexive candidates from
//!   STUN servers. `turn`: relay candidates from TURN servers (UDP,
//!   long-term credentials), and carrying their traffic.
//! - `codec`: Opus encoder (VoIP, 32 kbit/s, in-band FEC for 10 % loss) and
//!   decoder (FEC, concealment).
//! - [`jitter`]: the jitter buffer (reorder, duplicates, late packets,
//!   FEC/PLC requests, adaptive delay), pure and unit-tested without
//!   sockets or sleeping; `playout` turns it into one 20 ms frame per tick.
//! - [`audio`]: [`AudioSource`]/[`AudioSink`] and the device-less ones
//!   (tone, silence, WAV in and out, memory). `devices` (cargo feature
//!   `devices`): microphone and speaker through cpal.
//! - [`video`]: [`VideoFrame`], [`VideoSource`]/[`VideoSink`], the test
//!   pattern, VP8 (`video::vp8`: libvpx's encoder and decoder, and the
//!   frame header), the send and receive threads and the engine's video
//!   path; `video::camera` (cargo feature `camera`: the list, the mode
//!   chosen, the conversion to I420, the source and its capture thread) and
//!   `video::screen` (feature `screen`: the X11 backend, the pixel work all
//!   backends share, the pacing) are the real sources.
//! - `stats`: [`CallStats`] (with [`VideoStats`]). `error`: [`MediaError`].
//! - `processing`: [`AudioProcessing`], the **hook for echo cancellation,
//!   noise suppression and gain control**, fed with every microphone frame
//!   before it is encoded and every played frame as the echo reference;
//!   [`NoProcessing`] passes audio through. `voice` (cargo feature
//!   `voice-processing`): `VoiceProcessing`, WebRTC's audio processing
//!   module (echo canceller, noise suppressor, high-pass filter, automatic
//!   gain) from the system's `webrtc-audio-processing` library; pass it to
//!   [`start_with_processing`].
//!
//! # Why str0m
//!
//! - **Sans-I/O**, like our protocol crate: str0m is a state machine fed
//!   with datagrams and time, with no threads or runtime of its own. The
//!   engine owns the sockets and the clock, so it fits one tokio task, and
//!   str0m's behaviour is deterministic under test.
//! - **Lean**: pure Rust but for its crypto backend; no libwebrtc, no
//!   second async runtime (webrtc-rs brings its own stack of crates and
//!   tasks).
//! - **A full ICE agent** (RFC 8445, trickle, ICE restarts), DTLS-SRTP,
//!   RTCP and Opus packetization — everything a standard peer expects. It
//!   does no gathering: host candidates come from the interfaces
//!   (`net`), server-reflexive ones from our small STUN client (`stun`),
//!   relay ones from TURN (`turn`), outside str0m too: each `turn:` server
//!   gets an allocation from one of our host sockets; its relayed address
//!   is added to str0m as a `relay` candidate and trickled like the others;
//!   str0m's transmits from that address are wrapped for the TURN server
//!   (ChannelData once a channel is bound to the peer, Send indications
//!   before), and what the server relays back (ChannelData, Data
//!   indications) is unwrapped and handed to str0m as received on the
//!   relayed address from the peer. The allocation, permissions and
//!   channels are refreshed before they expire and the allocation is
//!   given back (Refresh, lifetime 0) when the media ends. The TURN
//!   protocol is the sans-I/O crate `turn-client-proto`, driven from the
//!   engine's loop like str0m. TURN over UDP only: `turns:` (TLS) and
//!   `?transport=tcp` servers are skipped with a logged reason.
//!
//! str0m runs in frame mode: the engine writes whole Opus frames and gets
//! whole frames back, str0m packetizes and depacketizes; its own reordering
//! is switched off so that our jitter buffer sees packets as they arrive.
//! The crypto backend is AWS-LC (str0m's default; it builds its C code with
//! the system C compiler, no cmake): str0m 0.25's `openssl` and
//! `rust-crypto` features need `str0m-openssl`/`str0m-rust-crypto` 0.7,
//! which are not on crates.io (0.6 is the newest of each), so neither
//! resolves.
//!
//! Tested against aiortc (Python) in both roles:
//! `tests/interop_aiortc.rs` (ignored unless a Python with aiortc is given
//! in `AIORTC_PYTHON`).
//!
//! Video and audio share the one `Rtc` (BUNDLE): media data is routed by
//! mid. The video threads talk to the engine task through its command
//! channel, so str0m is still touched by the task alone.

mod codec;
#[cfg(feature = "devices")]
pub mod devices;
mod engine;
mod error;
mod net;
mod playout;
mod processing;
mod signals;
mod stats;
mod stun;
mod turn;
#[cfg(feature = "voice-processing")]
mod voice;

pub mod audio;
pub mod jitter;
pub mod video;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use audio::{
    AudioSink, AudioSource, NullSink, SharedSink, SilenceSource, ToneSource, WavSink, WavSource,
    FRAME_SAMPLES, SAMPLE_RATE,
};
pub use callinvite_protocol::{IceServer, MediaSignal};
pub use error::MediaError;
pub use processing::{AudioProcessing, NoProcessing};
pub use stats::{CallStats, VideoStats};
pub use video::{EncodedVideoSink, NullVideoSink, TestPattern, VideoFrame, VideoSink, VideoSource};
#[cfg(feature = "voice-processing")]
pub use voice::{VoiceConfig, VoiceProcessing, VoiceStats};

use engine::Command;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

/// Which side of the offer/answer exchange this device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Makes the first offer (the caller's device).
    Offerer,
    /// Waits for the offer and answers it (the callee's device).
    Answerer,
}

/// How an engine connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// STUN and TURN servers, as the server hands them out in `login_ok`.
    /// STUN servers yield server-reflexive candidates (for peers behind
    /// NATs); TURN servers (`turn:host:port`, `?transport=udp`, with
    /// `username` and `credential`) yield relay candidates, for peers that
    /// cannot reach each other directly. `turns:` and TCP TURN are logged
    /// and skipped.
    pub ice_servers: Vec<IceServer>,
    /// Use relay (TURN) candidates only, so the peer never learns our
    /// addresses (privacy, tests): no host or server-reflexive candidates
    /// are gathered or announced. Without a usable TURN server [`start`]
    /// refuses it with [`MediaError::Config`]; when no relay can be
    /// allocated (credentials refused, no answer within 5 s, the name does
    /// not resolve) the media ends with [`MediaEvent::Failed`]
    /// ([`MediaError::Turn`]).
    pub relay_only: bool,
    /// The one local address to use. `None`: every non-loopback interface
    /// address (127.0.0.1 if there is none). Tests use 127.0.0.1.
    pub bind_ip: Option<IpAddr>,
    /// No connection within this long (from [`start`], or from a drop of
    /// an established connection) ends the media with
    /// [`MediaEvent::Failed`] ([`MediaError::Timeout`]).
    pub connect_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            ice_servers: Vec::new(),
            relay_only: false,
            bind_ip: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The media connection's state, as reported by [`MediaEvent::State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaState {
    /// Negotiating and checking connectivity (the first state).
    Connecting,
    /// Media flows.
    Connected,
    /// The connection dropped (ICE disconnected, or an ICE restart is under
    /// way); media resumes when it is back.
    Reconnecting,
    /// The media ended (closed by either side, or failed). Always the last
    /// event; the event channel closes after it.
    Closed,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Send this to the peer (through the server), in order.
    Signal(MediaSignal),
    /// The connection changed state.
    State(MediaState),
    /// The media could not be set up or broke: no connection in time, bad
    /// remote SDP, an answer with no offer pending, a socket error. A
    /// `Bye` for the peer and `State(Closed)` follow.
    Failed(MediaError),
    /// About once a second while the media runs.
    Stats(CallStats),
    /// The peer's video started (`true`: a picture was decoded) or stopped
    /// (`false`: none for [`REMOTE_VIDEO_GONE`] — their camera is off, or
    /// the video is stuck). Only in calls with video.
    RemoteVideo(bool),
}

/// No picture from the peer for this long reports
/// [`MediaEvent::RemoteVideo`]`(false)`.
pub const REMOTE_VIDEO_GONE: Duration = Duration::from_millis(1500);

/// The video side of a call (see [`start_with_video`]).
pub struct VideoIo {
    /// What we send (a camera, a screen, the test pattern); `None` starts
    /// with the camera off. Changed later with
    /// [`MediaHandle::set_video_source`].
    pub source: Option<Box<dyn VideoSource>>,
    /// Our own pictures as they are sent, full size (a local preview).
    pub preview: Option<Box<dyn VideoSink>>,
    /// Where the peer's decoded pictures go.
    pub sink: Box<dyn VideoSink>,
    /// The compressed frames, both ways (optional): the peer's as our
    /// decoder took them, ours as encoded — for a window that decodes VP8
    /// itself (see [`EncodedVideoSink`]). The decoder and `preview` keep
    /// running beside it.
    pub encoded: Option<Box<dyn EncodedVideoSink>>,
}

impl std::fmt::Debug for VideoIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoIo")
            .field("source", &self.source.is_some())
            .field("preview", &self.preview.is_some())
            .field("encoded", &self.encoded.is_some())
            .finish_non_exhaustive()
    }
}

/// Controls a running engine. Clones control the same engine; when the
/// last one is dropped, the engine stops as if [`MediaHandle::close`] had
/// been called.
#[derive(Clone, Debug)]
pub struct MediaHandle {
    /// Shared so that the engine stops when the last clone goes.
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    /// Commands to the engine task.
    commands: UnboundedSender<Command>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

impl MediaHandle {
    /// Hands the engine a signal from the peer: offer, answer, candidate,
    /// end of candidates, bye. Bad input is reported as an event (or, for a
    /// candidate, logged and skipped), never a panic.
    pub fn signal(&self, s: MediaSignal) {
        let _ = self.inner.commands.send(Command::Signal(s));
    }

    /// Sends silence instead of the source while `muted` (RTP keeps flowing,
    /// so the peer's jitter buffer and NAT bindings stay warm).
    pub fn set_muted(&self, muted: bool) {
        let _ = self.inner.commands.send(Command::SetMuted(muted));
    }

    /// Sends pictures from `source` from now on (a camera was switched on
    /// or changed, screen sharing started), or none (`None`: camera off —
    /// the previous source is dropped, which releases a camera). The first
    /// picture of a new source is a keyframe. Only in calls with video.
    pub fn set_video_source(&self, source: Option<Box<dyn VideoSource>>) {
        let _ = self.inner.commands.send(Command::SetVideoSource(source));
    }

    /// Stops the engine: tells the peer (`Bye`, RTCP BYE, DTLS close),
    /// reports `State(Closed)` if the media was still up, and sends nothing
    /// more. The sink is dropped (a [`WavSink`] is finalized).
    pub fn close(&self) {
        let _ = self.inner.commands.send(Command::Close);
    }
}

/// Starts an engine for one call with the given audio source and sink, and
/// no voice processing. Must be called inside a tokio runtime; spawns one
/// task. Sockets are bound before this returns, so configuration and socket
/// errors come back here; everything later comes as a [`MediaEvent`].
pub fn start(
    role: Role,
    config: MediaConfig,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
) -> Result<(MediaHandle, UnboundedReceiver<MediaEvent>), MediaError> {
    start_with_processing(role, config, source, sink, Box::new(NoProcessing))
}

/// [`start`] with a voice processing stage (echo cancellation, noise
/// suppression, …) between the devices and the codec.
pub fn start_with_processing(
    role: Role,
    config: MediaConfig,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    processor: Box<dyn AudioProcessing>,
) -> Result<(MediaHandle, UnboundedReceiver<MediaEvent>), MediaError> {
    start_with_video(role, config, source, sink, processor, None)
}

/// [`start_with_processing`] with video: a VP8 `video` m-line beside the
/// audio one, bandwidth estimation (transport-wide congestion control)
/// that sizes the picture and the bitrate, and keyframes on request
/// (PLI/FIR) both ways. The offerer offers video; an answerer given video
/// accepts the peer's. Without `video`, a peer's video is not received.
pub fn start_with_video(
    role: Role,
    config: MediaConfig,
    source: Box<dyn AudioSource>,
    sink: Box<dyn AudioSink>,
    processor: Box<dyn AudioProcessing>,
    video: Option<VideoIo>,
) -> Result<(MediaHandle, UnboundedReceiver<MediaEvent>), MediaError> {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    engine::spawn(
        role,
        config,
        engine::Io {
            source,
            sink,
            processor,
            video,
        },
        commands_tx.clone(),
        commands_rx,
        events_tx,
    )?;
    let handle = MediaHandle {
        inner: Arc::new(HandleInner {
            commands: commands_tx,
        }),
    };
    Ok((handle, events_rx))
}
