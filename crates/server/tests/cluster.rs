//! Several nodes on one Redis (a real `redis-server`): a caller on one node
//! and a callee on another get exactly the behaviour of one node — the
//! flow, multi-device, presence, busy, races, missed calls — and a node that
//! goes away takes its users offline and ends what it owned.

mod common;

use std::time::Duration;

use callinvite_client::{CallEndReason, Event, FailureReason, MissedReason};
use callinvite_server::Config;
use callinvite_test_support::eventually;
use common::*;

/// Runs `redis-cli` against the Redis at `url`; its output.
async fn redis_cli(url: &str, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("redis-cli");
    cmd.args(["-u", url]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_call_across_two_nodes_runs_as_on_one() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    let (alice, mut ae) = a.login("alice").await;
    let (bob, mut be) = b.login("bob").await;
    until_online(&alice, &["bob"]).await;

    let inv = alice
        .create_local_invitation("bob")
        .unwrap()
        .with_content("room-7");
    let id = alice.send_local_invitation(&inv).await.unwrap();
    assert!(id.0.starts_with('n'), "ids name their node: {id}");
    let e = expect(&mut ae, "local_invitation_sent").await;
    assert!(matches!(
        e,
        Event::LocalInvitationSent {
            callee_online: true,
            ..
        }
    ));
    let e = expect(&mut be, "remote_invitation_received").await;
    assert!(
        matches!(&e, Event::RemoteInvitationReceived { invitation } if invitation.content == "room-7" && invitation.caller == "alice")
    );
    expect(&mut ae, "local_invitation_received_by_peer").await;
    bob.accept_remote_invitation(&id, "on my way")
        .await
        .unwrap();
    expect(&mut be, "remote_invitation_accepted").await;
    let e = expect(&mut ae, "local_invitation_accepted").await;
    assert!(
        matches!(&e, Event::LocalInvitationAccepted { response, .. } if response == "on my way")
    );
    // bob (node B) hangs up the call owned by node A.
    bob.hang_up(&id).await.unwrap();
    for ev in [&mut ae, &mut be] {
        let e = expect(ev, "call_ended").await;
        assert!(
            matches!(&e, Event::CallEnded { reason: CallEndReason::Hangup, by: Some(by), .. } if by == "bob"),
            "{e:?}"
        );
    }
    // Misuse across nodes answers as on one node.
    let err = bob.hang_up(&id).await.unwrap_err();
    assert!(
        err.to_string().contains("ended") || err.to_string().contains("not_found"),
        "{err}"
    );
}

#[tokio::test]
async fn every_device_rings_on_every_node_and_the_others_stop() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    let c = start_node(&redis, Config::default()).await;
    let (alice, mut ae) = a.login("alice").await;
    let (bob_b, mut b1) = b.login("bob").await;
    let (_bob_c, mut b2) = c.login("bob").await;
    // Both of bob's devices are known on alice's node.
    until_heard(&b.url, &alice).await;
    until_heard(&c.url, &alice).await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut b1, "remote_invitation_received").await;
    expect(&mut b2, "remote_invitation_received").await;
    bob_b.accept_remote_invitation(&id, "").await.unwrap();
    expect(&mut b1, "remote_invitation_accepted").await;
    let e = expect(&mut b2, "remote_invitation_failure").await;
    assert!(
        matches!(
            e,
            Event::RemoteInvitationFailure {
                reason: FailureReason::AnsweredElsewhere,
                ..
            }
        ),
        "{e:?}"
    );
    until(&mut ae, "local_invitation_accepted").await;
}

#[tokio::test]
async fn presence_busy_and_logout_travel_between_nodes() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    let (alice, mut ae) = a.login("alice").await;
    let snapshot = alice.subscribe_presence(&["bob"]).await.unwrap();
    assert!(!snapshot[0].online);
    let (bob, mut be) = b.login("bob").await;
    assert_eq!(
        expect(&mut ae, "presence_changed").await,
        Event::PresenceChanged {
            user: "bob".into(),
            online: true
        }
    );

    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut be, "remote_invitation_received").await;
    bob.refuse_remote_invitation(&id, "in a call", true)
        .await
        .unwrap();
    let e = until(&mut ae, "local_invitation_refused").await;
    assert!(
        matches!(&e, Event::LocalInvitationRefused { busy: true, response, .. } if response == "in a call")
    );

    bob.logout().await.unwrap();
    assert_eq!(
        until(&mut ae, "presence_changed").await,
        Event::PresenceChanged {
            user: "bob".into(),
            online: false
        }
    );
}

