//! Sizes and counts enforced by both the server and the client library.
//!
//! The server is authoritative; the client checks the same numbers first so a
//! caller learns of a mistake without a round trip. What a server operator may
//! choose (the largest frame, rates, windows) is not here but in the server's
//! `Config`, whose defaults its command line shows.

/// Longest user id, in bytes (Agora RTM: 64).
pub const MAX_USER_ID_BYTES: usize = 64;
/// Largest invitation `content`, in bytes of UTF-8 (Agora RTM: 8 KiB).
pub const MAX_CONTENT_BYTES: usize = 8 * 1024;
/// Largest `response` to an accept or refuse, in bytes of UTF-8.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024;
/// Most ids in one presence query.
pub const MAX_PRESENCE_QUERY: usize = 64;
/// Most ids one device may be subscribed to at once.
pub const MAX_PRESENCE_SUBSCRIPTIONS: usize = 512;
/// WebSocket close code the server uses for an oversize frame (RFC 6455 §7.4.1).
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// WebSocket close code for a session ended by `logout`.
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code when the server shuts down (after a `going_away` message).
pub const CLOSE_GOING_AWAY: u16 = 1001;
