//! What an event asks the session to do ([`Effect`]: notifications, a busy
//! refusal, the call's media, the meeting room, saving the history), and
//! how a call ended as the UI words it ([`CallOutcome`]).

use serde::Serialize;

use callinvite_client::InvitationId;

use super::{Direction, MediaRole};
use crate::store::Settings;

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
