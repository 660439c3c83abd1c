//! The session layer as sans-I/O code: what keeps one logged-in session
//! going across connections (`docs/PROTOCOL.md` §1.2 and §1.8) — request
//! numbering, replies by `ref`, `seq` de-duplication, `seen` batching, `ack`s
//! worth sending again, and `resume` — without a socket or a clock.
//!
//! - [`client::ClientSession`] is one client's side. The code that owns the
//!   socket feeds it what arrived ([`ClientSession::handle_incoming`]), the
//!   time ([`ClientSession::handle_timeout`]) and the connection going and
//!   coming ([`ClientSession::on_disconnected`],
//!   [`ClientSession::on_connected`]), and the app's requests
//!   ([`ClientSession::send_request`], [`ClientSession::send_ack`]); it then
//!   writes out [`ClientSession::poll_transmit`], acts on
//!   [`ClientSession::poll_event`], and wakes at
//!   [`ClientSession::poll_timeout`].
//! - [`server::ServerSession`] is the server's side of one session: its
//!   outbox. It numbers what the session is sent ([`ServerSession::send`]),
//!   keeps it until `seen` ([`ServerSession::handle_seen`]), waits for a
//!   resume after a drop ([`ServerSession::handle_detach`],
//!   [`ServerSession::poll_timeout`]) and replays what the client missed
//!   ([`ServerSession::handle_resume`]); the server writes out
//!   [`ServerSession::poll_transmit`] on the connection attached.
//!
//! Like [`crate::invitation`], nothing here reads a clock: every call that
//! depends on time takes `now`, so the tests (and the property test of resume
//! in `tests/session_properties.rs`, and of the server's outbox in
//! `tests/server_session_properties.rs`) run on plain `Instant` arithmetic.

pub mod client;
pub mod server;

pub use client::{
    ClientSession, Config, Disconnected, Received, ResumeRefused, SessionEnd, SessionError,
    SessionEvent, KEEP_ACKS, LOGIN_REF, SEEN_DELAY, SEEN_EVERY,
};
pub use server::{OutboxLimits, ResumeRefusal, Resumed, ServerSession};
