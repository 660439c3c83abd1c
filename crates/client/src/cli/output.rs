//! What the CLI prints (one JSON object per line on stdout) and the exit
//! status that says how a run ended.

use serde_json::json;

use callinvite_client::media::{MediaEvent, MediaState};
use callinvite_client::{ClientError, Event, FailureReason};

/// How a run ended; the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Accepted (and the call has ended), or the bot/command did its job.
    Ok = 0,
    Error = 1,
    Refused = 10,
    Busy = 11,
    Canceled = 12,
    PeerOffline = 13,
    NoResponse = 14,
    Expired = 15,
    ConnectionLost = 16,
}

impl Outcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
            Outcome::Busy => "busy",
            Outcome::Canceled => "canceled",
            Outcome::PeerOffline => "peer_offline",
            Outcome::NoResponse => "no_response",
            Outcome::Expired => "expired",
            Outcome::ConnectionLost => "connection_lost",
        }
    }
    pub(crate) fn from_failure(reason: FailureReason) -> Self {
        match reason {
            FailureReason::PeerOffline => Outcome::PeerOffline,
            FailureReason::NoResponse => Outcome::NoResponse,
            FailureReason::Expired => Outcome::Expired,
            _ => Outcome::ConnectionLost,
        }
    }
}

pub(crate) fn print(value: &serde_json::Value) {
    println!("{value}");
}

pub(crate) fn print_event(event: &Event) {
    match serde_json::to_value(event) {
        Ok(v) => print(&v),
        Err(e) => eprintln!("cannot print event: {e}"),
    }
}

pub(crate) fn print_error(e: &ClientError) {
    print(&json!({"event": "error", "code": e.code(), "message": e.to_string()}));
}

/// One media event as a JSON line.
pub(crate) fn media_report(call: &str, event: MediaEvent) -> serde_json::Value {
    match event {
        MediaEvent::State(state) => {
            let state = match state {
                MediaState::Connecting => "connecting",
                MediaState::Connected => "connected",
                MediaState::Reconnecting => "reconnecting",
                MediaState::Closed => "closed",
            };
            json!({"event": "media_state", "invitation_id": call, "state": state})
        }
        MediaEvent::Failed(e) => {
            json!({"event": "media_failed", "invitation_id": call, "message": e.to_string()})
        }
        MediaEvent::Stats(s) => json!({
            "event": "media_stats", "invitation_id": call,
            "rtt_ms": s.rtt_ms, "loss": s.loss, "jitter_ms": s.jitter_ms,
            "packets_sent": s.packets_sent, "packets_received": s.packets_received,
            "mic_level": s.mic_level, "speaker_level": s.speaker_level,
            "fec_frames": s.fec_frames, "concealed_frames": s.concealed_frames,
            "playout_delay_ms": s.playout_delay_ms,
            "relayed": s.relayed, "relay_packets": s.relay_packets,
            "video": s.video.map(|v| json!({
                "camera_on": v.camera_on,
                "sent_width": v.sent_width, "sent_height": v.sent_height,
                "sent_fps": v.sent_fps, "sent_kbps": v.sent_kbps, "target_kbps": v.target_kbps,
                "frames_sent": v.frames_sent, "keyframes_sent": v.keyframes_sent,
                "keyframe_requests_received": v.keyframe_requests_received,
                "encode_ms": v.encode_ms,
                "receiving": v.receiving,
                "received_width": v.received_width, "received_height": v.received_height,
                "received_fps": v.received_fps, "frames_decoded": v.frames_decoded,
                "frames_dropped": v.frames_dropped, "keyframes_received": v.keyframes_received,
                "keyframes_requested": v.keyframes_requested, "decode_ms": v.decode_ms,
            })),
        }),
        MediaEvent::RemoteVideo(active) => {
            json!({"event": "remote_video", "invitation_id": call, "active": active})
        }
        MediaEvent::Signal(s) => {
            json!({"event": "media_signal", "invitation_id": call, "kind": s.kind()})
        }
    }
}
