//! User ids and their rules.
//!
//! A user id is 1–64 bytes, is not the literal `"null"`, does not start or
//! end with a space and contains only `a–z A–Z 0–9`, space and
//! `! # $ % & ( ) + - : ; < = . > ? @ [ ] ^ _ { } | ~ ,` — the rules of
//! Agora RTM 1.x, so ids used there carry over unchanged, plus one: no
//! trailing space, so that `"alice "` cannot pass for `"alice"`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_USER_ID_BYTES;

/// A validated user id. Construct with [`UserId::parse`].
///
/// Shared, not copied: a clone is a reference count, so the server's many
/// copies of one user's id (its devices, its invitations, the records kept
/// for ended ones) cost one allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(Arc<str>);

/// Why a string is not a valid user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty; use 1 to 64 characters")]
    Empty,
    #[error("user id is {0} bytes; the limit is 64")]
    TooLong(usize),
    #[error("user id \"null\" is reserved; choose another")]
    Null,
    #[error("user id must not start with a space")]
    LeadingSpace,
    #[error("user id must not end with a space (it would look like the id without it)")]
    TrailingSpace,
    #[error(
        "user id contains {0:?}; allowed are a-z A-Z 0-9, space and !#$%&()+-:;<=.>?@[]^_{{}}|~,"
    )]
    BadChar(char),
}

/// The punctuation allowed in a user id besides letters, digits and space.
const ALLOWED_PUNCTUATION: &str = "!#$%&()+-:;<=.>?@[]^_{}|~,";

impl UserId {
    /// Checks `s` against the user-id rules.
    pub fn parse(s: &str) -> Result<Self, UserIdError> {
        if s.is_empty() {
            return Err(UserIdError::Empty);
        }
        if s.len() > MAX_USER_ID_BYTES {
            return Err(UserIdError::TooLong(s.len()));
        }
        if s == "null" {
            return Err(UserIdError::Null);
        }
        if s.starts_with(' ') {
            return Err(UserIdError::LeadingSpace);
        }
        if s.ends_with(' ') {
            return Err(UserIdError::TrailingSpace);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == ' ' || ALLOWED_PUNCTUATION.contains(*c)))
        {
            return Err(UserIdError::BadChar(c));
        }
        Ok(UserId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserId::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0.as_ref().to_owned()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UserId {
    type Err = UserIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        let all = format!("aZ09 {ALLOWED_PUNCTUATION}");
        assert_eq!(UserId::parse(&all).map(|u| u.to_string()), Ok(all.clone()));
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
        assert_eq!(
            UserId::parse(&"x".repeat(65)),
            Err(UserIdError::TooLong(65))
        );
        assert_eq!(UserId::parse("null"), Err(UserIdError::Null));
        assert!(
            UserId::parse("Null").is_ok(),
            "only the exact lowercase literal is reserved"
        );
        assert_eq!(UserId::parse(" bob"), Err(UserIdError::LeadingSpace));
        assert_eq!(UserId::parse(" "), Err(UserIdError::LeadingSpace));
        assert_eq!(UserId::parse("bob "), Err(UserIdError::TrailingSpace));
        assert!(UserId::parse("bob smith").is_ok());
        assert!(UserId::parse("bob  smith").is_ok());
        // Other white space is no allowed character at all, anywhere.
        for s in ["bob\t", "\tbob", "bob\n", "bob\u{a0}", "bob\r"] {
            assert!(
                matches!(UserId::parse(s), Err(UserIdError::BadChar(_))),
                "{s:?}"
            );
        }
        assert_eq!(UserId::parse("bob/x"), Err(UserIdError::BadChar('/')));
        assert_eq!(UserId::parse("bö"), Err(UserIdError::BadChar('ö')));
        assert_eq!(UserId::parse("a\"b"), Err(UserIdError::BadChar('"')));
        assert_eq!(UserId::parse("a*b"), Err(UserIdError::BadChar('*')));
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<UserId>("\"alice\"").is_ok());
        assert!(serde_json::from_str::<UserId>("\"null\"").is_err());
    }
}