#[tokio::test]
async fn cancel_and_accept_racing_across_nodes_have_one_outcome_both_sides_agree_on() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    let (alice, mut ae) = a.login("alice").await;
    let (bob, mut be) = b.login("bob").await;
    until_online(&alice, &["bob"]).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..10 {
        let inv = alice.create_local_invitation("bob").unwrap();
        let id = alice.send_local_invitation(&inv).await.unwrap();
        until(&mut be, "remote_invitation_received").await;
        // The accept crosses Redis to reach alice's node; the cancel is sent
        // 0–9 ms after it, so both orders of arrival happen.
        let delay = Duration::from_millis(round as u64);
        let (c, acc) = tokio::join!(
            async {
                tokio::time::sleep(delay).await;
                alice.cancel_local_invitation(&inv).await
            },
            bob.accept_remote_invitation(&id, "")
        );
        let _ = (c, acc);
        let caller = loop {
            let e = next(&mut ae).await;
            if matches!(
                e,
                Event::LocalInvitationAccepted { .. } | Event::LocalInvitationCanceled { .. }
            ) {
                break e.name();
            }
        };
        let callee = loop {
            let e = next(&mut be).await;
            if matches!(
                e,
                Event::RemoteInvitationAccepted { .. } | Event::RemoteInvitationCanceled { .. }
            ) {
                break e.name();
            }
        };
        assert_eq!(
            caller.trim_start_matches("local_invitation_"),
            callee.trim_start_matches("remote_invitation_"),
            "round {round}: the sides disagree"
        );
        if caller.ends_with("accepted") {
            alice.hang_up(&id).await.unwrap();
            until(&mut ae, "call_ended").await;
            until(&mut be, "call_ended").await;
        }
        *outcomes.entry(caller).or_insert(0) += 1;
    }
    println!("cancel vs accept across nodes, 10 rounds: {outcomes:?}");
}

#[tokio::test]
async fn a_node_that_leaves_takes_its_users_offline_and_ends_what_it_owned() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    let (alice, mut ae) = a.login("alice").await;
    alice.subscribe_presence(&["bob", "carol"]).await.unwrap();
    let (bob, mut be) = b.login("bob").await;
    let (carol, _ce) = b.login("carol").await;
    until(&mut ae, "presence_changed").await;
    until(&mut ae, "presence_changed").await;
    // A call owned by node A (alice called bob), and an invitation owned by node B (carol calls alice).
    let inv = alice.create_local_invitation("bob").unwrap();
    let call = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut be, "remote_invitation_received").await;
    bob.accept_remote_invitation(&call, "").await.unwrap();
    until(&mut ae, "local_invitation_accepted").await;
    let ringing = carol.create_local_invitation("alice").unwrap();
    let ringing = carol.send_local_invitation(&ringing).await.unwrap();
    until(&mut ae, "remote_invitation_received").await;

    // Node B goes away.
    b.shutdown.cancel();
    let mut got = vec![];
    while got.len() < 4 {
        let e = next(&mut ae).await;
        match &e {
            Event::CallEnded {
                invitation_id,
                reason,
                ..
            } if *invitation_id == call => {
                assert!(
                    matches!(
                        reason,
                        CallEndReason::PeerConnectionLost | CallEndReason::ServerShutdown
                    ),
                    "{e:?}"
                );
                got.push("call");
            }
            Event::RemoteInvitationFailure { invitation, reason }
                if invitation.invitation_id == ringing =>
            {
                assert_eq!(*reason, FailureReason::ServerShutdown);
                got.push("ringing");
            }
            Event::PresenceChanged { online: false, .. } => got.push("offline"),
            _ => {}
        }
    }
    got.sort();
    assert_eq!(got, vec!["call", "offline", "offline", "ringing"]);
}

