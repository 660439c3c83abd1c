//! The notifier against a real D-Bus: every test starts its own `dbus-daemon`
//! (a private session bus, killed when the test ends), points
//! `DBUS_SESSION_BUS_ADDRESS` at it and serves a fake
//! `org.freedesktop.Notifications` on it with zbus, which records every call and
//! plays the user by emitting `ActionInvoked`.
//!
//! The bus config has no service directories on purpose: the stock session.conf
//! would let the daemon try to D-Bus-activate an installed notification daemon
//! (e.g. dunst) when nobody owns the name, instead of answering ServiceUnknown.
//!
//! The environment variable is process-wide, so the tests take a global lock:
//! they run one at a time under `cargo test` and in their own process under
//! nextest. Needs the `dbus-daemon` binary (Debian: `apt-get install dbus-daemon`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use callinvite_notify::{Action, Notifier, NotifyError};
use tokio::sync::mpsc::UnboundedReceiver;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::OwnedVariant;

const PATH: &str = "/org/freedesktop/Notifications";
const IFACE: &str = "org.freedesktop.Notifications";
/// A generous bound for "quickly" on a loaded two-core machine; in practice
/// these calls take milliseconds.
const QUICK: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// A private session bus

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the process-wide lock for as long as the test sets
/// `DBUS_SESSION_BUS_ADDRESS`.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn set_bus_address(address: &str) {
    // Edition 2021: safe; the SERIAL lock keeps the tests from racing on it.
    std::env::set_var("DBUS_SESSION_BUS_ADDRESS", address);
}

/// A `dbus-daemon` of our own; killed (and its directory removed) on drop.
struct Bus {
    child: Child,
    dir: PathBuf,
    address: String,
    _serial: MutexGuard<'static, ()>,
}

impl Bus {
    fn start() -> Bus {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let serial = serial();
        let dir = std::env::temp_dir().join(format!(
            "callinvite-notify-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the bus directory");
        let config = dir.join("bus.conf");
        let log = dir.join("bus.log");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.join("bus").display()
            ),
        )
        .expect("write the bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // As root it warns that it cannot raise its fd limit; keep that out of
            // the test output but at hand if it fails to start.
            .stderr(std::fs::File::create(&log).expect("create the bus log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dbus-daemon ({e}); install it: apt-get install dbus-daemon")
            });
        let mut address = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut address)
            .expect("read the bus address");
        let address = address.trim().to_owned();
        if address.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dbus-daemon printed no address: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        set_bus_address(&address);
        Bus {
            child,
            dir,
            address,
            _serial: serial,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// A fake notification server

#[derive(Debug, Clone)]
struct NotifyCall {
    /// Unique bus name of the client that sent it.
    sender: String,
    app_name: String,
    app_icon: String,
    replaces_id: u32,
    summary: String,
    body: String,
    actions: Vec<String>,
    hints: HashMap<String, OwnedVariant>,
    expire_timeout: i32,
    /// The id the fake answered.
    id: u32,
}

impl NotifyCall {
    fn urgency(&self) -> Option<u8> {
        self.hints
            .get("urgency")
            .map(|v| v.downcast_ref::<u8>().expect("urgency is a byte"))
    }

    fn category(&self) -> Option<String> {
        self.hints
            .get("category")
            .map(|v| v.downcast_ref::<String>().expect("category is a string"))
    }
}

// A test fake's log: a handful of values, so the size of the largest
// variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Call {
    Notify(NotifyCall),
    Close(u32),
}

struct FakeServer {
    calls: Arc<Mutex<Vec<Call>>>,
    capabilities: Vec<String>,
    next_id: u32,
    behaviour: Behaviour,
}

