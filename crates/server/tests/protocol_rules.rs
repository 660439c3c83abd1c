//! Rules of docs/PROTOCOL.md that a client written from the document alone
//! could not tell, each checked against a real server on loopback.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use callinvite_server::Config;
use common::*;

/// Logs in on a raw connection with `ref` 1; returns it with the session secret.
async fn raw_session(server: &TestServer, user: &str) -> (Raw, String) {
    let mut raw = server.raw().await;
    raw.send(json!({"type": "login", "ref": 1, "user": user}))
        .await;
    let ok = raw.recv().await;
    assert_eq!(ok["type"], "login_ok", "{ok}");
    let session = ok["session"].as_str().expect("a session secret").to_owned();
    (raw, session)
}

async fn resume(server: &TestServer, session: &str, last_seq: u64) -> (Raw, Value) {
    let mut raw = server.raw().await;
    raw.send(json!({"type": "resume", "ref": 9, "session": session, "last_seq": last_seq}))
        .await;
    let answer = raw.recv().await;
    (raw, answer)
}

fn error(v: &Value) -> (&str, &str) {
    assert_eq!(v["type"], "error", "{v}");
    (
        v["code"].as_str().unwrap_or_default(),
        v["message"].as_str().unwrap_or_default(),
    )
}

/// §1.2: `ack` and `seen` get no reply once logged in, but before login they
/// are answered `not_logged_in` like any other message, without a `ref`
/// (a `ref` field on them is ignored).
#[tokio::test]
async fn ack_and_seen_before_login_get_not_logged_in_without_ref() {
    let server = start_default().await;
    let mut raw = server.raw().await;
    raw.send(json!({"type": "ack", "ref": 3, "invitation_id": "x", "of": "invitation"}))
        .await;
    let a = raw.recv().await;
    assert_eq!(error(&a), ("not_logged_in", "log in first"));
    assert!(a.get("ref").is_none(), "{a}");
    raw.send(json!({"type": "seen", "seq": 1})).await;
    let s = raw.recv().await;
    assert_eq!(error(&s).0, "not_logged_in");
    assert!(s.get("ref").is_none() && s.get("seq").is_none(), "{s}");
}

/// §1.2: `null` in an optional field is the same as leaving it out for `ref`
/// and `token`; `content`, `response` and `busy` must be left out instead
/// (`null` there is `bad_message`).
#[tokio::test]
async fn null_is_absent_for_ref_and_token_and_bad_elsewhere() {
    let server = start_default().await;
    let mut raw = server.raw().await;
    raw.send(json!({"type": "login", "ref": null, "user": "alice", "token": null}))
        .await;
    let ok = raw.recv().await;
    assert_eq!(ok["type"], "login_ok", "{ok}");
    assert!(ok.get("ref").is_none(), "{ok}");
    raw.send(json!({"type": "invite", "ref": 2, "callee": "bob", "content": null}))
        .await;
    let e = raw.recv().await;
    assert_eq!(error(&e).0, "bad_message");
    assert_eq!(e["ref"], 2);
    raw.send(json!({"type": "invite", "ref": null, "callee": "bob"}))
        .await;
    assert_eq!(error(&raw.recv().await).0, "bad_message");
}

/// §1.2, §4b: every text frame counts toward the message rate, `ack`, `seen`
/// and `logout` included. A frame over the rate is dropped and answered
/// `rate_limited` (with its `ref` if it has one) — even a `seen` or `ack` —
/// so a dropped `logout` leaves the connection logged in.
#[tokio::test]
async fn ack_seen_and_logout_count_toward_the_rate_limit() {
    let server = start(Config {
        messages_per_second: 1,
        ..Config::default()
    })
    .await;
    let mut raw = server.raw_login("alice").await; // the login took the only token
    raw.send(json!({"type": "seen", "seq": 0})).await;
    let s = raw.recv().await;
    assert_eq!(
        error(&s),
        (
            "rate_limited",
            "more than 1 messages per second; this one was dropped — slow down"
        )
    );
    assert!(s.get("ref").is_none() && s.get("seq").is_none(), "{s}");
    raw.send(json!({"type": "ack", "invitation_id": "x", "of": "invitation"}))
        .await;
    assert_eq!(error(&raw.recv().await).0, "rate_limited");
    raw.send(json!({"type": "logout", "ref": 5})).await;
    let l = raw.recv().await;
    assert_eq!(error(&l).0, "rate_limited");
    assert_eq!(l["ref"], 5);
    // The logout was dropped: the connection is still logged in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    raw.send(json!({"type": "query_presence", "ref": 6, "users": ["alice"]}))
        .await;
    let p = raw.recv().await;
    assert_eq!(p["type"], "presence", "{p}");
    assert_eq!(p["seq"], 1);
}

