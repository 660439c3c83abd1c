//! The tray icon (show, online status, quit) and the main window: closing the
//! window hides it to the tray, so calls still arrive, ring and notify.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Runtime, WebviewUrl, WebviewWindowBuilder, WindowEvent};

use crate::calls::Connection;
use crate::session::Snapshot;

/// The tray's status line, updated with every state change.
pub struct TrayStatus<R: Runtime>(pub MenuItem<R>);

/// Creates the main window (hidden to the tray on close).
pub fn create_main_window<R: Runtime>(app: &AppHandle<R>, profile: &str) -> tauri::Result<()> {
    let title = app_name(profile);
    let window = WebviewWindowBuilder::new(app, "main", WebviewUrl::default())
        .title(title)
        .inner_size(420.0, 720.0)
        .min_inner_size(340.0, 480.0)
        .build()?;
    let w = window.clone();
    window.on_window_event(move |event| {
        if let WindowEvent::CloseRequested { api, .. } = event {
            api.prevent_close();
            let _ = w.hide();
        }
    });
    Ok(())
}

/// Shows, unminimises and focuses the main window.
pub fn show_main_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

/// Creates the tray icon and its menu.
pub fn create_tray<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let show = MenuItem::with_id(app, "show", "Show callinvite", true, None::<&str>)?;
    let status = MenuItem::with_id(app, "status", "Signed out", false, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[&show, &status, &PredefinedMenuItem::separator(app)?, &quit],
    )?;
    let icon = tauri::image::Image::from_bytes(include_bytes!("../../icons/tray.png"))?;
    TrayIconBuilder::with_id("main")
        .icon(icon)
        .tooltip("callinvite")
        .menu(&menu)
        .on_menu_event(|app, event| match event.id().as_ref() {
            "show" => show_main_window(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .build(app)?;
    app.manage(TrayStatus(status));
    Ok(())
}

/// Updates the tray's status line from a snapshot.
/// The app's name in titles: `callinvite`, or `callinvite (PROFILE)` for a
/// profile other than the default, so two profiles' windows can be told apart.
fn app_name(profile: &str) -> String {
    if profile == "default" {
        "callinvite".to_owned()
    } else {
        format!("callinvite ({profile})")
    }
}

/// The main window's title: what is happening, so the taskbar shows it
/// ("alice is calling — callinvite").
pub fn window_title(snap: &Snapshot) -> String {
    use crate::calls::{Direction, Phase};
    let name = app_name(&snap.profile);
    match (&snap.user, &snap.call) {
        (Some(_), Some(c)) => match (c.phase, c.direction) {
            (Phase::InCall, _) => format!("In call with {} — {name}", c.peer),
            (_, Direction::Incoming) => format!("{} is calling — {name}", c.peer),
            (_, Direction::Outgoing) => format!("Calling {} — {name}", c.peer),
        },
        (Some(u), None) => format!("{u} — {name}"),
        (None, _) => name,
    }
}

pub fn set_status<R: Runtime>(app: &AppHandle<R>, snap: &Snapshot) {
    if let Some(w) = app.get_webview_window("main") {
        let title = window_title(snap);
        if w.title().ok().as_deref() != Some(title.as_str()) {
            let _ = w.set_title(&title);
        }
    }
    let Some(status) = app.try_state::<TrayStatus<R>>() else {
        return;
    };
    let dnd = match snap.settings.do_not_disturb {
        crate::store::DoNotDisturb::Off => "",
        crate::store::DoNotDisturb::Silent => " · do not disturb (silent)",
        crate::store::DoNotDisturb::Busy => " · do not disturb",
    };
    let text = match (&snap.user, snap.connection) {
        (Some(u), Connection::Connected) => match &snap.call {
            Some(c) => format!("Online as {u} · call with {}", c.peer),
            None => format!("Online as {u}{dnd}"),
        },
        (Some(u), Connection::Connecting) => format!("Connecting as {u}…"),
        (Some(u), _) => format!("Offline ({u}) · reconnecting"),
        (None, _) => "Signed out".into(),
    };
    let _ = status.0.set_text(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{ActiveCall, Direction, Phase};

    fn snap(profile: &str, user: Option<&str>, call: Option<(Direction, Phase)>) -> Snapshot {
        Snapshot {
            rev: 1,
            profile: profile.into(),
            user: user.map(Into::into),
            connection: Connection::Connected,
            server: String::new(),
            call: call.map(|(direction, phase)| ActiveCall {
                invitation_id: None,
                direction,
                peer: "alice".into(),
                content: String::new(),
                phase,
                phase_since_ms: 0,
                answering: false,
                local: None,
                accepted_ms: None,
                media: None,
                wait_until_ms: None,
                silent: false,
            }),
            presence: Default::default(),
            history: vec![],
            settings: Default::default(),
            notifications_available: true,
            last_error: None,
        }
    }

    #[test]
    fn the_window_title_says_what_is_happening() {
        assert_eq!(window_title(&snap("default", None, None)), "callinvite");
        assert_eq!(
            window_title(&snap("bob", Some("bob"), None)),
            "bob — callinvite (bob)"
        );
        let incoming = Some((Direction::Incoming, Phase::Incoming));
        assert_eq!(
            window_title(&snap("default", Some("bob"), incoming)),
            "alice is calling — callinvite"
        );
        let ringing = Some((Direction::Outgoing, Phase::Ringing));
        assert_eq!(
            window_title(&snap("default", Some("bob"), ringing)),
            "Calling alice — callinvite"
        );
        let call = Some((Direction::Incoming, Phase::InCall));
        assert_eq!(
            window_title(&snap("default", Some("bob"), call)),
            "In call with alice — callinvite"
        );
    }
}
