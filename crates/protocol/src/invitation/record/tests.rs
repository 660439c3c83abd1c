//! Unit tests of [`Record`](super::Record), at chosen instants; small
//! builders (`new`, `ringing`, `ack`, `accept_by`, …) make the inputs.

use std::time::Duration;

use super::*;
use crate::codes::CallEndReason;

const CALLER_DEV: DeviceId = DeviceId(1);
const B1: DeviceId = DeviceId(21);
const B2: DeviceId = DeviceId(22);
const MALLORY_DEV: DeviceId = DeviceId(99);

fn alice() -> Party {
    Party {
        user: UserId::parse("alice").unwrap(),
        device: CALLER_DEV,
    }
}
fn bob(device: DeviceId) -> Party {
    Party {
        user: UserId::parse("bob").unwrap(),
        device,
    }
}
fn mallory() -> Party {
    Party {
        user: UserId::parse("mallory").unwrap(),
        device: MALLORY_DEV,
    }
}
fn iid() -> InvitationId {
    InvitationId("inv".into())
}
fn new(devices: &[DeviceId], t0: Instant) -> (Record, Vec<Effect>) {
    Record::new(
        iid(),
        alice(),
        1,
        UserId::parse("bob").unwrap(),
        "hello".into(),
        devices,
        Timeouts::default(),
        t0,
    )
}
/// The callee's device `from` acknowledges the invitation.
fn ack(from: DeviceId) -> Input {
    Input::Ack {
        from,
        of: AckOf::Invitation,
    }
}
/// The callee's device `from` acknowledges the cancellation.
fn ack_canceled(from: DeviceId) -> Input {
    Input::Ack {
        from,
        of: AckOf::Canceled,
    }
}
/// `from` accepts with an empty response.
fn accept_by(from: Party, req: u64) -> Input {
    Input::Accept {
        from,
        req,
        response: String::new(),
    }
}
fn to(to: DeviceId, msg: ServerMessage) -> Effect {
    Effect { to, msg }
}
fn failed(reason: FailureReason) -> ServerMessage {
    ServerMessage::Failed {
        invitation_id: iid(),
        reason,
    }
}
fn ok(req: u64) -> ServerMessage {
    ServerMessage::Ok { req: Some(req) }
}
fn err_code(fx: &[Effect]) -> ErrorCode {
    match fx {
        [Effect {
            msg: ServerMessage::Error { code, .. },
            ..
        }] => *code,
        other => panic!("expected one error, got {other:?}"),
    }
}
fn invitation() -> ServerMessage {
    ServerMessage::Invitation {
        invitation_id: iid(),
        caller: "alice".into(),
        content: "hello".into(),
    }
}
/// Delivered to B1 and B2, acked by B1: ringing.
fn media(from: Party, req: u64, signal: crate::media::MediaSignal) -> Input {
    Input::Media { from, req, signal }
}

fn candidate() -> crate::media::MediaSignal {
    crate::media::MediaSignal::Candidate {
        candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
    }
}

#[test]
fn media_signals_go_only_between_the_two_devices_of_the_call() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    // Not yet a call: nothing is relayed.
    assert_eq!(
        err_code(&r.handle(media(alice(), 1, candidate()), t0)),
        ErrorCode::InvalidArgument
    );
    r.handle(accept_by(bob(B1), 2), t0);
    let relayed = |from: &str| ServerMessage::Media {
        invitation_id: iid(),
        from: from.into(),
        signal: candidate(),
    };
    assert_eq!(
        r.handle(media(alice(), 3, candidate()), t0),
        vec![to(CALLER_DEV, ok(3)), to(B1, relayed("alice"))]
    );
    assert_eq!(
        r.handle(media(bob(B1), 4, candidate()), t0),
        vec![to(B1, ok(4)), to(CALLER_DEV, relayed("bob"))]
    );
    // bob's other device, a stranger, and a malformed signal are refused, with nothing relayed.
    assert_eq!(
        err_code(&r.handle(media(bob(B2), 5, candidate()), t0)),
        ErrorCode::NotInCall
    );
    assert_eq!(
        err_code(&r.handle(media(mallory(), 6, candidate()), t0)),
        ErrorCode::NotFound
    );
    let bad = crate::media::MediaSignal::Offer {
        sdp: "not sdp".into(),
    };
    assert_eq!(
        err_code(&r.handle(media(alice(), 7, bad), t0)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(r.phase_name(), "in_call", "refusals change nothing");
    // After the hang-up: already ended.
    r.handle(
        Input::Hangup {
            from: alice(),
            req: 8,
        },
        t0,
    );
    assert_eq!(
        err_code(&r.handle(media(bob(B1), 9, candidate()), t0)),
        ErrorCode::AlreadyEnded
    );
}

#[test]
fn a_candidate_flood_is_cut_off_per_device_and_the_call_goes_on() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    r.handle(accept_by(bob(B1), 1), t0);
    for i in 0..crate::media::MAX_SIGNALS_PER_CALL as u64 {
        assert_eq!(r.handle(media(alice(), 10 + i, candidate()), t0).len(), 2);
    }
    assert_eq!(
        err_code(&r.handle(media(alice(), 999, candidate()), t0)),
        ErrorCode::RateLimited
    );
    // bob's budget is his own, and the call is still up.
    assert_eq!(r.handle(media(bob(B1), 1000, candidate()), t0).len(), 2);
    assert_eq!(r.phase_name(), "in_call");
}