/// How the fake answers `Notify`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    /// At once, with a new id.
    Normal,
    /// With an error.
    Refuse,
    /// With a new id, after this long (recorded on arrival).
    Slow(Duration),
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl FakeServer {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &mut self,
        #[zbus(header)] header: Header<'_>,
        app_name: String,
        replaces_id: u32,
        app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, OwnedVariant>,
        expire_timeout: i32,
    ) -> zbus::fdo::Result<u32> {
        if self.behaviour == Behaviour::Refuse {
            return Err(zbus::fdo::Error::InvalidArgs("refused by the test".into()));
        }
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.next_id += 1;
            self.next_id
        };
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        self.calls.lock().unwrap().push(Call::Notify(NotifyCall {
            sender,
            app_name,
            app_icon,
            replaces_id,
            summary,
            body,
            actions,
            hints,
            expire_timeout,
            id,
        }));
        if let Behaviour::Slow(delay) = self.behaviour {
            // Not a blocking sleep: that would stall zbus's executor for everyone.
            let (done, wait) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = done.send(());
            });
            let _ = wait.await;
        }
        Ok(id)
    }

    async fn close_notification(
        &mut self,
        id: u32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<()> {
        self.calls.lock().unwrap().push(Call::Close(id));
        // 3: closed by a call to CloseNotification, as a real server says.
        Self::notification_closed(&emitter, id, 3).await?;
        Ok(())
    }

    fn get_capabilities(&self) -> Vec<String> {
        self.capabilities.clone()
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "fake".into(),
            "callinvite tests".into(),
            "0".into(),
            "1.2".into(),
        )
    }

    #[zbus(signal)]
    async fn notification_closed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        reason: u32,
    ) -> zbus::Result<()>;
}

