//! The state we report — `Connecting`, `Connected`, `Reconnecting`,
//! `Closed` — with the deadlines a drop starts, and the end of the media:
//! a failure reported, `Bye` to the peer, str0m and the relays closed, the
//! event channel closed.

use std::time::Instant;

use str0m::Output;

use super::Engine;
use crate::signals;
use crate::{MediaError, MediaEvent, MediaState};

impl Engine {
    pub(super) fn on_connected(&mut self) {
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

    pub(super) fn on_disconnected(&mut self) {
        if self.state == Some(MediaState::Reconnecting) {
            return;
        }
        let now = Instant::now();
        self.disconnected_since = Some(now);
        self.deadline = Some(now + self.connect_timeout);
        self.set_state(MediaState::Reconnecting);
    }

    pub(super) fn emit(&self, e: MediaEvent) {
        if let Some(tx) = &self.events {
            // The application may have stopped listening; that is its call.
            let _ = tx.send(e);
        }
    }

    pub(super) fn set_state(&mut self, s: MediaState) {
        if self.state != Some(s) {
            tracing::debug!("media state {s:?}");
            self.state = Some(s);
            self.emit(MediaEvent::State(s));
        }
    }

    /// Reports `e`, says `Bye` to the peer and ends the media.
    pub(super) fn fail(&mut self, e: MediaError) {
        let reason = e.to_string();
        self.end_media(Some(e), Some(&reason));
    }

    /// Ends the network side for good: reports `failure` (if any), sends
    /// `Bye{bye}` (if any), closes the connection (RTCP BYE, DTLS
    /// close_notify), releases the source, reports `Closed` and closes the
    /// event channel. Playout (silence) goes on until the handle closes.
    pub(super) fn end_media(&mut self, failure: Option<MediaError>, bye: Option<&str>) {
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
