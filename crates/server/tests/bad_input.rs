//! The bad-input table: one row per kind of bad input, each sent on its own
//! connection while two other users place and finish a call. For each row the
//! server's answer is checked, and the call proves other users were unaffected.
//! Run with `--nocapture` to see the table of answers.

mod common;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use callinvite_server::{auth, Config};

use common::*;

const SECRET: &[u8] = b"bad-input-table-secret";

/// Alice calls bob, bob accepts, alice hangs up: the proof that a row did not disturb anyone else.
async fn others_can_still_call(server: &TestServer) {
    let token = |u: &str| auth::mint(SECRET, u, Duration::from_secs(60));
    let login = |u: &'static str| {
        let url = server.url.clone();
        let t = token(u);
        async move {
            let (c, mut e) = callinvite_client::Client::login(
                callinvite_client::LoginOptions::new(url, u).token(t),
            )
            .await
            .expect("login");
            expect(&mut e, "connection_state_changed").await;
            (c, e)
        }
    };
    let (alice, mut a) = login("alice").await;
    let (bob, mut b) = login("bob").await;
    let id = establish_call(&alice, &mut a, &bob, &mut b).await;
    alice.hang_up(&id).await.unwrap();
    until(&mut b, "call_ended").await;
    alice.logout().await.unwrap();
    bob.logout().await.unwrap();
}

async fn logged_in(server: &TestServer, user: &str) -> Raw {
    let mut raw = server.raw().await;
    raw.send(json!({"type": "login", "ref": 0, "user": user, "token": auth::mint(SECRET, user, Duration::from_secs(60))})).await;
    let answer = raw.recv().await;
    assert_eq!(answer["type"], "login_ok", "{answer}");
    raw
}

/// What the server answered: an error code, or a close code.
async fn answer(raw: &mut Raw) -> String {
    match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut raw.ws))
        .await
        .expect("an answer")
    {
        Some(Ok(Message::Text(t))) => {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            match v["type"].as_str() {
                Some("error") => format!("error {}", v["code"].as_str().unwrap_or("?")),
                Some(other) => format!("reply {other}"),
                None => format!("?? {v}"),
            }
        }
        Some(Ok(Message::Close(f))) => {
            format!("close {}", f.map(|f| u16::from(f.code)).unwrap_or(0))
        }
        Some(Ok(other)) => format!("frame {other:?}"),
        Some(Err(e)) => format!("connection error: {e}"),
        None => "connection closed".into(),
    }
}

