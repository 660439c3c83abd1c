//! A call's sound and picture: the media engine of [`callinvite_media`] for one
//! established call, signaled through the server.
//!
//! [`CallMedia::start`] starts the engine for a call this device is in (the
//! caller's device offers, the callee's answers), sends each signal the
//! engine produces to the other device with [`Client::send_media_signal`],
//! in order, and hands the engine the peer's signals that the app routes to
//! it with [`CallMedia::on_event`]. Everything else the engine reports
//! (state, failures, statistics) comes on the returned channel.
//!
//! ```no_run
//! # async fn demo(client: callinvite_client::Client, mut events: callinvite_client::EventStream,
//! #               id: callinvite_client::InvitationId) {
//! use callinvite_client::media::{CallMedia, Role, ToneSource, NullSink};
//! let config = CallMedia::config(&client).await;
//! let (media, mut media_events) = CallMedia::start(&client, &id, Role::Offerer, config,
//!     Box::new(ToneSource::new(440.0, 0.3)), Box::new(NullSink)).expect("media");
//! loop {
//!     tokio::select! {
//!         Some(event) = events.next() => { media.on_event(&event); /* … */ }
//!         Some(m) = media_events.recv() => println!("{m:?}"),
//!     }
//! }
//! # }
//! ```
//!
//! The media stops when the [`CallMedia`] is dropped or [`CallMedia::close`]d:
//! do that when the call ends (`call_ended`), at sign-out and when the
//! session is lost.

use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Video frames, sources (the test pattern; cameras and screens with the
/// `camera` and `screen` features) and the VP8 path.
pub use callinvite_media::video;
pub use callinvite_media::video::{bars_error, VideoReceiveStats, VideoSendStats};
pub use callinvite_media::{
    AudioProcessing, AudioSink, AudioSource, CallStats, MediaConfig, MediaError, MediaEvent,
    MediaHandle, MediaState, NoProcessing, NullSink, NullVideoSink, Role, SharedSink,
    SilenceSource, TestPattern, ToneSource, VideoFrame, VideoIo, VideoSink, VideoSource,
    VideoStats, WavSink, WavSource,
};
#[cfg(feature = "voice-processing")]
pub use callinvite_media::{VoiceConfig, VoiceProcessing, VoiceStats};

use crate::{Client, Event, InvitationId};

/// The media of one established call.
pub struct CallMedia {
    /// The call it belongs to: only that call's signals are handed on.
    id: InvitationId,
    /// The engine.
    handle: MediaHandle,
}

impl CallMedia {
    /// A media configuration with fresh STUN/TURN servers from the server
    /// (TURN credentials expire), or the login's if the server cannot be asked.
    pub async fn config(client: &Client) -> MediaConfig {
        let ice_servers = match client.ice_servers().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot renew the STUN/TURN servers; using the login's");
                client.session().ice_servers.clone()
            }
        };
        MediaConfig {
            ice_servers,
            ..MediaConfig::default()
        }
    }

    /// Starts the media of call `id`: `Role::Offerer` on the caller's device
    /// (after `local_invitation_accepted`), `Role::Answerer` on the callee's
    /// (after its accept succeeded). Returns the engine's events except its
    /// signals, which go to the peer through `client`.
    pub fn start(
        client: &Client,
        id: &InvitationId,
        role: Role,
        config: MediaConfig,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
    ) -> Result<(CallMedia, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        Self::start_with_processing(
            client,
            id,
            role,
            config,
            source,
            sink,
            Box::new(NoProcessing),
        )
    }

    /// [`CallMedia::start`] with voice processing between the microphone
    /// and the codec, e.g. echo cancellation and noise suppression with
    /// `VoiceProcessing` (cargo feature `voice-processing`).
    pub fn start_with_processing(
        client: &Client,
        id: &InvitationId,
        role: Role,
        config: MediaConfig,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        processor: Box<dyn AudioProcessing>,
    ) -> Result<(CallMedia, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        Self::start_with_video(client, id, role, config, source, sink, processor, None)
    }

    /// [`CallMedia::start_with_processing`] with video (`video`: the
    /// camera or another source, a preview sink and where the peer's
    /// pictures go; see [`callinvite_media::start_with_video`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_video(
        client: &Client,
        id: &InvitationId,
        role: Role,
        config: MediaConfig,
        source: Box<dyn AudioSource>,
        sink: Box<dyn AudioSink>,
        processor: Box<dyn AudioProcessing>,
        video: Option<VideoIo>,
    ) -> Result<(CallMedia, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        let (handle, mut engine_events) =
            callinvite_media::start_with_video(role, config, source, sink, processor, video)?;
        let (events, rx) = mpsc::unbounded_channel();
        let client = client.clone();
        let call = id.clone();
        tokio::spawn(async move {
            while let Some(event) = engine_events.recv().await {
                match event {
                    MediaEvent::Signal(signal) => {
                        let kind = signal.kind();
                        // One at a time, so the peer gets them in order.
                        if let Err(e) = client.send_media_signal(&call, signal).await {
                            // The call ended meanwhile, or the session is gone: the
                            // app stops the media when it hears of that.
                            debug!(invitation = %call, kind, error = %e, "media signal not relayed");
                        }
                    }
                    other => {
                        if events.send(other).is_err() {
                            // Nobody listens: keep relaying signals all the same.
                        }
                    }
                }
            }
        });
        Ok((
            CallMedia {
                id: id.clone(),
                handle,
            },
            rx,
        ))
    }

    /// Hands the engine the peer's signal if `event` is one for this call;
    /// says whether it was.
    pub fn on_event(&self, event: &Event) -> bool {
        match event {
            Event::MediaSignal {
                invitation_id,
                signal,
                ..
            } if *invitation_id == self.id => {
                self.handle.signal(signal.clone());
                true
            }
            _ => false,
        }
    }

    /// The call this media belongs to.
    pub fn invitation_id(&self) -> &InvitationId {
        &self.id
    }

    /// Sends silence instead of the microphone while `muted`.
    pub fn set_muted(&self, muted: bool) {
        self.handle.set_muted(muted);
    }

    /// Sends pictures from `source` (a camera switched on or changed,
    /// screen sharing), or none (`None`: camera off). Calls with video only.
    pub fn set_video_source(&self, source: Option<Box<dyn VideoSource>>) {
        self.handle.set_video_source(source);
    }

    /// Stops the media (also done on drop).
    pub fn close(&self) {
        self.handle.close();
    }
}