/// The ended columns of PROTOCOL.md §3.11, request by request and party
/// by party, from the ended record and from its tombstone alike; and the
/// tombstone keeps none of the content.
#[test]
fn a_tombstone_answers_late_requests_as_the_ended_record() {
    use ErrorCode::*;
    let t0 = Instant::now();
    let accept = |from: Party, req| Input::Accept {
        from,
        req,
        response: "late".into(),
    };
    let refuse = |from: Party, req| Input::Refuse {
        from,
        req,
        response: String::new(),
        busy: false,
    };
    let cancel = |from: Party, req| Input::Cancel { from, req };
    let hangup = |from: Party, req| Input::Hangup { from, req };
    let signal = |from: Party, req| media(from, req, candidate());
    // alice's other device: the caller user, not the caller device.
    let alice2 = Party {
        user: UserId::parse("alice").unwrap(),
        device: DeviceId(2),
    };
    // The four ways to end, each from a ringing record (B1 acked, B2 rings).
    let refused = {
        let mut r = ringing(t0);
        r.handle(refuse(bob(B1), 1), t0);
        r
    };
    let call_over = {
        let mut r = ringing(t0);
        r.handle(accept(bob(B1), 1), t0);
        r.handle(hangup(alice(), 2), t0);
        r
    };
    let canceled = {
        let mut r = ringing(t0);
        r.handle(cancel(alice(), 1), t0);
        r.handle(Input::Tick, t0 + secs(3));
        r
    };
    let failed = {
        let mut r = ringing(t0);
        r.handle(Input::Tick, t0 + secs(60));
        r
    };
    type Late = fn(Party, u64) -> Input;
    let (acc, refu, can, hang, sig): (Late, Late, Late, Late, Late) =
        (accept, refuse, cancel, hangup, signal);
    // (record, request, who, expected code, expected message)
    let cases: Vec<(&Record, Late, Party, ErrorCode, &str)> = vec![
        (
            &refused,
            acc,
            bob(B1),
            AlreadyRefused,
            "the invitation was already refused",
        ),
        (
            &refused,
            refu,
            bob(B1),
            AlreadyRefused,
            "the invitation was already refused",
        ),
        (
            &refused,
            acc,
            bob(B2),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &refused,
            can,
            alice(),
            AlreadyRefused,
            "the invitation was already refused",
        ),
        (
            &refused,
            can,
            alice2.clone(),
            AlreadyRefused,
            "the invitation was already refused",
        ),
        (
            &refused,
            hang,
            bob(B2),
            AlreadyEnded,
            "the call has already ended",
        ),
        (
            &refused,
            sig,
            alice(),
            AlreadyEnded,
            "the call has already ended",
        ),
        (
            &call_over,
            acc,
            bob(B1),
            AlreadyAccepted,
            "the invitation was already accepted (and the call has ended)",
        ),
        (
            &call_over,
            refu,
            bob(B1),
            AlreadyAccepted,
            "the invitation was already accepted (and the call has ended)",
        ),
        (
            &call_over,
            acc,
            bob(B2),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &call_over,
            can,
            alice(),
            AlreadyAccepted,
            "the invitation was already accepted",
        ),
        (
            &call_over,
            hang,
            bob(B1),
            AlreadyEnded,
            "the call has already ended",
        ),
        (
            &call_over,
            hang,
            alice2.clone(),
            AlreadyEnded,
            "the call has already ended",
        ),
        (
            &call_over,
            sig,
            bob(B1),
            AlreadyEnded,
            "the call has already ended",
        ),
        (
            &canceled,
            acc,
            bob(B1),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &canceled,
            refu,
            bob(B2),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &canceled,
            can,
            alice(),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &canceled,
            hang,
            alice(),
            AlreadyEnded,
            "the call has already ended",
        ),
        (
            &failed,
            acc,
            bob(B2),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &failed,
            can,
            alice2.clone(),
            AlreadyEnded,
            "the invitation has already ended",
        ),
        (
            &failed,
            sig,
            bob(B1),
            AlreadyEnded,
            "the call has already ended",
        ),
    ];
    let everyone = [alice(), alice2.clone(), bob(B1), bob(B2), mallory()];
    let mut not_found = vec![];
    for r in [&refused, &call_over, &canceled, &failed] {
        // The caller cannot answer, the callee cannot cancel, strangers nothing.
        not_found.push((r, acc, alice()));
        not_found.push((r, refu, alice2.clone()));
        not_found.push((r, can, bob(B1)));
        for late in [acc, refu, can, hang, sig] {
            not_found.push((r, late, mallory()));
        }
    }
    let mut req = 100;
    let mut check = |r: &Record, late: Late, who: Party, code: ErrorCode, message: &str| {
        req += 1;
        let expected = vec![to(
            who.device,
            ServerMessage::error(Some(req), code, message),
        )];
        let tomb = r.tombstone().expect("ended");
        assert_eq!(
            r.clone().handle(late(who.clone(), req), t0 + secs(61)),
            expected
        );
        assert_eq!(
            tomb.handle(late(who, req)).into_iter().collect::<Vec<_>>(),
            expected
        );
    };
    for (r, late, who, code, message) in cases {
        check(r, late, who, code, message);
    }
    for (r, late, who) in not_found {
        check(r, late, who, NotFound, "no such invitation for you");
    }
    // Anything else changes nothing and says nothing.
    for r in [&refused, &call_over, &canceled, &failed] {
        let tomb = r.tombstone().unwrap();
        for who in &everyone {
            for input in [
                Input::Ack {
                    from: who.device,
                    of: AckOf::Invitation,
                },
                Input::Ack {
                    from: who.device,
                    of: AckOf::Canceled,
                },
                Input::CalleeDeviceOnline(who.device),
                Input::DeviceGone {
                    device: who.device,
                    cause: GoneCause::Logout,
                },
                Input::Tick,
                Input::Shutdown,
            ] {
                assert_eq!(r.clone().handle(input.clone(), t0 + secs(61)), vec![]);
                assert_eq!(tomb.handle(input), None);
            }
        }
        assert_eq!(tomb.outcome(), r.outcome().unwrap());
        assert_eq!(tomb.caller_device(), CALLER_DEV);
    }
    assert_eq!(
        ringing(t0).tombstone(),
        None,
        "only an ended record has one"
    );
    assert!(
        std::mem::size_of::<Tombstone>() <= 56,
        "two shared user ids, a device and the outcome: {} bytes",
        std::mem::size_of::<Tombstone>()
    );
}

