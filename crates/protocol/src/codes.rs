//! Codes as they appear on the wire (`snake_case` strings).
//!
//! Each enum also has the number Agora RTM 1.x uses for the same condition
//! where one exists ([`FailureReason::agora_code`], [`ErrorCode::agora_code`]),
//! so code ported from Agora can map them one to one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request was rejected. Sent in an `error` message; a rejected request
/// changes nothing on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // --- API misuse (Agora: INVITATION_API_CALL_ERR_CODE) ---
    /// A bad user id, content or response too large, calling yourself, too many ids.
    InvalidArgument,
    /// The request needs a logged-in session.
    NotLoggedIn,
    /// The local invitation was already sent (client-side check).
    AlreadySent,
    /// The invitation was already accepted.
    AlreadyAccepted,
    /// The invitation was already refused.
    AlreadyRefused,
    /// The invitation is over: canceled, expired, failed, or answered by another device.
    AlreadyEnded,
    /// No such invitation visible to this user (unknown id, or it is not yours).
    NotFound,
    /// A media signal from a device of a party that is not the device in the
    /// call (another device of the same user accepted or placed it).
    NotInCall,
    // --- login (Agora: LOGIN_ERR_CODE) ---
    /// The token does not verify (bad signature, wrong user, malformed).
    InvalidToken,
    /// The token's expiry has passed; mint a new one.
    TokenExpired,
    /// Too many logins for this user id in a short time; wait a second.
    TooOften,
    /// This connection is already logged in; log out first.
    AlreadyLoggedIn,
    /// The server refused the login for its own reason (see `message`).
    Rejected,
    /// `resume` named a session the server no longer has (its grace window
    /// passed, it was logged out, or the server restarted); log in again.
    SessionExpired,
    // --- limits ---
    /// More messages per second than the server allows on one connection; the message was dropped. Slow down.
    RateLimited,
    /// This user already has the maximum number of devices logged in; log one out.
    TooManyDevices,
    /// This user already has the maximum number of invitations ringing; wait for one to end.
    TooManyInvitations,
    // --- protocol ---
    /// The frame is not valid JSON, not an object, lacks `type`, or has fields of the wrong type.
    BadMessage,
    /// The `type` is not one this server knows.
    UnknownType,
    /// Binary frames are not part of the protocol; send JSON text frames.
    BinaryNotSupported,
    /// Something failed inside the server; the request may be retried.
    Internal,
}

impl ErrorCode {
    /// The wire spelling, e.g. `"already_ended"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadySent => "already_sent",
            ErrorCode::AlreadyAccepted => "already_accepted",
            ErrorCode::AlreadyRefused => "already_refused",
            ErrorCode::AlreadyEnded => "already_ended",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotInCall => "not_in_call",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TooOften => "too_often",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::Rejected => "rejected",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::TooManyInvitations => "too_many_invitations",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::Internal => "internal",
        }
    }

    /// The matching Agora RTM 1.x code, where there is one
    /// (INVITATION_API_CALL_ERR_CODE for invitation calls, LOGIN_ERR_CODE for login).
    pub fn agora_code(self) -> Option<i32> {
        Some(match self {
            ErrorCode::InvalidArgument => 1,
            ErrorCode::NotLoggedIn => 2,
            ErrorCode::AlreadyEnded | ErrorCode::AlreadyRefused => 3,
            ErrorCode::AlreadyAccepted => 4,
            ErrorCode::AlreadySent => 5,
            ErrorCode::InvalidToken => 5,
            ErrorCode::TokenExpired => 6,
            ErrorCode::AlreadyLoggedIn => 8,
            ErrorCode::TooOften => 10,
            ErrorCode::Rejected => 2,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an invitation ended without an answer. Sent in a `failed` message, or
/// produced by the client library itself (`not_logged_in`, `accept_failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Caller: the callee had no device online for the whole offline window.
    /// Callee: the caller's device went away while the invitation was ringing.
    PeerOffline,
    /// Caller: the callee was online but no device acknowledged within the no-response window.
    NoResponse,
    /// Both: nobody answered within the ring timeout.
    Expired,
    /// Both (client-side): this device's session ended (logout or connection lost).
    NotLoggedIn,
    /// Callee (client-side): this device sent accept but the caller was gone when it arrived.
    AcceptFailure,
    /// Callee: another device of the same user accepted.
    AnsweredElsewhere,
    /// Callee: another device of the same user refused.
    DeclinedElsewhere,
    /// Both: the server is shutting down; reconnect (to another node) and call again.
    ServerShutdown,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::PeerOffline => "peer_offline",
            FailureReason::NoResponse => "no_response",
            FailureReason::Expired => "expired",
            FailureReason::NotLoggedIn => "not_logged_in",
            FailureReason::AcceptFailure => "accept_failure",
            FailureReason::AnsweredElsewhere => "answered_elsewhere",
            FailureReason::DeclinedElsewhere => "declined_elsewhere",
            FailureReason::ServerShutdown => "server_shutdown",
        }
    }

    /// Agora's LOCAL_/REMOTE_INVITATION_ERR_CODE number, where there is one.
    pub fn agora_code(self) -> Option<i32> {
        match self {
            FailureReason::PeerOffline => Some(1),
            FailureReason::NoResponse => Some(2),
            FailureReason::AcceptFailure => Some(2),
            FailureReason::Expired => Some(3),
            FailureReason::NotLoggedIn => Some(4),
            FailureReason::AnsweredElsewhere
            | FailureReason::DeclinedElsewhere
            | FailureReason::ServerShutdown => None,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an accepted call ended. Sent in a `call_ended` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// A party hung up (`by` names who).
    Hangup,
    /// The other party's connection was lost.
    PeerConnectionLost,
    /// The other party logged out.
    PeerLoggedOut,
    /// Client-side: this device's own session ended.
    NotLoggedIn,
    /// The server is shutting down.
    ServerShutdown,
}

impl CallEndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CallEndReason::Hangup => "hangup",
            CallEndReason::PeerConnectionLost => "peer_connection_lost",
            CallEndReason::PeerLoggedOut => "peer_logged_out",
            CallEndReason::NotLoggedIn => "not_logged_in",
            CallEndReason::ServerShutdown => "server_shutdown",
        }
    }
}

impl fmt::Display for CallEndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_as_str() {
        for c in [
            ErrorCode::InvalidArgument,
            ErrorCode::AlreadyEnded,
            ErrorCode::BinaryNotSupported,
            ErrorCode::TooOften,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        for r in [FailureReason::PeerOffline, FailureReason::AnsweredElsewhere] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&CallEndReason::PeerConnectionLost).unwrap(),
            "\"peer_connection_lost\""
        );
    }
}
