//! The `callinvite` command line, by concern: [`args`] (what it accepts),
//! [`output`] (the JSON lines and the exit status), [`media`] (the calls'
//! sound and video), one module per command that follows events
//! ([`call`], [`answer`] the bot, [`presence`]), and [`run`] which picks one.

pub(crate) mod answer;
pub(crate) mod args;
pub(crate) mod call;
pub(crate) mod media;
pub(crate) mod output;
pub(crate) mod presence;

use callinvite_client::{Client, EventStream, InvitationId};

use answer::{answer, Answer};
use args::Cmd;
use call::call;
use media::Media;
use output::{print_error, Outcome};
use presence::presence;

pub(crate) async fn run(command: Cmd, client: &Client, events: &mut EventStream) -> Outcome {
    match command {
        Cmd::Call {
            callee,
            content,
            cancel_after,
            hangup_after,
            media,
        } => {
            let mut calls = Media::new(client, media);
            call(
                client,
                events,
                &mut calls,
                &callee,
                content,
                cancel_after,
                hangup_after,
            )
            .await
        }
        Cmd::Answer {
            accept,
            refuse: _,
            busy,
            ignore,
            response,
            after,
            count,
            hangup_after,
            media,
        } => {
            let mut calls = Media::new(client, media);
            let how = if accept {
                Answer::Accept
            } else if busy {
                Answer::Busy
            } else if ignore {
                Answer::Ignore
            } else {
                Answer::Refuse
            };
            answer(
                client,
                events,
                &mut calls,
                how,
                &response,
                after,
                count,
                hangup_after,
            )
            .await
        }
        Cmd::Presence { users, watch } => presence(client, events, &users, watch).await,
        Cmd::Hangup { invitation_id } => match client.hang_up(&InvitationId(invitation_id)).await {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                print_error(&e);
                Outcome::Error
            }
        },
    }
}

/// Sleeps until `deadline` if there is one; otherwise never returns.
pub(crate) async fn maybe_sleep(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