fn ringing(t0: Instant) -> Record {
    let (mut r, _) = new(&[B1, B2], t0);
    r.handle(ack(B1), t0);
    assert_eq!(r.phase_name(), "ringing");
    r
}
fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn send_delivers_to_every_device_and_acks_in_order() {
    let t0 = Instant::now();
    let (mut r, fx) = new(&[B1, B2], t0);
    assert_eq!(
        fx,
        vec![
            to(
                CALLER_DEV,
                ServerMessage::InviteOk {
                    req: 1,
                    invitation_id: iid(),
                    callee_online: true
                }
            ),
            to(B1, invitation()),
            to(B2, invitation()),
        ]
    );
    assert_eq!(r.phase_name(), "delivering");
    assert_eq!(r.deadline(), Some(t0 + secs(30)), "no-response window runs");
    // The first ack tells the caller; the callee's app had it before acking.
    let fx = r.handle(ack(B2), t0 + secs(1));
    assert_eq!(
        fx,
        vec![to(
            CALLER_DEV,
            ServerMessage::ReceivedByPeer {
                invitation_id: iid()
            }
        )]
    );
    assert_eq!(r.handle(ack(B1), t0 + secs(1)), vec![]);
    assert_eq!(
        r.deadline(),
        Some(t0 + secs(60)),
        "only the ring timeout is left"
    );
    // Acks from a device that never got it are ignored.
    assert_eq!(r.handle(ack(MALLORY_DEV), t0), vec![]);
}

