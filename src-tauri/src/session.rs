//! The signed-in session: the embedded server, the client, the task that
//! turns client events into app state, notifications and UI events, and
//! reconnection after a lost connection.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tokio::sync::Mutex;
use tracing::{info, warn};

use callinvite_client::{Client, EventStream, InvitationId, LoginOptions};
use callinvite_notify::{Action, Notifier};
use callinvite_server::CancellationToken;

use crate::calls::{ActiveCall, Calls, Connection, Direction, Effect, Phase};
use crate::error::{CommandError, ErrorKind};
use crate::options::AppOptions;
use crate::store::{HistoryEntry, LoadReport, Settings, Store};

/// The app's state, managed by Tauri (`app.state::<AppState>()`).
pub struct AppState {
    pub options: AppOptions,
    /// The built-in server's secret file (see [`embedded_secret`]).
    pub embedded_secret_file: std::path::PathBuf,
    pub store: Store,
    /// `None` when notifications are off (tests, or no service).
    pub notifier: Option<Notifier>,
    /// The call's latest pictures, for the window (the `frame:` scheme).
    pub frames: std::sync::Arc<crate::video::Frames>,
    pub inner: Mutex<Inner>,
}

pub struct Inner {
    pub settings: Settings,
    pub calls: Calls,
    pub client: Option<Client>,
    /// How the UI names the server ("embedded (127.0.0.1:7450)" or the URL).
    pub server_label: String,
    /// Stops the embedded server this instance runs, if it runs one, and
    /// how the UI names it.
    embedded: Option<(CancellationToken, String)>,
    pub last_error: Option<String>,
    /// Bumped at every sign-in and sign-out so a stale event pump stops.
    generation: u64,
    pub notifications_available: bool,
    /// Bumped at every `app-state` event, so the UI can tell which of two
    /// snapshots is newer (a `get_state` answer may cross an event).
    rev: u64,
    /// The sound of the call on screen, while it runs.
    pub media: Option<crate::media::Running>,
}

/// What the UI renders (`app-state` event and `get_state` command).
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Newer snapshots have higher numbers; the UI ignores older ones.
    pub rev: u64,
    pub profile: String,
    pub user: Option<String>,
    pub connection: Connection,
    pub server: String,
    pub call: Option<ActiveCall>,
    pub presence: std::collections::BTreeMap<String, bool>,
    pub history: Vec<HistoryEntry>,
    pub settings: Settings,
    pub notifications_available: bool,
    pub last_error: Option<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AppState {
    /// Loads the profile's files from `store`. Problems with them are reported in `last_error`.
    pub fn new(options: AppOptions, store: Store, notifier: Option<Notifier>) -> Self {
        let mut report = LoadReport::default();
        let settings = store.load_settings(&mut report);
        let history = store.load_history(&mut report);
        let notifications_available = notifier.as_ref().is_some_and(Notifier::available);
        let embedded_secret_file = options
            .embedded_secret_file
            .clone()
            .unwrap_or_else(|| store.dir().join("embedded-server.secret"));
        AppState {
            options,
            embedded_secret_file,
            store,
            notifier,
            frames: Default::default(),
            inner: Mutex::new(Inner {
                settings,
                calls: Calls::new(history),
                client: None,
                server_label: String::new(),
                embedded: None,
                last_error: report.summary(),
                generation: 0,
                notifications_available,
                rev: 0,
                media: None,
            }),
        }
    }

    pub async fn snapshot(&self) -> Snapshot {
        let inner = self.inner.lock().await;
        snapshot_of(&self.options, &inner)
    }
}

fn snapshot_of(options: &AppOptions, inner: &Inner) -> Snapshot {
    Snapshot {
        rev: inner.rev,
        profile: options.profile.clone(),
        user: inner.calls.me.clone(),
        connection: inner.calls.connection,
        server: inner.server_label.clone(),
        call: inner.calls.call.clone(),
        presence: inner.calls.presence.clone(),
        history: inner.calls.history.clone(),
        settings: inner.settings.clone(),
        notifications_available: inner.notifications_available,
        last_error: inner.last_error.clone(),
    }
}

/// Sends the current snapshot to the UI and updates the tray.
///
/// The snapshot is taken and emitted under the state's lock: two tasks that
/// emit at once (the event pump and a command) would otherwise be able to
/// emit in the other order than they read, and the UI would show the older
/// state last (an accepted call stuck on the incoming screen).
pub async fn emit_state<R: Runtime>(app: &AppHandle<R>) {
    let state = app.state::<AppState>();
    let snap = {
        let mut inner = state.inner.lock().await;
        inner.rev += 1;
        let snap = snapshot_of(&state.options, &inner);
        if let Err(e) = app.emit("app-state", &snap) {
            warn!(error = %e, "cannot emit app-state");
        }
        snap
    };
    crate::tray::set_status(app, &snap);
}

