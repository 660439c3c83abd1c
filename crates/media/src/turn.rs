//! Relay candidates: TURN over UDP (RFC 8656, formerly 5766) with
//! long-term credentials, so that two devices that cannot reach each other
//! directly (symmetric NATs, firewalls), or that must not learn each
//! other's addresses (`relay_only`), still connect.
//!
//! str0m is the ICE agent but knows nothing of TURN: to it a relay
//! candidate is just a local candidate whose address happens to be on the
//! TURN server. This module makes that true. Each [`Relay`] holds one
//! allocation, made from one of the engine's host sockets:
//!
//! - **Out**: a str0m `Transmit` whose source is the relayed address goes to
//!   [`Relay::send`], which wraps it for the TURN server — ChannelData once a
//!   channel is bound to that peer (4 bytes of overhead), a Send indication
//!   while only a permission exists. The first datagram to a new peer asks
//!   for a ChannelBind (which installs the permission too) and waits in a
//!   short queue until the server confirms it.
//! - **In**: a datagram from the TURN server goes to [`Relay::handle`]:
//!   responses to our requests are consumed; Data indications and
//!   ChannelData are unwrapped into the peer's datagram, which the engine
//!   hands to str0m as received on the relayed address from the peer.
//! - **Time**: [`Relay::poll`] retransmits requests, refreshes the
//!   allocation, permissions and channels before they expire, and reports
//!   the allocation (→ a `relay` candidate) or its failure.
//!   [`Relay::close`] deallocates (Refresh with lifetime 0).
//!
//! The protocol itself — Allocate with the 401 challenge (realm, nonce,
//! MESSAGE-INTEGRITY keyed with MD5(user:realm:pass)), stale nonces,
//! Refresh, CreatePermission, ChannelBind, the framing — is the sans-I/O
//! crate `turn-client-proto`: like str0m it is a state machine fed with
//! datagrams and time, so it fits the engine's single loop with no task or
//! socket of its own. This wrapper adds what the engine needs on top: our
//! clock (`std::time::Instant`) instead of its own, a deadline for the
//! allocation, a clear message when the server refuses the credentials
//! (the crate would silently wait for its request to time out), the queue
//! for the first datagrams to a new peer, and the URL parsing. Only UDP to
//! the TURN server is supported: `turns:` (TLS) and `?transport=tcp` are
//! reported as unusable.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callinvite_protocol::IceServer;
use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::TurnClientApi;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::Instant as TurnInstant;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

/// The allocation must succeed within this long (from the first request),
/// or the server counts as unreachable.
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers that get a channel of their own; more are reached with Send
/// indications (ICE checks every remote candidate, most of them once).
const MAX_CHANNELS: usize = 32;
/// Datagrams kept per relay while a permission for their peer is pending.
const MAX_WAITING: usize = 64;
/// How often the client is polled at the least while it says nothing.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default TURN port (RFC 8656).
const DEFAULT_PORT: u16 = 3478;
/// STUN magic cookie (RFC 8489).
const MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN ERROR-CODE attribute.
const ATTR_ERROR_CODE: u16 = 0x0009;
/// Allocate method.
const METHOD_ALLOCATE: u16 = 0x003;

/// A TURN server we can use: `turn:` over UDP, with credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The URL as configured (for messages).
    pub url: String,
    /// Host name or IP literal.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Long-term credential user name (coturn REST: `<expiry>:<user>`).
    pub username: String,
    /// Its password.
    pub credential: String,
}

/// Parses one URL of `server`: `turn:host[:port][?transport=udp]`. An
/// error says why it cannot be used (TLS, TCP, no credentials, bad URL).
pub fn parse_turn_url(url: &str, server: &IceServer) -> Result<TurnServer, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("turns:") {
        return Err(format!(
            "{url}: TURN over TLS (turns:) is not supported, only turn: over UDP"
        ));
    }
    let Some(rest) = lower.strip_prefix("turn:") else {
        return Err(format!("{url}: not a turn: URL"));
    };
    let rest = &url[url.len() - rest.len()..];
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("transport") && !value.eq_ignore_ascii_case("udp") {
            return Err(format!(
                "{url}: TURN over {value} is not supported, only transport=udp"
            ));
        }
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(format!("{url}: bad host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(format!("{url}: bad host")),
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
            None => (hostport, DEFAULT_PORT),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(format!("{url}: bad host or port"));
    }
    let (Some(username), Some(credential)) = (&server.username, &server.credential) else {
        return Err(format!(
            "{url}: a TURN server needs a username and credential"
        ));
    };
    Ok(TurnServer {
        url: url.to_owned(),
        host: host.to_owned(),
        port,
        username: username.clone(),
        credential: credential.clone(),
    })
}

