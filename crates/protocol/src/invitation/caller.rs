//! What the caller's device knows of one invitation it created (Agora's
//! `LocalInvitation`): its state, and which API calls are allowed in it.

use serde::{Deserialize, Serialize};

use crate::codes::{CallEndReason, ErrorCode, FailureReason};
use crate::wire::{InvitationId, ServerMessage};

/// Agora's LOCAL_INVITATION_STATE, with the same numbering
/// ([`LocalState::agora_code`]). `Failure` carries its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum LocalState {
    Idle,
    SentToRemote,
    ReceivedByRemote,
    AcceptedByRemote,
    RefusedByRemote,
    Canceled,
    Failure(FailureReason),
}

impl LocalState {
    pub fn agora_code(self) -> i32 {
        match self {
            LocalState::Idle => 0,
            LocalState::SentToRemote => 1,
            LocalState::ReceivedByRemote => 2,
            LocalState::AcceptedByRemote => 3,
            LocalState::RefusedByRemote => 4,
            LocalState::Canceled => 5,
            LocalState::Failure(_) => 6,
        }
    }
    /// No further invitation event can follow.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            LocalState::AcceptedByRemote
                | LocalState::RefusedByRemote
                | LocalState::Canceled
                | LocalState::Failure(_)
        )
    }
}

/// What the app should hear, produced by a state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalEvent {
    /// The server took the invitation (`callee_online`: some device was online).
    Sent {
        invitation_id: InvitationId,
        callee_online: bool,
    },
    ReceivedByPeer,
    Accepted {
        response: String,
    },
    Refused {
        response: String,
        busy: bool,
    },
    Canceled,
    Failure(FailureReason),
    CallEnded {
        reason: CallEndReason,
        by: Option<String>,
    },
}

/// What to do with a `cancel` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelAction {
    /// Send `cancel` to the server now.
    SendNow,
    /// The `invite` is still in flight: send `cancel` as soon as `invite_ok` arrives.
    Deferred,
    /// A cancel is already on its way; nothing more to send.
    AlreadyRequested,
}

/// The caller-side state machine of one invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInvitationState {
    state: LocalState,
    /// `send` was called and `invite_ok` has not arrived yet.
    sending: bool,
    cancel_requested: bool,
    /// Accepted and not yet ended.
    in_call: bool,
    id: Option<InvitationId>,
}

impl Default for LocalInvitationState {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalInvitationState {
    pub fn new() -> Self {
        LocalInvitationState {
            state: LocalState::Idle,
            sending: false,
            cancel_requested: false,
            in_call: false,
            id: None,
        }
    }
    pub fn state(&self) -> LocalState {
        self.state
    }
    pub fn id(&self) -> Option<&InvitationId> {
        self.id.as_ref()
    }
    pub fn in_call(&self) -> bool {
        self.in_call
    }
    /// Nothing more will happen to this invitation (answered and any call over).
    pub fn is_done(&self) -> bool {
        self.state.is_final() && !self.in_call
    }

    /// `send_local_invitation`: allowed once.
    pub fn send(&mut self) -> Result<(), ErrorCode> {
        if self.sending || self.state != LocalState::Idle {
            return Err(ErrorCode::AlreadySent);
        }
        self.sending = true;
        Ok(())
    }

    /// The server rejected the `invite`: nothing was created, the invitation may be sent again.
    pub fn send_rejected(&mut self) {
        self.sending = false;
        self.cancel_requested = false;
    }

    /// `cancel_local_invitation`.
    pub fn cancel(&mut self) -> Result<CancelAction, ErrorCode> {
        match self.state {
            LocalState::Idle if self.sending => {
                let first = !std::mem::replace(&mut self.cancel_requested, true);
                Ok(if first {
                    CancelAction::Deferred
                } else {
                    CancelAction::AlreadyRequested
                })
            }
            LocalState::Idle => Err(ErrorCode::InvalidArgument),
            LocalState::SentToRemote | LocalState::ReceivedByRemote => {
                let first = !std::mem::replace(&mut self.cancel_requested, true);
                Ok(if first {
                    CancelAction::SendNow
                } else {
                    CancelAction::AlreadyRequested
                })
            }
            LocalState::AcceptedByRemote => Err(ErrorCode::AlreadyAccepted),
            LocalState::RefusedByRemote => Err(ErrorCode::AlreadyRefused),
            LocalState::Canceled | LocalState::Failure(_) => Err(ErrorCode::AlreadyEnded),
        }
    }

