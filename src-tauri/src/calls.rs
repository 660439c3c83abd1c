//! What the app shows and records about calls, as plain state driven by the
//! client library's events: the one call on screen, call history, presence,
//! and the side effects each event asks for (notifications, busy refusal,
//! opening a meeting room). No I/O here, so every rule is unit-tested.

use std::collections::BTreeMap;

use serde::Serialize;

use callinvite_client::{
    CallEndReason, ConnectionState, Event, FailureReason, InvitationId, LocalInvitation,
};

use crate::store::{BusyPolicy, DoNotDisturb, HistoryEntry, Settings};

/// Where the call on screen stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Outgoing: sent, no device of the callee has it yet.
    Calling,
    /// Outgoing: the callee's device is ringing.
    Ringing,
    /// Outgoing: the callee is offline; the server waits for them to log in.
    WaitingOffline,
    /// Incoming: ringing here.
    Incoming,
    InCall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outgoing,
    Incoming,
}

/// The call on screen.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveCall {
    pub invitation_id: Option<InvitationId>,
    pub direction: Direction,
    pub peer: String,
    pub content: String,
    pub phase: Phase,
    /// Unix ms when `phase` began (the UI shows elapsed time from it).
    pub phase_since_ms: u64,
    /// An accept is on its way (from the window or the notification).
    pub answering: bool,
    /// The caller-side handle, for cancel.
    #[serde(skip)]
    pub local: Option<LocalInvitation>,
    /// Unix ms when the call was accepted, for the history's duration.
    #[serde(skip)]
    pub accepted_ms: Option<u64>,
    /// The call's sound, once accepted.
    pub media: Option<MediaStatus>,
    /// Outgoing to an offline callee: when (Unix ms) the server gives up waiting.
    pub wait_until_ms: Option<u64>,
    /// Incoming while "do not disturb: silent" is on: no ringtone.
    pub silent: bool,
}

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
    fn connecting(settings: &Settings) -> Self {
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
    /// (`Ok`; nothing goes out for `Off`), or could not be opened: a message
    /// for the user. A screen that cannot be shared ends the sharing.
    VideoSource {
        wanted: VideoWanted,
        result: Result<(), String>,
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

/// How a call ended or changed, as the UI words it (`call-outcome` event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallOutcome {
    pub peer: String,
    pub direction: Direction,
    pub outcome: &'static str,
    pub detail: String,
}

/// Something the session must do because of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Tell the UI (and the history) how a call went.
    Outcome(CallOutcome),
    /// Raise the incoming-call notification.
    NotifyIncoming {
        invitation_id: InvitationId,
        caller: String,
        content: String,
    },
    /// Take the incoming-call notification down.
    Withdraw(InvitationId),
    /// Leave a "missed call" notification.
    NotifyMissed(String),
    /// Refuse as busy (we are in a call and the policy says so).
    RefuseBusy(InvitationId),
    /// Open the meeting room in the browser.
    OpenUrl(String),
    /// History changed: save it.
    SaveHistory,
    /// These missed calls are in the history now: the server may forget them.
    ClearMissed(Vec<InvitationId>),
    /// The call was accepted: start its sound.
    StartMedia {
        invitation_id: InvitationId,
        role: MediaRole,
    },
    /// The call is over (or the session): stop its sound.
    StopMedia,
}

/// Connection as the UI shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    SignedOut,
    Connecting,
    Connected,
    Disconnected,
}

/// Everything about calls that the app keeps between events.
#[derive(Debug)]
pub struct Calls {
    pub me: Option<String>,
    pub connection: Connection,
    pub call: Option<ActiveCall>,
    /// Other invitations ringing here while a call is on screen (busy policy "notify").
    pub waiting: BTreeMap<InvitationId, (String, String)>,
    pub presence: BTreeMap<String, bool>,
    pub history: Vec<HistoryEntry>,
    /// How long the server waits for an offline callee (its `offline_ms`), so
    /// the outgoing screen can say how long the wait lasts.
    pub offline_window_ms: u64,
    /// Invitations refused busy because do not disturb was on (for their wording).
    pub dnd_refused: std::collections::BTreeSet<InvitationId>,
}

