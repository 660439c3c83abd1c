//! The commands the UI invokes. Each is a free function; errors are
//! [`CommandError`] (`{kind, message}`). State changes reach the UI as the
//! `app-state` event, outcomes as `call-outcome`.

use tauri::{AppHandle, Runtime, State};

use callinvite_client::InvitationId;
use callinvite_protocol::wire::PresenceEntry;

use crate::autostart::Autostart;
use crate::calls::{Direction, Phase};
use crate::error::{CommandError, ErrorKind};
use crate::session::{self, client, emit_state, now_ms, AppState, Snapshot};
use crate::store::{HistoryEntry, Settings};

#[tauri::command]
pub async fn get_state(state: State<'_, AppState>) -> Result<Snapshot, CommandError> {
    Ok(state.snapshot().await)
}

#[tauri::command]
pub async fn sign_in<R: Runtime>(
    app: AppHandle<R>,
    user: String,
    server: Option<String>,
    token: Option<String>,
) -> Result<Snapshot, CommandError> {
    session::sign_in(&app, user.trim_end().to_owned(), server, token).await
}

#[tauri::command]
pub async fn sign_out<R: Runtime>(app: AppHandle<R>) -> Result<(), CommandError> {
    session::sign_out(&app).await;
    emit_state(&app).await;
    Ok(())
}

#[tauri::command]
pub async fn call<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    callee: String,
    content: Option<String>,
) -> Result<(), CommandError> {
    let client = client(&state).await?;
    let local = client
        .create_local_invitation(callee.trim())
        .map_err(CommandError::from)?
        .with_content(content.unwrap_or_default());
    {
        let mut inner = state.inner.lock().await;
        if let Some(c) = &inner.calls.call {
            return Err(CommandError::new(
                ErrorKind::Busy,
                format!("You are already in a call with {}; end it first.", c.peer),
            ));
        }
        inner.calls.start_outgoing(local.clone(), now_ms());
    }
    emit_state(&app).await;
    if let Err(e) = client.send_local_invitation(&local).await {
        let mut inner = state.inner.lock().await;
        if inner
            .calls
            .call
            .as_ref()
            .is_some_and(|c| c.local.as_ref() == Some(&local))
        {
            inner.calls.call = None;
        }
        drop(inner);
        emit_state(&app).await;
        return Err(e.into());
    }
    Ok(())
}

#[tauri::command]
pub async fn cancel(state: State<'_, AppState>) -> Result<(), CommandError> {
    let client = client(&state).await?;
    let local = {
        let inner = state.inner.lock().await;
        inner
            .calls
            .call
            .as_ref()
            .filter(|c| c.direction == Direction::Outgoing && c.phase != Phase::InCall)
            .and_then(|c| c.local.clone())
    };
    let local = local.ok_or_else(CommandError::no_call)?;
    client
        .cancel_local_invitation(&local)
        .await
        .map_err(CommandError::from)
}

#[tauri::command]
pub async fn accept<R: Runtime>(
    app: AppHandle<R>,
    invitation_id: Option<String>,
) -> Result<(), CommandError> {
    session::accept(&app, invitation_id.map(InvitationId)).await
}

#[tauri::command]
pub async fn refuse<R: Runtime>(
    app: AppHandle<R>,
    invitation_id: Option<String>,
    busy: Option<bool>,
) -> Result<(), CommandError> {
    session::refuse(&app, invitation_id.map(InvitationId), busy.unwrap_or(false)).await
}

#[tauri::command]
pub async fn hang_up(state: State<'_, AppState>) -> Result<(), CommandError> {
    let client = client(&state).await?;
    let id = {
        let inner = state.inner.lock().await;
        inner
            .calls
            .call
            .as_ref()
            .filter(|c| c.phase == Phase::InCall)
            .and_then(|c| c.invitation_id.clone())
    };
    let id = id.ok_or_else(CommandError::no_call)?;
    client.hang_up(&id).await.map_err(CommandError::from)
}

#[tauri::command]
pub async fn query_presence(
    state: State<'_, AppState>,
    users: Vec<String>,
) -> Result<Vec<PresenceEntry>, CommandError> {
    let client = client(&state).await?;
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    client
        .query_presence(&ids)
        .await
        .map_err(CommandError::from)
}

