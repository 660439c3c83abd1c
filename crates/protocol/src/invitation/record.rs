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
mod tests {
    use super::*;

    const CALLER_DEV: DeviceId = DeviceId(1);
    const B1: DeviceId = DeviceId(21);
    const B2: DeviceId = DeviceId(22);
    const MALLORY_DEV: DeviceId = DeviceId(99);

    fn alice() -> Party {
        Party {
            user: UserId::parse("alice").unwrap(),
            device: CALLER_DEV,
        }
    }
    fn bob(device: DeviceId) -> Party {
        Party {
            user: UserId::parse("bob").unwrap(),
            device,
        }
    }
    fn mallory() -> Party {
        Party {
            user: UserId::parse("mallory").unwrap(),
            device: MALLORY_DEV,
        }
    }
    fn iid() -> InvitationId {
        InvitationId("inv".into())
    }
    fn new(devices: &[DeviceId], t0: Instant) -> (Record, Vec<Effect>) {
        Record::new(
            iid(),
            alice(),
            1,
            UserId::parse("bob").unwrap(),
            "hello".into(),
            devices,
            Timeouts::default(),
            t0,
        )
    }
    fn to(to: DeviceId, msg: ServerMessage) -> Effect {
        Effect { to, msg }
    }
    fn failed(reason: FailureReason) -> ServerMessage {
        ServerMessage::Failed {
            invitation_id: iid(),
            reason,
        }
    }
    fn ok(req: u64) -> ServerMessage {
        ServerMessage::Ok { req: Some(req) }
    }
    fn err_code(fx: &[Effect]) -> ErrorCode {
        match fx {
            [Effect {
                msg: ServerMessage::Error { code, .. },
                ..
            }] => *code,
            other => panic!("expected one error, got {other:?}"),
        }
    }
    fn invitation() -> ServerMessage {
        ServerMessage::Invitation {
            invitation_id: iid(),
            caller: "alice".into(),
            content: "hello".into(),
        }
    }
    /// Delivered to B1 and B2, acked by B1: ringing.
    fn media(from: Party, req: u64, signal: crate::media::MediaSignal) -> Input {
        Input::Media { from, req, signal }
    }

