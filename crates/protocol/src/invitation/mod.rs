//! The invitation state machines, as sans-I/O code.
//!
//! - [`Record`] (in [`record`]) is the server's authoritative record of one
//!   invitation: it receives inputs (a device came online, an ack, accept,
//!   refuse, cancel, hang-up, a device went away, a timer tick) together with
//!   the current time, and returns the messages to send, in order. It owns
//!   every timer; [`Record::deadline`] says when it next wants a `Tick`.
//!   Once it has ended, its [`record::Tombstone`] is all a server needs to
//!   keep: it answers late requests the same way.
//! - [`caller::LocalInvitationState`] and [`callee::RemoteInvitationState`]
//!   are what one client device knows of an invitation it sent or received.
//!   They reject API misuse locally (already sent, already accepted, …) and
//!   turn server messages into the app-facing events.
//!
//! None of them reads a clock or touches a socket, so every timeout and race
//! is tested here with plain `Instant` arithmetic (the record's unit tests
//! are in `record/tests.rs`, beside it).

pub mod callee;
pub mod caller;
pub mod record;

pub use record::{Effect, GoneCause, Input, Outcome, Party, Record, Timeouts, Tombstone};
