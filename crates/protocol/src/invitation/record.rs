//! The server's record of one invitation (caller device → every device of the callee).
//!
//! Phases:
//!
//! ```text
//!            ┌──────── accept ────────► InCall ── hang-up / party gone ──► Ended(CallEnded)
//!  Ringing ──┼──────── refuse ────────► Ended(Refused)
//!            ├──────── cancel ────────► Canceling ── all callee acks / cancel_ack timeout ──► Ended(Canceled)
//!            └── timeout / caller gone ► Ended(Failed(reason))
//! ```
//!
//! Ordering guarantees produced here (the server sends effects in order, and
//! each connection is FIFO):
//! - send: the caller's `received_by_peer` is only emitted after a callee
//!   device `ack`ed the `invitation`, so the callee heard of it first;
//! - cancel: the caller's `canceled` is only emitted after every callee device
//!   that had the invitation `ack`ed the `canceled` (or went away, or
//!   `cancel_ack` passed);
//! - every other ending of a ringing invitation is sent to the callee's
//!   devices before the caller; a hang-up goes to the other party first;
//! - an answer implies receipt: if a device answers before any device acked,
//!   the caller still gets `received_by_peer` before `accepted`/`refused`.
//!
//! An ended invitation is remembered for `retention` so that late requests get a
//! precise `already_*` error instead of `not_found`. What that takes is small —
//! who the caller and callee are, the caller's device and how it ended — and
//! [`Record::tombstone`] gives exactly that as a [`Tombstone`], which answers
//! late requests as the ended record does (the record itself answers them
//! through its tombstone). A server keeps the tombstone, not the record with
//! its content and callee devices.
//!
//! Layout: this file holds the state ([`Record`] and its phase), the entry
//! point [`Record::handle`] that dispatches each input, and the helpers every
//! transition uses; the transitions live by input family in `ringing.rs`
//! (callee devices online, acks, accept, refuse, cancel), `call.rs` (hang-up,
//! media signals), `endings.rs` (a device gone, shutdown) and `timers.rs`
//! (deadlines and `Tick`); `interface.rs` has the inputs, effects, outcomes and
//! timeouts; `tombstone.rs` the late answers of an ended invitation; the unit
//! tests are in `tests.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::codes::{ErrorCode, FailureReason};
use crate::user_id::UserId;
use crate::wire::{AckOf, DeviceId, InvitationId, ServerMessage};

mod call;
mod endings;
mod interface;
mod ringing;
mod timers;
mod tombstone;

pub use interface::{Effect, GoneCause, Input, Outcome, Party, Timeouts};
use tombstone::late_answer;
pub use tombstone::Tombstone;

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Ringing {
        received_by_peer: bool,
        /// Set while no callee device has the invitation.
        offline_deadline: Option<Instant>,
        /// Set while delivered but not yet acknowledged by any device.
        no_response_deadline: Option<Instant>,
        ring_deadline: Instant,
    },
    Canceling {
        awaiting: BTreeSet<DeviceId>,
        deadline: Instant,
    },
    InCall {
        callee_device: DeviceId,
        /// Media signals relayed so far from the caller's and the callee's
        /// device, each bounded by [`MAX_SIGNALS_PER_CALL`].
        signals: [u32; 2],
    },
    Ended {
        outcome: Outcome,
        gc_at: Instant,
    },
}

/// The authoritative record of one invitation.
#[derive(Clone, Debug)]
pub struct Record {
    id: InvitationId,
    caller: Party,
    callee: UserId,
    content: String,
    timeouts: Timeouts,
    /// Callee devices that were sent the `invitation`, and whether each acked it.
    delivered: BTreeMap<DeviceId, bool>,
    phase: Phase,
    /// When it was sent (for latency figures).
    created_at: Instant,
}

