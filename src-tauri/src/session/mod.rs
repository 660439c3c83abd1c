//! The signed-in session: the embedded server, the client, the task that
//! turns client events into app state, notifications and UI events, and
//! reconnection after a lost connection.
//!
//! Layout: this file holds the app's state as Tauri manages it
//! ([`AppState`]), the snapshot the UI renders ([`emit_state`]) and the one
//! path every event to the window takes ([`emit_event`]);
//! `connect.rs` signs in and out (the embedded server or a URL, then a
//! fresh session); `pump.rs` is the event pump, which also reconnects after
//! a lost connection; `effects.rs` carries out what an event asks for
//! (notifications, busy refusal, the call's media, the meeting room);
//! `embedded.rs` starts, joins or takes over the built-in server and keeps
//! its secret; `answer.rs` accepts or refuses a ringing call, from the
//! window or the notification.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tokio::sync::Mutex;
use tracing::warn;

use callinvite_client::Client;
use callinvite_notify::Notifier;
use callinvite_server::CancellationToken;

use crate::calls::{ActiveCall, Calls, Connection};
use crate::error::CommandError;
use crate::options::AppOptions;
use crate::store::{HistoryEntry, LoadReport, Settings, Store};

mod answer;
mod connect;
mod effects;
mod embedded;
mod pump;

pub use answer::{accept, on_notification_action, refuse};
pub use connect::{sign_in, sign_out};
pub use effects::execute;
pub use embedded::{embedded_secret, EmbeddedSecretError};

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
        emit_event(app, "app-state", &snap);
        snap
    };
    crate::tray::set_status(app, &snap);
}

/// Emits one event to the window (and to Rust listeners), one at a time.
///
/// Every event the app sends goes through here. Tauri hands an event to its
/// Rust-side listeners only if no other thread is emitting at that moment;
/// otherwise it parks the event until a later emit that has listeners of its
/// own, which may never come (a `client-event` from the event pump at the
/// same instant as sign-out's `app-state` left the last state undelivered).
/// Emitting under one lock means our own events never meet like that.
pub fn emit_event<R: Runtime, S: Serialize + Clone>(app: &AppHandle<R>, event: &str, payload: S) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(e) = app.emit(event, payload) {
        warn!(%event, error = %e, "cannot emit an event to the window");
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tauri::Listener;

    use super::emit_event;

    /// Two threads emitting at once (the event pump's `client-event` and a
    /// command's `app-state`): every `app-state` has reached the listener
    /// when `emit_event` returns. With a bare `app.emit` some are parked by
    /// Tauri until a later emit, and the last one may never arrive.
    #[test]
    fn events_emitted_from_two_threads_at_once_arrive_before_emit_returns() {
        const EACH: usize = 20_000;
        let app = tauri::test::mock_app();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        app.listen_any("app-state", move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let handle = app.handle().clone();
        let other = std::thread::spawn(move || {
            for i in 0..EACH {
                emit_event(&handle, "client-event", i);
            }
        });
        let mut late = 0;
        for i in 0..EACH {
            emit_event(app.handle(), "app-state", i);
            if seen.load(Ordering::Relaxed) != i + 1 {
                late += 1;
                seen.store(i + 1, Ordering::Relaxed);
            }
        }
        other.join().expect("the other emitter");
        assert_eq!(late, 0, "app-state events not delivered when emitted");
    }
}
