//! The network side of the loop: a datagram goes to the TURN relay it
//! comes from, to the STUN gatherer, or to str0m; str0m's output is
//! drained after every mutation, its transmits sent from the host socket
//! they name or wrapped for a TURN relay.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Input, Output};

use super::Engine;
use crate::net::Datagram;
use crate::turn::Incoming;
use crate::{MediaError, MediaState};

impl Engine {
    pub(super) fn on_datagram(&mut self, d: &Datagram, data: &[u8]) {
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
    pub(super) fn drain(&mut self) {
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

    pub(super) fn transmit(&mut self, t: &Transmit) {
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
    pub(super) fn send_to_turn_server(&self, k: usize, bytes: &[u8]) {
        let slot = &self.relays[k];
        let socket = &self.sockets[slot.socket].socket;
        if let Err(e) = socket.try_send_to(bytes, slot.relay.server()) {
            tracing::debug!("send to TURN server {} failed: {e}", slot.relay.server());
        }
    }
}
