//! Negotiation: our offer (the offerer's first, and ICE restarts), the
//! peer's offers and answers, the peer's signals, and trickling our
//! candidates after each description of a new ICE generation.

use std::time::{Duration, Instant};

use callinvite_protocol::MediaSignal;
use str0m::media::{Direction, MediaKind};
use str0m::Candidate;

use super::Engine;
use crate::signals::{self, RemoteCandidate};
use crate::{MediaError, MediaEvent, MediaState, Role};

/// How long the offerer lets ICE try to recover on its own before it
/// offers an ICE restart.
const RESTART_ICE_AFTER: Duration = Duration::from_secs(2);

impl Engine {
    /// Reports `Connecting`; the offerer also offers.
    pub(super) fn begin(&mut self) {
        self.set_state(MediaState::Connecting);
        if self.role != Role::Offerer {
            return;
        }
        let with_video = self.video.is_some();
        let applied = {
            let mut api = self.rtc.sdp_api();
            let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let video_mid = with_video
                .then(|| api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
            api.apply()
                .map(|(offer, pending)| (mid, video_mid, offer, pending))
        };
        self.drain();
        match applied {
            Some((mid, video_mid, offer, pending)) => {
                self.audio_mid = Some(mid);
                if let Some(v) = self.video.as_mut() {
                    v.mid = video_mid;
                }
                self.pending_offer = Some(pending);
                self.emit(MediaEvent::Signal(MediaSignal::Offer {
                    sdp: offer.to_sdp_string(),
                }));
                self.new_generation();
            }
            None => self.fail(MediaError::Rtc("could not create an offer".into())),
        }
    }

    pub(super) fn on_signal(&mut self, signal: MediaSignal) {
        if !self.rtc_open {
            tracing::debug!("ignoring {} after the media ended", signal.kind());
            return;
        }
        match signal {
            MediaSignal::Offer { sdp } => self.on_offer(&sdp),
            MediaSignal::Answer { sdp } => self.on_answer(&sdp),
            MediaSignal::Candidate { candidate } => match signals::parse_candidate(&candidate) {
                Ok(RemoteCandidate::Candidate(c)) => {
                    self.rtc.add_remote_candidate(c);
                    self.drain();
                }
                Ok(RemoteCandidate::End) => tracing::debug!("peer: end of candidates"),
                Err(e) => tracing::warn!("skipping a remote candidate that does not parse: {e}"),
            },
            MediaSignal::EndOfCandidates => tracing::debug!("peer: end of candidates"),
            MediaSignal::Bye { reason } => {
                tracing::info!("peer stopped its media: {reason}");
                self.end_media(None, None);
            }
        }
    }

    /// The peer's first offer, or a later one (an ICE restart).
    fn on_offer(&mut self, sdp: &str) {
        let offer = match signals::parse_offer(sdp) {
            Ok(o) => o,
            Err(e) => return self.fail(e),
        };
        if self.pending_offer.take().is_some() {
            tracing::info!("offers crossed: answering the peer's, dropping ours");
            self.restart_sent = false;
        }
        let result = self.rtc.sdp_api().accept_offer(offer);
        self.drain();
        match result {
            Ok(answer) => {
                self.opus_pt = None;
                if let Some(v) = self.video.as_mut() {
                    v.renegotiated();
                }
                self.emit(MediaEvent::Signal(MediaSignal::Answer {
                    sdp: answer.to_sdp_string(),
                }));
                self.new_generation();
            }
            Err(e) => self.fail(signals::rejected_sdp(e)),
        }
    }

    fn on_answer(&mut self, sdp: &str) {
        let Some(pending) = self.pending_offer.take() else {
            return self.fail(MediaError::Negotiation(
                "an answer arrived but no offer of ours is pending".into(),
            ));
        };
        let answer = match signals::parse_answer(sdp) {
            Ok(a) => a,
            Err(e) => return self.fail(e),
        };
        let result = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain();
        match result {
            Ok(()) => {
                self.opus_pt = None;
                if let Some(v) = self.video.as_mut() {
                    v.renegotiated();
                }
            }
            Err(e) => self.fail(signals::rejected_sdp(e)),
        }
    }

    /// Offers an ICE restart when the offerer's connection has been down
    /// for a while (the path may have changed: new address, NAT rebinding).
    pub(super) fn maybe_restart_ice(&mut self, now: Instant) {
        let down_long_enough = self
            .disconnected_since
            .is_some_and(|t| now.saturating_duration_since(t) >= RESTART_ICE_AFTER);
        if self.role != Role::Offerer
            || self.state != Some(MediaState::Reconnecting)
            || self.restart_sent
            || self.pending_offer.is_some()
            || !down_long_enough
        {
            return;
        }
        let applied = {
            let mut api = self.rtc.sdp_api();
            api.ice_restart(true);
            api.apply()
        };
        self.drain();
        if let Some((offer, pending)) = applied {
            tracing::info!("offering an ICE restart");
            self.restart_sent = true;
            self.pending_offer = Some(pending);
            self.emit(MediaEvent::Signal(MediaSignal::Offer {
                sdp: offer.to_sdp_string(),
            }));
            self.new_generation();
        }
    }

    /// Our description of a new ICE generation went out: trickle every
    /// candidate again after it.
    fn new_generation(&mut self) {
        self.described = true;
        self.announced = 0;
        self.end_sent = false;
        self.announce();
    }

    /// Trickles candidates not yet announced, then `end_of_candidates`
    /// once gathering is over.
    pub(super) fn announce(&mut self) {
        if !self.described || !self.rtc_open {
            return;
        }
        let fresh: Vec<_> = self.local_candidates[self.announced..]
            .iter()
            .map(signals::candidate_signal)
            .collect();
        self.announced = self.local_candidates.len();
        for s in fresh {
            self.emit(MediaEvent::Signal(s));
        }
        if !self.end_sent && self.gatherer.is_done(Instant::now()) && self.relays_gathered() {
            self.end_sent = true;
            self.emit(MediaEvent::Signal(MediaSignal::EndOfCandidates));
        }
    }

    pub(super) fn add_local_candidate(&mut self, c: Candidate) {
        let added = self.rtc.add_local_candidate(c).cloned();
        self.drain();
        match added {
            Some(c) => {
                tracing::debug!("local candidate {c}");
                self.local_candidates.push(c);
            }
            None => tracing::debug!("str0m found the candidate redundant"),
        }
    }
}
