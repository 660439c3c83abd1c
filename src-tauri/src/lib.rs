//! The callinvite desktop app (Tauri 2).
//!
//! Layout:
//! - [`options`]: command-line options (`--profile`, data folder, embedded port).
//! - [`store`]: settings and call history on disk, per profile.
//! - [`calls`]: what the app shows and records about calls, driven by client
//!   events (pure; unit-tested): `calls/events.rs` the client's events,
//!   `media_status.rs` the call's sound and pictures, `history.rs`,
//!   `effects.rs` what the session must do.
//! - [`session`]: sign-in, the embedded server, the event pump, reconnection,
//!   and the effects of events (notifications, busy refusal, meeting room):
//!   `session/connect.rs`, `embedded.rs`, `pump.rs`, `effects.rs`,
//!   `answer.rs` (accept or refuse, from the window or the notification).
//! - [`commands`]: the commands the UI invokes, as free functions over the
//!   [`AppState`] that [`run`] hands to Tauri (`manage`).
//! - [`error`]: the `{kind, message}` error every command returns.
//! - [`tray`]: tray icon (its look follows the connection) and main window
//!   (close hides to the tray; `--hidden` starts there).
//! - [`autostart`]: the "Start at login, in the tray" entry of each platform.
//! - [`instance`]: one running app per profile.
//! - [`media`]: a call's sound and pictures (the media engine; `media/audio.rs`
//!   the microphone and speaker, `video_sources.rs` the camera or screen);
//!   [`video`]: its pictures to the window through the `frame:` URI scheme
//!   (`video/`: `slot.rs` the latest decoded picture, `encoded.rs` the
//!   compressed frames, `convert.rs` the page's formats, `scheme.rs` the
//!   requests and answers).
//! - Native notifications live in the `callinvite-notify` crate.
//!
//! A module that is a folder says in its `mod.rs` what each of its files
//! owns.
//!
//! The UI (`ui/`) is plain HTML/JS with no build step; it renders the
//! `app-state` snapshots the backend emits and shows `call-outcome` messages.

pub mod autostart;
pub mod calls;
pub mod commands;
pub mod error;
pub mod instance;
pub mod media;
pub mod options;
pub mod session;
pub mod store;
pub mod tray;
pub mod video;

use std::path::PathBuf;

use tauri::{Manager, Runtime};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

pub use options::AppOptions;
pub use session::AppState;

/// Registers the commands and the `frame:` scheme (the call's pictures, see
/// [`video`]). The caller manages an [`AppState`] (see [`run`]; tests use
/// `tauri::test::mock_builder()`).
pub fn build<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        .register_asynchronous_uri_scheme_protocol("frame", |ctx, request, responder| {
            match ctx.app_handle().try_state::<AppState>() {
                Some(state) => {
                    video::serve(state.frames.clone(), request.uri().to_string(), responder)
                }
                None => responder.respond(video::response(Err((503, "starting")))),
            }
        })
        .invoke_handler(tauri::generate_handler![
            commands::get_state,
            commands::sign_in,
            commands::sign_out,
            commands::call,
            commands::cancel,
            commands::accept,
            commands::refuse,
            commands::hang_up,
            commands::query_presence,
            commands::subscribe_presence,
            commands::get_history,
            commands::clear_history,
            commands::get_settings,
            commands::set_settings,
            commands::set_muted,
            commands::audio_devices,
            commands::set_camera,
            commands::switch_camera,
            commands::share_screen,
            commands::video_devices,
            commands::video_stats,
        ])
}

