//! str0m's events, each routed to where it belongs: connection changes to
//! the state, m-lines to the audio or video path, keyframe requests and
//! bandwidth estimates to the video, round-trip times and the selected
//! pair to the statistics.

use str0m::bwe::BweKind;
use str0m::media::MediaKind;
use str0m::{Event, IceConnectionState};

use super::Engine;

impl Engine {
    pub(super) fn on_rtc_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.on_connected(),
            Event::IceConnectionStateChange(s) => {
                tracing::debug!("ICE {s:?}");
                if !self.ever_connected {
                    return;
                }
                match s {
                    IceConnectionState::Checking | IceConnectionState::Disconnected => {
                        self.on_disconnected()
                    }
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        self.on_connected()
                    }
                    IceConnectionState::New => {}
                }
            }
            Event::MediaAdded(m) => match (m.kind, self.video.as_mut()) {
                (MediaKind::Audio, _) if self.audio_mid.is_none() => self.audio_mid = Some(m.mid),
                (MediaKind::Video, Some(v)) if v.mid.is_none() => v.mid = Some(m.mid),
                (kind, _) => tracing::info!("ignoring the peer's extra {kind:?} m-line"),
            },
            Event::KeyframeRequest(r) => {
                if let Some(v) = self.video.as_ref().filter(|v| v.mid == Some(r.mid)) {
                    tracing::debug!("the peer asked for a keyframe ({:?})", r.kind);
                    v.on_keyframe_request();
                }
            }
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
            ) => {
                if let Some(v) = self.video.as_ref() {
                    tracing::debug!("bandwidth estimate {estimate}");
                    v.on_estimate(estimate.as_u64());
                }
            }
            Event::MediaData(d) => self.on_media_data(d),
            Event::PeerStats(p) => {
                if let Some(pair) = &p.selected_candidate_pair {
                    let local = pair.local.addr;
                    self.relayed = self.relays.iter().any(|r| r.relay.relayed() == Some(local));
                }
                let pair_rtt = p
                    .selected_candidate_pair
                    .and_then(|c| c.current_round_trip_time);
                if let Some(rtt) = p.rtt.or(pair_rtt) {
                    self.rtt = Some(rtt);
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(rtt) = s.rtt {
                    self.rtt = Some(rtt);
                }
            }
            Event::Closed => {
                tracing::info!("peer closed the media connection");
                self.end_media(None, None);
            }
            _ => {}
        }
    }
}
