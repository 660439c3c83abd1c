//! The receive audio path after the network: jitter buffer → Opus decoder
//! (with FEC and concealment) → exactly one 20 ms frame per playout tick.
//!
//! Packets may be 2.5 to 120 ms long; decoded audio goes through a small
//! sample queue so the sink always gets whole 20 ms frames. When nothing
//! arrives, the decoder's concealment continues the sound for at most
//! [`MAX_FADE_FRAMES`] frames, fading it out, and silence follows — so a
//! peer that vanishes fades away instead of buzzing on.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::audio::FRAME_SAMPLES;
use crate::codec::{self, Decoder, MAX_PACKET_SAMPLES};
use crate::jitter::{JitterBuffer, JitterStats, Playout, Push};
use crate::MediaError;

/// Frames of faded concealment played when the buffer runs dry, before
/// silence (100 ms).
pub const MAX_FADE_FRAMES: u32 = 5;

/// Jitter buffer plus decoder; see the module documentation.
pub struct PlayoutPath {
    /// Packets waiting for their turn.
    jitter: JitterBuffer,
    /// Opus decoder (its state makes concealment continue the last sound).
    decoder: Decoder,
    /// Decoded samples not yet handed out.
    pcm: VecDeque<i16>,
    /// Decoder output scratch (one packet's worth at most).
    scratch: Vec<i16>,
    /// Something was decoded since the last silence, so concealment has
    /// something to continue.
    has_history: bool,
    /// Consecutive frames the buffer has been dry.
    dry_frames: u32,
    /// Packets rejected as not Opus.
    invalid: u64,
}

impl PlayoutPath {
    /// An empty path.
    pub fn new() -> Result<Self, MediaError> {
        Ok(PlayoutPath {
            jitter: JitterBuffer::new(),
            decoder: Decoder::new()?,
            pcm: VecDeque::with_capacity(MAX_PACKET_SAMPLES + FRAME_SAMPLES),
            scratch: vec![0; MAX_PACKET_SAMPLES],
            has_history: false,
            dry_frames: 0,
            invalid: 0,
        })
    }

    /// Takes a received Opus packet with (extended, 48 kHz) RTP timestamp
    /// `ts`. `None` if it is not a valid Opus packet.
    pub fn push(&mut self, ts: u64, packet: Arc<[u8]>) -> Option<Push> {
        let Some(samples) = codec::packet_samples(&packet) else {
            self.invalid += 1;
            return None;
        };
        Some(self.jitter.push(ts, samples, packet))
    }

    /// Jitter buffer counters.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Current playout delay (audio buffered ahead), in milliseconds.
    pub fn delay_ms(&self) -> u64 {
        self.jitter.buffered_ms() + self.pcm.len() as u64 / 48
    }

    /// Fills `out` (one 20 ms frame) with the next audio to play.
    pub fn next_frame(&mut self, out: &mut [i16]) {
        debug_assert_eq!(out.len(), FRAME_SAMPLES);
        while self.pcm.len() < out.len() {
            let step = self.jitter.pop();
            let produced = match step {
                Playout::Packet(p) => {
                    let r = self.decoder.decode(&p, &mut self.scratch);
                    self.decoded(r, FRAME_SAMPLES)
                }
                Playout::Fec { next, samples } => {
                    let r = self.decoder.decode_fec(&next, &mut self.scratch[..samples]);
                    self.decoded(r, samples)
                }
                Playout::Conceal { samples } => {
                    let r = self.decoder.conceal(&mut self.scratch[..samples]);
                    self.decoded(r, samples)
                }
                Playout::Underrun => break,
            };
            self.pcm.extend(&self.scratch[..produced]);
            self.dry_frames = 0;
        }
        if self.pcm.len() >= out.len() {
            let n = out.len();
            for (o, s) in out.iter_mut().zip(self.pcm.drain(..n)) {
                *o = s;
            }
            return;
        }
        // Dry: whatever is queued, then faded concealment, then silence.
        let have = self.pcm.len();
        for (o, s) in out.iter_mut().zip(self.pcm.drain(..)) {
            *o = s;
        }
        let rest = &mut out[have..];
        let fade = self.dry_frames < MAX_FADE_FRAMES && self.has_history;
        if fade && self.decoder.conceal(rest).is_ok() {
            let n = rest.len() as f32;
            let g0 = 1.0 - self.dry_frames as f32 / MAX_FADE_FRAMES as f32;
            let g1 = 1.0 - (self.dry_frames + 1) as f32 / MAX_FADE_FRAMES as f32;
            for (i, s) in rest.iter_mut().enumerate() {
                let g = g0 + (g1 - g0) * i as f32 / n;
                *s = (*s as f32 * g) as i16;
            }
        } else {
            rest.fill(0);
            self.has_history = false;
        }
        self.dry_frames = self.dry_frames.saturating_add(1);
    }

    /// Books a decode result: the samples produced, or — for a packet the
    /// decoder rejects (peer input) — `fallback` samples of concealment.
    fn decoded(&mut self, r: Result<usize, MediaError>, fallback: usize) -> usize {
        match r {
            Ok(n) => {
                self.has_history = true;
                n.min(self.scratch.len())
            }
            Err(e) => {
                tracing::debug!("{e}; concealing instead");
                self.decoder
                    .conceal(&mut self.scratch[..fallback])
                    .unwrap_or_else(|_| {
                        self.scratch[..fallback].fill(0);
                        fallback
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{rms, AudioSource, ToneSource};
    use crate::codec::Encoder;

    #[test]
    fn plays_in_order_conceals_a_loss_and_fades_out_when_dry() {
        let mut enc = Encoder::new().unwrap();
        let mut tone = ToneSource::new(440.0, 0.3);
        let mut path = PlayoutPath::new().unwrap();
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut out = [0i16; FRAME_SAMPLES];
        // Nothing yet: silence.
        path.next_frame(&mut out);
        assert_eq!(rms(&out), 0.0);

        // One packet arrives per frame played (a real-time stream); packet
        // 20 is lost.
        let mut levels = Vec::new();
        for n in 0..50u64 {
            tone.read(&mut frame);
            let p: Arc<[u8]> = enc.encode(&frame).unwrap().into();
            if n != 20 {
                assert_eq!(path.push(n * 960, p), Some(Push::Accepted));
            }
            path.next_frame(&mut out);
            levels.push(rms(&out));
        }
        assert_eq!(path.push(0, Arc::from(vec![])), None, "not opus");
        // Play what is still buffered (60 ms minus the lost frame).
        for _ in 0..2 {
            path.next_frame(&mut out);
            levels.push(rms(&out));
        }
        assert_eq!(path.jitter_stats().fec, 1, "frame 20 came from FEC");
        // Past the codec's start-up, every frame carries the tone.
        assert!(levels[8..].iter().all(|&l| l > 0.1), "{levels:?}");
        // Then the peer goes quiet: a short fade, then silence.
        let mut tail = Vec::new();
        for _ in 0..10 {
            path.next_frame(&mut out);
            tail.push(rms(&out));
        }
        assert!(
            tail[MAX_FADE_FRAMES as usize..].iter().all(|&l| l == 0.0),
            "{tail:?}"
        );
        assert!(
            tail[MAX_FADE_FRAMES as usize - 1] < levels[40] / 2.0,
            "{tail:?}"
        );
    }
}