#[tokio::test]
async fn bad_input_table() {
    let config = Config {
        secret: Some(SECRET.to_vec()),
        messages_per_second: 20,
        // Every row logs mallory in anew; the login rate limit is not under test here.
        logins_per_second: 1000,
        handshake_timeout: Duration::from_millis(300),
        login_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let server = start(config).await;
    let mut table: Vec<(&str, String)> = vec![];

    // Rows answered on a connection that stays open.
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "malformed JSON",
            r#"{"type":"invite","ref":1,"callee":"bob""#.to_string(),
            "error bad_message",
        ),
        (
            "not an object",
            r#"[1,2,3]"#.to_string(),
            "error bad_message",
        ),
        (
            "wrong type of field",
            r#"{"type":"invite","ref":1,"callee":12}"#.to_string(),
            "error bad_message",
        ),
        (
            "wrong type of ref",
            r#"{"type":"invite","ref":"one","callee":"bob"}"#.to_string(),
            "error bad_message",
        ),
        (
            "huge number",
            r#"{"type":"invite","ref":18446744073709551616,"callee":"bob"}"#.to_string(),
            "error bad_message",
        ),
        (
            "negative number",
            r#"{"type":"cancel","ref":-1,"invitation_id":"x"}"#.to_string(),
            "error bad_message",
        ),
        (
            "unknown type",
            r#"{"type":"dance","ref":1}"#.to_string(),
            "error unknown_type",
        ),
        (
            "unknown fields are ignored",
            r#"{"type":"query_presence","ref":1,"users":["bob"],"color":"blue"}"#.to_string(),
            "reply presence",
        ),
        (
            "lone surrogate in an id",
            r#"{"type":"invite","ref":1,"callee":"\udc80"}"#.to_string(),
            "error bad_message",
        ),
        (
            "id with a bad character",
            r#"{"type":"invite","ref":1,"callee":"bob\u0000"}"#.to_string(),
            "error invalid_argument",
        ),
        (
            "id too long",
            format!(
                r#"{{"type":"invite","ref":1,"callee":"{}"}}"#,
                "x".repeat(65)
            ),
            "error invalid_argument",
        ),
        (
            "content too large",
            format!(
                r#"{{"type":"invite","ref":1,"callee":"bob","content":"{}"}}"#,
                "x".repeat(8193)
            ),
            "error invalid_argument",
        ),
        (
            "acting on an invitation that is not yours",
            r#"{"type":"accept","ref":1,"invitation_id":"00000000-0000-0000-0000-000000000000"}"#
                .to_string(),
            "error not_found",
        ),
        (
            "logging in twice",
            r#"{"type":"login","ref":1,"user":"mallory"}"#.to_string(),
            "error already_logged_in",
        ),
    ];
    for (name, frame, expected) in rows {
        let mut raw = logged_in(&server, "mallory").await;
        raw.send_text(&frame).await;
        let got = answer(&mut raw).await;
        assert_eq!(got, expected, "row {name:?}");
        others_can_still_call(&server).await;
        table.push((name, got));
    }

    // Binary frame.
    let mut raw = logged_in(&server, "mallory").await;
    raw.ws
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    let got = answer(&mut raw).await;
    assert_eq!(got, "error binary_not_supported");
    others_can_still_call(&server).await;
    table.push(("binary frame", got));

    // A text frame whose bytes are not UTF-8.
    let mut raw = logged_in(&server, "mallory").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    raw.ws.send(Message::Frame(frame)).await.unwrap();
    let got = answer(&mut raw).await;
    assert_eq!(got, "close 1007");
    others_can_still_call(&server).await;
    table.push(("invalid UTF-8 in a text frame", got));

    // Oversize frame.
    let mut raw = logged_in(&server, "mallory").await;
    raw.send(
        json!({"type": "invite", "ref": 1, "callee": "bob", "content": "x".repeat(70 * 1024)}),
    )
    .await;
    let got = answer(&mut raw).await;
    assert_eq!(got, "close 1009");
    others_can_still_call(&server).await;
    table.push(("oversize frame (70 KiB)", got));

    // Before login.
    let mut raw = server.raw().await;
    raw.send(json!({"type": "invite", "ref": 1, "callee": "bob"}))
        .await;
    let got = answer(&mut raw).await;
    assert_eq!(got, "error not_logged_in");
    table.push(("message before login", got));

    // Tokens: expired (replayed), forged, for another user, none.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (name, token, expected) in [
        (
            "replayed expired token",
            auth::mint_with_expiry(SECRET, "mallory", now - 60),
            "error token_expired",
        ),
        (
            "forged token",
            auth::mint(b"guessed-secret", "mallory", Duration::from_secs(60)),
            "error invalid_token",
        ),
        (
            "another user's token",
            auth::mint(SECRET, "alice", Duration::from_secs(60)),
            "error invalid_token",
        ),
        ("no token", String::new(), "error invalid_token"),
    ] {
        let mut raw = server.raw().await;
        raw.send(json!({"type": "login", "ref": 1, "user": "mallory", "token": token}))
            .await;
        let got = answer(&mut raw).await;
        assert_eq!(got, expected, "row {name:?}");
        others_can_still_call(&server).await;
        table.push((name, got));
    }

    // Flood: 100 messages at once on one connection (limit 20/s).
    let mut raw = logged_in(&server, "mallory").await;
    for i in 0..100u64 {
        raw.ws
            .feed(Message::text(
                json!({"type": "query_presence", "ref": i, "users": ["bob"]}).to_string(),
            ))
            .await
            .unwrap();
    }
    raw.ws.flush().await.unwrap();
    let mut limited = 0;
    for _ in 0..100 {
        if answer(&mut raw).await == "error rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 50, "{limited} of 100 rate_limited");
    others_can_still_call(&server).await;
    table.push((
        "flood (100 at once, limit 20/s)",
        format!("error rate_limited ×{limited}, the rest answered"),
    ));

    // Slow login and slow handshake.
    let mut raw = server.raw().await;
    let got = answer(&mut raw).await;
    assert_eq!(got, "close 1008");
    table.push(("no login within the login timeout", got));
    let addr = server.url.trim_start_matches("ws://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    others_can_still_call(&server).await;
    table.push(("slow handshake", "connection closed".into()));

    println!("\n| bad input | server's answer |\n|---|---|");
    for (name, got) in &table {
        println!("| {name} | {got} |");
    }
}
