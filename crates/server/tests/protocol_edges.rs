//! Login, tokens, presence, heartbeat and bad input, against a real server on loopback.

mod common;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use callinvite_client::{Client, ClientError, ErrorCode, Event, LoginOptions};
use callinvite_server::{auth, Config};

use common::*;

#[tokio::test]
async fn login_errors_are_distinct() {
    let secret = b"0123456789abcdef-test".to_vec();
    // Many attempts for one user id in a row: the login rate is not under test here.
    let server = start(Config {
        secret: Some(secret.clone()),
        logins_per_second: 100,
        ..Config::default()
    })
    .await;
    let login = |user: &str, token: Option<String>| {
        let mut o = LoginOptions::new(&server.url, user);
        o.token = token;
        Client::login(o)
    };
    let code = |r: Result<(Client, callinvite_client::EventStream), ClientError>| match r {
        Err(ClientError::Login { code, .. }) | Err(ClientError::Api { code, .. }) => code,
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("login should fail"),
    };
    assert_eq!(
        code(login("alice", None).await),
        ErrorCode::InvalidToken,
        "missing token"
    );
    assert_eq!(
        code(login("alice", Some("garbage".into())).await),
        ErrorCode::InvalidToken
    );
    let bobs = auth::mint(&secret, "bob", Duration::from_secs(60));
    assert_eq!(
        code(login("alice", Some(bobs)).await),
        ErrorCode::InvalidToken,
        "another user's token"
    );
    let forged = auth::mint(b"not-the-server-secret", "alice", Duration::from_secs(60));
    assert_eq!(
        code(login("alice", Some(forged)).await),
        ErrorCode::InvalidToken
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = auth::mint_with_expiry(&secret, "alice", now - 5);
    assert_eq!(
        code(login("alice", Some(expired)).await),
        ErrorCode::TokenExpired
    );
    assert_eq!(code(login("null", None).await), ErrorCode::InvalidArgument);
    // The raw server check for a bad id (the client library checks first).
    let mut raw = server.raw().await;
    raw.send(json!({"type": "login", "ref": 1, "user": " lead"}))
        .await;
    assert_eq!(raw.recv().await["code"], "invalid_argument");

    let good = auth::mint(&secret, "alice", Duration::from_secs(60));
    let (client, _events) = login("alice", Some(good))
        .await
        .expect("valid token logs in");
    assert_eq!(
        client.session().auth,
        callinvite_protocol::wire::AuthMode::Token
    );
}

#[tokio::test]
async fn too_many_logins_per_second_are_refused() {
    let server = start(Config {
        logins_per_second: 3,
        ..Config::default()
    })
    .await;
    let mut clients = vec![];
    for _ in 0..3 {
        clients.push(server.login("alice").await);
    }
    match Client::login(LoginOptions::new(&server.url, "alice")).await {
        Err(ClientError::Login { code, .. }) => assert_eq!(code, ErrorCode::TooOften),
        other => panic!("expected too_often, got {:?}", other.map(|_| ())),
    }
    // Other users are not affected.
    server.login("bob").await;
    // And once the second is over alice may log in again: tried until she
    // can (refused logins do not count against her).
    let again = callinvite_test_support::eventually(
        "alice may log in again",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            match Client::login(LoginOptions::new(&server.url, "alice")).await {
                Ok(logged_in) => Some(logged_in),
                Err(ClientError::Login {
                    code: ErrorCode::TooOften,
                    ..
                }) => None,
                Err(e) => panic!("alice's login failed otherwise: {e}"),
            }
        },
    )
    .await;
    clients.push(again);
}

#[tokio::test]
async fn presence_query_subscribe_and_changes() {
    let server = start_default().await;
    let (alice, mut a) = server.login("alice").await;
    let entries = alice.query_presence(&["alice", "carol"]).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.user.as_str(), e.online))
            .collect::<Vec<_>>(),
        [("alice", true), ("carol", false)]
    );
    let snapshot = alice.subscribe_presence(&["carol", "dave"]).await.unwrap();
    assert!(snapshot.iter().all(|e| !e.online));
    let (carol1, _c1) = server.login("carol").await;
    assert_eq!(
        next(&mut a).await,
        Event::PresenceChanged {
            user: "carol".into(),
            online: true
        }
    );
    // A second device changes nothing: carol was already online.
    let (carol2, _c2) = server.login("carol").await;
    carol1.logout().await.unwrap();
    // Still online through the second device; offline when it leaves.
    carol2.logout().await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Event::PresenceChanged {
            user: "carol".into(),
            online: false
        }
    );
    // Unsubscribed users are no longer reported.
    alice.unsubscribe_presence(&["carol"]).await.unwrap();
    let (_dave, _d) = server.login("dave").await;
    assert_eq!(
        next(&mut a).await,
        Event::PresenceChanged {
            user: "dave".into(),
            online: true
        }
    );
    let (_carol3, _c3) = server.login("carol").await;
    flush_io().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.try_next(), None);
}

