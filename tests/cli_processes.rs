//! The real `callinvite-server` and two or more `callinvite` processes on
//! loopback, checked through their JSON output and exit statuses.

use std::process::Command;

use callinvite_e2e::{binary, cli, named, start_server};

#[test]
fn bot_accepts_then_hangs_up() {
    let (_server, url) = start_server(&[]);
    let mut bob = cli(
        "bob",
        &url,
        "bob",
        &[
            "answer",
            "--accept",
            "--response",
            "hello alice",
            "--hangup-after",
            "300ms",
        ],
    );
    bob.wait_event("connection_state_changed");
    let alice = cli(
        "alice",
        &url,
        "alice",
        &["call", "bob", "--content", "room-1"],
    );
    let (status, events) = alice.finish();
    assert_eq!(status.code(), Some(0), "{events:?}");
    let order: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        order,
        [
            "connection_state_changed",
            "local_invitation_sent",
            "local_invitation_received_by_peer",
            "local_invitation_accepted",
            "call_ended",
            "done"
        ]
    );
    assert_eq!(
        named(&events, "local_invitation_accepted")[0]["response"],
        "hello alice"
    );
    let ended = named(&events, "call_ended")[0];
    assert_eq!(
        (ended["reason"].as_str(), ended["by"].as_str()),
        (Some("hangup"), Some("bob"))
    );

    let (status, events) = bob.finish();
    assert_eq!(status.code(), Some(0));
    let received = named(&events, "remote_invitation_received")[0];
    assert_eq!(received["invitation"]["caller"], "alice");
    assert_eq!(received["invitation"]["content"], "room-1");
    assert_eq!(named(&events, "remote_invitation_accepted").len(), 1);
}

#[test]
fn busy_refusal_and_cancel_have_their_own_exit_statuses() {
    let (_server, url) = start_server(&[]);
    let mut bob = cli(
        "bob",
        &url,
        "bob",
        &["answer", "--busy", "--response", "in a meeting"],
    );
    bob.wait_event("connection_state_changed");
    let (status, events) = cli("alice", &url, "alice", &["call", "bob"]).finish();
    assert_eq!(status.code(), Some(11), "busy: {events:?}");
    let refused = named(&events, "local_invitation_refused")[0];
    assert_eq!(
        (refused["busy"].as_bool(), refused["response"].as_str()),
        (Some(true), Some("in a meeting"))
    );
    assert_eq!(bob.finish().0.code(), Some(0));

    let mut carol = cli("carol", &url, "carol", &["answer", "--ignore"]);
    carol.wait_event("connection_state_changed");
    let (status, events) = cli(
        "alice",
        &url,
        "alice",
        &["call", "carol", "--cancel-after", "300ms"],
    )
    .finish();
    assert_eq!(status.code(), Some(12), "canceled: {events:?}");
    let (status, events) = carol.finish();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        named(&events, "remote_invitation_canceled").len(),
        1,
        "{events:?}"
    );
}

#[test]
fn offline_callee_fails_after_the_servers_offline_window() {
    let (_server, url) = start_server(&["--offline-window", "1s"]);
    let (status, events) = cli("alice", &url, "alice", &["call", "nobody"]).finish();
    assert_eq!(status.code(), Some(13), "{events:?}");
    assert_eq!(
        named(&events, "local_invitation_sent")[0]["callee_online"],
        false
    );
    assert_eq!(
        named(&events, "local_invitation_failure")[0]["reason"],
        "peer_offline"
    );
    let (status, events) =
        cli("presence", &url, "alice", &["presence", "nobody", "alice"]).finish();
    assert_eq!(status.code(), Some(0));
    let users = &named(&events, "presence")[0]["users"];
    assert_eq!(users[0]["online"], false);
    assert_eq!(users[1]["online"], true);
}

