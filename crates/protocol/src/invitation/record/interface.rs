//! What goes into and comes out of a [`Record`](super::Record): its inputs,
//! the messages it returns, how an invitation ended, and its timeouts.

use std::time::Duration;

use crate::codes::{CallEndReason, FailureReason};
use crate::user_id::UserId;
use crate::wire::{AckOf, DeviceId, ServerMessage};

/// The server-side windows. All configurable; defaults follow Agora RTM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long an invitation to a user with no device online waits for one
    /// to log in before the caller gets `peer_offline`.
    pub offline: Duration,
    /// How long delivered-but-unacknowledged may last before `no_response`.
    pub no_response: Duration,
    /// How long an invitation may ring, from send, before `expired`.
    pub ring: Duration,
    /// How long the caller's `canceled` waits for the callee devices' acks.
    pub cancel_ack: Duration,
    /// How long an ended record is kept to answer late requests precisely.
    pub retention: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            offline: Duration::from_secs(30),
            no_response: Duration::from_secs(30),
            ring: Duration::from_secs(60),
            cancel_ack: Duration::from_secs(2),
            retention: Duration::from_secs(60),
        }
    }
}

/// Who sent a request: the server derives this from the session, never from the message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Party {
    pub user: UserId,
    pub device: DeviceId,
}

/// Why a device went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GoneCause {
    Logout,
    ConnectionLost,
}

/// Something that happened to this invitation. Serialisable, so that a
/// server node can hand it to the node that owns the invitation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// A device of the callee logged in while the invitation is ringing.
    CalleeDeviceOnline(DeviceId),
    /// A device acknowledged an `invitation` or `canceled` message.
    Ack {
        from: DeviceId,
        of: AckOf,
    },
    Accept {
        from: Party,
        req: u64,
        response: String,
    },
    Refuse {
        from: Party,
        req: u64,
        response: String,
        busy: bool,
    },
    Cancel {
        from: Party,
        req: u64,
    },
    Hangup {
        from: Party,
        req: u64,
    },
    /// A media signal from a device of the call, for the other device.
    Media {
        from: Party,
        req: u64,
        signal: crate::media::MediaSignal,
    },
    /// A device logged out or lost its connection.
    DeviceGone {
        device: DeviceId,
        cause: GoneCause,
    },
    /// Time passed; fire whatever deadline is due.
    Tick,
    /// The server is shutting down: end it now, telling everyone involved.
    Shutdown,
}

/// A message to send to one device. Effects are returned in the order they must be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Effect {
    pub to: DeviceId,
    pub msg: ServerMessage,
}

/// How an invitation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Refused {
        by: DeviceId,
        busy: bool,
    },
    Canceled,
    Failed(FailureReason),
    /// It was accepted by device `accepted_by`, and the call has since ended.
    CallEnded {
        accepted_by: DeviceId,
        reason: CallEndReason,
    },
}
