//! The requests of a logged-in device, one function each. A request that
//! cannot be applied returns a [`Refusal`], which the device is sent as an
//! `error` with the request's `ref`.

use std::collections::HashSet;
use std::time::Instant;

use tracing::info;

use callinvite_protocol::invitation::{GoneCause, Input, Party, Record};
use callinvite_protocol::limits::{
    CLOSE_NORMAL, MAX_CONTENT_BYTES, MAX_PRESENCE_QUERY, MAX_PRESENCE_SUBSCRIPTIONS,
    MAX_RESPONSE_BYTES,
};
use callinvite_protocol::{
    ClientMessage, DeviceId, ErrorCode, InvitationId, ServerMessage, UserId,
};

use super::link::{close_reason, Outbound};
use super::Hub;
use crate::cluster::{Envelope, Target};

/// Why a request was not applied: the `error` its device is sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Refusal::new(ErrorCode::InvalidArgument, message)
    }
}

/// Validates a list of user ids for presence requests.
fn parse_users(users: &[String]) -> Result<Vec<UserId>, Refusal> {
    users
        .iter()
        .map(|u| UserId::parse(u).map_err(|e| Refusal::invalid(format!("{u:?}: {e}"))))
        .collect()
}

/// A presence (un)subscription's users: at least one, each a valid id.
fn parse_some_users(users: &[String]) -> Result<Vec<UserId>, Refusal> {
    if users.is_empty() {
        return Err(Refusal::invalid("name at least one user id"));
    }
    parse_users(users)
}

fn check_response(response: &str) -> Result<(), Refusal> {
    if response.len() > MAX_RESPONSE_BYTES {
        return Err(Refusal::invalid(format!(
            "response is {} bytes; the limit is {MAX_RESPONSE_BYTES}",
            response.len()
        )));
    }
    Ok(())
}

impl Hub {
    /// Applies one request of `device` (whose session is here).
    pub(super) fn request(
        &mut self,
        device: DeviceId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), Refusal> {
        let Some(d) = self.sessions.get(device) else {
            return Ok(());
        };
        let party = Party {
            user: d.user.clone(),
            device,
        };
        match msg {
            ClientMessage::Login { .. } | ClientMessage::Resume { .. } => Err(Refusal::new(
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in; log out first",
            )),
            ClientMessage::ClearMissedCalls {
                req,
                invitation_ids,
            } => {
                self.clear_missed(&party, req, invitation_ids);
                Ok(())
            }
            ClientMessage::Seen { seq } => {
                if let Some(d) = self.sessions.get_mut(device) {
                    d.outbox.handle_seen(seq);
                }
                Ok(())
            }
            ClientMessage::Logout { req } => {
                self.send(device, &ServerMessage::Ok { req });
                if let Some(l) = self.sessions.get(device).and_then(|d| d.link.as_ref()) {
                    l.put(
                        &*self.bus,
                        Outbound::Close(CLOSE_NORMAL, close_reason(CLOSE_NORMAL)),
                    );
                }
                self.gone(device, GoneCause::Logout, now);
                Ok(())
            }
            ClientMessage::Invite {
                req,
                callee,
                content,
            } => self.invite(party, req, callee, content, now),
            ClientMessage::Cancel { req, invitation_id } => {
                self.drive_request(&invitation_id, Input::Cancel { from: party, req }, now)
            }
            ClientMessage::Accept {
                req,
                invitation_id,
                response,
            } => {
                check_response(&response)?;
                let input = Input::Accept {
                    from: party,
                    req,
                    response,
                };
                self.drive_request(&invitation_id, input, now)
            }
            ClientMessage::Refuse {
                req,
                invitation_id,
                response,
                busy,
            } => {
                check_response(&response)?;
                let input = Input::Refuse {
                    from: party,
                    req,
                    response,
                    busy,
                };
                self.drive_request(&invitation_id, input, now)
            }
            ClientMessage::Hangup { req, invitation_id } => {
                self.drive_request(&invitation_id, Input::Hangup { from: party, req }, now)
            }
            ClientMessage::Media {
                req,
                invitation_id,
                signal,
            } => {
                let input = Input::Media {
                    from: party,
                    req,
                    signal,
                };
                self.drive_request(&invitation_id, input, now)
            }
            ClientMessage::GetIceServers { req } => {
                let msg = ServerMessage::IceServers {
                    req,
                    ice_servers: self
                        .config
                        .ice
                        .servers_for(party.user.as_str(), std::time::SystemTime::now()),
                    ttl_ms: self.config.ice.turn_ttl.as_millis() as u64,
                };
                self.send(device, &msg);
                Ok(())
            }
            ClientMessage::Ack { invitation_id, of } => {
                let input = Input::Ack { from: device, of };
                if !self.forward(&invitation_id, &input, None) {
                    self.drive(&invitation_id, input, now);
                }
                Ok(())
            }
            ClientMessage::QueryPresence { req, users } => self.query_presence(device, req, users),
            ClientMessage::SubscribePresence { req, users } => {
                self.subscribe_presence(device, req, users)
            }
            ClientMessage::UnsubscribePresence { req, users } => {
                self.unsubscribe_presence(device, req, users)
            }
        }
    }

