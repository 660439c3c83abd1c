//! `callinvite presence`: the online state of users, and its changes.

use std::time::Duration;

use serde_json::json;

use callinvite_client::{Client, Event, EventStream};

use super::output::{print, print_error, print_event, Outcome};

pub(crate) async fn presence(
    client: &Client,
    events: &mut EventStream,
    users: &[String],
    watch: Option<Duration>,
) -> Outcome {
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    let result = match watch {
        None => client.query_presence(&ids).await,
        Some(_) => client.subscribe_presence(&ids).await,
    };
    match result {
        Ok(entries) => print(&json!({"event": "presence", "users": entries})),
        Err(e) => {
            print_error(&e);
            return Outcome::Error;
        }
    }
    if let Some(d) = watch {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(event @ Event::PresenceChanged { .. }) => print_event(&event),
                    Some(_) => {}
                    None => return Outcome::ConnectionLost,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
    }
    Outcome::Ok
}