#[test]
fn tokens_minted_by_the_server_binary_are_required_and_accepted() {
    let dir = std::env::temp_dir().join(format!("callinvite-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "a-test-secret-of-enough-length\n").unwrap();
    let secret = secret.to_str().unwrap();
    let (_server, url) = start_server(&["--secret-file", secret]);
    let mint = |user: &str| {
        let out = Command::new(binary("callinvite-server"))
            .args([
                "token",
                "--user",
                user,
                "--ttl",
                "1h",
                "--secret-file",
                secret,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (status, events) = cli("no-token", &url, "alice", &["presence", "bob"]).finish();
    assert_eq!(status.code(), Some(1));
    assert_eq!(named(&events, "error")[0]["code"], "invalid_token");

    let bob_token = mint("bob");
    let mut bob = cli(
        "bob",
        &url,
        "bob",
        &["--token", &bob_token, "answer", "--refuse"],
    );
    bob.wait_event("connection_state_changed");
    let alice_token = mint("alice");
    let (status, events) = cli(
        "alice",
        &url,
        "alice",
        &["--token", &alice_token, "call", "bob"],
    )
    .finish();
    assert_eq!(status.code(), Some(10), "{events:?}");
    assert_eq!(bob.finish().0.code(), Some(0));
    // Bob's token does not let anyone else in.
    let (status, _) = cli(
        "mallory",
        &url,
        "mallory",
        &["--token", &bob_token, "presence", "bob"],
    )
    .finish();
    assert_eq!(status.code(), Some(1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hangup_from_another_process_of_the_caller_ends_the_call_on_both_sides() {
    let (_server, url) = start_server(&[]);
    let mut bob = cli("bob", &url, "bob", &["answer", "--accept"]);
    bob.wait_event("connection_state_changed");
    let mut alice = cli("alice", &url, "alice", &["call", "bob"]);
    let sent = alice.wait_event("local_invitation_sent");
    let id = sent["invitation"]["invitation_id"]
        .as_str()
        .expect("invitation id")
        .to_owned();
    alice.wait_event("local_invitation_accepted");
    // A second device of alice's hangs the call up by id.
    let (status, _) = cli("alice-hangup", &url, "alice", &["hangup", &id]).finish();
    assert_eq!(status.code(), Some(0));
    let (status, events) = alice.finish();
    assert_eq!(status.code(), Some(0));
    assert_eq!(named(&events, "call_ended")[0]["by"], "alice");
    let (status, events) = bob.finish();
    assert_eq!(status.code(), Some(0));
    assert_eq!(named(&events, "call_ended")[0]["reason"], "hangup");
}

#[test]
fn sigterm_ends_calls_with_a_reason_and_the_server_exits() {
    let (mut server, url) = start_server(&[]);
    let mut bob = cli("bob", &url, "bob", &["answer", "--ignore"]);
    bob.wait_event("connection_state_changed");
    let mut alice = cli("alice", &url, "alice", &["call", "bob"]);
    alice.wait_event("local_invitation_received_by_peer");
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (status, events) = alice.finish();
    assert_eq!(status.code(), Some(16), "connection lost: {events:?}");
    assert_eq!(
        named(&events, "local_invitation_failure")[0]["reason"],
        "server_shutdown"
    );
    let (_, events) = bob.finish();
    assert_eq!(
        named(&events, "remote_invitation_failure")[0]["reason"],
        "server_shutdown"
    );
    server.wait_line("stopped");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        server.child.try_wait().unwrap().and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn killing_a_node_of_a_cluster_ends_its_calls_for_users_on_the_other_node() {
    let (_redis, redis_url) = callinvite_e2e::start_redis();
    let node = ["--redis", redis_url.as_str(), "--node-timeout", "1s"];
    let (_a, url_a) = start_server(&node);
    let (mut b, url_b) = start_server(&node);
    // bob on node B accepts and stays in the call; alice on node A calls him.
    let mut bob = cli("bob", &url_b, "bob", &["answer", "--accept"]);
    bob.wait_event("connection_state_changed");
    let mut watcher = cli(
        "watcher",
        &url_a,
        "watcher",
        &["presence", "bob", "--watch", "30s"],
    );
    watcher.wait_line("\"online\":true");
    let mut alice = cli("alice", &url_a, "alice", &["call", "bob"]);
    alice.wait_event("local_invitation_accepted");

    // Node B dies (SIGKILL: no goodbye, no close frames).
    b.child.kill().expect("kill node B");
    let started = std::time::Instant::now();
    let (status, events) = alice.finish();
    let ended = named(&events, "call_ended")[0];
    assert_eq!(ended["reason"], "peer_connection_lost", "{events:?}");
    assert_eq!(status.code(), Some(0));
    watcher.wait_line("\"online\":false");
    println!(
        "node B killed: alice's call ended and bob went offline after {:?} (node timeout 1 s)",
        started.elapsed()
    );
}

#[test]
fn a_session_on_a_killed_node_moves_to_the_other_node_behind_the_load_balancer() {
    let (_redis, redis_url) = callinvite_e2e::start_redis();
    let node = ["--redis", redis_url.as_str(), "--node-timeout", "1s"];
    let (_a, url_a) = start_server(&node);
    let (mut b, url_b) = start_server(&node);
    // bob reaches the cluster through a load balancer that sends him to node B.
    let lb = callinvite_e2e::Forwarder::start(&url_b);
    let mut bob = cli(
        "bob",
        &lb.url,
        "bob",
        &["answer", "--accept", "--count", "2"],
    );
    bob.wait_event("connection_state_changed");
    let mut watcher = cli(
        "watcher",
        &url_a,
        "watcher",
        &["presence", "bob", "--watch", "30s"],
    );
    watcher.wait_line("\"online\":true");
    let mut alice = cli("alice", &url_a, "alice", &["call", "bob"]);
    alice.wait_event("local_invitation_accepted");
    // Both sides are in the call (else bob's `ok` could die with node B, and
    // his accept would end as lost in flight instead).
    bob.wait_event("remote_invitation_accepted");

    // Node B dies (SIGKILL); the load balancer sends new connections to node A.
    lb.retarget(&url_a);
    b.child.kill().expect("kill node B");
    let started = std::time::Instant::now();
    let (_, events) = alice.finish();
    assert_eq!(
        named(&events, "call_ended")[0]["reason"],
        "peer_connection_lost",
        "{events:?}"
    );
    // bob's client resumes through the load balancer; node A takes his session over.
    let line = bob.wait_line("\"session_moved\"");
    println!(
        "node B killed: bob's session moved to node A after {:?} (node timeout 1 s)",
        started.elapsed()
    );
    assert!(line.contains("\"connected\""), "{line}");
    // He is online again (a new device), and answers the next call without logging in again.
    watcher.wait_line("\"online\":true");
    let alice = cli(
        "alice",
        &url_a,
        "alice",
        &["call", "bob", "--hangup-after", "500ms"],
    );
    let (status, events) = alice.finish();
    assert_eq!(status.code(), Some(0), "{events:?}");
    assert_eq!(named(&events, "local_invitation_accepted").len(), 1);
    let (status, events) = bob.finish();
    assert_eq!(status.code(), Some(0), "{events:?}");
    let ended = named(&events, "call_ended");
    assert_eq!(ended[0]["reason"], "not_logged_in", "{events:?}");
    assert_eq!(ended[1]["reason"], "hangup", "{events:?}");
    assert_eq!(
        named(&events, "connection_state_changed")
            .iter()
            .filter(|e| e["reason"] == "login_success")
            .count(),
        1,
        "no second login: {events:?}"
    );
}
