//! The app's commands on Tauri's mock runtime, against a real callinvite
//! server on loopback, with an in-process client library as the other party.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use tauri::test::{
    get_ipc_response, mock_builder, mock_context, noop_assets, MockRuntime, INVOKE_KEY,
};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, WebviewWindow, WebviewWindowBuilder};

use callinvite_client::{Client, Event, EventStream, LoginOptions};
use callinvite_desktop::{build, store::Store, AppOptions, AppState};
use callinvite_server::{CancellationToken, Config};

struct Harness {
    /// Kept alive for the length of the test (dropping it stops the app).
    _app: App<MockRuntime>,
    webview: WebviewWindow<MockRuntime>,
    states: mpsc::Receiver<Value>,
    outcomes: mpsc::Receiver<Value>,
    url: String,
    dir: std::path::PathBuf,
    _server: CancellationToken,
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tauri::async_runtime::block_on(f)
}

/// A free port for the app's embedded server, below Linux's ephemeral range
/// (32768 and up): the servers of tests running at the same time bind port 0,
/// and one of them could otherwise take this port before the app does (the
/// app would then join that test's server as "another instance").
fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    for attempt in 0u32.. {
        let port = 20_000 + (state.hash_one((std::process::id(), attempt)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    unreachable!()
}

fn harness(name: &str) -> Harness {
    harness_with(name, Config::default(), None)
}

fn harness_with(name: &str, config: Config, dir: Option<std::path::PathBuf>) -> Harness {
    harness_full(name, config, dir, |_| {})
}

/// A harness whose app options `adjust` changes (port, secret file, …).
fn harness_full(
    name: &str,
    config: Config,
    dir: Option<std::path::PathBuf>,
    adjust: impl FnOnce(&mut AppOptions),
) -> Harness {
    let listener = block(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tauri::async_runtime::spawn(callinvite_server::run(listener, config, stop.clone()));
    let dir = dir.unwrap_or_else(|| {
        let d =
            std::env::temp_dir().join(format!("callinvite-app-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    });
    let mut options = AppOptions::for_test(dir.clone(), free_port());
    adjust(&mut options);
    let state = AppState::new(options, Store::new(dir.clone()), None);
    let app = build(mock_builder())
        .manage(state)
        .build(mock_context(noop_assets()))
        .expect("mock app");
    let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .expect("webview");
    let (tx, states) = mpsc::channel();
    app.listen_any("app-state", move |e| {
        let _ = tx.send(serde_json::from_str(e.payload()).unwrap_or(Value::Null));
    });
    let (tx, outcomes) = mpsc::channel();
    app.listen_any("call-outcome", move |e| {
        let _ = tx.send(serde_json::from_str(e.payload()).unwrap_or(Value::Null));
    });
    Harness {
        _app: app,
        webview,
        states,
        outcomes,
        url,
        dir,
        _server: stop,
    }
}

impl Harness {
    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        get_ipc_response(
            &self.webview,
            InvokeRequest {
                cmd: cmd.into(),
                callback: tauri::ipc::CallbackFn(0),
                error: tauri::ipc::CallbackFn(1),
                url: "tauri://localhost".parse().unwrap(),
                body: tauri::ipc::InvokeBody::Json(args),
                headers: Default::default(),
                invoke_key: INVOKE_KEY.to_string(),
            },
        )
        .map(|b| b.deserialize::<Value>().unwrap_or(Value::Null))
    }

    /// Waits for an `app-state` snapshot matching `pred`.
    fn state_until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.states.recv_timeout(left) {
                Ok(s) if pred(&s) => return s,
                Ok(_) => {}
                Err(_) => panic!("no app-state with {what}"),
            }
        }
    }

    fn outcome(&self) -> Value {
        self.outcomes
            .recv_timeout(Duration::from_secs(20))
            .expect("a call-outcome event")
    }

    fn sign_in(&self, user: &str) -> Value {
        self.invoke(
            "sign_in",
            json!({"user": user, "server": self.url, "token": null}),
        )
        .expect("sign_in")
    }

    fn bot(&self, user: &str) -> (Client, EventStream) {
        block(Client::login(LoginOptions::new(&self.url, user))).expect("bot login")
    }
}

fn bot_next(events: &mut EventStream, name: &str) -> Event {
    block(async {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("bot event")
                .expect("bot stream");
            if e.name() == name {
                return e;
            }
        }
    })
}

fn phase(s: &Value) -> &str {
    s["call"]["phase"].as_str().unwrap_or("")
}

#[test]
fn commands_need_a_session_and_say_so() {
    let h = harness("nosession");
    let err = h
        .invoke("call", json!({"callee": "bob", "content": null}))
        .unwrap_err();
    assert_eq!(err["kind"], "not_signed_in");
    assert!(err["message"].as_str().unwrap().contains("Sign in"));
    assert_eq!(
        h.invoke("hang_up", json!({})).unwrap_err()["kind"],
        "not_signed_in"
    );
    let err = h
        .invoke(
            "sign_in",
            json!({"user": "null", "server": h.url, "token": null}),
        )
        .unwrap_err();
    assert_eq!(err["kind"], "invalid_argument");
    let state = h.invoke("get_state", json!({})).unwrap();
    assert_eq!(state["connection"], "signed_out");
    assert_eq!(state["user"], Value::Null);
}

#[test]
fn sign_in_call_a_bot_that_accepts_then_hang_up() {
    let h = harness("outgoing");
    let snap = h.sign_in("alice");
    assert_eq!(
        (snap["user"].as_str(), snap["connection"].as_str()),
        (Some("alice"), Some("connected"))
    );
    let (bot, mut events) = h.bot("bob");

    h.invoke("call", json!({"callee": "bob", "content": "room-1"}))
        .expect("call");
    let received = bot_next(&mut events, "remote_invitation_received");
    let id = received.invitation_id().unwrap().clone();
    h.state_until("ringing", |s| phase(s) == "ringing");
    block(bot.accept_remote_invitation(&id, "hi")).unwrap();
    let s = h.state_until("in call", |s| phase(s) == "in_call");
    assert_eq!(s["call"]["peer"], "bob");
    let outcome = h.outcome();
    assert_eq!(
        (outcome["outcome"].as_str(), outcome["detail"].as_str()),
        (Some("accepted"), Some("hi"))
    );

    // Misuse while in a call is refused with a clear error.
    assert_eq!(
        h.invoke("call", json!({"callee": "carol", "content": null}))
            .unwrap_err()["kind"],
        "busy"
    );
    assert_eq!(
        h.invoke("cancel", json!({})).unwrap_err()["kind"],
        "no_call"
    );

    h.invoke("hang_up", json!({})).expect("hang_up");
    let s = h.state_until("no call", |s| s["call"].is_null());
    assert_eq!(h.outcome()["outcome"], "hung_up");
    assert_eq!(s["history"][0]["peer"], "bob");
    assert_eq!(s["history"][0]["outcome"], "accepted");
    assert!(s["history"][0]["duration_s"].is_u64());
    bot_next(&mut events, "call_ended");
    // History is on disk.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(h.dir.join("history.json")).unwrap())
            .unwrap();
    assert_eq!(saved[0]["peer"], "bob");
}

#[test]
fn incoming_call_accepted_from_the_app_and_busy_policy() {
    let h = harness("incoming");
    h.sign_in("alice");
    let (bob, mut b) = h.bot("bob");
    let inv = bob
        .create_local_invitation("alice")
        .unwrap()
        .with_content("standup");
    block(bob.send_local_invitation(&inv)).unwrap();
    let s = h.state_until("incoming", |s| phase(s) == "incoming");
    assert_eq!(
        (s["call"]["peer"].as_str(), s["call"]["content"].as_str()),
        (Some("bob"), Some("standup"))
    );
    h.invoke("accept", json!({"invitationId": null}))
        .expect("accept");
    h.state_until("in call", |s| phase(s) == "in_call");
    bot_next(&mut b, "local_invitation_accepted");

    // A second caller while in a call is answered busy automatically (default policy).
    let (carol, mut c) = h.bot("carol");
    block(carol.send_local_invitation(&carol.create_local_invitation("alice").unwrap())).unwrap();
    match bot_next(&mut c, "local_invitation_refused") {
        Event::LocalInvitationRefused { busy, .. } => assert!(busy),
        e => panic!("{e:?}"),
    }
    let missed = h.state_until("missed entry", |s| {
        s["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["peer"] == "carol"))
    });
    assert_eq!(
        missed["call"]["peer"], "bob",
        "the call on screen is untouched"
    );

    h.invoke("hang_up", json!({})).expect("hang_up");
    h.state_until("call ended", |s| s["call"].is_null());
    match bot_next(&mut b, "call_ended") {
        Event::CallEnded { by, .. } => assert_eq!(by.as_deref(), Some("alice")),
        e => panic!("{e:?}"),
    }
}

/// The UI keeps the last `app-state` it gets. The accept command and the
/// event pump both emit one when a call is accepted; the one emitted last
/// must be the newest (an older "incoming" snapshot emitted after the
/// "in call" one left the window on the incoming screen for the whole call).
#[test]
fn after_accepts_the_last_snapshot_is_the_call_and_revisions_rise() {
    let h = harness("revisions");
    h.sign_in("alice");
    let (bob, mut b) = h.bot("bob");
    let mut last_rev = 0;
    let mut drain = |h: &Harness| -> Option<Value> {
        // Everything emitted until the app is quiet for a moment.
        let mut last = None;
        while let Ok(s) = h.states.recv_timeout(Duration::from_millis(300)) {
            let rev = s["rev"].as_u64().expect("a revision");
            assert!(rev > last_rev, "revision {rev} after {last_rev}");
            last_rev = rev;
            last = Some(s);
        }
        last
    };
    for round in 0..15 {
        let inv = bob.create_local_invitation("alice").unwrap();
        block(bob.send_local_invitation(&inv)).unwrap();
        bot_next(&mut b, "local_invitation_received_by_peer");
        drain(&h);
        h.invoke("accept", json!({"invitationId": null}))
            .expect("accept");
        bot_next(&mut b, "local_invitation_accepted");
        let last = drain(&h).expect("snapshots after the accept");
        assert_eq!(phase(&last), "in_call", "round {round}: {last}");
        let got = h.invoke("get_state", json!({})).expect("get_state");
        assert_eq!(
            got["rev"], last["rev"],
            "get_state answers the latest revision"
        );
        h.invoke("hang_up", json!({})).expect("hang_up");
        bot_next(&mut b, "call_ended");
        let last = drain(&h).expect("snapshots after the hang-up");
        assert!(last["call"].is_null(), "round {round}: {last}");
    }
}

#[test]
fn canceled_incoming_is_a_missed_call_and_refuse_works() {
    let h = harness("missed");
    h.sign_in("alice");
    let (bob, mut b) = h.bot("bob");
    let inv = bob.create_local_invitation("alice").unwrap();
    block(bob.send_local_invitation(&inv)).unwrap();
    h.state_until("incoming", |s| phase(s) == "incoming");
    block(bob.cancel_local_invitation(&inv)).unwrap();
    let s = h.state_until("no call", |s| s["call"].is_null());
    assert_eq!(s["history"][0]["missed"], true);
    assert_eq!(h.outcome()["outcome"], "missed");
    bot_next(&mut b, "local_invitation_canceled");

    let inv = bob.create_local_invitation("alice").unwrap();
    block(bob.send_local_invitation(&inv)).unwrap();
    h.state_until("incoming", |s| phase(s) == "incoming");
    h.invoke("refuse", json!({"invitationId": null, "busy": true}))
        .expect("refuse");
    match bot_next(&mut b, "local_invitation_refused") {
        Event::LocalInvitationRefused { busy, .. } => assert!(busy),
        e => panic!("{e:?}"),
    }
    // Once the app has taken the call off the screen, there is nothing left to accept.
    h.state_until("no call", |s| s["call"].is_null());
    assert_eq!(
        h.invoke("accept", json!({"invitationId": null}))
            .unwrap_err()["kind"],
        "no_call"
    );
}

#[test]
fn settings_are_validated_and_persist() {
    let h = harness("settings");
    let mut settings = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(settings["server"], "embedded");
    settings["server"] = json!("http://nope");
    assert_eq!(
        h.invoke("set_settings", json!({"settings": settings.clone()}))
            .unwrap_err()["kind"],
        "invalid_argument"
    );
    settings["server"] = json!("embedded");
    settings["busy_policy"] = json!("notify");
    settings["meeting_url_template"] = json!("https://meet.example.org/{channel}");
    h.invoke("set_settings", json!({"settings": settings.clone()}))
        .unwrap();
    let dir = h.dir.clone();
    drop(h);
    // A corrupt history file next to good settings: reported, replaced, settings kept.
    std::fs::write(dir.join("history.json"), "{{{").unwrap();
    let again = harness_with("settings", Config::default(), Some(dir));
    let state = again.invoke("get_state", json!({})).unwrap();
    assert_eq!(state["settings"]["busy_policy"], "notify");
    assert!(state["last_error"].as_str().unwrap().contains("corrupt"));
    assert_eq!(state["history"], json!([]));
}

/// "Start at login, in the tray": saving the setting writes this profile's XDG
/// autostart entry (starting this executable hidden, with its profile and
/// folder), and turning it off removes it.
#[cfg(all(unix, not(target_os = "macos")))]
#[test]
fn start_at_login_writes_and_removes_the_xdg_autostart_entry() {
    let port = free_port();
    let h = harness_full("autostart", Config::default(), None, |o| {
        o.embedded_port = port
    });
    let config = h.dir.join("xdg-config");
    // Only this test reads it (no other one changes start_at_login), and
    // nextest runs each test in a process of its own.
    std::env::set_var("XDG_CONFIG_HOME", &config);
    let entry = config.join("autostart/callinvite-app-test.desktop");
    let mut settings = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(settings["start_at_login"], false);
    assert!(!entry.exists());

    settings["start_at_login"] = json!(true);
    let saved = h
        .invoke("set_settings", json!({"settings": settings.clone()}))
        .unwrap();
    assert_eq!(saved["start_at_login"], true);
    let text = std::fs::read_to_string(&entry).expect("the autostart entry is written");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    let exe = std::env::current_exe().unwrap();
    let dir = h.dir.display().to_string();
    assert_eq!(
        exec.split(' ').collect::<Vec<_>>(),
        [
            exe.to_str().unwrap(),
            "--hidden",
            "--profile",
            "test",
            "--data-dir",
            dir.as_str(),
            "--embedded-port",
            &port.to_string(),
        ]
    );
    assert!(text.contains("Type=Application"));
    let state = h.invoke("get_state", json!({})).unwrap();
    assert_eq!(state["settings"]["start_at_login"], true);

    settings["start_at_login"] = json!(false);
    h.invoke("set_settings", json!({"settings": settings}))
        .unwrap();
    assert!(!entry.exists(), "turning it off removes the entry");
}

#[test]
fn embedded_server_by_default_and_a_bot_can_reach_it() {
    let h = harness("embedded");
    let snap = h
        .invoke(
            "sign_in",
            json!({"user": "alice", "server": null, "token": null}),
        )
        .expect("sign in embedded");
    let label = snap["server"].as_str().unwrap().to_owned();
    assert!(label.starts_with("embedded (127.0.0.1:"), "{label}");
    let port = label
        .trim_start_matches("embedded (127.0.0.1:")
        .trim_end_matches(')');
    // Without the account's secret (another local account, a web page) nobody signs in.
    let stranger = block(Client::login(LoginOptions::new(
        format!("ws://127.0.0.1:{port}"),
        "alice",
    )));
    match stranger {
        Err(e) => assert_eq!(e.code(), callinvite_client::ErrorCode::InvalidToken, "{e}"),
        Ok(_) => panic!("the built-in server let in a login without a token"),
    }
    // Another profile of the same account reads the secret file and gets in.
    let file = h.dir.join("embedded-server.secret");
    let secret = std::fs::read(&file).expect("the secret file was made");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only this account may read the secret");
    }
    let token = callinvite_server::auth::mint(&secret, "bob", std::time::Duration::from_secs(60));
    let (bob, _b) = block(Client::login(
        LoginOptions::new(format!("ws://127.0.0.1:{port}"), "bob").token(token),
    ))
    .expect("bot reaches the embedded server");
    let presence = block(bob.query_presence(&["alice"])).unwrap();
    assert!(presence[0].online);
    h.invoke("sign_out", json!({})).unwrap();
    h.state_until("signed out", |s| s["connection"] == "signed_out");
}

#[test]
fn a_wss_server_with_a_private_ca_is_reached_with_the_ca_file_from_the_settings() {
    // A CA and a server certificate for localhost signed by it (removed with `ca`).
    let ca = callinvite_test_support::TestCa::new();
    let tls = callinvite_server::tls::Tls::from_pem_files(&ca.server_pem(), &ca.server_key())
        .expect("the test CA's server certificate loads");
    let h = harness_with(
        "wss",
        Config {
            tls: Some(tls),
            ..Config::default()
        },
        None,
    );
    let wss = h.url.replace("ws://127.0.0.1", "wss://localhost");
    let sign_in = |h: &Harness| {
        h.invoke(
            "sign_in",
            json!({"user": "alice", "server": wss, "token": null}),
        )
    };
    // The system's roots do not know the private CA.
    let err = sign_in(&h).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
    // A CA file that is not there is refused when saved.
    let mut settings = h.invoke("get_settings", json!({})).unwrap();
    settings["ca_file"] = json!("/nonexistent/ca.pem");
    let err = h
        .invoke("set_settings", json!({"settings": settings.clone()}))
        .unwrap_err();
    assert_eq!(err["kind"], "invalid_argument", "{err}");
    // With the CA's file the app signs in over TLS and can be called.
    settings["ca_file"] = json!(ca.ca_pem().to_string_lossy());
    h.invoke("set_settings", json!({"settings": settings}))
        .unwrap();
    sign_in(&h).expect("sign in over wss");
    h.state_until("connected", |s| s["connection"] == "connected");
}

/// Profile A runs the built-in server and quits without a word (its process,
/// here its runtime, is gone: connections drop with no close frame). Profile
/// B, signed in to A's server, takes the server over and is back online
/// without waiting out the resume window; a third party reaches it there.
#[test]
fn a_profile_takes_over_the_built_in_server_when_the_app_running_it_quits() {
    let port = free_port();
    let shared = std::env::temp_dir().join(format!(
        "callinvite-app-test-takeover-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&shared);
    std::fs::create_dir_all(&shared).unwrap();
    let secret_file = shared.join("embedded-server.secret");
    let secret = callinvite_desktop::session::embedded_secret(&secret_file).unwrap();

    // Profile A's app: the built-in server, in a runtime of its own.
    let a = tokio::runtime::Runtime::new().unwrap();
    // A long resume window: without the takeover, B's client would keep
    // trying to resume on the dead server for a minute before signing in again.
    let config = Config {
        secret: Some(secret.clone()),
        resume_grace: Duration::from_secs(60),
        ..Config::default()
    };
    a.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(callinvite_server::run(
            listener,
            config,
            CancellationToken::new(),
        ));
    });

    let file = secret_file.clone();
    let b = harness_full("takeover-b", Config::default(), None, move |o| {
        o.embedded_port = port;
        o.embedded_secret_file = Some(file);
    });
    let snap = b
        .invoke(
            "sign_in",
            json!({"user": "bob", "server": null, "token": null}),
        )
        .expect("sign in to A's built-in server");
    assert!(
        snap["server"].as_str().unwrap().contains("shared"),
        "{}",
        snap["server"]
    );

    // A quits.
    let quit = std::time::Instant::now();
    a.shutdown_background();
    b.state_until("reconnecting", |s| s["connection"] != "connected");
    let back = b.state_until("connected to its own built-in server", |s| {
        s["connection"] == "connected" && !s["server"].as_str().unwrap_or("").contains("shared")
    });
    eprintln!(
        "B back online {:?} after A quit, serving the built-in server itself ({})",
        quit.elapsed(),
        back["server"]
    );
    // Another profile of the account finds bob online there.
    let token = callinvite_server::auth::mint(&secret, "carol", Duration::from_secs(60));
    let (carol, _c) = block(Client::login(
        LoginOptions::new(format!("ws://127.0.0.1:{port}"), "carol").token(token),
    ))
    .expect("carol reaches B's built-in server");
    let presence = block(carol.query_presence(&["bob"])).unwrap();
    assert!(
        presence[0].online,
        "bob is online on the server B took over"
    );
    b.invoke("sign_out", json!({})).unwrap();
}
