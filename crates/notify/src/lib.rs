//! Native desktop notifications for callinvite.
//!
//! The desktop app shows an incoming call as a notification with **Accept** and
//! **Decline** buttons, withdraws it when the call stops ringing (canceled by the
//! caller, answered on another device or in the app window, expired), and shows a
//! plain notification for a missed call. Button presses arrive as [`Action`]s on
//! the channel returned by [`Notifier::new`].
//!
//! ```no_run
//! # async fn demo() {
//! use callinvite_notify::{Action, Notifier};
//!
//! let (notifier, mut actions) = Notifier::new("callinvite");
//! if !notifier.available() {
//!     // No notification service with buttons: answer in the window only.
//! }
//! if let Err(e) = notifier.incoming_call("inv-42", "alice", "room-42") {
//!     tracing::warn!("cannot show the incoming call: {e}");
//! }
//! while let Some(action) = actions.recv().await {
//!     match action {
//!         Action::Accept(invitation_id) => { /* accept it */ }
//!         Action::Decline(invitation_id) => { /* refuse it */ }
//!     }
//! }
//! # }
//! ```
//!
//! # Platforms
//!
//! * **Linux and the BSDs**: the freedesktop.org (XDG) notification service on the
//!   D-Bus session bus (`org.freedesktop.Notifications`), through `notify-rust`'s
//!   pure-Rust zbus backend (no libdbus needed). Buttons, withdrawal and
//!   [`Notifier::available`] work as documented. Buttons need a server that
//!   advertises the `actions` capability (GNOME, KDE, dunst, mako, xfce4-notifyd…).
//! * **Windows**: toasts through `notify-rust`'s `tauri-winrt-notification` backend,
//!   with Accept/Decline buttons. A toast cannot be removed once shown, so
//!   [`Notifier::withdraw`] only makes a later button press on it be ignored.
//! * **macOS**: `notify-rust`'s default `NSUserNotificationCenter` backend. It shows
//!   the action labels only (collapsed into an "Options" menu), and reporting a
//!   click back needs the app's main run loop; real buttons need `notify-rust`'s
//!   `preview-macos-un` feature (`UNUserNotificationCenter`, a signed bundle), which
//!   this crate does not enable. [`Notifier::available`] is therefore `false` on
//!   macOS, and the user answers in the app window. Withdrawal is a no-op there.
//!
//! A machine without any notification service breaks nothing: every method
//! returns an error or does nothing within a few seconds at most (usually at
//! once), and never panics.
#![warn(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

#[cfg(all(unix, not(target_os = "macos")))]
#[path = "linux.rs"]
mod platform;

#[cfg(not(all(unix, not(target_os = "macos"))))]
#[path = "other.rs"]
mod platform;

/// How long one request to the notification service may take before the call
/// gives up with [`NotifyError::Timeout`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the user clicked on an incoming-call notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The user pressed **Accept** on the notification of this invitation id.
    Accept(String),
    /// The user pressed **Decline** on the notification of this invitation id.
    Decline(String),
}

impl Action {
    /// The invitation id the action is about.
    pub fn invitation_id(&self) -> &str {
        match self {
            Action::Accept(id) | Action::Decline(id) => id,
        }
    }
}

/// Why a notification could not be shown. Each message says what went wrong and
/// what to do; none of them is fatal for the app (the call still rings in its
/// window).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No notification service could be reached.
    #[error(
        "no desktop notification service is reachable ({detail}); on Linux, run one on the \
         session bus named by DBUS_SESSION_BUS_ADDRESS (the desktop's own, or dunst, mako, \
         xfce4-notifyd…) — until then calls ring in the app window only"
    )]
    Unavailable {
        /// What the platform layer reported.
        detail: String,
    },
    /// The notification service did not answer in time.
    #[error(
        "the notification service did not answer within {0:?}; it may be hung — restarting it \
         usually helps; calls still ring in the app window"
    )]
    Timeout(Duration),
    /// The notification service was reached but refused the notification.
    #[error(
        "the notification service refused the notification ({0}); check its log or try another \
         notification daemon"
    )]
    Rejected(String),
    /// The notifier's background worker could not start or has stopped.
    #[error(
        "the notifier's background worker is not running ({0}); create a new Notifier (if this \
         repeats, the process is out of threads or memory)"
    )]
    WorkerGone(String),
}

