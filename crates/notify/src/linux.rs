//! Linux and the BSDs: XDG notifications (`org.freedesktop.Notifications`) on the
//! D-Bus session bus, through notify-rust's zbus backend.
//!
//! All D-Bus work runs on one background thread (a single-threaded Tokio runtime
//! driving notify-rust's async API); the public methods hand it a command and wait
//! for the answer with a deadline, so a hung bus or service costs the caller at
//! most [`CALL_TIMEOUT`] and never a panic.
//!
//! notify-rust opens one bus connection per shown notification and keeps it in the
//! `NotificationHandle`; it starts listening for `ActionInvoked` only when
//! `wait_for_action_async` is polled, i.e. after `Notify` returned. That is fine
//! for a person pressing a button, and the tests account for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify_rust::{Hint, Notification, NotificationHandle, NotificationResponse, Timeout, Urgency};
use tokio::sync::{mpsc, oneshot};

use crate::{
    action_for, incoming_summary, missed_summary, Action, NotifyError, ACCEPT, CALL_TIMEOUT,
    DECLINE,
};

/// Deadline of the capability probe behind [`Backend::available`].
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Capability probes that may be stuck at once (each on its own short-lived
/// thread) before `available()` answers `false` without asking again.
const MAX_PROBES: usize = 4;
/// Extra time the caller waits beyond the worker's own deadline.
const GRACE: Duration = Duration::from_millis(500);

/// The platform half of [`crate::Notifier`].
pub(crate) struct Backend {
    app_name: String,
    /// Commands for the worker thread; `Err` says why it could not start.
    commands: Result<mpsc::UnboundedSender<Command>, String>,
    probes: Arc<AtomicUsize>,
    /// The service renders body markup (seen in the last capability probe), so a
    /// caller's text must be escaped lest `<a href>` or `<b>` in it be rendered.
    body_markup: Arc<std::sync::atomic::AtomicBool>,
    /// The app's icon (theme name or image path) on every notification.
    icon: String,
}

enum Command {
    /// Show an incoming call (`invitation` is `Some`) or a missed call.
    Show {
        invitation: Option<String>,
        notification: Box<Notification>,
        reply: std_mpsc::SyncSender<Result<(), NotifyError>>,
    },
    /// Close the incoming-call notification of this invitation, if any.
    Withdraw {
        invitation: String,
        reply: std_mpsc::SyncSender<()>,
    },
}

/// The incoming call of one invitation: being shown (`shown` is `None` while its
/// `Notify` is under way) or on screen. A withdrawal or a newer incoming call for
/// the same invitation replaces the slot, which tells a `Notify` still under way
/// that its notification is no longer wanted.
struct Slot {
    /// Tells the slots of the same invitation apart.
    generation: u64,
    shown: Option<Shown>,
}

/// An incoming-call notification on screen.
struct Shown {
    handle: Arc<NotificationHandle>,
    /// Stops the task waiting for a button press on it.
    stop: oneshot::Sender<()>,
}

type RingingMap = Arc<Mutex<HashMap<String, Slot>>>;

fn lock(map: &RingingMap) -> MutexGuard<'_, HashMap<String, Slot>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Backend {
    pub(crate) fn new(
        app_name: &str,
        icon: &str,
        actions: mpsc::UnboundedSender<Action>,
    ) -> Backend {
        let commands = spawn_worker(actions).map_err(|e| {
            tracing::warn!("notifications disabled: cannot start the notifier worker: {e}");
            e.to_string()
        });
        Backend {
            app_name: app_name.to_owned(),
            icon: icon.to_owned(),
            commands,
            probes: Arc::new(AtomicUsize::new(0)),
            body_markup: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    pub(crate) fn app_name(&self) -> &str {
        &self.app_name
    }

    pub(crate) fn available(&self) -> bool {
        if self.commands.is_err() || self.probes.load(Ordering::SeqCst) >= MAX_PROBES {
            return false;
        }
        // notify-rust only offers a blocking GetCapabilities (it opens its own
        // connection), so it runs on a throwaway thread that may outlive the deadline.
        let (tx, rx) = std_mpsc::sync_channel(1);
        let probes = Arc::clone(&self.probes);
        probes.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("callinvite-notify-probe".into())
            .spawn(move || {
                let _ = tx.send(notify_rust::get_capabilities());
                probes.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.probes.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!("cannot probe the notification service: {e}");
            return false;
        }
        match rx.recv_timeout(PROBE_TIMEOUT) {
            Ok(Ok(capabilities)) => {
                tracing::debug!(?capabilities, "notification service capabilities");
                self.body_markup.store(
                    capabilities.iter().any(|c| c == "body-markup"),
                    Ordering::SeqCst,
                );
                capabilities.iter().any(|c| c == "actions")
            }
            Ok(Err(e)) => {
                tracing::debug!("no notification service: {e}");
                false
            }
            Err(_) => {
                tracing::debug!("the notification service did not answer GetCapabilities");
                false
            }
        }
    }

    pub(crate) fn incoming_call(
        &self,
        invitation_id: &str,
        caller: &str,
        content: &str,
    ) -> Result<(), NotifyError> {
        let body = crate::incoming_body(caller, content);
        let mut n = Notification::new();
        n.appname(&self.app_name)
            .icon(&self.icon)
            .summary(&incoming_summary(caller))
            .body(&if self.body_markup.load(Ordering::SeqCst) {
                escape_markup(&body)
            } else {
                body
            })
            .action(ACCEPT, "Accept")
            .action(DECLINE, "Decline")
            .hint(Hint::Category("call.incoming".to_owned()))
            .urgency(Urgency::Critical)
            .timeout(Timeout::Never);
        self.show(Some(invitation_id.to_owned()), n)
    }

    pub(crate) fn missed_call(&self, caller: &str) -> Result<(), NotifyError> {
        let mut n = Notification::new();
        n.appname(&self.app_name)
            .icon(&self.icon)
            .summary(&missed_summary(caller))
            .hint(Hint::Category("call.unanswered".to_owned()))
            .urgency(Urgency::Normal)
            .timeout(Timeout::Default);
        self.show(None, n)
    }

    pub(crate) fn withdraw(&self, invitation_id: &str) {
        let (reply, rx) = std_mpsc::sync_channel(1);
        let command = Command::Withdraw {
            invitation: invitation_id.to_owned(),
            reply,
        };
        if self.send(command).is_ok() {
            let _ = rx.recv_timeout(CALL_TIMEOUT + GRACE);
        }
    }

    fn show(
        &self,
        invitation: Option<String>,
        notification: Notification,
    ) -> Result<(), NotifyError> {
        let (reply, rx) = std_mpsc::sync_channel(1);
        self.send(Command::Show {
            invitation,
            notification: Box::new(notification),
            reply,
        })?;
        match rx.recv_timeout(CALL_TIMEOUT + GRACE) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(NotifyError::Timeout(CALL_TIMEOUT)),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(NotifyError::WorkerGone(
                "it stopped while showing the notification".into(),
            )),
        }
    }

    fn send(&self, command: Command) -> Result<(), NotifyError> {
        let commands = self
            .commands
            .as_ref()
            .map_err(|e| NotifyError::WorkerGone(e.clone()))?;
        commands
            .send(command)
            .map_err(|_| NotifyError::WorkerGone("it has stopped".into()))
    }
}

fn spawn_worker(
    actions: mpsc::UnboundedSender<Action>,
) -> std::io::Result<mpsc::UnboundedSender<Command>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("callinvite-notify".into())
        .spawn(move || runtime.block_on(worker(rx, actions)))?;
    Ok(tx)
}

/// Runs until every `Notifier` clone is gone, then closes the incoming-call
/// notifications still shown (their buttons could no longer be answered).
async fn worker(
    mut commands: mpsc::UnboundedReceiver<Command>,
    actions: mpsc::UnboundedSender<Action>,
) {
    let ringing: RingingMap = Arc::default();
    let mut generation = 0u64;
    while let Some(command) = commands.recv().await {
        match command {
            Command::Show {
                invitation: None,
                notification,
                reply,
            } => {
                tokio::spawn(async move {
                    // The handle is dropped at once: a missed call needs no answer,
                    // and the notification stays up on the server.
                    let _ = reply.send(show(&notification).await.map(drop));
                });
            }
            Command::Show {
                invitation: Some(invitation),
                notification,
                reply,
            } => {
                generation += 1;
                let slot = Slot {
                    generation,
                    shown: None,
                };
                // Ringing again for an invitation on screen replaces it in place.
                let previous = lock(&ringing).insert(invitation.clone(), slot);
                let mut notification = notification;
                if let Some(previous) = previous.and_then(|slot| slot.shown) {
                    let _ = previous.stop.send(());
                    notification.id(previous.handle.id());
                }
                tokio::spawn(ring(
                    invitation,
                    notification,
                    reply,
                    Arc::clone(&ringing),
                    actions.clone(),
                    generation,
                ));
            }
            Command::Withdraw { invitation, reply } => {
                // A Notify still under way sees its slot gone and closes its own.
                let shown = lock(&ringing)
                    .remove(&invitation)
                    .and_then(|slot| slot.shown);
                tokio::spawn(async move {
                    if let Some(shown) = shown {
                        close(shown).await;
                    }
                    let _ = reply.send(());
                });
            }
        }
    }
    let left: Vec<Shown> = lock(&ringing)
        .drain()
        .filter_map(|(_, slot)| slot.shown)
        .collect();
    if !left.is_empty() {
        let closing = futures_join_all(left.into_iter().map(close));
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// Awaits all futures (a tiny `join_all` on Tokio tasks' terms).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for future in futures {
        set.spawn(future);
    }
    while set.join_next().await.is_some() {}
}

/// Sends `Notify`, bounded by [`CALL_TIMEOUT`].
async fn show(notification: &Notification) -> Result<NotificationHandle, NotifyError> {
    match tokio::time::timeout(CALL_TIMEOUT, notification.show_async()).await {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(NotifyError::Timeout(CALL_TIMEOUT)),
    }
}

/// Stops waiting for a button press and sends `CloseNotification`.
async fn close(shown: Shown) {
    let _ = shown.stop.send(());
    close_handle(&shown.handle).await;
}

/// Sends `CloseNotification`, bounded by [`CALL_TIMEOUT`].
async fn close_handle(handle: &NotificationHandle) {
    let id = handle.id();
    if tokio::time::timeout(CALL_TIMEOUT, handle.close_async())
        .await
        .is_err()
    {
        tracing::debug!(id, "CloseNotification timed out");
    }
}

/// Shows an incoming call, answers the caller, then waits for a button press.
async fn ring(
    invitation: String,
    notification: Box<Notification>,
    reply: std_mpsc::SyncSender<Result<(), NotifyError>>,
    ringing: RingingMap,
    actions: mpsc::UnboundedSender<Action>,
    generation: u64,
) {
    // The lock is taken in blocks of their own: never held across an await.
    let handle = match show(&notification).await {
        Ok(handle) => Arc::new(handle),
        Err(e) => {
            {
                let mut map = lock(&ringing);
                if map
                    .get(&invitation)
                    .is_some_and(|slot| slot.generation == generation)
                {
                    map.remove(&invitation);
                }
            }
            let _ = reply.send(Err(e));
            return;
        }
    };
    let (stop, stopped) = oneshot::channel();
    let still_wanted = {
        let mut map = lock(&ringing);
        match map.get_mut(&invitation) {
            Some(slot) if slot.generation == generation => {
                slot.shown = Some(Shown {
                    handle: Arc::clone(&handle),
                    stop,
                });
                true
            }
            _ => false,
        }
    };
    if !still_wanted {
        // Withdrawn (or rung again) while Notify was under way.
        tracing::debug!(%invitation, "incoming call withdrawn while being shown");
        close_handle(&handle).await;
        let _ = reply.send(Ok(()));
        return;
    }
    tracing::debug!(%invitation, id = handle.id(), "incoming-call notification shown");
    let _ = reply.send(Ok(()));

    // notify-rust's wait ends at the first ActionInvoked or NotificationClosed of
    // this id, whatever the key: a click on the body ("default") or an unknown key
    // must not end it, or a later Accept/Decline would be lost.
    let mut stopped = stopped;
    loop {
        let mut response = None;
        tokio::select! {
            biased;
            _ = &mut stopped => return, // withdrawn or replaced
            () = handle.wait_for_action_async(|r: &NotificationResponse| response = Some(r.clone())) => {}
        }
        match response {
            Some(NotificationResponse::Action(key)) => match action_for(&key, &invitation) {
                Some(action) => {
                    tracing::debug!(?action, "notification button pressed");
                    let _ = actions.send(action);
                    // Answered: take it down. GNOME's server does so itself,
                    // dunst and others leave it up with buttons that do nothing.
                    close_handle(&handle).await;
                    break;
                }
                None => tracing::debug!(%invitation, key, "unknown notification action ignored"),
            },
            Some(NotificationResponse::Default) => {
                tracing::debug!(%invitation, "notification body clicked; still ringing")
            }
            other => {
                // Closed (dismissed, expired), or the connection ended.
                tracing::debug!(%invitation, ?other, "incoming-call notification ended");
                break;
            }
        }
    }
    // Pressed, dismissed or expired: forget it (unless something newer took its place).
    let mut map = lock(&ringing);
    if map
        .get(&invitation)
        .is_some_and(|entry| entry.generation == generation)
    {
        map.remove(&invitation);
    }
}

/// Tells "no service" apart from "the service said no". notify-rust's error has
/// no public kind, so this reads it as printed: a D-Bus error name first for an
/// error reply, free text for a connection, address or I/O failure.
fn classify(error: &notify_rust::error::Error) -> NotifyError {
    /// Error replies from the bus itself meaning nobody (working) serves the name.
    const NO_SERVICE: [&str; 7] = [
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.NoServer",
        "org.freedesktop.DBus.Error.Timeout",
        "org.freedesktop.DBus.Error.Spawn", // activation failed (prefix)
    ];
    let detail = error.to_string();
    let first = detail.split(':').next().unwrap_or_default();
    let is_error_reply = first.contains('.') && !first.contains(char::is_whitespace);
    if is_error_reply && !NO_SERVICE.iter().any(|name| first.starts_with(name)) {
        NotifyError::Rejected(detail)
    } else {
        NotifyError::Unavailable { detail }
    }
}

/// Escapes the characters that body markup would interpret, so the caller's
/// text is shown as typed.
fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod markup_tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::escape_markup("<a href=\"x\">A & B</a>"),
            "&lt;a href=\"x\"&gt;A &amp; B&lt;/a&gt;"
        );
    }
}
