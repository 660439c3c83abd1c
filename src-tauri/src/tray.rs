//! The tray icon (show, online status, quit) and the main window: closing the
//! window hides it to the tray, so calls still arrive, ring and notify.
//!
//! The icon shows the connection at a glance — online (green), connecting
//! (amber), offline or signed out (grey) — and its tooltip and menu say it in
//! words ([`TrayState`], [`status_text`]).

use std::sync::Mutex;

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Runtime, WebviewUrl, WebviewWindowBuilder, WindowEvent};

use crate::calls::Connection;
use crate::session::Snapshot;

/// The tray's status line and the look last shown, updated with every state change.
pub struct TrayStatus<R: Runtime> {
    pub status: MenuItem<R>,
    shown: Mutex<Option<(TrayState, String)>>,
}

/// The connection as the tray icon shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrayState {
    /// Signed in and connected: calls can ring.
    Online,
    /// Signing in.
    Connecting,
    /// Signed out, or the connection is lost (reconnecting): no call can ring.
    Offline,
}

impl TrayState {
    /// The state a snapshot shows.
    pub fn of(snap: &Snapshot) -> Self {
        match (&snap.user, snap.connection) {
            (Some(_), Connection::Connected) => TrayState::Online,
            (Some(_), Connection::Connecting) => TrayState::Connecting,
            _ => TrayState::Offline,
        }
    }

    /// The icon's PNG (64x64, from `icons/`; `icons/make_icons.sh` makes them).
    pub fn icon_png(self) -> &'static [u8] {
        match self {
            TrayState::Online => include_bytes!("../../icons/tray-online.png"),
            TrayState::Connecting => include_bytes!("../../icons/tray-connecting.png"),
            TrayState::Offline => include_bytes!("../../icons/tray-offline.png"),
        }
    }

    /// The icon, decoded.
    pub fn icon(self) -> tauri::Result<tauri::image::Image<'static>> {
        tauri::image::Image::from_bytes(self.icon_png())
    }
}

/// Creates the main window (hidden to the tray on close), shown unless `hidden`.
pub fn create_main_window<R: Runtime>(
    app: &AppHandle<R>,
    profile: &str,
    hidden: bool,
) -> tauri::Result<()> {
    let title = app_name(profile);
    let window = WebviewWindowBuilder::new(app, "main", WebviewUrl::default())
        .title(title)
        .inner_size(420.0, 720.0)
        .min_inner_size(340.0, 480.0)
        .visible(!hidden)
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
    TrayIconBuilder::with_id("main")
        .icon(TrayState::Offline.icon()?)
        .tooltip("callinvite")
        .menu(&menu)
        .on_menu_event(|app, event| match event.id().as_ref() {
            "show" => show_main_window(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .build(app)?;
    app.manage(TrayStatus {
        status,
        shown: Mutex::new(None),
    });
    Ok(())
}

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

/// The tray's status line (menu and tooltip): who is signed in and how.
pub fn status_text(snap: &Snapshot) -> String {
    let dnd = match snap.settings.do_not_disturb {
        crate::store::DoNotDisturb::Off => "",
        crate::store::DoNotDisturb::Silent => " · do not disturb (silent)",
        crate::store::DoNotDisturb::Busy => " · do not disturb",
    };
    match (&snap.user, snap.connection) {
        (Some(u), Connection::Connected) => match &snap.call {
            Some(c) => format!("Online as {u} · call with {}", c.peer),
            None => format!("Online as {u}{dnd}"),
        },
        (Some(u), Connection::Connecting) => format!("Connecting as {u}…"),
        (Some(u), _) => format!("Offline ({u}) · reconnecting"),
        (None, _) => "Signed out".into(),
    }
}

/// Updates the window title and the tray (icon, tooltip, status line) from a snapshot.
pub fn set_status<R: Runtime>(app: &AppHandle<R>, snap: &Snapshot) {
    if let Some(w) = app.get_webview_window("main") {
        let title = window_title(snap);
        if w.title().ok().as_deref() != Some(title.as_str()) {
            let _ = w.set_title(&title);
        }
    }
    let Some(tray) = app.try_state::<TrayStatus<R>>() else {
        return;
    };
    let look = (TrayState::of(snap), status_text(snap));
    let Ok(mut shown) = tray.shown.lock() else {
        return;
    };
    if shown.as_ref() == Some(&look) {
        return;
    }
    let (state, text) = &look;
    let _ = tray.status.set_text(text);
    if let Some(icon) = app.tray_by_id("main") {
        if shown.as_ref().map(|(s, _)| s) != Some(state) {
            match state.icon() {
                Ok(image) => {
                    let _ = icon.set_icon(Some(image));
                }
                Err(e) => tracing::warn!(error = %e, "cannot decode the tray icon"),
            }
        }
        let _ = icon.set_tooltip(Some(format!("{} — {text}", app_name(&snap.profile))));
    }
    *shown = Some(look);
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
    fn the_connection_picks_the_tray_icon_and_text() {
        let mut s = snap("default", None, None);
        s.connection = Connection::SignedOut;
        assert_eq!(TrayState::of(&s), TrayState::Offline);
        assert_eq!(status_text(&s), "Signed out");
        s.user = Some("bob".into());
        s.connection = Connection::Connecting;
        assert_eq!(TrayState::of(&s), TrayState::Connecting);
        assert_eq!(status_text(&s), "Connecting as bob…");
        s.connection = Connection::Connected;
        assert_eq!(TrayState::of(&s), TrayState::Online);
        assert_eq!(status_text(&s), "Online as bob");
        s.connection = Connection::Disconnected;
        assert_eq!(TrayState::of(&s), TrayState::Offline);
        assert_eq!(status_text(&s), "Offline (bob) · reconnecting");
    }

    #[test]
    fn each_state_has_its_own_small_icon() {
        let states = [TrayState::Online, TrayState::Connecting, TrayState::Offline];
        let icons: Vec<_> = states.iter().map(|s| s.icon().unwrap()).collect();
        for (state, icon) in states.iter().zip(&icons) {
            assert_eq!((icon.width(), icon.height()), (64, 64), "{state:?}");
        }
        for i in 0..icons.len() {
            for j in i + 1..icons.len() {
                assert_ne!(
                    icons[i].rgba(),
                    icons[j].rgba(),
                    "{:?} and {:?} look the same",
                    states[i],
                    states[j]
                );
            }
        }
        // Online is the app's colour (green), offline is grey: the middle
        // pixel's channels (the disc, outside the glyph) say so.
        let at = |icon: &tauri::image::Image<'_>, x: u32, y: u32| {
            let i = ((y * icon.width() + x) * 4) as usize;
            let p = &icon.rgba()[i..i + 4];
            (p[0], p[1], p[2])
        };
        let (r, g, b) = at(&icons[0], 8, 32);
        assert!(g > r && g > b, "online is green: {:?}", (r, g, b));
        let (r, g, b) = at(&icons[1], 8, 32);
        assert!(r > g && g > b, "connecting is amber: {:?}", (r, g, b));
        let (r, g, b) = at(&icons[2], 8, 32);
        assert!(
            r.abs_diff(g) < 8 && g.abs_diff(b) < 8,
            "offline is grey: {:?}",
            (r, g, b)
        );
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
