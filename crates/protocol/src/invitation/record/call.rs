//! An established call: hang-up and the media signals relayed between its
//! two devices.

use std::time::Instant;

use super::{Effect, Outcome, Party, Phase, Record};
use crate::codes::{CallEndReason, ErrorCode};
use crate::media::MAX_SIGNALS_PER_CALL;
use crate::wire::ServerMessage;

impl Record {
    pub(super) fn on_hangup(&mut self, from: Party, req: u64, now: Instant, fx: &mut Vec<Effect>) {
        if from.user != self.caller.user && from.user != self.callee {
            return Self::reject(
                fx,
                from.device,
                req,
                ErrorCode::NotFound,
                "no such invitation for you",
            );
        }
        let Phase::InCall { callee_device, .. } = self.phase else {
            let (code, msg) = match self.phase {
                Phase::Ringing { .. } => (
                    ErrorCode::InvalidArgument,
                    "the call is not established; cancel or refuse the invitation instead",
                ),
                _ => (ErrorCode::AlreadyEnded, "the call has already ended"),
            };
            return Self::reject(fx, from.device, req, code, msg);
        };
        Self::reply(fx, from.device, req);
        let msg = ServerMessage::CallEnded {
            invitation_id: self.id.clone(),
            reason: CallEndReason::Hangup,
            by: Some(from.user.to_string()),
        };
        // The other party first, then the one who hung up.
        let (first, second) = if from.user == self.callee {
            (self.caller.device, callee_device)
        } else {
            (callee_device, self.caller.device)
        };
        fx.push(Effect {
            to: first,
            msg: msg.clone(),
        });
        fx.push(Effect { to: second, msg });
        self.end(
            Outcome::CallEnded {
                accepted_by: callee_device,
                reason: CallEndReason::Hangup,
            },
            now,
        );
    }

    /// Relays a media signal between the two devices of the call: the
    /// sender gets `ok`, the other device the signal. Only those two devices
    /// may signal, only while the call is established, and each at most
    /// [`MAX_SIGNALS_PER_CALL`] times.
    pub(super) fn on_media(
        &mut self,
        from: Party,
        req: u64,
        signal: crate::media::MediaSignal,
        fx: &mut Vec<Effect>,
    ) {
        if from.user != self.caller.user && from.user != self.callee {
            return Self::reject(
                fx,
                from.device,
                req,
                ErrorCode::NotFound,
                "no such invitation for you",
            );
        }
        let caller_device = self.caller.device;
        let Phase::InCall {
            callee_device,
            signals,
        } = &mut self.phase
        else {
            let (code, msg) = match self.phase {
                Phase::Ringing { .. } | Phase::Canceling { .. } => (
                    ErrorCode::InvalidArgument,
                    "the call is not established; media signals need an accepted call",
                ),
                _ => (ErrorCode::AlreadyEnded, "the call has already ended"),
            };
            return Self::reject(fx, from.device, req, code, msg);
        };
        let (side, to) = if from.device == caller_device {
            (0, *callee_device)
        } else if from.device == *callee_device {
            (1, caller_device)
        } else {
            return Self::reject(
                fx,
                from.device,
                req,
                ErrorCode::NotInCall,
                "this device is not in the call (another device of yours took it)",
            );
        };
        if let Err(why) = signal.check() {
            return fx.push(Effect {
                to: from.device,
                msg: ServerMessage::error(Some(req), ErrorCode::InvalidArgument, why),
            });
        }
        if signals[side] >= MAX_SIGNALS_PER_CALL {
            return fx.push(Effect {
                to: from.device,
                msg: ServerMessage::error(
                    Some(req),
                    ErrorCode::RateLimited,
                    format!("more than {MAX_SIGNALS_PER_CALL} media signals from this device in one call"),
                ),
            });
        }
        signals[side] += 1;
        Self::reply(fx, from.device, req);
        fx.push(Effect {
            to,
            msg: ServerMessage::Media {
                invitation_id: self.id.clone(),
                from: from.user.to_string(),
                signal,
            },
        });
    }
}
