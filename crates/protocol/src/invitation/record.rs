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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::codes::{CallEndReason, ErrorCode, FailureReason};
use crate::media::MAX_SIGNALS_PER_CALL;
use crate::user_id::UserId;
use crate::wire::{AckOf, DeviceId, InvitationId, ServerMessage};

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

    /// The earliest instant at which a `Tick` has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Ringing {
                offline_deadline,
                no_response_deadline,
                ring_deadline,
                ..
            } => [
                *offline_deadline,
                *no_response_deadline,
                Some(*ring_deadline),
            ]
            .into_iter()
            .flatten()
            .min(),
            Phase::Canceling { deadline, .. } => Some(*deadline),
            Phase::InCall { .. } => None,
            Phase::Ended { gc_at, .. } => Some(*gc_at),
        }
    }

    /// Ended and past its retention: the server may forget it.
    pub fn is_finished(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Ended { gc_at, .. } if now >= gc_at)
    }

    /// What answers late requests once it has ended (`None` before).
    pub fn tombstone(&self) -> Option<Tombstone> {
        Some(Tombstone {
            caller: self.caller.user.clone(),
            caller_device: self.caller.device,
            callee: self.callee.clone(),
            outcome: self.outcome()?,
        })
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

    fn on_callee_online(&mut self, device: DeviceId, now: Instant, fx: &mut Vec<Effect>) {
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

    fn on_ack_invitation(&mut self, from: DeviceId, fx: &mut Vec<Effect>) {
        let Some(acked) = self.delivered.get_mut(&from) else {
            return;
        };
        *acked = true;
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

    fn on_ack_canceled(&mut self, from: DeviceId, now: Instant, fx: &mut Vec<Effect>) {
        if let Phase::Canceling { awaiting, .. } = &mut self.phase {
            awaiting.remove(&from);
            if awaiting.is_empty() {
                self.finish_cancel(now, fx);
            }
        }
    }

    fn finish_cancel(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        fx.push(Effect {
            to: self.caller.device,
            msg: ServerMessage::Canceled {
                invitation_id: self.id.clone(),
            },
        });
        self.end(Outcome::Canceled, now);
    }

    fn on_accept(&mut self, from: Party, req: u64, response: String, fx: &mut Vec<Effect>) {
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

    fn on_refuse(
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
    fn answer(
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

    /// A device answered: it evidently has the invitation. If nobody had
    /// acknowledged it yet, the caller learns of the receipt first.
    fn answered_by(&mut self, device: DeviceId, fx: &mut Vec<Effect>) {
        // A device that logged in after delivery but raced its own invitation message still counts.
        self.delivered.insert(device, true);
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

    fn on_cancel(&mut self, from: Party, req: u64, now: Instant, fx: &mut Vec<Effect>) {
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

    fn on_hangup(&mut self, from: Party, req: u64, now: Instant, fx: &mut Vec<Effect>) {
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
    fn on_media(
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

    fn on_device_gone(
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

    fn on_shutdown(&mut self, now: Instant, fx: &mut Vec<Effect>) {
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

    fn on_tick(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        match &self.phase {
            Phase::Ringing {
                offline_deadline,
                no_response_deadline,
                ring_deadline,
                ..
            } => {
                // Fire the earliest due deadline; ring expiry wins ties.
                let due = [
                    (Some(*ring_deadline), FailureReason::Expired),
                    (*offline_deadline, FailureReason::PeerOffline),
                    (*no_response_deadline, FailureReason::NoResponse),
                ]
                .into_iter()
                .filter_map(|(d, r)| d.filter(|d| *d <= now).map(|d| (d, r)))
                .min_by_key(|(d, _)| *d);
                match due {
                    Some((_, FailureReason::Expired)) => self.fail(
                        FailureReason::Expired,
                        Some(FailureReason::Expired),
                        now,
                        fx,
                    ),
                    Some((_, FailureReason::PeerOffline)) => self.fail(
                        FailureReason::Expired,
                        Some(FailureReason::PeerOffline),
                        now,
                        fx,
                    ),
                    Some((_, reason)) => self.fail(FailureReason::Expired, Some(reason), now, fx),
                    None => {}
                }
            }
            Phase::Canceling { deadline, .. } if *deadline <= now => self.finish_cancel(now, fx),
            _ => {}
        }
    }
}

/// What is left of an ended invitation: enough to answer a late request
/// exactly as the ended [`Record`] would ([`Record::handle`] answers through
/// the same code), and nothing else — no content, no responses, no callee
/// devices, no timers. The user ids are shared with the server's other
/// copies ([`UserId`] clones are reference counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    caller: UserId,
    caller_device: DeviceId,
    callee: UserId,
    outcome: Outcome,
}

impl Tombstone {
    /// How the invitation ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    pub fn caller(&self) -> &UserId {
        &self.caller
    }
    /// The device the invitation was sent from.
    pub fn caller_device(&self) -> DeviceId {
        self.caller_device
    }
    pub fn callee(&self) -> &UserId {
        &self.callee
    }

    /// The answer to a late input: an error for an `accept`, `refuse`,
    /// `cancel`, `hangup` or media signal (who gets which is the ended
    /// columns of PROTOCOL.md §3.11), nothing for anything else.
    pub fn handle(&self, input: Input) -> Option<Effect> {
        late_answer(
            &self.caller,
            self.caller_device,
            &self.callee,
            self.outcome,
            input,
        )
    }
}

/// An ended invitation's answer to `input` (see [`Tombstone::handle`]).
fn late_answer(
    caller: &UserId,
    caller_device: DeviceId,
    callee: &UserId,
    outcome: Outcome,
    input: Input,
) -> Option<Effect> {
    let (from, req, allowed) = match &input {
        Input::Accept { from, req, .. } | Input::Refuse { from, req, .. } => {
            (from, *req, from.user == *callee)
        }
        Input::Cancel { from, req } => (from, *req, from.user == *caller),
        Input::Hangup { from, req } | Input::Media { from, req, .. } => {
            (from, *req, from.user == *caller || from.user == *callee)
        }
        _ => return None,
    };
    let (code, message) = if !allowed {
        (ErrorCode::NotFound, "no such invitation for you")
    } else {
        match (&input, outcome) {
            (Input::Accept { .. } | Input::Refuse { .. }, Outcome::Refused { by, .. })
                if by == from.device || caller_device == from.device =>
            {
                (
                    ErrorCode::AlreadyRefused,
                    "the invitation was already refused",
                )
            }
            (
                Input::Accept { .. } | Input::Refuse { .. },
                Outcome::CallEnded { accepted_by, .. },
            ) if accepted_by == from.device => (
                ErrorCode::AlreadyAccepted,
                "the invitation was already accepted (and the call has ended)",
            ),
            (Input::Accept { .. } | Input::Refuse { .. }, _) => {
                (ErrorCode::AlreadyEnded, "the invitation has already ended")
            }
            (Input::Cancel { .. }, Outcome::CallEnded { .. }) => (
                ErrorCode::AlreadyAccepted,
                "the invitation was already accepted",
            ),
            (Input::Cancel { .. }, Outcome::Refused { .. }) => (
                ErrorCode::AlreadyRefused,
                "the invitation was already refused",
            ),
            (Input::Cancel { .. }, _) => {
                (ErrorCode::AlreadyEnded, "the invitation has already ended")
            }
            _ => (ErrorCode::AlreadyEnded, "the call has already ended"),
        }
    };
    Some(Effect {
        to: from.device,
        msg: ServerMessage::error(Some(req), code, message),
    })
}

#[cfg(test)]
mod tests;
