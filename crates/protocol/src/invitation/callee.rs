//! What one callee device knows of an invitation it received (Agora's
//! `RemoteInvitation`): its state, and which API calls are allowed in it.

use serde::{Deserialize, Serialize};

use crate::codes::{CallEndReason, ErrorCode, FailureReason};
use crate::wire::ServerMessage;

/// Agora's REMOTE_INVITATION_STATE, with the same numbering
/// ([`RemoteState::agora_code`]), plus `RefuseSent` (refuse on its way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum RemoteState {
    InvitationReceived,
    AcceptSentToLocal,
    RefuseSentToLocal,
    Refused,
    Accepted,
    Canceled,
    Failure(FailureReason),
}

impl RemoteState {
    pub fn agora_code(self) -> i32 {
        match self {
            RemoteState::InvitationReceived | RemoteState::RefuseSentToLocal => 1,
            RemoteState::AcceptSentToLocal => 2,
            RemoteState::Refused => 3,
            RemoteState::Accepted => 4,
            RemoteState::Canceled => 5,
            RemoteState::Failure(_) => 6,
        }
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RemoteState::Refused
                | RemoteState::Accepted
                | RemoteState::Canceled
                | RemoteState::Failure(_)
        )
    }
}

/// What the app should hear, produced by a state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteEvent {
    Accepted,
    Refused {
        busy: bool,
    },
    Canceled,
    Failure(FailureReason),
    CallEnded {
        reason: CallEndReason,
        by: Option<String>,
    },
}

/// The callee-side state machine of one invitation on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteInvitationState {
    state: RemoteState,
    busy: bool,
    in_call: bool,
}

impl Default for RemoteInvitationState {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteInvitationState {
    /// A freshly received invitation.
    pub fn new() -> Self {
        RemoteInvitationState {
            state: RemoteState::InvitationReceived,
            busy: false,
            in_call: false,
        }
    }
    pub fn state(&self) -> RemoteState {
        self.state
    }
    pub fn in_call(&self) -> bool {
        self.in_call
    }
    pub fn is_done(&self) -> bool {
        self.state.is_final() && !self.in_call
    }

    fn answer_error(&self) -> ErrorCode {
        match self.state {
            RemoteState::AcceptSentToLocal | RemoteState::Accepted => ErrorCode::AlreadyAccepted,
            RemoteState::RefuseSentToLocal | RemoteState::Refused => ErrorCode::AlreadyRefused,
            _ => ErrorCode::AlreadyEnded,
        }
    }

    /// `accept_remote_invitation`.
    pub fn accept(&mut self) -> Result<(), ErrorCode> {
        if self.state != RemoteState::InvitationReceived {
            return Err(self.answer_error());
        }
        self.state = RemoteState::AcceptSentToLocal;
        Ok(())
    }

    /// `refuse_remote_invitation`.
    pub fn refuse(&mut self, busy: bool) -> Result<(), ErrorCode> {
        if self.state != RemoteState::InvitationReceived {
            return Err(self.answer_error());
        }
        self.state = RemoteState::RefuseSentToLocal;
        self.busy = busy;
        Ok(())
    }

    pub fn hang_up(&self) -> Result<(), ErrorCode> {
        if self.in_call {
            Ok(())
        } else if self.state.is_final() {
            Err(ErrorCode::AlreadyEnded)
        } else {
            Err(ErrorCode::InvalidArgument)
        }
    }

    /// The server's `ok` to this device's accept or refuse.
    pub fn on_answer_ok(&mut self) -> Option<RemoteEvent> {
        match self.state {
            RemoteState::AcceptSentToLocal => {
                self.state = RemoteState::Accepted;
                self.in_call = true;
                Some(RemoteEvent::Accepted)
            }
            RemoteState::RefuseSentToLocal => {
                self.state = RemoteState::Refused;
                Some(RemoteEvent::Refused { busy: self.busy })
            }
            _ => None,
        }
    }

    /// The server's `error` to this device's accept or refuse. If no ending
    /// message explained it first, the invitation is still ringing here.
    pub fn on_answer_error(&mut self) {
        if matches!(
            self.state,
            RemoteState::AcceptSentToLocal | RemoteState::RefuseSentToLocal
        ) {
            self.state = RemoteState::InvitationReceived;
        }
    }

    /// A server message about this invitation.
    pub fn on_server(&mut self, msg: &ServerMessage) -> Option<RemoteEvent> {
        let pending = !self.state.is_final();
        match msg {
            ServerMessage::Canceled { .. } if pending => {
                self.state = RemoteState::Canceled;
                Some(RemoteEvent::Canceled)
            }
            ServerMessage::Failed { reason, .. } if pending => {
                // The caller went away while our accept was in flight: Agora's ACCEPT_FAILURE.
                let reason = if self.state == RemoteState::AcceptSentToLocal
                    && *reason == FailureReason::PeerOffline
                {
                    FailureReason::AcceptFailure
                } else {
                    *reason
                };
                self.state = RemoteState::Failure(reason);
                Some(RemoteEvent::Failure(reason))
            }
            ServerMessage::CallEnded { reason, by, .. } if self.in_call => {
                self.in_call = false;
                Some(RemoteEvent::CallEnded {
                    reason: *reason,
                    by: by.clone(),
                })
            }
            _ => None,
        }
    }