/// Most history entries kept.
pub const HISTORY_LIMIT: usize = 200;

impl Calls {
    pub fn new(history: Vec<HistoryEntry>) -> Self {
        Calls {
            me: None,
            connection: Connection::SignedOut,
            call: None,
            waiting: BTreeMap::new(),
            presence: BTreeMap::new(),
            history,
            offline_window_ms: 30_000,
            dnd_refused: Default::default(),
        }
    }

    /// Starts an outgoing call on screen (before the server has it).
    pub fn start_outgoing(&mut self, local: LocalInvitation, now_ms: u64) {
        self.call = Some(ActiveCall {
            invitation_id: None,
            direction: Direction::Outgoing,
            peer: local.callee().to_string(),
            content: local.content().to_owned(),
            phase: Phase::Calling,
            phase_since_ms: now_ms,
            answering: false,
            local: Some(local),
            accepted_ms: None,
            media: None,
            wait_until_ms: None,
            silent: false,
        });
    }

    fn is_current(&self, id: &InvitationId) -> bool {
        self.call.as_ref().and_then(|c| c.invitation_id.as_ref()) == Some(id)
    }

    fn record(
        &mut self,
        id: Option<&InvitationId>,
        direction: Direction,
        peer: &str,
        at_ms: u64,
        outcome: &str,
        missed: bool,
    ) {
        let id = id
            .map(|i| i.0.clone())
            .unwrap_or_else(|| format!("local-{at_ms}"));
        self.history.retain(|h| h.id != id);
        self.history.insert(
            0,
            HistoryEntry {
                id,
                direction: if direction == Direction::Outgoing {
                    "outgoing".into()
                } else {
                    "incoming".into()
                },
                peer: peer.to_owned(),
                at_ms,
                outcome: outcome.to_owned(),
                duration_s: None,
                missed,
            },
        );
        self.history.truncate(HISTORY_LIMIT);
    }

    /// Ends the call on screen with `outcome`, recording it.
    fn finish(
        &mut self,
        outcome: &'static str,
        detail: String,
        missed: bool,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(call) = self.call.take() else { return };
        if call.media.is_some() {
            fx.push(Effect::StopMedia);
        }
        if let Some(accepted) = call.accepted_ms {
            // It was a call: the history entry made at accept gets its duration.
            let id = call.invitation_id.as_ref().map(|i| i.0.clone());
            if let Some(h) = self.history.iter_mut().find(|h| Some(&h.id) == id.as_ref()) {
                h.duration_s = Some(now_ms.saturating_sub(accepted) / 1000);
            }
        } else {
            let started = call.phase_since_ms.min(now_ms);
            self.record(
                call.invitation_id.as_ref(),
                call.direction,
                &call.peer,
                started,
                outcome,
                missed,
            );
        }
        fx.push(Effect::SaveHistory);
        fx.push(Effect::Outcome(CallOutcome {
            peer: call.peer,
            direction: call.direction,
            outcome,
            detail,
        }));
    }

