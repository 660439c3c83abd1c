//! The error every command returns: `{kind, message}`, ready for the UI to show.
//!
//! `kind` is an [`ErrorKind`] in Rust and its snake_case word in the JSON the
//! page receives (`"not_signed_in"`, `"already_ended"`, …).

use serde::{Serialize, Serializer};

use callinvite_client::ClientError;
use callinvite_protocol::ErrorCode;

use crate::autostart::AutostartError;
use crate::session::EmbeddedSecretError;
use crate::store::{SettingsError, StoreError};

/// What kind of failure a command met, for the UI to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value the user gave is not acceptable (`invalid_argument`).
    InvalidArgument,
    /// The command needs a signed-in session (`not_signed_in`).
    NotSignedIn,
    /// Already in a call (`busy`).
    Busy,
    /// The server cannot be reached or started (`connect`).
    Connect,
    /// There is no call to do that with (`no_call`).
    NoCall,
    /// Something failed on this computer: a file, a thread (`internal`).
    Internal,
    /// The server (or the client library) refused the request with this
    /// protocol code, e.g. `already_ended`.
    Protocol(ErrorCode),
}

impl ErrorKind {
    /// The word the page receives as `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotSignedIn => "not_signed_in",
            ErrorKind::Busy => "busy",
            ErrorKind::Connect => "connect",
            ErrorKind::NoCall => "no_call",
            ErrorKind::Internal => "internal",
            ErrorKind::Protocol(code) => code.as_str(),
        }
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// What kind of failure, for the UI to branch on.
    pub kind: ErrorKind,
    /// A sentence that says what went wrong and what to do.
    pub message: String,
}

impl CommandError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CommandError {
            kind,
            message: message.into(),
        }
    }
    pub fn not_signed_in() -> Self {
        Self::new(
            ErrorKind::NotSignedIn,
            "You are not signed in. Sign in first.",
        )
    }
    pub fn no_call() -> Self {
        Self::new(ErrorKind::NoCall, "There is no call to do that with.")
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        let kind = match &e {
            ClientError::Connect { .. } | ClientError::Timeout(_) => ErrorKind::Connect,
            ClientError::NotLoggedIn => ErrorKind::NotSignedIn,
            other => match other.code() {
                ErrorCode::InvalidArgument => ErrorKind::InvalidArgument,
                ErrorCode::Internal => ErrorKind::Internal,
                code => ErrorKind::Protocol(code),
            },
        };
        CommandError::new(kind, e.to_string())
    }
}

impl From<SettingsError> for CommandError {
    fn from(e: SettingsError) -> Self {
        CommandError::new(ErrorKind::InvalidArgument, e.to_string())
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::new(ErrorKind::Internal, e.to_string())
    }
}

impl From<EmbeddedSecretError> for CommandError {
    /// Without its secret the built-in server cannot be signed in to.
    fn from(e: EmbeddedSecretError) -> Self {
        CommandError::new(ErrorKind::Connect, e.to_string())
    }
}

impl From<AutostartError> for CommandError {
    fn from(e: AutostartError) -> Self {
        CommandError::new(ErrorKind::Internal, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_receives_the_same_words_as_before() {
        let cases = [
            (ErrorKind::InvalidArgument, "invalid_argument"),
            (ErrorKind::NotSignedIn, "not_signed_in"),
            (ErrorKind::Busy, "busy"),
            (ErrorKind::Connect, "connect"),
            (ErrorKind::NoCall, "no_call"),
            (ErrorKind::Internal, "internal"),
            (
                ErrorKind::Protocol(ErrorCode::AlreadyEnded),
                "already_ended",
            ),
        ];
        for (kind, word) in cases {
            let json = serde_json::to_value(CommandError::new(kind, "m")).unwrap();
            assert_eq!(json, serde_json::json!({"kind": word, "message": "m"}));
        }
    }

    #[test]
    fn client_errors_map_to_kinds() {
        assert_eq!(
            CommandError::from(ClientError::NotLoggedIn).kind,
            ErrorKind::NotSignedIn
        );
        let ended = ClientError::Api {
            code: ErrorCode::AlreadyEnded,
            message: "over".into(),
        };
        assert_eq!(
            CommandError::from(ended).kind,
            ErrorKind::Protocol(ErrorCode::AlreadyEnded)
        );
        let bad = ClientError::Api {
            code: ErrorCode::InvalidArgument,
            message: "calling yourself".into(),
        };
        assert_eq!(CommandError::from(bad).kind, ErrorKind::InvalidArgument);
    }
}
