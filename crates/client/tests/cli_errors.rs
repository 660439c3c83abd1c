//! The `callinvite` binary's answers to bad usage, without a server.

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_callinvite"))
        .args(args)
        .env_remove("CALLINVITE_USER")
        .output()
        .expect("run callinvite");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.code(), events)
}

#[test]
fn missing_user_is_an_invalid_argument() {
    let (code, events) = run(&["call", "bob"]);
    assert_eq!(code, Some(1));
    assert_eq!(events[0]["code"], "invalid_argument");
    assert_eq!(events.last().unwrap()["event"], "done");
}

#[test]
fn bad_user_id_is_refused_before_connecting() {
    let (code, events) = run(&[
        "--user",
        "bad/id",
        "--server",
        "ws://127.0.0.1:9",
        "presence",
        "x",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(events[0]["code"], "invalid_argument");
    assert!(
        events[0]["message"].as_str().unwrap().contains('/'),
        "{events:?}"
    );
}

#[test]
fn unreachable_server_says_so() {
    // Port 9 (discard) on loopback: nothing listens there on a test machine.
    let (code, events) = run(&[
        "--user",
        "alice",
        "--server",
        "ws://127.0.0.1:9",
        "call",
        "bob",
    ]);
    assert_eq!(code, Some(1));
    let msg = events[0]["message"].as_str().unwrap();
    assert!(msg.contains("cannot connect to ws://127.0.0.1:9"), "{msg}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = run(&["--user", "alice", "answer"]);
    assert_eq!(
        code,
        Some(2),
        "answer needs one of --accept/--refuse/--busy/--ignore"
    );
}
