//! The engine task: owns the str0m [`Rtc`], the UDP sockets, the codec and
//! the audio path, and drives them all from one `tokio::select!` loop.
//!
//! The loop waits for one of: a command from the [`crate::MediaHandle`], a
//! datagram on any socket, the 20 ms media clock, str0m's or the TURN
//! relays' next timeout, or the STUN and TURN servers' addresses. Each
//! wake-up makes at most one mutation of the `Rtc` and then drains its
//! output to `Output::Timeout` (str0m's "single-mutation invariant"):
//! transmits go to the socket they name — or, when they name a relayed
//! address, through its TURN relay — and events are handled in place.
//!
//! TURN relays (`turn`) live beside the `Rtc`: a datagram from a TURN
//! server goes to its relay first, and what the relay unwraps reaches str0m
//! as received on the relayed address; every wake-up ends by letting the
//! relays send their requests and report their allocations, which become
//! `relay` candidates.
//!
//! The 20 ms clock does both directions: it reads and encodes one frame
//! from the source and writes it through str0m's frame-level `Writer` (str0m
//! packetizes Opus), then plays one frame from the jitter buffer into the
//! sink. Media starts at the first `Connected`; from then on the sink gets
//! one frame per tick until the handle is closed — also after the media
//! ended (silence), so a recording's length is the call's length.
//!
//! # Layout
//!
//! - here: [`Command`], the [`Engine`]'s state, the `select!` loop and
//!   the 20 ms tick.
//! - `spawn`: checking the configuration, binding the sockets, building
//!   the `Rtc`, and the host candidates.
//! - `negotiation`: offers and answers, ICE restarts, trickling our
//!   candidates.
//! - `gathering`: the STUN and TURN servers' names resolved, and the TURN
//!   relays whose allocations become `relay` candidates.
//! - `network`: datagrams in (to a relay, the STUN gatherer or str0m) and
//!   str0m's output drained, its transmits sent from a socket or a relay.
//! - `events`: what str0m reports, routed to where it belongs.
//! - `audio`: the audio path — one frame captured, encoded and written per
//!   tick, and the peer's packets into the jitter buffer.
//! - `stats`: one [`MediaEvent::Stats`] gathered from every part.
//! - `state`: the state we report (connected, reconnecting) and the end
//!   of the media.
//!
//! Each part is an `impl Engine` block of its own: they all touch the one
//! `Rtc`, and only the task does.

mod audio;
mod events;
mod gathering;
mod negotiation;
mod network;
mod spawn;
mod state;
mod stats;

pub(crate) use spawn::spawn;

use std::time::{Duration, Instant};

use callinvite_protocol::MediaSignal;
use str0m::change::SdpPendingOffer;
use str0m::media::{Mid, Pt};
use str0m::{Candidate, Input, Rtc};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{self, MissedTickBehavior};

use crate::audio::{AudioSink, AudioSource, FRAME_SAMPLES};
use crate::codec::Encoder;
use crate::net::{self, Datagram, Socket};
use crate::playout::PlayoutPath;
use crate::processing::AudioProcessing;
use crate::stats::{LevelMeter, ReceiveCounter};
use crate::stun::Gatherer;
use crate::video::path::VideoPath;
use crate::video::send::OutgoingFrame;
use crate::video::VideoSource;
use crate::{MediaError, MediaEvent, MediaState, Role, VideoIo};
use gathering::{Lookup, RelaySlot, Resolved};

/// The media clock: one 20 ms frame each way per tick.
const TICK: Duration = Duration::from_millis(20);
/// Ticks between [`MediaEvent::Stats`] (one second).
const STATS_EVERY_TICKS: u64 = 50;
/// Nothing at all from the peer (RTP, RTCP, STUN) for this long while
/// connected counts as a drop. str0m's ICE agent would take ~20 s to call
/// it; a call cannot wait that long. A connected peer sends RTP every
/// 20 ms (muted too) and RTCP every second.
const PEER_SILENCE: Duration = Duration::from_secs(3);
/// Consecutive failed socket reads that end the media.
const MAX_RECV_ERRORS: u32 = 100;
/// A media clock this late (the process was suspended, the machine
/// starved) skips ahead instead of catching up: a burst of that many
/// frames would only flood the peer and the sink.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);
/// Largest datagram we read (WebRTC keeps packets under ~1200 bytes).
const RECV_BUFFER: usize = 2048;
/// str0m's timeouts are honoured to the millisecond, but never slept on
/// for longer than this (the 20 ms clock wakes us anyway).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What the [`crate::MediaHandle`] and the video threads ask of the task.
pub(crate) enum Command {
    /// A signal from the peer.
    Signal(MediaSignal),
    /// Send silence (or stop doing so).
    SetMuted(bool),
    /// Send pictures from this source from now on (`None`: no video).
    SetVideoSource(Option<Box<dyn VideoSource>>),
    /// The send thread encoded a frame: packetize and send it.
    VideoOut(OutgoingFrame),
    /// The receive thread lacks a reference picture: ask the peer for a
    /// keyframe.
    RequestKeyframe,
    /// Stop everything.
    Close,
}

