//! The error every command returns: `{kind, message}`, ready for the UI to show.

use serde::Serialize;

use callinvite_client::ClientError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// A stable word for the UI to branch on: `invalid_argument`, `not_signed_in`,
    /// `busy`, `connect`, `no_call`, or a protocol code such as `already_ended`.
    pub kind: String,
    /// A sentence that says what went wrong and what to do.
    pub message: String,
}

impl CommandError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        CommandError {
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
    pub fn not_signed_in() -> Self {
        Self::new("not_signed_in", "You are not signed in. Sign in first.")
    }
    pub fn no_call() -> Self {
        Self::new("no_call", "There is no call to do that with.")
    }
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        let kind = match &e {
            ClientError::Connect { .. } | ClientError::Timeout(_) => "connect".to_owned(),
            ClientError::NotLoggedIn => "not_signed_in".to_owned(),
            other => other.code().as_str().to_owned(),
        };
        CommandError {
            kind,
            message: e.to_string(),
        }
    }
}
