//! The app's calls as requests: each [`Command`] is checked against the
//! invitation's local state machine, then sent through the session with a
//! [`Pending`] that says what to do with its reply.

use tokio::sync::oneshot;
use tracing::error;

use callinvite_protocol::invitation::caller::{CancelAction, LocalInvitationState};
use callinvite_protocol::session::ClientSession;
use callinvite_protocol::wire::PresenceEntry;
use callinvite_protocol::{
    ClientMessage, ErrorCode, IceServer, InvitationId, MediaSignal, ServerMessage,
};

use super::invitations::{Invitations, Local};
use crate::client::LocalInvitation;
use crate::error::{misuse_message, ClientError};
use crate::event::Event;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// The session layer, with what each request's reply is for.
pub(super) type Session = ClientSession<Pending>;

/// What the app asked for, with where its answer goes.
pub(crate) enum Command {
    Send {
        invitation: LocalInvitation,
        reply: Reply<InvitationId>,
    },
    Cancel {
        handle: u64,
        reply: Reply<()>,
    },
    /// Accept or refuse a received invitation.
    Answer {
        id: InvitationId,
        answer: Answer,
        reply: Reply<()>,
    },
    Hangup {
        id: InvitationId,
        reply: Reply<()>,
    },
    QueryPresence {
        users: Vec<String>,
        reply: Reply<Vec<PresenceEntry>>,
    },
    SubscribePresence {
        users: Vec<String>,
        reply: Reply<Vec<PresenceEntry>>,
    },
    UnsubscribePresence {
        users: Vec<String>,
        reply: Reply<()>,
    },
    ClearMissedCalls {
        ids: Vec<InvitationId>,
        reply: Reply<()>,
    },
    SendMedia {
        id: InvitationId,
        signal: MediaSignal,
        reply: Reply<()>,
    },
    GetIceServers {
        reply: Reply<Vec<IceServer>>,
    },
    Logout {
        reply: Reply<()>,
    },
}

/// A callee's answer to an invitation.
pub(crate) enum Answer {
    Accept { response: String },
    Refuse { response: String, busy: bool },
}

impl Answer {
    fn message(self, req: u64, invitation_id: InvitationId) -> ClientMessage {
        match self {
            Answer::Accept { response } => ClientMessage::Accept {
                req,
                invitation_id,
                response,
            },
            Answer::Refuse { response, busy } => ClientMessage::Refuse {
                req,
                invitation_id,
                response,
                busy,
            },
        }
    }
}

/// What to do with a request's reply.
pub(super) enum Pending {
    Invite {
        handle: u64,
        reply: Reply<InvitationId>,
    },
    /// `reply` is `None` for a deferred cancel whose caller was already answered.
    Cancel {
        reply: Option<Reply<()>>,
    },
    /// An accept or a refuse: its outcome moves the invitation's state.
    Answer {
        id: InvitationId,
        reply: Reply<()>,
    },
    /// Anything else answered by a plain `ok` (hang-up, media, logout, …).
    Done {
        reply: Reply<()>,
    },
    Presence {
        reply: Reply<Vec<PresenceEntry>>,
    },
    IceServers {
        reply: Reply<Vec<IceServer>>,
    },
}

impl Pending {
    pub(super) fn fail(self, err: impl Fn() -> ClientError) {
        match self {
            Pending::Invite { reply, .. } => drop(reply.send(Err(err()))),
            Pending::Cancel { reply: Some(reply) }
            | Pending::Answer { reply, .. }
            | Pending::Done { reply } => drop(reply.send(Err(err()))),
            Pending::Cancel { reply: None } => {}
            Pending::Presence { reply } => drop(reply.send(Err(err()))),
            Pending::IceServers { reply } => drop(reply.send(Err(err()))),
        }
    }
}

/// Sends a request through the session (kept for the resume while away).
fn request(session: &mut Session, make: impl FnOnce(u64) -> ClientMessage, pending: Pending) {
    if let Err(e) = session.send_request(make, pending) {
        // Only a bug here gets this far; the caller hears `NotLoggedIn`.
        error!(error = %e, "a request could not be sent");
    }
}