#[tokio::test]
async fn a_node_that_dies_silently_is_found_out_within_the_node_timeout() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    // Node B can die all at once, with no goodbye.
    let node_b = DoomedNode::start(&redis.url).await;
    let b_url = node_b.url.clone();
    let (alice, mut ae) = a.login("alice").await;
    alice.subscribe_presence(&["bob"]).await.unwrap();
    let (bob, mut be) =
        callinvite_client::Client::login(callinvite_client::LoginOptions::new(&b_url, "bob"))
            .await
            .unwrap();
    next(&mut be).await;
    until(&mut ae, "presence_changed").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let call = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut be, "remote_invitation_received").await;
    bob.accept_remote_invitation(&call, "").await.unwrap();
    until(&mut ae, "local_invitation_accepted").await;

    let started = std::time::Instant::now();
    node_b.kill().await;
    let e = until(&mut ae, "call_ended").await;
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
    let e = until(&mut ae, "presence_changed").await;
    assert_eq!(
        e,
        Event::PresenceChanged {
            user: "bob".into(),
            online: false
        }
    );
    let waited = started.elapsed();
    println!("dead node found out after {waited:?} (node timeout 1.5 s, heartbeat 300 ms)");
    // bob's client lost its node; it can log in on the surviving node and be called.
    let (bob, mut be) = a.login("bob").await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut be, "remote_invitation_received").await;
    bob.refuse_remote_invitation(&id, "", false).await.unwrap();
    until(&mut ae, "local_invitation_refused").await;
}

