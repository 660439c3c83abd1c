//! Late requests to an ended invitation, answered by its [`Tombstone`] (and
//! by the ended [`Record`] through the same code).

use super::{Effect, Input, Outcome, Record};
use crate::codes::ErrorCode;
use crate::user_id::UserId;
use crate::wire::{DeviceId, ServerMessage};

impl Record {
    /// What answers late requests once it has ended (`None` before).
    pub fn tombstone(&self) -> Option<Tombstone> {
        Some(Tombstone {
            caller: self.caller.user.clone(),
            caller_device: self.caller.device,
            callee: self.callee.clone(),
            outcome: self.outcome()?,
        })
    }
}

/// What is left of an ended invitation: enough to answer a late request
/// exactly as the ended [`Record`] would ([`Record::handle`] answers through
/// the same code), and nothing else — no content, no responses, no callee
/// devices, no timers. The user ids are shared with the server's other
/// copies ([`UserId`] clones are reference counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    caller: UserId,
    caller_device: DeviceId,
    callee: UserId,
    outcome: Outcome,
}

impl Tombstone {
    /// How the invitation ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    pub fn caller(&self) -> &UserId {
        &self.caller
    }
    /// The device the invitation was sent from.
    pub fn caller_device(&self) -> DeviceId {
        self.caller_device
    }
    pub fn callee(&self) -> &UserId {
        &self.callee
    }

    /// The answer to a late input: an error for an `accept`, `refuse`,
    /// `cancel`, `hangup` or media signal (who gets which is the ended
    /// columns of PROTOCOL.md §3.11), nothing for anything else.
    pub fn handle(&self, input: Input) -> Option<Effect> {
        late_answer(
            &self.caller,
            self.caller_device,
            &self.callee,
            self.outcome,
            input,
        )
    }
}

/// An ended invitation's answer to `input` (see [`Tombstone::handle`]).
pub(super) fn late_answer(
    caller: &UserId,
    caller_device: DeviceId,
    callee: &UserId,
    outcome: Outcome,
    input: Input,
) -> Option<Effect> {
    let (from, req, allowed) = match &input {
        Input::Accept { from, req, .. } | Input::Refuse { from, req, .. } => {
            (from, *req, from.user == *callee)
        }
        Input::Cancel { from, req } => (from, *req, from.user == *caller),
        Input::Hangup { from, req } | Input::Media { from, req, .. } => {
            (from, *req, from.user == *caller || from.user == *callee)
        }
        _ => return None,
    };
    let (code, message) = if !allowed {
        (ErrorCode::NotFound, "no such invitation for you")
    } else {
        match (&input, outcome) {
            (Input::Accept { .. } | Input::Refuse { .. }, Outcome::Refused { by, .. })
                if by == from.device || caller_device == from.device =>
            {
                (
                    ErrorCode::AlreadyRefused,
                    "the invitation was already refused",
                )
            }
            (
                Input::Accept { .. } | Input::Refuse { .. },
                Outcome::CallEnded { accepted_by, .. },
            ) if accepted_by == from.device => (
                ErrorCode::AlreadyAccepted,
                "the invitation was already accepted (and the call has ended)",
            ),
            (Input::Accept { .. } | Input::Refuse { .. }, _) => {
                (ErrorCode::AlreadyEnded, "the invitation has already ended")
            }
            (Input::Cancel { .. }, Outcome::CallEnded { .. }) => (
                ErrorCode::AlreadyAccepted,
                "the invitation was already accepted",
            ),
            (Input::Cancel { .. }, Outcome::Refused { .. }) => (
                ErrorCode::AlreadyRefused,
                "the invitation was already refused",
            ),
            (Input::Cancel { .. }, _) => {
                (ErrorCode::AlreadyEnded, "the invitation has already ended")
            }
            _ => (ErrorCode::AlreadyEnded, "the call has already ended"),
        }
    };
    Some(Effect {
        to: from.device,
        msg: ServerMessage::error(Some(req), code, message),
    })
}
