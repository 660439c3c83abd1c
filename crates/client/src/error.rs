//! The client's error type.

use std::time::Duration;

use callinvite_protocol::ErrorCode;

/// Why a client call failed. [`ClientError::code`] gives the protocol code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request was refused, by the local state machine or by the server;
    /// nothing changed. `code` says why (e.g. `already_ended`).
    #[error("{code}: {message}")]
    Api { code: ErrorCode, message: String },
    /// The server refused the login (`invalid_token`, `token_expired`, `too_often`, …).
    #[error("login refused ({code}): {message}")]
    Login { code: ErrorCode, message: String },
    /// The WebSocket could not be opened.
    #[error("cannot connect to {url}: {reason} (is the server running? check the URL)")]
    Connect { url: String, reason: String },
    /// The server did not answer in time.
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    /// The session is over (logged out or connection lost); log in again.
    #[error("not logged in: the session has ended; log in again")]
    NotLoggedIn,
    /// The server node that kept the session died before answering; another
    /// node took the session over. Whether the request took effect is not
    /// known: look at the events, or ask again.
    #[error("the server node that had this request is gone (the session moved to another node); its outcome is unknown")]
    SessionMoved,
}

impl ClientError {
    pub(crate) fn api(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Api {
            code,
            message: message.into(),
        }
    }

    /// The protocol error code this corresponds to.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Api { code, .. } | ClientError::Login { code, .. } => *code,
            ClientError::Connect { .. } | ClientError::Timeout(_) => ErrorCode::Rejected,
            ClientError::NotLoggedIn | ClientError::SessionMoved => ErrorCode::NotLoggedIn,
        }
    }
}

/// A short explanation of a local misuse code.
pub(crate) fn misuse_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::AlreadySent => {
            "this invitation was already sent; create a new one to call again"
        }
        ErrorCode::AlreadyAccepted => "the invitation was already accepted",
        ErrorCode::AlreadyRefused => "the invitation was already refused",
        ErrorCode::AlreadyEnded => "the invitation has already ended",
        ErrorCode::InvalidArgument => "not possible in the invitation's current state",
        _ => "refused",
    }
}