    fn candidate() -> crate::media::MediaSignal {
        crate::media::MediaSignal::Candidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
        }
    }

    #[test]
    fn media_signals_go_only_between_the_two_devices_of_the_call() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        // Not yet a call: nothing is relayed.
        assert_eq!(
            err_code(&r.handle(media(alice(), 1, candidate()), t0)),
            ErrorCode::InvalidArgument
        );
        r.handle(
            Input::Accept {
                from: bob(B1),
                req: 2,
                response: String::new(),
            },
            t0,
        );
        let relayed = |from: &str| ServerMessage::Media {
            invitation_id: iid(),
            from: from.into(),
            signal: candidate(),
        };
        assert_eq!(
            r.handle(media(alice(), 3, candidate()), t0),
            vec![to(CALLER_DEV, ok(3)), to(B1, relayed("alice"))]
        );
        assert_eq!(
            r.handle(media(bob(B1), 4, candidate()), t0),
            vec![to(B1, ok(4)), to(CALLER_DEV, relayed("bob"))]
        );
        // bob's other device, a stranger, and a malformed signal are refused, with nothing relayed.
        assert_eq!(
            err_code(&r.handle(media(bob(B2), 5, candidate()), t0)),
            ErrorCode::NotInCall
        );
        assert_eq!(
            err_code(&r.handle(media(mallory(), 6, candidate()), t0)),
            ErrorCode::NotFound
        );
        let bad = crate::media::MediaSignal::Offer {
            sdp: "not sdp".into(),
        };
        assert_eq!(
            err_code(&r.handle(media(alice(), 7, bad), t0)),
            ErrorCode::InvalidArgument
        );
        assert_eq!(r.phase_name(), "in_call", "refusals change nothing");
        // After the hang-up: already ended.
        r.handle(
            Input::Hangup {
                from: alice(),
                req: 8,
            },
            t0,
        );
        assert_eq!(
            err_code(&r.handle(media(bob(B1), 9, candidate()), t0)),
            ErrorCode::AlreadyEnded
        );
    }

    #[test]
    fn a_candidate_flood_is_cut_off_per_device_and_the_call_goes_on() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        r.handle(
            Input::Accept {
                from: bob(B1),
                req: 1,
                response: String::new(),
            },
            t0,
        );
        for i in 0..crate::media::MAX_SIGNALS_PER_CALL as u64 {
            assert_eq!(r.handle(media(alice(), 10 + i, candidate()), t0).len(), 2);
        }
        assert_eq!(
            err_code(&r.handle(media(alice(), 999, candidate()), t0)),
            ErrorCode::RateLimited
        );
        // bob's budget is his own, and the call is still up.
        assert_eq!(r.handle(media(bob(B1), 1000, candidate()), t0).len(), 2);
        assert_eq!(r.phase_name(), "in_call");
    }

    /// The ended columns of PROTOCOL.md §3.11, request by request and party
    /// by party, from the ended record and from its tombstone alike; and the
    /// tombstone keeps none of the content.
    #[test]
    fn a_tombstone_answers_late_requests_as_the_ended_record() {
        use ErrorCode::*;
        let t0 = Instant::now();
        let accept = |from: Party, req| Input::Accept {
            from,
            req,
            response: "late".into(),
        };
        let refuse = |from: Party, req| Input::Refuse {
            from,
            req,
            response: String::new(),
            busy: false,
        };
        let cancel = |from: Party, req| Input::Cancel { from, req };
        let hangup = |from: Party, req| Input::Hangup { from, req };
        let signal = |from: Party, req| media(from, req, candidate());
        // alice's other device: the caller user, not the caller device.
        let alice2 = Party {
            user: UserId::parse("alice").unwrap(),
            device: DeviceId(2),
        };
        // The four ways to end, each from a ringing record (B1 acked, B2 rings).
        let refused = {
            let mut r = ringing(t0);
            r.handle(refuse(bob(B1), 1), t0);
            r
        };
        let call_over = {
            let mut r = ringing(t0);
            r.handle(accept(bob(B1), 1), t0);
            r.handle(hangup(alice(), 2), t0);
            r
        };
        let canceled = {
            let mut r = ringing(t0);
            r.handle(cancel(alice(), 1), t0);
            r.handle(Input::Tick, t0 + secs(3));
            r
        };
        let failed = {
            let mut r = ringing(t0);
            r.handle(Input::Tick, t0 + secs(60));
            r
        };
        type Late = fn(Party, u64) -> Input;
        let (acc, refu, can, hang, sig): (Late, Late, Late, Late, Late) =
            (accept, refuse, cancel, hangup, signal);
        // (record, request, who, expected code, expected message)
        let cases: Vec<(&Record, Late, Party, ErrorCode, &str)> = vec![
            (
                &refused,
                acc,
                bob(B1),
                AlreadyRefused,
                "the invitation was already refused",
            ),
            (
                &refused,
                refu,
                bob(B1),
                AlreadyRefused,
                "the invitation was already refused",
            ),
            (
                &refused,
                acc,
                bob(B2),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &refused,
                can,
                alice(),
                AlreadyRefused,
                "the invitation was already refused",
            ),
            (
                &refused,
                can,
                alice2.clone(),
                AlreadyRefused,
                "the invitation was already refused",
            ),
            (
                &refused,
                hang,
                bob(B2),
                AlreadyEnded,
                "the call has already ended",
            ),
            (
                &refused,
                sig,
                alice(),
                AlreadyEnded,
                "the call has already ended",
            ),
            (
                &call_over,
                acc,
                bob(B1),
                AlreadyAccepted,
                "the invitation was already accepted (and the call has ended)",
            ),
            (
                &call_over,
                refu,
                bob(B1),
                AlreadyAccepted,
                "the invitation was already accepted (and the call has ended)",
            ),
            (
                &call_over,
                acc,
                bob(B2),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &call_over,
                can,
                alice(),
                AlreadyAccepted,
                "the invitation was already accepted",
            ),
            (
                &call_over,
                hang,
                bob(B1),
                AlreadyEnded,
                "the call has already ended",
            ),
            (
                &call_over,
                hang,
                alice2.clone(),
                AlreadyEnded,
                "the call has already ended",
            ),
            (
                &call_over,
                sig,
                bob(B1),
                AlreadyEnded,
                "the call has already ended",
            ),
            (
                &canceled,
                acc,
                bob(B1),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &canceled,
                refu,
                bob(B2),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &canceled,
                can,
                alice(),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &canceled,
                hang,
                alice(),
                AlreadyEnded,
                "the call has already ended",
            ),
            (
                &failed,
                acc,
                bob(B2),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &failed,
                can,
                alice2.clone(),
                AlreadyEnded,
                "the invitation has already ended",
            ),
            (
                &failed,
                sig,
                bob(B1),
                AlreadyEnded,
                "the call has already ended",
            ),
        ];
        let everyone = [alice(), alice2.clone(), bob(B1), bob(B2), mallory()];
        let mut not_found = vec![];
        for r in [&refused, &call_over, &canceled, &failed] {
            // The caller cannot answer, the callee cannot cancel, strangers nothing.
            not_found.push((r, acc, alice()));
            not_found.push((r, refu, alice2.clone()));
            not_found.push((r, can, bob(B1)));
            for late in [acc, refu, can, hang, sig] {
                not_found.push((r, late, mallory()));
            }
        }
        let mut req = 100;
        let mut check = |r: &Record, late: Late, who: Party, code: ErrorCode, message: &str| {
            req += 1;
            let expected = vec![to(
                who.device,
                ServerMessage::error(Some(req), code, message),
            )];
            let tomb = r.tombstone().expect("ended");
            assert_eq!(
                r.clone().handle(late(who.clone(), req), t0 + secs(61)),
                expected
            );
            assert_eq!(
                tomb.handle(late(who, req)).into_iter().collect::<Vec<_>>(),
                expected
            );
        };
        for (r, late, who, code, message) in cases {
            check(r, late, who, code, message);
        }
        for (r, late, who) in not_found {
            check(r, late, who, NotFound, "no such invitation for you");
        }
        // Anything else changes nothing and says nothing.
        for r in [&refused, &call_over, &canceled, &failed] {
            let tomb = r.tombstone().unwrap();
            for who in &everyone {
                for input in [
                    Input::Ack {
                        from: who.device,
                        of: AckOf::Invitation,
                    },
                    Input::Ack {
                        from: who.device,
                        of: AckOf::Canceled,
                    },
                    Input::CalleeDeviceOnline(who.device),
                    Input::DeviceGone {
                        device: who.device,
                        cause: GoneCause::Logout,
                    },
                    Input::Tick,
                    Input::Shutdown,
                ] {
                    assert_eq!(r.clone().handle(input.clone(), t0 + secs(61)), vec![]);
                    assert_eq!(tomb.handle(input), None);
                }
            }
            assert_eq!(tomb.outcome(), r.outcome().unwrap());
            assert_eq!(tomb.caller_device(), CALLER_DEV);
        }
        assert_eq!(
            ringing(t0).tombstone(),
            None,
            "only an ended record has one"
        );
        assert!(
            std::mem::size_of::<Tombstone>() <= 56,
            "two shared user ids, a device and the outcome: {} bytes",
            std::mem::size_of::<Tombstone>()
        );
    }

    fn ringing(t0: Instant) -> Record {
        let (mut r, _) = new(&[B1, B2], t0);
        r.handle(
            Input::Ack {
                from: B1,
                of: AckOf::Invitation,
            },
            t0,
        );
        assert_eq!(r.phase_name(), "ringing");
        r
    }
    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn send_delivers_to_every_device_and_acks_in_order() {
        let t0 = Instant::now();
        let (mut r, fx) = new(&[B1, B2], t0);
        assert_eq!(
            fx,
            vec![
                to(
                    CALLER_DEV,
                    ServerMessage::InviteOk {
                        req: 1,
                        invitation_id: iid(),
                        callee_online: true
                    }
                ),
                to(B1, invitation()),
                to(B2, invitation()),
            ]
        );
        assert_eq!(r.phase_name(), "delivering");
        assert_eq!(r.deadline(), Some(t0 + secs(30)), "no-response window runs");
        // The first ack tells the caller; the callee's app had it before acking.
        let fx = r.handle(
            Input::Ack {
                from: B2,
                of: AckOf::Invitation,
            },
            t0 + secs(1),
        );
        assert_eq!(
            fx,
            vec![to(
                CALLER_DEV,
                ServerMessage::ReceivedByPeer {
                    invitation_id: iid()
                }
            )]
        );
        assert_eq!(
            r.handle(
                Input::Ack {
                    from: B1,
                    of: AckOf::Invitation
                },
                t0 + secs(1)
            ),
            vec![]
        );
        assert_eq!(
            r.deadline(),
            Some(t0 + secs(60)),
            "only the ring timeout is left"
        );
        // Acks from a device that never got it are ignored.
        assert_eq!(
            r.handle(
                Input::Ack {
                    from: MALLORY_DEV,
                    of: AckOf::Invitation
                },
                t0
            ),
            vec![]
        );
    }

    #[test]
    fn accept_wins_and_other_devices_hear_answered_elsewhere() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        let fx = r.handle(
            Input::Accept {
                from: bob(B2),
                req: 5,
                response: "on my way".into(),
            },
            t0 + secs(3),
        );
        assert_eq!(
            fx,
            vec![
                to(B2, ok(5)),
                to(B1, failed(FailureReason::AnsweredElsewhere)),
                to(
                    CALLER_DEV,
                    ServerMessage::Accepted {
                        invitation_id: iid(),
                        response: "on my way".into()
                    }
                ),
            ]
        );
        assert!(r.is_in_call());
        assert_eq!(r.deadline(), None, "a call has no timer");
        // The losing device's accept, arriving later, is told it was answered elsewhere.
        assert_eq!(
            err_code(&r.handle(
                Input::Accept {
                    from: bob(B1),
                    req: 6,
                    response: String::new()
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Accept {
                    from: bob(B2),
                    req: 7,
                    response: String::new()
                },
                t0
            )),
            ErrorCode::AlreadyAccepted
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Refuse {
                    from: bob(B2),
                    req: 8,
                    response: String::new(),
                    busy: false
                },
                t0
            )),
            ErrorCode::AlreadyAccepted
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Cancel {
                    from: alice(),
                    req: 9
                },
                t0
            )),
            ErrorCode::AlreadyAccepted
        );
        // Nothing expires during a call.
        assert_eq!(r.handle(Input::Tick, t0 + secs(3600)), vec![]);
    }

    #[test]
    fn answer_without_ack_still_tells_the_caller_it_was_received_first() {
        let t0 = Instant::now();
        let (mut r, _) = new(&[B1], t0);
        let fx = r.handle(
            Input::Accept {
                from: bob(B1),
                req: 3,
                response: String::new(),
            },
            t0,
        );
        assert_eq!(
            fx[0],
            to(
                CALLER_DEV,
                ServerMessage::ReceivedByPeer {
                    invitation_id: iid()
                }
            )
        );
        assert_eq!(
            fx.last(),
            Some(&to(
                CALLER_DEV,
                ServerMessage::Accepted {
                    invitation_id: iid(),
                    response: String::new()
                }
            ))
        );
    }

    #[test]
    fn refuse_busy_reaches_caller_and_other_devices_hear_declined_elsewhere() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        let fx = r.handle(
            Input::Refuse {
                from: bob(B1),
                req: 4,
                response: "busy".into(),
                busy: true,
            },
            t0,
        );
        assert_eq!(
            fx,
            vec![
                to(B1, ok(4)),
                to(B2, failed(FailureReason::DeclinedElsewhere)),
                to(
                    CALLER_DEV,
                    ServerMessage::Refused {
                        invitation_id: iid(),
                        response: "busy".into(),
                        busy: true
                    }
                ),
            ]
        );
        assert_eq!(r.outcome(), Some(Outcome::Refused { by: B1, busy: true }));
        assert_eq!(
            err_code(&r.handle(
                Input::Refuse {
                    from: bob(B1),
                    req: 5,
                    response: String::new(),
                    busy: false
                },
                t0
            )),
            ErrorCode::AlreadyRefused
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Accept {
                    from: bob(B2),
                    req: 6,
                    response: String::new()
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Cancel {
                    from: alice(),
                    req: 7
                },
                t0
            )),
            ErrorCode::AlreadyRefused
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Hangup {
                    from: alice(),
                    req: 8
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
    }

    #[test]
    fn cancel_tells_callees_first_and_caller_after_their_acks() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        let fx = r.handle(
            Input::Cancel {
                from: alice(),
                req: 3,
            },
            t0,
        );
        let canceled = ServerMessage::Canceled {
            invitation_id: iid(),
        };
        assert_eq!(
            fx,
            vec![
                to(CALLER_DEV, ok(3)),
                to(B1, canceled.clone()),
                to(B2, canceled.clone())
            ]
        );
        assert_eq!(r.phase_name(), "canceling");
        assert_eq!(
            r.handle(
                Input::Ack {
                    from: B1,
                    of: AckOf::Canceled
                },
                t0
            ),
            vec![]
        );
        // An accept arriving after the cancel loses: the cancel came first.
        assert_eq!(
            err_code(&r.handle(
                Input::Accept {
                    from: bob(B2),
                    req: 4,
                    response: String::new()
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
        let fx = r.handle(
            Input::Ack {
                from: B2,
                of: AckOf::Canceled,
            },
            t0,
        );
        assert_eq!(fx, vec![to(CALLER_DEV, canceled)]);
        assert_eq!(r.outcome(), Some(Outcome::Canceled));
        assert_eq!(
            err_code(&r.handle(
                Input::Cancel {
                    from: alice(),
                    req: 5
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
    }

    #[test]
    fn cancel_does_not_wait_forever_for_acks() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        r.handle(
            Input::Cancel {
                from: alice(),
                req: 3,
            },
            t0,
        );
        assert_eq!(r.deadline(), Some(t0 + secs(2)));
        assert_eq!(r.handle(Input::Tick, t0 + secs(1)), vec![]);
        let fx = r.handle(Input::Tick, t0 + secs(2));
        assert_eq!(
            fx,
            vec![to(
                CALLER_DEV,
                ServerMessage::Canceled {
                    invitation_id: iid()
                }
            )]
        );
    }

    #[test]
    fn cancel_while_callee_offline_completes_at_once() {
        let t0 = Instant::now();
        let (mut r, _) = new(&[], t0);
        let fx = r.handle(
            Input::Cancel {
                from: alice(),
                req: 2,
            },
            t0,
        );
        assert_eq!(
            fx,
            vec![
                to(CALLER_DEV, ok(2)),
                to(
                    CALLER_DEV,
                    ServerMessage::Canceled {
                        invitation_id: iid()
                    }
                )
            ]
        );
    }

    #[test]
    fn cancel_ack_wait_ends_when_device_goes_away() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        r.handle(
            Input::Cancel {
                from: alice(),
                req: 3,
            },
            t0,
        );
        r.handle(
            Input::Ack {
                from: B1,
                of: AckOf::Canceled,
            },
            t0,
        );
        let fx = r.handle(
            Input::DeviceGone {
                device: B2,
                cause: GoneCause::ConnectionLost,
            },
            t0,
        );
        assert_eq!(
            fx,
            vec![to(
                CALLER_DEV,
                ServerMessage::Canceled {
                    invitation_id: iid()
                }
            )]
        );
    }

    #[test]
    fn offline_callee_gets_it_on_login_within_the_window() {
        let t0 = Instant::now();
        let (mut r, fx) = new(&[], t0);
        assert_eq!(
            fx,
            vec![to(
                CALLER_DEV,
                ServerMessage::InviteOk {
                    req: 1,
                    invitation_id: iid(),
                    callee_online: false
                }
            )]
        );
        assert_eq!(r.phase_name(), "waiting_for_callee");
        assert_eq!(r.deadline(), Some(t0 + secs(30)));
        let fx = r.handle(Input::CalleeDeviceOnline(B1), t0 + secs(20));
        assert_eq!(fx, vec![to(B1, invitation())]);
        assert_eq!(
            r.deadline(),
            Some(t0 + secs(50)),
            "no-response window starts at delivery"
        );
        let fx = r.handle(
            Input::Ack {
                from: B1,
                of: AckOf::Invitation,
            },
            t0 + secs(21),
        );
        assert_eq!(
            fx,
            vec![to(
                CALLER_DEV,
                ServerMessage::ReceivedByPeer {
                    invitation_id: iid()
                }
            )]
        );
        assert_eq!(r.deadline(), Some(t0 + secs(60)));
        // A second device of the callee logging in also rings.
        assert_eq!(
            r.handle(Input::CalleeDeviceOnline(B2), t0 + secs(22)),
            vec![to(B2, invitation())]
        );
    }

    #[test]
    fn peer_offline_after_the_offline_window() {
        let t0 = Instant::now();
        let (mut r, _) = new(&[], t0);
        assert_eq!(r.handle(Input::Tick, t0 + secs(29)), vec![]);
        let fx = r.handle(Input::Tick, t0 + secs(30));
        assert_eq!(fx, vec![to(CALLER_DEV, failed(FailureReason::PeerOffline))]);
        assert_eq!(
            r.outcome(),
            Some(Outcome::Failed(FailureReason::PeerOffline))
        );
        // Kept for the retention time, then collectable.
        assert!(!r.is_finished(t0 + secs(89)));
        assert!(r.is_finished(t0 + secs(90)));
        // A device logging in after the end gets nothing.
        assert_eq!(
            r.handle(Input::CalleeDeviceOnline(B1), t0 + secs(31)),
            vec![]
        );
    }

    #[test]
    fn no_response_when_delivered_but_never_acked() {
        let t0 = Instant::now();
        let (mut r, _) = new(&[B1], t0);
        let fx = r.handle(Input::Tick, t0 + secs(30));
        assert_eq!(
            fx,
            vec![
                to(B1, failed(FailureReason::Expired)),
                to(CALLER_DEV, failed(FailureReason::NoResponse))
            ]
        );
    }

    #[test]
    fn expired_when_nobody_answers() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        assert_eq!(r.handle(Input::Tick, t0 + secs(59)), vec![]);
        let fx = r.handle(Input::Tick, t0 + secs(60));
        assert_eq!(
            fx,
            vec![
                to(B1, failed(FailureReason::Expired)),
                to(B2, failed(FailureReason::Expired)),
                to(CALLER_DEV, failed(FailureReason::Expired)),
            ]
        );
        // Expiry vs accept: the expiry was processed first, so the accept is too late.
        assert_eq!(
            err_code(&r.handle(
                Input::Accept {
                    from: bob(B1),
                    req: 9,
                    response: String::new()
                },
                t0 + secs(60)
            )),
            ErrorCode::AlreadyEnded
        );
    }

    #[test]
    fn accept_just_before_expiry_wins() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        r.handle(
            Input::Accept {
                from: bob(B1),
                req: 9,
                response: String::new(),
            },
            t0 + secs(59),
        );
        assert_eq!(r.handle(Input::Tick, t0 + secs(60)), vec![]);
        assert!(r.is_in_call());
    }

    #[test]
    fn earliest_deadline_fires_first_even_if_ticked_late() {
        let t0 = Instant::now();
        let (mut r, _) = new(&[B1], t0);
        // Ticked only after both no-response (30 s) and ring (60 s) passed: no_response is what happened first.
        let fx = r.handle(Input::Tick, t0 + secs(100));
        assert_eq!(
            fx.last(),
            Some(&to(CALLER_DEV, failed(FailureReason::NoResponse)))
        );
    }

    #[test]
    fn strangers_cannot_touch_it() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        for input in [
            Input::Accept {
                from: mallory(),
                req: 1,
                response: String::new(),
            },
            Input::Refuse {
                from: mallory(),
                req: 1,
                response: String::new(),
                busy: false,
            },
            Input::Cancel {
                from: mallory(),
                req: 1,
            },
            Input::Hangup {
                from: mallory(),
                req: 1,
            },
            // The callee cannot cancel, the caller cannot accept.
            Input::Cancel {
                from: bob(B1),
                req: 1,
            },
            Input::Accept {
                from: alice(),
                req: 1,
                response: String::new(),
            },
        ] {
            let fx = r.handle(input, t0);
            assert_eq!(err_code(&fx), ErrorCode::NotFound);
            assert!(fx
                .iter()
                .all(|e| e.to != CALLER_DEV || matches!(e.msg, ServerMessage::Error { .. })));
        }
        assert_eq!(r.phase_name(), "ringing", "nothing changed");
        assert_eq!(
            err_code(&r.handle(
                Input::Hangup {
                    from: alice(),
                    req: 2
                },
                t0
            )),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn hang_up_by_either_party_tells_the_other_first() {
        let t0 = Instant::now();
        for (hanger, first, second) in [(bob(B1), CALLER_DEV, B1), (alice(), B1, CALLER_DEV)] {
            let mut r = ringing(t0);
            r.handle(
                Input::Accept {
                    from: bob(B1),
                    req: 2,
                    response: String::new(),
                },
                t0,
            );
            let who = hanger.user.to_string();
            let hanger_dev = hanger.device;
            let fx = r.handle(
                Input::Hangup {
                    from: hanger,
                    req: 3,
                },
                t0,
            );
            let ended = ServerMessage::CallEnded {
                invitation_id: iid(),
                reason: CallEndReason::Hangup,
                by: Some(who),
            };
            assert_eq!(
                fx,
                vec![
                    to(hanger_dev, ok(3)),
                    to(first, ended.clone()),
                    to(second, ended)
                ]
            );
            assert_eq!(
                err_code(&r.handle(
                    Input::Hangup {
                        from: alice(),
                        req: 4
                    },
                    t0
                )),
                ErrorCode::AlreadyEnded
            );
        }
    }

    #[test]
    fn hang_up_from_another_device_of_a_party() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        r.handle(
            Input::Accept {
                from: bob(B1),
                req: 2,
                response: String::new(),
            },
            t0,
        );
        let fx = r.handle(
            Input::Hangup {
                from: bob(B2),
                req: 3,
            },
            t0,
        );
        assert_eq!(fx.len(), 3);
        assert_eq!(fx[0], to(B2, ok(3)));
        assert!(r.outcome().is_some());
    }

    #[test]
    fn party_gone_ends_the_call_with_the_cause() {
        let t0 = Instant::now();
        for (gone, other, cause, reason) in [
            (
                CALLER_DEV,
                B1,
                GoneCause::ConnectionLost,
                CallEndReason::PeerConnectionLost,
            ),
            (
                B1,
                CALLER_DEV,
                GoneCause::Logout,
                CallEndReason::PeerLoggedOut,
            ),
        ] {
            let mut r = ringing(t0);
            r.handle(
                Input::Accept {
                    from: bob(B1),
                    req: 2,
                    response: String::new(),
                },
                t0,
            );
            // A device not in the call leaving changes nothing.
            assert_eq!(
                r.handle(Input::DeviceGone { device: B2, cause }, t0),
                vec![]
            );
            let fx = r.handle(
                Input::DeviceGone {
                    device: gone,
                    cause,
                },
                t0,
            );
            assert_eq!(
                fx,
                vec![to(
                    other,
                    ServerMessage::CallEnded {
                        invitation_id: iid(),
                        reason,
                        by: None
                    }
                )]
            );
        }
    }

    #[test]
    fn caller_gone_while_ringing_tells_every_callee_device() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        let fx = r.handle(
            Input::DeviceGone {
                device: CALLER_DEV,
                cause: GoneCause::Logout,
            },
            t0,
        );
        assert_eq!(
            fx,
            vec![
                to(B1, failed(FailureReason::PeerOffline)),
                to(B2, failed(FailureReason::PeerOffline))
            ]
        );
        // The accept that was in flight is answered with already_ended (the client reports accept_failure).
        assert_eq!(
            err_code(&r.handle(
                Input::Accept {
                    from: bob(B1),
                    req: 2,
                    response: String::new()
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
    }

    #[test]
    fn all_callee_devices_gone_before_ack_restarts_offline_window() {
        let t0 = Instant::now();
        let (mut r, _) = new(&[B1], t0);
        assert_eq!(
            r.handle(
                Input::DeviceGone {
                    device: B1,
                    cause: GoneCause::ConnectionLost
                },
                t0 + secs(5)
            ),
            vec![]
        );
        assert_eq!(r.phase_name(), "waiting_for_callee");
        assert_eq!(r.deadline(), Some(t0 + secs(35)));
        assert_eq!(
            r.handle(Input::Tick, t0 + secs(35)),
            vec![to(CALLER_DEV, failed(FailureReason::PeerOffline))]
        );
    }

    #[test]
    fn shutdown_ends_every_phase_with_a_reason() {
        let t0 = Instant::now();
        let mut ringing_rec = ringing(t0);
        let fx = ringing_rec.handle(Input::Shutdown, t0);
        let down = failed(FailureReason::ServerShutdown);
        assert_eq!(
            fx,
            vec![
                to(B1, down.clone()),
                to(B2, down.clone()),
                to(CALLER_DEV, down)
            ]
        );

        let mut call = ringing(t0);
        call.handle(
            Input::Accept {
                from: bob(B1),
                req: 2,
                response: String::new(),
            },
            t0,
        );
        let fx = call.handle(Input::Shutdown, t0);
        let ended = ServerMessage::CallEnded {
            invitation_id: iid(),
            reason: CallEndReason::ServerShutdown,
            by: None,
        };
        assert_eq!(fx, vec![to(B1, ended.clone()), to(CALLER_DEV, ended)]);

        let mut canceling = ringing(t0);
        canceling.handle(
            Input::Cancel {
                from: alice(),
                req: 3,
            },
            t0,
        );
        assert_eq!(
            canceling.handle(Input::Shutdown, t0),
            vec![to(
                CALLER_DEV,
                ServerMessage::Canceled {
                    invitation_id: iid()
                }
            )]
        );
        assert_eq!(
            canceling.handle(Input::Shutdown, t0),
            vec![],
            "an ended record stays quiet"
        );
    }

    #[test]
    fn callee_device_gone_after_ack_keeps_ringing_other_devices() {
        let t0 = Instant::now();
        let mut r = ringing(t0);
        assert_eq!(
            r.handle(
                Input::DeviceGone {
                    device: B1,
                    cause: GoneCause::ConnectionLost
                },
                t0
            ),
            vec![]
        );
        let fx = r.handle(
            Input::Accept {
                from: bob(B2),
                req: 2,
                response: String::new(),
            },
            t0,
        );
        assert_eq!(
            fx.len(),
            2,
            "ok to B2 and accepted to the caller; B1 is gone: {fx:?}"
        );
    }
}
