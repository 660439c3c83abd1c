//! Mapping between [`MediaSignal`]s (what the server relays) and str0m's
//! SDP and ICE candidate types. Everything coming from the peer is parsed
//! here, and never trusted: errors are values, never panics.

use callinvite_protocol::MediaSignal;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::error::SdpError;
use str0m::{Candidate, RtcError};

use crate::MediaError;

/// Parses the peer's offer.
pub fn parse_offer(sdp: &str) -> Result<SdpOffer, MediaError> {
    SdpOffer::from_sdp_string(sdp).map_err(|e| unparsable("offer", e))
}

/// Parses the peer's answer.
pub fn parse_answer(sdp: &str) -> Result<SdpAnswer, MediaError> {
    SdpAnswer::from_sdp_string(sdp).map_err(|e| unparsable("answer", e))
}

/// The parser's error, without the memory address it names the position by.
fn unparsable(what: &str, e: SdpError) -> MediaError {
    let msg = e.to_string();
    let msg = msg.split(" at PointerOffset").next().unwrap_or_default();
    MediaError::RemoteSdp(format!("cannot parse the {what} ({msg})"))
}

/// str0m refused to apply the peer's description.
pub fn rejected_sdp(e: RtcError) -> MediaError {
    match e {
        RtcError::RemoteSdp(msg) => MediaError::RemoteSdp(msg),
        other => MediaError::RemoteSdp(other.to_string()),
    }
}

/// What a trickled candidate line says.
#[derive(Debug)]
pub enum RemoteCandidate {
    /// A candidate to add.
    Candidate(Candidate),
    /// An empty candidate: browsers' way of saying "end of candidates".
    End,
}

/// Parses a trickled candidate: `candidate:…` as RFC 8839 writes it,
/// tolerating a leading `a=` and surrounding white space.
pub fn parse_candidate(line: &str) -> Result<RemoteCandidate, String> {
    let line = line.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    if line.is_empty() {
        return Ok(RemoteCandidate::End);
    }
    Candidate::from_sdp_string(line)
        .map(RemoteCandidate::Candidate)
        .map_err(|e| e.to_string())
}

/// The signal announcing one of our candidates.
pub fn candidate_signal(c: &Candidate) -> MediaSignal {
    MediaSignal::Candidate {
        candidate: c.to_sdp_string(),
    }
}

/// A `Bye` whose reason fits the protocol's 256-byte limit.
pub fn bye(reason: &str) -> MediaSignal {
    let mut end = reason.len().min(256);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    MediaSignal::Bye {
        reason: reason[..end].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_parse_leniently_and_garbage_is_an_error() {
        let ok = "candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host";
        for line in [ok.to_string(), format!("a={ok}"), format!("  {ok}\r\n")] {
            match parse_candidate(&line) {
                Ok(RemoteCandidate::Candidate(c)) => {
                    assert_eq!(c.addr(), "192.0.2.7:50000".parse().unwrap())
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
        assert!(matches!(parse_candidate(""), Ok(RemoteCandidate::End)));
        for bad in [
            "candidate:garbage",
            "candidate:1 1 udp 1 host.local 5000 typ host",
            "hello",
            "candidate:1 1 udp 99999999999 192.0.2.7 5000 typ host",
        ] {
            assert!(parse_candidate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_sdp_is_an_error_with_a_message() {
        let e = parse_offer("v=0\r\nm=garbage").unwrap_err();
        assert!(
            matches!(&e, MediaError::RemoteSdp(m) if !m.is_empty()),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("remote sdp: cannot parse the offer"),
            "{e}"
        );
        assert!(!e.to_string().contains("PointerOffset"), "{e}");
    }

    #[test]
    fn bye_reasons_are_cut_at_a_char_boundary() {
        let MediaSignal::Bye { reason } = bye(&"é".repeat(200)) else {
            unreachable!()
        };
        assert!(reason.len() <= 256);
        assert!(bye("x").check().is_ok());
    }
}
