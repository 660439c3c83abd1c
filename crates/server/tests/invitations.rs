//! Every invitation flow against a real server on loopback, with real
//! clients. Messages flow in real time; waits on server timers run on
//! virtual time ([`common::virtual_until`]), so a 60 s expiry takes
//! milliseconds and is measured exactly.

mod common;

use std::time::Duration;

use callinvite_client::{CallEndReason, ErrorCode, Event, FailureReason, LocalState, RemoteState};
use callinvite_server::Config;
use serde_json::json;

use common::*;

/// Raw test clients read only when the test tells them to; a long heartbeat
/// keeps the server from (rightly) dropping them as dead meanwhile.
fn patient() -> Config {
    Config {
        heartbeat: Duration::from_secs(3600),
        ..Config::default()
    }
}

#[tokio::test]
async fn call_accept_and_hang_up_with_content_and_response() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;

    let inv = alice
        .create_local_invitation("bob")
        .unwrap()
        .with_content("channel-7");
    let id = alice.send_local_invitation(&inv).await.unwrap();
    match expect(&mut a, "local_invitation_sent").await {
        Event::LocalInvitationSent {
            invitation,
            callee_online,
        } => {
            assert!(callee_online);
            assert_eq!(invitation.state, LocalState::SentToRemote);
            assert_eq!(invitation.invitation_id.as_ref(), Some(&id));
        }
        e => panic!("{e:?}"),
    }
    match expect(&mut b, "remote_invitation_received").await {
        Event::RemoteInvitationReceived { invitation } => {
            assert_eq!(invitation.caller, "alice");
            assert_eq!(invitation.content, "channel-7");
            assert_eq!(invitation.invitation_id, id);
        }
        e => panic!("{e:?}"),
    }
    expect(&mut a, "local_invitation_received_by_peer").await;

    bob.accept_remote_invitation(&id, "see you").await.unwrap();
    expect(&mut b, "remote_invitation_accepted").await;
    match expect(&mut a, "local_invitation_accepted").await {
        Event::LocalInvitationAccepted {
            response,
            invitation,
        } => {
            assert_eq!(response, "see you");
            assert_eq!(invitation.state, LocalState::AcceptedByRemote);
        }
        e => panic!("{e:?}"),
    }

    alice.hang_up(&id).await.unwrap();
    for (events, peer) in [(&mut b, "alice"), (&mut a, "bob")] {
        match expect(events, "call_ended").await {
            Event::CallEnded {
                reason,
                by,
                peer: p,
                ..
            } => {
                assert_eq!(reason, CallEndReason::Hangup);
                assert_eq!(by.as_deref(), Some("alice"));
                assert_eq!(p, peer);
            }
            e => panic!("{e:?}"),
        }
    }
    // Hanging up twice is misuse.
    assert_eq!(
        bob.hang_up(&id).await.unwrap_err().code(),
        ErrorCode::AlreadyEnded
    );
}

#[tokio::test]
async fn callee_hears_of_send_and_cancel_before_the_caller() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (_bob, mut b) = server.login("bob").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut a, "local_invitation_sent").await;
    expect(&mut a, "local_invitation_received_by_peer").await;
    // Bob's event was emitted before his client acknowledged, which is what
    // released Alice's: so it must already be waiting in Bob's stream.
    assert_eq!(
        b.try_next().map(|e| e.name()).as_deref(),
        Some("remote_invitation_received")
    );

    alice.cancel_local_invitation(&inv).await.unwrap();
    expect(&mut a, "local_invitation_canceled").await;
    assert_eq!(
        b.try_next().map(|e| e.name()).as_deref(),
        Some("remote_invitation_canceled")
    );
    // A canceled invitation cannot be sent again; a new one can.
    assert_eq!(
        alice.send_local_invitation(&inv).await.unwrap_err().code(),
        ErrorCode::AlreadySent
    );
    let again = alice.create_local_invitation("bob").unwrap();
    alice.send_local_invitation(&again).await.unwrap();
    until(&mut b, "remote_invitation_received").await;
}