/// §1.8: a `seen` above the last `seq` sent is not an error; it acknowledges
/// everything sent so far and nothing sent later.
#[tokio::test]
async fn seen_above_the_last_seq_acknowledges_only_what_was_sent() {
    let server = start_default().await;
    let (mut bob, session) = raw_session(&server, "bob").await;
    bob.send(json!({"type": "query_presence", "ref": 2, "users": ["bob"]}))
        .await;
    assert_eq!(bob.recv().await["seq"], 1);
    bob.send(json!({"type": "seen", "seq": 100})).await;
    bob.send(json!({"type": "query_presence", "ref": 3, "users": ["bob"]}))
        .await;
    let second = bob.recv().await;
    assert_eq!(
        (second["seq"].as_u64(), second["ref"].as_u64()),
        (Some(2), Some(3))
    );
    drop(bob);
    settle().await;
    // seq 2 is still kept for a resume; seq 1 is not.
    let (_, too_far) = resume(&server, &session, 0).await;
    assert_eq!(
        error(&too_far),
        (
            "session_expired",
            "1 messages of this session are no longer kept; log in again"
        )
    );
    let (_, gone) = resume(&server, &session, 1).await;
    assert_eq!(
        error(&gone).0,
        "session_expired",
        "too far behind ends the session"
    );
}

/// §1.8: the resume error texts, and `last_seq` above the session's `seq`
/// keeps the session.
#[tokio::test]
async fn resume_errors_have_the_documented_texts() {
    let server = start_default().await;
    let (_, unknown) = resume(&server, "no-such-session", 0).await;
    assert_eq!(
        error(&unknown),
        (
            "session_expired",
            "no such session here (its grace window passed, it logged out, or the server restarted); log in again"
        )
    );
    assert_eq!(unknown["ref"], 9);
    let (bob, session) = raw_session(&server, "bob").await;
    drop(bob);
    settle().await;
    let (_, ahead) = resume(&server, &session, 5).await;
    assert_eq!(
        error(&ahead),
        (
            "invalid_argument",
            "last_seq 5 is ahead of this session's 0"
        )
    );
    let (_, resumed) = resume(&server, &session, 0).await;
    assert_eq!(
        resumed["type"], "resumed",
        "the session was kept: {resumed}"
    );
    assert_eq!(resumed["ref"], 9);
    assert_eq!(
        resumed["last_ref"], 1,
        "the login's ref counts, the resume's not"
    );
    assert_eq!(resumed["seq"], 0);
}

/// §3.2, §4b: the `too_many_invitations` text; it is checked after the
/// other `invite` validations.
#[tokio::test]
async fn too_many_invitations_has_the_documented_text_and_comes_last() {
    let server = start(Config {
        max_outgoing_invitations: 1,
        ..Config::default()
    })
    .await;
    let mut alice = server.raw_login("alice").await;
    alice
        .send(json!({"type": "invite", "ref": 1, "callee": "bob"}))
        .await;
    assert_eq!(alice.recv().await["type"], "invite_ok");
    alice
        .send(json!({"type": "invite", "ref": 2, "callee": "alice"}))
        .await;
    assert_eq!(
        error(&alice.recv().await),
        ("invalid_argument", "you cannot call yourself")
    );
    alice
        .send(json!({"type": "invite", "ref": 3, "callee": "carol"}))
        .await;
    let e = alice.recv().await;
    assert_eq!(
        error(&e),
        (
            "too_many_invitations",
            "you already have 1 invitations ringing (the limit); cancel one or wait"
        )
    );
    assert_eq!(e["ref"], 3);
}

/// §4.2: a device may subscribe to its own user; the snapshot says online,
/// and nothing follows while the device exists (the user cannot go offline).
#[tokio::test]
async fn subscribing_to_yourself_is_allowed() {
    let server = start_default().await;
    let mut alice = server.raw_login("alice").await;
    alice
        .send(json!({"type": "subscribe_presence", "ref": 1, "users": ["alice"]}))
        .await;
    let p = alice.recv().await;
    assert_eq!(p["type"], "presence", "{p}");
    assert_eq!(p["users"], json!([{"user": "alice", "online": true}]));
    // Another device of alice comes and goes: alice stays online throughout.
    let mut other = server.raw_login("alice").await;
    other.send(json!({"type": "logout", "ref": 1})).await;
    assert_eq!(other.closed().await, Some(1000));
    settle().await;
    alice
        .send(json!({"type": "query_presence", "ref": 2, "users": ["alice"]}))
        .await;
    let next = alice.recv().await;
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_u64()),
        (Some("presence"), Some(2))
    );
}