/// What a datagram from the network was, as far as a relay is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Not from this relay's server, or not TURN for us (a STUN Binding
    /// answer from the same server): someone else's business.
    NotOurs,
    /// A TURN message for the relay itself (a response, a stray).
    Consumed,
    /// A peer's datagram, unwrapped: str0m receives it on the relayed
    /// address from `peer`.
    FromPeer {
        /// Who sent it to the relayed address.
        peer: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
}

/// What a relay wants done, from [`Relay::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum RelayOutput {
    /// Send this to the TURN server from the relay's socket.
    ToServer(Vec<u8>),
    /// The allocation is up: this is the relayed address (the `relay`
    /// candidate's address).
    Allocated(SocketAddr),
    /// The relay is unusable from now on (allocation refused or lost).
    Failed(String),
}

/// Where the allocation is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Allocate sent (or about to be), no answer yet.
    Allocating,
    /// We have a relayed address.
    Allocated(SocketAddr),
    /// Failed or closed: nothing more happens.
    Done,
}

/// Traffic through a relay, for statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayCounters {
    /// Datagrams sent as ChannelData.
    pub channel_data_sent: u64,
    /// Datagrams sent as Send indications.
    pub indications_sent: u64,
    /// Peer datagrams received (Data indications or ChannelData).
    pub received: u64,
}

/// One TURN allocation from one local socket; see the module docs.
#[derive(Debug)]
pub struct Relay {
    /// The sans-I/O TURN client.
    client: TurnClientUdp,
    /// The TURN server's address.
    server: SocketAddr,
    /// The URL (for messages).
    url: String,
    /// Our clock's zero for the client's clock.
    epoch: Instant,
    /// When the allocation must be up by.
    allocate_deadline: Instant,
    state: State,
    /// 401 answers to our Allocate requests: the first is the challenge,
    /// a second one means the credentials were refused.
    unauthorized: u32,
    /// Peers we asked a channel for (bound, pending or failed).
    channels: Vec<SocketAddr>,
    /// Datagrams waiting for their peer's permission.
    waiting: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Produced outside `poll` (a failure seen in `handle`), reported by
    /// the next `poll`.
    pending: Vec<RelayOutput>,
    /// When `poll` should run next.
    next_poll: Instant,
    /// Traffic so far.
    pub counters: RelayCounters,
}

impl Relay {
    /// Starts allocating on `server` from the local socket `local`, with
    /// the credentials of `config`. The Allocate request comes out of the
    /// first [`Relay::poll`].
    pub fn new(config: &TurnServer, local: SocketAddr, server: SocketAddr, now: Instant) -> Relay {
        let mut turn_config =
            TurnConfig::new(TurnCredentials::new(&config.username, &config.credential));
        // RFC 8489's 500 ms first retransmission, but capped at 3 s so that
        // a lost Refresh is retried well within the allocation's lifetime.
        turn_config.set_request_retransmits(
            Duration::from_millis(500),
            Duration::from_secs(3),
            7,
            Duration::from_secs(3),
        );
        Relay {
            client: TurnClientUdp::allocate(local, server, turn_config),
            server,
            url: config.url.clone(),
            epoch: now,
            allocate_deadline: now + ALLOCATE_TIMEOUT,
            state: State::Allocating,
            unauthorized: 0,
            channels: Vec::new(),
            waiting: VecDeque::new(),
            pending: Vec::new(),
            next_poll: now,
            counters: RelayCounters::default(),
        }
    }

