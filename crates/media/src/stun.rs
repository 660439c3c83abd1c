//! Server-reflexive candidates: asking STUN servers (RFC 8489 Binding)
//! which public address our host sockets appear from behind a NAT.
//!
//! str0m is the ICE agent but does no gathering (it is sans-I/O), so this
//! small client sends Binding requests from each host socket and turns
//! the answers into `srflx` candidates. Responses are recognised by their
//! transaction id before anything reaches str0m. TURN servers (`relay`
//! candidates) are sorted out here too and handled by `turn`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use callinvite_protocol::IceServer;

use crate::turn::{self, TurnServer};

/// RFC 8489 magic cookie.
const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// The pre-RFC 5389 code point some old servers still use.
const ATTR_XOR_MAPPED_ADDRESS_OLD: u16 = 0x8020;
/// When requests are (re)sent, after the start of gathering.
const SEND_AT_MS: [u64; 4] = [0, 250, 750, 1750];
/// Gathering gives up on servers that have not answered by then.
pub const GATHER_TIMEOUT: Duration = Duration::from_millis(2500);

/// A STUN server to ask, as written in its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunServer {
    /// Host name or IP literal.
    pub host: String,
    /// UDP port (3478 unless the URL says otherwise).
    pub port: u16,
}

/// The ICE servers sorted by what we can do with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServerSet {
    /// `stun:` servers.
    pub stun: Vec<StunServer>,
    /// Usable TURN servers (`turn:` over UDP, with credentials).
    pub turn: Vec<TurnServer>,
    /// URLs that could not be understood, with why.
    pub unusable: Vec<String>,
}

/// Sorts `servers` into STUN and TURN.
pub fn classify(servers: &[IceServer]) -> IceServerSet {
    let mut set = IceServerSet::default();
    for (server, url) in servers
        .iter()
        .flat_map(|s| s.urls.iter().map(move |u| (s, u)))
    {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("turn:") || lower.starts_with("turns:") {
            match turn::parse_turn_url(url, server) {
                Ok(t) if !set.turn.contains(&t) => set.turn.push(t),
                Ok(_) => {}
                Err(why) => set.unusable.push(why),
            }
        } else if let Some(rest) = lower.strip_prefix("stun:") {
            match parse_host_port(&url[url.len() - rest.len()..]) {
                Some(s) => set.stun.push(s),
                None => set.unusable.push(format!("{url}: bad host or port")),
            }
        } else {
            set.unusable.push(format!(
                "{url}: only stun: and turn: URLs are supported (stuns: and others are not)"
            ));
        }
    }
    set
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with any `?query` ignored.
fn parse_host_port(s: &str) -> Option<StunServer> {
    let s = s.split('?').next().unwrap_or_default();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 3478,
            None => return None,
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (s, 3478),
        }
    };
    if host.is_empty() || port == 0 {
        return None;
    }
    Some(StunServer {
        host: host.to_owned(),
        port,
    })
}

/// A Binding request with transaction id `tid`.
pub fn binding_request(tid: &[u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Length 0: no attributes.
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(tid);
    m
}

/// The transaction id of a STUN message, if `data` looks like one.
fn transaction_id(data: &[u8]) -> Option<[u8; 12]> {
    if data.len() < 20 || data[0] & 0xC0 != 0 {
        return None;
    }
    if u32::from_be_bytes([data[4], data[5], data[6], data[7]]) != MAGIC_COOKIE {
        return None;
    }
    data[8..20].try_into().ok()
}

/// The mapped address in a Binding success response to `tid`; `None` for
/// anything else (another message, an error response, a malformed one).
pub fn parse_binding_response(data: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if transaction_id(data)? != *tid {
        return None;
    }
    if u16::from_be_bytes([data[0], data[1]]) != BINDING_SUCCESS {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(20..20 + len)?;
    let mut mapped = None;
    let mut i = 0;
    while i + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + alen)?;
        match kind {
            ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_OLD => {
                if let Some(a) = parse_address(value, Some(tid)) {
                    return Some(a);
                }
            }
            ATTR_MAPPED_ADDRESS => mapped = mapped.or_else(|| parse_address(value, None)),
            _ => {}
        }
        // Attributes are padded to 4 bytes.
        i += 4 + alen.div_ceil(4) * 4;
    }
    mapped
}

