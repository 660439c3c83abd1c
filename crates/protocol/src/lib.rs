//! The callinvite protocol: everything both ends of a connection must agree on,
//! and nothing that does I/O.
//!
//! Layout, one module per concept:
//!
//! - [`user_id`]: the rules a user id must follow (Agora RTM's rules).
//! - [`limits`]: sizes and counts both sides enforce (content ≤ 8 KiB, …).
//! - [`codes`]: error codes, failure reasons and call-end reasons as they
//!   appear on the wire.
//! - [`wire`]: the JSON messages exchanged as WebSocket text frames, and the
//!   decoder that turns a frame into a [`wire::ClientMessage`] with a precise
//!   error for bad input.
//! - [`invitation`]: the invitation state machines as sans-I/O code. The
//!   server's authoritative [`invitation::Record`] takes
//!   `handle(input, now) -> effects` and owns every timer; the client's
//!   [`invitation::caller::LocalInvitationState`] and
//!   [`invitation::callee::RemoteInvitationState`] mirror what one device sees
//!   and reject API misuse before anything is sent.
//! - [`media`]: what the two devices of a call relay through the server to
//!   set up WebRTC media (SDP, ICE candidates), and the STUN/TURN servers the
//!   server hands out.
//! - [`session`]: the session layer as sans-I/O code: the client's
//!   [`session::ClientSession`] numbers requests and matches their replies,
//!   passes each `seq` on once and in order, batches `seen`, and resumes a
//!   dropped session (sending again what the server never got), with `now`
//!   passed in; the server's [`session::ServerSession`] is one session's
//!   outbox — `seq` numbering, `seen`, the resume window and the replay.
//!
//! The wire protocol is documented for implementers in `docs/PROTOCOL.md`.

pub mod codes;
pub mod invitation;
pub mod limits;
pub mod media;
pub mod session;
pub mod user_id;
pub mod wire;

pub use codes::{CallEndReason, ErrorCode, FailureReason};
pub use media::{IceServer, MediaSignal};
pub use user_id::{UserId, UserIdError};
pub use wire::{ClientMessage, DeviceId, InvitationId, ServerMessage};
