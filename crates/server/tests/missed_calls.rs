//! Missed calls: an invitation that ends unanswered while the callee has no
//! device online is kept (in a database that survives a restart) and
//! delivered at the callee's next login until cleared; bounded per callee,
//! per caller and in all, so one caller cannot make the store grow.

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
    let file = dir.join("missed-calls.redb");
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

    // The server restarts; the database carries them over.
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
    let file = dir.join("missed-calls.redb");
    std::fs::write(dir.join("missed-calls.json"), b"{ not json").unwrap();
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

#[tokio::test]
async fn a_database_that_is_not_one_is_moved_aside() {
    let dir = scratch("missed-corrupt-db");
    let file = dir.join("missed-calls.redb");
    std::fs::write(&file, vec![0x5a; 10_000]).unwrap();
    let (url, stop, task) = serve(config(&file, 50)).await;
    let (alice, mut a) = login(&url, "alice").await;
    assert!(dir.join("missed-calls.redb.corrupt").exists());
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    alice.cancel_local_invitation(&inv).await.unwrap();
    until(&mut a, "local_invitation_canceled").await;
    let (_bob, calls) = missed_at_login(&url, "bob").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].invitation_id, id);
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_old_json_store_is_imported_once_and_kept_in_the_database() {
    let dir = scratch("missed-import");
    let file = dir.join("missed-calls.redb");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old = serde_json::json!({
        "bob": [
            {"invitation_id": "inv-1", "caller": "alice", "content": "room-1", "at_ms": now - 2000, "reason": "canceled"},
            {"invitation_id": "inv-2", "caller": "carol", "content": "", "at_ms": now - 1000, "reason": "peer_offline"}
        ],
        "dave": [
            {"invitation_id": "inv-3", "caller": "alice", "content": "x", "at_ms": now - 500, "reason": "no_response"}
        ]
    });
    std::fs::write(
        dir.join("missed-calls.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    let (url, stop, task) = serve(config(&file, 50)).await;
    let (_bob, calls) = missed_at_login(&url, "bob").await;
    assert!(!dir.join("missed-calls.json").exists(), "renamed");
    assert!(dir.join("missed-calls.json.imported").exists());
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.invitation_id.0.as_str(), c.caller.as_str()))
            .collect::<Vec<_>>(),
        [("inv-1", "alice"), ("inv-2", "carol")]
    );
    assert_eq!(calls[0].content, "room-1");
    stop.cancel();
    task.await.unwrap().unwrap();

    // Again: from the database alone (the JSON file is not read twice).
    let (url, stop, task) = serve(config(&file, 50)).await;
    let (bob, calls) = missed_at_login(&url, "bob").await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    bob.clear_missed_calls(&[calls[0].invitation_id.clone()])
        .await
        .unwrap();
    let (_dave, calls) = missed_at_login(&url, "dave").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].reason, MissedReason::NoResponse);
    stop.cancel();
    task.await.unwrap().unwrap();
    let (url, stop, task) = serve(config(&file, 50)).await;
    let (_bob, calls) = missed_at_login(&url, "bob").await;
    assert_eq!(calls.len(), 1, "the clear was saved: {calls:?}");
    assert_eq!(calls[0].invitation_id.0, "inv-2");
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The resident set of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The rows of the database, as (callee, caller).
fn rows(file: &std::path::Path) -> Vec<(String, String)> {
    use redb::ReadableTable;
    let table: redb::TableDefinition<(&str, &str), &[u8]> =
        redb::TableDefinition::new("missed_calls");
    let db = redb::Database::open(file).unwrap();
    let tx = db.begin_read().unwrap();
    let t = tx.open_table(table).unwrap();
    t.iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            let call: MissedCall = serde_json::from_slice(v.value()).unwrap();
            (k.value().0.to_owned(), call.caller)
        })
        .collect()
}