    /// Applies one client event; returns what the session must do.
    pub fn on_event(&mut self, event: &Event, settings: &Settings, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::ConnectionStateChanged { state, .. } => {
                self.connection = match state {
                    ConnectionState::Connected => Connection::Connected,
                    ConnectionState::Connecting | ConnectionState::Reconnecting => {
                        Connection::Connecting
                    }
                    ConnectionState::Disconnected | ConnectionState::Aborted => {
                        Connection::Disconnected
                    }
                };
            }
            Event::MissedCalls { calls } => {
                // Calls that came while no device of ours was online: into the
                // history in time order, one notification each, then cleared.
                for c in calls {
                    if self.history.iter().any(|h| h.id == c.invitation_id.0) {
                        continue;
                    }
                    self.record(
                        Some(&c.invitation_id),
                        Direction::Incoming,
                        &c.caller,
                        c.at_ms,
                        "missed",
                        true,
                    );
                    fx.push(Effect::NotifyMissed(c.caller.clone()));
                }
                self.history.sort_by_key(|h| std::cmp::Reverse(h.at_ms));
                fx.push(Effect::SaveHistory);
                fx.push(Effect::ClearMissed(
                    calls.iter().map(|c| c.invitation_id.clone()).collect(),
                ));
            }
            Event::LocalInvitationSent {
                invitation,
                callee_online,
            } => {
                if let Some(call) = self
                    .call
                    .as_mut()
                    .filter(|c| c.direction == Direction::Outgoing && c.invitation_id.is_none())
                {
                    call.invitation_id = invitation.invitation_id.clone();
                    if !callee_online {
                        call.phase = Phase::WaitingOffline;
                        call.phase_since_ms = now_ms;
                        call.wait_until_ms = Some(now_ms + self.offline_window_ms);
                    }
                }
            }
            Event::LocalInvitationReceivedByPeer { invitation } => {
                if let Some(call) = self.current_mut(invitation.invitation_id.as_ref()) {
                    call.phase = Phase::Ringing;
                    call.phase_since_ms = now_ms;
                }
            }
            Event::LocalInvitationAccepted {
                invitation,
                response,
            } => {
                let id = invitation.invitation_id.clone();
                if let Some(call) = self.current_mut(id.as_ref()) {
                    call.phase = Phase::InCall;
                    call.phase_since_ms = now_ms;
                    call.accepted_ms = Some(now_ms);
                    call.media = Some(MediaStatus::connecting(settings));
                    let (peer, content) = (call.peer.clone(), call.content.clone());
                    if let Some(invitation_id) = id.clone() {
                        fx.push(Effect::StartMedia {
                            invitation_id,
                            role: MediaRole::Offerer,
                        });
                    }
                    self.record(
                        id.as_ref(),
                        Direction::Outgoing,
                        &peer,
                        now_ms,
                        "accepted",
                        false,
                    );
                    fx.push(Effect::SaveHistory);
                    fx.push(Effect::Outcome(CallOutcome {
                        peer,
                        direction: Direction::Outgoing,
                        outcome: "accepted",
                        detail: response.clone(),
                    }));
                    if let Some(url) = meeting_url(settings, &content) {
                        fx.push(Effect::OpenUrl(url));
                    }
                }
            }
            Event::LocalInvitationRefused {
                invitation,
                response,
                busy,
            } => {
                if self.current_outgoing(invitation.invitation_id.as_ref()) {
                    let outcome = if *busy { "busy" } else { "refused" };
                    self.finish(outcome, response.clone(), false, now_ms, &mut fx);
                }
            }
            Event::LocalInvitationCanceled { invitation } => {
                if self.current_outgoing(invitation.invitation_id.as_ref()) {
                    self.finish("canceled", String::new(), false, now_ms, &mut fx);
                }
            }
            Event::LocalInvitationFailure { invitation, reason } => {
                if self.current_outgoing(invitation.invitation_id.as_ref()) {
                    let outcome = match reason {
                        FailureReason::PeerOffline => "offline",
                        FailureReason::NoResponse | FailureReason::Expired => "no_answer",
                        FailureReason::NotLoggedIn | FailureReason::ServerShutdown => {
                            "connection_lost"
                        }
                        _ => "failed",
                    };
                    self.finish(outcome, String::new(), false, now_ms, &mut fx);
                }
            }
            Event::RemoteInvitationReceived { invitation } => {
                let id = invitation.invitation_id.clone();
                let (caller, content) = (invitation.caller.clone(), invitation.content.clone());
                if settings.do_not_disturb == DoNotDisturb::Busy {
                    // Do not disturb: answered busy at once, kept as a missed call.
                    self.waiting.insert(id.clone(), (caller, content));
                    self.dnd_refused.insert(id.clone());
                    fx.push(Effect::RefuseBusy(id));
                } else if self.call.is_none() {
                    self.call = Some(ActiveCall {
                        invitation_id: Some(id.clone()),
                        direction: Direction::Incoming,
                        peer: caller.clone(),
                        content: content.clone(),
                        phase: Phase::Incoming,
                        phase_since_ms: now_ms,
                        answering: false,
                        local: None,
                        accepted_ms: None,
                        media: None,
                        wait_until_ms: None,
                        silent: settings.do_not_disturb == DoNotDisturb::Silent,
                    });
                    fx.push(Effect::NotifyIncoming {
                        invitation_id: id,
                        caller,
                        content,
                    });
                } else if settings.busy_policy == BusyPolicy::AutoBusy {
                    self.waiting.insert(id.clone(), (caller, content));
                    fx.push(Effect::RefuseBusy(id));
                } else {
                    self.waiting
                        .insert(id.clone(), (caller.clone(), content.clone()));
                    fx.push(Effect::NotifyIncoming {
                        invitation_id: id,
                        caller,
                        content,
                    });
                }
            }
            Event::RemoteInvitationAccepted { invitation } => {
                let id = invitation.invitation_id.clone();
                fx.push(Effect::Withdraw(id.clone()));
                if let Some(call) = self.current_mut(Some(&id)) {
                    call.phase = Phase::InCall;
                    call.phase_since_ms = now_ms;
                    call.answering = false;
                    call.accepted_ms = Some(now_ms);
                    call.media = Some(MediaStatus::connecting(settings));
                    let (peer, content) = (call.peer.clone(), call.content.clone());
                    fx.push(Effect::StartMedia {
                        invitation_id: id.clone(),
                        role: MediaRole::Answerer,
                    });
                    self.record(
                        Some(&id),
                        Direction::Incoming,
                        &peer,
                        now_ms,
                        "accepted",
                        false,
                    );
                    fx.push(Effect::SaveHistory);
                    if let Some(url) = meeting_url(settings, &content) {
                        fx.push(Effect::OpenUrl(url));
                    }
                }
            }
            Event::RemoteInvitationRefused { invitation, busy } => {
                let id = invitation.invitation_id.clone();
                fx.push(Effect::Withdraw(id.clone()));
                let outcome = if *busy { "busy" } else { "refused" };
                if self.is_current(&id) {
                    self.finish(outcome, String::new(), false, now_ms, &mut fx);
                } else if let Some((caller, _)) = self.waiting.remove(&id) {
                    // Refused while we were in another call: the user never saw it ring.
                    let missed = *busy;
                    self.record(
                        Some(&id),
                        Direction::Incoming,
                        &caller,
                        now_ms,
                        if missed { "missed" } else { outcome },
                        missed,
                    );
                    fx.push(Effect::SaveHistory);
                    if missed {
                        let detail = if self.dnd_refused.remove(&id) {
                            "answered busy: do not disturb is on"
                        } else {
                            "answered busy while you were in a call"
                        };
                        fx.push(Effect::NotifyMissed(caller.clone()));
                        fx.push(Effect::Outcome(CallOutcome {
                            peer: caller,
                            direction: Direction::Incoming,
                            outcome: "missed",
                            detail: detail.into(),
                        }));
                    }
                }
            }
            Event::RemoteInvitationCanceled { invitation } => {
                self.incoming_ended(&invitation.invitation_id, "missed", true, now_ms, &mut fx);
            }
            Event::RemoteInvitationFailure { invitation, reason } => {
                let (outcome, missed) = match reason {
                    FailureReason::AnsweredElsewhere => ("answered_elsewhere", false),
                    FailureReason::DeclinedElsewhere => ("declined_elsewhere", false),
                    FailureReason::NotLoggedIn | FailureReason::ServerShutdown => {
                        ("connection_lost", false)
                    }
                    FailureReason::AcceptFailure => ("failed", false),
                    // Expired, or the caller went away before anyone answered.
                    _ => ("missed", true),
                };
                self.incoming_ended(&invitation.invitation_id, outcome, missed, now_ms, &mut fx);
            }
            Event::CallEnded {
                invitation_id,
                reason,
                by,
                ..
            } => {
                if self.is_current(invitation_id) {
                    let me = self.me.clone().unwrap_or_default();
                    let (outcome, detail) = match reason {
                        CallEndReason::Hangup if by.as_deref() == Some(me.as_str()) => {
                            ("hung_up", String::new())
                        }
                        CallEndReason::Hangup => ("peer_hung_up", String::new()),
                        CallEndReason::PeerConnectionLost => {
                            ("connection_lost", "their connection was lost".into())
                        }
                        CallEndReason::PeerLoggedOut => ("peer_hung_up", "they signed out".into()),
                        CallEndReason::NotLoggedIn => ("connection_lost", String::new()),
                        CallEndReason::ServerShutdown => {
                            ("connection_lost", "the server shut down".into())
                        }
                    };
                    self.finish(outcome, detail, false, now_ms, &mut fx);
                }
            }
            Event::PresenceChanged { user, online } => {
                self.presence.insert(user.clone(), *online);
            }
            // Media negotiation is the media engine's, not the screen's.
            Event::ProtocolError { .. } | Event::MediaSignal { .. } => {}
        }
        fx
    }

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
                    Err(message) => {
                        v.sending = false;
                        v.message = Some(message);
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

    fn current_mut(&mut self, id: Option<&InvitationId>) -> Option<&mut ActiveCall> {
        self.call
            .as_mut()
            .filter(|c| id.is_some() && c.invitation_id.as_ref() == id)
    }

    fn current_outgoing(&self, id: Option<&InvitationId>) -> bool {
        self.call.as_ref().is_some_and(|c| {
            c.direction == Direction::Outgoing && id.is_some() && c.invitation_id.as_ref() == id
        })
    }

    fn incoming_ended(
        &mut self,
        id: &InvitationId,
        outcome: &'static str,
        missed: bool,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        self.dnd_refused.remove(id);
        fx.push(Effect::Withdraw(id.clone()));
        let peer = if self.is_current(id) {
            let peer = self.call.as_ref().map(|c| c.peer.clone());
            self.finish(outcome, String::new(), missed, now_ms, fx);
            peer
        } else if let Some((caller, _)) = self.waiting.remove(id) {
            self.record(
                Some(id),
                Direction::Incoming,
                &caller,
                now_ms,
                outcome,
                missed,
            );
            fx.push(Effect::SaveHistory);
            fx.push(Effect::Outcome(CallOutcome {
                peer: caller.clone(),
                direction: Direction::Incoming,
                outcome,
                detail: String::new(),
            }));
            Some(caller)
        } else {
            None
        };
        if missed {
            if let Some(peer) = peer {
                fx.push(Effect::NotifyMissed(peer));
            }
        }
    }

    /// The session ended (signed out or connection gone for good).
    pub fn session_over(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        for id in std::mem::take(&mut self.waiting).into_keys() {
            fx.push(Effect::Withdraw(id));
        }
        if let Some(id) = self.call.as_ref().and_then(|c| c.invitation_id.clone()) {
            fx.push(Effect::Withdraw(id));
        }
        self.finish("connection_lost", String::new(), false, now_ms, &mut fx);
        fx
    }

    /// Up to `max` recent peers, newest first, for presence and the contact list.
    pub fn recent_peers(&self, max: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for h in &self.history {
            if !seen.contains(&h.peer) && Some(&h.peer) != self.me.as_ref() {
                seen.push(h.peer.clone());
                if seen.len() == max {
                    break;
                }
            }
        }
        seen
    }
}

/// The meeting room for an accepted call, when the setting is on and the
/// invitation carried a channel.
pub fn meeting_url(settings: &Settings, content: &str) -> Option<String> {
    let template = settings.meeting_url_template.trim();
    let channel = content.trim();
    if template.is_empty() || channel.is_empty() || !template.contains("{channel}") {
        return None;
    }
    let encoded: String = channel
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(template.replace("{channel}", &encoded))
}

#[cfg(test)]
mod tests;