#[tokio::test]
async fn presence_limits() {
    let server = start_default().await;
    let (alice, _a) = server.login("alice").await;
    let ids: Vec<String> = (0..65).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(alice.query_presence(&refs[..64]).await.is_ok());
    assert_eq!(
        alice.query_presence(&refs).await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        alice.query_presence(&["bad/id"]).await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    let many: Vec<String> = (0..513).map(|i| format!("u{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(alice.subscribe_presence(&many[..512]).await.is_ok());
    // Re-subscribing to the same ids does not count twice; one more does.
    assert!(alice.subscribe_presence(&many[..10]).await.is_ok());
    assert_eq!(
        alice
            .subscribe_presence(&many[512..])
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn bad_frames_get_clear_errors_and_the_connection_survives() {
    let server = start_default().await;
    let mut raw = server.raw().await;
    // Before login.
    raw.send(json!({"type": "invite", "ref": 1, "callee": "bob"}))
        .await;
    let r = raw.recv().await;
    assert_eq!(
        (r["code"].as_str(), r["ref"].as_u64()),
        (Some("not_logged_in"), Some(1))
    );
    raw.send_text("{not json").await;
    assert_eq!(raw.recv().await["code"], "bad_message");
    raw.send_text("[1,2]").await;
    assert_eq!(raw.recv().await["code"], "bad_message");
    raw.send(json!({"ref": 2})).await;
    assert_eq!(raw.recv().await["code"], "bad_message");
    raw.send(json!({"type": "dance", "ref": 3})).await;
    let r = raw.recv().await;
    assert_eq!(
        (r["code"].as_str(), r["ref"].as_u64()),
        (Some("unknown_type"), Some(3))
    );
    raw.send(json!({"type": "login", "ref": 4, "user": 42}))
        .await;
    let r = raw.recv().await;
    assert_eq!(
        (r["code"].as_str(), r["ref"].as_u64()),
        (Some("bad_message"), Some(4))
    );
    raw.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(raw.recv().await["code"], "binary_not_supported");
    // After all that, the same connection still logs in and works.
    raw.send(json!({"type": "login", "ref": 5, "user": "alice"}))
        .await;
    assert_eq!(raw.recv().await["type"], "login_ok");
    raw.send(json!({"type": "query_presence", "ref": 6, "users": ["alice"]}))
        .await;
    assert_eq!(raw.recv().await["users"][0]["online"], true);
}

#[tokio::test]
async fn oversize_frame_closes_with_1009_and_others_are_unaffected() {
    let server = start(Config {
        max_frame_bytes: 16 * 1024,
        ..Config::default()
    })
    .await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    let mut raw = server.raw_login("mallory").await;
    let huge =
        json!({"type": "invite", "ref": 1, "callee": "bob", "content": "x".repeat(20 * 1024)});
    raw.send(huge).await;
    assert_eq!(raw.closed().await, Some(1009));
    // Alice and Bob still call each other.
    establish_call(&alice, &mut a, &bob, &mut b).await;
}

#[tokio::test]
async fn default_frame_limit_is_64_kib() {
    let server = start_default().await;
    let mut ok = server.raw_login("alice").await;
    // Just under the limit: a normal (if odd) frame gets a normal answer.
    let pad = "p".repeat(60 * 1024);
    ok.send(json!({"type": "query_presence", "ref": 1, "users": ["bob"], "pad": pad}))
        .await;
    assert_eq!(ok.recv().await["type"], "presence");
    let mut big = server.raw_login("bob").await;
    big.send(
        json!({"type": "query_presence", "ref": 1, "users": ["x"], "pad": "p".repeat(65 * 1024)}),
    )
    .await;
    assert_eq!(big.closed().await, Some(1009));
}

/// The server reads in small chunks (an idle connection keeps its read
/// buffer, so it is 512 bytes): the largest content and response, in
/// multi-byte UTF-8 that chunks split mid-character, arrive whole, several
/// back to back on one connection.
#[tokio::test]
async fn the_largest_content_and_response_arrive_whole() {
    use callinvite_protocol::limits::{MAX_CONTENT_BYTES, MAX_RESPONSE_BYTES};
    let server = start_default().await;
    let mut alice = server.raw_login("alice").await;
    let mut bob = server.raw_login("bob").await;
    // 3-byte characters with a 1-byte one in front: every 512-byte chunk
    // boundary falls inside a character somewhere.
    let text = |len: usize, salt: char| {
        let mut s = String::from(salt);
        while s.len() + '€'.len_utf8() <= len {
            s.push('€');
        }
        while s.len() < len {
            s.push('x');
        }
        s
    };
    for round in 0..4u64 {
        let salt = char::from(b'a' + round as u8);
        let content = text(MAX_CONTENT_BYTES, salt);
        let response = text(MAX_RESPONSE_BYTES, salt);
        assert_eq!(
            (content.len(), response.len()),
            (MAX_CONTENT_BYTES, MAX_RESPONSE_BYTES)
        );
        alice
            .send(json!({"type": "invite", "ref": 10 + round, "callee": "bob", "content": content}))
            .await;
        let inv = bob.recv_type("invitation").await;
        assert_eq!(
            inv["content"].as_str(),
            Some(content.as_str()),
            "round {round}"
        );
        let id = inv["invitation_id"].clone();
        bob.send(
            json!({"type": "accept", "ref": 10 + round, "invitation_id": id, "response": response}),
        )
        .await;
        let accepted = alice.recv_type("accepted").await;
        assert_eq!(
            accepted["response"].as_str(),
            Some(response.as_str()),
            "round {round}"
        );
        alice
            .send(json!({"type": "hangup", "ref": 20 + round, "invitation_id": id}))
            .await;
        alice.recv_type("call_ended").await;
        bob.recv_type("call_ended").await;
    }
}

#[tokio::test]
async fn dead_connection_is_dropped_by_the_heartbeat() {
    let server = start(Config {
        heartbeat: Duration::from_secs(15),
        ..Config::default()
    })
    .await;
    let (alice, mut a) = server.login("alice").await;
    alice.subscribe_presence(&["bob"]).await.unwrap();
    // A client that logs in, then never reads again (so never answers pings).
    let _bob = server.raw_login("bob").await;
    assert_eq!(
        next(&mut a).await,
        Event::PresenceChanged {
            user: "bob".into(),
            online: true
        }
    );
    let (e, waited) = virtual_until(&mut a, "presence_changed").await;
    assert_eq!(
        e,
        Event::PresenceChanged {
            user: "bob".into(),
            online: false
        }
    );
    // Offline once the heartbeat window (15 s) and then the resume grace window (10 s) have passed.
    assert!(
        waited >= Duration::from_secs(25) && waited <= Duration::from_secs(26),
        "{waited:?}"
    );
    // Alice, whose client answers pings, is still connected.
    assert!(alice.query_presence(&["alice"]).await.unwrap()[0].online);
}

#[tokio::test]
async fn logout_closes_the_connection_and_nothing_more_is_read() {
    let server = start_default().await;
    let (watcher, mut w) = server.login("watcher").await;
    watcher.subscribe_presence(&["alice"]).await.unwrap();
    let mut raw = server.raw_login("alice").await;
    assert_eq!(
        next(&mut w).await,
        Event::PresenceChanged {
            user: "alice".into(),
            online: true
        }
    );
    raw.send(json!({"type": "logout", "ref": 1})).await;
    // A login sent right behind the logout is not processed: the session is over.
    raw.send(json!({"type": "login", "ref": 2, "user": "alice"}))
        .await;
    assert_eq!(raw.recv().await, json!({"seq": 1, "type": "ok", "ref": 1}));
    assert_eq!(raw.closed().await, Some(1000));
    assert_eq!(
        next(&mut w).await,
        Event::PresenceChanged {
            user: "alice".into(),
            online: false
        }
    );
    flush_io().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.try_next(), None, "alice did not come back online");
}

#[tokio::test]
async fn a_client_that_does_not_keep_up_is_closed_with_1008() {
    let server = start(Config {
        outbound_queue: 1,
        heartbeat: Duration::from_secs(3600),
        // A client closed as too slow may still resume; offline once this passes.
        resume_grace: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let (alice, mut a) = server.login("alice").await;
    alice.subscribe_presence(&["slow"]).await.unwrap();
    let mut slow = server.raw_login("slow").await;
    until(&mut a, "presence_changed").await;
    // A burst of requests whose replies pile up faster than a queue of one drains.
    let burst: String = (0..50)
        .map(|i| format!("{{\"type\":\"query_presence\",\"ref\":{i},\"users\":[\"alice\"]}}\n"))
        .collect();
    for line in burst.lines() {
        slow.ws.feed(Message::text(line.to_owned())).await.unwrap();
    }
    slow.ws.flush().await.unwrap();
    assert_eq!(slow.closed().await, Some(1008));
    assert_eq!(
        until(&mut a, "presence_changed").await,
        Event::PresenceChanged {
            user: "slow".into(),
            online: false
        }
    );
    // Everyone else carries on.
    assert!(alice.query_presence(&["alice"]).await.unwrap()[0].online);
}

#[tokio::test]
async fn flood_is_rate_limited_per_connection_and_others_are_unaffected() {
    let server = start(Config {
        messages_per_second: 20,
        ..Config::default()
    })
    .await;
    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    let mut flood = server.raw_login("mallory").await;
    for i in 0..200u64 {
        flood
            .ws
            .feed(Message::text(
                json!({"type": "query_presence", "ref": i, "users": ["alice"]}).to_string(),
            ))
            .await
            .unwrap();
    }
    flood.ws.flush().await.unwrap();
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..200 {
        let r = flood.recv().await;
        match (r["type"].as_str(), r["code"].as_str()) {
            (Some("presence"), _) => answered += 1,
            (Some("error"), Some("rate_limited")) => {
                assert!(r["ref"].is_u64(), "the refusal names the request: {r}");
                limited += 1
            }
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    println!("flood of 200: {answered} answered, {limited} rate_limited");
    assert_eq!(answered + limited, 200, "every message got an answer");
    // The bucket holds 20 per second and the login took one of them.
    assert!(
        answered >= 19 && limited >= 100,
        "{answered} answered, {limited} limited"
    );
    // Meanwhile alice and bob call each other as usual.
    establish_call(&alice, &mut a, &bob, &mut b).await;
}

#[tokio::test]
async fn devices_per_user_are_limited() {
    let server = start(Config {
        max_devices_per_user: 2,
        ..Config::default()
    })
    .await;
    let _d1 = server.login("alice").await;
    let _d2 = server.login("alice").await;
    match Client::login(LoginOptions::new(&server.url, "alice")).await {
        Err(ClientError::Login { code, message }) => {
            assert_eq!(code, ErrorCode::TooManyDevices);
            assert!(message.contains("log one out"), "{message}");
        }
        other => panic!("expected too_many_devices, got {:?}", other.map(|_| ())),
    }
    server.login("bob").await;
}

#[tokio::test]
async fn ringing_invitations_per_user_are_limited() {
    let server = start(Config {
        max_outgoing_invitations: 2,
        ..Config::default()
    })
    .await;
    let (alice, _a) = server.login("alice").await;
    let first = alice.create_local_invitation("u1").unwrap();
    alice.send_local_invitation(&first).await.unwrap();
    alice
        .send_local_invitation(&alice.create_local_invitation("u2").unwrap())
        .await
        .unwrap();
    let err = alice
        .send_local_invitation(&alice.create_local_invitation("u3").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooManyInvitations);
    // Another user is not affected; and once one of alice's ends, she may call again.
    let (bob, _b) = server.login("bob").await;
    bob.send_local_invitation(&bob.create_local_invitation("u1").unwrap())
        .await
        .unwrap();
    alice.cancel_local_invitation(&first).await.unwrap();
    alice
        .send_local_invitation(&alice.create_local_invitation("u3").unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn slow_login_and_slow_handshake_do_not_hold_a_slot() {
    let server = start(Config {
        login_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    // Connected, never logs in: closed with 1008.
    let mut idle = server.raw().await;
    assert_eq!(idle.closed().await, Some(1008));
    // TCP only, never finishes the WebSocket handshake: the server hangs up.
    let addr = server.url.trim_start_matches("ws://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await
    .expect("the server closed the half-open connection")
    .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    // A prompt client still gets in.
    server.login("alice").await;
}

#[tokio::test]
async fn token_guessing_is_limited_per_connection_and_address_not_per_user_id() {
    let secret = b"0123456789abcdef-rate".to_vec();
    let server = start(Config {
        secret: Some(secret.clone()),
        logins_per_second: 3,
        failed_logins_per_connection: 2,
        failed_logins_per_address: 3,
        ..Config::default()
    })
    .await;
    let guess =
        |i: u64| json!({"type": "login", "ref": i, "user": "alice", "token": format!("guess-{i}")});
    // One connection: two failures, then it is closed.
    let mut a = server.raw().await;
    a.send(guess(1)).await;
    assert_eq!(a.recv().await["code"], "invalid_token");
    a.send(guess(2)).await;
    assert_eq!(a.recv().await["code"], "invalid_token");
    assert_eq!(a.closed().await, Some(1008));
    // The address: a third failure is still answered, the fourth is `too_often` (and closed).
    let mut b = server.raw().await;
    b.send(guess(3)).await;
    assert_eq!(b.recv().await["code"], "invalid_token");
    b.send(guess(4)).await;
    let limited = b.recv().await;
    assert_eq!(limited["code"], "too_often", "{limited}");
    assert!(
        limited["message"]
            .as_str()
            .unwrap()
            .contains("failed logins from your address"),
        "{limited}"
    );
    assert_eq!(b.closed().await, Some(1008));
    // None of that was charged to alice: her right token gets in, even from this address.
    let mut alice = server.raw().await;
    alice.send(json!({"type": "login", "ref": 9, "user": "alice", "token": auth::mint(&secret, "alice", Duration::from_secs(60))})).await;
    assert_eq!(alice.recv().await["type"], "login_ok");
}