#[test]
fn accept_wins_and_other_devices_hear_answered_elsewhere() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    let fx = r.handle(
        Input::Accept {
            from: bob(B2),
            req: 5,
            response: "on my way".into(),
        },
        t0 + secs(3),
    );
    assert_eq!(
        fx,
        vec![
            to(B2, ok(5)),
            to(B1, failed(FailureReason::AnsweredElsewhere)),
            to(
                CALLER_DEV,
                ServerMessage::Accepted {
                    invitation_id: iid(),
                    response: "on my way".into()
                }
            ),
        ]
    );
    assert!(r.is_in_call());
    assert_eq!(r.deadline(), None, "a call has no timer");
    // The losing device's accept, arriving later, is told it was answered elsewhere.
    assert_eq!(
        err_code(&r.handle(accept_by(bob(B1), 6), t0)),
        ErrorCode::AlreadyEnded
    );
    assert_eq!(
        err_code(&r.handle(accept_by(bob(B2), 7), t0)),
        ErrorCode::AlreadyAccepted
    );
    assert_eq!(
        err_code(&r.handle(
            Input::Refuse {
                from: bob(B2),
                req: 8,
                response: String::new(),
                busy: false
            },
            t0
        )),
        ErrorCode::AlreadyAccepted
    );
    assert_eq!(
        err_code(&r.handle(
            Input::Cancel {
                from: alice(),
                req: 9
            },
            t0
        )),
        ErrorCode::AlreadyAccepted
    );
    // Nothing expires during a call.
    assert_eq!(r.handle(Input::Tick, t0 + secs(3600)), vec![]);
}

#[test]
fn answer_without_ack_still_tells_the_caller_it_was_received_first() {
    let t0 = Instant::now();
    let (mut r, _) = new(&[B1], t0);
    let fx = r.handle(accept_by(bob(B1), 3), t0);
    assert_eq!(
        fx[0],
        to(
            CALLER_DEV,
            ServerMessage::ReceivedByPeer {
                invitation_id: iid()
            }
        )
    );
    assert_eq!(
        fx.last(),
        Some(&to(
            CALLER_DEV,
            ServerMessage::Accepted {
                invitation_id: iid(),
                response: String::new()
            }
        ))
    );
}

#[test]
fn refuse_busy_reaches_caller_and_other_devices_hear_declined_elsewhere() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    let fx = r.handle(
        Input::Refuse {
            from: bob(B1),
            req: 4,
            response: "busy".into(),
            busy: true,
        },
        t0,
    );
    assert_eq!(
        fx,
        vec![
            to(B1, ok(4)),
            to(B2, failed(FailureReason::DeclinedElsewhere)),
            to(
                CALLER_DEV,
                ServerMessage::Refused {
                    invitation_id: iid(),
                    response: "busy".into(),
                    busy: true
                }
            ),
        ]
    );
    assert_eq!(r.outcome(), Some(Outcome::Refused { by: B1, busy: true }));
    assert_eq!(
        err_code(&r.handle(
            Input::Refuse {
                from: bob(B1),
                req: 5,
                response: String::new(),
                busy: false
            },
            t0
        )),
        ErrorCode::AlreadyRefused
    );
    assert_eq!(
        err_code(&r.handle(accept_by(bob(B2), 6), t0)),
        ErrorCode::AlreadyEnded
    );
    assert_eq!(
        err_code(&r.handle(
            Input::Cancel {
                from: alice(),
                req: 7
            },
            t0
        )),
        ErrorCode::AlreadyRefused
    );
    assert_eq!(
        err_code(&r.handle(
            Input::Hangup {
                from: alice(),
                req: 8
            },
            t0
        )),
        ErrorCode::AlreadyEnded
    );
}