    fn clear_missed(&mut self, party: &Party, req: u64, ids: Vec<InvitationId>) {
        self.missed.clear(&party.user, &ids);
        self.bus.store_missed(
            &party.user,
            &self.missed.of(&party.user),
            self.config.missed.max_age,
        );
        self.bus.publish(
            Target::All,
            &Envelope::MissedCleared {
                from: self.bus.node(),
                user: party.user.clone(),
                ids,
            },
        );
        self.send(party.device, &ServerMessage::Ok { req: Some(req) });
    }

    fn invite(
        &mut self,
        caller: Party,
        req: u64,
        callee: String,
        content: String,
        now: Instant,
    ) -> Result<(), Refusal> {
        let callee =
            UserId::parse(&callee).map_err(|e| Refusal::invalid(format!("callee: {e}")))?;
        if callee == caller.user {
            return Err(Refusal::invalid("you cannot call yourself"));
        }
        if content.len() > MAX_CONTENT_BYTES {
            return Err(Refusal::invalid(format!(
                "content is {} bytes; the limit is {MAX_CONTENT_BYTES}",
                content.len()
            )));
        }
        let ringing = self.invitations.ringing_from(&caller.user);
        if ringing >= self.config.max_outgoing_invitations {
            return Err(Refusal::new(
                ErrorCode::TooManyInvitations,
                format!("you already have {ringing} invitations ringing (the limit); cancel one or wait"),
            ));
        }
        let id = if self.bus.clustered() {
            // The id names the node that owns it.
            InvitationId(format!("n{}.{}", self.bus.node(), uuid::Uuid::new_v4()))
        } else {
            InvitationId(uuid::Uuid::new_v4().to_string())
        };
        // An online callee's id is shared with the hub's copy.
        let (callee, online) = self.presence.shared(callee);
        info!(invitation = %id, caller = %caller.user, device = %caller.device, %callee, callee_devices = online.len(), "invitation sent");
        let (record, effects) = Record::new(
            id,
            caller,
            req,
            callee,
            content,
            &online,
            self.config.timeouts,
            now,
        );
        self.open(record, effects, now);
        Ok(())
    }

    fn query_presence(
        &mut self,
        device: DeviceId,
        req: u64,
        users: Vec<String>,
    ) -> Result<(), Refusal> {
        if users.is_empty() || users.len() > MAX_PRESENCE_QUERY {
            return Err(Refusal::invalid(format!(
                "query 1 to {MAX_PRESENCE_QUERY} user ids at once"
            )));
        }
        let users = parse_users(&users)?;
        let users = self.presence.snapshot(&users);
        self.send(device, &ServerMessage::Presence { req, users });
        Ok(())
    }

    fn subscribe_presence(
        &mut self,
        device: DeviceId,
        req: u64,
        users: Vec<String>,
    ) -> Result<(), Refusal> {
        let users = parse_some_users(&users)?;
        let Some(d) = self.sessions.get(device) else {
            return Ok(());
        };
        let subs = &d.follows;
        let total = subs.len()
            + users
                .iter()
                .filter(|u| !subs.contains(u))
                .collect::<HashSet<_>>()
                .len();
        if total > MAX_PRESENCE_SUBSCRIPTIONS {
            return Err(Refusal::invalid(format!(
                "a device may follow at most {MAX_PRESENCE_SUBSCRIPTIONS} users; this would make {total}"
            )));
        }
        self.follow(device, &users);
        self.keep_session_record(device);
        let snapshot = self.presence.snapshot(&users);
        self.send(
            device,
            &ServerMessage::Presence {
                req,
                users: snapshot,
            },
        );
        Ok(())
    }

    fn unsubscribe_presence(
        &mut self,
        device: DeviceId,
        req: u64,
        users: Vec<String>,
    ) -> Result<(), Refusal> {
        let users = parse_some_users(&users)?;
        for u in &users {
            self.presence.unfollow(device, u);
            if let Some(d) = self.sessions.get_mut(device) {
                d.follows.remove(u);
            }
        }
        self.keep_session_record(device);
        self.send(device, &ServerMessage::Ok { req: Some(req) });
        Ok(())
    }
}