#[tokio::test]
async fn refuse_with_response_and_busy() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    for busy in [false, true] {
        let inv = alice.create_local_invitation("bob").unwrap();
        let id = alice.send_local_invitation(&inv).await.unwrap();
        until(&mut b, "remote_invitation_received").await;
        bob.refuse_remote_invitation(&id, "not now", busy)
            .await
            .unwrap();
        match expect(&mut b, "remote_invitation_refused").await {
            Event::RemoteInvitationRefused {
                busy: b2,
                invitation,
            } => {
                assert_eq!(b2, busy);
                assert_eq!(invitation.state, RemoteState::Refused);
            }
            e => panic!("{e:?}"),
        }
        match until(&mut a, "local_invitation_refused").await {
            Event::LocalInvitationRefused {
                response, busy: b2, ..
            } => {
                assert_eq!(response, "not now");
                assert_eq!(b2, busy);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            bob.accept_remote_invitation(&id, "")
                .await
                .unwrap_err()
                .code(),
            ErrorCode::AlreadyRefused
        );
        assert_eq!(
            alice
                .cancel_local_invitation(&inv)
                .await
                .unwrap_err()
                .code(),
            ErrorCode::AlreadyRefused
        );
    }
}

#[tokio::test]
async fn peer_offline_after_the_offline_window() {
    if cluster_mode() {
        // Virtual time cannot step Redis round trips; the timers run on the
        // owning node exactly as on a single one (see tests/cluster.rs).
        eprintln!("skipped in cluster mode: uses virtual time");
        return;
    }
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let inv = alice.create_local_invitation("carol").unwrap();
    alice.send_local_invitation(&inv).await.unwrap();
    match expect(&mut a, "local_invitation_sent").await {
        Event::LocalInvitationSent { callee_online, .. } => assert!(!callee_online),
        e => panic!("{e:?}"),
    }
    let (e, waited) = virtual_until(&mut a, "local_invitation_failure").await;
    match e {
        Event::LocalInvitationFailure { reason, invitation } => {
            assert_eq!(reason, FailureReason::PeerOffline);
            assert_eq!(
                invitation.state,
                LocalState::Failure(FailureReason::PeerOffline)
            );
        }
        e => panic!("{e:?}"),
    }
    assert_window(waited, 30);
}

#[tokio::test]
async fn offline_callee_logging_in_within_the_window_gets_the_call() {
    if cluster_mode() {
        // Virtual time cannot step Redis round trips; the timers run on the
        // owning node exactly as on a single one (see tests/cluster.rs).
        eprintln!("skipped in cluster mode: uses virtual time");
        return;
    }
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let inv = alice
        .create_local_invitation("carol")
        .unwrap()
        .with_content("hi carol");
    let id = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut a, "local_invitation_sent").await;
    virtual_sleep(Duration::from_secs(20)).await;
    let (carol, mut c) = server.login("carol").await;
    match expect(&mut c, "remote_invitation_received").await {
        Event::RemoteInvitationReceived { invitation } => {
            assert_eq!(invitation.content, "hi carol")
        }
        e => panic!("{e:?}"),
    }
    expect(&mut a, "local_invitation_received_by_peer").await;
    // A second device logging in while it rings rings too.
    let (_carol2, mut c2) = server.login("carol").await;
    expect(&mut c2, "remote_invitation_received").await;
    carol.accept_remote_invitation(&id, "").await.unwrap();
    match expect(&mut c2, "remote_invitation_failure").await {
        Event::RemoteInvitationFailure { reason, .. } => {
            assert_eq!(reason, FailureReason::AnsweredElsewhere)
        }
        e => panic!("{e:?}"),
    }
    expect(&mut a, "local_invitation_accepted").await;
}

#[tokio::test]
async fn no_response_when_the_callee_never_acknowledges() {
    if cluster_mode() {
        // Virtual time cannot step Redis round trips; the timers run on the
        // owning node exactly as on a single one (see tests/cluster.rs).
        eprintln!("skipped in cluster mode: uses virtual time");
        return;
    }
    let server = start(patient()).await;
    let (alice, mut a) = server.login("alice").await;
    // A raw client that is online but never acks.
    let mut bob = server.raw_login("bob").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    alice.send_local_invitation(&inv).await.unwrap();
    assert_eq!(bob.recv().await["type"], "invitation");
    expect(&mut a, "local_invitation_sent").await;
    let (e, waited) = virtual_until(&mut a, "local_invitation_failure").await;
    match e {
        Event::LocalInvitationFailure { reason, .. } => {
            assert_eq!(reason, FailureReason::NoResponse)
        }
        e => panic!("{e:?}"),
    }
    assert_window(waited, 30);
    let failed = bob.recv().await;
    assert_eq!(failed["type"], "failed");
    assert_eq!(failed["reason"], "expired");
}