#[test]
fn cancel_tells_callees_first_and_caller_after_their_acks() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    let fx = r.handle(
        Input::Cancel {
            from: alice(),
            req: 3,
        },
        t0,
    );
    let canceled = ServerMessage::Canceled {
        invitation_id: iid(),
    };
    assert_eq!(
        fx,
        vec![
            to(CALLER_DEV, ok(3)),
            to(B1, canceled.clone()),
            to(B2, canceled.clone())
        ]
    );
    assert_eq!(r.phase_name(), "canceling");
    assert_eq!(r.handle(ack_canceled(B1), t0), vec![]);
    // An accept arriving after the cancel loses: the cancel came first.
    assert_eq!(
        err_code(&r.handle(accept_by(bob(B2), 4), t0)),
        ErrorCode::AlreadyEnded
    );
    let fx = r.handle(ack_canceled(B2), t0);
    assert_eq!(fx, vec![to(CALLER_DEV, canceled)]);
    assert_eq!(r.outcome(), Some(Outcome::Canceled));
    assert_eq!(
        err_code(&r.handle(
            Input::Cancel {
                from: alice(),
                req: 5
            },
            t0
        )),
        ErrorCode::AlreadyEnded
    );
}

#[test]
fn cancel_does_not_wait_forever_for_acks() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    r.handle(
        Input::Cancel {
            from: alice(),
            req: 3,
        },
        t0,
    );
    assert_eq!(r.deadline(), Some(t0 + secs(2)));
    assert_eq!(r.handle(Input::Tick, t0 + secs(1)), vec![]);
    let fx = r.handle(Input::Tick, t0 + secs(2));
    assert_eq!(
        fx,
        vec![to(
            CALLER_DEV,
            ServerMessage::Canceled {
                invitation_id: iid()
            }
        )]
    );
}

#[test]
fn cancel_while_callee_offline_completes_at_once() {
    let t0 = Instant::now();
    let (mut r, _) = new(&[], t0);
    let fx = r.handle(
        Input::Cancel {
            from: alice(),
            req: 2,
        },
        t0,
    );
    assert_eq!(
        fx,
        vec![
            to(CALLER_DEV, ok(2)),
            to(
                CALLER_DEV,
                ServerMessage::Canceled {
                    invitation_id: iid()
                }
            )
        ]
    );
}

#[test]
fn cancel_ack_wait_ends_when_device_goes_away() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    r.handle(
        Input::Cancel {
            from: alice(),
            req: 3,
        },
        t0,
    );
    r.handle(ack_canceled(B1), t0);
    let fx = r.handle(
        Input::DeviceGone {
            device: B2,
            cause: GoneCause::ConnectionLost,
        },
        t0,
    );
    assert_eq!(
        fx,
        vec![to(
            CALLER_DEV,
            ServerMessage::Canceled {
                invitation_id: iid()
            }
        )]
    );
}

#[test]
fn offline_callee_gets_it_on_login_within_the_window() {
    let t0 = Instant::now();
    let (mut r, fx) = new(&[], t0);
    assert_eq!(
        fx,
        vec![to(
            CALLER_DEV,
            ServerMessage::InviteOk {
                req: 1,
                invitation_id: iid(),
                callee_online: false
            }
        )]
    );
    assert_eq!(r.phase_name(), "waiting_for_callee");
    assert_eq!(r.deadline(), Some(t0 + secs(30)));
    let fx = r.handle(Input::CalleeDeviceOnline(B1), t0 + secs(20));
    assert_eq!(fx, vec![to(B1, invitation())]);
    assert_eq!(
        r.deadline(),
        Some(t0 + secs(50)),
        "no-response window starts at delivery"
    );
    let fx = r.handle(ack(B1), t0 + secs(21));
    assert_eq!(
        fx,
        vec![to(
            CALLER_DEV,
            ServerMessage::ReceivedByPeer {
                invitation_id: iid()
            }
        )]
    );
    assert_eq!(r.deadline(), Some(t0 + secs(60)));
    // A second device of the callee logging in also rings.
    assert_eq!(
        r.handle(Input::CalleeDeviceOnline(B2), t0 + secs(22)),
        vec![to(B2, invitation())]
    );
}

#[test]
fn peer_offline_after_the_offline_window() {
    let t0 = Instant::now();
    let (mut r, _) = new(&[], t0);
    assert_eq!(r.handle(Input::Tick, t0 + secs(29)), vec![]);
    let fx = r.handle(Input::Tick, t0 + secs(30));
    assert_eq!(fx, vec![to(CALLER_DEV, failed(FailureReason::PeerOffline))]);
    assert_eq!(
        r.outcome(),
        Some(Outcome::Failed(FailureReason::PeerOffline))
    );
    // Kept for the retention time, then collectable.
    assert!(!r.is_finished(t0 + secs(89)));
    assert!(r.is_finished(t0 + secs(90)));
    // A device logging in after the end gets nothing.
    assert_eq!(
        r.handle(Input::CalleeDeviceOnline(B1), t0 + secs(31)),
        vec![]
    );
}