#[tokio::test]
async fn a_session_whose_node_dies_is_taken_over_by_another_node() {
    let redis = Redis::start().await;
    let b = start_node(&redis, Config::default()).await;
    // Node A dies all at once (its runtime dropped, no goodbye).
    let node_a = DoomedNode::start(&redis.url).await;
    let a_url = node_a.url.clone();
    // alice reaches the cluster through a "load balancer" that sends her to A.
    let lb = Proxy::start(&a_url).await;
    let (alice, mut ae) =
        callinvite_client::Client::login(callinvite_client::LoginOptions::new(&lb.url, "alice"))
            .await
            .unwrap();
    next(&mut ae).await;
    alice.subscribe_presence(&["dave"]).await.unwrap();
    let (bob, mut be) = b.login("bob").await;
    let (carol, mut ce) = b.login("carol").await;
    until_online(&bob, &["alice"]).await;
    // bob (node B) is in a call with alice (node A); carol's call rings at alice.
    let inv = bob.create_local_invitation("alice").unwrap();
    let call = bob.send_local_invitation(&inv).await.unwrap();
    until(&mut ae, "remote_invitation_received").await;
    alice.accept_remote_invitation(&call, "").await.unwrap();
    until(&mut be, "local_invitation_accepted").await;
    let inv = carol.create_local_invitation("alice").unwrap();
    let ringing = carol.send_local_invitation(&inv).await.unwrap();
    until(&mut ae, "remote_invitation_received").await;
    until(&mut ce, "local_invitation_received_by_peer").await;

    let started = std::time::Instant::now();
    lb.retarget(&b.url);
    node_a.kill().await;
    lb.cut();
    let e = until(&mut ae, "connection_state_changed").await;
    assert!(
        matches!(
            e,
            Event::ConnectionStateChanged {
                state: callinvite_client::ConnectionState::Reconnecting,
                ..
            }
        ),
        "{e:?}"
    );
    // Node B finds A dead and takes alice's session over: no new login.
    // What alice had ends on her side first, with a defined reason; bob's
    // side of the call ended too (alice's old device went with node A).
    let mut ended_call = false;
    let mut ended_ringing = false;
    while !(ended_call && ended_ringing) {
        match next(&mut ae).await {
            Event::CallEnded {
                invitation_id,
                reason: CallEndReason::NotLoggedIn,
                ..
            } if invitation_id == call => ended_call = true,
            Event::RemoteInvitationFailure {
                invitation,
                reason: FailureReason::NotLoggedIn,
            } if invitation.invitation_id == ringing => ended_ringing = true,
            e => panic!("unexpected {e:?}"),
        }
    }
    let e = next(&mut ae).await;
    assert!(
        matches!(
            e,
            Event::ConnectionStateChanged {
                state: callinvite_client::ConnectionState::Connected,
                reason: callinvite_client::ConnectionReason::SessionMoved
            }
        ),
        "{e:?}"
    );
    println!(
        "session taken over {:?} after its node died (node timeout 1.5 s)",
        started.elapsed()
    );
    let e = until(&mut be, "call_ended").await;
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
    // carol's invitation (kept by node B) goes on: it rings alice's session
    // again on its new node, and alice can take it.
    let mut followed = false;
    loop {
        match next(&mut ae).await {
            Event::PresenceChanged { user, online } if user == "dave" => {
                assert!(!online);
                followed = true;
            }
            Event::RemoteInvitationReceived { invitation } => {
                assert_eq!(invitation.invitation_id, ringing);
                break;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    alice.accept_remote_invitation(&ringing, "").await.unwrap();
    until(&mut ce, "local_invitation_accepted").await;
    // The presence subscription came along.
    if !followed {
        until(&mut ae, "presence_changed").await;
    }
    let (_dave, _de) = b.login("dave").await;
    let e = until(&mut ae, "presence_changed").await;
    assert_eq!(
        e,
        Event::PresenceChanged {
            user: "dave".into(),
            online: true
        }
    );
    // The session goes on: a drop now resumes on node B as usual.
    lb.cut();
    until(&mut ae, "connection_state_changed").await;
    let e = next(&mut ae).await;
    assert!(
        matches!(
            e,
            Event::ConnectionStateChanged {
                reason: callinvite_client::ConnectionReason::Resumed,
                ..
            }
        ),
        "{e:?}"
    );
    carol.hang_up(&ringing).await.unwrap();
    until(&mut ae, "call_ended").await;
}

#[tokio::test]
async fn a_resume_whose_node_never_answers_is_told_to_log_in_again() {
    let redis = Redis::start().await;
    let b = start_node(&redis, Config::default()).await;
    // "Node 8000" says it is alive (heartbeats, alive key, a device of
    // user "ghost" online there) but answers nothing.
    let url = redis.url.clone();
    let beat = tokio::spawn(async move {
        // Its first device id: the node's number in the top bits.
        let ghost = r#"{"t":"device_online","from":8000,"user":"ghost","device":8796093022208001}"#;
        redis_cli(&url, &["PUBLISH", "callinvite:all", ghost]).await;
        loop {
            let beat = r#"{"t":"heartbeat","from":8000}"#;
            redis_cli(&url, &["PUBLISH", "callinvite:all", beat]).await;
            redis_cli(&url, &["SET", "callinvite:alive:8000", "1", "PX", "1500"]).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Node B has heard of node 8000.
    let (watcher, _we) = b.login("watcher").await;
    until_online(&watcher, &["ghost"]).await;
    let mut raw = b.raw().await;
    raw.send(
        serde_json::json!({"type": "resume", "ref": 1, "session": "n8000.0f0f", "last_seq": 0}),
    )
    .await;
    let started = std::time::Instant::now();
    let e = raw.recv().await;
    assert_eq!(
        (&e["type"], &e["code"], &e["ref"]),
        (&"error".into(), &"session_expired".into(), &1.into()),
        "{e}"
    );
    println!(
        "told to log in again after {:?} (node timeout 1.5 s + heartbeat + 5 s)",
        started.elapsed()
    );
    // The connection is not logged in, and may log in; the next frame is
    // its login_ok (no second error for the abandoned resume).
    raw.send(serde_json::json!({"type": "login", "ref": 2, "user": "alice"}))
        .await;
    let ok = raw.recv().await;
    assert_eq!(ok["type"], "login_ok", "{ok}");
    beat.abort();
}

#[tokio::test]
async fn missed_calls_are_kept_in_redis_and_delivered_on_any_node() {
    let redis = Redis::start().await;
    let mut config = Config::default();
    config.timeouts.offline = Duration::from_millis(300);
    let a = start_node(&redis, config.clone()).await;
    let b = start_node(&redis, config.clone()).await;
    let (alice, mut ae) = a.login("alice").await;
    let inv = alice.create_local_invitation("carol").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    let e = until(&mut ae, "local_invitation_failure").await;
    assert!(matches!(
        e,
        Event::LocalInvitationFailure {
            reason: FailureReason::PeerOffline,
            ..
        }
    ));
    // Node B has heard of the missed call, and Redis keeps it.
    let (watcher, _we) = b.login("watcher").await;
    until_heard(&a.url, &watcher).await;
    eventually(
        "carol's missed call in Redis",
        WAIT,
        Duration::from_millis(10),
        || async {
            let n = redis_cli(&redis.url, &["EXISTS", "callinvite:missed:carol"]).await;
            (n.trim() == "1").then_some(())
        },
    )
    .await;
    // carol logs in on the other node, and on a node that started afterwards.
    let (_c1, mut c1) = b.login("carol").await;
    let e = next(&mut c1).await;
    assert!(
        matches!(&e, Event::MissedCalls { calls } if calls.len() == 1 && calls[0].invitation_id == id && calls[0].reason == MissedReason::PeerOffline),
        "{e:?}"
    );
    let c = start_node(&redis, config.clone()).await;
    let (carol, mut c2) = c.login("carol").await;
    let e = next(&mut c2).await;
    assert!(
        matches!(&e, Event::MissedCalls { calls } if calls.len() == 1),
        "{e:?}"
    );
    carol.clear_missed_calls(&[id]).await.unwrap();
    // Node A (alice's) has heard of it.
    until_heard(&c.url, &alice).await;
    let (probe, mut p) = a.login("carol").await;
    probe.query_presence(&["carol"]).await.unwrap();
    assert_eq!(p.try_next(), None, "cleared everywhere");
}

#[tokio::test]
async fn a_session_resumes_on_another_node_behind_a_load_balancer() {
    let redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    // The "load balancer": sends bob to node B now, to node A after the cut.
    let lb = Proxy::start(&b.url).await;
    let (alice, mut ae) = a.login("alice").await;
    let (bob, mut be) =
        callinvite_client::Client::login(callinvite_client::LoginOptions::new(&lb.url, "bob"))
            .await
            .unwrap();
    next(&mut be).await;
    until_online(&alice, &["bob"]).await;
    let inv = alice.create_local_invitation("bob").unwrap();
    let call = alice.send_local_invitation(&inv).await.unwrap();
    expect(&mut be, "remote_invitation_received").await;
    bob.accept_remote_invitation(&call, "").await.unwrap();
    expect(&mut be, "remote_invitation_accepted").await;
    until(&mut ae, "local_invitation_accepted").await;

    lb.retarget(&a.url);
    lb.cut();
    let e = next(&mut be).await;
    assert!(
        matches!(
            e,
            Event::ConnectionStateChanged {
                state: callinvite_client::ConnectionState::Reconnecting,
                ..
            }
        ),
        "{e:?}"
    );
    let e = next(&mut be).await;
    assert!(
        matches!(
            e,
            Event::ConnectionStateChanged {
                state: callinvite_client::ConnectionState::Connected,
                reason: callinvite_client::ConnectionReason::Resumed
            }
        ),
        "{e:?}"
    );
    // The session still lives on node B; bob's connection is on node A now.
    let p = bob.query_presence(&["alice"]).await.unwrap();
    assert!(p[0].online);
    alice.hang_up(&call).await.unwrap();
    let e = expect(&mut be, "call_ended").await;
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
    // bob calls alice from the resumed session.
    let inv = bob.create_local_invitation("alice").unwrap();
    let id = bob.send_local_invitation(&inv).await.unwrap();
    until(&mut ae, "remote_invitation_received").await;
    alice
        .refuse_remote_invitation(&id, "later", false)
        .await
        .unwrap();
    expect(&mut be, "local_invitation_sent").await;
    expect(&mut be, "local_invitation_received_by_peer").await;
    let e = expect(&mut be, "local_invitation_refused").await;
    assert!(matches!(&e, Event::LocalInvitationRefused { response, .. } if response == "later"));
    // Nothing was lost or repeated, and alice never saw bob go offline.
    settle().await;
    assert_eq!(be.try_next(), None);
    assert!(!std::iter::from_fn(|| ae.try_next())
        .any(|e| matches!(e, Event::PresenceChanged { online: false, .. })));
}

#[tokio::test]
async fn the_cluster_heals_after_redis_restarts() {
    let mut redis = Redis::start().await;
    let a = start_node(&redis, Config::default()).await;
    let b = start_node(&redis, Config::default()).await;
    let (alice, mut ae) = a.login("alice").await;
    alice.subscribe_presence(&["bob"]).await.unwrap();
    let (bob, mut be) = b.login("bob").await;
    assert_eq!(
        until(&mut ae, "presence_changed").await,
        Event::PresenceChanged {
            user: "bob".into(),
            online: true
        }
    );
    // Redis is down for longer than the node timeout: each node gives the other up.
    redis.restart(Duration::from_millis(2500)).await;
    assert_eq!(
        until(&mut ae, "presence_changed").await,
        Event::PresenceChanged {
            user: "bob".into(),
            online: false
        }
    );
    // Once it is back, the nodes find each other again, with no restart.
    assert_eq!(
        until(&mut ae, "presence_changed").await,
        Event::PresenceChanged {
            user: "bob".into(),
            online: true
        }
    );
    let inv = alice.create_local_invitation("bob").unwrap();
    let id = alice.send_local_invitation(&inv).await.unwrap();
    until(&mut be, "remote_invitation_received").await;
    bob.accept_remote_invitation(&id, "").await.unwrap();
    until(&mut ae, "local_invitation_accepted").await;
}
