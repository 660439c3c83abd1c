//! Missed calls: an invitation that ends unanswered while the callee has no
//! device online is kept (in a file that survives a restart) and delivered
//! at the callee's next login until cleared; bounded per user.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use callinvite_client::{Client, Event, LoginOptions, MissedCall, MissedReason};
use callinvite_server::missed::MissedConfig;
use callinvite_server::{CancellationToken, Config};
use common::*;

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callinvite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn config(file: &std::path::Path, per_user: usize) -> Config {
    let mut c = Config::default();
    c.timeouts.offline = Duration::from_millis(300);
    c.missed = MissedConfig {
        file: Some(file.to_owned()),
        per_user,
        ..MissedConfig::default()
    };
    c
}

/// Starts a server on a given listener address and returns its stop token and task.
async fn serve(
    config: Config,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(callinvite_server::run(listener, config, stop.clone()));
    (url, stop, task)
}

async fn login(url: &str, user: &str) -> (Client, callinvite_client::EventStream) {
    let (c, mut e) = Client::login(LoginOptions::new(url, user)).await.unwrap();
    expect(&mut e, "connection_state_changed").await;
    (c, e)
}

/// The missed calls delivered at login, or none if the next event is something else.
async fn missed_at_login(url: &str, user: &str) -> (Client, Vec<MissedCall>) {
    let (c, mut e) = login(url, user).await;
    // Presence or invitations would follow; a quick query marks the end of the login burst.
    c.query_presence(&[user]).await.unwrap();
    let calls = match e.try_next() {
        Some(Event::MissedCalls { calls }) => calls,
        Some(other) => panic!("unexpected {other:?}"),
        None => vec![],
    };
    (c, calls)
}

#[tokio::test]
async fn missed_calls_are_kept_for_an_offline_callee_delivered_at_login_and_survive_a_restart() {
    let dir = scratch("missed");
    let file = dir.join("missed-calls.json");
    let (url, stop, task) = serve(config(&file, 50)).await;
    let (alice, mut a) = login(&url, "alice").await;

    // 1. bob offline, alice calls and cancels.
    let inv = alice
        .create_local_invitation("bob")
        .unwrap()
        .with_content("room-1");
    let first = alice.send_local_invitation(&inv).await.unwrap();
    alice.cancel_local_invitation(&inv).await.unwrap();
    until(&mut a, "local_invitation_canceled").await;
    // 2. bob offline, the offline window runs out.
    let inv = alice.create_local_invitation("bob").unwrap();
    let second = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut a, "local_invitation_failure").await;
    // 3. bob online and refusing: not a missed call.
    let (bob, mut b) = login(&url, "bob").await;
    let got = next(&mut b).await;
    assert!(
        matches!(got, Event::MissedCalls { ref calls } if calls.len() == 2),
        "{got:?}"
    );
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut b, "remote_invitation_received").await;
    bob.refuse_remote_invitation(&id, "", false).await.unwrap();
    until(&mut a, "local_invitation_refused").await;
    bob.logout().await.unwrap();

    // The server restarts; the file carries them over.
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(file.exists(), "the store was written");
    let (url, stop, task) = serve(config(&file, 50)).await;

    let (bob, calls) = missed_at_login(&url, "bob").await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].invitation_id, first);
    assert_eq!(calls[0].caller, "alice");
    assert_eq!(calls[0].content, "room-1");
    assert_eq!(calls[0].reason, MissedReason::Canceled);
    assert_eq!(calls[1].invitation_id, second);
    assert_eq!(calls[1].reason, MissedReason::PeerOffline);
    assert!(calls[0].at_ms <= calls[1].at_ms && calls[0].at_ms > 1_700_000_000_000);

    // Cleared ones stop coming, on every device.
    bob.clear_missed_calls(std::slice::from_ref(&first))
        .await
        .unwrap();
    let (_bob2, calls) = missed_at_login(&url, "bob").await;
    assert_eq!(
        calls.iter().map(|c| &c.invitation_id).collect::<Vec<_>>(),
        vec![&second]
    );
    bob.clear_missed_calls(&[second]).await.unwrap();
    let (_bob3, calls) = missed_at_login(&url, "bob").await;
    assert!(calls.is_empty(), "{calls:?}");
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn missed_calls_are_bounded_per_user_and_a_corrupt_store_is_moved_aside() {
    let dir = scratch("missed-bounds");
    let file = dir.join("missed-calls.json");
    std::fs::write(&file, b"{ not json").unwrap();
    let (url, stop, task) = serve(config(&file, 2)).await;
    let (alice, mut a) = login(&url, "alice").await;
    assert!(
        dir.join("missed-calls.json.corrupt").exists(),
        "the corrupt file was kept for a look"
    );
    let mut ids = vec![];
    for _ in 0..3 {
        let inv = alice.create_local_invitation("carol").unwrap();
        ids.push(alice.send_local_invitation(&inv).await.unwrap());
        alice.cancel_local_invitation(&inv).await.unwrap();
        until(&mut a, "local_invitation_canceled").await;
    }
    let (_carol, calls) = missed_at_login(&url, "carol").await;
    assert_eq!(
        calls
            .iter()
            .map(|c| c.invitation_id.clone())
            .collect::<Vec<_>>(),
        ids[1..].to_vec(),
        "the oldest went first"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