/// Starts the built-in server on `port`, or finds one already there (another
/// instance or profile runs it). Returns the URL and a label, and the token
/// that stops the server if this instance started it.
async fn ensure_embedded(
    port: u16,
    lan: bool,
    data_dir: &std::path::Path,
    secret: &[u8],
) -> Result<(String, String, Option<CancellationToken>), CommandError> {
    let ip = if lan {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::LOCALHOST
    };
    let url = format!("ws://127.0.0.1:{port}");
    match tokio::net::TcpListener::bind(SocketAddr::from((ip, port))).await {
        Ok(listener) => {
            let token = CancellationToken::new();
            let mut config = callinvite_server::Config::default();
            // Missed calls of users who are offline survive a restart of the app.
            config.missed.file = Some(data_dir.join("server-missed-calls.redb"));
            // On this computer only, logins need a token from the account's
            // secret: other local accounts, and web pages, cannot sign in as
            // the user and answer their calls. Shared on the LAN, the server
            // is open to the other computers (Settings says so).
            if !lan {
                config.secret = Some(secret.to_vec());
            }
            let stop = token.clone();
            tokio::spawn(async move {
                if let Err(e) = callinvite_server::run(listener, config, stop).await {
                    warn!(error = %e, "built-in server stopped");
                }
            });
            let label = if lan {
                format!("embedded, shared on the LAN (port {port})")
            } else {
                format!("embedded (127.0.0.1:{port})")
            };
            info!(%label, "started the built-in server");
            Ok((url, label, Some(token)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            info!(port, "joining the built-in server another instance runs");
            Ok((url, format!("embedded (127.0.0.1:{port}, shared)"), None))
        }
        Err(e) => Err(CommandError::new(
            ErrorKind::Connect,
            format!("cannot start the built-in server on port {port}: {e}"),
        )),
    }
}

/// The built-in server's secret, from `path`; made (32 random bytes, hex,
/// readable by this account only) if there is none yet. Every profile of the
/// account reads the same file, so they can sign in to each other's server.
pub fn embedded_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Write;
    match std::fs::read(path) {
        Ok(bytes) if bytes.trim_ascii().len() >= 16 => return Ok(bytes.trim_ascii().to_vec()),
        Ok(_) => {
            warn!(file = %path.display(), "the built-in server's secret is too short: making a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot read the built-in server's secret {}: {e}",
                path.display()
            ))
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    // Another profile may have made one meanwhile: keep whichever is there.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            return embedded_secret(path);
        }
        Err(_) => {
            std::fs::rename(&tmp, path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    let _ = std::fs::remove_file(&tmp);
    info!(file = %path.display(), "made the built-in server's secret");
    Ok(secret.into_bytes())
}

/// Connects and logs in with the current settings.
async fn connect<R: Runtime>(
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
            .map_err(|m| CommandError::new(ErrorKind::Connect, m))?;
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
async fn begin_session<R: Runtime>(app: &AppHandle<R>, client: Client) {
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

/// Turns client events into state, effects and UI events until the session
/// ends; then reconnects (with backoff) unless the user signed out meanwhile,
/// and carries on with the new session.
async fn pump<R: Runtime>(app: AppHandle<R>, generation: u64, mut events: EventStream) {
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
            let _ = app.emit("client-event", &event);
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

/// If this profile uses the built-in server and does not run it, tries to
/// start it (the port is free when the instance that ran it has quit). The
/// client's next resume then reaches the new server, which no longer has the
/// session: it ends, and the event pump signs in again at once.
async fn take_over_embedded<R: Runtime>(app: AppHandle<R>) {
    let state = app.state::<AppState>();
    let (settings, runs_it) = {
        let inner = state.inner.lock().await;
        (inner.settings.clone(), inner.embedded.is_some())
    };
    if settings.server.trim() != "embedded" || runs_it {
        return;
    }
    let file = state.embedded_secret_file.clone();
    let secret = match tauri::async_runtime::spawn_blocking(move || embedded_secret(&file)).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    // Give a server that is merely restarting its listener a moment first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match ensure_embedded(
        state.options.embedded_port,
        settings.share_on_lan,
        state.store.dir(),
        &secret,
    )
    .await
    {
        Ok((_, label, Some(token))) => {
            info!(%label, "took over the built-in server (the instance that ran it is gone)");
            let mut inner = state.inner.lock().await;
            inner.server_label = label.clone();
            if let Some((old, _)) = inner.embedded.replace((token, label)) {
                old.cancel();
            }
        }
        Ok(_) => {} // Still there, or another profile was quicker.
        Err(e) => warn!(error = %e.message, "cannot take over the built-in server"),
    }
}

/// Carries out what an event asked for.
pub async fn execute<R: Runtime>(app: &AppHandle<R>, effects: Vec<Effect>) {
    let state = app.state::<AppState>();
    for effect in effects {
        match effect {
            Effect::Outcome(outcome) => {
                let _ = app.emit("call-outcome", &outcome);
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

/// The signed-in client, or `not_signed_in`.
pub async fn client(state: &AppState) -> Result<Client, CommandError> {
    state
        .inner
        .lock()
        .await
        .client
        .clone()
        .ok_or_else(CommandError::not_signed_in)
}

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
                let _ = app.emit(
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