impl Record {
    /// Creates the record for a validated `invite` and returns the messages to
    /// send: the caller's `invite_ok` first, then an `invitation` to each
    /// online callee device.
    // Each argument is a separate fact of a validated `invite` (who, which
    // request, to whom, what, which devices, which timeouts, when); a struct
    // would only rename them at the few call sites.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: InvitationId,
        caller: Party,
        req: u64,
        callee: UserId,
        content: String,
        callee_devices: &[DeviceId],
        timeouts: Timeouts,
        now: Instant,
    ) -> (Record, Vec<Effect>) {
        let online = !callee_devices.is_empty();
        let mut record = Record {
            id: id.clone(),
            caller,
            callee,
            content,
            timeouts,
            delivered: BTreeMap::new(),
            created_at: now,
            phase: Phase::Ringing {
                received_by_peer: false,
                offline_deadline: (!online).then(|| now + timeouts.offline),
                no_response_deadline: online.then(|| now + timeouts.no_response),
                ring_deadline: now + timeouts.ring,
            },
        };
        let mut fx = vec![Effect {
            to: record.caller.device,
            msg: ServerMessage::InviteOk {
                req,
                invitation_id: id,
                callee_online: online,
            },
        }];
        for &d in callee_devices {
            record.deliver(d, &mut fx);
        }
        (record, fx)
    }

    pub fn id(&self) -> &InvitationId {
        &self.id
    }
    /// When the invitation was sent.
    pub fn created_at(&self) -> Instant {
        self.created_at
    }
    pub fn caller(&self) -> &Party {
        &self.caller
    }
    pub fn callee(&self) -> &UserId {
        &self.callee
    }
    /// The text sent with the invitation.
    pub fn content(&self) -> &str {
        &self.content
    }
    /// Still waiting for an answer (new callee devices should be told).
    pub fn is_ringing(&self) -> bool {
        matches!(self.phase, Phase::Ringing { .. })
    }
    /// Accepted and not yet hung up.
    pub fn is_in_call(&self) -> bool {
        matches!(self.phase, Phase::InCall { .. })
    }
    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Ended { outcome, .. } => Some(outcome),
            _ => None,
        }
    }
    /// A short name of the phase, for logs.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Ringing {
                received_by_peer: false,
                offline_deadline: Some(_),
                ..
            } => "waiting_for_callee",
            Phase::Ringing {
                received_by_peer: false,
                ..
            } => "delivering",
            Phase::Ringing { .. } => "ringing",
            Phase::Canceling { .. } => "canceling",
            Phase::InCall { .. } => "in_call",
            Phase::Ended { .. } => "ended",
        }
    }
    /// The devices this record may still send to (for the server's indexes).
    pub fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        std::iter::once(self.caller.device).chain(self.delivered.keys().copied())
    }

    /// Applies one input at time `now`; returns the messages to send, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        if let Phase::Ended { outcome, .. } = self.phase {
            // Only answers to late requests, the same as its tombstone's.
            return late_answer(
                &self.caller.user,
                self.caller.device,
                &self.callee,
                outcome,
                input,
            )
            .into_iter()
            .collect();
        }
        let mut fx = Vec::new();
        match input {
            Input::CalleeDeviceOnline(device) => self.on_callee_online(device, now, &mut fx),
            Input::Ack {
                from,
                of: AckOf::Invitation,
            } => self.on_ack_invitation(from, &mut fx),
            Input::Ack {
                from,
                of: AckOf::Canceled,
            } => self.on_ack_canceled(from, now, &mut fx),
            Input::Accept {
                from,
                req,
                response,
            } => self.on_accept(from, req, response, &mut fx),
            Input::Refuse {
                from,
                req,
                response,
                busy,
            } => self.on_refuse(from, req, response, busy, now, &mut fx),
            Input::Cancel { from, req } => self.on_cancel(from, req, now, &mut fx),
            Input::Hangup { from, req } => self.on_hangup(from, req, now, &mut fx),
            Input::Media { from, req, signal } => self.on_media(from, req, signal, &mut fx),
            Input::DeviceGone { device, cause } => self.on_device_gone(device, cause, now, &mut fx),
            Input::Tick => self.on_tick(now, &mut fx),
            Input::Shutdown => self.on_shutdown(now, &mut fx),
        }
        fx
    }

    fn deliver(&mut self, device: DeviceId, fx: &mut Vec<Effect>) {
        if self.delivered.insert(device, false).is_none() {
            fx.push(Effect {
                to: device,
                msg: ServerMessage::Invitation {
                    invitation_id: self.id.clone(),
                    caller: self.caller.user.to_string(),
                    content: self.content.clone(),
                },
            });
        }
    }

    fn send_callees(&self, except: Option<DeviceId>, msg: ServerMessage, fx: &mut Vec<Effect>) {
        for &d in self.delivered.keys() {
            if Some(d) != except {
                fx.push(Effect {
                    to: d,
                    msg: msg.clone(),
                });
            }
        }
    }

    fn end(&mut self, outcome: Outcome, now: Instant) {
        self.phase = Phase::Ended {
            outcome,
            gc_at: now + self.timeouts.retention,
        };
    }

    fn fail(
        &mut self,
        reason_callee: FailureReason,
        reason_caller: Option<FailureReason>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let id = self.id.clone();
        self.send_callees(
            None,
            ServerMessage::Failed {
                invitation_id: id.clone(),
                reason: reason_callee,
            },
            fx,
        );
        let outcome = match reason_caller {
            Some(reason) => {
                fx.push(Effect {
                    to: self.caller.device,
                    msg: ServerMessage::Failed {
                        invitation_id: id,
                        reason,
                    },
                });
                reason
            }
            None => reason_callee,
        };
        self.end(Outcome::Failed(outcome), now);
    }

    fn reply(fx: &mut Vec<Effect>, to: DeviceId, req: u64) {
        fx.push(Effect {
            to,
            msg: ServerMessage::Ok { req: Some(req) },
        });
    }

    fn reject(fx: &mut Vec<Effect>, to: DeviceId, req: u64, code: ErrorCode, message: &str) {
        fx.push(Effect {
            to,
            msg: ServerMessage::error(Some(req), code, message),
        });
    }

    /// The error for acting on an invitation that can no longer take that action.
    fn misuse(&self, device: DeviceId) -> (ErrorCode, &'static str) {
        match self.phase {
            Phase::Ringing { .. } => (
                ErrorCode::InvalidArgument,
                "the invitation has not been answered yet",
            ),
            Phase::InCall { callee_device, .. }
                if callee_device == device || self.caller.device == device =>
            {
                (
                    ErrorCode::AlreadyAccepted,
                    "the invitation was already accepted",
                )
            }
            Phase::InCall { .. } => (
                ErrorCode::AlreadyEnded,
                "the invitation was answered on another device",
            ),
            // Canceling (an ended record answers through `late_answer`).
            _ => (ErrorCode::AlreadyEnded, "the invitation has already ended"),
        }
    }
}

#[cfg(test)]
mod tests;
