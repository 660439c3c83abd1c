//! The engine's video path: the `video` m-line's bookkeeping between the
//! engine task, str0m and the two video threads.
//!
//! The engine owns one [`VideoPath`] per call with video. It writes each
//! frame the send thread encodes through str0m (which packetizes VP8),
//! queues each frame str0m reassembles for the receive thread, turns the
//! peer's keyframe requests and str0m's bandwidth estimates into commands
//! for the send thread, sends our keyframe requests (PLI, at most one per
//! [`PLI_INTERVAL`]), and notices when the peer's pictures start or stop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaTime, Mid, Pt};
use str0m::Rtc;
use tokio::sync::mpsc::UnboundedSender;

use super::receive::{IncomingFrame, VideoReceiver};
use super::send::{OutgoingFrame, SendCommand, VideoSender};
use super::vp8::is_keyframe;
use super::{SharedEncodedSink, VideoSource};
use crate::engine::Command;
use crate::stats::VideoStats;
use crate::{MediaError, VideoIo, REMOTE_VIDEO_GONE};

/// Our keyframe requests are spaced at least this far apart (the peer
/// needs a moment to send the keyframe; asking again sooner only costs it
/// another).
const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// See the module doc.
pub(crate) struct VideoPath {
    /// The video m-line: ours (offerer) or the peer's (answerer).
    pub mid: Option<Mid>,
    /// The negotiated VP8 payload type, looked up after each negotiation.
    pt: Option<Pt>,
    sender: VideoSender,
    receiver: VideoReceiver,
    /// RTP time (90 kHz) is `rtp_base` plus the time since `origin` of
    /// each picture's capture, so the peer sees the real frame spacing.
    origin: Instant,
    /// Random start (RFC 3550).
    rtp_base: u64,
    /// When we last sent a PLI.
    last_pli: Option<Instant>,
    /// A frame could not be sent (no connection yet, no negotiated video)
    /// and the send thread was asked for a keyframe, which must be the
    /// next frame the peer gets: until one is written, every failed
    /// keyframe asks again.
    keyframe_wanted: bool,
    /// The peer's pictures are arriving (as last reported).
    pub remote_active: bool,
    /// Frames written since the start, for the sent frame rate.
    written: u64,
    /// Bytes written since the start, for the sent bitrate.
    bytes_written: u64,
    /// Counters at the last stats, for rates.
    last_stats: (Instant, u64, u64, u64),
}

impl VideoPath {
    /// Starts the send and receive threads.
    pub fn new(io: VideoIo, engine: UnboundedSender<Command>) -> Result<Self, MediaError> {
        let thread_err =
            |e: std::io::Error| MediaError::Video(format!("starting a video thread: {e}"));
        let encoded: Option<SharedEncodedSink> = io.encoded.map(|tap| Arc::new(Mutex::new(tap)));
        let sender = VideoSender::spawn(io.source, io.preview, encoded.clone(), engine.clone())
            .map_err(thread_err)?;
        let receiver = VideoReceiver::spawn(io.sink, encoded, engine).map_err(thread_err)?;
        let now = Instant::now();
        Ok(VideoPath {
            mid: None,
            pt: None,
            sender,
            receiver,
            origin: now,
            rtp_base: u64::from(fastrand::u32(..)),
            last_pli: None,
            keyframe_wanted: false,
            remote_active: false,
            written: 0,
            bytes_written: 0,
            last_stats: (now, 0, 0, 0),
        })
    }

    /// A new negotiation: the payload type is looked up again.
    pub fn renegotiated(&mut self) {
        self.pt = None;
    }

    /// Writes an encoded frame through str0m. Returns whether it was
    /// written (not: no connection or no negotiated video yet).
    pub fn write(&mut self, rtc: &mut Rtc, frame: OutgoingFrame, now: Instant) -> bool {
        let key = is_keyframe(&frame.data);
        let written = self.try_write(rtc, frame, now);
        if written && key {
            self.keyframe_wanted = false;
        } else if !written && (key || !self.keyframe_wanted) {
            // The peer cannot decode what follows without what was lost:
            // the first frames are encoded before the connection is up.
            self.keyframe_wanted = true;
            self.sender.send(SendCommand::Keyframe { from_peer: false });
        }
        written
    }