#[tokio::test]
async fn expired_when_nobody_answers_within_the_ring_timeout() {
    if cluster_mode() {
        // Virtual time cannot step Redis round trips; the timers run on the
        // owning node exactly as on a single one (see tests/cluster.rs).
        eprintln!("skipped in cluster mode: uses virtual time");
        return;
    }
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut b, "remote_invitation_received").await;
    until(&mut a, "local_invitation_received_by_peer").await;
    let (e, waited) = virtual_until(&mut b, "remote_invitation_failure").await;
    match e {
        Event::RemoteInvitationFailure { reason, .. } => assert_eq!(reason, FailureReason::Expired),
        e => panic!("{e:?}"),
    }
    assert_window(waited, 60);
    match until(&mut a, "local_invitation_failure").await {
        Event::LocalInvitationFailure { reason, .. } => assert_eq!(reason, FailureReason::Expired),
        e => panic!("{e:?}"),
    }
    assert_eq!(
        bob.accept_remote_invitation(&id, "")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AlreadyEnded
    );
}

#[tokio::test]
async fn timers_are_configurable() {
    if cluster_mode() {
        // Virtual time cannot step Redis round trips; the timers run on the
        // owning node exactly as on a single one (see tests/cluster.rs).
        eprintln!("skipped in cluster mode: uses virtual time");
        return;
    }
    let mut config = Config::default();
    config.timeouts.ring = Duration::from_secs(5);
    let server = start(config).await;
    let (alice, mut a) = server.login("alice").await;
    let (_bob, _b) = server.login("bob").await;
    alice
        .send_local_invitation(&alice.create_local_invitation("bob").unwrap())
        .await
        .unwrap();
    until(&mut a, "local_invitation_received_by_peer").await;
    let (_, waited) = virtual_until(&mut a, "local_invitation_failure").await;
    assert_window(waited, 5);
}

#[tokio::test]
async fn caller_logging_out_ends_both_sides() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    let id = alice
        .send_local_invitation(&alice.create_local_invitation("bob").unwrap())
        .await
        .unwrap();
    until(&mut b, "remote_invitation_received").await;
    alice.logout().await.unwrap();
    match until(&mut a, "local_invitation_failure").await {
        Event::LocalInvitationFailure { reason, .. } => {
            assert_eq!(reason, FailureReason::NotLoggedIn)
        }
        e => panic!("{e:?}"),
    }
    match until(&mut b, "remote_invitation_failure").await {
        Event::RemoteInvitationFailure { reason, .. } => {
            assert_eq!(reason, FailureReason::PeerOffline)
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        bob.accept_remote_invitation(&id, "")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AlreadyEnded
    );
    // After logout, calls on the old session fail clearly.
    assert_eq!(
        alice
            .create_local_invitation("bob")
            .map(|_| ())
            .err()
            .map(|e| e.code()),
        None
    );
    let err = alice
        .send_local_invitation(&alice.create_local_invitation("bob").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotLoggedIn);
}

#[tokio::test]
async fn accept_arriving_after_the_caller_left_is_already_ended() {
    let server = start(patient()).await;
    let mut alice = server.raw_login("alice").await;
    let mut bob = server.raw_login("bob").await;
    alice
        .send(json!({"type": "invite", "ref": 1, "callee": "bob"}))
        .await;
    let id = alice.recv_type("invite_ok").await["invitation_id"].clone();
    bob.recv_type("invitation").await;
    // The caller leaves (a close frame: no resume grace).
    alice.ws.close(None).await.unwrap();
    let failed = bob.recv_type("failed").await;
    assert_eq!(failed["reason"], "peer_offline");
    bob.send(json!({"type": "accept", "ref": 2, "invitation_id": id}))
        .await;
    let err = bob.recv().await;
    assert_eq!(
        (
            err["type"].as_str(),
            err["code"].as_str(),
            err["ref"].as_u64()
        ),
        (Some("error"), Some("already_ended"), Some(2))
    );
}

