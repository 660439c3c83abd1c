//! Starting an engine: the configuration checked, the sockets bound, the
//! `Rtc` built for audio (and video), the host candidates added, and the
//! task spawned. Synchronous, so that these errors come back from
//! [`crate::start`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::{Candidate, Rtc};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::gathering::{resolve, Lookup};
use super::{Command, Engine, Io};
use crate::codec::Encoder;
use crate::net;
use crate::playout::PlayoutPath;
use crate::stats::{LevelMeter, ReceiveCounter};
use crate::stun::{self, Gatherer};
use crate::video::{self, path::VideoPath};
use crate::{MediaConfig, MediaError, MediaEvent, Role};

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