#[test]
fn no_response_when_delivered_but_never_acked() {
    let t0 = Instant::now();
    let (mut r, _) = new(&[B1], t0);
    let fx = r.handle(Input::Tick, t0 + secs(30));
    assert_eq!(
        fx,
        vec![
            to(B1, failed(FailureReason::Expired)),
            to(CALLER_DEV, failed(FailureReason::NoResponse))
        ]
    );
}

#[test]
fn expired_when_nobody_answers() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    assert_eq!(r.handle(Input::Tick, t0 + secs(59)), vec![]);
    let fx = r.handle(Input::Tick, t0 + secs(60));
    assert_eq!(
        fx,
        vec![
            to(B1, failed(FailureReason::Expired)),
            to(B2, failed(FailureReason::Expired)),
            to(CALLER_DEV, failed(FailureReason::Expired)),
        ]
    );
    // Expiry vs accept: the expiry was processed first, so the accept is too late.
    assert_eq!(
        err_code(&r.handle(accept_by(bob(B1), 9), t0 + secs(60))),
        ErrorCode::AlreadyEnded
    );
}

#[test]
fn accept_just_before_expiry_wins() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    r.handle(accept_by(bob(B1), 9), t0 + secs(59));
    assert_eq!(r.handle(Input::Tick, t0 + secs(60)), vec![]);
    assert!(r.is_in_call());
}

#[test]
fn earliest_deadline_fires_first_even_if_ticked_late() {
    let t0 = Instant::now();
    let (mut r, _) = new(&[B1], t0);
    // Ticked only after both no-response (30 s) and ring (60 s) passed: no_response is what happened first.
    let fx = r.handle(Input::Tick, t0 + secs(100));
    assert_eq!(
        fx.last(),
        Some(&to(CALLER_DEV, failed(FailureReason::NoResponse)))
    );
}

#[test]
fn strangers_cannot_touch_it() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    for input in [
        accept_by(mallory(), 1),
        Input::Refuse {
            from: mallory(),
            req: 1,
            response: String::new(),
            busy: false,
        },
        Input::Cancel {
            from: mallory(),
            req: 1,
        },
        Input::Hangup {
            from: mallory(),
            req: 1,
        },
        // The callee cannot cancel, the caller cannot accept.
        Input::Cancel {
            from: bob(B1),
            req: 1,
        },
        accept_by(alice(), 1),
    ] {
        let fx = r.handle(input, t0);
        assert_eq!(err_code(&fx), ErrorCode::NotFound);
        assert!(fx
            .iter()
            .all(|e| e.to != CALLER_DEV || matches!(e.msg, ServerMessage::Error { .. })));
    }
    assert_eq!(r.phase_name(), "ringing", "nothing changed");
    assert_eq!(
        err_code(&r.handle(
            Input::Hangup {
                from: alice(),
                req: 2
            },
            t0
        )),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn hang_up_by_either_party_tells_the_other_first() {
    let t0 = Instant::now();
    for (hanger, first, second) in [(bob(B1), CALLER_DEV, B1), (alice(), B1, CALLER_DEV)] {
        let mut r = ringing(t0);
        r.handle(accept_by(bob(B1), 2), t0);
        let who = hanger.user.to_string();
        let hanger_dev = hanger.device;
        let fx = r.handle(
            Input::Hangup {
                from: hanger,
                req: 3,
            },
            t0,
        );
        let ended = ServerMessage::CallEnded {
            invitation_id: iid(),
            reason: CallEndReason::Hangup,
            by: Some(who),
        };
        assert_eq!(
            fx,
            vec![
                to(hanger_dev, ok(3)),
                to(first, ended.clone()),
                to(second, ended)
            ]
        );
        assert_eq!(
            err_code(&r.handle(
                Input::Hangup {
                    from: alice(),
                    req: 4
                },
                t0
            )),
            ErrorCode::AlreadyEnded
        );
    }
}

#[test]
fn hang_up_from_another_device_of_a_party() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    r.handle(accept_by(bob(B1), 2), t0);
    let fx = r.handle(
        Input::Hangup {
            from: bob(B2),
            req: 3,
        },
        t0,
    );
    assert_eq!(fx.len(), 3);
    assert_eq!(fx[0], to(B2, ok(3)));
    assert!(r.outcome().is_some());
}

