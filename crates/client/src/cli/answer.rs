//! `callinvite answer`: the answer bot — accept, refuse, refuse as busy or
//! let ring each incoming invitation, optionally after a delay, and hang up
//! accepted calls after a while.

use std::time::Duration;

use callinvite_client::media::Role;
use callinvite_client::{Client, Event, EventStream, InvitationId};

use super::maybe_sleep;
use super::media::Media;
use super::output::{print, print_error, print_event, Outcome};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Accept,
    Refuse,
    Busy,
    Ignore,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn answer(
    client: &Client,
    events: &mut EventStream,
    media: &mut Media,
    how: Answer,
    response: &str,
    after: Duration,
    count: u64,
    hangup_after: Option<Duration>,
) -> Outcome {
    use std::collections::BTreeMap;
    use tokio::time::Instant;
    // Invitations waiting for their answer time, and calls waiting for their hang-up time.
    let mut to_answer: BTreeMap<InvitationId, Instant> = BTreeMap::new();
    let mut to_hang_up: BTreeMap<InvitationId, Instant> = BTreeMap::new();
    let mut in_call: std::collections::BTreeSet<InvitationId> = Default::default();
    let mut ended = 0u64;
    loop {
        let next_answer = to_answer
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(id, t)| (id.clone(), *t));
        let next_hangup = to_hang_up
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(id, t)| (id.clone(), *t));
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Outcome::ConnectionLost };
                if media.on_event(&event) {
                    continue;
                }
                print_event(&event);
                let mut finished = false;
                match &event {
                    Event::RemoteInvitationReceived { invitation } if how != Answer::Ignore => {
                        to_answer.insert(invitation.invitation_id.clone(), Instant::now() + after);
                    }
                    Event::RemoteInvitationAccepted { invitation } => {
                        media.start(&invitation.invitation_id, Role::Answerer).await;
                        in_call.insert(invitation.invitation_id.clone());
                        if let Some(d) = hangup_after {
                            to_hang_up.insert(invitation.invitation_id.clone(), Instant::now() + d);
                        }
                    }
                    Event::RemoteInvitationRefused { .. } => finished = true,
                    Event::RemoteInvitationCanceled { invitation } | Event::RemoteInvitationFailure { invitation, .. } => {
                        to_answer.remove(&invitation.invitation_id);
                        finished = true;
                    }
                    Event::CallEnded { invitation_id, .. } => {
                        media.stop(invitation_id).await;
                        to_hang_up.remove(invitation_id);
                        finished = in_call.remove(invitation_id);
                    }
                    Event::ConnectionStateChanged { state: callinvite_client::ConnectionState::Disconnected | callinvite_client::ConnectionState::Aborted, .. } => {
                        return Outcome::ConnectionLost
                    }
                    _ => {}
                }
                if finished {
                    ended += 1;
                    if count != 0 && ended >= count {
                        return Outcome::Ok;
                    }
                }
            }
            Some(report) = media.next() => print(&report),
            _ = maybe_sleep(next_answer.as_ref().map(|(_, t)| *t)) => {
                let Some((id, _)) = next_answer else { continue };
                to_answer.remove(&id);
                let result = match how {
                    Answer::Accept => client.accept_remote_invitation(&id, response).await,
                    Answer::Refuse => client.refuse_remote_invitation(&id, response, false).await,
                    Answer::Busy => client.refuse_remote_invitation(&id, response, true).await,
                    Answer::Ignore => Ok(()),
                };
                if let Err(e) = result {
                    print_error(&e);
                }
            }
            _ = maybe_sleep(next_hangup.as_ref().map(|(_, t)| *t)) => {
                let Some((id, _)) = next_hangup else { continue };
                to_hang_up.remove(&id);
                if let Err(e) = client.hang_up(&id).await {
                    print_error(&e);
                }
            }
        }
    }
}
