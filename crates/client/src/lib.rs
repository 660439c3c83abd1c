//! Async client for callinvite, modelled on Agora RTM 1.x's call manager.
//!
//! ```no_run
//! # async fn demo() -> Result<(), callinvite_client::ClientError> {
//! use callinvite_client::{Client, Event, LoginOptions};
//! let (client, mut events) = Client::login(LoginOptions::new("ws://127.0.0.1:7450", "alice")).await?;
//! let invitation = client.create_local_invitation("bob")?.with_content("channel-42");
//! client.send_local_invitation(&invitation).await?;
//! while let Some(event) = events.next().await {
//!     if let Event::LocalInvitationAccepted { response, .. } = event {
//!         println!("bob accepted: {response}");
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`client`]: the [`Client`] handle and its API (login, the invitation
//!   manager calls, presence, logout).
//! - [`event`]: the [`Event`]s the app receives, named after Agora's callbacks.
//! - [`error`]: the [`ClientError`] type.
//! - [`backoff`]: the waits between reconnect attempts (`backon`), shared
//!   with the desktop app.
//! - [`media`] (feature `media`, on by default): a call's sound — the WebRTC
//!   media engine of `callinvite-media` for an established call, signaled
//!   through the server.
//! - `driver`: the background task that owns the WebSocket: the select loop,
//!   reconnecting with backoff, the caller/callee state machines of
//!   [`callinvite_protocol::invitation`] turning server messages into events.
//!   What keeps the session going across connections (numbering, replies,
//!   `seq`, `seen`, acks, resume) is the sans-I/O
//!   [`callinvite_protocol::session::ClientSession`] it drives.

pub mod backoff;
pub mod client;
mod driver;
pub mod error;
pub mod event;
#[cfg(feature = "media")]
pub mod media;

pub use callinvite_protocol::invitation::callee::RemoteState;
pub use callinvite_protocol::invitation::caller::LocalState;
pub use callinvite_protocol::wire::{MissedCall, MissedReason};
pub use callinvite_protocol::{
    CallEndReason, ErrorCode, FailureReason, IceServer, InvitationId, MediaSignal, UserId,
};
pub use client::{Client, LocalInvitation, LoginOptions};
pub use error::ClientError;
pub use event::{
    ConnectionReason, ConnectionState, Event, EventStream, LocalInvitationInfo,
    RemoteInvitationInfo,
};