#[test]
fn party_gone_ends_the_call_with_the_cause() {
    let t0 = Instant::now();
    for (gone, other, cause, reason) in [
        (
            CALLER_DEV,
            B1,
            GoneCause::ConnectionLost,
            CallEndReason::PeerConnectionLost,
        ),
        (
            B1,
            CALLER_DEV,
            GoneCause::Logout,
            CallEndReason::PeerLoggedOut,
        ),
    ] {
        let mut r = ringing(t0);
        r.handle(accept_by(bob(B1), 2), t0);
        // A device not in the call leaving changes nothing.
        assert_eq!(
            r.handle(Input::DeviceGone { device: B2, cause }, t0),
            vec![]
        );
        let fx = r.handle(
            Input::DeviceGone {
                device: gone,
                cause,
            },
            t0,
        );
        assert_eq!(
            fx,
            vec![to(
                other,
                ServerMessage::CallEnded {
                    invitation_id: iid(),
                    reason,
                    by: None
                }
            )]
        );
    }
}

#[test]
fn caller_gone_while_ringing_tells_every_callee_device() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    let fx = r.handle(
        Input::DeviceGone {
            device: CALLER_DEV,
            cause: GoneCause::Logout,
        },
        t0,
    );
    assert_eq!(
        fx,
        vec![
            to(B1, failed(FailureReason::PeerOffline)),
            to(B2, failed(FailureReason::PeerOffline))
        ]
    );
    // The accept that was in flight is answered with already_ended (the client reports accept_failure).
    assert_eq!(
        err_code(&r.handle(accept_by(bob(B1), 2), t0)),
        ErrorCode::AlreadyEnded
    );
}

#[test]
fn all_callee_devices_gone_before_ack_restarts_offline_window() {
    let t0 = Instant::now();
    let (mut r, _) = new(&[B1], t0);
    assert_eq!(
        r.handle(
            Input::DeviceGone {
                device: B1,
                cause: GoneCause::ConnectionLost
            },
            t0 + secs(5)
        ),
        vec![]
    );
    assert_eq!(r.phase_name(), "waiting_for_callee");
    assert_eq!(r.deadline(), Some(t0 + secs(35)));
    assert_eq!(
        r.handle(Input::Tick, t0 + secs(35)),
        vec![to(CALLER_DEV, failed(FailureReason::PeerOffline))]
    );
}

#[test]
fn shutdown_ends_every_phase_with_a_reason() {
    let t0 = Instant::now();
    let mut ringing_rec = ringing(t0);
    let fx = ringing_rec.handle(Input::Shutdown, t0);
    let down = failed(FailureReason::ServerShutdown);
    assert_eq!(
        fx,
        vec![
            to(B1, down.clone()),
            to(B2, down.clone()),
            to(CALLER_DEV, down)
        ]
    );

    let mut call = ringing(t0);
    call.handle(accept_by(bob(B1), 2), t0);
    let fx = call.handle(Input::Shutdown, t0);
    let ended = ServerMessage::CallEnded {
        invitation_id: iid(),
        reason: CallEndReason::ServerShutdown,
        by: None,
    };
    assert_eq!(fx, vec![to(B1, ended.clone()), to(CALLER_DEV, ended)]);

    let mut canceling = ringing(t0);
    canceling.handle(
        Input::Cancel {
            from: alice(),
            req: 3,
        },
        t0,
    );
    assert_eq!(
        canceling.handle(Input::Shutdown, t0),
        vec![to(
            CALLER_DEV,
            ServerMessage::Canceled {
                invitation_id: iid()
            }
        )]
    );
    assert_eq!(
        canceling.handle(Input::Shutdown, t0),
        vec![],
        "an ended record stays quiet"
    );
}

#[test]
fn callee_device_gone_after_ack_keeps_ringing_other_devices() {
    let t0 = Instant::now();
    let mut r = ringing(t0);
    assert_eq!(
        r.handle(
            Input::DeviceGone {
                device: B1,
                cause: GoneCause::ConnectionLost
            },
            t0
        ),
        vec![]
    );
    let fx = r.handle(accept_by(bob(B2), 2), t0);
    assert_eq!(
        fx.len(),
        2,
        "ok to B2 and accepted to the caller; B1 is gone: {fx:?}"
    );
}