/// The fake server's connection and what it recorded.
struct Fake {
    conn: zbus::Connection,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Fake {
    async fn start(bus: &Bus) -> Fake {
        Fake::with(bus, &["actions", "body", "persistence"], Behaviour::Normal).await
    }

    async fn with(bus: &Bus, capabilities: &[&str], behaviour: Behaviour) -> Fake {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let server = FakeServer {
            calls: Arc::clone(&calls),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            next_id: 100,
            behaviour,
        };
        // zbus 6's builder records a bad argument and reports it from build().
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .name(IFACE)
            .serve_at(PATH, server)
            .build()
            .await
            .expect("connect the fake server");
        Fake { conn, calls }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn notifies(&self) -> Vec<NotifyCall> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Notify(n) => Some(n),
                Call::Close(_) => None,
            })
            .collect()
    }

    fn closes(&self) -> Vec<u32> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Close(id) => Some(id),
                Call::Notify(_) => None,
            })
            .collect()
    }

    /// Waits until `n` Notify calls are recorded and returns the n-th.
    async fn nth_notify(&self, n: usize) -> NotifyCall {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(call) = self.notifies().into_iter().nth(n - 1) {
                return call;
            }
            assert!(
                Instant::now() < deadline,
                "no Notify #{n}; calls: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a CloseNotification for `id` is recorded.
    async fn wait_close(&self, id: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.closes().contains(&id) {
            assert!(
                Instant::now() < deadline,
                "no CloseNotification({id}); calls: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Emits `ActionInvoked(id, key)`, to everyone (`to == None`, as most servers
    /// do) or to one client.
    async fn emit_action(&self, id: u32, key: &str, to: Option<&str>) {
        self.conn
            .emit_signal(to, PATH, IFACE, "ActionInvoked", &(id, key))
            .await
            .expect("emit ActionInvoked");
    }

    /// Presses a button as a user would and returns what the notifier reported.
    ///
    /// notify-rust subscribes to `ActionInvoked` only once `Notify` has returned
    /// (inside its wait for the action), so a single signal sent right after the
    /// Notify could arrive before the subscription; like a user clicking again,
    /// this re-emits every 100 ms until the notifier reports something.
    async fn press(
        &self,
        id: u32,
        key: &str,
        to: Option<&str>,
        actions: &mut UnboundedReceiver<Action>,
    ) -> Action {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.emit_action(id, key, to).await;
            match tokio::time::timeout(Duration::from_millis(100), actions.recv()).await {
                Ok(Some(action)) => return action,
                Ok(None) => panic!("the action channel closed"),
                Err(_) => assert!(
                    Instant::now() < deadline,
                    "pressing {key:?} on {id} reported nothing"
                ),
            }
        }
    }
}

/// Asserts that no action arrives within a short while.
async fn assert_no_action(actions: &mut UnboundedReceiver<Action>) {
    if let Ok(action) = tokio::time::timeout(Duration::from_millis(300), actions.recv()).await {
        panic!("unexpected action: {action:?}");
    }
}

fn assert_incoming(call: &NotifyCall, caller: &str, content: &str) {
    assert!(call.summary.contains(caller), "summary {:?}", call.summary);
    assert_eq!(call.summary, format!("Incoming call from {caller}"));
    assert_eq!(call.body, content);
    assert_eq!(call.actions, ["accept", "Accept", "decline", "Decline"]);
    assert_eq!(call.category().as_deref(), Some("call.incoming"));
    assert_eq!(call.urgency(), Some(2), "critical urgency");
    assert_eq!(call.expire_timeout, 0, "never expires");
    assert_eq!(call.app_name, "callinvite-test");
    assert_eq!(
        call.app_icon,
        callinvite_notify::DEFAULT_ICON,
        "an icon on every call"
    );
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_is_reported_with_the_invitation_id() {
    let bus = Bus::start();
    let fake = Fake::start(&bus).await;
    let (notifier, mut actions) = Notifier::new("callinvite-test");
    assert!(notifier.available());

    notifier
        .incoming_call("inv-1", "alice", "room-42")
        .expect("incoming_call");
    let call = fake.nth_notify(1).await;
    assert_incoming(&call, "alice", "room-42");
    assert_eq!(call.replaces_id, 0);

    let action = fake.press(call.id, "accept", None, &mut actions).await;
    assert_eq!(action, Action::Accept("inv-1".into()));
    // Answered: the notification is taken down, not left with dead buttons.
    fake.wait_close(call.id).await;
    // Only once, however often the button was pressed.
    fake.emit_action(call.id, "accept", None).await;
    assert_no_action(&mut actions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_message_the_body_says_who_calls() {
    let bus = Bus::start();
    let fake = Fake::start(&bus).await;
    let (notifier, _actions) = Notifier::with_icon("callinvite-test", "/opt/callinvite/icon.png");
    notifier
        .incoming_call("inv-9", "carol", "")
        .expect("incoming_call");
    let call = fake.nth_notify(1).await;
    assert_eq!(
        call.body,
        "carol is calling you. Accept to talk, or Decline."
    );
    assert_eq!(call.app_icon, "/opt/callinvite/icon.png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_is_reported_for_the_right_invitation() {
    let bus = Bus::start();
    let fake = Fake::start(&bus).await;
    let (notifier, mut actions) = Notifier::new("callinvite-test");

    notifier
        .incoming_call("inv-a", "alice", "first")
        .expect("incoming_call a");
    notifier
        .incoming_call("inv-b", "bob", "")
        .expect("incoming_call b");
    let a = fake.nth_notify(1).await;
    let b = fake.nth_notify(2).await;
    assert_incoming(&a, "alice", "first");
    assert_incoming(&b, "bob", "bob is calling you. Accept to talk, or Decline.");
    assert_ne!(a.id, b.id);

    // Unknown notification ids, the "default" action (a click on the body) and
    // unknown keys are ignored, and do not stop the buttons from working. Sent
    // for a while, as the notifier subscribes only after Notify returned.
    for _ in 0..6 {
        fake.emit_action(999, "accept", None).await;
        fake.emit_action(b.id, "default", None).await;
        fake.emit_action(b.id, "snooze", None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_no_action(&mut actions).await;

    // Some servers send the signal to the notifying client only.
    let action = fake
        .press(b.id, "decline", Some(&b.sender), &mut actions)
        .await;
    assert_eq!(action, Action::Decline("inv-b".into()));
    let action = fake.press(a.id, "accept", None, &mut actions).await;
    assert_eq!(action, Action::Accept("inv-a".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdraw_closes_the_notification() {
    let bus = Bus::start();
    let fake = Fake::start(&bus).await;
    let (notifier, mut actions) = Notifier::new("callinvite-test");

    notifier
        .incoming_call("inv-1", "alice", "room")
        .expect("incoming_call");
    let first = fake.nth_notify(1).await;
    // Ringing again for the same invitation replaces the notification in place.
    notifier
        .incoming_call("inv-1", "alice", "room")
        .expect("incoming_call again");
    let again = fake.nth_notify(2).await;
    assert_eq!(again.replaces_id, first.id);
    assert_eq!(again.id, first.id);

    notifier.withdraw("inv-1");
    assert_eq!(
        fake.closes(),
        [first.id],
        "CloseNotification done when withdraw returns"
    );

    // A press that arrives afterwards is not reported.
    fake.emit_action(first.id, "accept", None).await;
    assert_no_action(&mut actions).await;

    // Nothing to withdraw: no-ops, and quick.
    let started = Instant::now();
    notifier.withdraw("inv-1");
    notifier.withdraw("never-shown");
    assert!(started.elapsed() < QUICK);
    assert_eq!(fake.closes(), [first.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdraw_while_notify_is_under_way_still_closes_it() {
    let bus = Bus::start();
    let fake = Fake::with(
        &bus,
        &["actions"],
        Behaviour::Slow(Duration::from_millis(500)),
    )
    .await;
    let (notifier, mut actions) = Notifier::new("callinvite-test");

    let ringing = notifier.clone();
    let shown =
        tokio::task::spawn_blocking(move || ringing.incoming_call("inv-1", "alice", "room"));
    let call = fake.nth_notify(1).await; // Notify arrived; its answer is 500 ms away
    notifier.withdraw("inv-1");
    shown.await.unwrap().expect("incoming_call");
    fake.wait_close(call.id).await;
    fake.emit_action(call.id, "accept", None).await;
    assert_no_action(&mut actions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_call_has_no_buttons() {
    let bus = Bus::start();
    let fake = Fake::start(&bus).await;
    let (notifier, _actions) = Notifier::new("callinvite-test");

    notifier.missed_call("carol").expect("missed_call");
    let call = fake.nth_notify(1).await;
    assert!(call.summary.contains("carol"));
    assert_eq!(call.summary, "Missed call from carol");
    assert!(call.actions.is_empty(), "actions {:?}", call.actions);
    assert_eq!(call.urgency(), Some(1), "normal urgency");
    assert_eq!(call.category().as_deref(), Some("call.unanswered"));
    assert_eq!(call.expire_timeout, -1, "the server's default timeout");

    // It is not an incoming call: withdrawing anything does not close it.
    notifier.withdraw("carol");
    assert!(fake.closes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_notifier_closes_ringing_notifications() {
    let bus = Bus::start();
    let fake = Fake::start(&bus).await;
    let (notifier, _actions) = Notifier::new("callinvite-test");
    notifier
        .incoming_call("inv-1", "alice", "room")
        .expect("incoming_call");
    let call = fake.nth_notify(1).await;
    let clone = notifier.clone();
    drop(notifier);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.closes().is_empty(), "a clone still holds the worker");
    drop(clone);
    fake.wait_close(call.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_buttons_is_not_available() {
    let bus = Bus::start();
    let fake = Fake::with(&bus, &["body"], Behaviour::Normal).await;
    let (notifier, _actions) = Notifier::new("callinvite-test");
    assert!(!notifier.available());
    // Notifications still show (without buttons on such a server).
    notifier.missed_call("dave").expect("missed_call");
    fake.nth_notify(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_an_error() {
    let bus = Bus::start();
    let _fake = Fake::with(&bus, &["actions"], Behaviour::Refuse).await;
    let (notifier, _actions) = Notifier::new("callinvite-test");
    assert!(notifier.available());
    let err = notifier
        .incoming_call("inv-1", "alice", "room")
        .expect_err("refused");
    assert!(matches!(err, NotifyError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    let err = notifier.missed_call("alice").expect_err("refused");
    assert!(matches!(err, NotifyError::Rejected(_)), "{err:?}");
    notifier.withdraw("inv-1"); // nothing is shown: a no-op
}

/// Checks that every method fails or does nothing, quickly and without panicking.
fn assert_unavailable(notifier: &Notifier) {
    let started = Instant::now();
    assert!(!notifier.available());
    assert!(
        started.elapsed() < QUICK,
        "available() took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let err = notifier
        .incoming_call("inv-1", "alice", "room")
        .expect_err("no service");
    assert!(
        started.elapsed() < QUICK,
        "incoming_call took {:?}",
        started.elapsed()
    );
    eprintln!("incoming_call without a service: {err}");
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("DBUS_SESSION_BUS_ADDRESS"),
        "{err}"
    );

    let started = Instant::now();
    let err = notifier.missed_call("alice").expect_err("no service");
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err:?}");
    notifier.withdraw("inv-1");
    assert!(started.elapsed() < QUICK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_notification_service_on_the_bus() {
    let _bus = Bus::start();
    let (notifier, mut actions) = Notifier::new("callinvite-test");
    assert_unavailable(&notifier);
    assert!(actions.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_bus_at_all() {
    let _serial = serial();
    let nowhere =
        std::env::temp_dir().join(format!("callinvite-notify-no-bus-{}", std::process::id()));
    set_bus_address(&format!("unix:path={}", nowhere.join("bus").display()));
    let (notifier, _actions) = Notifier::new("callinvite-test");
    assert_unavailable(&notifier);

    // An address that is not even valid.
    set_bus_address("this is not a D-Bus address");
    assert_unavailable(&notifier);
}
