//! Endings nobody asked for: a device of the invitation going away, and the
//! server shutting down.

use std::time::Instant;

use super::{Effect, GoneCause, Outcome, Phase, Record};
use crate::codes::{CallEndReason, FailureReason};
use crate::wire::{DeviceId, ServerMessage};

impl Record {
    pub(super) fn on_device_gone(
        &mut self,
        device: DeviceId,
        cause: GoneCause,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let id = self.id.clone();
        match &mut self.phase {
            Phase::Ringing {
                received_by_peer,
                offline_deadline,
                no_response_deadline,
                ..
            } => {
                if device == self.caller.device {
                    // The caller's own client reports not_logged_in; its callee devices learn the caller is gone.
                    self.fail(FailureReason::PeerOffline, None, now, fx);
                } else if self.delivered.remove(&device).is_some() && self.delivered.is_empty() {
                    *no_response_deadline = None;
                    if !*received_by_peer {
                        *offline_deadline = Some(now + self.timeouts.offline);
                    }
                }
            }
            Phase::Canceling { awaiting, .. } => {
                if device == self.caller.device {
                    // Nobody left to tell; the callees were already told.
                    self.end(Outcome::Canceled, now);
                } else {
                    self.delivered.remove(&device);
                    awaiting.remove(&device);
                    if awaiting.is_empty() {
                        self.finish_cancel(now, fx);
                    }
                }
            }
            Phase::InCall { callee_device, .. } => {
                let callee_device = *callee_device;
                let other = if device == self.caller.device {
                    callee_device
                } else if device == callee_device {
                    self.caller.device
                } else {
                    self.delivered.remove(&device);
                    return;
                };
                let reason = match cause {
                    GoneCause::Logout => CallEndReason::PeerLoggedOut,
                    GoneCause::ConnectionLost => CallEndReason::PeerConnectionLost,
                };
                fx.push(Effect {
                    to: other,
                    msg: ServerMessage::CallEnded {
                        invitation_id: id,
                        reason,
                        by: None,
                    },
                });
                self.end(
                    Outcome::CallEnded {
                        accepted_by: callee_device,
                        reason,
                    },
                    now,
                );
            }
            Phase::Ended { .. } => {}
        }
    }

    pub(super) fn on_shutdown(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let id = self.id.clone();
        match self.phase {
            Phase::Ringing { .. } => self.fail(
                FailureReason::ServerShutdown,
                Some(FailureReason::ServerShutdown),
                now,
                fx,
            ),
            // The callees were told; the caller's cancel completes.
            Phase::Canceling { .. } => self.finish_cancel(now, fx),
            Phase::InCall { callee_device, .. } => {
                let msg = ServerMessage::CallEnded {
                    invitation_id: id,
                    reason: CallEndReason::ServerShutdown,
                    by: None,
                };
                fx.push(Effect {
                    to: callee_device,
                    msg: msg.clone(),
                });
                fx.push(Effect {
                    to: self.caller.device,
                    msg,
                });
                self.end(
                    Outcome::CallEnded {
                        accepted_by: callee_device,
                        reason: CallEndReason::ServerShutdown,
                    },
                    now,
                );
            }
            Phase::Ended { .. } => {}
        }
    }
}
