//! What two devices in an established call say to each other to set up the
//! media path (WebRTC): SDP offer and answer, trickled ICE candidates. The
//! server relays a [`MediaSignal`] only between the two devices of the call
//! (the caller's device and the callee device that accepted), checks its
//! shape and size first ([`MediaSignal::check`]), and never reads the SDP
//! beyond that. It also hands each logged-in client the STUN/TURN servers to
//! use ([`IceServer`], in `login_ok`).

use serde::{Deserialize, Serialize};

/// Largest SDP in an `offer` or `answer`, in bytes (a real audio+video offer is 3–6 KiB).
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Largest `candidate` line, in bytes (a real one is under 200).
pub const MAX_CANDIDATE_BYTES: usize = 512;
/// Most media signals one device may send in one call. A call needs a
/// handful (an offer, an answer, a few candidates, an ICE restart now and
/// then); more is a flood, answered `rate_limited`.
pub const MAX_SIGNALS_PER_CALL: u32 = 256;

/// One step of the media negotiation, relayed verbatim to the other device
/// of the call. On the wire: `{"kind":"offer","sdp":"v=0…"}`,
/// `{"kind":"answer","sdp":"v=0…"}`,
/// `{"kind":"candidate","candidate":"candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host"}`,
/// `{"kind":"end_of_candidates"}`, `{"kind":"bye","reason":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MediaSignal {
    /// An SDP offer (RFC 8829). The caller's device offers first; either side
    /// offers again for an ICE restart.
    Offer { sdp: String },
    /// The SDP answer to the last offer.
    Answer { sdp: String },
    /// One trickled ICE candidate (RFC 8840), as the `a=candidate:` attribute
    /// value without the `a=` (it starts with `candidate:`).
    Candidate { candidate: String },
    /// No more candidates will come for the current offer/answer.
    EndOfCandidates,
    /// The sender's media stopped or failed; `reason` says why, for the log.
    /// The call itself goes on (only a `hangup` ends it).
    Bye {
        #[serde(default)]
        reason: String,
    },
}

impl MediaSignal {
    /// The wire name of the kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MediaSignal::Offer { .. } => "offer",
            MediaSignal::Answer { .. } => "answer",
            MediaSignal::Candidate { .. } => "candidate",
            MediaSignal::EndOfCandidates => "end_of_candidates",
            MediaSignal::Bye { .. } => "bye",
        }
    }

    /// Checks size and shape, so that nothing unusable is relayed. The error
    /// is the message of an `invalid_argument` reply.
    pub fn check(&self) -> Result<(), String> {
        match self {
            MediaSignal::Offer { sdp } | MediaSignal::Answer { sdp } => {
                if sdp.len() > MAX_SDP_BYTES {
                    return Err(format!(
                        "sdp is {} bytes; at most {MAX_SDP_BYTES} are allowed",
                        sdp.len()
                    ));
                }
                // RFC 8866 §5: every session description starts with "v=0".
                if !sdp.starts_with("v=0\r\n") && !sdp.starts_with("v=0\n") {
                    return Err(
                        "sdp is not a session description: it must start with \"v=0\"".into(),
                    );
                }
                if !sdp.contains("\nm=") {
                    return Err("sdp has no media section (\"m=\" line)".into());
                }
                Ok(())
            }
            MediaSignal::Candidate { candidate } => {
                if candidate.len() > MAX_CANDIDATE_BYTES {
                    return Err(format!(
                        "candidate is {} bytes; at most {MAX_CANDIDATE_BYTES} are allowed",
                        candidate.len()
                    ));
                }
                if !candidate.starts_with("candidate:") || candidate.contains(['\r', '\n']) {
                    return Err(
                        "candidate must be one line starting with \"candidate:\" (RFC 8839)".into(),
                    );
                }
                Ok(())
            }
            MediaSignal::EndOfCandidates => Ok(()),
            MediaSignal::Bye { reason } => {
                if reason.len() > 256 {
                    return Err("bye reason is longer than 256 bytes".into());
                }
                Ok(())
            }
        }
    }
}

/// A STUN or TURN server for ICE, in the shape of WebRTC's `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:host:port`.
    pub urls: Vec<String>,
    /// TURN user name (with coturn's shared-secret scheme: `<expiry>:<user>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (with the shared-secret scheme: base64 HMAC-SHA1 of the user name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_use_the_documented_spelling() {
        let c = MediaSignal::Candidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"kind":"candidate","candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"}"#
        );
        assert_eq!(
            serde_json::to_string(&MediaSignal::EndOfCandidates).unwrap(),
            r#"{"kind":"end_of_candidates"}"#
        );
        let back: MediaSignal = serde_json::from_str(r#"{"kind":"bye"}"#).unwrap();
        assert_eq!(
            back,
            MediaSignal::Bye {
                reason: String::new()
            }
        );
    }

    #[test]
    fn check_rejects_what_cannot_be_sdp_or_a_candidate() {
        let ok = MediaSignal::Offer {
            sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".into(),
        };
        assert_eq!(ok.check(), Ok(()));
        for bad in [
            MediaSignal::Offer {
                sdp: "hello".into(),
            },
            MediaSignal::Answer {
                sdp: "v=0\r\ns=-\r\n".into(),
            },
            MediaSignal::Offer {
                sdp: format!("v=0\r\nm=audio\r\n{}", "a".repeat(MAX_SDP_BYTES)),
            },
            MediaSignal::Candidate {
                candidate: "typ host".into(),
            },
            MediaSignal::Candidate {
                candidate: "candidate:1\r\na=evil".into(),
            },
            MediaSignal::Candidate {
                candidate: format!("candidate:{}", "1".repeat(MAX_CANDIDATE_BYTES)),
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn ice_servers_omit_absent_credentials() {
        let s = IceServer {
            urls: vec!["stun:127.0.0.1:3478".into()],
            username: None,
            credential: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"urls":["stun:127.0.0.1:3478"]}"#
        );
    }
}
