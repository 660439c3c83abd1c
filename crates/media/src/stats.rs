//! Call statistics: what [`crate::MediaEvent::Stats`] reports about once a
//! second, and the small accumulators behind it.

use crate::jitter::InterarrivalJitter;

/// A snapshot of the call's media, emitted about once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    /// Round-trip time to the peer in milliseconds (from ICE consent checks
    /// or RTCP reports); `None` until measured.
    pub rtt_ms: Option<f64>,
    /// Fraction (0..=1) of the peer's packets that did not arrive during
    /// the last interval — the loss our listener suffers.
    pub loss: f32,
    /// Interarrival jitter of the peer's packets (RFC 3550), in ms.
    pub jitter_ms: f32,
    /// Packets sent since the start.
    pub packets_sent: u64,
    /// Packets received since the start (duplicates excluded).
    pub packets_received: u64,
    /// Microphone (source) level: RMS of the last interval, 0..=1 of full
    /// scale, measured before muting — so a UI can say "you are muted".
    pub mic_level: f32,
    /// Speaker (sink) level: RMS of what was played in the last interval.
    pub speaker_level: f32,
    /// Frames recovered from Opus in-band FEC since the start.
    pub fec_frames: u64,
    /// Frames concealed (lost, no FEC) since the start.
    pub concealed_frames: u64,
    /// Packets that arrived after their turn to play, since the start.
    pub late_packets: u64,
    /// Audio waiting to be played (the jitter buffer's delay), in ms.
    pub playout_delay_ms: u64,
    /// The media goes through our TURN relay: the selected ICE pair's local
    /// candidate is a `relay` candidate of ours (as of the last check).
    pub relayed: bool,
    /// Datagrams carried through our TURN relays since the start, both
    /// ways (sent as ChannelData or Send indications, received as
    /// ChannelData or Data indications).
    pub relay_packets: u64,
    /// Share (0..=1) of the last interval's microphone frames in which the
    /// voice processing's echo canceller found echo of the speaker (the
    /// peer's voice coming back through our microphone); `None` without an
    /// echo canceller ([`crate::AudioProcessing::echo`]).
    pub echo: Option<f32>,
    /// The video's figures; `None` in a call without video.
    pub video: Option<VideoStats>,
}

/// The video half of [`CallStats`]: rates are over the last interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoStats {
    /// A source is set (our camera is on).
    pub camera_on: bool,
    /// Size of the pictures we send (0×0 with the camera off).
    pub sent_width: u32,
    /// See `sent_width`.
    pub sent_height: u32,
    /// Frames per second we sent.
    pub sent_fps: f32,
    /// Video bitrate we sent, kbit/s.
    pub sent_kbps: u32,
    /// The encoder's target from the bandwidth estimate, kbit/s.
    pub target_kbps: u32,
    /// Frames sent since the start.
    pub frames_sent: u64,
    /// Keyframes sent since the start.
    pub keyframes_sent: u64,
    /// Keyframe requests (PLI/FIR) the peer sent us.
    pub keyframe_requests_received: u64,
    /// Time to encode the last picture, ms.
    pub encode_ms: f32,
    /// The peer's pictures are arriving.
    pub receiving: bool,
    /// Size of the peer's last picture.
    pub received_width: u32,
    /// See `received_width`.
    pub received_height: u32,
    /// Pictures per second decoded.
    pub received_fps: f32,
    /// Pictures decoded since the start.
    pub frames_decoded: u64,
    /// Frames dropped (lost references, undecodable, decoder behind).
    pub frames_dropped: u64,
    /// Keyframes received.
    pub keyframes_received: u64,
    /// Keyframes we asked the peer for.
    pub keyframes_requested: u64,
    /// Time to decode the last picture, ms.
    pub decode_ms: f32,
}

/// RMS over an interval.
#[derive(Debug, Default, Clone, Copy)]
pub struct LevelMeter {
    /// Sum of squared samples.
    sum_sq: f64,
    /// Samples summed.
    count: u64,
}

impl LevelMeter {
    /// Adds a frame.
    pub fn add(&mut self, frame: &[i16]) {
        self.sum_sq += frame
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>();
        self.count += frame.len() as u64;
    }

    /// The RMS (0..=1) since the last take, and restarts.
    pub fn take(&mut self) -> f32 {
        let level = if self.count == 0 {
            0.0
        } else {
            ((self.sum_sq / self.count as f64).sqrt() / 32768.0) as f32
        };
        *self = LevelMeter::default();
        level
    }
}

/// Loss and jitter of the received stream, from RTP sequence numbers and
/// timestamps.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReceiveCounter {
    /// Highest (extended) sequence number seen.
    highest_seq: Option<u64>,
    /// `highest_seq` at the end of the last interval.
    interval_base: Option<u64>,
    /// Packets received during the interval.
    interval_received: u64,
    /// Packets received since the start.
    pub total_received: u64,
    /// RFC 3550 jitter.
    jitter: InterarrivalJitter,
}

impl ReceiveCounter {
    /// Records a packet (not a duplicate) with sequence number `seq`, RTP
    /// timestamp `ts`, that arrived at `arrival_samples` (48 kHz units).
    pub fn on_packet(&mut self, seq: u64, ts: u64, arrival_samples: u64) {
        self.total_received += 1;
        self.interval_received += 1;
        if self.interval_base.is_none() {
            // The interval starts just before the first packet.
            self.interval_base = Some(seq.saturating_sub(1));
        }
        self.highest_seq = Some(self.highest_seq.map_or(seq, |h| h.max(seq)));
        self.jitter.on_packet(arrival_samples, ts);
    }

    /// The loss fraction of the interval now ending, and starts the next.
    pub fn take_loss(&mut self) -> f32 {
        let (Some(base), Some(high)) = (self.interval_base, self.highest_seq) else {
            return 0.0;
        };
        let expected = high.saturating_sub(base);
        let received = self.interval_received;
        self.interval_base = Some(high);
        self.interval_received = 0;
        if expected == 0 {
            return 0.0;
        }
        // Late arrivals of an earlier interval may make received > expected.
        (expected.saturating_sub(received) as f32 / expected as f32).clamp(0.0, 1.0)
    }

    /// Current jitter estimate in ms.
    pub fn jitter_ms(&self) -> f32 {
        self.jitter.ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_counted_per_interval_from_sequence_numbers() {
        let mut r = ReceiveCounter::default();
        for seq in 100..150 {
            if seq % 10 != 5 {
                r.on_packet(seq, seq * 960, seq * 960);
            }
        }
        // 100..=149 expected (50), 5 missing.
        assert!((r.take_loss() - 0.1).abs() < 1e-6);
        for seq in 150..200 {
            r.on_packet(seq, seq * 960, seq * 960);
        }
        assert_eq!(r.take_loss(), 0.0);
        assert_eq!(r.take_loss(), 0.0, "an empty interval");
        assert_eq!(r.total_received, 95);
    }

    #[test]
    fn level_meter_measures_rms() {
        let mut m = LevelMeter::default();
        m.add(&[16384, -16384, 16384, -16384]);
        assert!((m.take() - 0.5).abs() < 1e-6);
        assert_eq!(m.take(), 0.0);
    }
}
