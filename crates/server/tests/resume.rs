//! Session resume at the protocol level: a connection that drops without a
//! close frame leaves its session waiting for the grace window; `resume` on a
//! new connection replays exactly the messages the client has not processed,
//! in order, and carries on. Past the window both sides get defined reasons.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use callinvite_client::{
    CallEndReason, Client, ConnectionReason, ConnectionState, Event, LoginOptions,
};
use callinvite_server::Config;
use common::*;

/// Logs in on a raw connection; returns it with the session secret.
async fn raw_session(server: &TestServer, user: &str) -> (Raw, String) {
    let mut raw = server.raw().await;
    raw.send(json!({"type": "login", "ref": 1, "user": user}))
        .await;
    let ok = raw.recv().await;
    assert_eq!(ok["type"], "login_ok", "{ok}");
    assert!(ok.get("seq").is_none(), "login_ok is not numbered: {ok}");
    assert_eq!(ok["timers"]["resume_ms"], 10_000);
    let session = ok["session"].as_str().expect("a session secret").to_owned();
    assert!(session.len() >= 32, "{session}");
    (raw, session)
}

async fn resume(server: &TestServer, session: &str, last_seq: u64) -> (Raw, Value) {
    let mut raw = server.raw().await;
    raw.send(json!({"type": "resume", "ref": 9, "session": session, "last_seq": last_seq}))
        .await;
    let answer = raw.recv().await;
    (raw, answer)
}

#[tokio::test]
async fn a_dropped_callee_resumes_and_gets_what_it_missed_exactly_once_in_order() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    alice.subscribe_presence(&["bob"]).await.unwrap();
    let (mut bob, session) = raw_session(&server, "bob").await;
    until(&mut a, "presence_changed").await;

    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    let first = bob.recv().await;
    assert_eq!(first["type"], "invitation");
    assert_eq!(first["seq"], 1);
    bob.send(json!({"type": "ack", "invitation_id": id.0, "of": "invitation"}))
        .await;
    until(&mut a, "local_invitation_received_by_peer").await;

    // The network goes away: no close frame, the TCP connection just ends.
    drop(bob);
    settle().await;
    // Meanwhile the caller cancels. The callee must hear of it first, so the
    // caller waits; the `canceled` waits in bob's outbox.
    alice.cancel_local_invitation(&inv).await.unwrap();
    settle().await;
    assert!(a.try_next().is_none(), "alice heard something too early");

    // bob comes back, having processed seq 1.
    let (mut bob, resumed) = resume(&server, &session, 1).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["ref"], 9);
    assert_eq!(resumed["seq"], 2);
    assert_eq!(resumed["last_ref"], 1, "only the login's ref was applied");
    let canceled = bob.recv().await;
    assert_eq!(canceled["type"], "canceled");
    assert_eq!(canceled["seq"], 2);
    bob.send(json!({"type": "ack", "invitation_id": id.0, "of": "canceled"}))
        .await;
    until(&mut a, "local_invitation_canceled").await;

    // bob never looked offline, and the session goes on with the next number.
    bob.send(json!({"type": "query_presence", "ref": 2, "users": ["alice"]}))
        .await;
    let presence = bob.recv().await;
    assert_eq!(presence["type"], "presence");
    assert_eq!(presence["seq"], 3);
    assert!(
        !std::iter::from_fn(|| a.try_next())
            .any(|e| matches!(e, Event::PresenceChanged { online: false, .. })),
        "bob went offline during the drop"
    );
}

#[tokio::test]
async fn resume_from_an_earlier_point_replays_from_there_and_reports_applied_requests() {
    let server = start_default().await;
    let (_alice, _a) = server.login("alice").await;
    let (mut bob, session) = raw_session(&server, "bob").await;
    for r in 2..=4 {
        bob.send(json!({"type": "query_presence", "ref": r, "users": ["alice"]}))
            .await;
    }
    // An invite sent right before the drop, its reply never read.
    bob.send(json!({"type": "invite", "ref": 5, "callee": "alice"}))
        .await;
    for seq in 1..=3 {
        assert_eq!(bob.recv().await["seq"], seq);
    }
    drop(bob);
    settle().await;

    // The client had processed only seq 2.
    let (mut bob, resumed) = resume(&server, &session, 2).await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["last_ref"], 5, "the invite was applied");
    let replay: Vec<Value> = vec![bob.recv().await, bob.recv().await];
    assert_eq!(replay[0]["seq"], 3);
    assert_eq!(replay[0]["ref"], 4);
    assert_eq!(replay[1]["seq"], 4);
    assert_eq!(replay[1]["type"], "invite_ok");
    assert_eq!(replay[1]["ref"], 5);

    // A `last_seq` the server never sent is refused, and the session is kept.
    let (_, wrong) = resume(&server, &session, 99).await;
    assert_eq!(wrong["type"], "error");
    assert_eq!(wrong["code"], "invalid_argument");
    assert_eq!(wrong["ref"], 9);
}