/// §2.7: whether a call is missed is decided when it ends: one that rang on
/// bob's only device, which then went away, and was canceled afterwards is
/// a missed call. A login with no missed calls gets no `missed_calls`.
#[tokio::test]
async fn a_call_that_rang_then_lost_its_only_device_is_missed() {
    let server = start_default().await;
    let mut carol = server.raw_login("carol").await;
    carol
        .send(json!({"type": "query_presence", "ref": 1, "users": ["carol"]}))
        .await;
    let first = carol.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["seq"].as_u64()),
        (Some("presence"), Some(1)),
        "no empty missed_calls: {first}"
    );

    let mut alice = server.raw_login("alice").await;
    let mut bob = server.raw_login("bob").await;
    alice
        .send(json!({"type": "invite", "ref": 1, "callee": "bob", "content": "c"}))
        .await;
    let id = alice.recv_type("invite_ok").await["invitation_id"].clone();
    assert_eq!(bob.recv_type("invitation").await["invitation_id"], id);
    bob.send(json!({"type": "ack", "invitation_id": id, "of": "invitation"}))
        .await;
    alice.recv_type("received_by_peer").await;
    bob.send(json!({"type": "logout", "ref": 2})).await;
    assert_eq!(bob.closed().await, Some(1000));
    settle().await;
    alice
        .send(json!({"type": "cancel", "ref": 2, "invitation_id": id}))
        .await;
    alice.recv_type("canceled").await;

    let mut bob = server.raw_login("bob").await;
    let missed = bob.recv().await;
    assert_eq!(missed["type"], "missed_calls", "{missed}");
    assert_eq!(missed["calls"][0]["invitation_id"], id);
    assert_eq!(missed["calls"][0]["reason"], "canceled");
}

async fn login(raw: &mut Raw, user: &str, token: &str) -> (String, String) {
    raw.send(json!({"type": "login", "user": user, "token": token}))
        .await;
    let v = raw.recv().await;
    let (code, message) = error(&v);
    (code.to_owned(), message.to_owned())
}

fn sign(secret: &[u8], header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
    m.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

/// §2.4: the user id is checked before the token, and the token in this
/// order: three parts, signature base64url, signature, header, claims,
/// `sub`, `exp`.
#[tokio::test]
async fn token_checks_come_in_the_documented_order() {
    let secret = b"0123456789abcdef-test".to_vec();
    let server = start(Config {
        secret: Some(secret.clone()),
        failed_logins_per_connection: 0,
        ..Config::default()
    })
    .await;
    let mut raw = server.raw().await;
    let raw = &mut raw;
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let expired_for_bob = sign(&secret, hs, r#"{"sub":"bob","exp":1}"#);
    // The user id comes first.
    assert_eq!(login(raw, "bad/id", "x").await.0, "invalid_argument");
    assert_eq!(
        login(raw, "alice", "a.b").await.1,
        "the token is malformed: expected three dot-separated parts"
    );
    assert_eq!(
        login(raw, "alice", "!!.!!.!!").await.1,
        "the token is malformed: signature is not base64url"
    );
    // A bad signature is reported before a header or claims that are not even JSON.
    assert_eq!(
        login(raw, "alice", "eA.eA.AAAA").await.1,
        "the token's signature does not match this server's secret"
    );
    assert_eq!(
        login(
            raw,
            "alice",
            &sign(&secret, r#"{"alg":"none"}"#, r#"{"sub":"alice","exp":1}"#)
        )
        .await
        .1,
        "the token is malformed: alg must be HS256"
    );
    assert_eq!(
        login(raw, "alice", &sign(&secret, hs, r#"{"sub":"alice"}"#))
            .await
            .1,
        "the token is malformed: claims need string sub and integer exp"
    );
    // `sub` before `exp`.
    assert_eq!(
        login(raw, "alice", &expired_for_bob).await,
        (
            "invalid_token".to_owned(),
            "the token was issued for user \"bob\", not this one".to_owned()
        )
    );
    assert_eq!(login(raw, "bob", &expired_for_bob).await.0, "token_expired");
}

/// §1.1: the server negotiates no WebSocket extension: a client offering
/// permessage-deflate gets a handshake without it.
#[tokio::test]
async fn permessage_deflate_is_not_negotiated() {
    let server = start_default().await;
    let mut request = server.url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the handshake succeeds");
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "{:?}",
        response.headers()
    );
    let mut raw = Raw { ws };
    raw.send(json!({"type": "login", "user": "alice"})).await;
    assert_eq!(raw.recv().await["type"], "login_ok");
}