#[tokio::test]
async fn every_device_rings_first_answer_wins() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob1, mut b1) = server.login("bob").await;
    let (bob2, mut b2) = server.login("bob").await;
    for accept in [true, false] {
        let inv = alice.create_local_invitation("bob").unwrap();
        let id = alice.send_local_invitation(&inv).await.unwrap();
        until(&mut b1, "remote_invitation_received").await;
        until(&mut b2, "remote_invitation_received").await;
        if accept {
            bob2.accept_remote_invitation(&id, "").await.unwrap();
        } else {
            bob2.refuse_remote_invitation(&id, "", false).await.unwrap();
        }
        let expected = if accept {
            FailureReason::AnsweredElsewhere
        } else {
            FailureReason::DeclinedElsewhere
        };
        match expect(&mut b1, "remote_invitation_failure").await {
            Event::RemoteInvitationFailure { reason, .. } => assert_eq!(reason, expected),
            e => panic!("{e:?}"),
        }
        assert_eq!(
            bob1.accept_remote_invitation(&id, "")
                .await
                .unwrap_err()
                .code(),
            ErrorCode::AlreadyEnded
        );
        let outcome = until(
            &mut a,
            if accept {
                "local_invitation_accepted"
            } else {
                "local_invitation_refused"
            },
        )
        .await;
        assert_eq!(outcome.invitation_id(), Some(&id));
        if accept {
            bob2.hang_up(&id).await.unwrap();
            until(&mut a, "call_ended").await;
            until(&mut b2, "call_ended").await;
        }
    }
    // Exactly one outcome per invitation reached Alice.
    settle().await;
    assert!(a.try_next().is_none());
}

#[tokio::test]
async fn two_devices_accepting_at_once_only_one_wins() {
    let server = start(patient()).await;
    let mut alice = server.raw_login("alice").await;
    let mut b1 = server.raw_login("bob").await;
    let mut b2 = server.raw_login("bob").await;
    alice
        .send(json!({"type": "invite", "ref": 1, "callee": "bob"}))
        .await;
    let id = alice.recv_type("invite_ok").await["invitation_id"].clone();
    b1.recv_type("invitation").await;
    b2.recv_type("invitation").await;
    b1.send(json!({"type": "accept", "ref": 5, "invitation_id": id}))
        .await;
    b2.send(json!({"type": "accept", "ref": 6, "invitation_id": id}))
        .await;
    let r1 = b1.recv().await;
    let r2 = b2.recv().await;
    let oks = [&r1, &r2].iter().filter(|r| r["type"] == "ok").count();
    assert_eq!(oks, 1, "exactly one device wins: {r1} {r2}");
    // The loser learns it was answered elsewhere, then its own accept is refused.
    let (loser, first) = if r1["type"] == "ok" {
        (&mut b2, r2)
    } else {
        (&mut b1, r1)
    };
    assert_eq!(
        (first["type"].as_str(), first["reason"].as_str()),
        (Some("failed"), Some("answered_elsewhere"))
    );
    let refused = loser.recv().await;
    assert_eq!(refused["code"], "already_ended", "{refused}");
    assert_eq!(alice.recv_type("accepted").await["invitation_id"], id);
}