#[tokio::test]
async fn a_resume_takes_over_a_half_open_connection() {
    let server = start_default().await;
    let (mut old, session) = raw_session(&server, "bob").await;
    // The client believes the old connection is dead and resumes elsewhere,
    // while the server still has the old one.
    let (mut new, resumed) = resume(&server, &session, 0).await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(old.closed().await, Some(4001));
    // The new connection is the session now.
    new.send(json!({"type": "query_presence", "ref": 2, "users": ["bob"]}))
        .await;
    let p = new.recv().await;
    assert_eq!(p["seq"], 1);
    assert_eq!(p["users"][0]["online"], true);
}

#[tokio::test]
async fn past_the_grace_window_the_peer_gets_a_defined_reason_and_resume_is_refused() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (mut bob, session) = raw_session(&server, "bob").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    bob.recv_type("invitation").await;
    bob.send(json!({"type": "accept", "ref": 2, "invitation_id": id.0}))
        .await;
    until(&mut a, "local_invitation_accepted").await;

    drop(bob);
    let (e, waited) = virtual_until(&mut a, "call_ended").await;
    assert_window(waited, 10);
    assert!(
        matches!(
            e,
            Event::CallEnded {
                reason: CallEndReason::PeerConnectionLost,
                ..
            }
        ),
        "{e:?}"
    );
    let (_, refused) = resume(&server, &session, 0).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "session_expired");
}

#[tokio::test]
async fn a_client_too_far_behind_cannot_resume_and_seen_releases_messages() {
    let server = start(Config {
        resume_buffer: 2,
        ..Config::default()
    })
    .await;
    let (mut bob, session) = raw_session(&server, "bob").await;
    for r in 2..=5 {
        bob.send(json!({"type": "query_presence", "ref": r, "users": ["bob"]}))
            .await;
        bob.recv().await;
    }
    drop(bob);
    settle().await;
    // Only seq 3 and 4 are kept; a client that processed only seq 1 missed seq 2.
    let (_, refused) = resume(&server, &session, 1).await;
    assert_eq!(refused["code"], "session_expired", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("1 messages"),
        "{refused}"
    );
    // The session is over for good.
    let (_, again) = resume(&server, &session, 4).await;
    assert_eq!(again["code"], "session_expired");

    // `seen` releases messages: after it, resuming from before them is refused.
    let (mut carol, session) = raw_session(&server, "carol").await;
    carol
        .send(json!({"type": "query_presence", "ref": 2, "users": ["bob"]}))
        .await;
    assert_eq!(carol.recv().await["seq"], 1);
    carol.send(json!({"type": "seen", "seq": 1})).await;
    settle().await;
    drop(carol);
    settle().await;
    let (_, refused) = resume(&server, &session, 0).await;
    assert_eq!(refused["code"], "session_expired", "{refused}");
}

#[tokio::test]
async fn a_close_frame_or_logout_ends_the_session_at_once() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    alice.subscribe_presence(&["bob"]).await.unwrap();
    let (mut bob, session) = raw_session(&server, "bob").await;
    until(&mut a, "presence_changed").await;
    bob.ws.close(None).await.unwrap();
    // Real time, no grace: offline as soon as the close arrives.
    let e = tokio::time::timeout(Duration::from_secs(5), until(&mut a, "presence_changed"))
        .await
        .expect("offline at once");
    assert_eq!(
        e,
        Event::PresenceChanged {
            user: "bob".into(),
            online: false
        }
    );
    let (_, refused) = resume(&server, &session, 0).await;
    assert_eq!(refused["code"], "session_expired");

    let (mut carol, session) = raw_session(&server, "carol").await;
    carol.send(json!({"type": "logout", "ref": 2})).await;
    assert_eq!(carol.recv().await["type"], "ok");
    let (_, refused) = resume(&server, &session, 0).await;
    assert_eq!(refused["code"], "session_expired");
}

