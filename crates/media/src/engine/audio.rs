//! The audio path: each tick one frame from the source through the
//! voice processing and the Opus encoder into str0m's writer; the
//! peer's Opus frames into the jitter buffer (playing them out is the
//! tick's, in the engine).

use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{Frequency, MediaData, MediaTime, Pt};

use super::Engine;
use crate::audio::FRAME_SAMPLES;
use crate::jitter::Push;

impl Engine {
    pub(super) fn on_media_data(&mut self, d: MediaData) {
        if let Some(v) = self.video.as_mut() {
            if v.on_media_data(&d) {
                return;
            }
        }
        if Some(d.mid) != self.audio_mid {
            return;
        }
        let ts = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer();
        let seq = **d.seq_range.start();
        let arrival = d.network_time.saturating_duration_since(self.epoch);
        let arrival_samples = (arrival.as_micros() * 48 / 1000) as u64;
        match self.playout.push(ts, d.data) {
            Some(Push::Duplicate) => {}
            Some(Push::Accepted | Push::Late) => self.receive.on_packet(seq, ts, arrival_samples),
            None => tracing::debug!("dropping a packet that is not Opus"),
        }
    }

    pub(super) fn capture_and_send(&mut self, now: Instant) {
        let mut frame = [0i16; FRAME_SAMPLES];
        if let Some(source) = self.source.as_mut() {
            if !self.source_done && !source.read(&mut frame) {
                tracing::debug!("the audio source finished; sending silence");
                self.source_done = true;
            }
            if self.source_done {
                frame.fill(0);
            }
        }
        self.processor.process_capture(&mut frame);
        self.mic.add(&frame);
        if self.muted {
            frame.fill(0);
        }
        let rtp_time = self.rtp_time;
        self.rtp_time += FRAME_SAMPLES as u64;
        if !self.rtc.is_connected() {
            return;
        }
        let (Some(mid), Some(pt)) = (self.audio_mid, self.opus_pt()) else {
            return;
        };
        let packet = match self.encoder.encode(&frame) {
            Ok(p) => p,
            Err(e) => return tracing::warn!("{e}"),
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        match writer.write(pt, now, time, packet) {
            Ok(()) => self.packets_sent += 1,
            Err(e) => tracing::debug!("frame not sent: {e}"),
        }
        self.drain();
    }

    /// The negotiated Opus payload type.
    fn opus_pt(&mut self) -> Option<Pt> {
        if self.opus_pt.is_none() {
            let writer = self.rtc.writer(self.audio_mid?)?;
            self.opus_pt = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
            if self.opus_pt.is_none() {
                tracing::warn!("the peer did not accept Opus: nothing can be sent");
            }
        }
        self.opus_pt
    }
}