#[tauri::command]
pub async fn subscribe_presence<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    users: Vec<String>,
) -> Result<Vec<PresenceEntry>, CommandError> {
    let client = client(&state).await?;
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    let entries = client
        .subscribe_presence(&ids)
        .await
        .map_err(CommandError::from)?;
    {
        let mut inner = state.inner.lock().await;
        for e in &entries {
            inner.calls.presence.insert(e.user.clone(), e.online);
        }
    }
    emit_state(&app).await;
    Ok(entries)
}

#[tauri::command]
pub async fn get_history(state: State<'_, AppState>) -> Result<Vec<HistoryEntry>, CommandError> {
    Ok(state.inner.lock().await.calls.history.clone())
}

#[tauri::command]
pub async fn clear_history<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
) -> Result<(), CommandError> {
    state.inner.lock().await.calls.history.clear();
    state.store.save_history(&[])?;
    emit_state(&app).await;
    Ok(())
}

#[tauri::command]
pub async fn get_settings(state: State<'_, AppState>) -> Result<Settings, CommandError> {
    Ok(state.inner.lock().await.settings.clone())
}

#[tauri::command]
pub async fn set_settings<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    settings: Settings,
) -> Result<Settings, CommandError> {
    settings.validate()?;
    // Start at login: the system's entry first, so a refusal saves nothing.
    let at_login_before = state.inner.lock().await.settings.start_at_login;
    let autostart = if settings.start_at_login != at_login_before {
        let entry = Autostart::for_app(&state.options)?;
        entry.set(settings.start_at_login)?;
        Some(entry)
    } else {
        None
    };
    if let Err(e) = state.store.save_settings(&settings) {
        if let Some(entry) = autostart {
            let _ = entry.set(at_login_before);
        }
        return Err(e.into());
    }
    state.inner.lock().await.settings = settings.clone();
    emit_state(&app).await;
    Ok(settings)
}

/// Mutes or unmutes the microphone in the call on screen.
#[tauri::command]
pub async fn set_muted<R: Runtime>(app: AppHandle<R>, muted: bool) -> Result<(), CommandError> {
    if crate::media::set_muted(&app, muted).await {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::InvalidArgument,
            "there is no call with sound to mute",
        ))
    }
}

/// The microphones and speakers Settings can choose from.
#[tauri::command]
pub async fn audio_devices() -> Result<crate::media::AudioDevices, CommandError> {
    tauri::async_runtime::spawn_blocking(crate::media::audio_devices)
        .await
        .map_err(|e| {
            CommandError::new(
                ErrorKind::Internal,
                format!("listing audio devices failed: {e}"),
            )
        })
}

/// Turns the camera on or off in the call on screen (off releases it).
#[tauri::command]
pub async fn set_camera<R: Runtime>(app: AppHandle<R>, on: bool) -> Result<(), CommandError> {
    if crate::media::set_camera(&app, on).await {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::InvalidArgument,
            "there is no call with video to turn the camera on or off in",
        ))
    }
}

/// Moves to the next camera in the call on screen.
#[tauri::command]
pub async fn switch_camera<R: Runtime>(app: AppHandle<R>) -> Result<(), CommandError> {
    if crate::media::switch_camera(&app).await {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::InvalidArgument,
            "there is no other camera to switch to",
        ))
    }
}

/// Sends the screen instead of the camera (`on`), or the camera again.
#[tauri::command]
pub async fn share_screen<R: Runtime>(app: AppHandle<R>, on: bool) -> Result<(), CommandError> {
    if crate::media::share_screen(&app, on).await {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::InvalidArgument,
            "the screen cannot be shared here (no call with video, or no X11 display)",
        ))
    }
}

/// The cameras Settings can choose from, and whether the screen can be shared.
#[tauri::command]
pub async fn video_devices(
    state: State<'_, AppState>,
) -> Result<crate::media::VideoDevices, CommandError> {
    let options = state.options.clone();
    tauri::async_runtime::spawn_blocking(move || crate::media::video_devices_for(&options))
        .await
        .map_err(|e| CommandError::new(ErrorKind::Internal, format!("listing cameras failed: {e}")))
}

/// What went to the window's video so far (for measurements): the peer's
/// pictures and our preview.
#[tauri::command]
pub async fn video_stats(state: State<'_, AppState>) -> Result<serde_json::Value, CommandError> {
    Ok(serde_json::json!({
        "remote": state.frames.remote.stats(),
        "local": state.frames.local.stats(),
        "remote_vp8": state.frames.remote_vp8.stats(),
        "local_vp8": state.frames.local_vp8.stats(),
    }))
}