#[tokio::test]
async fn cancel_racing_accept_both_sides_agree() {
    // Run the race many times with the two requests sent in either order.
    let server = start(patient()).await;
    let mut alice = server.raw_login("alice").await;
    let mut bob = server.raw_login("bob").await;
    let (mut accepted_rounds, mut canceled_rounds) = (0, 0);
    for round in 0..20u64 {
        alice
            .send(json!({"type": "invite", "ref": round * 10, "callee": "bob"}))
            .await;
        let id = alice.recv_type("invite_ok").await["invitation_id"].clone();
        bob.recv_type("invitation").await;
        bob.send(json!({"type": "ack", "invitation_id": id, "of": "invitation"}))
            .await;
        let cancel = json!({"type": "cancel", "ref": round * 10 + 1, "invitation_id": id});
        let accept = json!({"type": "accept", "ref": round * 10 + 2, "invitation_id": id});
        // Accept clearly first, cancel clearly first, or both at once.
        match round % 3 {
            0 => {
                bob.send(accept).await;
                settle().await;
                alice.send(cancel).await;
            }
            1 => {
                alice.send(cancel).await;
                settle().await;
                bob.send(accept).await;
            }
            _ => {
                bob.send(accept).await;
                alice.send(cancel).await;
            }
        }
        let mut alice_saw = vec![];
        let first = bob.recv().await;
        if first["type"] == "ok" {
            // Accept won: Alice is told it was accepted and her cancel is refused.
            accepted_rounds += 1;
            while alice_saw.len() < 2 {
                let m = alice.recv().await;
                if m["type"] != "received_by_peer" {
                    alice_saw.push(format!(
                        "{}{}",
                        m["type"].as_str().unwrap_or(""),
                        m["code"]
                            .as_str()
                            .map(|c| format!(":{c}"))
                            .unwrap_or_default()
                    ));
                }
            }
            alice_saw.sort();
            assert_eq!(
                alice_saw,
                ["accepted", "error:already_accepted"],
                "round {round}"
            );
            alice
                .send(json!({"type": "hangup", "ref": 999, "invitation_id": id}))
                .await;
            alice.recv_type("call_ended").await;
            bob.recv_type("call_ended").await;
        } else {
            // Cancel won: Bob hears canceled, acks it, and his accept is refused; Alice's cancel completes.
            canceled_rounds += 1;
            assert_eq!(first["type"], "canceled", "round {round}: {first}");
            bob.send(json!({"type": "ack", "invitation_id": id, "of": "canceled"}))
                .await;
            assert_eq!(bob.recv().await["code"], "already_ended", "round {round}");
            while alice_saw.len() < 2 {
                let m = alice.recv().await;
                if m["type"] != "received_by_peer" {
                    alice_saw.push(m["type"].as_str().unwrap_or("").to_owned());
                }
            }
            assert_eq!(alice_saw, ["ok", "canceled"], "round {round}");
        }
    }
    println!("cancel vs accept: accept won {accepted_rounds} rounds, cancel won {canceled_rounds}");
    // 7 rounds each put one request clearly first; the simultaneous ones may go either way.
    assert!(
        accepted_rounds >= 7 && canceled_rounds >= 7,
        "both orders were exercised: accept won {accepted_rounds}, cancel won {canceled_rounds}"
    );
}