    pub fn on_session_lost(&mut self) -> Option<RemoteEvent> {
        if self.in_call {
            self.in_call = false;
            return Some(RemoteEvent::CallEnded {
                reason: CallEndReason::NotLoggedIn,
                by: None,
            });
        }
        if !self.state.is_final() {
            self.state = RemoteState::Failure(FailureReason::NotLoggedIn);
            return Some(RemoteEvent::Failure(FailureReason::NotLoggedIn));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::InvitationId;

    fn id() -> InvitationId {
        InvitationId("i".into())
    }

    #[test]
    fn accept_then_hang_up() {
        let mut s = RemoteInvitationState::new();
        assert_eq!(s.state().agora_code(), 1);
        assert_eq!(s.hang_up(), Err(ErrorCode::InvalidArgument));
        s.accept().unwrap();
        assert_eq!(s.state().agora_code(), 2);
        assert_eq!(s.accept(), Err(ErrorCode::AlreadyAccepted));
        assert_eq!(s.refuse(false), Err(ErrorCode::AlreadyAccepted));
        assert_eq!(s.on_answer_ok(), Some(RemoteEvent::Accepted));
        assert_eq!(s.state(), RemoteState::Accepted);
        assert_eq!(s.hang_up(), Ok(()));
        let end = ServerMessage::CallEnded {
            invitation_id: id(),
            reason: CallEndReason::PeerConnectionLost,
            by: None,
        };
        assert_eq!(
            s.on_server(&end),
            Some(RemoteEvent::CallEnded {
                reason: CallEndReason::PeerConnectionLost,
                by: None
            })
        );
        assert!(s.is_done());
        assert_eq!(s.hang_up(), Err(ErrorCode::AlreadyEnded));
    }

    #[test]
    fn refuse_busy() {
        let mut s = RemoteInvitationState::new();
        s.refuse(true).unwrap();
        assert_eq!(s.accept(), Err(ErrorCode::AlreadyRefused));
        assert_eq!(s.on_answer_ok(), Some(RemoteEvent::Refused { busy: true }));
        assert_eq!(s.state().agora_code(), 3);
        assert_eq!(s.accept(), Err(ErrorCode::AlreadyRefused));
    }

    #[test]
    fn canceled_and_failures_end_it() {
        let mut s = RemoteInvitationState::new();
        assert_eq!(
            s.on_server(&ServerMessage::Canceled {
                invitation_id: id()
            }),
            Some(RemoteEvent::Canceled)
        );
        assert_eq!(s.accept(), Err(ErrorCode::AlreadyEnded));
        assert_eq!(
            s.on_server(&ServerMessage::Canceled {
                invitation_id: id()
            }),
            None
        );

        for reason in [
            FailureReason::Expired,
            FailureReason::AnsweredElsewhere,
            FailureReason::DeclinedElsewhere,
            FailureReason::PeerOffline,
        ] {
            let mut s = RemoteInvitationState::new();
            assert_eq!(
                s.on_server(&ServerMessage::Failed {
                    invitation_id: id(),
                    reason
                }),
                Some(RemoteEvent::Failure(reason))
            );
            assert_eq!(s.refuse(false), Err(ErrorCode::AlreadyEnded));
        }
    }

    #[test]
    fn caller_gone_while_accepting_is_accept_failure() {
        let mut s = RemoteInvitationState::new();
        s.accept().unwrap();
        let ev = s.on_server(&ServerMessage::Failed {
            invitation_id: id(),
            reason: FailureReason::PeerOffline,
        });
        assert_eq!(ev, Some(RemoteEvent::Failure(FailureReason::AcceptFailure)));
        s.on_answer_error();
        assert_eq!(
            s.state(),
            RemoteState::Failure(FailureReason::AcceptFailure)
        );
    }

    #[test]
    fn cancel_racing_accept_wins_when_it_arrived_first() {
        let mut s = RemoteInvitationState::new();
        s.accept().unwrap();
        assert_eq!(
            s.on_server(&ServerMessage::Canceled {
                invitation_id: id()
            }),
            Some(RemoteEvent::Canceled)
        );
        s.on_answer_error();
        assert_eq!(s.on_answer_ok(), None);
        assert_eq!(s.state(), RemoteState::Canceled);
    }

    #[test]
    fn rejected_answer_without_ending_returns_to_received() {
        let mut s = RemoteInvitationState::new();
        s.accept().unwrap();
        s.on_answer_error();
        assert_eq!(s.state(), RemoteState::InvitationReceived);
        assert_eq!(s.accept(), Ok(()));
    }

    #[test]
    fn session_loss() {
        let mut s = RemoteInvitationState::new();
        assert_eq!(
            s.on_session_lost(),
            Some(RemoteEvent::Failure(FailureReason::NotLoggedIn))
        );
        assert_eq!(s.on_session_lost(), None);
    }
}