/// The audio and video ends of a call, handed to [`spawn`].
pub(crate) struct Io {
    pub source: Box<dyn AudioSource>,
    pub sink: Box<dyn AudioSink>,
    pub processor: Box<dyn AudioProcessing>,
    pub video: Option<VideoIo>,
}

/// What woke the loop up.
enum Wake {
    Command(Option<Command>),
    Datagram(std::io::Result<Datagram>),
    Tick(Instant),
    RtcTimeout,
    Resolved(Resolved),
}

/// The task's state; see the module documentation.
struct Engine {
    /// Who offers first.
    role: Role,

    // --- WebRTC ---
    /// The str0m instance: ICE, DTLS-SRTP, RTP/RTCP, SDP.
    rtc: Rtc,
    /// When str0m next wants `Input::Timeout`.
    rtc_timeout: Instant,
    /// The network side is alive: false once the media ended (closed by
    /// either side, or failed). Playout may go on (silence) after that.
    rtc_open: bool,
    /// The media is being ended (guards against re-entry while draining
    /// the close).
    closing: bool,
    /// One socket per host candidate.
    sockets: Vec<Socket>,
    /// Consecutive failed reads.
    recv_errors: u32,

    // --- negotiation ---
    /// The audio m-line: ours (offerer) or the peer's (answerer).
    audio_mid: Option<Mid>,
    /// The negotiated Opus payload type, looked up on first send after each
    /// negotiation.
    opus_pt: Option<Pt>,
    /// Our offer awaiting its answer.
    pending_offer: Option<SdpPendingOffer>,
    /// Every local candidate added to str0m (host, then server-reflexive).
    local_candidates: Vec<Candidate>,
    /// Our offer or answer of the current ICE generation was sent, so
    /// candidates may be trickled after it.
    described: bool,
    /// How many of `local_candidates` were trickled in this generation.
    announced: usize,
    /// `end_of_candidates` was sent in this generation.
    end_sent: bool,
    /// STUN gathering of server-reflexive candidates.
    gatherer: Gatherer,
    /// Only relay candidates: no host or server-reflexive ones, and
    /// nothing but TURN on the host sockets.
    relay_only: bool,
    /// TURN allocations (one per usable TURN server).
    relays: Vec<RelaySlot>,
    /// The TURN servers' addresses are being looked up.
    turn_resolving: bool,
    /// Why TURN servers could not be used (for `relay_only`'s failure).
    relay_failures: Vec<String>,

    // --- connection state ---
    /// The state last reported (`None` before the first).
    state: Option<MediaState>,
    /// Connected at least once (media and playout have started).
    ever_connected: bool,
    /// Budget for connecting, and for reconnecting after a drop.
    connect_timeout: Duration,
    /// When the current (re)connection attempt fails.
    deadline: Option<Instant>,
    /// When the connection dropped (for the offerer's ICE restart).
    disconnected_since: Option<Instant>,
    /// An ICE restart was offered for the current outage.
    restart_sent: bool,
    /// When the peer last sent us anything.
    last_rx: Instant,
    /// Where events go; `None` once the media ended (closes the channel).
    events: Option<UnboundedSender<MediaEvent>>,

    // --- send path ---
    /// What we send; dropped when the media ends (releases a microphone).
    source: Option<Box<dyn AudioSource>>,
    /// The source said it finished: send silence.
    source_done: bool,
    /// Send silence instead of the source.
    muted: bool,
    /// AEC/NS hook (see `processing`).
    processor: Box<dyn AudioProcessing>,
    /// Opus encoder.
    encoder: Encoder,
    /// RTP time (48 kHz) of the next frame; starts at a random value
    /// (RFC 3550) and advances 960 per media tick, sent or not (so a gap
    /// in sending is a gap in time for the peer's jitter buffer).
    rtp_time: u64,

    // --- receive path ---
    /// Where received audio goes.
    sink: Box<dyn AudioSink>,
    /// Jitter buffer and decoder.
    playout: PlayoutPath,
    /// The sink gets a frame every tick (from the first `Connected`).
    playout_started: bool,

    // --- statistics ---
    /// Reference point for arrival times.
    epoch: Instant,
    /// Ticks so far.
    ticks: u64,
    /// RTP packets written.
    packets_sent: u64,
    /// Loss and jitter of what we receive.
    receive: ReceiveCounter,
    /// Source level over the stats interval.
    mic: LevelMeter,
    /// Sink level over the stats interval.
    speaker: LevelMeter,
    /// Latest round-trip time.
    rtt: Option<Duration>,
    /// The selected ICE pair's local candidate is one of our relays.
    relayed: bool,

    // --- video ---
    /// The video m-line and its threads; `None` in an audio-only call.
    video: Option<VideoPath>,
}

