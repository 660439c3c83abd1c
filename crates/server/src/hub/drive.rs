//! Driving the invitations owned here: feeding a record an input, sending
//! its effects, and what follows a step — metrics, the callee's missed call,
//! the log line, and the record's indexes and timer ([`Invitations::settle`]).

use std::time::Instant;

use tracing::info;

use callinvite_protocol::invitation::{Effect, GoneCause, Input, Outcome, Record};
use callinvite_protocol::wire::{MissedCall, MissedReason};
use callinvite_protocol::{
    DeviceId, ErrorCode, FailureReason, InvitationId, ServerMessage, UserId,
};

use super::requests::Refusal;
use super::Hub;
use crate::cluster::{owner_of, Envelope, Target};

#[cfg(doc)]
use super::invitations::Invitations;

impl Hub {
    /// Feeds an input from a request to a record (here, or on the node that
    /// owns it); unknown ids are `not_found`.
    pub(super) fn drive_request(
        &mut self,
        id: &InvitationId,
        input: Input,
        now: Instant,
    ) -> Result<(), Refusal> {
        let reply_to = match &input {
            Input::Accept { from, req, .. }
            | Input::Refuse { from, req, .. }
            | Input::Cancel { from, req }
            | Input::Hangup { from, req }
            | Input::Media { from, req, .. } => Some((from.device, *req)),
            _ => None,
        };
        if let Input::Accept { from, .. } = &input {
            if self.bus.clustered() && owner_of(id).is_some_and(|n| n != self.bus.node()) {
                // If that node dies, this device may already be in the call.
                self.cluster.will_be_in_call(id, from.device);
            }
        }
        if self.forward(id, &input, reply_to) {
            return Ok(());
        }
        if !self.invitations.contains(id) {
            if self.late(id, input, now) {
                return Ok(());
            }
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no invitation {id} for you"),
            ));
        }
        self.drive(id, input, now);
        Ok(())
    }

    /// Answers an input for an invitation that ended within the retention
    /// window, as its record would have; false if none did.
    pub(super) fn late(&mut self, id: &InvitationId, input: Input, now: Instant) -> bool {
        let Some(tomb) = self.invitations.ended(id, now) else {
            return false;
        };
        if let Some(e) = tomb.handle(input) {
            self.send(e.to, &e.msg);
        }
        true
    }

    /// Feeds an input to an open record owned here (nothing if there is none).
    pub(super) fn drive(&mut self, id: &InvitationId, input: Input, now: Instant) {
        if let Some(step) = self.invitations.step(id, input, now) {
            self.apply(id, step.before, step.effects, now);
        }
    }

    /// A new invitation: its record and the effects of making it.
    pub(super) fn open(&mut self, record: Record, effects: Vec<Effect>, now: Instant) {
        let id = record.id().clone();
        self.invitations.open(record);
        self.config
            .metrics
            .invitations_open
            .set(self.invitations.open_count() as i64);
        self.apply(&id, "new", effects, now);
    }

    /// Sends a record's effects in order, then updates the indexes and timers.
    fn apply(
        &mut self,
        id: &InvitationId,
        before: &'static str,
        effects: Vec<Effect>,
        now: Instant,
    ) {
        for e in &effects {
            self.invitations.involve(id, e.to);
            self.send(e.to, &e.msg);
        }
        let Some(record) = self.invitations.get(id) else {
            return;
        };
        let after = record.phase_name();
        self.count(record, before, after, &effects, now);
        if before != after && !self.presence.is_online(record.callee()) {
            self.record_missed(id, now);
        }
        let Some(record) = self.invitations.get(id) else {
            return;
        };
        if before != after {
            match record.outcome() {
                Some(outcome) if before != "new" => {
                    info!(invitation = %id, caller = %record.caller().user, callee = %record.callee(), from = before, ?outcome, "invitation ended")
                }
                _ => info!(invitation = %id, from = before, to = after, "invitation state"),
            }
        }
        if self.invitations.settle(id, now) {
            self.count_kept();
        }
    }

    /// An invitation just ended without reaching its offline callee: a
    /// missed call, kept here and told to the other nodes.
    fn record_missed(&mut self, id: &InvitationId, now: Instant) {
        let Some(record) = self.invitations.get(id) else {
            return;
        };
        let reason = match record.outcome() {
            Some(Outcome::Canceled) => MissedReason::Canceled,
            Some(Outcome::Failed(r)) => match r {
                FailureReason::PeerOffline => MissedReason::PeerOffline,
                FailureReason::NoResponse => MissedReason::NoResponse,
                FailureReason::Expired => MissedReason::Expired,
                FailureReason::ServerShutdown => MissedReason::ServerShutdown,
                _ => return,
            },
            _ => return,
        };
        let age = now
            .saturating_duration_since(record.created_at())
            .as_millis() as u64;
        let call = MissedCall {
            invitation_id: id.clone(),
            caller: record.caller().user.to_string(),
            content: record.content().to_owned(),
            at_ms: crate::missed::now_ms().saturating_sub(age),
            reason,
        };
        let callee = record.callee().clone();
        self.bus.publish(
            Target::All,
            &Envelope::Missed {
                from: self.bus.node(),
                user: callee.clone(),
                call: call.clone(),
            },
        );
        // The bounds may have dropped other users' calls too (the
        // caller's oldest elsewhere, or the oldest overall): the
        // cluster's copy of each changed user is rewritten.
        for user in self.missed.record(&callee, call) {
            let calls = self.missed.of(&user);
            self.bus
                .store_missed(&user, &calls, self.config.missed.max_age);
        }
    }

    /// The gauges of invitations kept: open ones and ended ones.
    pub(super) fn count_kept(&self) {
        let m = &self.config.metrics;
        let (ended, bytes) = self.invitations.ended_count();
        m.invitations_open.set(self.invitations.open_count() as i64);
        m.ended_invitations.set(ended as i64);
        m.ended_invitations_bytes.set(bytes as i64);
    }

    /// Metrics for one step of a record: outcomes and latencies.
    fn count(&self, record: &Record, before: &str, after: &str, effects: &[Effect], now: Instant) {
        let m = &self.config.metrics;
        let since = now.saturating_duration_since(record.created_at());
        if effects
            .iter()
            .any(|e| matches!(e.msg, ServerMessage::ReceivedByPeer { .. }))
        {
            crate::metrics::Metrics::observe(&m.delivery_seconds, since);
        }
        if before == after || before == "in_call" {
            return;
        }
        if after == "in_call" {
            m.invitation("accepted");
            crate::metrics::Metrics::observe(&m.answer_seconds, since);
            return;
        }
        match record.outcome() {
            Some(Outcome::Refused { busy, .. }) => {
                m.invitation(if busy { "busy" } else { "refused" });
                crate::metrics::Metrics::observe(&m.answer_seconds, since);
            }
            Some(Outcome::Canceled) => m.invitation("canceled"),
            Some(Outcome::Failed(reason)) => m.invitation(reason.as_str()),
            Some(Outcome::CallEnded { .. }) | None => {}
        }
    }

    /// Every invitation owned here that is still ringing for `user` rings on
    /// its new `device` too (a device here, or on another node).
    pub(super) fn ring_new_device(&mut self, user: &UserId, device: DeviceId, now: Instant) {
        for id in self.invitations.ringing_for(user) {
            self.drive(&id, Input::CalleeDeviceOnline(device), now);
        }
    }

    /// A device (here or elsewhere) is gone: the invitations owned here that
    /// it took part in hear of it.
    pub(super) fn device_left(&mut self, device: DeviceId, cause: GoneCause, now: Instant) {
        for id in self.invitations.take_involved(device) {
            self.drive(&id, Input::DeviceGone { device, cause }, now);
        }
    }
}
