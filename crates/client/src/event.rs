//! What the app hears: connection changes, and the invitation callbacks of
//! Agora RTM's call manager as enum variants. Every event serialises to one
//! JSON object with an `event` field (the CLI prints them as they come).

use serde::Serialize;
use tokio::sync::mpsc;

use callinvite_protocol::invitation::callee::RemoteState;
use callinvite_protocol::invitation::caller::LocalState;
use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{CallEndReason, ErrorCode, FailureReason, InvitationId};

/// Agora's CONNECTION_STATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Disconnected,
    Connecting,
    Connected,
    Reconnecting,
    Aborted,
}

/// Why the connection state changed (Agora's CONNECTION_CHANGE_REASON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionReason {
    LoginSuccess,
    /// The connection was lost (network, server gone, heartbeat missed).
    Interrupted,
    Logout,
    /// The server said it is shutting down (`going_away`).
    ServerShutdown,
    /// The connection came back and the session resumed: nothing was lost.
    Resumed,
    /// The server no longer had the session when the client came back (its
    /// grace window passed, or the server restarted); log in again.
    SessionExpired,
    /// The session was resumed on another connection (Agora: REMOTE_LOGIN).
    TakenOver,
    /// The server node that kept the session is gone, and another node took
    /// the session over (a cluster). Messages in flight were lost, so the
    /// invitations and calls of this device ended just before this event (as
    /// `not_logged_in`), and requests without an answer failed; presence
    /// subscriptions go on, and invitations still ringing come again.
    SessionMoved,
}

/// A snapshot of an invitation this device sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalInvitationInfo {
    /// This client's handle of the invitation (stable before the server id exists).
    pub handle: u64,
    /// The server's id, once sent.
    pub invitation_id: Option<InvitationId>,
    pub callee: String,
    pub content: String,
    pub state: LocalState,
}

/// A snapshot of an invitation this device received.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RemoteInvitationInfo {
    pub invitation_id: InvitationId,
    pub caller: String,
    pub content: String,
    pub state: RemoteState,
}

/// Everything the client reports. Caller-side variants start with
/// `LocalInvitation`, callee-side ones with `RemoteInvitation`, as in Agora.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ConnectionStateChanged {
        state: ConnectionState,
        reason: ConnectionReason,
    },
    /// The server accepted the invitation (not an Agora callback; tells whether the callee is online).
    LocalInvitationSent {
        invitation: LocalInvitationInfo,
        callee_online: bool,
    },
    LocalInvitationReceivedByPeer {
        invitation: LocalInvitationInfo,
    },
    LocalInvitationAccepted {
        invitation: LocalInvitationInfo,
        response: String,
    },
    LocalInvitationRefused {
        invitation: LocalInvitationInfo,
        response: String,
        busy: bool,
    },
    LocalInvitationCanceled {
        invitation: LocalInvitationInfo,
    },
    LocalInvitationFailure {
        invitation: LocalInvitationInfo,
        reason: FailureReason,
    },
    RemoteInvitationReceived {
        invitation: RemoteInvitationInfo,
    },
    RemoteInvitationAccepted {
        invitation: RemoteInvitationInfo,
    },
    RemoteInvitationRefused {
        invitation: RemoteInvitationInfo,
        busy: bool,
    },
    RemoteInvitationCanceled {
        invitation: RemoteInvitationInfo,
    },
    RemoteInvitationFailure {
        invitation: RemoteInvitationInfo,
        reason: FailureReason,
    },
    /// An accepted call ended (either side). `by` names who hung up, if anyone did.
    CallEnded {
        invitation_id: InvitationId,
        peer: String,
        reason: CallEndReason,
        by: Option<String>,
    },
    PresenceChanged {
        user: String,
        online: bool,
    },
    /// The other device of the established call `invitation_id` sent a media
    /// signal (hand it to the media engine).
    MediaSignal {
        invitation_id: InvitationId,
        from: String,
        signal: callinvite_protocol::MediaSignal,
    },
    /// Calls this user missed while it had no device online, oldest first
    /// (after login; again at every login until cleared with
    /// [`crate::Client::clear_missed_calls`]).
    MissedCalls {
        calls: Vec<MissedCall>,
    },
    /// The server reported a problem not tied to a request.
    ProtocolError {
        code: ErrorCode,
        message: String,
    },
}

impl Event {
    /// The server id of the invitation the event is about, if any.
    pub fn invitation_id(&self) -> Option<&InvitationId> {
        match self {
            Event::LocalInvitationSent { invitation, .. }
            | Event::LocalInvitationReceivedByPeer { invitation }
            | Event::LocalInvitationAccepted { invitation, .. }
            | Event::LocalInvitationRefused { invitation, .. }
            | Event::LocalInvitationCanceled { invitation }
            | Event::LocalInvitationFailure { invitation, .. } => invitation.invitation_id.as_ref(),
            Event::RemoteInvitationReceived { invitation }
            | Event::RemoteInvitationAccepted { invitation }
            | Event::RemoteInvitationRefused { invitation, .. }
            | Event::RemoteInvitationCanceled { invitation }
            | Event::RemoteInvitationFailure { invitation, .. } => Some(&invitation.invitation_id),
            Event::CallEnded { invitation_id, .. } | Event::MediaSignal { invitation_id, .. } => {
                Some(invitation_id)
            }
            _ => None,
        }
    }

    /// The event's name as serialised (e.g. `"remote_invitation_received"`).
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The stream of [`Event`]s of one [`crate::Client`]. Ends after the session ends.
pub struct EventStream {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event, or `None` once the session is over and all events were read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// An event that is already waiting, without waiting for one.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}
