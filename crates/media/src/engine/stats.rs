//! One [`crate::MediaEvent::Stats`]: gathered from the jitter buffer, the
//! receive counter, the level meters, str0m's round-trip time, the TURN
//! relays, the voice processing and the video path.

use std::time::Instant;

use super::Engine;
use crate::stats::CallStats;

impl Engine {
    pub(super) fn stats(&mut self) -> CallStats {
        let j = self.playout.jitter_stats();
        CallStats {
            rtt_ms: self.rtt.map(|d| d.as_secs_f64() * 1000.0),
            loss: self.receive.take_loss(),
            jitter_ms: self.receive.jitter_ms(),
            packets_sent: self.packets_sent,
            packets_received: self.receive.total_received,
            mic_level: self.mic.take(),
            speaker_level: self.speaker.take(),
            fec_frames: j.fec,
            concealed_frames: j.concealed,
            late_packets: j.late,
            playout_delay_ms: self.playout.delay_ms(),
            relayed: self.relayed,
            relay_packets: self
                .relays
                .iter()
                .map(|r| {
                    let c = r.relay.counters;
                    c.channel_data_sent + c.indications_sent + c.received
                })
                .sum(),
            echo: self.processor.echo(),
            video: self.video.as_mut().map(|v| v.stats(Instant::now())),
        }
    }
}