    /// The TURN server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated(a) => Some(a),
            _ => None,
        }
    }

    /// Still waiting for the allocation (gathering is not over).
    pub fn is_allocating(&self) -> bool {
        self.state == State::Allocating
    }

    /// Failed or closed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// When [`Relay::poll`] wants to run next.
    pub fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// Our instant on the client's clock.
    fn at(&self, now: Instant) -> TurnInstant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        TurnInstant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// The client's instant on our clock.
    fn our_instant(&self, t: TurnInstant) -> Instant {
        self.epoch + Duration::from_nanos(u64::try_from(t.as_nanos()).unwrap_or(0))
    }

    /// Looks at a datagram that arrived on the relay's socket from `from`.
    pub fn handle(&mut self, from: SocketAddr, data: &[u8], now: Instant) -> Incoming {
        if from != self.server {
            return Incoming::NotOurs;
        }
        if self.state == State::Done {
            return Incoming::Consumed;
        }
        if self.state == State::Allocating && error_code(data) == Some((METHOD_ALLOCATE, 401)) {
            self.unauthorized += 1;
            if self.unauthorized >= 2 {
                self.fail(format!(
                    "the TURN server {} refused the TURN credentials (401 Unauthorized)",
                    self.url
                ));
                return Incoming::Consumed;
            }
        }
        let local = self.client.local_addr();
        let transmit = Transmit::new(data, TransportType::Udp, from, local);
        let at = self.at(now);
        // Whatever it was, the client may have something to say now.
        self.next_poll = now;
        match self.client.recv(transmit, at) {
            TurnRecvRet::Handled => Incoming::Consumed,
            // Not TURN for us: e.g. the answer to a STUN Binding request
            // (the same coturn is often the STUN server too).
            TurnRecvRet::Ignored(_) => Incoming::NotOurs,
            TurnRecvRet::PeerData(d) => {
                self.counters.received += 1;
                Incoming::FromPeer {
                    peer: d.peer,
                    data: d.data().to_vec(),
                }
            }
            TurnRecvRet::PeerIcmp {
                peer, icmp_type, ..
            } => {
                tracing::debug!("{}: ICMP type {icmp_type} from {peer}", self.url);
                Incoming::Consumed
            }
        }
    }

    /// Wraps `data` for `to` (a peer of the relayed address): what to
    /// send to the TURN server now, if anything. The first datagram to a
    /// new peer asks for a channel and waits for it.
    pub fn send(&mut self, to: SocketAddr, data: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.relayed()?;
        let at = self.at(now);
        if !self.client.have_permission(TransportType::Udp, to.ip()) {
            self.request_path(to, at);
            if self.waiting.len() >= MAX_WAITING {
                self.waiting.pop_front();
            }
            self.waiting.push_back((to, data.to_vec()));
            self.next_poll = now;
            return None;
        }
        if !self.channels.contains(&to) && self.channels.len() < MAX_CHANNELS {
            // Permission but no channel yet (the peer shares an IP with
            // another): Send indications until the channel is bound.
            self.request_path(to, at);
            self.next_poll = now;
        }
        self.wrap(to, data, at)
    }

    /// Asks for a channel to `to` (which installs its permission), or
    /// only a permission when channels are used up or cannot be bound.
    fn request_path(&mut self, to: SocketAddr, at: TurnInstant) {
        if !self.channels.contains(&to) && self.channels.len() < MAX_CHANNELS {
            self.channels.push(to);
            match self.client.bind_channel(TransportType::Udp, to, at) {
                Ok(()) => return,
                Err(e) => tracing::debug!("{}: no channel to {to}: {e}", self.url),
            }
        }
        if !self.client.have_permission(TransportType::Udp, to.ip()) {
            if let Err(e) = self
                .client
                .create_permission(TransportType::Udp, to.ip(), at)
            {
                tracing::trace!("{}: permission for {}: {e}", self.url, to.ip());
            }
        }
    }

    /// ChannelData or a Send indication for `to`.
    fn wrap(&mut self, to: SocketAddr, data: &[u8], at: TurnInstant) -> Option<Vec<u8>> {
        match self.client.send_to(TransportType::Udp, to, data, at) {
            Ok(Some(t)) => {
                let bytes = t.build().data;
                // ChannelData starts with the channel number, 0x4000..=0x7FFF.
                if bytes.first().is_some_and(|b| b & 0xC0 == 0x40) {
                    self.counters.channel_data_sent += 1;
                } else {
                    self.counters.indications_sent += 1;
                }
                Some(bytes)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!("{}: cannot relay to {to}: {e}", self.url);
                None
            }
        }
    }

    /// Drives the client: what to send to the server, and what happened.
    pub fn poll(&mut self, now: Instant) -> Vec<RelayOutput> {
        let mut out = std::mem::take(&mut self.pending);
        if self.state == State::Done {
            self.next_poll = now + Duration::from_secs(3600);
            return out;
        }
        if self.state == State::Allocating && now >= self.allocate_deadline {
            self.fail(format!(
                "no relay from the TURN server {} within {} s (no answer)",
                self.url,
                ALLOCATE_TIMEOUT.as_secs()
            ));
            out.append(&mut self.pending);
            self.next_poll = now + Duration::from_secs(3600);
            return out;
        }
        let at = self.at(now);
        let mut next = now + MAX_POLL_INTERVAL;
        // Each round may queue events and transmits for the next; a few
        // rounds settle it (the client paces its requests 50 ms apart).
        for _ in 0..8 {
            let ret = self.client.poll(at);
            let mut progress = false;
            // Pending events make `poll` say "now", so events are only
            // asked for then: `poll_event` logs its every answer, `None`
            // included, at INFO.
            let due = match ret {
                TurnPollRet::WaitUntil(t) => t <= at,
                _ => true,
            };
            while let Some(event) = due.then(|| self.client.poll_event()).flatten() {
                progress = true;
                self.on_event(event, at, &mut out);
            }
            while let Some(t) = self.client.poll_transmit(at) {
                progress = true;
                out.push(RelayOutput::ToServer(t.data.as_ref().to_vec()));
            }
            match ret {
                TurnPollRet::WaitUntil(t) => {
                    let t = self.our_instant(t);
                    if t > now || !progress {
                        next = next.min(t.max(now + Duration::from_millis(1)));
                        break;
                    }
                }
                TurnPollRet::Closed => {
                    let why = if self.state == State::Allocating {
                        format!("the TURN server {} gave no relay", self.url)
                    } else {
                        format!("the relay on {} was lost", self.url)
                    };
                    self.fail(why);
                    break;
                }
                TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => {}
            }
        }
        if self.state == State::Allocating {
            next = next.min(self.allocate_deadline);
        }
        self.next_poll = next;
        out.append(&mut self.pending);
        out
    }

    fn on_event(&mut self, event: TurnEvent, at: TurnInstant, out: &mut Vec<RelayOutput>) {
        match event {
            TurnEvent::AllocationCreated(_, relayed) => {
                if self.state == State::Allocating {
                    tracing::info!("TURN relay {relayed} allocated on {}", self.url);
                    self.state = State::Allocated(relayed);
                    out.push(RelayOutput::Allocated(relayed));
                }
            }
            TurnEvent::AllocationCreateFailed(family) => {
                if self.state == State::Allocating && self.client.relayed_addresses().count() == 0 {
                    self.fail(format!(
                        "the TURN server {} refused the allocation ({family:?})",
                        self.url
                    ));
                }
            }
            TurnEvent::PermissionCreated(_, ip) => {
                tracing::debug!("{}: permission for {ip}", self.url);
                self.flush(|to| to.ip() == ip, at, out);
            }
            TurnEvent::ChannelCreated(_, peer) => {
                tracing::debug!("{}: channel to {peer}", self.url);
                self.flush(|to| to.ip() == peer.ip(), at, out);
            }
            TurnEvent::PermissionCreateFailed(_, ip) => {
                tracing::debug!("{}: no permission for {ip}", self.url);
                self.waiting.retain(|(to, _)| to.ip() != ip);
            }
            TurnEvent::ChannelCreateFailed(_, peer) => {
                tracing::debug!("{}: no channel to {peer}", self.url);
                // Send indications from now on (a permission is asked for
                // on the next datagram if there is none).
            }
            TurnEvent::TcpConnected(_) | TurnEvent::TcpConnectFailed(_) => {}
        }
    }

    /// Sends the waiting datagrams whose peer now has a permission.
    fn flush(
        &mut self,
        ready: impl Fn(SocketAddr) -> bool,
        at: TurnInstant,
        out: &mut Vec<RelayOutput>,
    ) {
        let waiting = std::mem::take(&mut self.waiting);
        for (to, data) in waiting {
            if ready(to) {
                if let Some(bytes) = self.wrap(to, &data, at) {
                    out.push(RelayOutput::ToServer(bytes));
                }
            } else {
                self.waiting.push_back((to, data));
            }
        }
    }

    /// Gives up for good, reporting `why` from the next `poll`.
    fn fail(&mut self, why: String) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        self.waiting.clear();
        self.client.protocol_error();
        self.pending.push(RelayOutput::Failed(why));
        // Report it at the next chance.
        self.next_poll = self.epoch;
    }

    /// Deallocates: the Refresh (lifetime 0) to send to the server, if
    /// there is an allocation. The relay is done afterwards.
    pub fn close(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let allocated = self.relayed().is_some();
        self.state = State::Done;
        self.waiting.clear();
        if !allocated {
            return Vec::new();
        }
        let at = self.at(now);
        if let Err(e) = self.client.delete(at) {
            tracing::debug!("{}: cannot deallocate: {e}", self.url);
            return Vec::new();
        }
        // The client paces requests 50 ms apart; we are leaving and will
        // not wait, so ask it as if that time had passed. A retransmission
        // that comes out with the Refresh does no harm.
        let later = self.at(now + Duration::from_secs(1));
        let mut out = Vec::new();
        while let Some(t) = self.client.poll_transmit(later) {
            out.push(t.data.as_ref().to_vec());
            if out.len() >= 8 {
                break;
            }
        }
        tracing::debug!("{}: deallocating; relayed {:?}", self.url, self.counters);
        out
    }
}