/// A (XOR-)MAPPED-ADDRESS value; XOR-ed with the cookie (and `tid`) if given.
fn parse_address(v: &[u8], xor_tid: Option<&[u8; 12]>) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    let mut key = [0u8; 16];
    if let Some(tid) = xor_tid {
        port ^= (MAGIC_COOKIE >> 16) as u16;
        key[..4].copy_from_slice(&cookie);
        key[4..].copy_from_slice(tid);
    }
    let ip = match v[1] {
        0x01 => {
            let b: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            let b: Vec<u8> = b.iter().zip(key).map(|(x, k)| x ^ k).collect();
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        0x02 => {
            let b: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            let mut o = [0u8; 16];
            for (i, x) in b.iter().enumerate() {
                o[i] = x ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One Binding transaction: one host socket asking one server.
#[derive(Debug)]
struct Transaction {
    /// Index of the host socket.
    socket: usize,
    /// The server's address.
    server: SocketAddr,
    /// Random id that matches the answer.
    tid: [u8; 12],
    /// Requests sent so far.
    sent: usize,
    /// Answered (or given up).
    finished: bool,
}

/// Gathers server-reflexive candidates for the engine: it says what to send
/// when, and recognises the answers.
#[derive(Debug)]
pub struct Gatherer {
    /// Outstanding and finished transactions.
    transactions: Vec<Transaction>,
    /// When the servers were resolved and the first requests went out.
    started: Option<Instant>,
    /// Servers are being resolved (or the gatherer has nothing to do:
    /// `false` and no transactions means done).
    waiting_for_servers: bool,
}

impl Gatherer {
    /// A gatherer; `has_servers` false means it is done from the start.
    pub fn new(has_servers: bool) -> Self {
        Gatherer {
            transactions: Vec::new(),
            started: None,
            waiting_for_servers: has_servers,
        }
    }

    /// The servers' addresses are known: one transaction per host socket and
    /// server of the same address family.
    pub fn start(&mut self, servers: &[SocketAddr], sockets: &[SocketAddr], now: Instant) {
        self.waiting_for_servers = false;
        self.started = Some(now);
        for (i, local) in sockets.iter().enumerate() {
            for server in servers {
                if server.is_ipv4() == local.is_ipv4() {
                    self.transactions.push(Transaction {
                        socket: i,
                        server: *server,
                        tid: std::array::from_fn(|_| fastrand::u8(..)),
                        sent: 0,
                        finished: false,
                    });
                }
            }
        }
    }

    /// Requests due at `now`: (socket index, server, message).
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<(usize, SocketAddr, [u8; 20])> {
        let Some(started) = self.started else {
            return Vec::new();
        };
        let elapsed = now.saturating_duration_since(started);
        let mut out = Vec::new();
        for t in &mut self.transactions {
            if t.finished {
                continue;
            }
            if elapsed >= GATHER_TIMEOUT {
                t.finished = true;
                continue;
            }
            let due = SEND_AT_MS
                .iter()
                .filter(|&&ms| elapsed >= Duration::from_millis(ms))
                .count();
            if due > t.sent {
                // One request however many send times a late tick passed.
                t.sent = due;
                out.push((t.socket, t.server, binding_request(&t.tid)));
            }
        }
        out
    }

    /// Whether `data`, received on `socket` from `from`, answers one of our
    /// requests: `None` if not (hand it to str0m); `Some(mapped)` if it does,
    /// with the address the server saw if it was a success.
    pub fn handle(
        &mut self,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Option<SocketAddr>> {
        let tid = transaction_id(data)?;
        let t = self
            .transactions
            .iter_mut()
            .find(|t| t.socket == socket && t.server == from && t.tid == tid)?;
        if t.finished {
            // A retransmission's answer: already handled.
            return Some(None);
        }
        t.finished = true;
        Some(parse_binding_response(data, &tid))
    }

    /// Still waiting for the servers' addresses.
    pub fn is_waiting(&self) -> bool {
        self.waiting_for_servers
    }

    /// Every server answered or gathering timed out.
    pub fn is_done(&self, now: Instant) -> bool {
        if self.waiting_for_servers {
            return false;
        }
        match self.started {
            None => true,
            Some(s) => {
                now.saturating_duration_since(s) >= GATHER_TIMEOUT
                    || self.transactions.iter().all(|t| t.finished)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding success for `tid` with an XOR-MAPPED-ADDRESS of `addr`.
    fn response(tid: &[u8; 12], addr: SocketAddr) -> Vec<u8> {
        let mut value = vec![0u8, 0];
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
        key.extend_from_slice(tid);
        match addr.ip() {
            IpAddr::V4(ip) => {
                value[1] = 1;
                value.extend_from_slice(&port.to_be_bytes());
                value.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
            }
            IpAddr::V6(ip) => {
                value[1] = 2;
                value.extend_from_slice(&port.to_be_bytes());
                value.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
            }
        }
        // An unknown attribute first (odd length, padded), then ours.
        let mut attrs = vec![0x80, 0x22, 0, 3, b'a', b'b', b'c', 0];
        attrs.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
        attrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        attrs.extend_from_slice(&value);
        let mut m = vec![0x01, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(tid);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn urls_are_classified_and_parsed() {
        let servers = vec![
            IceServer {
                urls: vec![
                    "stun:stun.example.org".into(),
                    "stun:192.0.2.1:19302".into(),
                    "stun:[2001:db8::1]:3479".into(),
                    "turn:turn.example.org?transport=udp".into(),
                    "stuns:x.example.org".into(),
                    "stun:host:notaport".into(),
                ],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["TURNS:t.example.org:5349".into()],
                username: Some("u".into()),
                credential: Some("p".into()),
            },
        ];
        let set = classify(&servers);
        assert_eq!(
            set.stun,
            vec![
                StunServer {
                    host: "stun.example.org".into(),
                    port: 3478
                },
                StunServer {
                    host: "192.0.2.1".into(),
                    port: 19302
                },
                StunServer {
                    host: "2001:db8::1".into(),
                    port: 3479
                },
            ]
        );
        // The first turn: URL has no credentials, turns: is TLS.
        assert!(set.turn.is_empty());
        assert_eq!(set.unusable.len(), 4, "{:?}", set.unusable);
        let with_creds = IceServer {
            urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
        };
        let set = classify(&[with_creds.clone(), with_creds]);
        assert_eq!(set.turn.len(), 1, "duplicates are dropped");
        assert_eq!(set.turn[0].port, 3478);
    }

    #[test]
    fn binding_responses_are_matched_and_decoded() {
        let tid = [7u8; 12];
        let req = binding_request(&tid);
        assert_eq!(transaction_id(&req), Some(tid));
        for addr in ["203.0.113.9:40000", "[2001:db8::42]:1234"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(
                parse_binding_response(&response(&tid, addr), &tid),
                Some(addr)
            );
        }
        let good = response(&tid, "203.0.113.9:40000".parse().unwrap());
        assert_eq!(parse_binding_response(&good, &[8u8; 12]), None, "other tid");
        for cut in 0..good.len() {
            // Truncated garbage never panics and never yields an address.
            assert_eq!(parse_binding_response(&good[..cut], &tid), None);
        }
    }

    #[test]
    fn the_gatherer_retransmits_and_finishes() {
        let t0 = Instant::now();
        let mut g = Gatherer::new(true);
        assert!(!g.is_done(t0));
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        g.start(
            &[server],
            &[
                "10.0.0.2:5000".parse().unwrap(),
                "[::1]:5000".parse().unwrap(),
            ],
            t0,
        );
        let first = g.poll_transmit(t0);
        assert_eq!(first.len(), 1, "only the IPv4 socket asks an IPv4 server");
        assert!(g.poll_transmit(t0 + Duration::from_millis(100)).is_empty());
        assert_eq!(g.poll_transmit(t0 + Duration::from_millis(300)).len(), 1);
        let tid: [u8; 12] = first[0].2[8..20].try_into().unwrap();
        let mapped: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let other: SocketAddr = "192.0.2.99:3478".parse().unwrap();
        assert_eq!(
            g.handle(0, other, &response(&tid, mapped)),
            None,
            "not from the server"
        );
        assert_eq!(
            g.handle(0, server, b"not stun at all, just some bytes"),
            None
        );
        assert_eq!(
            g.handle(0, server, &response(&tid, mapped)),
            Some(Some(mapped))
        );
        assert!(g.is_done(t0 + Duration::from_millis(400)));

        let mut g = Gatherer::new(true);
        g.start(&[server], &["10.0.0.2:5000".parse().unwrap()], t0);
        assert!(!g.is_done(t0));
        assert!(g.is_done(t0 + GATHER_TIMEOUT));
        assert!(Gatherer::new(false).is_done(t0));
    }
}
