//! Signing in and out: log in to the built-in server (started or joined
//! first, see `embedded.rs`) or to the server the settings name, record the
//! fresh session and start its event pump; sign out, ending the session.

use std::time::Duration;

use tauri::{AppHandle, Manager, Runtime};
use tracing::info;

use callinvite_client::{Client, EventStream, LoginOptions};

use super::effects::execute;
use super::embedded::{embedded_secret, ensure_embedded};
use super::pump::pump;
use super::{emit_state, now_ms, AppState, Snapshot};
use crate::calls::Connection;
use crate::error::{CommandError, ErrorKind};

/// Connects and logs in with the current settings.
pub(super) async fn connect<R: Runtime>(
    app: &AppHandle<R>,
    user: &str,
) -> Result<(Client, EventStream), CommandError> {
    let state = app.state::<AppState>();
    let settings = state.inner.lock().await.settings.clone();
    let mut embedded_token = None;
    let (url, label, embedded) = if settings.server.trim() == "embedded" {
        let file = state.embedded_secret_file.clone();
        let secret = tauri::async_runtime::spawn_blocking(move || embedded_secret(&file))
            .await
            .map_err(|e| CommandError::new(ErrorKind::Internal, e.to_string()))?
            .map_err(CommandError::from)?;
        embedded_token = Some(callinvite_server::auth::mint(
            &secret,
            user,
            Duration::from_secs(7 * 24 * 3600),
        ));
        let running = state
            .inner
            .lock()
            .await
            .embedded
            .as_ref()
            .filter(|(token, _)| !token.is_cancelled())
            .map(|(_, label)| label.clone());
        match running {
            // This instance runs it (it may have taken it over): sign in there.
            Some(label) => (
                format!("ws://127.0.0.1:{}", state.options.embedded_port),
                label,
                None,
            ),
            None => {
                ensure_embedded(
                    state.options.embedded_port,
                    settings.share_on_lan,
                    state.store.dir(),
                    &secret,
                )
                .await?
            }
        }
    } else {
        (
            settings.server.trim().to_owned(),
            settings.server.trim().to_owned(),
            None,
        )
    };
    let mut login = LoginOptions::new(url, user);
    if !settings.token.trim().is_empty() {
        login.token = Some(settings.token.trim().to_owned());
    }
    if embedded_token.is_some() {
        login.token = embedded_token;
    }
    if !settings.ca_file.trim().is_empty() {
        login = login.ca_file(settings.ca_file.trim());
    }
    let result = Client::login(login).await;
    let mut inner = state.inner.lock().await;
    inner.server_label = label.clone();
    if let Some(token) = embedded {
        if let Some((old, _)) = inner.embedded.replace((token, label)) {
            old.cancel();
        }
    }
    result.map_err(CommandError::from)
}

/// Signs in (replacing any session) and starts the event pump.
pub async fn sign_in<R: Runtime>(
    app: &AppHandle<R>,
    user: String,
    server: Option<String>,
    token: Option<String>,
) -> Result<Snapshot, CommandError> {
    callinvite_client::UserId::parse(&user)
        .map_err(|e| CommandError::new(ErrorKind::InvalidArgument, format!("User ID: {e}")))?;
    let state = app.state::<AppState>();
    sign_out(app).await;
    let generation = {
        let mut inner = state.inner.lock().await;
        let mut settings = inner.settings.clone();
        match server.as_deref().map(str::trim) {
            None | Some("") | Some("embedded") => settings.server = "embedded".into(),
            Some(url) => settings.server = url.to_owned(),
        }
        if let Some(t) = token {
            settings.token = t;
        }
        settings.validate()?;
        settings.last_user = user.clone();
        if let Err(e) = state.store.save_settings(&settings) {
            inner.last_error = Some(e.to_string());
        }
        inner.settings = settings;
        inner.calls.connection = Connection::Connecting;
        inner.last_error = None;
        inner.generation += 1;
        inner.generation
    };
    emit_state(app).await;
    match connect(app, &user).await {
        Ok((client, events)) => {
            start_session(app, generation, client, events).await;
            emit_state(app).await;
            Ok(state.snapshot().await)
        }
        Err(e) => {
            {
                let mut inner = state.inner.lock().await;
                inner.calls.connection = Connection::SignedOut;
                inner.last_error = Some(e.message.clone());
            }
            emit_state(app).await;
            Err(e)
        }
    }
}

async fn start_session<R: Runtime>(
    app: &AppHandle<R>,
    generation: u64,
    client: Client,
    events: EventStream,
) {
    begin_session(app, client).await;
    tauri::async_runtime::spawn(pump(app.clone(), generation, events));
}

/// Records a fresh login and follows the presence of recent peers.
pub(super) async fn begin_session<R: Runtime>(app: &AppHandle<R>, client: Client) {
    let state = app.state::<AppState>();
    let peers = {
        let mut inner = state.inner.lock().await;
        inner.calls.me = Some(client.user().to_string());
        inner.calls.offline_window_ms = client.session().timers.offline_ms;
        inner.calls.connection = Connection::Connected;
        inner.client = Some(client.clone());
        inner.calls.recent_peers(50)
    };
    info!(user = %client.user(), "signed in");
    if !peers.is_empty() {
        let ids: Vec<&str> = peers.iter().map(String::as_str).collect();
        if let Ok(entries) = client.subscribe_presence(&ids).await {
            let mut inner = state.inner.lock().await;
            for e in entries {
                inner.calls.presence.insert(e.user, e.online);
            }
        }
    }
}

/// Signs out: logs out, ends the session, withdraws notifications.
pub async fn sign_out<R: Runtime>(app: &AppHandle<R>) {
    let state = app.state::<AppState>();
    let (client, effects) = {
        let mut inner = state.inner.lock().await;
        inner.generation += 1;
        let fx = inner.calls.session_over(now_ms());
        inner.calls.me = None;
        inner.calls.connection = Connection::SignedOut;
        inner.calls.presence.clear();
        (inner.client.take(), fx)
    };
    if let Some(client) = client {
        let _ = client.logout().await;
        info!("signed out");
    }
    execute(app, effects).await;
}
