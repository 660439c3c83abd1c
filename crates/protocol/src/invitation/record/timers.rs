//! The record's timers: when it next wants a `Tick`, what a `Tick` fires,
//! and when an ended record may be forgotten.

use std::time::Instant;

use super::{Effect, Phase, Record};
use crate::codes::FailureReason;

impl Record {
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

    pub(super) fn on_tick(&mut self, now: Instant, fx: &mut Vec<Effect>) {
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
