//! The jitter buffer: received Opus packets wait here, ordered by RTP
//! timestamp, until the playout clock asks for the next piece of audio.
//!
//! It is pure state — no clock, no I/O: [`JitterBuffer::push`] on arrival,
//! [`JitterBuffer::pop`] once per piece of audio the playout needs. It
//!
//! - **reorders** by timestamp and drops duplicates and packets that arrive
//!   after their turn (late);
//! - **buffers** [`INITIAL_TARGET_MS`] before playing, so packets delayed
//!   by up to about that much still make it;
//! - turns a **gap** into [`Playout::Fec`] when the packet after the gap is
//!   here (Opus carries a copy of the previous frame in it) or
//!   [`Playout::Conceal`] (packet loss concealment) otherwise;
//! - **adapts**: running dry ([`Playout::Underrun`]) raises the target by a
//!   frame (up to [`MAX_TARGET_MS`]) and waits for that much before playing
//!   on — late packets then fit; ten quiet seconds lower it again (down to
//!   [`MIN_TARGET_MS`]), and audio that piles up above the target (a burst,
//!   or clock drift) is trimmed a frame at a time.
//!
//! Timestamps are str0m's extended (64-bit, no wrap) RTP media time at
//! 48 kHz.

use std::collections::BTreeMap;
use std::sync::Arc;

/// 20 ms at 48 kHz: the unit of adaptation.
const FRAME: u64 = 960;
/// Opus frames are multiples of 2.5 ms; concealment and FEC must be too.
const OPUS_GRANULE: u64 = 120;

/// Least playout delay the buffer aims for.
pub const MIN_TARGET_MS: u64 = 40;
/// Delay aimed for at the start of a call.
pub const INITIAL_TARGET_MS: u64 = 60;
/// Most delay the buffer adds, however bad the jitter.
pub const MAX_TARGET_MS: u64 = 200;

const MIN_TARGET: u64 = MIN_TARGET_MS * 48;
const INITIAL_TARGET: u64 = INITIAL_TARGET_MS * 48;
const MAX_TARGET: u64 = MAX_TARGET_MS * 48;
/// A hole longer than this (the sender paused, or we waited through an
/// outage) is skipped rather than concealed frame by frame.
const MAX_CONCEAL_GAP: u64 = 5 * FRAME;
/// Buffered audio this far above the target for this many pops in a row is
/// trimmed by one frame.
const TRIM_MARGIN: u64 = 2 * FRAME;
const TRIM_AFTER_POPS: u32 = 50;
/// More than this above the target is trimmed at once.
const FLUSH_MARGIN: u64 = 10 * FRAME;
/// Pops without running dry before the target is lowered by a frame (10 s).
const RELAX_AFTER_POPS: u32 = 500;
/// A packet this far (10 s) from the playout point means the sender's
/// timeline restarted: start over.
const RESET_DISTANCE: u64 = 10 * 48_000;
/// Most packets held (2 s of 20 ms packets and then some).
const MAX_PACKETS: usize = 250;

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Buffered for playout.
    Accepted,
    /// A packet with this timestamp is already buffered.
    Duplicate,
    /// Its turn has passed (it was concealed); dropped.
    Late,
}

/// The next piece of audio to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Packet(Arc<[u8]>),
    /// The `samples` before packet `next` are missing: decode them from the
    /// FEC copy in `next` (which stays buffered and comes next).
    Fec {
        /// The packet after the gap.
        next: Arc<[u8]>,
        /// Length of the gap, a multiple of 2.5 ms.
        samples: usize,
    },
    /// `samples` are missing and no packet after them can help: conceal.
    Conceal {
        /// At most 20 ms, a multiple of 2.5 ms.
        samples: usize,
    },
    /// Nothing to play: still buffering, or the buffer ran dry. The
    /// playout conceals briefly, then plays silence; the stream's timeline
    /// does not advance.
    Underrun,
}

/// Counters since the buffer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets buffered.
    pub accepted: u64,
    /// Packets dropped because their turn had passed.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Gaps recovered from FEC.
    pub fec: u64,
    /// Gaps concealed (one per 20 ms at most).
    pub concealed: u64,
    /// Times the buffer ran dry while playing.
    pub underruns: u64,
    /// Packets dropped to shrink the delay (or because the buffer was full).
    pub trimmed: u64,
}

