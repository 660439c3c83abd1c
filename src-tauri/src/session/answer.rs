//! Answering a ringing call: accept (the one on screen, or another that
//! rang meanwhile, hanging up the call that is up) or refuse, from the
//! window's buttons or the notification's.

use tauri::{AppHandle, Manager, Runtime};
use tracing::{info, warn};

use callinvite_client::InvitationId;
use callinvite_notify::Action;

use super::{client, emit_state, now_ms, AppState};
use crate::calls::{ActiveCall, Direction, Phase};
use crate::error::CommandError;

/// Accepts an incoming call (the one on screen, or another one ringing), from
/// the window or the notification. A call already up is hung up first.
pub async fn accept<R: Runtime>(
    app: &AppHandle<R>,
    id: Option<InvitationId>,
) -> Result<(), CommandError> {
    let state = app.state::<AppState>();
    let client = client(&state).await?;
    let (id, to_hang_up) = {
        let mut inner = state.inner.lock().await;
        let current = inner.calls.call.clone();
        let id = match (id, &current) {
            (Some(id), _) => id,
            (None, Some(c)) if c.phase == Phase::Incoming => {
                c.invitation_id.clone().ok_or_else(CommandError::no_call)?
            }
            _ => return Err(CommandError::no_call()),
        };
        let mut to_hang_up = None;
        if current.as_ref().and_then(|c| c.invitation_id.as_ref()) != Some(&id) {
            // Answering a call that rang while another was on screen.
            let Some((caller, content)) = inner.calls.waiting.remove(&id) else {
                return Err(CommandError::no_call());
            };
            if let Some(c) = current.filter(|c| c.phase == Phase::InCall) {
                to_hang_up = c.invitation_id;
            }
            inner.calls.call = Some(ActiveCall {
                invitation_id: Some(id.clone()),
                direction: Direction::Incoming,
                peer: caller,
                content,
                phase: Phase::Incoming,
                phase_since_ms: now_ms(),
                answering: true,
                local: None,
                accepted_ms: None,
                media: None,
                wait_until_ms: None,
                silent: false,
            });
        } else if let Some(c) = inner.calls.call.as_mut() {
            c.answering = true;
        }
        (id, to_hang_up)
    };
    emit_state(app).await;
    if let Some(old) = to_hang_up {
        // The old call's sound stops with it.
        crate::media::stop(app).await;
        let _ = client.hang_up(&old).await;
    }
    let result = client.accept_remote_invitation(&id, "").await;
    if result.is_err() {
        let mut inner = state.inner.lock().await;
        if let Some(c) = inner
            .calls
            .call
            .as_mut()
            .filter(|c| c.invitation_id.as_ref() == Some(&id))
        {
            c.answering = false;
        }
    }
    emit_state(app).await;
    result.map_err(CommandError::from)
}

/// Refuses an incoming call (the one on screen by default).
pub async fn refuse<R: Runtime>(
    app: &AppHandle<R>,
    id: Option<InvitationId>,
    busy: bool,
) -> Result<(), CommandError> {
    let state = app.state::<AppState>();
    let client = client(&state).await?;
    let id = match id {
        Some(id) => id,
        None => {
            let inner = state.inner.lock().await;
            inner
                .calls
                .call
                .as_ref()
                .filter(|c| c.phase == Phase::Incoming)
                .and_then(|c| c.invitation_id.clone())
                .ok_or_else(CommandError::no_call)?
        }
    };
    client
        .refuse_remote_invitation(&id, if busy { "busy" } else { "" }, busy)
        .await
        .map_err(CommandError::from)
}

/// Handles a button pressed on a notification.
pub async fn on_notification_action<R: Runtime>(app: &AppHandle<R>, action: Action) {
    match action {
        Action::Accept(id) => {
            info!(invitation = %id, "accepted from the notification");
            crate::tray::show_main_window(app);
            if let Err(e) = accept(app, Some(InvitationId(id))).await {
                warn!(error = %e, "accept from the notification failed");
                super::emit_event(
                    app,
                    "call-outcome",
                    crate::calls::CallOutcome {
                        peer: String::new(),
                        direction: Direction::Incoming,
                        outcome: "failed",
                        detail: e.message,
                    },
                );
            }
        }
        Action::Decline(id) => {
            info!(invitation = %id, "declined from the notification");
            if let Err(e) = refuse(app, Some(InvitationId(id)), false).await {
                warn!(error = %e, "decline from the notification failed");
            }
        }
    }
}
