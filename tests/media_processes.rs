//! Calls with sound between real `callinvite` processes: each side plays a
//! tone and records what it hears; the recordings are checked by their
//! spectrum (the peer's frequency, not our own, not noise). With
//! `--video pattern` each side also sends the test pattern and reports how
//! far the pictures it decodes are from it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use callinvite_e2e::{assert_hears, binary, cli, named, read_wav, rms, start_server, Coturn};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callinvite-media-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A call with a tone each way: bob (`answer --accept`, 880 Hz, hangs up
/// after 4 s) and alice (`call bob`, 440 Hz), both recording into `dir`, with
/// `extra` flags for both. Checks both exit 0 and each hears the other's tone;
/// returns alice's and bob's events, alice's recording and its rate.
fn tone_call(url: &str, dir: &Path, extra: &[&str]) -> (Vec<Value>, Vec<Value>, Vec<i16>, u32) {
    let (a_wav, b_wav) = (dir.join("alice.wav"), dir.join("bob.wav"));
    let side = |args: &[&str], freq: &str, wav: &Path| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--play".into(), format!("tone:{freq}"), "--record".into()]);
        v.push(wav.to_str().expect("utf-8 temp path").to_owned());
        v.extend(["--media-ip".into(), "127.0.0.1".into()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let bob_args = side(
        &["answer", "--accept", "--hangup-after", "4s"],
        "880",
        &b_wav,
    );
    let mut bob = cli(
        "bob",
        url,
        "bob",
        &bob_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    bob.wait_event("connection_state_changed");
    let alice_args = side(&["call", "bob"], "440", &a_wav);
    let alice = cli(
        "alice",
        url,
        "alice",
        &alice_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (status, events) = alice.finish();
    assert_eq!(status.code(), Some(0), "{events:?}");
    let (bob_status, bob_events) = bob.finish();
    assert_eq!(bob_status.code(), Some(0), "{bob_events:?}");

    let (a, rate) = read_wav(&a_wav);
    let (b, _) = read_wav(&b_wav);
    eprintln!(
        "{}",
        assert_hears("alice hears bob", &a, rate, 880.0, 440.0)
    );
    eprintln!(
        "{}",
        assert_hears("bob hears alice", &b, rate, 440.0, 880.0)
    );
    (events, bob_events, a, rate)
}

/// Both sides send the colour-bar test pattern through the server's
/// signaling: each CLI's last `media_stats` shows it decoding the other's
/// pictures at 640×480 with the bars in place, beside the tones.
#[test]
fn two_clients_see_each_others_test_pattern() {
    let (_server, url) = start_server(&[]);
    let dir = temp_dir("video");
    let (events, bob_events, _, _) = tone_call(&url, &dir, &["--video", "pattern"]);
    for (who, events) in [("alice", &events), ("bob", &bob_events)] {
        let stats = named(events, "media_stats");
        let last = stats
            .iter()
            .rev()
            .find(|s| s["video"]["frames_decoded"].as_u64().unwrap_or(0) > 0)
            .unwrap_or_else(|| panic!("{who} decoded no picture: {events:?}"));
        let v = &last["video"];
        eprintln!("{who}'s last video stats: {v}");
        assert!(v["frames_decoded"].as_u64().unwrap() >= 30, "{who}: {v}");
        let error = v["pattern_error"].as_u64().expect("pattern_error");
        assert!(error <= 40, "{who} sees the bars off by {error}: {v}");
        assert_eq!(
            (v["received_width"].as_u64(), v["received_height"].as_u64()),
            (Some(640), Some(480)),
            "{who}: {v}"
        );
        assert!(
            named(events, "remote_video")
                .iter()
                .any(|e| e["active"] == true),
            "{who} was never told the peer's video started"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A misspelled video source fails when the command line is read (exit
/// 2, saying what to choose), not later when a call is accepted.
#[test]
fn a_misspelled_video_source_is_refused_at_once() {
    let out = std::process::Command::new(binary("callinvite"))
        .args(["--server", "ws://127.0.0.1:9", "--user", "alice"])
        .args(["call", "bob", "--video", "patern"])
        .output()
        .expect("run callinvite");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("choose pattern, off, camera[:ID] or screen[:ID]"),
        "{stderr}"
    );
}

#[test]
fn two_clients_hear_each_others_tone() {
    let (_server, url) = start_server(&[]);
    let dir = temp_dir("direct");
    let (events, _, a, rate) = tone_call(&url, &dir, &[]);
    let states: Vec<&str> = named(&events, "media_state")
        .iter()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert!(
        states.contains(&"connected"),
        "alice's media never connected: {events:?}"
    );
    // After bob hung up, alice's recording ends in silence: the last 100 ms are quiet.
    let tail = &a[a.len().saturating_sub(rate as usize / 10)..];
    eprintln!("alice's last 100 ms: rms {:.4}", rms(tail));
    let _ = std::fs::remove_dir_all(dir);
}

/// Both sides `--relay-only`: the server hands out coturn credentials
/// (`--turn-url`, `--turn-secret-file`), each CLI allocates a relay on coturn
/// and only relay candidates are exchanged, so the sound can only have gone
/// through coturn.
#[test]
fn relay_only_call_through_coturn() {
    let secret = "e2e-turn-secret-0123456789abcdef";
    let coturn = Coturn::start(secret);
    let dir = temp_dir("relay");
    let secret_file = dir.join("turn-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    let turn_url = format!("turn:{}?transport=udp", coturn.addr);
    let (_server, url) = start_server(&[
        "--turn-url",
        &turn_url,
        "--turn-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let (events, bob_events, _, _) = tone_call(&url, &dir, &["--relay-only"]);
    for (who, events) in [("alice", &events), ("bob", &bob_events)] {
        let states: Vec<&str> = named(events, "media_state")
            .iter()
            .filter_map(|e| e["state"].as_str())
            .collect();
        assert!(
            states.contains(&"connected"),
            "{who}'s media never connected: {events:?}"
        );
        assert!(
            named(events, "media_failed").is_empty(),
            "{who}'s media failed: {events:?}"
        );
        if let Some(stats) = named(events, "media_stats").last() {
            eprintln!("{who}'s last media_stats: {stats}");
        }
    }

    // coturn's side: each user (the server's TURN user name is
    // `<expiry>:<user id>`) got an allocation, and channels were bound.
    for user in ["alice", "bob"] {
        let sessions = coturn.log_lines(&[&format!(":{user}>"), "ALLOCATE", "success"]);
        assert!(
            !sessions.is_empty(),
            "coturn logged no allocation for {user}:\n{}",
            coturn.log().join("\n")
        );
        eprintln!("coturn: {}", sessions[0]);
    }
    let binds = coturn.log_lines(&["CHANNEL_BIND", "success"]);
    assert!(
        !binds.is_empty(),
        "coturn logged no channel bind:\n{}",
        coturn.log().join("\n")
    );
    eprintln!("coturn: {} channel binds", binds.len());
    // For the log only (the CLIs may exit before their deallocation is
    // answered): allocations given back at hang-up rather than left to expire.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while coturn.log_lines(&["REFRESH", "success"]).len() < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!(
        "coturn: {} allocations deallocated at hang-up",
        coturn.log_lines(&["REFRESH", "success"]).len()
    );
    let _ = std::fs::remove_dir_all(dir);
}
