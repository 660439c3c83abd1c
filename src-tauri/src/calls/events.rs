//! How the client library's events move the call on screen: an outgoing
//! call's phases, an incoming call ringing (or refused busy, or kept
//! waiting), its end however it comes, missed calls from the server, and
//! the end of the whole session. Each returns the [`Effect`]s the session
//! must carry out.

use callinvite_client::{CallEndReason, ConnectionState, Event, FailureReason, InvitationId};

use super::{
    meeting_url, ActiveCall, CallOutcome, Calls, Connection, Direction, Effect, MediaRole,
    MediaStatus, Phase,
};
use crate::store::{BusyPolicy, DoNotDisturb, Settings};

impl Calls {
    /// Applies one client event; returns what the session must do.
    pub fn on_event(&mut self, event: &Event, settings: &Settings, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::ConnectionStateChanged { state, .. } => {
                self.connection = match state {
                    ConnectionState::Connected => Connection::Connected,
                    ConnectionState::Connecting | ConnectionState::Reconnecting => {
                        Connection::Connecting
                    }
                    ConnectionState::Disconnected | ConnectionState::Aborted => {
                        Connection::Disconnected
                    }
                };
            }
            Event::MissedCalls { calls } => {
                // Calls that came while no device of ours was online: into the
                // history in time order, one notification each, then cleared.
                for c in calls {
                    if self.history.iter().any(|h| h.id == c.invitation_id.0) {
                        continue;
                    }
                    self.record(
                        Some(&c.invitation_id),
                        Direction::Incoming,
                        &c.caller,
                        c.at_ms,
                        "missed",
                        true,
                    );
                    fx.push(Effect::NotifyMissed(c.caller.clone()));
                }
                self.history.sort_by_key(|h| std::cmp::Reverse(h.at_ms));
                fx.push(Effect::SaveHistory);
                fx.push(Effect::ClearMissed(
                    calls.iter().map(|c| c.invitation_id.clone()).collect(),
                ));
            }
            Event::LocalInvitationSent {
                invitation,
                callee_online,
            } => {
                if let Some(call) = self
                    .call
                    .as_mut()
                    .filter(|c| c.direction == Direction::Outgoing && c.invitation_id.is_none())
                {
                    call.invitation_id = invitation.invitation_id.clone();
                    if !callee_online {
                        call.phase = Phase::WaitingOffline;
                        call.phase_since_ms = now_ms;
                        call.wait_until_ms = Some(now_ms + self.offline_window_ms);
                    }
                }
            }
            Event::LocalInvitationReceivedByPeer { invitation } => {
                if let Some(call) = self.current_mut(invitation.invitation_id.as_ref()) {
                    call.phase = Phase::Ringing;
                    call.phase_since_ms = now_ms;
                }
            }
            Event::LocalInvitationAccepted {
                invitation,
                response,
            } => {
                let id = invitation.invitation_id.clone();
                if let Some(call) = self.current_mut(id.as_ref()) {
                    call.phase = Phase::InCall;
                    call.phase_since_ms = now_ms;
                    call.accepted_ms = Some(now_ms);
                    call.media = Some(MediaStatus::connecting(settings));
                    let (peer, content) = (call.peer.clone(), call.content.clone());
                    if let Some(invitation_id) = id.clone() {
                        fx.push(Effect::StartMedia {
                            invitation_id,
                            role: MediaRole::Offerer,
                        });
                    }
                    self.record(
                        id.as_ref(),
                        Direction::Outgoing,
                        &peer,
                        now_ms,
                        "accepted",
                        false,
                    );
                    fx.push(Effect::SaveHistory);
                    fx.push(Effect::Outcome(CallOutcome {
                        peer,
                        direction: Direction::Outgoing,
                        outcome: "accepted",
                        detail: response.clone(),
                    }));
                    if let Some(url) = meeting_url(settings, &content) {
                        fx.push(Effect::OpenUrl(url));
                    }
                }
            }
            Event::LocalInvitationRefused {
                invitation,
                response,
                busy,
            } => {
                if self.current_outgoing(invitation.invitation_id.as_ref()) {
                    let outcome = if *busy { "busy" } else { "refused" };
                    self.finish(outcome, response.clone(), false, now_ms, &mut fx);
                }
            }
            Event::LocalInvitationCanceled { invitation } => {
                if self.current_outgoing(invitation.invitation_id.as_ref()) {
                    self.finish("canceled", String::new(), false, now_ms, &mut fx);
                }
            }
            Event::LocalInvitationFailure { invitation, reason } => {
                if self.current_outgoing(invitation.invitation_id.as_ref()) {
                    let outcome = match reason {
                        FailureReason::PeerOffline => "offline",
                        FailureReason::NoResponse | FailureReason::Expired => "no_answer",
                        FailureReason::NotLoggedIn | FailureReason::ServerShutdown => {
                            "connection_lost"
                        }
                        _ => "failed",
                    };
                    self.finish(outcome, String::new(), false, now_ms, &mut fx);
                }
            }
            Event::RemoteInvitationReceived { invitation } => {
                let id = invitation.invitation_id.clone();
                let (caller, content) = (invitation.caller.clone(), invitation.content.clone());
                if settings.do_not_disturb == DoNotDisturb::Busy {
                    // Do not disturb: answered busy at once, kept as a missed call.
                    self.waiting.insert(id.clone(), (caller, content));
                    self.dnd_refused.insert(id.clone());
                    fx.push(Effect::RefuseBusy(id));
                } else if self.call.is_none() {
                    self.call = Some(ActiveCall {
                        invitation_id: Some(id.clone()),
                        direction: Direction::Incoming,
                        peer: caller.clone(),
                        content: content.clone(),
                        phase: Phase::Incoming,
                        phase_since_ms: now_ms,
                        answering: false,
                        local: None,
                        accepted_ms: None,
                        media: None,
                        wait_until_ms: None,
                        silent: settings.do_not_disturb == DoNotDisturb::Silent,
                    });
                    fx.push(Effect::NotifyIncoming {
                        invitation_id: id,
                        caller,
                        content,
                    });
                } else if settings.busy_policy == BusyPolicy::AutoBusy {
                    self.waiting.insert(id.clone(), (caller, content));
                    fx.push(Effect::RefuseBusy(id));
                } else {
                    self.waiting
                        .insert(id.clone(), (caller.clone(), content.clone()));
                    fx.push(Effect::NotifyIncoming {
                        invitation_id: id,
                        caller,
                        content,
                    });
                }
            }
            Event::RemoteInvitationAccepted { invitation } => {
                let id = invitation.invitation_id.clone();
                fx.push(Effect::Withdraw(id.clone()));
                if let Some(call) = self.current_mut(Some(&id)) {
                    call.phase = Phase::InCall;
                    call.phase_since_ms = now_ms;
                    call.answering = false;
                    call.accepted_ms = Some(now_ms);
                    call.media = Some(MediaStatus::connecting(settings));
                    let (peer, content) = (call.peer.clone(), call.content.clone());
                    fx.push(Effect::StartMedia {
                        invitation_id: id.clone(),
                        role: MediaRole::Answerer,
                    });
                    self.record(
                        Some(&id),
                        Direction::Incoming,
                        &peer,
                        now_ms,
                        "accepted",
                        false,
                    );
                    fx.push(Effect::SaveHistory);
                    if let Some(url) = meeting_url(settings, &content) {
                        fx.push(Effect::OpenUrl(url));
                    }
                }
            }
            Event::RemoteInvitationRefused { invitation, busy } => {
                let id = invitation.invitation_id.clone();
                fx.push(Effect::Withdraw(id.clone()));
                let outcome = if *busy { "busy" } else { "refused" };
                if self.is_current(&id) {
                    self.finish(outcome, String::new(), false, now_ms, &mut fx);
                } else if let Some((caller, _)) = self.waiting.remove(&id) {
                    // Refused while we were in another call: the user never saw it ring.
                    let missed = *busy;
                    self.record(
                        Some(&id),
                        Direction::Incoming,
                        &caller,
                        now_ms,
                        if missed { "missed" } else { outcome },
                        missed,
                    );
                    fx.push(Effect::SaveHistory);
                    if missed {
                        let detail = if self.dnd_refused.remove(&id) {
                            "answered busy: do not disturb is on"
                        } else {
                            "answered busy while you were in a call"
                        };
                        fx.push(Effect::NotifyMissed(caller.clone()));
                        fx.push(Effect::Outcome(CallOutcome {
                            peer: caller,
                            direction: Direction::Incoming,
                            outcome: "missed",
                            detail: detail.into(),
                        }));
                    }
                }
            }
            Event::RemoteInvitationCanceled { invitation } => {
                self.incoming_ended(&invitation.invitation_id, "missed", true, now_ms, &mut fx);
            }
            Event::RemoteInvitationFailure { invitation, reason } => {
                let (outcome, missed) = match reason {
                    FailureReason::AnsweredElsewhere => ("answered_elsewhere", false),
                    FailureReason::DeclinedElsewhere => ("declined_elsewhere", false),
                    FailureReason::NotLoggedIn | FailureReason::ServerShutdown => {
                        ("connection_lost", false)
                    }
                    FailureReason::AcceptFailure => ("failed", false),
                    // Expired, or the caller went away before anyone answered.
                    _ => ("missed", true),
                };
                self.incoming_ended(&invitation.invitation_id, outcome, missed, now_ms, &mut fx);
            }
            Event::CallEnded {
                invitation_id,
                reason,
                by,
                ..
            } => {
                if self.is_current(invitation_id) {
                    let me = self.me.clone().unwrap_or_default();
                    let (outcome, detail) = match reason {
                        CallEndReason::Hangup if by.as_deref() == Some(me.as_str()) => {
                            ("hung_up", String::new())
                        }
                        CallEndReason::Hangup => ("peer_hung_up", String::new()),
                        CallEndReason::PeerConnectionLost => {
                            ("connection_lost", "their connection was lost".into())
                        }
                        CallEndReason::PeerLoggedOut => ("peer_hung_up", "they signed out".into()),
                        CallEndReason::NotLoggedIn => ("connection_lost", String::new()),
                        CallEndReason::ServerShutdown => {
                            ("connection_lost", "the server shut down".into())
                        }
                    };
                    self.finish(outcome, detail, false, now_ms, &mut fx);
                }
            }
            Event::PresenceChanged { user, online } => {
                self.presence.insert(user.clone(), *online);
            }
            // Media negotiation is the media engine's, not the screen's.
            Event::ProtocolError { .. } | Event::MediaSignal { .. } => {}
        }
        fx
    }

    /// Ends the call on screen with `outcome`, recording it.
    fn finish(
        &mut self,
        outcome: &'static str,
        detail: String,
        missed: bool,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(call) = self.call.take() else { return };
        if call.media.is_some() {
            fx.push(Effect::StopMedia);
        }
        if let Some(accepted) = call.accepted_ms {
            // It was a call: the history entry made at accept gets its duration.
            let id = call.invitation_id.as_ref().map(|i| i.0.clone());
            if let Some(h) = self.history.iter_mut().find(|h| Some(&h.id) == id.as_ref()) {
                h.duration_s = Some(now_ms.saturating_sub(accepted) / 1000);
            }
        } else {
            let started = call.phase_since_ms.min(now_ms);
            self.record(
                call.invitation_id.as_ref(),
                call.direction,
                &call.peer,
                started,
                outcome,
                missed,
            );
        }
        fx.push(Effect::SaveHistory);
        fx.push(Effect::Outcome(CallOutcome {
            peer: call.peer,
            direction: call.direction,
            outcome,
            detail,
        }));
    }

    fn incoming_ended(
        &mut self,
        id: &InvitationId,
        outcome: &'static str,
        missed: bool,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        self.dnd_refused.remove(id);
        fx.push(Effect::Withdraw(id.clone()));
        let peer = if self.is_current(id) {
            let peer = self.call.as_ref().map(|c| c.peer.clone());
            self.finish(outcome, String::new(), missed, now_ms, fx);
            peer
        } else if let Some((caller, _)) = self.waiting.remove(id) {
            self.record(
                Some(id),
                Direction::Incoming,
                &caller,
                now_ms,
                outcome,
                missed,
            );
            fx.push(Effect::SaveHistory);
            fx.push(Effect::Outcome(CallOutcome {
                peer: caller.clone(),
                direction: Direction::Incoming,
                outcome,
                detail: String::new(),
            }));
            Some(caller)
        } else {
            None
        };
        if missed {
            if let Some(peer) = peer {
                fx.push(Effect::NotifyMissed(peer));
            }
        }
    }

    /// The session ended (signed out or connection gone for good).
    pub fn session_over(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        for id in std::mem::take(&mut self.waiting).into_keys() {
            fx.push(Effect::Withdraw(id));
        }
        if let Some(id) = self.call.as_ref().and_then(|c| c.invitation_id.clone()) {
            fx.push(Effect::Withdraw(id));
        }
        self.finish("connection_lost", String::new(), false, now_ms, &mut fx);
        fx
    }
}
