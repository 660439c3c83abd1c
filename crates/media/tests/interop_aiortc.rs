//! Interoperability with a standard WebRTC stack: aiortc (Python), in both
//! roles. Each side sends a tone and must hear the other's; in the video
//! calls each side also sends colour bars (VP8) and must see the other's.
//!
//! Needs a Python with aiortc, so it is ignored by default:
//!
//! ```sh
//! python3 -m venv /tmp/aiortc && /tmp/aiortc/bin/pip install aiortc
//! AIORTC_PYTHON=/tmp/aiortc/bin/python cargo test -p callinvite-media --test interop_aiortc -- --ignored
//! ```

mod support;

use std::process::Stdio;
use std::time::Duration;

use callinvite_media::video::BARS;
use callinvite_media::{
    start_with_video, MediaConfig, MediaEvent, MediaSignal, NoProcessing, Role, SharedSink,
    TestPattern, ToneSource, VideoIo,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/aiortc_peer.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with aiortc (AIORTC_PYTHON)"]
async fn aiortc_answers_our_offer() {
    interop(Role::Offerer, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with aiortc (AIORTC_PYTHON)"]
async fn we_answer_an_aiortc_offer() {
    interop(Role::Answerer, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with aiortc (AIORTC_PYTHON)"]
async fn aiortc_answers_our_video_offer() {
    interop(Role::Offerer, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with aiortc (AIORTC_PYTHON)"]
async fn we_answer_an_aiortc_video_offer() {
    interop(Role::Answerer, true).await;
}

async fn interop(role: Role, video: bool) {
    support::init_tracing();
    let python = std::env::var("AIORTC_PYTHON").unwrap_or_else(|_| "python3".into());
    let their_role = match role {
        Role::Offerer => "answer",
        Role::Answerer => "offer",
    };
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .args(["--role", their_role, "--freq", "660", "--seconds", "4"])
        .args(video.then_some("--video"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run the aiortc peer");
    let mut to_peer = child.stdin.take().unwrap();
    let mut from_peer = BufReader::new(child.stdout.take().unwrap()).lines();

    // Loopback only, both sides (the peer script makes aiortc gather 127.0.0.1).
    let sink = SharedSink::new();
    let frames = support::FrameLog::default();
    let (handle, mut events) = start_with_video(
        role,
        MediaConfig {
            bind_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            ..MediaConfig::default()
        },
        Box::new(ToneSource::new(440.0, 0.3)),
        Box::new(sink.clone()),
        Box::new(NoProcessing),
        video.then(|| VideoIo {
            source: Some(Box::new(TestPattern::new(640, 480, 30).unwrap())),
            preview: None,
            sink: Box::new(frames.clone()),
            encoded: None,
        }),
    )
    .unwrap();

    let report = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(MediaEvent::Signal(s)) => {
                        let line = serde_json::to_string(&s).unwrap() + "\n";
                        to_peer.write_all(line.as_bytes()).await.unwrap();
                    }
                    Some(other) => eprintln!("engine: {other:?}"),
                    None => panic!("the engine stopped"),
                },
                line = from_peer.next_line() => {
                    let line = line.unwrap().expect("the aiortc peer exited early");
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    if v["kind"] == "report" {
                        break v;
                    }
                    let s: MediaSignal = serde_json::from_value(v).unwrap();
                    eprintln!("aiortc → engine: {}", s.kind());
                    handle.signal(s);
                }
            }
        }
    })
    .await
    .expect("the call did not complete in time");

    eprintln!("aiortc heard: {report}");
    let power = |f: &str| report["power"][f].as_f64().unwrap();
    assert!(
        report["rms"].as_f64().unwrap() > 0.05,
        "aiortc heard silence"
    );
    for f in ["300", "620", "660", "880", "1000"] {
        assert!(power("440") > 10.0 * power(f), "aiortc: 440 Hz vs {f} Hz");
    }
    let rec = sink.samples();
    assert!(
        rec.len() >= support::samples(1000),
        "we recorded {} samples",
        rec.len()
    );
    support::assert_hears(
        "we hear aiortc",
        &rec[rec.len() - support::samples(1000)..],
        660.0,
        440.0,
    );
    if video {
        // aiortc decoded our VP8 and sees our bars.
        let v = &report["video"];
        assert!(v["frames"].as_u64().unwrap() >= 30, "aiortc saw {v}");
        // Any rung of our sender's ladder: aiortc's REMB estimate decides.
        let sizes = [[640, 480], [320, 240], [160, 120]].map(|s| serde_json::json!(s));
        assert!(sizes.contains(&v["size"]), "{v}");
        for (i, want) in BARS.iter().enumerate() {
            let got = &v["bars"][i];
            for c in 0..3 {
                let d = (got[c].as_i64().unwrap() - i64::from(want[c])).abs();
                assert!(d <= 40, "aiortc sees bar {i} as {got}, not {want:?}");
            }
        }
        // We decoded aiortc's VP8 and see its bars.
        let recent = frames.recent(Duration::from_secs(1));
        eprintln!(
            "we saw {} pictures from aiortc, {} in the last second; bars error {:?}",
            frames.frames().len(),
            recent.len(),
            recent.last().map(|f| f.bars_error)
        );
        assert!(recent.len() >= 5, "we hardly see aiortc's video");
        assert!(recent
            .iter()
            .all(|f| f.bars_error <= 40 && (f.width, f.height) == (640, 480)));
    }
    handle.close();
    let _ = child.wait().await;
}
