//! Candidates beyond the host ones: the STUN and TURN servers' names
//! resolved off the loop, server-reflexive gathering started once they
//! are, and one TURN relay per usable server — its allocation becomes a
//! `relay` candidate, its failure a reason (fatal with `relay_only`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use str0m::Candidate;
use tokio::time;

use super::Engine;
use crate::stun::StunServer;
use crate::turn::{Relay, RelayOutput, TurnServer};
use crate::MediaError;

/// The STUN and TURN servers' addresses.
#[derive(Default)]
pub(super) struct Resolved {
    /// Every address of every STUN server.
    stun: Vec<SocketAddr>,
    /// Each TURN server with its addresses (none: not resolved).
    turn: Vec<(TurnServer, Vec<SocketAddr>)>,
}

/// A boxed future resolving the STUN and TURN servers' addresses.
pub(super) type Lookup = Pin<Box<dyn Future<Output = Resolved> + Send>>;

/// A TURN relay and the host socket it talks to its server from.
pub(super) struct RelaySlot {
    /// Index of the host socket.
    pub(super) socket: usize,
    /// The allocation.
    pub(super) relay: Relay,
}

/// Resolves the STUN and TURN servers' host names (IP literals resolve at
/// once).
pub(super) async fn resolve(stun: Vec<StunServer>, turn: Vec<TurnServer>) -> Resolved {
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

impl Engine {
    /// The STUN and TURN servers' addresses are known: start gathering
    /// server-reflexive candidates and allocating relays.
    pub(super) fn on_resolved(&mut self, resolved: Resolved) {
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
    pub(super) fn poll_relays(&mut self, now: Instant) {
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
    pub(super) fn relays_gathered(&self) -> bool {
        !self.turn_resolving && !self.relays.iter().any(|r| r.relay.is_allocating())
    }
}