/// One buffered packet.
#[derive(Debug)]
struct Entry {
    /// Its duration in samples (from the Opus TOC), so the playout point
    /// can advance past it.
    samples: u64,
    /// The Opus packet.
    data: Arc<[u8]>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct JitterBuffer {
    /// Buffered packets by RTP timestamp.
    packets: BTreeMap<u64, Entry>,
    /// Timestamp of the next sample to play; `None` until playout first
    /// starts (and after a reset).
    next_ts: Option<u64>,
    /// Playing, as opposed to (re)buffering up to the target.
    playing: bool,
    /// Delay aimed for, in samples.
    target: u64,
    /// Consecutive pops with more than `target + TRIM_MARGIN` buffered.
    above_target: u32,
    /// Pops since the buffer last ran dry.
    since_underrun: u32,
    /// Counters.
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// An empty buffer aiming for [`INITIAL_TARGET_MS`].
    pub fn new() -> Self {
        JitterBuffer {
            packets: BTreeMap::new(),
            next_ts: None,
            playing: false,
            target: INITIAL_TARGET,
            above_target: 0,
            since_underrun: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay currently aimed for, in milliseconds.
    pub fn target_ms(&self) -> u64 {
        self.target / 48
    }

    /// Audio buffered ahead of the playout point, in milliseconds.
    pub fn buffered_ms(&self) -> u64 {
        self.buffered() / 48
    }

    /// Adds a packet of `samples` samples with RTP timestamp `ts`.
    pub fn push(&mut self, ts: u64, samples: usize, data: Arc<[u8]>) -> Push {
        let samples = samples as u64;
        if let Some(next) = self.next_ts {
            if ts.abs_diff(next) > RESET_DISTANCE {
                tracing::debug!(ts, next, "timestamp jump: jitter buffer restarts");
                self.packets.clear();
                self.next_ts = None;
                self.playing = false;
            } else if ts < next {
                self.stats.late += 1;
                return Push::Late;
            }
        }
        if self.packets.contains_key(&ts) {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        if self.packets.len() >= MAX_PACKETS {
            self.packets.pop_first();
            self.stats.trimmed += 1;
        }
        self.packets.insert(ts, Entry { samples, data });
        self.stats.accepted += 1;
        Push::Accepted
    }

    /// The next piece of audio (see [`Playout`]).
    pub fn pop(&mut self) -> Playout {
        if !self.playing {
            if self.buffered() < self.target {
                return Playout::Underrun;
            }
            self.start_playing();
        }
        self.adapt();
        let Some(next) = self.next_ts else {
            // start_playing() always sets it; be defensive rather than panic.
            self.playing = false;
            return Playout::Underrun;
        };
        let Some((&ts, entry)) = self.packets.first_key_value() else {
            self.playing = false;
            self.stats.underruns += 1;
            self.since_underrun = 0;
            self.target = (self.target + FRAME).min(MAX_TARGET);
            return Playout::Underrun;
        };
        let gap = ts.saturating_sub(next);
        if !(OPUS_GRANULE..=MAX_CONCEAL_GAP).contains(&gap) {
            // In turn (or a hole too small to conceal, or too big to be
            // worth it): play the packet.
            let samples = entry.samples;
            let data = entry.data.clone();
            self.packets.remove(&ts);
            self.next_ts = Some(ts + samples);
            return Playout::Packet(data);
        }
        let aligned_gap = gap - gap % OPUS_GRANULE;
        if gap == aligned_gap && gap <= entry.samples {
            // The packet after the hole carries FEC for exactly its own
            // duration, so it covers a hole up to that long.
            self.stats.fec += 1;
            self.next_ts = Some(ts);
            return Playout::Fec {
                next: entry.data.clone(),
                samples: gap as usize,
            };
        }
        let samples = aligned_gap.min(FRAME);
        self.stats.concealed += 1;
        self.next_ts = Some(next + samples);
        Playout::Conceal {
            samples: samples as usize,
        }
    }

    /// Leaves buffering: picks the playout point.
    fn start_playing(&mut self) {
        let Some(&first) = self.packets.keys().next() else {
            return;
        };
        self.next_ts = match self.next_ts {
            // Resuming after running dry: carry on where we were unless the
            // stream has moved on too far for concealment to bridge.
            Some(next) if first <= next + MAX_CONCEAL_GAP => Some(next),
            _ => Some(first),
        };
        self.playing = true;
        self.above_target = 0;
    }

    /// Lowers the target after a quiet spell and trims audio that piled up
    /// above it.
    fn adapt(&mut self) {
        self.since_underrun = self.since_underrun.saturating_add(1);
        if self.since_underrun >= RELAX_AFTER_POPS && self.target > MIN_TARGET {
            self.target -= FRAME;
            self.since_underrun = 0;
        }
        let buffered = self.buffered();
        if buffered > self.target + FLUSH_MARGIN {
            while self.buffered() > self.target + FRAME && self.drop_head() {}
            self.above_target = 0;
        } else if buffered > self.target + TRIM_MARGIN {
            self.above_target += 1;
            if self.above_target >= TRIM_AFTER_POPS {
                self.drop_head();
                self.above_target = 0;
            }
        } else {
            self.above_target = 0;
        }
    }

    /// Drops the oldest packet and moves the playout point past it.
    fn drop_head(&mut self) -> bool {
        match self.packets.pop_first() {
            Some((ts, entry)) => {
                self.next_ts = Some(ts + entry.samples);
                self.stats.trimmed += 1;
                true
            }
            None => false,
        }
    }

    /// Samples from the playout point (or the first packet, before playout
    /// starts) to the end of the last buffered packet.
    fn buffered(&self) -> u64 {
        let (Some((&first, _)), Some((&last, last_entry))) = (
            self.packets.first_key_value(),
            self.packets.last_key_value(),
        ) else {
            return 0;
        };
        let start = match self.next_ts {
            Some(next) if first <= next + MAX_CONCEAL_GAP => next.min(first),
            _ => first,
        };
        (last + last_entry.samples).saturating_sub(start)
    }
}

/// RFC 3550 interarrival jitter: the smoothed deviation of packet spacing
/// on arrival from their spacing in RTP time.
#[derive(Debug, Clone, Copy, Default)]
pub struct InterarrivalJitter {
    /// Arrival time minus RTP time of the previous packet, in samples.
    last_transit: Option<i64>,
    /// The estimate, in samples (×16 as RFC 3550 keeps it, for precision).
    jitter_x16: i64,
}

impl InterarrivalJitter {
    /// Records a packet that arrived `arrival_samples` (48 kHz units on the
    /// local clock) with RTP timestamp `ts`.
    pub fn on_packet(&mut self, arrival_samples: u64, ts: u64) {
        let transit = arrival_samples as i64 - ts as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // J += (|D| - J) / 16, kept as 16·J.
            self.jitter_x16 += d - ((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// The estimate in milliseconds.
    pub fn ms(&self) -> f32 {
        self.jitter_x16 as f32 / 16.0 / 48.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(n: u8) -> Arc<[u8]> {
        Arc::from(vec![n; 3])
    }

    /// Pushes 20 ms packets `n` (timestamp `n * 960`), payload `[n; 3]`.
    fn push(jb: &mut JitterBuffer, n: u64) -> Push {
        jb.push(n * FRAME, FRAME as usize, pkt(n as u8))
    }

    #[test]
    fn reorders_by_timestamp_after_buffering_the_target() {
        let mut jb = JitterBuffer::new();
        assert_eq!(push(&mut jb, 2), Push::Accepted);
        assert_eq!(jb.pop(), Playout::Underrun, "60 ms not buffered yet");
        assert_eq!(push(&mut jb, 0), Push::Accepted);
        assert_eq!(push(&mut jb, 1), Push::Accepted);
        assert_eq!(jb.pop(), Playout::Packet(pkt(0)));
        assert_eq!(jb.pop(), Playout::Packet(pkt(1)));
        assert_eq!(jb.pop(), Playout::Packet(pkt(2)));
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let mut jb = JitterBuffer::new();
        for n in 0..3 {
            push(&mut jb, n);
        }
        assert_eq!(push(&mut jb, 1), Push::Duplicate);
        assert_eq!(jb.pop(), Playout::Packet(pkt(0)));
        assert_eq!(jb.pop(), Playout::Packet(pkt(1)));
        assert_eq!(push(&mut jb, 1), Push::Late, "already played");
        assert_eq!(push(&mut jb, 0), Push::Late);
        assert_eq!(jb.pop(), Playout::Packet(pkt(2)));
        let s = jb.stats();
        assert_eq!((s.accepted, s.duplicates, s.late), (3, 1, 2));
    }

    #[test]
    fn a_gap_asks_for_fec_from_the_next_packet_or_for_concealment() {
        let mut jb = JitterBuffer::new();
        // 3 and 4 are lost; 5 arrives.
        for n in [0, 1, 2, 5, 6] {
            push(&mut jb, n);
        }
        assert_eq!(jb.pop(), Playout::Packet(pkt(0)));
        assert_eq!(jb.pop(), Playout::Packet(pkt(1)));
        assert_eq!(jb.pop(), Playout::Packet(pkt(2)));
        // 3: nothing after it carries its FEC (that would be packet 4).
        assert_eq!(jb.pop(), Playout::Conceal { samples: 960 });
        // 4: packet 5 carries it.
        assert_eq!(
            jb.pop(),
            Playout::Fec {
                next: pkt(5),
                samples: 960
            }
        );
        assert_eq!(jb.pop(), Playout::Packet(pkt(5)));
        assert_eq!(jb.pop(), Playout::Packet(pkt(6)));
        let s = jb.stats();
        assert_eq!((s.fec, s.concealed), (1, 1));
        // A packet that turns up after its slot was concealed is late.
        assert_eq!(push(&mut jb, 3), Push::Late);
    }

    #[test]
    fn running_dry_raises_the_target_and_rebuffers() {
        let mut jb = JitterBuffer::new();
        for n in 0..3 {
            push(&mut jb, n);
        }
        for n in 0..3 {
            assert_eq!(jb.pop(), Playout::Packet(pkt(n)));
        }
        assert_eq!(jb.pop(), Playout::Underrun);
        assert_eq!(jb.stats().underruns, 1);
        assert_eq!(jb.target_ms(), INITIAL_TARGET_MS + 20);
        // Packet 3 was only late, not lost: it plays, after 80 ms buffered.
        push(&mut jb, 3);
        push(&mut jb, 4);
        push(&mut jb, 5);
        assert_eq!(jb.pop(), Playout::Underrun, "60 ms < the 80 ms target");
        push(&mut jb, 6);
        assert_eq!(jb.pop(), Playout::Packet(pkt(3)));
    }

    #[test]
    fn a_long_pause_is_skipped_not_concealed() {
        let mut jb = JitterBuffer::new();
        for n in 0..3 {
            push(&mut jb, n);
        }
        for _ in 0..4 {
            jb.pop();
        }
        // The sender resumes 2 s later.
        for n in 100..104 {
            push(&mut jb, n);
        }
        assert_eq!(jb.pop(), Playout::Packet(pkt(100)));
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn audio_piling_up_above_the_target_is_trimmed() {
        let mut jb = JitterBuffer::new();
        let mut n = 0;
        // The sender's clock runs 1 % fast: one extra packet every 100
        // pops. The delay must stay bounded.
        for i in 0..5000 {
            push(&mut jb, n);
            n += 1;
            if i % 100 == 0 {
                push(&mut jb, n);
                n += 1;
            }
            jb.pop();
        }
        assert!(jb.stats().trimmed > 0);
        assert!(
            jb.buffered_ms() <= jb.target_ms() + 60,
            "{} ms buffered for a {} ms target",
            jb.buffered_ms(),
            jb.target_ms()
        );
    }

    #[test]
    fn a_timestamp_jump_restarts_the_buffer() {
        let mut jb = JitterBuffer::new();
        for n in 0..3 {
            push(&mut jb, n);
        }
        jb.pop();
        let far = 1_000_000;
        for n in far..far + 3 {
            assert_eq!(push(&mut jb, n), Push::Accepted);
        }
        assert_eq!(jb.pop(), Playout::Packet(pkt(far as u8)));
    }

    #[test]
    fn interarrival_jitter_is_zero_for_a_steady_stream_and_grows_with_jitter() {
        let mut j = InterarrivalJitter::default();
        for n in 0..100u64 {
            j.on_packet(5000 + n * 960, n * 960);
        }
        assert!(j.ms() < 0.1);
        for n in 100..400u64 {
            let wobble = if n % 2 == 0 { 0 } else { 960 }; // ±20 ms
            j.on_packet(5000 + n * 960 + wobble, n * 960);
        }
        assert!(j.ms() > 10.0 && j.ms() < 25.0, "{}", j.ms());
    }
}