    /// `hang_up`: only while the call is up.
    pub fn hang_up(&self) -> Result<(), ErrorCode> {
        if self.in_call {
            Ok(())
        } else if self.state.is_final() {
            Err(ErrorCode::AlreadyEnded)
        } else {
            Err(ErrorCode::InvalidArgument)
        }
    }

    /// A server message about this invitation. Returns the event it causes,
    /// and whether a deferred cancel must now be sent.
    pub fn on_server(&mut self, msg: &ServerMessage) -> (Option<LocalEvent>, bool) {
        let pending = !self.state.is_final();
        let event = match msg {
            ServerMessage::InviteOk {
                invitation_id,
                callee_online,
                ..
            } if self.sending => {
                self.sending = false;
                self.id = Some(invitation_id.clone());
                self.state = LocalState::SentToRemote;
                let ev = LocalEvent::Sent {
                    invitation_id: invitation_id.clone(),
                    callee_online: *callee_online,
                };
                return (Some(ev), self.cancel_requested);
            }
            ServerMessage::ReceivedByPeer { .. } if self.state == LocalState::SentToRemote => {
                self.state = LocalState::ReceivedByRemote;
                Some(LocalEvent::ReceivedByPeer)
            }
            ServerMessage::Accepted { response, .. } if pending => {
                self.state = LocalState::AcceptedByRemote;
                self.in_call = true;
                Some(LocalEvent::Accepted {
                    response: response.clone(),
                })
            }
            ServerMessage::Refused { response, busy, .. } if pending => {
                self.state = LocalState::RefusedByRemote;
                Some(LocalEvent::Refused {
                    response: response.clone(),
                    busy: *busy,
                })
            }
            ServerMessage::Canceled { .. } if pending => {
                self.state = LocalState::Canceled;
                Some(LocalEvent::Canceled)
            }
            ServerMessage::Failed { reason, .. } if pending => {
                self.state = LocalState::Failure(*reason);
                Some(LocalEvent::Failure(*reason))
            }
            ServerMessage::CallEnded { reason, by, .. } if self.in_call => {
                self.in_call = false;
                Some(LocalEvent::CallEnded {
                    reason: *reason,
                    by: by.clone(),
                })
            }
            _ => None,
        };
        (event, false)
    }

