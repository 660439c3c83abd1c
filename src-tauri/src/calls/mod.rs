//! What the app shows and records about calls, as plain state driven by the
//! client library's events: the one call on screen, call history, presence,
//! and the side effects each event asks for (notifications, busy refusal,
//! opening a meeting room). No I/O here, so every rule is unit-tested.
//!
//! Layout: this file holds the state ([`Calls`]: the call on screen, calls
//! waiting, presence, history) with the types the screen shows (phase,
//! direction, connection); `events.rs` applies the client's events to it
//! (and the end of a session); `media_status.rs` is the call's sound and
//! pictures as the in-call screen shows them, driven by the media engine's
//! reports and the user's buttons; `history.rs` records calls and picks
//! recent peers; `effects.rs` lists what an event asks the session to do.

use std::collections::BTreeMap;

use serde::Serialize;

use callinvite_client::{InvitationId, LocalInvitation};

use crate::store::HistoryEntry;

mod effects;
mod events;
mod history;
mod media_status;

pub use effects::{meeting_url, CallOutcome, Effect};
pub use history::HISTORY_LIMIT;
pub use media_status::{
    quality, MediaPhase, MediaRole, MediaStatus, MediaUpdate, VideoFlow, VideoStatus, VideoWanted,
    NO_CAMERA,
};

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
}

#[cfg(test)]
mod tests;