#[tokio::test]
async fn hang_up_by_callee_and_from_another_device() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    let id = establish_call(&alice, &mut a, &bob, &mut b).await;
    // Bob's other device (which never saw the call) hangs it up, like `callinvite hangup ID`.
    let (bob_cli, _) = server.login("bob").await;
    bob_cli.hang_up(&id).await.unwrap();
    for events in [&mut a, &mut b] {
        match until(events, "call_ended").await {
            Event::CallEnded { reason, by, .. } => {
                assert_eq!(reason, CallEndReason::Hangup);
                assert_eq!(by.as_deref(), Some("bob"));
            }
            e => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn lost_connection_or_logout_ends_the_call_for_the_peer() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    for (logout, expected) in [
        (true, CallEndReason::PeerLoggedOut),
        (false, CallEndReason::PeerConnectionLost),
    ] {
        let (bob, mut b) = server.login("bob").await;
        establish_call(&alice, &mut a, &bob, &mut b).await;
        if logout {
            bob.logout().await.unwrap();
            match until(&mut b, "call_ended").await {
                Event::CallEnded { reason, .. } => assert_eq!(reason, CallEndReason::NotLoggedIn),
                e => panic!("{e:?}"),
            }
        } else {
            drop(bob);
            drop(b);
        }
        match until(&mut a, "call_ended").await {
            Event::CallEnded { reason, peer, .. } => {
                assert_eq!(reason, expected);
                assert_eq!(peer, "bob");
            }
            e => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn misuse_is_refused_and_changes_nothing() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    fn code<T>(r: Result<T, callinvite_client::ClientError>) -> ErrorCode {
        r.map(|_| ()).unwrap_err().code()
    }
    // Invalid arguments, caught before sending.
    assert_eq!(
        code(alice.create_local_invitation("alice")),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(alice.create_local_invitation("null")),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(alice.create_local_invitation("bad/id")),
        ErrorCode::InvalidArgument
    );
    let big = alice
        .create_local_invitation("bob")
        .unwrap()
        .with_content("x".repeat(8 * 1024 + 1));
    assert_eq!(
        code(alice.send_local_invitation(&big).await),
        ErrorCode::InvalidArgument
    );
    let exactly = alice
        .create_local_invitation("bob")
        .unwrap()
        .with_content("é".repeat(4 * 1024));
    let id = alice.send_local_invitation(&exactly).await.unwrap();
    assert_eq!(
        code(alice.send_local_invitation(&exactly).await),
        ErrorCode::AlreadySent
    );
    until(&mut b, "remote_invitation_received").await;
    assert_eq!(
        code(
            bob.accept_remote_invitation(&id, &"r".repeat(8 * 1024 + 1))
                .await
        ),
        ErrorCode::InvalidArgument
    );
    let unknown = callinvite_client::InvitationId("no-such-id".into());
    assert_eq!(
        code(bob.accept_remote_invitation(&unknown, "").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(alice.hang_up(&id).await),
        ErrorCode::InvalidArgument,
        "not in a call yet"
    );
    bob.accept_remote_invitation(&id, "").await.unwrap();
    assert_eq!(
        code(bob.accept_remote_invitation(&id, "").await),
        ErrorCode::AlreadyAccepted
    );
    assert_eq!(
        code(bob.refuse_remote_invitation(&id, "", false).await),
        ErrorCode::AlreadyAccepted
    );
    until(&mut a, "local_invitation_accepted").await;
    assert_eq!(
        code(alice.cancel_local_invitation(&exactly).await),
        ErrorCode::AlreadyAccepted
    );
    // None of that disturbed the call.
    alice.hang_up(&id).await.unwrap();
    until(&mut b, "call_ended").await;
}

#[tokio::test]
async fn server_checks_do_not_trust_the_client() {
    let server = start_default().await;
    let mut alice = server.raw_login("alice").await;
    let mut mallory = server.raw_login("mallory").await;
    let _bob = server.raw_login("bob").await;
    for (msg, code) in [
        (
            json!({"type": "invite", "ref": 1, "callee": "alice"}),
            "invalid_argument",
        ),
        (
            json!({"type": "invite", "ref": 2, "callee": "null"}),
            "invalid_argument",
        ),
        (
            json!({"type": "invite", "ref": 3, "callee": "bob", "content": "x".repeat(8193)}),
            "invalid_argument",
        ),
        (
            json!({"type": "query_presence", "ref": 4, "users": (0..65).map(|i| format!("u{i}")).collect::<Vec<_>>()}),
            "invalid_argument",
        ),
        (
            json!({"type": "query_presence", "ref": 5, "users": []}),
            "invalid_argument",
        ),
        (
            json!({"type": "login", "ref": 6, "user": "alice"}),
            "already_logged_in",
        ),
        (
            json!({"type": "cancel", "ref": 7, "invitation_id": "nope"}),
            "not_found",
        ),
    ] {
        alice.send(msg).await;
        let reply = alice.recv().await;
        assert_eq!(reply["code"], code, "{reply}");
    }
    // Mallory cannot act on Alice's invitation to Bob, and never sees it.
    alice
        .send(json!({"type": "invite", "ref": 10, "callee": "bob", "content": "secret"}))
        .await;
    let id = alice.recv_type("invite_ok").await["invitation_id"].clone();
    for (n, ty) in ["accept", "refuse", "cancel", "hangup"].iter().enumerate() {
        mallory
            .send(json!({"type": ty, "ref": n, "invitation_id": id}))
            .await;
        let reply = mallory.recv().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("not_found")),
            "{ty}: {reply}"
        );
    }
    // The server derives the sender from the session: a forged field changes nothing.
    mallory.send(json!({"type": "cancel", "ref": 20, "invitation_id": id, "user": "alice", "caller": "alice"})).await;
    assert_eq!(mallory.recv().await["code"], "not_found");
}

#[tokio::test]
async fn shutdown_ends_every_invitation_and_call_then_says_goodbye() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let shutdown = callinvite_server::CancellationToken::new();
    let server = tokio::spawn(callinvite_server::run(
        listener,
        Config::default(),
        shutdown.clone(),
    ));
    let login = |user: &'static str| {
        let url = url.clone();
        async move {
            let (c, mut e) =
                callinvite_client::Client::login(callinvite_client::LoginOptions::new(url, user))
                    .await
                    .unwrap();
            expect(&mut e, "connection_state_changed").await;
            (c, e)
        }
    };
    let (alice, mut a) = login("alice").await;
    let (_bob, mut b) = login("bob").await;
    let (carol, mut c) = login("carol").await;
    let (dave, mut d) = login("dave").await;
    // alice → bob rings; carol ↔ dave are in a call.
    alice
        .send_local_invitation(&alice.create_local_invitation("bob").unwrap())
        .await
        .unwrap();
    until(&mut b, "remote_invitation_received").await;
    establish_call(&carol, &mut c, &dave, &mut d).await;

    shutdown.cancel();
    for (events, name) in [
        (&mut a, "local_invitation_failure"),
        (&mut b, "remote_invitation_failure"),
    ] {
        match until(events, name).await {
            Event::LocalInvitationFailure { reason, .. }
            | Event::RemoteInvitationFailure { reason, .. } => {
                assert_eq!(reason, FailureReason::ServerShutdown)
            }
            e => panic!("{e:?}"),
        }
    }
    for events in [&mut c, &mut d] {
        match until(events, "call_ended").await {
            Event::CallEnded { reason, .. } => assert_eq!(reason, CallEndReason::ServerShutdown),
            e => panic!("{e:?}"),
        }
    }
    for events in [&mut a, &mut b, &mut c, &mut d] {
        match until(events, "connection_state_changed").await {
            Event::ConnectionStateChanged { reason, .. } => {
                assert_eq!(reason, callinvite_client::ConnectionReason::ServerShutdown)
            }
            e => panic!("{e:?}"),
        }
    }
    // The server itself finishes (a hang here fails the test through the bound).
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}