    /// This device's session ended (logout or connection lost).
    pub fn on_session_lost(&mut self) -> Option<LocalEvent> {
        if self.in_call {
            self.in_call = false;
            return Some(LocalEvent::CallEnded {
                reason: CallEndReason::NotLoggedIn,
                by: None,
            });
        }
        if self.sending || !(self.state.is_final() || self.state == LocalState::Idle) {
            self.sending = false;
            self.state = LocalState::Failure(FailureReason::NotLoggedIn);
            return Some(LocalEvent::Failure(FailureReason::NotLoggedIn));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> InvitationId {
        InvitationId("i".into())
    }
    fn sent() -> LocalInvitationState {
        let mut s = LocalInvitationState::new();
        s.send().unwrap();
        s.on_server(&ServerMessage::InviteOk {
            req: 1,
            invitation_id: id(),
            callee_online: true,
        });
        s
    }

    #[test]
    fn happy_path_to_call_end() {
        let mut s = LocalInvitationState::new();
        assert_eq!(s.state().agora_code(), 0);
        s.send().unwrap();
        assert_eq!(s.send(), Err(ErrorCode::AlreadySent));
        let (ev, cancel) = s.on_server(&ServerMessage::InviteOk {
            req: 1,
            invitation_id: id(),
            callee_online: false,
        });
        assert_eq!(
            ev,
            Some(LocalEvent::Sent {
                invitation_id: id(),
                callee_online: false
            })
        );
        assert!(!cancel);
        assert_eq!(s.state(), LocalState::SentToRemote);
        assert_eq!(s.send(), Err(ErrorCode::AlreadySent));
        assert_eq!(s.hang_up(), Err(ErrorCode::InvalidArgument));
        assert_eq!(
            s.on_server(&ServerMessage::ReceivedByPeer {
                invitation_id: id()
            })
            .0,
            Some(LocalEvent::ReceivedByPeer)
        );
        assert_eq!(s.state(), LocalState::ReceivedByRemote);
        let (ev, _) = s.on_server(&ServerMessage::Accepted {
            invitation_id: id(),
            response: "hi".into(),
        });
        assert_eq!(
            ev,
            Some(LocalEvent::Accepted {
                response: "hi".into()
            })
        );
        assert_eq!(s.state().agora_code(), 3);
        assert!(s.in_call() && !s.is_done());
        assert_eq!(s.cancel(), Err(ErrorCode::AlreadyAccepted));
        assert_eq!(s.hang_up(), Ok(()));
        let end = ServerMessage::CallEnded {
            invitation_id: id(),
            reason: CallEndReason::Hangup,
            by: Some("bob".into()),
        };
        assert_eq!(
            s.on_server(&end).0,
            Some(LocalEvent::CallEnded {
                reason: CallEndReason::Hangup,
                by: Some("bob".into())
            })
        );
        assert!(s.is_done());
        assert_eq!(s.on_server(&end).0, None, "a duplicate end is ignored");
        assert_eq!(s.hang_up(), Err(ErrorCode::AlreadyEnded));
    }

    #[test]
    fn cancel_before_invite_ok_is_deferred_then_sent() {
        let mut s = LocalInvitationState::new();
        assert_eq!(
            s.cancel(),
            Err(ErrorCode::InvalidArgument),
            "cannot cancel what was never sent"
        );
        s.send().unwrap();
        assert_eq!(s.cancel(), Ok(CancelAction::Deferred));
        assert_eq!(s.cancel(), Ok(CancelAction::AlreadyRequested));
        let (_, cancel_now) = s.on_server(&ServerMessage::InviteOk {
            req: 1,
            invitation_id: id(),
            callee_online: true,
        });
        assert!(cancel_now);
        assert_eq!(
            s.on_server(&ServerMessage::Canceled {
                invitation_id: id()
            })
            .0,
            Some(LocalEvent::Canceled)
        );
        assert_eq!(s.cancel(), Err(ErrorCode::AlreadyEnded));
        assert_eq!(s.send(), Err(ErrorCode::AlreadySent));
    }

    #[test]
    fn refusal_and_failure_are_final() {
        let mut s = sent();
        assert_eq!(s.cancel(), Ok(CancelAction::SendNow));
        let (ev, _) = s.on_server(&ServerMessage::Refused {
            invitation_id: id(),
            response: "busy".into(),
            busy: true,
        });
        assert_eq!(
            ev,
            Some(LocalEvent::Refused {
                response: "busy".into(),
                busy: true
            })
        );
        assert_eq!(s.cancel(), Err(ErrorCode::AlreadyRefused));
        // A late cancel confirmation after the refusal won the race changes nothing.
        assert_eq!(
            s.on_server(&ServerMessage::Canceled {
                invitation_id: id()
            })
            .0,
            None
        );
        assert_eq!(s.state(), LocalState::RefusedByRemote);

        for reason in [
            FailureReason::PeerOffline,
            FailureReason::NoResponse,
            FailureReason::Expired,
        ] {
            let mut s = sent();
            assert_eq!(
                s.on_server(&ServerMessage::Failed {
                    invitation_id: id(),
                    reason
                })
                .0,
                Some(LocalEvent::Failure(reason))
            );
            assert_eq!(s.state(), LocalState::Failure(reason));
            assert_eq!(s.state().agora_code(), 6);
            assert_eq!(s.cancel(), Err(ErrorCode::AlreadyEnded));
        }
    }

    #[test]
    fn rejected_send_can_be_retried() {
        let mut s = LocalInvitationState::new();
        s.send().unwrap();
        s.send_rejected();
        assert_eq!(s.state(), LocalState::Idle);
        assert_eq!(s.send(), Ok(()));
    }

    #[test]
    fn session_loss() {
        let mut idle = LocalInvitationState::new();
        assert_eq!(idle.on_session_lost(), None);
        let mut s = sent();
        assert_eq!(
            s.on_session_lost(),
            Some(LocalEvent::Failure(FailureReason::NotLoggedIn))
        );
        assert_eq!(s.state(), LocalState::Failure(FailureReason::NotLoggedIn));
        let mut c = sent();
        c.on_server(&ServerMessage::Accepted {
            invitation_id: id(),
            response: String::new(),
        });
        assert_eq!(
            c.on_session_lost(),
            Some(LocalEvent::CallEnded {
                reason: CallEndReason::NotLoggedIn,
                by: None
            })
        );
        assert_eq!(c.on_session_lost(), None);
    }
}
