//! The call's sound and pictures as the in-call screen shows them
//! ([`MediaStatus`], [`VideoStatus`]): driven by what the media engine
//! reports ([`MediaUpdate`], [`Calls::on_media`]) and by the user's buttons
//! (mute, camera, switch camera, share the screen), and which picture
//! source the call should have open ([`VideoStatus::wanted`]; the `media`
//! module opens it).

use serde::Serialize;

use callinvite_client::InvitationId;

use super::Calls;
use crate::media::VideoSourceError;
use crate::store::Settings;

/// Which side of the media negotiation this device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaRole {
    /// The caller's device: offers.
    Offerer,
    /// The callee's device: answers.
    Answerer,
}

/// Where the call's sound stands, as the in-call screen shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaPhase {
    /// "Connecting audio…": negotiating and checking the path.
    Connecting,
    /// Sound flows.
    Connected,
    /// "Reconnecting…": the path broke; the engine is getting it back.
    Reconnecting,
    /// No sound: `message` says why (no microphone, no path in time, …).
    Failed,
}

/// The call's sound: state, mute, levels and quality.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MediaStatus {
    pub phase: MediaPhase,
    /// Why there is no sound, in words for the user (with `Failed`).
    pub message: Option<String>,
    pub muted: bool,
    /// Round-trip time to the peer, when measured.
    pub rtt_ms: Option<f64>,
    /// Fraction of the peer's packets lost in the last second.
    pub loss: f32,
    pub jitter_ms: f32,
    /// Microphone and speaker levels, 0..1 (RMS of the last second).
    pub mic_level: f32,
    pub speaker_level: f32,
    /// "good", "fair" or "poor", from rtt, loss and jitter.
    pub quality: &'static str,
    /// The sound goes through the TURN relay (no direct path was found).
    pub relayed: bool,
    /// The call's pictures.
    pub video: VideoStatus,
}

impl MediaStatus {
    pub(super) fn connecting(settings: &Settings) -> Self {
        MediaStatus {
            phase: MediaPhase::Connecting,
            message: None,
            muted: settings.start_muted,
            rtt_ms: None,
            loss: 0.0,
            jitter_ms: 0.0,
            mic_level: 0.0,
            speaker_level: 0.0,
            quality: "good",
            relayed: false,
            video: VideoStatus::new(settings.start_camera_on),
        }
    }
}

/// What the user is told when there is no camera to send.
pub const NO_CAMERA: &str = "No camera: they cannot see you.";

/// The call's pictures, as the in-call screen shows them: ours (camera on or
/// off, which camera, the screen shared instead) and theirs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VideoStatus {
    /// The user wants their camera on ("Start calls with my camera on", the
    /// camera button, V). Off, nothing is captured (a camera's light goes off).
    pub camera_on: bool,
    /// The screen is sent instead of the camera.
    pub sharing_screen: bool,
    /// Our pictures go out: what [`VideoStatus::wanted`] asks for is open.
    pub sending: bool,
    /// The cameras there are, by name ("switch camera" with more than one);
    /// `None` until they have been listed.
    pub cameras: Option<Vec<String>>,
    /// Which of `cameras` is used.
    pub camera: usize,
    /// Screen sharing works here.
    pub can_share_screen: bool,
    /// The peer's pictures arrive.
    pub remote: bool,
    /// Why no picture goes out although one should (no camera, it failed to
    /// open, screen sharing failed), for the user.
    pub message: Option<String>,
    /// The peer's pictures: size and rate (from the statistics).
    pub received: Option<VideoFlow>,
    /// Our pictures as sent: size (after the bandwidth's scaling) and rate.
    pub sent: Option<VideoFlow>,
}

/// Size and rate of a picture stream.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct VideoFlow {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
}

/// Which picture source a call should have open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoWanted {
    /// None: the camera is off (or there is none).
    Off,
    /// Camera number `n` of the list.
    Camera(usize),
    /// The screen.
    Screen,
}

impl VideoStatus {
    fn new(camera_on: bool) -> Self {
        VideoStatus {
            camera_on,
            sharing_screen: false,
            sending: false,
            cameras: None,
            camera: 0,
            can_share_screen: false,
            remote: false,
            message: None,
            received: None,
            sent: None,
        }
    }

    /// The source to have open now: the screen while sharing, else the
    /// chosen camera while the camera is on and there is one, else none.
    pub fn wanted(&self) -> VideoWanted {
        let cameras = self.cameras.as_ref().map_or(0, Vec::len);
        if self.sharing_screen {
            VideoWanted::Screen
        } else if self.camera_on && self.camera < cameras {
            VideoWanted::Camera(self.camera)
        } else {
            VideoWanted::Off
        }
    }
}

/// What the media engine reported about the call's sound.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaUpdate {
    Connecting,
    Connected,
    Reconnecting,
    /// It cannot work: a message for the user.
    Failed(String),
    /// It works, but only partly (no microphone, no speaker): a message for the user.
    Warning(String),
    Stats {
        rtt_ms: Option<f64>,
        loss: f32,
        jitter_ms: f32,
        mic_level: f32,
        speaker_level: f32,
        relayed: bool,
        /// The pictures' figures, in a call with video: received, sent.
        video: Option<(Option<VideoFlow>, Option<VideoFlow>)>,
    },
    /// The cameras there are (by name), the one to start with (Settings'
    /// choice), and whether the screen can be shared.
    VideoDevices {
        cameras: Vec<String>,
        selected: usize,
        can_share_screen: bool,
    },
    /// The source [`VideoStatus::wanted`] asked for is open and sending
    /// (`Ok`; nothing goes out for `Off`), or could not be opened (its
    /// message is shown). A screen that cannot be shared ends the sharing.
    VideoSource {
        wanted: VideoWanted,
        result: Result<(), VideoSourceError>,
    },
    /// The peer's pictures started (`true`) or stopped.
    RemoteVideo(bool),
}