fn candidate(n: u32) -> callinvite_protocol::MediaSignal {
    callinvite_protocol::MediaSignal::Candidate {
        candidate: format!(
            "candidate:{n} 1 udp 2130706431 127.0.0.1 {} typ host",
            5000 + n
        ),
    }
}

#[tokio::test]
async fn media_signals_reach_only_the_other_device_of_the_call() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    let (bob2, mut b2) = server.login("bob").await;
    let (mallory, _m) = server.login("mallory").await;
    let id = establish_call(&alice, &mut a, &bob, &mut b).await;

    let offer = callinvite_protocol::MediaSignal::Offer {
        sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
            .into(),
    };
    alice.send_media_signal(&id, offer.clone()).await.unwrap();
    bob.send_media_signal(&id, candidate(1)).await.unwrap();
    match until(&mut b, "media_signal").await {
        Event::MediaSignal {
            invitation_id,
            from,
            signal,
        } => {
            assert_eq!(
                (invitation_id, from.as_str(), signal),
                (id.clone(), "alice", offer)
            );
        }
        e => panic!("{e:?}"),
    }
    match until(&mut a, "media_signal").await {
        Event::MediaSignal { from, signal, .. } => {
            assert_eq!((from.as_str(), signal), ("bob", candidate(1)));
        }
        e => panic!("{e:?}"),
    }
    // bob's other device rang, but is not in the call; mallory is no party.
    let err = bob2.send_media_signal(&id, candidate(2)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotInCall, "{err}");
    let err = mallory
        .send_media_signal(&id, candidate(3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    // A malformed signal is refused by the client library before it is sent,
    // and by the server when sent raw (below).
    let err = alice
        .send_media_signal(
            &id,
            callinvite_protocol::MediaSignal::Offer {
                sdp: "hello".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");

    alice.hang_up(&id).await.unwrap();
    until(&mut b, "call_ended").await;
    let err = bob.send_media_signal(&id, candidate(4)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyEnded, "{err}");
    settle().await;
    // Nothing else reached bob's second device but the invitation's own events.
    while let Some(e) = b2.try_next() {
        assert!(!matches!(e, Event::MediaSignal { .. }), "{e:?}");
    }
}

#[tokio::test]
async fn bad_media_signals_are_answered_and_the_call_goes_on() {
    let server = start(patient()).await;
    let (alice, mut a) = server.login("alice").await;
    let mut bob = server.raw_login("bob").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    bob.recv_type("invitation").await;
    bob.send(json!({"type":"ack","invitation_id":id,"of":"invitation"}))
        .await;
    bob.send(json!({"type":"accept","ref":1,"invitation_id":id}))
        .await;
    assert_eq!(bob.recv_type("ok").await["ref"], 1);
    until(&mut a, "local_invitation_accepted").await;

    // An oversized SDP, a non-SDP offer, a candidate with a line break: each
    // answered invalid_argument with a reason, none relayed.
    let huge = format!("v=0\r\nm=audio 9 RTP/AVP 0\r\n{}", "a=x\r\n".repeat(4000));
    for (n, signal) in [
        json!({"kind":"offer","sdp":huge}),
        json!({"kind":"offer","sdp":"hello"}),
        json!({"kind":"candidate","candidate":"candidate:1\r\na=injected"}),
    ]
    .into_iter()
    .enumerate()
    {
        let req = 10 + n as u64;
        bob.send(json!({"type":"media","ref":req,"invitation_id":id,"signal":signal}))
            .await;
        let reply = bob.recv_type("error").await;
        assert_eq!(
            (reply["ref"].as_u64(), reply["code"].as_str()),
            (Some(req), Some("invalid_argument")),
            "{reply}"
        );
        assert!(!reply["message"].as_str().unwrap_or("").is_empty());
    }
    // An unknown kind is a bad message; a signal for an unknown call is not_found.
    bob.send(json!({"type":"media","ref":20,"invitation_id":id,"signal":{"kind":"dance"}}))
        .await;
    assert_eq!(bob.recv_type("error").await["code"], "bad_message");
    bob.send(json!({"type":"media","ref":21,"invitation_id":"nope","signal":{"kind":"end_of_candidates"}})).await;
    assert_eq!(bob.recv_type("error").await["code"], "not_found");
    // A candidate flood is cut off at the per-call budget, with rate_limited.
    let limit = callinvite_protocol::media::MAX_SIGNALS_PER_CALL as u64;
    let mut refused = 0;
    for i in 0..limit + 5 {
        let c = format!("candidate:{i} 1 udp 1 127.0.0.1 9 typ host");
        bob.send(json!({"type":"media","ref":100 + i,"invitation_id":id,"signal":{"kind":"candidate","candidate":c}})).await;
        // Stay under the per-connection message rate.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    let mut oks = 0;
    while oks + refused < limit + 5 {
        let m = bob.recv().await;
        match m["type"].as_str() {
            Some("ok") => oks += 1,
            Some("error") => {
                assert_eq!(m["code"], "rate_limited", "{m}");
                refused += 1;
            }
            _ => {}
        }
    }
    assert_eq!((oks, refused), (limit, 5));
    // The call is still up: alice's hang-up ends it normally.
    alice.hang_up(&id).await.unwrap();
    assert_eq!(bob.recv_type("call_ended").await["by"], "alice");
}

#[tokio::test]
async fn login_hands_out_stun_and_turn_servers_with_fresh_credentials() {
    let mut config = Config::default();
    config.ice.stun_urls = vec!["stun:127.0.0.1:3478".into()];
    config.ice.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
    config.ice.turn_secret = Some(b"a shared secret for coturn".to_vec());
    config.ice.turn_ttl = Duration::from_secs(600);
    let server = start(config).await;
    let (alice, _a) = server.login("alice").await;
    let servers = &alice.session().ice_servers;
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_eq!(servers[0].urls, vec!["stun:127.0.0.1:3478".to_string()]);
    let turn = &servers[1];
    let username = turn.username.clone().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry > now && expiry <= now + 601,
        "expiry {expiry}, now {now}"
    );
    assert_eq!(
        turn.credential.as_deref(),
        Some(
            callinvite_server::ice::turn_password(b"a shared secret for coturn", &username)
                .as_str()
        )
    );
    // Asked again, the servers come with a credential of their own.
    let fresh = alice.ice_servers().await.unwrap();
    assert_eq!(fresh.len(), 2);
    assert_eq!(
        fresh[1].username.as_deref().map(|u| u.ends_with(":alice")),
        Some(true)
    );
}