impl Invitations {
    /// Checks an app call against the local state and sends it.
    pub(super) fn command(&mut self, cmd: Command, session: &mut Session) {
        match cmd {
            Command::Send { invitation, reply } => {
                let local = self
                    .locals
                    .entry(invitation.handle)
                    .or_insert_with(|| Local {
                        state: LocalInvitationState::new(),
                        callee: invitation.callee().clone(),
                        content: invitation.content().to_owned(),
                    });
                if let Err(code) = local.state.send() {
                    let _ = reply.send(Err(ClientError::api(code, misuse_message(code))));
                    return;
                }
                local.content = invitation.content().to_owned();
                let (callee, content) = (local.callee.to_string(), local.content.clone());
                let handle = invitation.handle;
                let make = |req| ClientMessage::Invite {
                    req,
                    callee,
                    content,
                };
                request(session, make, Pending::Invite { handle, reply });
            }
            Command::Cancel { handle, reply } => {
                let Some(local) = self.locals.get_mut(&handle) else {
                    let _ = reply.send(Err(ClientError::api(
                        ErrorCode::InvalidArgument,
                        "this invitation was never sent",
                    )));
                    return;
                };
                match local.state.cancel() {
                    Err(code) => {
                        drop(reply.send(Err(ClientError::api(code, misuse_message(code)))))
                    }
                    Ok(CancelAction::SendNow) => {
                        let Some(invitation_id) = local.state.id().cloned() else {
                            return;
                        };
                        let make = |req| ClientMessage::Cancel { req, invitation_id };
                        request(session, make, Pending::Cancel { reply: Some(reply) });
                    }
                    Ok(CancelAction::Deferred) | Ok(CancelAction::AlreadyRequested) => {
                        drop(reply.send(Ok(())))
                    }
                }
            }
            Command::Answer { id, answer, reply } => {
                let check = self.remotes.get_mut(&id).map(|r| match &answer {
                    Answer::Accept { .. } => r.state.accept(),
                    Answer::Refuse { busy, .. } => r.state.refuse(*busy),
                });
                match check {
                    None => drop(reply.send(Err(ClientError::api(
                        ErrorCode::NotFound,
                        format!("no invitation {id} received here"),
                    )))),
                    Some(Err(code)) => {
                        drop(reply.send(Err(ClientError::api(code, misuse_message(code)))))
                    }
                    Some(Ok(())) => {
                        let invitation_id = id.clone();
                        let make = |req| answer.message(req, invitation_id);
                        request(session, make, Pending::Answer { id, reply });
                    }
                }
            }
            Command::Hangup { id, reply } => {
                // Known here: check locally. Unknown: it may be a call of another device of this user.
                let check = match (
                    self.local_ids.get(&id).and_then(|h| self.locals.get(h)),
                    self.remotes.get(&id),
                ) {
                    (Some(l), _) => l.state.hang_up(),
                    (None, Some(r)) => r.state.hang_up(),
                    (None, None) => Ok(()),
                };
                if let Err(code) = check {
                    let msg = if code == ErrorCode::InvalidArgument {
                        "the call is not established; cancel or refuse instead"
                    } else {
                        "the call has already ended"
                    };
                    let _ = reply.send(Err(ClientError::api(code, msg)));
                    return;
                }
                let make = |req| ClientMessage::Hangup {
                    req,
                    invitation_id: id,
                };
                request(session, make, Pending::Done { reply });
            }
            Command::QueryPresence { users, reply } => {
                let make = |req| ClientMessage::QueryPresence { req, users };
                request(session, make, Pending::Presence { reply });
            }
            Command::SubscribePresence { users, reply } => {
                let make = |req| ClientMessage::SubscribePresence { req, users };
                request(session, make, Pending::Presence { reply });
            }
            Command::UnsubscribePresence { users, reply } => {
                let make = |req| ClientMessage::UnsubscribePresence { req, users };
                request(session, make, Pending::Done { reply });
            }
            Command::ClearMissedCalls { ids, reply } => {
                let make = |req| ClientMessage::ClearMissedCalls {
                    req,
                    invitation_ids: ids,
                };
                request(session, make, Pending::Done { reply });
            }
            Command::SendMedia { id, signal, reply } => {
                let make = |req| ClientMessage::Media {
                    req,
                    invitation_id: id,
                    signal,
                };
                request(session, make, Pending::Done { reply });
            }
            Command::GetIceServers { reply } => {
                let make = |req| ClientMessage::GetIceServers { req };
                request(session, make, Pending::IceServers { reply });
            }
            // The session notes the logout when its `ok` comes, and the
            // coming end of the connection then ends the session.
            Command::Logout { reply } => {
                let make = |req| ClientMessage::Logout { req: Some(req) };
                request(session, make, Pending::Done { reply });
            }
        }
    }