impl Engine {
    async fn run(mut self, mut commands: UnboundedReceiver<Command>, mut lookup: Option<Lookup>) {
        self.begin();
        let mut tick = time::interval(TICK);
        // Catch up after a short stall, so the sink gets one frame per
        // 20 ms of wall time on average (a long one skips: MAX_CATCH_UP).
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut next_socket = 0;
        loop {
            if !self.rtc_open && !self.playout_started {
                break;
            }
            let sleep_until = self
                .relays
                .iter()
                .map(|r| r.relay.next_poll())
                .fold(self.rtc_timeout, Instant::min)
                .min(Instant::now() + MAX_SLEEP);
            let wake = tokio::select! {
                c = commands.recv() => Wake::Command(c),
                (i, r) = net::recv_any(&self.sockets, &mut buf, next_socket), if self.rtc_open => {
                    next_socket = (i + 1) % self.sockets.len();
                    Wake::Datagram(r)
                }
                t = tick.tick() => Wake::Tick(t.into_std()),
                _ = time::sleep_until(sleep_until.into()), if self.rtc_open => Wake::RtcTimeout,
                addrs = async {
                    match lookup.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if lookup.is_some() => Wake::Resolved(addrs),
            };
            match wake {
                Wake::Command(None | Some(Command::Close)) => {
                    self.end_media(None, Some("closed"));
                    break;
                }
                Wake::Command(Some(Command::SetMuted(m))) => self.muted = m,
                Wake::Command(Some(Command::SetVideoSource(source))) => match &self.video {
                    Some(v) => v.set_source(source),
                    None => tracing::warn!("no video in this call: the video source is ignored"),
                },
                Wake::Command(Some(Command::VideoOut(frame))) => {
                    if let Some(v) = self.video.as_mut() {
                        if self.rtc_open && v.write(&mut self.rtc, frame, Instant::now()) {
                            self.drain();
                        }
                    }
                }
                Wake::Command(Some(Command::RequestKeyframe)) => {
                    if let Some(v) = self.video.as_mut() {
                        if self.rtc_open {
                            v.request_keyframe(&mut self.rtc, Instant::now());
                            self.drain();
                        }
                    }
                }
                Wake::Command(Some(Command::Signal(s))) => self.on_signal(s),
                Wake::Datagram(Ok(d)) => {
                    self.recv_errors = 0;
                    let len = d.len.min(buf.len());
                    self.on_datagram(&d, &buf[..len]);
                }
                Wake::Datagram(Err(e)) => {
                    self.recv_errors += 1;
                    tracing::debug!("socket read failed: {e}");
                    if self.recv_errors >= MAX_RECV_ERRORS {
                        self.fail(MediaError::Socket(e.to_string()));
                    }
                }
                Wake::Tick(due) => {
                    let now = Instant::now();
                    if now.saturating_duration_since(due) > MAX_CATCH_UP {
                        tracing::warn!(
                            "the media clock stalled for {:?}; skipping ahead",
                            now - due
                        );
                        tick.reset();
                    }
                    self.on_tick(now);
                }
                Wake::RtcTimeout => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        tracing::warn!("webrtc timeout handling: {e}");
                    }
                    self.drain();
                }
                Wake::Resolved(resolved) => {
                    lookup = None;
                    self.on_resolved(resolved);
                }
            }
            self.poll_relays(Instant::now());
        }
        tracing::debug!("media engine stopped");
    }

    fn on_tick(&mut self, now: Instant) {
        self.ticks += 1;
        if self.rtc_open && self.deadline.is_some_and(|d| now >= d) {
            let ms = self.connect_timeout.as_millis() as u64;
            self.fail(MediaError::Timeout(ms));
        }
        if self.rtc_open
            && self.state == Some(MediaState::Connected)
            && now.saturating_duration_since(self.last_rx) >= PEER_SILENCE
        {
            tracing::info!("nothing from the peer for {PEER_SILENCE:?}");
            self.on_disconnected();
        }
        if self.rtc_open {
            self.maybe_restart_ice(now);
            for (i, to, msg) in self.gatherer.poll_transmit(now) {
                if let Err(e) = self.sockets[i].socket.try_send_to(&msg, to) {
                    tracing::debug!("STUN request to {to} failed: {e}");
                }
            }
            self.announce();
            if self.ever_connected {
                self.capture_and_send(now);
            }
        }
        if self.playout_started {
            let mut out = [0i16; FRAME_SAMPLES];
            self.playout.next_frame(&mut out);
            self.processor.process_render(&out);
            self.speaker.add(&out);
            self.sink.write(&out);
        }
        if let Some(active) = self.video.as_mut().and_then(|v| v.poll_remote(now)) {
            if self.rtc_open {
                self.emit(MediaEvent::RemoteVideo(active));
            }
        }
        if self.ticks.is_multiple_of(STATS_EVERY_TICKS) && self.rtc_open && self.ever_connected {
            let stats = self.stats();
            self.emit(MediaEvent::Stats(stats));
        }
    }
}
