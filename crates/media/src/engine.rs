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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use callinvite_protocol::MediaSignal;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpPendingOffer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{self, MissedTickBehavior};

use crate::audio::{AudioSink, AudioSource, FRAME_SAMPLES};
use crate::codec::Encoder;
use crate::jitter::Push;
use crate::net::{self, Datagram, Socket};
use crate::playout::PlayoutPath;
use crate::processing::AudioProcessing;
use crate::signals::{self, RemoteCandidate};
use crate::stats::{CallStats, LevelMeter, ReceiveCounter};
use crate::stun::{self, Gatherer, StunServer};
use crate::turn::{Incoming, Relay, RelayOutput, TurnServer};
use crate::video::path::VideoPath;
use crate::video::send::OutgoingFrame;
use crate::video::{self, VideoSource};
use crate::{MediaConfig, MediaError, MediaEvent, MediaState, Role, VideoIo};

/// The media clock: one 20 ms frame each way per tick.
const TICK: Duration = Duration::from_millis(20);
/// Ticks between [`MediaEvent::Stats`] (one second).
const STATS_EVERY_TICKS: u64 = 50;
/// How long the offerer lets ICE try to recover on its own before it
/// offers an ICE restart.
const RESTART_ICE_AFTER: Duration = Duration::from_secs(2);
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

/// The STUN and TURN servers' addresses.
#[derive(Default)]
struct Resolved {
    /// Every address of every STUN server.
    stun: Vec<SocketAddr>,
    /// Each TURN server with its addresses (none: not resolved).
    turn: Vec<(TurnServer, Vec<SocketAddr>)>,
}

/// A boxed future resolving the STUN and TURN servers' addresses.
type Lookup = Pin<Box<dyn Future<Output = Resolved> + Send>>;

/// A TURN relay and the host socket it talks to its server from.
struct RelaySlot {
    /// Index of the host socket.
    socket: usize,
    /// The allocation.
    relay: Relay,
}

/// Validates the configuration, binds the sockets, builds the `Rtc` and
/// spawns the task. Runs synchronously inside [`crate::start`].
pub(crate) fn spawn(
    role: Role,
    config: MediaConfig,
    io: Io,
    commands_tx: UnboundedSender<Command>,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<MediaEvent>,
) -> Result<(), MediaError> {
    let Io {
        source,
        sink,
        processor,
        video,
    } = io;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?;
    let servers = stun::classify(&config.ice_servers);
    for u in &servers.unusable {
        tracing::warn!("ignoring ICE server {u}");
    }
    if config.relay_only && servers.turn.is_empty() {
        let mut msg = String::from(
            "relay_only needs a usable TURN server in ice_servers \
             (turn:host:port over UDP, with username and credential)",
        );
        if !servers.unusable.is_empty() {
            msg += &format!("; unusable: {}", servers.unusable.join("; "));
        }
        return Err(MediaError::Config(msg));
    }
    let relay_only = config.relay_only;
    // relay_only: the peer must never learn our addresses, so no host and
    // no server-reflexive candidates (STUN servers are not even asked).
    let stun_servers = if relay_only { Vec::new() } else { servers.stun };

    // Each host candidate must be a usable ICE address (not 0.0.0.0, …).
    let ips: Vec<_> = net::local_ips(config.bind_ip)
        .into_iter()
        .filter(|ip| Candidate::host(SocketAddr::new(*ip, 9), "udp").is_ok())
        .collect();
    if ips.is_empty() {
        return Err(MediaError::Config(format!(
            "{:?} cannot be an ICE host address; give a concrete interface address",
            config.bind_ip
        )));
    }
    let _guard = runtime.enter();
    let sockets = net::bind_all(&ips)?;

    let now = Instant::now();
    let with_video = video.is_some();
    let rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(with_video)
        // Transport-wide congestion control: its estimate sizes the
        // picture and the encoder's bitrate (`video::send`).
        .enable_bwe(with_video.then_some(Bitrate::bps(video::send::START_BITRATE)))
        // Hand every packet over at once, in any order: our jitter buffer
        // reorders and conceals, and str0m waiting for gaps would only add
        // delay.
        .set_reordering_size_audio(0)
        .set_reordering_timeout_audio(None)
        .set_stats_interval(Some(Duration::from_secs(1)))
        .set_rtcp_report_interval_audio(Duration::from_secs(1))
        .build(now);

    let mut engine = Engine {
        role,
        rtc,
        rtc_timeout: now,
        rtc_open: true,
        closing: false,
        sockets,
        recv_errors: 0,
        audio_mid: None,
        opus_pt: None,
        pending_offer: None,
        local_candidates: Vec::new(),
        described: false,
        announced: 0,
        end_sent: false,
        gatherer: Gatherer::new(!stun_servers.is_empty()),
        relay_only,
        relays: Vec::new(),
        turn_resolving: !servers.turn.is_empty(),
        relay_failures: Vec::new(),
        state: None,
        ever_connected: false,
        connect_timeout: config.connect_timeout,
        deadline: Some(now + config.connect_timeout),
        disconnected_since: None,
        restart_sent: false,
        last_rx: now,
        events: Some(events),
        source: Some(source),
        source_done: false,
        muted: false,
        sink,
        processor,
        encoder: Encoder::new()?,
        rtp_time: u64::from(fastrand::u32(..)),
        playout: PlayoutPath::new()?,
        playout_started: false,
        epoch: now,
        ticks: 0,
        packets_sent: 0,
        receive: ReceiveCounter::default(),
        mic: LevelMeter::default(),
        speaker: LevelMeter::default(),
        rtt: None,
        relayed: false,
        video: match video {
            Some(io) => Some(VideoPath::new(io, commands_tx)?),
            None => None,
        },
    };
    if !relay_only {
        for i in 0..engine.sockets.len() {
            let addr = engine.sockets[i].addr;
            match Candidate::host(addr, "udp") {
                Ok(c) => engine.add_local_candidate(c),
                Err(e) => tracing::warn!("{addr} is not a usable host candidate: {e}"),
            }
        }
        if engine.local_candidates.is_empty() {
            return Err(MediaError::Socket("no usable local address".into()));
        }
    }
    let lookup: Option<Lookup> = if stun_servers.is_empty() && servers.turn.is_empty() {
        None
    } else {
        Some(Box::pin(resolve(stun_servers, servers.turn)))
    };
    runtime.spawn(engine.run(commands, lookup));
    Ok(())
}

