//! Windows and macOS, through notify-rust's own backends (not compiled on Linux).
//!
//! * Windows (tauri-winrt-notification): a toast with Accept/Decline buttons; the
//!   press is awaited on a background thread. A shown toast cannot be removed, so
//!   `withdraw` only stops reporting its buttons.
//! * macOS (NSUserNotificationCenter, notify-rust's default): the action labels are
//!   shown only (in an "Options" menu) and reporting a click needs the main run
//!   loop; `available()` is `false` so the app relies on its window. Real buttons
//!   need notify-rust's `preview-macos-un` feature, not enabled here.
//! * Anything else: no backend; every call says so.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::{Action, NotifyError};

/// The platform half of [`crate::Notifier`].
pub(crate) struct Backend {
    app_name: String,
    /// The app's icon (a path or a name), where the platform shows one.
    #[allow(dead_code)]
    icon: String,
    #[cfg_attr(not(any(windows, target_os = "macos")), allow(dead_code))]
    actions: mpsc::UnboundedSender<Action>,
    /// Invitations whose notification is up and whose buttons still count.
    ringing: Arc<Mutex<HashSet<String>>>,
}

impl Backend {
    pub(crate) fn new(
        app_name: &str,
        icon: &str,
        actions: mpsc::UnboundedSender<Action>,
    ) -> Backend {
        Backend {
            app_name: app_name.to_owned(),
            icon: icon.to_owned(),
            actions,
            ringing: Arc::default(),
        }
    }

    pub(crate) fn app_name(&self) -> &str {
        &self.app_name
    }

    pub(crate) fn available(&self) -> bool {
        cfg!(windows)
    }

    pub(crate) fn withdraw(&self, invitation_id: &str) {
        self.ringing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(invitation_id);
    }

    #[cfg(any(windows, target_os = "macos"))]
    pub(crate) fn incoming_call(
        &self,
        invitation_id: &str,
        caller: &str,
        content: &str,
    ) -> Result<(), NotifyError> {
        use notify_rust::{Notification, NotificationResponse, Timeout};

        let mut n = Notification::new();
        n.appname(&self.app_name)
            .summary(&crate::incoming_summary(caller))
            .body(&crate::incoming_body(caller, content))
            .action(crate::ACCEPT, "Accept")
            .action(crate::DECLINE, "Decline")
            .timeout(Timeout::Never);
        #[cfg(windows)]
        n.urgency(notify_rust::Urgency::Critical); // the "Reminder" toast scenario
        let handle = n.show().map_err(|e| NotifyError::Rejected(e.to_string()))?;

        let invitation = invitation_id.to_owned();
        self.ringing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(invitation.clone());
        let (ringing, actions) = (Arc::clone(&self.ringing), self.actions.clone());
        std::thread::Builder::new()
            .name("callinvite-notify-wait".into())
            .spawn(move || {
                let _ = handle.wait_for_response(|response: &NotificationResponse| {
                    let still_ringing = ringing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&invitation);
                    if let (true, NotificationResponse::Action(key)) = (still_ringing, response) {
                        if let Some(action) = crate::action_for(key, &invitation) {
                            let _ = actions.send(action);
                        }
                    }
                });
            })
            .map_err(|e| NotifyError::WorkerGone(e.to_string()))?;
        Ok(())
    }

    #[cfg(any(windows, target_os = "macos"))]
    pub(crate) fn missed_call(&self, caller: &str) -> Result<(), NotifyError> {
        let mut n = notify_rust::Notification::new();
        n.appname(&self.app_name)
            .summary(&crate::missed_summary(caller));
        // Dropping the handle leaves the notification up (on macOS, sends it).
        n.show()
            .map(drop)
            .map_err(|e| NotifyError::Rejected(e.to_string()))
    }

    #[cfg(not(any(windows, target_os = "macos")))]
    pub(crate) fn incoming_call(&self, _: &str, _: &str, _: &str) -> Result<(), NotifyError> {
        Err(unsupported())
    }

    #[cfg(not(any(windows, target_os = "macos")))]
    pub(crate) fn missed_call(&self, _: &str) -> Result<(), NotifyError> {
        Err(unsupported())
    }
}

#[cfg(not(any(windows, target_os = "macos")))]
fn unsupported() -> NotifyError {
    NotifyError::Unavailable {
        detail: "this platform has no notification backend".into(),
    }
}
