//! Carrying out the [`Effect`]s the call state asks for: the UI's
//! `call-outcome`, native notifications, a busy refusal, clearing missed
//! calls on the server, the meeting room, the call's media, saving the
//! history.

use tauri::{AppHandle, Manager, Runtime};
use tracing::{info, warn};

use super::AppState;
use crate::calls::Effect;

/// Carries out what an event asked for.
pub async fn execute<R: Runtime>(app: &AppHandle<R>, effects: Vec<Effect>) {
    let state = app.state::<AppState>();
    for effect in effects {
        match effect {
            Effect::Outcome(outcome) => {
                super::emit_event(app, "call-outcome", &outcome);
            }
            Effect::NotifyIncoming {
                invitation_id,
                caller,
                content,
            } => {
                if let Some(n) = state.notifier.clone() {
                    let r = tauri::async_runtime::spawn_blocking(move || {
                        n.incoming_call(&invitation_id.0, &caller, &content)
                    })
                    .await;
                    if let Ok(Err(e)) = r {
                        warn!(error = %e, "no incoming-call notification; the window still rings");
                    }
                }
            }
            Effect::Withdraw(id) => {
                if let Some(n) = state.notifier.clone() {
                    let _ = tauri::async_runtime::spawn_blocking(move || n.withdraw(&id.0)).await;
                }
            }
            Effect::NotifyMissed(peer) => {
                if let Some(n) = state.notifier.clone() {
                    let _ =
                        tauri::async_runtime::spawn_blocking(move || n.missed_call(&peer)).await;
                }
            }
            Effect::RefuseBusy(id) => {
                let client = state.inner.lock().await.client.clone();
                if let Some(client) = client {
                    info!(invitation = %id, "answering busy (in a call, or do not disturb)");
                    if let Err(e) = client.refuse_remote_invitation(&id, "busy", true).await {
                        warn!(error = %e, "busy refusal failed");
                    }
                }
            }
            Effect::ClearMissed(ids) => {
                let client = state.inner.lock().await.client.clone();
                if let Some(client) = client {
                    if let Err(e) = client.clear_missed_calls(&ids).await {
                        // They come again at the next login, and are not recorded twice.
                        warn!(error = %e, "cannot clear missed calls on the server");
                    }
                }
            }
            Effect::OpenUrl(url) => {
                info!(%url, "opening the meeting room");
                if let Err(e) = open::that_detached(&url) {
                    warn!(error = %e, %url, "cannot open the meeting room");
                }
            }
            Effect::StartMedia {
                invitation_id,
                role,
            } => crate::media::start(app, invitation_id, role).await,
            Effect::StopMedia => crate::media::stop(app).await,
            Effect::SaveHistory => {
                let history = state.inner.lock().await.calls.history.clone();
                if let Err(e) = state.store.save_history(&history) {
                    warn!(error = %e, "cannot save history");
                    state.inner.lock().await.last_error = Some(e.to_string());
                }
            }
        }
    }
}