/// Shows incoming-call and missed-call notifications and reports the buttons
/// pressed on them.
///
/// Cheap to clone; all clones share one background worker and one action
/// channel. The worker stops (closing the incoming-call notifications still
/// shown) when the last clone is dropped. All methods are blocking but bounded:
/// call them from any thread, including a Tokio task (they take at most one
/// D-Bus round trip, capped at [`CALL_TIMEOUT`]).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<platform::Backend>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("app_name", &self.inner.app_name())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// `app_name` is shown by the notification server. Actions arrive on the
    /// returned receiver.
    ///
    /// Never fails: if the background worker cannot start, every later call
    /// reports [`NotifyError::WorkerGone`] and [`Notifier::available`] is `false`.
    pub fn new(app_name: &str) -> (Notifier, mpsc::UnboundedReceiver<Action>) {
        Notifier::with_icon(app_name, DEFAULT_ICON)
    }

    /// [`Notifier::new`] with the app's icon: an icon name of the desktop's
    /// theme (`callinvite` once installed) or an absolute path to an image.
    pub fn with_icon(app_name: &str, icon: &str) -> (Notifier, mpsc::UnboundedReceiver<Action>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(platform::Backend::new(app_name, icon, tx));
        (Notifier { inner }, rx)
    }

    /// Whether a notification service is reachable and supports action buttons
    /// (Linux: `GetCapabilities` contains `"actions"`).
    ///
    /// Asks the service each time (one D-Bus round trip, at most 2 s); `false`
    /// when there is no service, it does not answer, or it has no buttons.
    pub fn available(&self) -> bool {
        self.inner.available()
    }

    /// Shows "Incoming call from {caller}" with the content as body, buttons
    /// Accept / Decline (action keys `"accept"`/`"decline"`), category
    /// `"call.incoming"`, critical urgency, no timeout. When a button is pressed,
    /// sends [`Action`] on the channel. Never blocks the caller for more than the
    /// D-Bus round trip (wait for actions on a background thread).
    ///
    /// Calling it again for an invitation that is still shown replaces that
    /// notification in place.
    pub fn incoming_call(
        &self,
        invitation_id: &str,
        caller: &str,
        content: &str,
    ) -> Result<(), NotifyError> {
        self.inner.incoming_call(invitation_id, caller, content)
    }

    /// Withdraws the incoming-call notification of that invitation (canceled,
    /// answered elsewhere, answered in the window, expired). No-op if none.
    ///
    /// After it returns, a button press on that notification is no longer
    /// reported. Waits for the service's answer, at most [`CALL_TIMEOUT`].
    pub fn withdraw(&self, invitation_id: &str) {
        self.inner.withdraw(invitation_id)
    }

    /// Shows "Missed call from {caller}" (normal urgency, default timeout, no
    /// actions; category `"call.unanswered"`).
    pub fn missed_call(&self, caller: &str) -> Result<(), NotifyError> {
        self.inner.missed_call(caller)
    }
}

/// The summary line of an incoming-call notification.
fn incoming_summary(caller: &str) -> String {
    format!("Incoming call from {caller}")
}

/// The body of an incoming-call notification: the caller's message, or, when
/// there is none, who is calling and what the buttons do.
fn incoming_body(caller: &str, content: &str) -> String {
    if content.trim().is_empty() {
        format!("{caller} is calling you. Accept to talk, or Decline.")
    } else {
        content.to_owned()
    }
}

/// The freedesktop.org standard icon for a call, when the app gives none.
pub const DEFAULT_ICON: &str = "call-start";

/// The summary line of a missed-call notification.
fn missed_summary(caller: &str) -> String {
    format!("Missed call from {caller}")
}

/// Action key of the Accept button.
const ACCEPT: &str = "accept";
/// Action key of the Decline button.
const DECLINE: &str = "decline";

/// Maps a pressed action key to the [`Action`] of that invitation.
fn action_for(key: &str, invitation_id: &str) -> Option<Action> {
    match key {
        ACCEPT => Some(Action::Accept(invitation_id.to_owned())),
        DECLINE => Some(Action::Decline(invitation_id.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_keys_map_to_actions() {
        assert_eq!(
            action_for("accept", "i1"),
            Some(Action::Accept("i1".into()))
        );
        assert_eq!(
            action_for("decline", "i1"),
            Some(Action::Decline("i1".into()))
        );
        assert_eq!(action_for("default", "i1"), None);
        assert_eq!(action_for("__closed", "i1"), None);
        assert_eq!(Action::Decline("x".into()).invitation_id(), "x");
    }

    #[test]
    fn summaries() {
        assert_eq!(incoming_summary("bob"), "Incoming call from bob");
        assert_eq!(missed_summary("bob"), "Missed call from bob");
    }

    #[test]
    fn notifier_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Notifier>();
    }
}
