//! A ringing invitation: callee devices coming online, acks, the callee's
//! answer (accept or refuse) and the caller's cancel.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Effect, Outcome, Party, Phase, Record};
use crate::codes::{ErrorCode, FailureReason};
use crate::wire::{DeviceId, ServerMessage};

impl Record {
    pub(super) fn on_callee_online(
        &mut self,
        device: DeviceId,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if let Phase::Ringing {
            received_by_peer,
            offline_deadline,
            no_response_deadline,
            ..
        } = &mut self.phase
        {
            if offline_deadline.take().is_some() && !*received_by_peer {
                *no_response_deadline = Some(now + self.timeouts.no_response);
            }
            self.deliver(device, fx);
        }
    }

    pub(super) fn on_ack_invitation(&mut self, from: DeviceId, fx: &mut Vec<Effect>) {
        let Some(acked) = self.delivered.get_mut(&from) else {
            return;
        };
        *acked = true;
        self.received(fx);
    }

    pub(super) fn on_ack_canceled(&mut self, from: DeviceId, now: Instant, fx: &mut Vec<Effect>) {
        if let Phase::Canceling { awaiting, .. } = &mut self.phase {
            awaiting.remove(&from);
            if awaiting.is_empty() {
                self.finish_cancel(now, fx);
            }
        }
    }

    pub(super) fn finish_cancel(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        fx.push(Effect {
            to: self.caller.device,
            msg: ServerMessage::Canceled {
                invitation_id: self.id.clone(),
            },
        });
        self.end(Outcome::Canceled, now);
    }

    pub(super) fn on_accept(
        &mut self,
        from: Party,
        req: u64,
        response: String,
        fx: &mut Vec<Effect>,
    ) {
        if self.answer(&from, req, FailureReason::AnsweredElsewhere, fx) {
            fx.push(Effect {
                to: self.caller.device,
                msg: ServerMessage::Accepted {
                    invitation_id: self.id.clone(),
                    response,
                },
            });
            self.phase = Phase::InCall {
                callee_device: from.device,
                signals: [0, 0],
            };
        }
    }

    pub(super) fn on_refuse(
        &mut self,
        from: Party,
        req: u64,
        response: String,
        busy: bool,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.answer(&from, req, FailureReason::DeclinedElsewhere, fx) {
            fx.push(Effect {
                to: self.caller.device,
                msg: ServerMessage::Refused {
                    invitation_id: self.id.clone(),
                    response,
                    busy,
                },
            });
            self.end(
                Outcome::Refused {
                    by: from.device,
                    busy,
                },
                now,
            );
        }
    }

    /// The part of accept and refuse that is the same: only the callee may
    /// answer, only while ringing; the answering device gets `ok` and every
    /// other device of the callee gets `failed` with `elsewhere`. Returns
    /// false (after queueing the error) when the answer is refused.
    pub(super) fn answer(
        &mut self,
        from: &Party,
        req: u64,
        elsewhere: FailureReason,
        fx: &mut Vec<Effect>,
    ) -> bool {
        if from.user != self.callee {
            Self::reject(
                fx,
                from.device,
                req,
                ErrorCode::NotFound,
                "no such invitation for you",
            );
            return false;
        }
        if !self.is_ringing() {
            let (code, msg) = self.misuse(from.device);
            Self::reject(fx, from.device, req, code, msg);
            return false;
        }
        self.answered_by(from.device, fx);
        Self::reply(fx, from.device, req);
        let msg = ServerMessage::Failed {
            invitation_id: self.id.clone(),
            reason: elsewhere,
        };
        self.send_callees(Some(from.device), msg, fx);
        true
    }

    /// A callee device has the invitation: the first time, while ringing,
    /// the caller gets `received_by_peer` and the no-response timer stops.
    fn received(&mut self, fx: &mut Vec<Effect>) {
        if let Phase::Ringing {
            received_by_peer,
            no_response_deadline,
            ..
        } = &mut self.phase
        {
            if !*received_by_peer {
                *received_by_peer = true;
                *no_response_deadline = None;
                fx.push(Effect {
                    to: self.caller.device,
                    msg: ServerMessage::ReceivedByPeer {
                        invitation_id: self.id.clone(),
                    },
                });
            }
        }
    }

    /// A device answered: it evidently has the invitation. If nobody had
    /// acknowledged it yet, the caller learns of the receipt first.
    pub(super) fn answered_by(&mut self, device: DeviceId, fx: &mut Vec<Effect>) {
        // A device that logged in after delivery but raced its own invitation message still counts.
        self.delivered.insert(device, true);
        self.received(fx);
    }

    pub(super) fn on_cancel(&mut self, from: Party, req: u64, now: Instant, fx: &mut Vec<Effect>) {
        if from.user != self.caller.user {
            return Self::reject(
                fx,
                from.device,
                req,
                ErrorCode::NotFound,
                "no such invitation for you",
            );
        }
        if !self.is_ringing() {
            let (code, msg) = match self.phase {
                Phase::InCall { .. } => (
                    ErrorCode::AlreadyAccepted,
                    "the invitation was already accepted; hang up instead",
                ),
                // Canceling (an ended record answers through `late_answer`).
                _ => (ErrorCode::AlreadyEnded, "the invitation has already ended"),
            };
            return Self::reject(fx, from.device, req, code, msg);
        }
        Self::reply(fx, from.device, req);
        self.send_callees(
            None,
            ServerMessage::Canceled {
                invitation_id: self.id.clone(),
            },
            fx,
        );
        let awaiting: BTreeSet<DeviceId> = self.delivered.keys().copied().collect();
        if awaiting.is_empty() {
            self.finish_cancel(now, fx);
        } else {
            self.phase = Phase::Canceling {
                awaiting,
                deadline: now + self.timeouts.cancel_ack,
            };
        }
    }
}