/// The attack of issue "missed calls grow without limit": one signed-in
/// caller, under the message rate limit, invites many fresh user ids with
/// the largest content and cancels each. The store keeps only the caller's
/// newest `per_caller`; the file, memory and a legitimate missed call are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_flooding_fresh_ids_cannot_grow_the_store() {
    const FLOOD: usize = 2000;
    let dir = scratch("missed-flood");
    let file = dir.join("missed-calls.redb");
    let mut c = config(&file, 50);
    c.messages_per_second = 100_000;
    c.max_frame_bytes = c.max_frame_bytes.max(64 * 1024);
    let per_caller = c.missed.per_caller;
    // Ended invitations are kept (with their content) for `retention` so
    // that late requests get a precise answer; that is bounded in time, not
    // the subject here, so it is kept short to measure the missed calls alone.
    c.timeouts.retention = Duration::from_millis(100);
    let (url, stop, task) = serve(c.clone()).await;

    // A legitimate missed call to a real user, before the flood.
    let (carol, mut cr) = login(&url, "carol").await;
    let inv = carol
        .create_local_invitation("dave")
        .unwrap()
        .with_content("room-dave");
    let legit = carol.send_local_invitation(&inv).await.unwrap();
    carol.cancel_local_invitation(&inv).await.unwrap();
    until(&mut cr, "local_invitation_canceled").await;

    let (mallory, mut m) = login(&url, "mallory").await;
    let content = "x".repeat(callinvite_protocol::limits::MAX_CONTENT_BYTES);
    // Warm up (allocator, buffers) before the first figure.
    for i in 0..20 {
        let inv = mallory
            .create_local_invitation(&format!("warm-{i}"))
            .unwrap()
            .with_content(content.clone());
        mallory.send_local_invitation(&inv).await.unwrap();
        mallory.cancel_local_invitation(&inv).await.unwrap();
        until(&mut m, "local_invitation_canceled").await;
    }
    let rss_before = rss_kib();
    let started = std::time::Instant::now();
    for i in 0..FLOOD {
        let inv = mallory
            .create_local_invitation(&format!("fresh-{i}"))
            .unwrap()
            .with_content(content.clone());
        mallory.send_local_invitation(&inv).await.unwrap();
        mallory.cancel_local_invitation(&inv).await.unwrap();
        until(&mut m, "local_invitation_canceled").await;
    }
    let took = started.elapsed();
    let rss_after = rss_kib();
    // The writer catches up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "flood: {FLOOD} invitations of {} bytes in {took:?}; RSS before {rss_before} KiB, after {rss_after} KiB (+{} KiB); {} is {size} bytes",
        content.len(),
        rss_after.saturating_sub(rss_before),
        file.display()
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    // Stored uncapped, 2000 × 8 KiB would be ~17 MB of content alone, and
    // several times that in memory; capped, it is ~100 × 8 KiB of rows in a
    // file that stops growing once redb reuses its freed pages (about 8 MB
    // whether 2 000 or 6 000 were sent).
    assert!(size < 16 * 1024 * 1024, "the database is {size} bytes");
    assert!(
        rss_after.saturating_sub(rss_before) < 24 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The oldest of the flood are gone; the newest are kept.
    let (_f0, calls) = missed_at_login(&url, "fresh-0").await;
    assert!(calls.is_empty(), "{calls:?}");
    let (_fl, calls) = missed_at_login(&url, &format!("fresh-{}", FLOOD - 1)).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].content.len(), content.len());
    // The legitimate call is still delivered at dave's next login.
    let (_dave, calls) = missed_at_login(&url, "dave").await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].invitation_id, legit);
    assert_eq!(calls[0].content, "room-dave");
    drop((mallory, carol));
    stop.cancel();
    task.await.unwrap().unwrap();

    // What is on disk: at most `per_caller` from mallory, and carol's call.
    let rows = rows(&file);
    let from_mallory = rows.iter().filter(|(_, c)| c == "mallory").count();
    println!(
        "stored after the flood: {} rows, {from_mallory} from the flooding caller; file {} bytes",
        rows.len(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert!(from_mallory <= per_caller, "{from_mallory}");
    assert!(rows.contains(&("dave".to_owned(), "carol".to_owned())));

    // And after a restart (which compacts the file) the same bounds hold.
    let (url, stop, task) = serve(c).await;
    let (_dave, calls) = missed_at_login(&url, "dave").await;
    assert_eq!(calls.len(), 1);
    println!(
        "after a restart: {} is {} bytes",
        file.display(),
        std::fs::metadata(&file).unwrap().len()
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// In a cluster the same bounds hold, and Redis holds no more than they
/// allow: a caller's calls dropped by a bound leave Redis too.
#[tokio::test]
async fn in_a_cluster_the_bounds_hold_in_redis() {
    let redis = Redis::start().await;
    let mut c = Config::default();
    c.timeouts.offline = Duration::from_millis(300);
    c.messages_per_second = 100_000;
    c.missed.per_caller = 5;
    c.missed.per_caller_per_user = 2;
    let a = start_node(&redis, c.clone()).await;
    let b = start_node(&redis, c.clone()).await;
    let (carol, mut cr) = a.login("carol").await;
    let inv = carol
        .create_local_invitation("dave")
        .unwrap()
        .with_content("room-dave");
    let legit = carol.send_local_invitation(&inv).await.unwrap();
    carol.cancel_local_invitation(&inv).await.unwrap();
    until(&mut cr, "local_invitation_canceled").await;
    let (mallory, mut m) = a.login("mallory").await;
    let content = "x".repeat(callinvite_protocol::limits::MAX_CONTENT_BYTES);
    let mut callees: Vec<String> = (0..20).map(|i| format!("fresh-{i}")).collect();
    callees.extend(["victim"; 4].map(String::from));
    for callee in &callees {
        let inv = mallory
            .create_local_invitation(callee)
            .unwrap()
            .with_content(content.clone());
        mallory.send_local_invitation(&inv).await.unwrap();
        mallory.cancel_local_invitation(&inv).await.unwrap();
        until(&mut m, "local_invitation_canceled").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // What Redis keeps.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("callinvite:missed:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut from_mallory = 0;
    let mut largest = 0;
    for key in &keys {
        let text: String = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        largest = largest.max(text.len());
        let calls: Vec<MissedCall> = serde_json::from_str(&text).unwrap();
        from_mallory += calls.iter().filter(|c| c.caller == "mallory").count();
    }
    println!(
        "redis: {} keys, {from_mallory} missed calls from the flooding caller, largest value {largest} bytes",
        keys.len()
    );
    assert!(from_mallory <= 5, "{from_mallory}");
    assert!(largest <= c.missed.per_user_bytes, "{largest}");
    assert!(keys.contains(&"callinvite:missed:dave".to_owned()));
    assert!(!keys.contains(&"callinvite:missed:fresh-0".to_owned()));

    // Every node applied the same bounds.
    let (victim, mut v) = b.login("victim").await;
    victim.query_presence(&["victim"]).await.unwrap();
    match v.try_next() {
        Some(Event::MissedCalls { calls }) => assert_eq!(calls.len(), 2, "{calls:?}"),
        other => panic!("{other:?}"),
    }
    let (dave, mut d) = b.login("dave").await;
    dave.query_presence(&["dave"]).await.unwrap();
    match d.try_next() {
        Some(Event::MissedCalls { calls }) => {
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].invitation_id, legit);
        }
        other => panic!("{other:?}"),
    }
    // A node that starts now reads the same from Redis.
    let n = start_node(&redis, c.clone()).await;
    let (f0, mut f) = n.login("fresh-0").await;
    f0.query_presence(&["fresh-0"]).await.unwrap();
    assert!(f.try_next().is_none());
    let (f19, mut f) = n.login("fresh-19").await;
    f19.query_presence(&["fresh-19"]).await.unwrap();
    assert!(matches!(f.try_next(), Some(Event::MissedCalls { calls }) if calls.len() == 1));
}