#[tokio::test]
async fn resume_and_login_are_refused_on_a_logged_in_connection() {
    let server = start_default().await;
    let (mut bob, session) = raw_session(&server, "bob").await;
    bob.send(json!({"type": "resume", "ref": 2, "session": session, "last_seq": 0}))
        .await;
    let e = bob.recv().await;
    assert_eq!(e["code"], "already_logged_in");
    // Connection-level replies are not numbered.
    assert!(e.get("seq").is_none(), "{e}");
}

// ---- the client library over a network that fails ----

fn is_state(e: &Event, want: ConnectionState, why: ConnectionReason) -> bool {
    matches!(e, Event::ConnectionStateChanged { state, reason } if *state == want && *reason == why)
}

#[tokio::test]
async fn the_client_reconnects_resumes_and_misses_nothing_after_a_network_cut() {
    let server = start_default().await;
    let proxy = Proxy::start(&server.url).await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = Client::login(LoginOptions::new(&proxy.url, "bob"))
        .await
        .unwrap();
    assert!(is_state(
        &next(&mut b).await,
        ConnectionState::Connected,
        ConnectionReason::LoginSuccess
    ));
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut b, "remote_invitation_received").await;
    until(&mut a, "local_invitation_received_by_peer").await;

    // The network drops; while bob is away alice cancels, and bob asks for presence.
    proxy.cut();
    assert!(is_state(
        &next(&mut b).await,
        ConnectionState::Reconnecting,
        ConnectionReason::Interrupted
    ));
    alice.cancel_local_invitation(&inv).await.unwrap();
    let presence = tokio::spawn({
        let bob = bob.clone();
        async move { bob.query_presence(&["alice"]).await }
    });

    // bob is back within the backoff; the cancel arrives once, then alice hears it.
    assert!(is_state(
        &next(&mut b).await,
        ConnectionState::Connected,
        ConnectionReason::Resumed
    ));
    let e = expect(&mut b, "remote_invitation_canceled").await;
    assert_eq!(e.invitation_id(), Some(&id));
    expect(&mut a, "local_invitation_canceled").await;
    let p = presence
        .await
        .unwrap()
        .expect("the request made while away is answered");
    assert!(p[0].online);
    assert!(proxy.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    // Another cut in the middle of a call: the call survives it.
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut b, "remote_invitation_received").await;
    bob.accept_remote_invitation(&id, "").await.unwrap();
    expect(&mut b, "remote_invitation_accepted").await;
    until(&mut a, "local_invitation_accepted").await;
    proxy.cut();
    expect(&mut b, "connection_state_changed").await;
    expect(&mut b, "connection_state_changed").await;
    alice.hang_up(&id).await.unwrap();
    let e = expect(&mut b, "call_ended").await;
    assert!(
        matches!(
            e,
            Event::CallEnded {
                reason: CallEndReason::Hangup,
                ..
            }
        ),
        "{e:?}"
    );
    // Nothing twice, nothing more.
    settle().await;
    assert_eq!(b.try_next(), None);
}

#[tokio::test]
async fn an_outage_longer_than_the_grace_window_ends_the_session_with_defined_reasons() {
    let server = start(Config {
        resume_grace: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let proxy = Proxy::start(&server.url).await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = Client::login(LoginOptions::new(&proxy.url, "bob"))
        .await
        .unwrap();
    next(&mut b).await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut b, "remote_invitation_received").await;
    bob.accept_remote_invitation(&id, "").await.unwrap();
    expect(&mut b, "remote_invitation_accepted").await;
    until(&mut a, "local_invitation_accepted").await;

    proxy.block(true);
    proxy.cut();
    expect(&mut b, "connection_state_changed").await;
    // The server gives bob 1 s, then ends the call for alice.
    let e = until(&mut a, "call_ended").await;
    assert!(
        matches!(
            e,
            Event::CallEnded {
                reason: CallEndReason::PeerConnectionLost,
                ..
            }
        ),
        "{e:?}"
    );
    proxy.block(false);
    // bob comes back too late: its call ends locally, and the session is over.
    let e = expect(&mut b, "call_ended").await;
    assert!(
        matches!(
            e,
            Event::CallEnded {
                reason: CallEndReason::NotLoggedIn,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(is_state(
        &next(&mut b).await,
        ConnectionState::Aborted,
        ConnectionReason::SessionExpired
    ));
    assert_eq!(
        b.next().await,
        None,
        "the event stream ends with the session"
    );
}
