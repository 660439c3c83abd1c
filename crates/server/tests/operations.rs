//! `/healthz` and `/metrics` on the operations port, after real calls.

mod common;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use callinvite_server::metrics::Metrics;
use callinvite_server::{CancellationToken, Config};

use common::*;

async fn get(addr: &str, path: &str) -> (String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn healthz_and_metrics_count_logins_invitations_and_latency() {
    let metrics = Arc::new(Metrics::new());
    let server = start(Config {
        metrics: metrics.clone(),
        ..Config::default()
    })
    .await;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(callinvite_server::http::serve(http, metrics, stop.clone()));

    let (status, body) = get(&addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    assert!(get(&addr, "/nope").await.0.contains("404"));

    let (alice, mut a) = server.login("alice").await;
    let (bob, mut b) = server.login("bob").await;
    // accepted
    let id = establish_call(&alice, &mut a, &bob, &mut b).await;
    alice.hang_up(&id).await.unwrap();
    until(&mut b, "call_ended").await;
    // busy
    let id = alice
        .send_local_invitation(&alice.create_local_invitation("bob").unwrap())
        .await
        .unwrap();
    until(&mut b, "remote_invitation_received").await;
    bob.refuse_remote_invitation(&id, "", true).await.unwrap();
    until(&mut a, "local_invitation_refused").await;
    // canceled
    let inv = alice.create_local_invitation("bob").unwrap();
    alice.send_local_invitation(&inv).await.unwrap();
    until(&mut b, "remote_invitation_received").await;
    alice.cancel_local_invitation(&inv).await.unwrap();
    until(&mut a, "local_invitation_canceled").await;

    let (status, body) = get(&addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for line in [
        "callinvite_connections 2",
        "callinvite_devices 2",
        "callinvite_logins_total{result=\"ok\"} 2",
        "callinvite_invitations_total{outcome=\"accepted\"} 1",
        "callinvite_invitations_total{outcome=\"busy\"} 1",
        "callinvite_invitations_total{outcome=\"canceled\"} 1",
        "callinvite_invitation_delivery_seconds_count 3",
        "callinvite_invitation_answer_seconds_count 2",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    stop.cancel();
}