/// Runs the app.
pub fn run() {
    let options = AppOptions::from_args();
    // A bare level keeps the TURN/STUN crates' chatter (a line per packet
    // exchange at info) to warnings; a full directive is taken as it is.
    let directive = if options.log.contains('=') {
        options.log.clone()
    } else {
        format!(
            "{},turn_client_proto=warn,turn_types=warn,stun_proto=warn",
            options.log
        )
    };
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let app = build(tauri::Builder::default())
        .setup(move |app| {
            let handle = app.handle().clone();
            let dir = profile_dir(&handle, &options);
            if instance::focus_running(&dir) {
                std::process::exit(0);
            }
            let focus = handle.clone();
            if let Err(e) = instance::listen(&dir, move || tray::show_main_window(&focus)) {
                warn!(error = %e, "cannot guard against a second instance of this profile");
            }
            info!(profile = %options.profile, dir = %dir.display(), "starting");

            let (notifier, mut actions) =
                callinvite_notify::Notifier::with_icon("callinvite", &notification_icon());
            let mut options = options.clone();
            options.embedded_secret_file = Some(embedded_secret_file(&handle, &options));
            let state = AppState::new(options.clone(), store::Store::new(dir), Some(notifier));
            app.manage(state);
            let on_action = handle.clone();
            tauri::async_runtime::spawn(async move {
                while let Some(action) = actions.recv().await {
                    session::on_notification_action(&on_action, action).await;
                }
            });

            tray::create_main_window(&handle, &options.profile, options.hidden)?;
            if let Err(e) = tray::create_tray(&handle) {
                warn!(error = %e, "no tray icon (is there a system tray?)");
                if options.hidden {
                    // Hidden with no tray to show it from: show it now.
                    tray::show_main_window(&handle);
                }
            }

            // Sign in again as the last user, if there was one; and make the
            // login entry match the setting (the executable may have moved).
            let again = handle.clone();
            tauri::async_runtime::spawn(async move {
                let state = again.state::<AppState>();
                let (last, at_login) = {
                    let inner = state.inner.lock().await;
                    (
                        inner.settings.last_user.clone(),
                        inner.settings.start_at_login,
                    )
                };
                let entry = autostart::Autostart::for_app(&state.options);
                if let Err(e) = entry.and_then(|a| a.set(at_login)) {
                    warn!(error = %e, at_login, "cannot update the start-at-login entry");
                }
                if !last.is_empty() {
                    if let Err(e) = session::sign_in(&again, last, None, None).await {
                        warn!(error = %e, "automatic sign-in failed");
                    }
                }
            });
            Ok(())
        })
        .build(tauri::generate_context!());
    match app {
        Ok(app) => app.run(|app, event| {
            if let tauri::RunEvent::Exit = event {
                // Log out so peers learn at once that this device is gone.
                let handle = app.clone();
                tauri::async_runtime::block_on(async move { session::sign_out(&handle).await });
            }
        }),
        Err(e) => {
            eprintln!("error: cannot start the app: {e}");
            std::process::exit(1);
        }
    }
}

/// The icon on the app's notifications: the repository's icon when run from a
/// checkout, else the name the installed packages give it in the icon theme.
fn notification_icon() -> String {
    let dev = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../icons/128x128.png");
    match dev.canonicalize() {
        Ok(path) => path.display().to_string(),
        Err(_) => "callinvite-app".to_owned(),
    }
}

/// The built-in server's secret file: `--embedded-secret-file`, or
/// `<app data>/embedded-server.secret` (one for all profiles of this account).
pub(crate) fn embedded_secret_file<R: Runtime>(
    app: &tauri::AppHandle<R>,
    options: &AppOptions,
) -> PathBuf {
    if let Some(f) = &options.embedded_secret_file {
        return f.clone();
    }
    app.path()
        .app_data_dir()
        .unwrap_or_else(|_| std::env::temp_dir().join("callinvite"))
        .join("embedded-server.secret")
}

/// The profile's folder: `--data-dir`, or `<app data>/profiles/<profile>`.
fn profile_dir<R: Runtime>(app: &tauri::AppHandle<R>, options: &AppOptions) -> PathBuf {
    if let Some(dir) = &options.data_dir {
        return dir.clone();
    }
    let base = app
        .path()
        .app_data_dir()
        .unwrap_or_else(|_| std::env::temp_dir().join("callinvite"));
    base.join("profiles").join(&options.profile)
}