/// `(method, code)` of a STUN error response; `None` for anything else.
fn error_code(data: &[u8]) -> Option<(u16, u16)> {
    if data.len() < 20 || data[0] & 0xC0 != 0 {
        return None;
    }
    if u32::from_be_bytes([data[4], data[5], data[6], data[7]]) != MAGIC_COOKIE {
        return None;
    }
    let t = u16::from_be_bytes([data[0], data[1]]);
    // Class bits C1 (0x0100) and C0 (0x0010): both set is an error response.
    if t & 0x0110 != 0x0110 {
        return None;
    }
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + alen)?;
        if kind == ATTR_ERROR_CODE && value.len() >= 4 {
            let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
            return Some((method, code));
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn_server_proto::api::{TurnServerApi, TurnServerPollRet};
    use turn_server_proto::server::TurnServer as Server;

    const SERVER: &str = "192.0.2.1:3478";
    const LOCAL: &str = "192.0.2.10:5000";
    const RELAYED: &str = "192.0.2.1:40000";
    const PEER: &str = "192.0.2.20:6000";

    fn ice(username: &str, credential: &str) -> IceServer {
        IceServer {
            urls: vec![],
            username: Some(username.into()),
            credential: Some(credential.into()),
        }
    }

    fn config(pass: &str) -> TurnServer {
        parse_turn_url("turn:192.0.2.1:3478?transport=udp", &ice("alice", pass)).unwrap()
    }

    #[test]
    fn urls_are_parsed_and_unsupported_ones_explained() {
        let creds = ice("1700000000:alice", "secret");
        let t = parse_turn_url("turn:turn.example.org", &creds).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("turn.example.org", 3478));
        let t = parse_turn_url("TURN:192.0.2.1:3479?transport=UDP", &creds).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("192.0.2.1", 3479));
        assert_eq!(t.username, "1700000000:alice");
        let t = parse_turn_url("turn:[2001:db8::1]:5000", &creds).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 5000));
        for (url, why) in [
            ("turns:t.example.org:5349", "TLS"),
            ("turn:t.example.org?transport=tcp", "tcp"),
            ("turn:t.example.org:port", "bad port"),
            ("turn::3478", "bad host"),
        ] {
            let e = parse_turn_url(url, &creds).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        let none = IceServer {
            urls: vec![],
            username: None,
            credential: None,
        };
        let e = parse_turn_url("turn:t.example.org", &none).unwrap_err();
        assert!(e.contains("username and credential"), "{e}");
    }

    #[test]
    fn error_responses_are_recognised() {
        // An Allocate error response (0x0113) with ERROR-CODE 401 after an
        // unknown attribute.
        let mut m = vec![0x01, 0x13, 0, 16];
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[9; 12]);
        m.extend_from_slice(&[0x80, 0x22, 0, 1, b'x', 0, 0, 0]);
        m.extend_from_slice(&[0, 9, 0, 4, 0, 0, 4, 1]);
        assert_eq!(error_code(&m), Some((METHOD_ALLOCATE, 401)));
        for cut in 0..m.len() {
            assert_eq!(error_code(&m[..cut]), None);
        }
        // A success response is not an error.
        m[1] = 0x03;
        assert_eq!(error_code(&m), None);
        // ChannelData is not STUN.
        assert_eq!(error_code(&[0x40, 0, 0, 4, 1, 2, 3, 4]), None);
    }

    /// A sans-I/O TURN server with one user, wired to relays by hand.
    struct Harness {
        server: Server,
        now: Instant,
        epoch: Instant,
    }

    impl Harness {
        fn new() -> Harness {
            let mut server = Server::new(
                TransportType::Udp,
                SERVER.parse().unwrap(),
                "callinvite".into(),
            );
            server.add_user("alice".into(), "right".into());
            let now = Instant::now();
            Harness {
                server,
                now,
                epoch: now,
            }
        }

        fn at(&self) -> TurnInstant {
            TurnInstant::from_nanos((self.now - self.epoch).as_nanos() as i64)
        }

        /// Hands `data` from our relay to the server; returns what the
        /// server sends back (to us or to a peer).
        fn deliver(&mut self, data: &[u8]) -> Vec<Transmit<Vec<u8>>> {
            let at = self.at();
            let t = Transmit::new(
                data,
                TransportType::Udp,
                LOCAL.parse().unwrap(),
                SERVER.parse().unwrap(),
            );
            let mut out: Vec<_> = self
                .server
                .recv(t, at)
                .map(|b| b.build())
                .into_iter()
                .collect();
            out.extend(self.drive());
            out
        }

        /// A peer's datagram to the relayed address.
        fn peer_sends(&mut self, data: &[u8]) -> Vec<Transmit<Vec<u8>>> {
            let at = self.at();
            let t = Transmit::new(
                data,
                TransportType::Udp,
                PEER.parse().unwrap(),
                RELAYED.parse().unwrap(),
            );
            self.server
                .recv(t, at)
                .map(|b| b.build())
                .into_iter()
                .collect()
        }

        /// Runs the server's own work: socket allocation and transmits.
        fn drive(&mut self) -> Vec<Transmit<Vec<u8>>> {
            let at = self.at();
            let mut out = Vec::new();
            for _ in 0..4 {
                if let TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } = self.server.poll(at)
                {
                    self.server.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        Ok(RELAYED.parse().unwrap()),
                        at,
                    );
                }
                while let Some(t) = self.server.poll_transmit(at) {
                    out.push(t);
                }
            }
            out
        }

        /// Polls `relay`, delivers what it sends to the server and the
        /// server's answers back, until quiet. Returns the relay's other
        /// outputs and what the server sent to peers.
        fn exchange(&mut self, relay: &mut Relay) -> (Vec<RelayOutput>, Vec<Transmit<Vec<u8>>>) {
            let mut events = Vec::new();
            let mut to_peers = Vec::new();
            for _ in 0..20 {
                let mut quiet = true;
                for o in relay.poll(self.now) {
                    match o {
                        RelayOutput::ToServer(bytes) => {
                            quiet = false;
                            for t in self.deliver(&bytes) {
                                if t.to == LOCAL.parse().unwrap() {
                                    assert_eq!(
                                        relay.handle(t.from, &t.data, self.now),
                                        Incoming::Consumed
                                    );
                                } else {
                                    to_peers.push(t);
                                }
                            }
                        }
                        other => events.push(other),
                    }
                }
                if quiet {
                    break;
                }
                // The client paces its requests 50 ms apart.
                self.now += Duration::from_millis(60);
            }
            (events, to_peers)
        }
    }

    #[test]
    fn allocates_binds_a_channel_and_relays_both_ways() {
        let mut h = Harness::new();
        let mut relay = Relay::new(
            &config("right"),
            LOCAL.parse().unwrap(),
            SERVER.parse().unwrap(),
            h.now,
        );
        assert!(relay.is_allocating());
        let (events, _) = h.exchange(&mut relay);
        let relayed: SocketAddr = RELAYED.parse().unwrap();
        assert_eq!(events, vec![RelayOutput::Allocated(relayed)]);
        assert_eq!(relay.relayed(), Some(relayed));

        // The first datagram to a peer waits for its channel, then goes.
        let peer: SocketAddr = PEER.parse().unwrap();
        assert_eq!(relay.send(peer, b"hello peer", h.now), None);
        let (events, to_peers) = h.exchange(&mut relay);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(to_peers.len(), 1, "{to_peers:?}");
        assert_eq!(to_peers[0].to, peer);
        assert_eq!(to_peers[0].from, relayed);
        assert_eq!(to_peers[0].data, b"hello peer");

        // From now on: ChannelData, 4 bytes of header.
        let wrapped = relay.send(peer, b"rtp", h.now).expect("sent at once");
        assert_eq!(wrapped.len(), 4 + 3);
        assert_eq!(wrapped[0] & 0xC0, 0x40);
        let out = h.deliver(&wrapped);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].to, out[0].data.as_slice()), (peer, &b"rtp"[..]));
        assert!(relay.counters.channel_data_sent >= 1);

        // The peer answers: unwrapped, from the peer.
        let back = h.peer_sends(b"pong");
        assert_eq!(back.len(), 1);
        assert_eq!(
            relay.handle(back[0].from, &back[0].data, h.now),
            Incoming::FromPeer {
                peer,
                data: b"pong".to_vec()
            }
        );
        // Anything not from the server is not the relay's, nor is a STUN
        // Binding response from the server (it is often the STUN server too).
        assert_eq!(relay.handle(peer, b"pong", h.now), Incoming::NotOurs);
        let mut binding = vec![0x01, 0x01, 0, 0];
        binding.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        binding.extend_from_slice(&[3; 12]);
        let server: SocketAddr = SERVER.parse().unwrap();
        assert_eq!(relay.handle(server, &binding, h.now), Incoming::NotOurs);

        // Time passes: the allocation (600 s by default) is refreshed in
        // time, and the permission and channel with it.
        for _ in 0..30 {
            h.now += Duration::from_secs(60);
            let (events, _) = h.exchange(&mut relay);
            assert!(events.is_empty(), "{events:?}");
        }
        let again = relay
            .send(peer, b"still", h.now)
            .expect("channel still bound");
        let out = h.deliver(&again);
        assert_eq!((out[0].to, out[0].data.as_slice()), (peer, &b"still"[..]));

        // Close: a Refresh with lifetime 0 that the server accepts.
        let bye = relay.close(h.now);
        assert!(!bye.is_empty());
        let answers: Vec<_> = bye.iter().flat_map(|b| h.deliver(b)).collect();
        assert!(
            answers.iter().any(|t| error_code(&t.data).is_none()),
            "the server accepted the deallocation"
        );
        assert!(relay.is_done());
        assert_eq!(relay.send(peer, b"late", h.now), None);
    }

    #[test]
    fn wrong_credentials_fail_at_once_with_a_clear_message() {
        let mut h = Harness::new();
        let mut relay = Relay::new(
            &config("wrong"),
            LOCAL.parse().unwrap(),
            SERVER.parse().unwrap(),
            h.now,
        );
        let start = h.now;
        let (events, _) = h.exchange(&mut relay);
        assert!(h.now - start < Duration::from_secs(1));
        match events.as_slice() {
            [RelayOutput::Failed(why)] => {
                assert!(why.contains("refused the TURN credentials"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(relay.is_done() && !relay.is_allocating());
    }

    #[test]
    fn a_silent_server_times_out() {
        let now = Instant::now();
        let mut relay = Relay::new(
            &config("right"),
            LOCAL.parse().unwrap(),
            SERVER.parse().unwrap(),
            now,
        );
        let mut t = now;
        let mut requests = 0;
        let mut failure = None;
        while t < now + ALLOCATE_TIMEOUT + Duration::from_secs(1) && failure.is_none() {
            for o in relay.poll(t) {
                match o {
                    RelayOutput::ToServer(_) => requests += 1,
                    RelayOutput::Failed(why) => failure = Some(why),
                    RelayOutput::Allocated(a) => panic!("allocated {a}"),
                }
            }
            assert!(relay.next_poll() > t);
            t = relay.next_poll();
        }
        let why = failure.expect("gave up");
        assert!(why.contains("no answer"), "{why}");
        assert!(requests >= 3, "retransmitted: {requests}");
        assert!(t >= now + ALLOCATE_TIMEOUT);
    }
}
