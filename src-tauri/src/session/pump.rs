//! The event pump: one task per session that turns the client's events into
//! app state, effects and UI events, hands the peer's media signals to the
//! call's engine, and after a lost connection reconnects (with the client
//! library's backoff) and carries on with the new session.

use std::time::Duration;

use tauri::{AppHandle, Manager, Runtime};
use tracing::{info, warn};

use callinvite_client::EventStream;

use super::connect::{begin_session, connect};
use super::effects::execute;
use super::embedded::take_over_embedded;
use super::{emit_state, now_ms, AppState};
use crate::calls::Connection;

/// Turns client events into state, effects and UI events until the session
/// ends; then reconnects (with backoff) unless the user signed out meanwhile,
/// and carries on with the new session.
pub(super) async fn pump<R: Runtime>(app: AppHandle<R>, generation: u64, mut events: EventStream) {
    let state = app.state::<AppState>();
    loop {
        while let Some(event) = events.next().await {
            // The peer's media signals go to the call's media engine, not the screen.
            if crate::media::route(&app, &event).await {
                continue;
            }
            if matches!(
                event,
                callinvite_client::Event::ConnectionStateChanged {
                    state: callinvite_client::ConnectionState::Reconnecting,
                    ..
                }
            ) {
                // The built-in server may have gone with the app that ran it:
                // take it over now, so this profile (and the others) are back
                // in a second or two instead of waiting out the resume window.
                tauri::async_runtime::spawn(take_over_embedded(app.clone()));
            }
            // The raw event too, for anything in the UI that wants more than the snapshot.
            super::emit_event(&app, "client-event", &event);
            let effects = {
                let mut inner = state.inner.lock().await;
                if inner.generation != generation {
                    return;
                }
                let settings = inner.settings.clone();
                let fx = inner.calls.on_event(&event, &settings, now_ms());
                let screen = inner.calls.call.as_ref().map(|c| c.phase);
                info!(
                    event = %event.name(),
                    invitation = ?event.invitation_id().map(|i| &i.0),
                    call = ?screen,
                    effects = fx.len(),
                    "client event"
                );
                fx
            };
            execute(&app, effects).await;
            emit_state(&app).await;
        }
        let (effects, user) = {
            let mut inner = state.inner.lock().await;
            if inner.generation != generation {
                return;
            }
            inner.client = None;
            inner.calls.connection = Connection::Disconnected;
            (inner.calls.session_over(now_ms()), inner.calls.me.clone())
        };
        warn!("connection lost; reconnecting");
        execute(&app, effects).await;
        emit_state(&app).await;
        let Some(user) = user else { return };
        // The client library's reconnect policy, with the app's own bounds.
        let mut waits = callinvite_client::backoff::reconnect_waits(
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        events = loop {
            tokio::time::sleep(waits.next().unwrap_or(Duration::from_secs(10))).await;
            if state.inner.lock().await.generation != generation {
                return;
            }
            match connect(&app, &user).await {
                Ok((client, events)) => {
                    if state.inner.lock().await.generation != generation {
                        let _ = client.logout().await;
                        return;
                    }
                    begin_session(&app, client).await;
                    state.inner.lock().await.last_error = None;
                    emit_state(&app).await;
                    break events;
                }
                Err(e) => {
                    state.inner.lock().await.last_error =
                        Some(format!("reconnecting: {}", e.message));
                    emit_state(&app).await;
                }
            }
        };
    }
}