/// How a call sounds, from the figures that matter to a listener.
pub fn quality(rtt_ms: Option<f64>, loss: f32, jitter_ms: f32) -> &'static str {
    let rtt = rtt_ms.unwrap_or(0.0);
    if loss > 0.10 || rtt > 500.0 || jitter_ms > 60.0 {
        "poor"
    } else if loss > 0.02 || rtt > 250.0 || jitter_ms > 30.0 {
        "fair"
    } else {
        "good"
    }
}

impl Calls {
    /// Applies what the media engine of call `id` reported; says whether
    /// the screen changed (statistics of a call no longer shown do not).
    pub fn on_media(&mut self, id: &InvitationId, update: MediaUpdate) -> bool {
        let Some(media) = self.current_mut(Some(id)).and_then(|c| c.media.as_mut()) else {
            return false;
        };
        match update {
            MediaUpdate::Connecting => media.phase = MediaPhase::Connecting,
            MediaUpdate::Connected => media.phase = MediaPhase::Connected,
            MediaUpdate::Reconnecting => media.phase = MediaPhase::Reconnecting,
            MediaUpdate::Warning(message) => media.message = Some(message),
            MediaUpdate::Failed(message) => {
                media.phase = MediaPhase::Failed;
                media.message = Some(message);
                media.mic_level = 0.0;
                media.speaker_level = 0.0;
                media.video.remote = false;
                media.video.sending = false;
                media.video.received = None;
                media.video.sent = None;
            }
            MediaUpdate::Stats {
                rtt_ms,
                loss,
                jitter_ms,
                mic_level,
                speaker_level,
                relayed,
                video,
            } => {
                if media.phase == MediaPhase::Failed {
                    return false;
                }
                media.rtt_ms = rtt_ms;
                media.loss = loss;
                media.jitter_ms = jitter_ms;
                media.mic_level = mic_level;
                media.speaker_level = speaker_level;
                media.relayed = relayed;
                media.quality = quality(rtt_ms, loss, jitter_ms);
                if let Some((received, sent)) = video {
                    media.video.received = received.filter(|_| media.video.remote);
                    media.video.sent = sent.filter(|_| media.video.sending);
                }
            }
            MediaUpdate::VideoDevices {
                cameras,
                selected,
                can_share_screen,
            } => {
                let v = &mut media.video;
                v.camera = if selected < cameras.len() {
                    selected
                } else {
                    0
                };
                v.message = cameras.is_empty().then(|| NO_CAMERA.to_owned());
                v.cameras = Some(cameras);
                v.can_share_screen = can_share_screen;
            }
            MediaUpdate::VideoSource { wanted, result } => {
                let v = &mut media.video;
                if wanted != v.wanted() {
                    // Overtaken: the user changed it again meanwhile; the newer one follows.
                    return false;
                }
                match result {
                    Ok(()) => {
                        v.sending = wanted != VideoWanted::Off;
                        let no_camera = v.cameras.as_ref().is_some_and(Vec::is_empty);
                        v.message = no_camera.then(|| NO_CAMERA.to_owned());
                    }
                    Err(e) => {
                        v.sending = false;
                        v.message = Some(e.to_string());
                        if wanted == VideoWanted::Screen {
                            v.sharing_screen = false;
                        }
                    }
                }
                if !v.sending {
                    v.sent = None;
                }
            }
            MediaUpdate::RemoteVideo(on) => {
                media.video.remote = on;
                if !on {
                    media.video.received = None;
                }
            }
        }
        true
    }

    /// The call's picture status, if the call on screen has media.
    fn video_mut(&mut self) -> Option<&mut VideoStatus> {
        self.call
            .as_mut()
            .and_then(|c| c.media.as_mut())
            .map(|m| &mut m.video)
    }

    /// Turns the camera on or off; says whether there is a call with media
    /// (then the source to open is [`Calls::video_wanted`]).
    pub fn set_camera(&mut self, on: bool) -> bool {
        match self.video_mut() {
            Some(v) => {
                v.camera_on = on;
                if !on && v.message.as_deref() != Some(NO_CAMERA) {
                    // A camera that failed to open: turning it off clears the complaint.
                    v.message = None;
                }
                true
            }
            None => false,
        }
    }

    /// Moves to the next camera of the list; says whether there was another.
    pub fn switch_camera(&mut self) -> bool {
        match self.video_mut() {
            Some(v) => {
                let n = v.cameras.as_ref().map_or(0, Vec::len);
                if n < 2 {
                    return false;
                }
                v.camera = (v.camera + 1) % n;
                true
            }
            None => false,
        }
    }

    /// Starts or stops sending the screen instead of the camera; says whether
    /// it could (screen sharing works here, there is a call with media).
    pub fn set_sharing_screen(&mut self, on: bool) -> bool {
        match self.video_mut() {
            Some(v) if !on || v.can_share_screen => {
                v.sharing_screen = on;
                true
            }
            _ => false,
        }
    }

    /// The picture source the call on screen should have open, if it has media.
    pub fn video_wanted(&self, id: &InvitationId) -> Option<VideoWanted> {
        self.call
            .as_ref()
            .filter(|c| c.invitation_id.as_ref() == Some(id))
            .and_then(|c| c.media.as_ref())
            .map(|m| m.video.wanted())
    }

    /// Mutes or unmutes the call's microphone; says whether there is a call with sound.
    pub fn set_muted(&mut self, muted: bool) -> bool {
        match self.call.as_mut().and_then(|c| c.media.as_mut()) {
            Some(m) => {
                m.muted = muted;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