    fn try_write(&mut self, rtc: &mut Rtc, frame: OutgoingFrame, now: Instant) -> bool {
        if !rtc.is_connected() {
            return false;
        }
        let Some(mid) = self.mid else { return false };
        if self.pt.is_none() {
            self.pt = rtc.writer(mid).and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt())
            });
            if self.pt.is_none() {
                tracing::warn!("the peer did not accept VP8: no video can be sent");
                return false;
            }
        }
        let (Some(pt), Some(writer)) = (self.pt, rtc.writer(mid)) else {
            return false;
        };
        let since = frame.captured.saturating_duration_since(self.origin);
        let rtp = self.rtp_base + (since.as_micros() as u64) * 9 / 100;
        let len = frame.data.len() as u64;
        match writer.write(
            pt,
            now,
            MediaTime::new(rtp, Frequency::NINETY_KHZ),
            frame.data,
        ) {
            Ok(()) => {
                self.written += 1;
                self.bytes_written += len;
                true
            }
            Err(e) => {
                tracing::debug!("video frame not sent: {e}");
                false
            }
        }
    }

    /// Takes str0m's reassembled frame if it is ours. Returns whether it
    /// was.
    pub fn on_media_data(&mut self, d: &MediaData) -> bool {
        if Some(d.mid) != self.mid {
            return false;
        }
        self.receiver.push(IncomingFrame {
            data: d.data.to_vec(),
            contiguous: d.contiguous,
        });
        true
    }

    /// Asks the peer for a keyframe (PLI), unless we just did.
    pub fn request_keyframe(&mut self, rtc: &mut Rtc, now: Instant) {
        if self
            .last_pli
            .is_some_and(|t| now.duration_since(t) < PLI_INTERVAL)
        {
            return;
        }
        let Some(mid) = self.mid else { return };
        let Some(mut writer) = rtc.writer(mid) else {
            return;
        };
        match writer.request_keyframe(None, KeyframeRequestKind::Pli) {
            Ok(()) => {
                tracing::debug!("asked the peer for a keyframe");
                self.last_pli = Some(now);
            }
            Err(e) => tracing::debug!("no keyframe request possible: {e}"),
        }
    }

    /// The peer asked us for a keyframe.
    pub fn on_keyframe_request(&self) {
        self.sender.send(SendCommand::Keyframe { from_peer: true });
    }

    /// str0m's bandwidth estimate changed.
    pub fn on_estimate(&self, bits_per_second: u64) {
        self.sender.send(SendCommand::Estimate(bits_per_second));
    }

    pub fn set_source(&self, source: Option<Box<dyn VideoSource>>) {
        self.sender.send(SendCommand::Source(source));
    }

    /// `Some(active)` when the peer's pictures started or stopped.
    pub fn poll_remote(&mut self, now: Instant) -> Option<bool> {
        let last = self.receiver.stats().last_frame;
        let active = last.is_some_and(|t| now.saturating_duration_since(t) < REMOTE_VIDEO_GONE);
        if active != self.remote_active {
            self.remote_active = active;
            return Some(active);
        }
        None
    }

    /// The video half of [`crate::CallStats`], rates over the time since
    /// the last call.
    pub fn stats(&mut self, now: Instant) -> VideoStats {
        let s = self.sender.stats();
        let r = self.receiver.stats();
        let (t0, written0, bytes0, decoded0) = self.last_stats;
        let secs = now.saturating_duration_since(t0).as_secs_f32().max(0.001);
        self.last_stats = (now, self.written, self.bytes_written, r.frames_decoded);
        VideoStats {
            camera_on: s.source_on,
            sent_width: s.width,
            sent_height: s.height,
            sent_fps: (self.written - written0) as f32 / secs,
            sent_kbps: ((self.bytes_written - bytes0) as f32 * 8.0 / 1000.0 / secs) as u32,
            target_kbps: (s.target_bitrate / 1000) as u32,
            frames_sent: self.written,
            keyframes_sent: s.keyframes_sent,
            keyframe_requests_received: s.keyframe_requests,
            encode_ms: s.encode_us as f32 / 1000.0,
            receiving: self.remote_active,
            received_width: r.width,
            received_height: r.height,
            received_fps: (r.frames_decoded - decoded0) as f32 / secs,
            frames_decoded: r.frames_decoded,
            frames_dropped: r.frames_dropped,
            keyframes_received: r.keyframes_received,
            keyframes_requested: r.keyframes_requested,
            decode_ms: r.decode_us as f32 / 1000.0,
        }
    }
}
