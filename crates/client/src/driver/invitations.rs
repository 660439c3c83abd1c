//! The caller/callee state machine of every invitation this device knows
//! ([`callinvite_protocol::invitation`]), turning the session's messages into
//! the app's [`Event`]s and acknowledging deliveries.

use std::collections::{HashMap, VecDeque};

use tokio::sync::mpsc;
use tracing::debug;

use callinvite_protocol::invitation::callee::{RemoteEvent, RemoteInvitationState};
use callinvite_protocol::invitation::caller::{LocalEvent, LocalInvitationState};
use callinvite_protocol::wire::AckOf;
use callinvite_protocol::{InvitationId, ServerMessage, UserId};

use super::requests::{Pending, Session};
use crate::error::ClientError;
use crate::event::{Event, LocalInvitationInfo, RemoteInvitationInfo};

/// How many finished invitations are remembered (to answer late calls with `already_*`).
const KEEP_FINISHED: usize = 256;

/// An invitation this device sent.
pub(super) struct Local {
    pub(super) state: LocalInvitationState,
    pub(super) callee: UserId,
    pub(super) content: String,
}

/// An invitation this device received.
pub(super) struct Remote {
    pub(super) state: RemoteInvitationState,
    caller: String,
    content: String,
}

/// Every invitation this device knows, and the app's event channel.
pub(super) struct Invitations {
    /// Where the app hears what happened, in the order the server said it.
    events: mpsc::UnboundedSender<Event>,
    /// Sent invitations by the app's handle (they have no server id until `invite_ok`).
    pub(super) locals: HashMap<u64, Local>,
    /// The handle of each sent invitation, by its server id.
    pub(super) local_ids: HashMap<InvitationId, u64>,
    pub(super) remotes: HashMap<InvitationId, Remote>,
    /// Finished ones, oldest first; beyond [`KEEP_FINISHED`] they are forgotten.
    finished_locals: VecDeque<u64>,
    finished_remotes: VecDeque<InvitationId>,
}

