//! The media of a run's accepted calls: the sources and sinks that
//! `--play`, `--record` and `--video` name, the engines of the calls, and
//! their reports.

use std::time::Duration;

use serde_json::json;

use callinvite_client::media::{
    bars_error, AudioSink, AudioSource, CallMedia, NoProcessing, NullSink, Role, SilenceSource,
    TestPattern, ToneSource, VideoFrame, VideoIo, VideoSink, VideoSource, WavSink, WavSource,
};
use callinvite_client::{Client, Event, InvitationId};

use super::args::MediaArgs;
use super::output::{media_report, print};

/// The source `--video` names (`None`: off).
fn video_source(what: &str) -> Result<Option<Box<dyn VideoSource>>, String> {
    let (kind, id) = match what.split_once(':') {
        Some((k, id)) => (k, Some(id)),
        None => (what, None),
    };
    match kind {
        "off" => Ok(None),
        "pattern" => Ok(Some(Box::new(
            TestPattern::new(640, 480, 30).map_err(|e| e.to_string())?,
        ))),
        #[cfg(feature = "camera")]
        "camera" => Ok(Some(Box::new(
            callinvite_client::media::video::CameraSource::open(id, 640, 480, 30)
                .map_err(|e| e.to_string())?,
        ))),
        #[cfg(feature = "screen")]
        "screen" => Ok(Some(Box::new(
            callinvite_client::media::video::ScreenSource::open(id, 1280, 720, 15)
                .map_err(|e| e.to_string())?,
        ))),
        #[cfg(not(feature = "camera"))]
        "camera" => Err(without(kind)),
        #[cfg(not(feature = "screen"))]
        "screen" => Err(without(kind)),
        _ => {
            let _ = id;
            Err("choose pattern, off, camera[:ID] or screen[:ID]".into())
        }
    }
}

/// Says that this build lacks the video source `kind`.
#[cfg(not(all(feature = "camera", feature = "screen")))]
fn without(kind: &str) -> String {
    format!(
        "this callinvite was built without the `{kind}` feature \
         (cargo build -p callinvite-client --features {kind})"
    )
}

/// A video sink that checks each received picture against the test
/// pattern (the CLI's way to show the picture got through).
struct PatternCheck(std::sync::Arc<std::sync::Mutex<Option<u8>>>);

impl VideoSink for PatternCheck {
    fn frame(&mut self, frame: &VideoFrame) {
        if let Ok(mut e) = self.0.lock() {
            *e = Some(bars_error(frame));
        }
    }
}

/// The media of this run's accepted calls, when --play or --record asked for it.
pub(crate) struct Media {
    client: Client,
    args: MediaArgs,
    calls: std::collections::BTreeMap<InvitationId, CallMedia>,
    /// What the engines report (state, failures, statistics), as JSON lines.
    reports: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
    reports_rx: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

impl Media {
    pub(crate) fn new(client: &Client, args: MediaArgs) -> Self {
        let (reports, reports_rx) = tokio::sync::mpsc::unbounded_channel();
        Media {
            client: client.clone(),
            args,
            calls: Default::default(),
            reports,
            reports_rx,
        }
    }

    pub(crate) fn source(&self) -> Result<Box<dyn AudioSource>, String> {
        match self.args.play.as_deref() {
            None | Some("silence") => Ok(Box::new(SilenceSource)),
            Some(tone) if tone.starts_with("tone:") => {
                let freq: f32 = tone["tone:".len()..].parse().map_err(|_| {
                    format!("--play {tone}: the frequency must be a number of Hz, e.g. tone:440")
                })?;
                if !(20.0..=20_000.0).contains(&freq) {
                    return Err(format!(
                        "--play {tone}: choose a frequency from 20 to 20000 Hz"
                    ));
                }
                Ok(Box::new(ToneSource::new(freq, 0.3)))
            }
            Some(path) => WavSource::open(path)
                .map(|w| Box::new(w.looping(true)) as Box<dyn AudioSource>)
                .map_err(|e| format!("--play {path}: {e}")),
        }
    }

    pub(crate) fn sink(&self, id: &InvitationId) -> Result<Box<dyn AudioSink>, String> {
        match &self.args.record {
            None => Ok(Box::new(NullSink)),
            Some(path) => {
                // Several calls in one run record to FILE.wav, FILE-2.wav, ...
                let path = if self.calls.is_empty() {
                    path.clone()
                } else {
                    path.with_file_name(format!(
                        "{}-{}.wav",
                        path.file_stem()
                            .map(|s| s.to_string_lossy())
                            .unwrap_or_default(),
                        self.calls.len() + 1
                    ))
                };
                WavSink::create(&path)
                    .map(|w| Box::new(w) as Box<dyn AudioSink>)
                    .map_err(|e| format!("--record {} for call {id}: {e}", path.display()))
            }
        }
    }

    /// Starts the media of an accepted call, if asked for.
    pub(crate) async fn start(&mut self, id: &InvitationId, role: Role) {
        if !self.args.enabled() {
            return;
        }
        let started = async {
            let mut config = CallMedia::config(&self.client).await;
            config.relay_only = self.args.relay_only;
            config.bind_ip = self.args.media_ip;
            let (source, sink) = (self.source()?, self.sink(id)?);
            let pattern_error = std::sync::Arc::new(std::sync::Mutex::new(None));
            let video = match self.args.video.as_deref() {
                None => None,
                Some(what) => Some(VideoIo {
                    source: video_source(what).map_err(|e| format!("--video {what}: {e}"))?,
                    preview: None,
                    sink: Box::new(PatternCheck(pattern_error.clone())),
                    encoded: None,
                }),
            };
            CallMedia::start_with_video(
                &self.client,
                id,
                role,
                config,
                source,
                sink,
                Box::new(NoProcessing),
                video,
            )
            .map(|(media, events)| (media, events, pattern_error))
            .map_err(|e| e.to_string())
        };
        match started.await {
            Ok((media, mut events, pattern_error)) => {
                let reports = self.reports.clone();
                let call = id.0.clone();
                // Started as the accept was seen: media_state lines say how long after it.
                let accepted = tokio::time::Instant::now();
                tokio::spawn(async move {
                    while let Some(e) = events.recv().await {
                        let mut report = media_report(&call, e);
                        if report.get("video").is_some_and(|v| v.is_object()) {
                            let error = pattern_error.lock().ok().and_then(|e| *e);
                            report["video"]["pattern_error"] = json!(error);
                        }
                        if report["event"] == "media_state" {
                            report["ms_since_accept"] =
                                json!(accepted.elapsed().as_millis() as u64);
                        }
                        let _ = reports.send(report);
                    }
                });
                self.calls.insert(id.clone(), media);
            }
            Err(message) => {
                print(&json!({"event": "media_failed", "invitation_id": id.0, "message": message}));
            }
        }
    }

    /// Stops the media of a call that ended, and lets its recording be finished.
    pub(crate) async fn stop(&mut self, id: &InvitationId) {
        if let Some(media) = self.calls.remove(id) {
            media.close();
            drop(media);
            // The engine closes its sink (a WAV file is finalized) as it stops.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Routes a media signal to its call's engine.
    pub(crate) fn on_event(&self, event: &Event) -> bool {
        self.calls.values().any(|m| m.on_event(event)) || matches!(event, Event::MediaSignal { .. })
    }

    pub(crate) async fn next(&mut self) -> Option<serde_json::Value> {
        self.reports_rx.recv().await
    }
}