/// Resolves the STUN and TURN servers' host names (IP literals resolve at
/// once).
async fn resolve(stun: Vec<StunServer>, turn: Vec<TurnServer>) -> Resolved {
    let mut out = Resolved::default();
    for s in stun {
        out.stun.extend(lookup(&s.host, s.port, "STUN").await);
    }
    out.stun.sort();
    out.stun.dedup();
    for t in turn {
        let addrs = lookup(&t.host, t.port, "TURN").await;
        out.turn.push((t, addrs));
    }
    out
}

/// The addresses of one server; none (and a warning) if it cannot be
/// resolved within 2 s.
async fn lookup(host: &str, port: u16, what: &str) -> Vec<SocketAddr> {
    let lookup = tokio::net::lookup_host((host, port));
    match time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            tracing::warn!("cannot resolve {what} server {host}: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("resolving {what} server {host} timed out");
            Vec::new()
        }
    }
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

    // ------------------------------------------------------------------
    // negotiation

    /// Reports `Connecting`; the offerer also offers.
    fn begin(&mut self) {
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

    fn on_signal(&mut self, signal: MediaSignal) {
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
    fn maybe_restart_ice(&mut self, now: Instant) {
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
    fn announce(&mut self) {
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

    fn add_local_candidate(&mut self, c: Candidate) {
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

    // ------------------------------------------------------------------
    // network

    fn on_datagram(&mut self, d: &Datagram, data: &[u8]) {
        let now = Instant::now();
        for k in 0..self.relays.len() {
            if self.relays[k].socket != d.socket {
                continue;
            }
            match self.relays[k].relay.handle(d.from, data, now) {
                Incoming::NotOurs => {}
                // Its consequences come out of `poll_relays`.
                Incoming::Consumed => return,
                Incoming::FromPeer { peer, data } => {
                    if let Some(relayed) = self.relays[k].relay.relayed() {
                        self.receive(peer, relayed, &data);
                    }
                    return;
                }
            }
        }
        if let Some(answer) = self.gatherer.handle(d.socket, d.from, data) {
            if let Some(mapped) = answer {
                let base = self.sockets[d.socket].addr;
                match Candidate::server_reflexive(mapped, base, "udp") {
                    Ok(c) => self.add_local_candidate(c),
                    Err(e) => tracing::debug!("unusable server-reflexive address {mapped}: {e}"),
                }
                self.announce();
            }
            return;
        }
        if self.relay_only {
            // Our host addresses are no candidates: only TURN goes there.
            tracing::trace!("relay only: ignoring a datagram from {}", d.from);
            return;
        }
        self.receive(d.from, self.sockets[d.socket].addr, data);
    }

    /// Hands str0m a datagram from `source` to our `destination` (a host
    /// socket's address, or a relayed address).
    fn receive(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            tracing::trace!("ignoring a datagram from {source} that is not WebRTC");
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!("dropping a datagram from {source}: {e}");
        }
        self.last_rx = Instant::now();
        self.drain();
        // Back from a silence that ICE itself never noticed.
        if self.state == Some(MediaState::Reconnecting) && self.rtc.is_connected() {
            self.on_connected();
        }
    }

    /// Polls str0m until it only has a timeout left.
    fn drain(&mut self) {
        while self.rtc_open && !self.closing {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => self.transmit(&t),
                Ok(Output::Event(e)) => self.on_rtc_event(e),
                Err(e) => return self.fail(MediaError::Rtc(e.to_string())),
            }
        }
    }

    fn transmit(&mut self, t: &Transmit) {
        if let Some(s) = self.sockets.iter().find(|s| s.addr == t.source) {
            if let Err(e) = s.socket.try_send_to(&t.contents, t.destination) {
                // UDP: a full buffer or an unreachable network loses this
                // datagram; ICE and the codec cope with loss.
                tracing::debug!("send to {} failed: {e}", t.destination);
            }
            return;
        }
        let Some(k) = self
            .relays
            .iter()
            .position(|r| r.relay.relayed() == Some(t.source))
        else {
            tracing::debug!("no socket for {}", t.source);
            return;
        };
        let wrapped = self.relays[k]
            .relay
            .send(t.destination, &t.contents, Instant::now());
        if let Some(bytes) = wrapped {
            self.send_to_turn_server(k, &bytes);
        }
    }

    /// Sends `bytes` to relay `k`'s TURN server from its socket.
    fn send_to_turn_server(&self, k: usize, bytes: &[u8]) {
        let slot = &self.relays[k];
        let socket = &self.sockets[slot.socket].socket;
        if let Err(e) = socket.try_send_to(bytes, slot.relay.server()) {
            tracing::debug!("send to TURN server {} failed: {e}", slot.relay.server());
        }
    }

    // ------------------------------------------------------------------
    // TURN

    /// The STUN and TURN servers' addresses are known: start gathering
    /// server-reflexive candidates and allocating relays.
    fn on_resolved(&mut self, resolved: Resolved) {
        let now = Instant::now();
        let locals: Vec<_> = self.sockets.iter().map(|s| s.addr).collect();
        if self.gatherer.is_waiting() && resolved.stun.is_empty() {
            tracing::warn!("no STUN server could be resolved");
        }
        self.gatherer.start(&resolved.stun, &locals, now);
        self.turn_resolving = false;
        for (server, addrs) in resolved.turn {
            // The first address we have a socket of the same family for.
            let pick = addrs.iter().find_map(|a| {
                locals
                    .iter()
                    .position(|l| l.is_ipv4() == a.is_ipv4())
                    .map(|i| (i, *a))
            });
            let Some((socket, addr)) = pick else {
                self.relay_failures.push(if addrs.is_empty() {
                    format!("cannot resolve the TURN server {}", server.url)
                } else {
                    format!(
                        "no local address of the TURN server {}'s address family",
                        server.url
                    )
                });
                continue;
            };
            if self.relays.iter().any(|r| r.relay.server() == addr) {
                continue;
            }
            tracing::debug!("allocating a TURN relay on {addr} from {}", locals[socket]);
            self.relays.push(RelaySlot {
                socket,
                relay: Relay::new(&server, locals[socket], addr, now),
            });
        }
        self.check_relays();
        self.announce();
    }

    /// Lets every relay whose time has come send its requests and report
    /// allocations (which become `relay` candidates) and failures.
    fn poll_relays(&mut self, now: Instant) {
        if !self.rtc_open || self.closing {
            return;
        }
        let mut changed = false;
        for k in 0..self.relays.len() {
            if self.relays[k].relay.next_poll() > now {
                continue;
            }
            for output in self.relays[k].relay.poll(now) {
                match output {
                    RelayOutput::ToServer(bytes) => self.send_to_turn_server(k, &bytes),
                    RelayOutput::Allocated(relayed) => {
                        changed = true;
                        let local = self.sockets[self.relays[k].socket].addr;
                        match Candidate::relayed(relayed, local, "udp") {
                            Ok(c) => self.add_local_candidate(c),
                            Err(e) => tracing::warn!("unusable relayed address {relayed}: {e}"),
                        }
                    }
                    RelayOutput::Failed(why) => {
                        changed = true;
                        tracing::warn!("TURN: {why}");
                        self.relay_failures.push(why);
                    }
                }
            }
        }
        if changed {
            self.check_relays();
            self.announce();
        }
    }

    /// With `relay_only`, no relay left (none allocated or allocating)
    /// ends the media: there is no other way to the peer.
    fn check_relays(&mut self) {
        if !self.relay_only || self.turn_resolving || self.relays.iter().any(|r| !r.relay.is_done())
        {
            return;
        }
        let why = if self.relay_failures.is_empty() {
            "no TURN relay".to_owned()
        } else {
            self.relay_failures.join("; ")
        };
        self.fail(MediaError::Turn(format!(
            "{why}; relay_only leaves no other path to the peer"
        )));
    }

    /// Gathering relay candidates is over (allocated or failed).
    fn relays_gathered(&self) -> bool {
        !self.turn_resolving && !self.relays.iter().any(|r| r.relay.is_allocating())
    }

    fn on_rtc_event(&mut self, e: Event) {
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

    fn on_media_data(&mut self, d: MediaData) {
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

    fn on_connected(&mut self) {
        if !self.ever_connected {
            tracing::info!("media connected");
            self.ever_connected = true;
            self.playout_started = true;
        }
        self.deadline = None;
        self.disconnected_since = None;
        self.restart_sent = false;
        self.set_state(MediaState::Connected);
    }

    fn on_disconnected(&mut self) {
        if self.state == Some(MediaState::Reconnecting) {
            return;
        }
        let now = Instant::now();
        self.disconnected_since = Some(now);
        self.deadline = Some(now + self.connect_timeout);
        self.set_state(MediaState::Reconnecting);
    }

    // ------------------------------------------------------------------
    // media clock

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

    fn capture_and_send(&mut self, now: Instant) {
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

    fn stats(&mut self) -> CallStats {
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

    // ------------------------------------------------------------------
    // endings

    fn emit(&self, e: MediaEvent) {
        if let Some(tx) = &self.events {
            // The application may have stopped listening; that is its call.
            let _ = tx.send(e);
        }
    }

    fn set_state(&mut self, s: MediaState) {
        if self.state != Some(s) {
            tracing::debug!("media state {s:?}");
            self.state = Some(s);
            self.emit(MediaEvent::State(s));
        }
    }

    /// Reports `e`, says `Bye` to the peer and ends the media.
    fn fail(&mut self, e: MediaError) {
        let reason = e.to_string();
        self.end_media(Some(e), Some(&reason));
    }

    /// Ends the network side for good: reports `failure` (if any), sends
    /// `Bye{bye}` (if any), closes the connection (RTCP BYE, DTLS
    /// close_notify), releases the source, reports `Closed` and closes the
    /// event channel. Playout (silence) goes on until the handle closes.
    fn end_media(&mut self, failure: Option<MediaError>, bye: Option<&str>) {
        if !self.rtc_open || self.closing {
            return;
        }
        self.closing = true;
        if let Some(e) = failure {
            tracing::warn!("media failed: {e}");
            self.emit(MediaEvent::Failed(e));
        }
        if let Some(reason) = bye {
            self.emit(MediaEvent::Signal(signals::bye(reason)));
        }
        if let Err(e) = self.rtc.close() {
            tracing::debug!("closing: {e}");
        }
        // Send what the close produced; nothing else matters any more.
        for _ in 0..1000 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.transmit(&t),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
        // Give the relays back (Refresh with lifetime 0), after the close
        // went through them.
        let now = Instant::now();
        for k in 0..self.relays.len() {
            for bytes in self.relays[k].relay.close(now) {
                self.send_to_turn_server(k, &bytes);
            }
        }
        self.rtc.disconnect();
        self.rtc_open = false;
        self.source = None;
        // Stops both video threads (and releases a camera).
        self.video = None;
        self.deadline = None;
        self.set_state(MediaState::Closed);
        self.events = None;
    }
}