impl Invitations {
    pub(super) fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Invitations {
            events,
            locals: HashMap::new(),
            local_ids: HashMap::new(),
            remotes: HashMap::new(),
            finished_locals: VecDeque::new(),
            finished_remotes: VecDeque::new(),
        }
    }

    pub(super) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A server message that is not the reply to one of this session's requests.
    pub(super) fn on_message(&mut self, msg: ServerMessage, session: &mut Session) {
        match msg {
            ServerMessage::Error { code, message, .. } => {
                self.emit(Event::ProtocolError { code, message })
            }
            ServerMessage::MissedCalls { calls } => self.emit(Event::MissedCalls { calls }),
            ServerMessage::PresenceChanged { user, online } => {
                self.emit(Event::PresenceChanged { user, online })
            }
            ServerMessage::Invitation {
                invitation_id,
                caller,
                content,
            } => {
                if !self.remotes.contains_key(&invitation_id) {
                    let remote = Remote {
                        state: RemoteInvitationState::new(),
                        caller,
                        content,
                    };
                    self.remotes.insert(invitation_id.clone(), remote);
                    if let Some(invitation) = self.remote_info(&invitation_id) {
                        self.emit(Event::RemoteInvitationReceived { invitation });
                    }
                }
                // Acknowledge after the app was told: the caller's "received by peer" follows this.
                session.send_ack(invitation_id, AckOf::Invitation);
            }
            ServerMessage::ReceivedByPeer { ref invitation_id }
            | ServerMessage::Accepted {
                ref invitation_id, ..
            }
            | ServerMessage::Refused {
                ref invitation_id, ..
            }
            | ServerMessage::Canceled { ref invitation_id }
            | ServerMessage::Failed {
                ref invitation_id, ..
            }
            | ServerMessage::CallEnded {
                ref invitation_id, ..
            } => {
                let id = invitation_id.clone();
                if let Some(&handle) = self.local_ids.get(&id) {
                    let ev = self
                        .locals
                        .get_mut(&handle)
                        .and_then(|l| l.state.on_server(&msg).0);
                    self.emit_local(handle, ev);
                } else if self.remotes.contains_key(&id) {
                    let ev = self
                        .remotes
                        .get_mut(&id)
                        .and_then(|r| r.state.on_server(&msg));
                    self.emit_remote(&id, ev);
                    if matches!(msg, ServerMessage::Canceled { .. }) {
                        session.send_ack(id, AckOf::Canceled);
                    }
                }
            }
            ServerMessage::Media {
                invitation_id,
                from,
                signal,
            } => self.emit(Event::MediaSignal {
                invitation_id,
                from,
                signal,
            }),
            ServerMessage::GoingAway { reason } => {
                // The session notes it: the coming end of the connection ends the session.
                debug!(%reason, "the server is going away");
            }
            // Replies to no request of this session, and answers about
            // connections (which the session keeps to itself).
            ServerMessage::Ok { .. }
            | ServerMessage::InviteOk { .. }
            | ServerMessage::Presence { .. }
            | ServerMessage::IceServers { .. }
            | ServerMessage::LoginOk { .. }
            | ServerMessage::Resumed { .. }
            | ServerMessage::SessionMoved { .. } => {}
        }
    }

    pub(super) fn emit_local(&mut self, handle: u64, ev: Option<LocalEvent>) {
        let (Some(ev), Some(invitation)) = (ev, self.local_info(handle)) else {
            return;
        };
        let event = match ev {
            LocalEvent::Sent { callee_online, .. } => Event::LocalInvitationSent {
                invitation,
                callee_online,
            },
            LocalEvent::ReceivedByPeer => Event::LocalInvitationReceivedByPeer { invitation },
            LocalEvent::Accepted { response } => Event::LocalInvitationAccepted {
                invitation,
                response,
            },
            LocalEvent::Refused { response, busy } => Event::LocalInvitationRefused {
                invitation,
                response,
                busy,
            },
            LocalEvent::Canceled => Event::LocalInvitationCanceled { invitation },
            LocalEvent::Failure(reason) => Event::LocalInvitationFailure { invitation, reason },
            LocalEvent::CallEnded { reason, by } => match invitation.invitation_id {
                Some(invitation_id) => Event::CallEnded {
                    invitation_id,
                    peer: invitation.callee,
                    reason,
                    by,
                },
                None => return,
            },
        };
        self.emit(event);
        if self.locals.get(&handle).is_some_and(|l| l.state.is_done()) {
            self.finished_locals.push_back(handle);
            while self.finished_locals.len() > KEEP_FINISHED {
                if let Some(old) = self.finished_locals.pop_front() {
                    if let Some(l) = self.locals.remove(&old) {
                        if let Some(id) = l.state.id() {
                            self.local_ids.remove(id);
                        }
                    }
                }
            }
        }
    }

    pub(super) fn emit_remote(&mut self, id: &InvitationId, ev: Option<RemoteEvent>) {
        let (Some(ev), Some(invitation)) = (ev, self.remote_info(id)) else {
            return;
        };
        let event = match ev {
            RemoteEvent::Accepted => Event::RemoteInvitationAccepted { invitation },
            RemoteEvent::Refused { busy } => Event::RemoteInvitationRefused { invitation, busy },
            RemoteEvent::Canceled => Event::RemoteInvitationCanceled { invitation },
            RemoteEvent::Failure(reason) => Event::RemoteInvitationFailure { invitation, reason },
            RemoteEvent::CallEnded { reason, by } => Event::CallEnded {
                invitation_id: id.clone(),
                peer: invitation.caller,
                reason,
                by,
            },
        };
        self.emit(event);
        if self.remotes.get(id).is_some_and(|r| r.state.is_done()) {
            self.finished_remotes.push_back(id.clone());
            while self.finished_remotes.len() > KEEP_FINISHED {
                if let Some(old) = self.finished_remotes.pop_front() {
                    self.remotes.remove(&old);
                }
            }
        }
    }

    pub(super) fn local_info(&self, handle: u64) -> Option<LocalInvitationInfo> {
        self.locals.get(&handle).map(|l| LocalInvitationInfo {
            handle,
            invitation_id: l.state.id().cloned(),
            callee: l.callee.to_string(),
            content: l.content.clone(),
            state: l.state.state(),
        })
    }

    fn remote_info(&self, id: &InvitationId) -> Option<RemoteInvitationInfo> {
        self.remotes.get(id).map(|r| RemoteInvitationInfo {
            invitation_id: id.clone(),
            caller: r.caller.clone(),
            content: r.content.clone(),
            state: r.state.state(),
        })
    }

    /// Another node took the session over (its node died): requests without
    /// an answer fail, and this device's invitations and calls end as if the
    /// session had ended (the other parties saw this device or its node go).
    pub(super) fn moved(&mut self, unanswered: Vec<Pending>) {
        self.end(unanswered, || ClientError::SessionMoved);
        // The new device starts afresh: an invitation still ringing for the
        // user rings it as new, and must not be taken for one already seen.
        self.remotes.clear();
        self.finished_remotes.clear();
    }

    /// Fails the requests without an answer, and ends every invitation and call.
    pub(super) fn end(&mut self, unanswered: Vec<Pending>, err: impl Fn() -> ClientError) {
        for p in unanswered {
            p.fail(&err);
        }
        let handles: Vec<u64> = self.locals.keys().copied().collect();
        for handle in handles {
            let ev = self
                .locals
                .get_mut(&handle)
                .and_then(|l| l.state.on_session_lost());
            self.emit_local(handle, ev);
        }
        let ids: Vec<InvitationId> = self.remotes.keys().cloned().collect();
        for id in ids {
            let ev = self
                .remotes
                .get_mut(&id)
                .and_then(|r| r.state.on_session_lost());
            self.emit_remote(&id, ev);
        }
    }
}
