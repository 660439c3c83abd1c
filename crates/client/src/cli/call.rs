//! `callinvite call`: send an invitation and follow it to its end.

use std::time::Duration;

use callinvite_client::media::Role;
use callinvite_client::{Client, Event, EventStream};

use super::maybe_sleep;
use super::media::Media;
use super::output::{print, print_error, print_event, Outcome};

#[allow(clippy::too_many_arguments)]
pub(crate) async fn call(
    client: &Client,
    events: &mut EventStream,
    media: &mut Media,
    callee: &str,
    content: String,
    cancel_after: Option<Duration>,
    hangup_after: Option<Duration>,
) -> Outcome {
    let invitation = match client.create_local_invitation(callee) {
        Ok(i) => i.with_content(content),
        Err(e) => {
            print_error(&e);
            return Outcome::Error;
        }
    };
    let id = match client.send_local_invitation(&invitation).await {
        Ok(id) => id,
        Err(e) => {
            print_error(&e);
            return Outcome::Error;
        }
    };
    let mut cancel_at = cancel_after.map(|d| tokio::time::Instant::now() + d);
    let mut hangup_at = None;
    let mut accepted = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Outcome::ConnectionLost };
                if media.on_event(&event) {
                    continue;
                }
                print_event(&event);
                match &event {
                    Event::LocalInvitationAccepted { .. } => {
                        media.start(&id, Role::Offerer).await;
                        accepted = true;
                        cancel_at = None;
                        hangup_at = hangup_after.map(|d| tokio::time::Instant::now() + d);
                    }
                    Event::LocalInvitationRefused { busy: true, .. } => return Outcome::Busy,
                    Event::LocalInvitationRefused { .. } => return Outcome::Refused,
                    Event::LocalInvitationCanceled { .. } => return Outcome::Canceled,
                    Event::LocalInvitationFailure { reason, .. } => return Outcome::from_failure(*reason),
                    Event::CallEnded { invitation_id, reason, .. } if *invitation_id == id => {
                        media.stop(invitation_id).await;
                        return if *reason == callinvite_client::CallEndReason::NotLoggedIn { Outcome::ConnectionLost } else { Outcome::Ok };
                    }
                    Event::ConnectionStateChanged { state: callinvite_client::ConnectionState::Disconnected | callinvite_client::ConnectionState::Aborted, .. } if !accepted => {
                        return Outcome::ConnectionLost
                    }
                    _ => {}
                }
            }
            Some(report) = media.next() => print(&report),
            _ = maybe_sleep(cancel_at) => {
                cancel_at = None;
                if let Err(e) = client.cancel_local_invitation(&invitation).await {
                    print_error(&e);
                }
            }
            _ = maybe_sleep(hangup_at) => {
                hangup_at = None;
                if let Err(e) = client.hang_up(&id).await {
                    print_error(&e);
                }
            }
        }
    }
}
