//! Opus: the encoder for what we send and the decoder for what we play, set
//! up for a voice call over a lossy path.
//!
//! The encoder runs in VoIP mode at [`BITRATE`] with in-band FEC on and told
//! to expect [`EXPECTED_LOSS_PERCENT`] loss, so each packet carries a coarse
//! copy of the previous frame (LBRR) that the receiver decodes when that
//! frame's own packet is lost. The SDP advertises this with
//! `useinbandfec=1` (str0m's default Opus parameters).

use crate::audio::SAMPLE_RATE;
use crate::MediaError;

/// Target bitrate of the encoder, in bits per second: clear wideband voice
/// with room for the FEC copy.
pub const BITRATE: i32 = 32_000;
/// Loss the encoder plans its FEC for, in percent.
pub const EXPECTED_LOSS_PERCENT: i32 = 10;
/// Largest Opus packet we produce (RFC 6716 allows 1275 bytes per frame).
const MAX_PACKET_BYTES: usize = 1275;
/// Most samples one Opus packet can decode to at 48 kHz (120 ms).
pub const MAX_PACKET_SAMPLES: usize = 5760;

fn codec_err(what: &str, e: opus::Error) -> MediaError {
    MediaError::Codec(format!("{what}: {e}"))
}

/// Mono Opus encoder for 20 ms frames.
pub struct Encoder {
    /// The libopus state.
    inner: opus::Encoder,
    /// Scratch output, reused for every frame.
    buf: Vec<u8>,
}

impl Encoder {
    /// A VoIP encoder at [`BITRATE`] with in-band FEC.
    pub fn new() -> Result<Self, MediaError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(|e| codec_err("creating the encoder", e))?;
        inner
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(|e| codec_err("setting the bitrate", e))?;
        inner
            .set_inband_fec(true)
            .map_err(|e| codec_err("enabling FEC", e))?;
        inner
            .set_packet_loss_perc(EXPECTED_LOSS_PERCENT)
            .map_err(|e| codec_err("setting the expected loss", e))?;
        Ok(Encoder {
            inner,
            buf: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encodes one frame (2.5 to 60 ms; the engine uses 20 ms) into a packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, MediaError> {
        let n = self
            .inner
            .encode(pcm, &mut self.buf)
            .map_err(|e| codec_err("encoding", e))?;
        Ok(self.buf[..n].to_vec())
    }
}

/// Mono Opus decoder (stereo packets are downmixed by libopus).
pub struct Decoder {
    /// The libopus state; also what makes concealment sound continuous.
    inner: opus::Decoder,
}

impl Decoder {
    /// A 48 kHz mono decoder.
    pub fn new() -> Result<Self, MediaError> {
        let inner = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
            .map_err(|e| codec_err("creating the decoder", e))?;
        Ok(Decoder { inner })
    }

    /// Decodes `packet` into `out` (which must hold [`MAX_PACKET_SAMPLES`]);
    /// returns the samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        self.inner
            .decode(packet, out, false)
            .map_err(|e| codec_err("decoding", e))
    }

    /// Recovers the frame lost just before `next` from the FEC copy in
    /// `next`; `out.len()` must be exactly the missing duration (a multiple
    /// of 2.5 ms). Without FEC data in `next`, libopus conceals instead.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, MediaError> {
        self.inner
            .decode(next, out, true)
            .map_err(|e| codec_err("decoding FEC", e))
    }

    /// Packet loss concealment: extrapolates `out.len()` samples (a multiple
    /// of 2.5 ms) from what was decoded before.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, MediaError> {
        self.inner
            .decode(&[], out, false)
            .map_err(|e| codec_err("concealing", e))
    }
}

/// The duration of an Opus packet in samples at 48 kHz, or `None` if it is
/// not a valid Opus packet (peer input: never trusted).
pub fn packet_samples(packet: &[u8]) -> Option<usize> {
    if packet.is_empty() {
        return None;
    }
    match opus::packet::get_nb_samples(packet, SAMPLE_RATE) {
        Ok(n) if n > 0 && n <= MAX_PACKET_SAMPLES => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioSource, ToneSource, FRAME_SAMPLES};

    #[test]
    fn a_tone_survives_encoding_and_fec_recovers_a_lost_frame() {
        let mut enc = Encoder::new().unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut tone = ToneSource::new(440.0, 0.3);
        let mut pcm = [0i16; FRAME_SAMPLES];
        let mut packets = Vec::new();
        for _ in 0..20 {
            tone.read(&mut pcm);
            packets.push(enc.encode(&pcm).unwrap());
        }
        assert_eq!(packet_samples(&packets[0]), Some(FRAME_SAMPLES));
        assert_eq!(packet_samples(&[]), None);

        let mut out = vec![0i16; MAX_PACKET_SAMPLES];
        for p in &packets[..10] {
            assert_eq!(dec.decode(p, &mut out).unwrap(), FRAME_SAMPLES);
        }
        let decoded_rms = crate::audio::rms(&out[..FRAME_SAMPLES]);
        // packet 10 is lost: recover it from packet 11's FEC data.
        let n = dec
            .decode_fec(&packets[11], &mut out[..FRAME_SAMPLES])
            .unwrap();
        assert_eq!(n, FRAME_SAMPLES);
        let fec_rms = crate::audio::rms(&out[..FRAME_SAMPLES]);
        assert!(
            fec_rms > decoded_rms / 3.0,
            "fec {fec_rms} vs {decoded_rms}"
        );
        let n = dec.conceal(&mut out[..FRAME_SAMPLES]).unwrap();
        assert_eq!(n, FRAME_SAMPLES);
    }
}