    /// The reply to a request: answers the app's call, and moves the
    /// invitation's state where the request was about one.
    pub(super) fn on_reply(
        &mut self,
        pending: Pending,
        reply: ServerMessage,
        session: &mut Session,
    ) {
        match (pending, reply) {
            (Pending::Answer { id, reply }, ServerMessage::Ok { .. }) => {
                let ev = self
                    .remotes
                    .get_mut(&id)
                    .and_then(|r| r.state.on_answer_ok());
                self.emit_remote(&id, ev);
                let _ = reply.send(Ok(()));
            }
            (
                Pending::Cancel { reply: Some(reply) } | Pending::Done { reply },
                ServerMessage::Ok { .. },
            ) => drop(reply.send(Ok(()))),
            (Pending::Invite { handle, reply }, ServerMessage::Error { code, message, .. }) => {
                if let Some(l) = self.locals.get_mut(&handle) {
                    l.state.send_rejected();
                }
                let _ = reply.send(Err(ClientError::api(code, message)));
            }
            (Pending::Answer { id, reply }, ServerMessage::Error { code, message, .. }) => {
                if let Some(r) = self.remotes.get_mut(&id) {
                    r.state.on_answer_error();
                }
                let _ = reply.send(Err(ClientError::api(code, message)));
            }
            (pending, ServerMessage::Error { code, message, .. }) => {
                pending.fail(|| ClientError::api(code, message.clone()))
            }
            (Pending::Invite { handle, reply }, msg @ ServerMessage::InviteOk { .. }) => {
                self.on_invite_ok(handle, reply, msg, session)
            }
            (Pending::Presence { reply }, ServerMessage::Presence { users, .. }) => {
                drop(reply.send(Ok(users)))
            }
            (Pending::IceServers { reply }, ServerMessage::IceServers { ice_servers, .. }) => {
                drop(reply.send(Ok(ice_servers)))
            }
            (pending, _) => {
                pending.fail(|| ClientError::api(ErrorCode::Internal, "unexpected reply"))
            }
        }
    }

    /// The server has the invitation: it has an id now, and a cancel the app
    /// asked for meanwhile goes out.
    fn on_invite_ok(
        &mut self,
        handle: u64,
        reply: Reply<InvitationId>,
        msg: ServerMessage,
        session: &mut Session,
    ) {
        let Some(local) = self.locals.get_mut(&handle) else {
            return;
        };
        let (_, cancel_now) = local.state.on_server(&msg);
        let ServerMessage::InviteOk {
            invitation_id,
            callee_online,
            ..
        } = msg
        else {
            return;
        };
        self.local_ids.insert(invitation_id.clone(), handle);
        if let Some(invitation) = self.local_info(handle) {
            self.emit(Event::LocalInvitationSent {
                invitation,
                callee_online,
            });
        }
        let _ = reply.send(Ok(invitation_id.clone()));
        if cancel_now {
            let make = |req| ClientMessage::Cancel { req, invitation_id };
            request(session, make, Pending::Cancel { reply: None });
        }
    }
}
