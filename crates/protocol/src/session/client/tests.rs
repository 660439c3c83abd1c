//! The client session at given instants: numbering, replies, `seq`
//! de-duplication, `seen` batching, and resume. No clock, no sleeping.

use std::time::{Duration, Instant};

use super::*;
use crate::wire::{AckOf, ClientMessage, DeviceId, InvitationId, ServerMessage, TimersMs};

const HEARTBEAT: Duration = Duration::from_secs(15);
const WINDOW: Duration = Duration::from_secs(10);

fn session() -> ClientSession<&'static str> {
    ClientSession::new(Config::new("secret", WINDOW, HEARTBEAT))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn presence(req: u64) -> ClientMessage {
    ClientMessage::QueryPresence {
        req,
        users: vec!["bob".into()],
    }
}

fn changed(n: u64) -> ServerMessage {
    ServerMessage::PresenceChanged {
        user: format!("u{n}"),
        online: true,
    }
}

fn ok(req: u64) -> ServerMessage {
    ServerMessage::Ok { req: Some(req) }
}

fn resumed(last_ref: u64, seq: u64) -> ServerMessage {
    ServerMessage::Resumed {
        req: None,
        device_id: DeviceId(1),
        last_ref,
        seq,
    }
}

fn iid(s: &str) -> InvitationId {
    InvitationId(s.into())
}

fn ack(s: &str) -> ClientMessage {
    ClientMessage::Ack {
        invitation_id: iid(s),
        of: AckOf::Invitation,
    }
}

fn transmitted<T>(s: &mut ClientSession<T>) -> Vec<ClientMessage> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events<T>(s: &mut ClientSession<T>) -> Vec<SessionEvent<T>> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Drops the connection and opens a new one; returns the `resume` sent on it.
fn reconnect<T>(s: &mut ClientSession<T>, now: Instant) -> ClientMessage {
    assert!(matches!(
        s.on_disconnected(now),
        Disconnected::Reconnect { .. }
    ));
    s.on_connected().unwrap();
    let mut sent = transmitted(s);
    assert_eq!(sent.len(), 1, "{sent:?}");
    sent.remove(0)
}

#[test]
fn requests_are_numbered_from_one_and_replies_come_back_with_their_tag() {
    let t0 = Instant::now();
    let mut s = session();
    assert_eq!(s.send_request(presence, "first"), Ok(1));
    assert_eq!(s.send_request(presence, "second"), Ok(2));
    assert_eq!(transmitted(&mut s), vec![presence(1), presence(2)]);
    // Replies in any order, each with its tag; a second reply to the same ref is just a message.
    assert_eq!(s.handle_incoming(Some(1), ok(2), t0), Received::Processed);
    assert_eq!(s.handle_incoming(Some(2), ok(1), t0), Received::Processed);
    assert_eq!(s.handle_incoming(Some(3), ok(1), t0), Received::Processed);
    let ev = events(&mut s);
    assert!(
        matches!(&ev[0], SessionEvent::Reply { req: 2, tag: "second", reply } if *reply == ok(2))
    );
    assert!(matches!(
        &ev[1],
        SessionEvent::Reply {
            req: 1,
            tag: "first",
            ..
        }
    ));
    assert!(matches!(&ev[2], SessionEvent::Message(m) if *m == ok(1)));
    assert_eq!(s.pending_requests(), 0);
}

#[test]
fn replies_without_seq_and_errors_for_unknown_refs_are_handled_too() {
    let t0 = Instant::now();
    let mut s = session();
    s.send_request(presence, "p").unwrap();
    // `rate_limited` comes from the connection task, without `seq`, and answers the request.
    let limited = ServerMessage::error(Some(1), ErrorCode::RateLimited, "slow down");
    assert_eq!(
        s.handle_incoming(None, limited.clone(), t0),
        Received::Processed
    );
    let unknown = ServerMessage::error(Some(99), ErrorCode::NotFound, "?");
    assert_eq!(
        s.handle_incoming(None, unknown.clone(), t0),
        Received::Processed
    );
    let ev = events(&mut s);
    assert!(matches!(&ev[0], SessionEvent::Reply { req: 1, tag: "p", reply } if *reply == limited));
    assert!(matches!(&ev[1], SessionEvent::Message(m) if *m == unknown));
    assert_eq!(s.last_seq(), 0, "unnumbered messages do not count");
}

#[test]
fn send_request_refuses_messages_without_the_ref_it_gave() {
    let mut s = session();
    assert_eq!(
        s.send_request(|_| ack("i"), "a"),
        Err(SessionError::WrongRef {
            given: 1,
            found: None
        })
    );
    assert_eq!(
        s.send_request(|r| presence(r + 1), "b"),
        Err(SessionError::WrongRef {
            given: 1,
            found: Some(2)
        })
    );
    let login = |_| ClientMessage::Login {
        req: Some(1),
        user: "a".into(),
        token: None,
    };
    assert_eq!(
        s.send_request(login, "c"),
        Err(SessionError::NotARequest("login"))
    );
    // A refused message uses up no ref and sends nothing.
    assert_eq!(s.send_request(presence, "d"), Ok(1));
    assert_eq!(transmitted(&mut s), vec![presence(1)]);
}

#[test]
fn each_seq_is_passed_on_once_in_order_and_a_gap_is_reported() {
    let t0 = Instant::now();
    let mut s = session();
    assert_eq!(
        s.handle_incoming(Some(1), changed(1), t0),
        Received::Processed
    );
    assert_eq!(
        s.handle_incoming(Some(1), changed(1), t0),
        Received::Duplicate
    );
    assert_eq!(
        s.handle_incoming(Some(3), changed(3), t0),
        Received::AfterGap { expected: 2 }
    );
    assert_eq!(
        s.handle_incoming(Some(2), changed(2), t0),
        Received::Duplicate
    );
    let ev = events(&mut s);
    assert_eq!(ev.len(), 2);
    assert!(matches!(&ev[1], SessionEvent::Message(m) if *m == changed(3)));
    assert_eq!(s.last_seq(), 3);
}

#[test]
fn seen_goes_out_at_every_32nd_message() {
    let t0 = Instant::now();
    let mut s = session();
    for seq in 1..=31 {
        let _ = s.handle_incoming(Some(seq), changed(seq), t0);
    }
    assert_eq!(transmitted(&mut s), vec![]);
    let _ = s.handle_incoming(Some(32), changed(32), t0);
    assert_eq!(transmitted(&mut s), vec![ClientMessage::Seen { seq: 32 }]);
    assert_eq!(s.poll_timeout(), None, "nothing left to acknowledge");
    for seq in 33..=64 {
        let _ = s.handle_incoming(Some(seq), changed(seq), t0);
    }
    assert_eq!(transmitted(&mut s), vec![ClientMessage::Seen { seq: 64 }]);
}

#[test]
fn seen_goes_out_half_a_second_after_the_first_unacknowledged_message() {
    let t0 = Instant::now();
    let mut s = session();
    assert_eq!(s.poll_timeout(), None);
    let _ = s.handle_incoming(Some(1), changed(1), t0);
    let _ = s.handle_incoming(Some(2), changed(2), t0 + ms(300));
    // The first message set the deadline; later ones do not move it.
    assert_eq!(s.poll_timeout(), Some(t0 + ms(500)));
    s.handle_timeout(t0 + ms(499));
    assert_eq!(transmitted(&mut s), vec![]);
    s.handle_timeout(t0 + ms(500));
    assert_eq!(transmitted(&mut s), vec![ClientMessage::Seen { seq: 2 }]);
    assert_eq!(s.poll_timeout(), None);
    // Unnumbered messages need no `seen`.
    let _ = s.handle_incoming(None, ServerMessage::Ok { req: None }, t0 + ms(600));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn without_resume_nothing_is_acknowledged_kept_or_resumed() {
    let t0 = Instant::now();
    for config in [
        Config::new("", WINDOW, HEARTBEAT),
        Config::new("secret", Duration::ZERO, HEARTBEAT),
    ] {
        let mut s: ClientSession<()> = ClientSession::new(config);
        for seq in 1..=40 {
            let _ = s.handle_incoming(Some(seq), changed(seq), t0);
        }
        s.send_ack(iid("i"), AckOf::Invitation);
        assert_eq!(transmitted(&mut s), vec![ack("i")]);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(
            s.on_disconnected(t0),
            Disconnected::Over(SessionEnd::NoResume)
        );
        assert_eq!(s.on_connected(), Err(SessionError::Over));
    }
}

#[test]
fn resume_asks_for_what_follows_the_last_processed_seq() {
    let t0 = Instant::now();
    let mut s = session();
    for seq in 1..=5 {
        let _ = s.handle_incoming(Some(seq), changed(seq), t0);
    }
    assert_eq!(events(&mut s).len(), 5);
    let resume = reconnect(&mut s, t0 + ms(100));
    assert_eq!(
        resume,
        ClientMessage::Resume {
            req: None,
            session: "secret".into(),
            last_seq: 5
        }
    );
    assert!(!s.is_up());
    assert_eq!(s.on_connected(), Err(SessionError::AlreadyConnected));
    // Nothing counts before the answer.
    assert_eq!(
        s.handle_incoming(Some(6), changed(6), t0),
        Received::Ignored
    );
    assert_eq!(
        s.handle_incoming(None, resumed(0, 7), t0),
        Received::Processed
    );
    assert!(s.is_up());
    assert!(matches!(
        events(&mut s)[..],
        [SessionEvent::Resumed {
            last_ref: 0,
            requests: 0,
            acks: 0
        }]
    ));
    // The replay: 5 again (a duplicate for us), then 6 and 7.
    assert_eq!(
        s.handle_incoming(Some(5), changed(5), t0),
        Received::Duplicate
    );
    assert_eq!(
        s.handle_incoming(Some(6), changed(6), t0),
        Received::Processed
    );
    assert_eq!(
        s.handle_incoming(Some(7), changed(7), t0),
        Received::Processed
    );
    assert_eq!(events(&mut s).len(), 2);
}

#[test]
fn after_resume_the_requests_the_server_lacks_go_again_then_the_recent_acks() {
    let t0 = Instant::now();
    let mut s = session();
    s.send_request(presence, "applied and answered").unwrap();
    s.send_request(presence, "applied, reply lost").unwrap();
    s.send_request(presence, "lost").unwrap();
    s.send_ack(iid("a"), AckOf::Invitation);
    let _ = transmitted(&mut s);
    let _ = s.handle_incoming(Some(1), ok(1), t0);
    assert!(matches!(
        s.on_disconnected(t0),
        Disconnected::Reconnect { .. }
    ));
    // Made while away: kept, not sent.
    s.send_request(presence, "made while away").unwrap();
    s.send_ack(iid("b"), AckOf::Canceled);
    assert_eq!(transmitted(&mut s), vec![]);
    s.on_connected().unwrap();
    let _ = transmitted(&mut s);
    let _ = s.handle_incoming(None, resumed(2, 2), t0);
    assert_eq!(
        transmitted(&mut s),
        vec![
            presence(3),
            presence(4),
            ack("a"),
            ClientMessage::Ack {
                invitation_id: iid("b"),
                of: AckOf::Canceled
            }
        ]
    );
    assert!(matches!(
        events(&mut s)[..],
        [
            _,
            SessionEvent::Resumed {
                last_ref: 2,
                requests: 2,
                acks: 2
            }
        ]
    ));
    // The reply of ref 2 comes in the replay.
    let _ = s.handle_incoming(Some(2), ok(2), t0);
    assert!(matches!(
        events(&mut s)[..],
        [SessionEvent::Reply {
            req: 2,
            tag: "applied, reply lost",
            ..
        }]
    ));
}

#[test]
fn only_the_last_64_acks_are_sent_again() {
    let t0 = Instant::now();
    let mut s = session();
    for n in 0..100 {
        s.send_ack(iid(&n.to_string()), AckOf::Invitation);
    }
    let _ = reconnect(&mut s, t0);
    let _ = s.handle_incoming(None, resumed(0, 0), t0);
    let again = transmitted(&mut s);
    assert_eq!(again.len(), KEEP_ACKS);
    assert_eq!(again[0], ack("36"));
    assert_eq!(again[63], ack("99"));
}

#[test]
fn frames_not_written_before_a_drop_are_dropped_and_sent_again_after_resume() {
    let t0 = Instant::now();
    let mut s = session();
    s.send_request(presence, "p").unwrap();
    s.send_ack(iid("a"), AckOf::Invitation);
    for seq in 1..=32 {
        let _ = s.handle_incoming(Some(seq), changed(seq), t0);
    }
    // Never written: the connection died first.
    let resume = reconnect(&mut s, t0);
    assert!(matches!(resume, ClientMessage::Resume { last_seq: 32, .. }));
    let _ = s.handle_incoming(None, resumed(0, 32), t0);
    assert_eq!(transmitted(&mut s), vec![presence(1), ack("a")]);
}

#[test]
fn a_seen_due_while_away_goes_out_once_resumed() {
    let t0 = Instant::now();
    let mut s = session();
    let _ = s.handle_incoming(Some(1), changed(1), t0);
    let _ = reconnect(&mut s, t0 + ms(100));
    assert_eq!(s.poll_timeout(), None, "no seen while away");
    s.handle_timeout(t0 + ms(600));
    let _ = s.handle_incoming(None, resumed(0, 1), t0 + ms(700));
    assert_eq!(s.poll_timeout(), Some(t0 + ms(500)));
    s.handle_timeout(t0 + ms(700));
    assert_eq!(transmitted(&mut s), vec![ClientMessage::Seen { seq: 1 }]);
}

#[test]
fn the_server_has_the_session_until_a_heartbeat_and_its_window_after_the_drop() {
    let t0 = Instant::now();
    let mut s = session();
    let give_up = t0 + HEARTBEAT + WINDOW;
    assert_eq!(s.on_disconnected(t0), Disconnected::Reconnect { give_up });
    // Failed attempts do not extend it.
    s.on_connected().unwrap();
    assert_eq!(
        s.on_disconnected(t0 + ms(900)),
        Disconnected::Reconnect { give_up }
    );
    assert_eq!(
        s.on_disconnected(t0 + ms(950)),
        Disconnected::Reconnect { give_up }
    );
    // Once resumed, a new drop starts a new wait.
    s.on_connected().unwrap();
    let _ = s.handle_incoming(None, resumed(0, 0), t0 + ms(1000));
    assert_eq!(
        s.on_disconnected(t0 + ms(2000)),
        Disconnected::Reconnect {
            give_up: t0 + ms(2000) + HEARTBEAT + WINDOW
        }
    );
}

#[test]
fn a_refused_resume_ends_the_session() {
    let t0 = Instant::now();
    let mut s = session();
    s.send_request(presence, "p").unwrap();
    let _ = reconnect(&mut s, t0);
    let refusal = ServerMessage::error(None, ErrorCode::SessionExpired, "gone");
    assert_eq!(s.handle_incoming(None, refusal, t0), Received::Processed);
    assert!(matches!(
        &events(&mut s)[..],
        [SessionEvent::ResumeRefused(ResumeRefused {
            code: ErrorCode::SessionExpired,
            ..
        })]
    ));
    assert_eq!(s.on_connected(), Err(SessionError::Over));
    assert_eq!(
        s.handle_incoming(Some(1), changed(1), t0),
        Received::Ignored
    );
    assert_eq!(s.take_pending(), vec![(1, "p")]);
}

#[test]
fn a_moved_session_fails_what_was_in_flight_and_numbers_from_one() {
    let t0 = Instant::now();
    let mut s = session();
    s.send_request(presence, "a").unwrap();
    s.send_ack(iid("x"), AckOf::Invitation);
    for seq in 1..=3 {
        let _ = s.handle_incoming(Some(seq), changed(seq), t0);
    }
    let _ = transmitted(&mut s);
    let _ = events(&mut s);
    assert!(matches!(
        s.on_disconnected(t0),
        Disconnected::Reconnect { .. }
    ));
    s.send_request(presence, "b").unwrap();
    s.on_connected().unwrap();
    let _ = transmitted(&mut s);
    let moved = ServerMessage::SessionMoved {
        req: None,
        user: "alice".into(),
        device_id: DeviceId(2),
        timers: TimersMs {
            offline_ms: 1,
            no_response_ms: 1,
            ring_ms: 1,
            heartbeat_ms: 1,
            resume_ms: 1,
        },
        session: "new secret".into(),
        ice_servers: vec![],
    };
    assert_eq!(s.handle_incoming(None, moved, t0), Received::Processed);
    assert!(matches!(
        &events(&mut s)[..],
        [SessionEvent::Moved { unanswered }] if *unanswered == ["a", "b"]
    ));
    // Nothing is sent again, and the new device's messages count from 1.
    assert_eq!(transmitted(&mut s), vec![]);
    assert_eq!(
        s.handle_incoming(Some(1), changed(1), t0),
        Received::Processed
    );
    assert_eq!(s.config().secret, "new secret");
    // Refs go on increasing.
    assert_eq!(s.send_request(presence, "c"), Ok(3));
    let resume = reconnect(&mut s, t0);
    assert_eq!(
        resume,
        ClientMessage::Resume {
            req: None,
            session: "new secret".into(),
            last_seq: 1
        }
    );
    let _ = s.handle_incoming(None, resumed(0, 1), t0);
    assert_eq!(
        transmitted(&mut s),
        vec![presence(3)],
        "the old acks are gone"
    );
}

#[test]
fn after_a_logout_or_going_away_the_drop_is_final() {
    let t0 = Instant::now();
    let mut s = session();
    s.send_request(|req| ClientMessage::Logout { req: Some(req) }, "logout")
        .unwrap();
    assert_eq!(s.closing(), None);
    let _ = s.handle_incoming(Some(1), ok(1), t0);
    assert_eq!(s.closing(), Some(SessionEnd::LoggedOut));
    assert_eq!(
        s.on_disconnected(t0),
        Disconnected::Over(SessionEnd::LoggedOut)
    );

    let mut s = session();
    // A logout answered with an error does not end the session.
    s.send_request(|req| ClientMessage::Logout { req: Some(req) }, "logout")
        .unwrap();
    let limited = ServerMessage::error(Some(1), ErrorCode::RateLimited, "slow down");
    let _ = s.handle_incoming(None, limited, t0);
    assert_eq!(s.closing(), None);
    let going = ServerMessage::GoingAway {
        reason: "restart".into(),
    };
    let _ = s.handle_incoming(Some(1), going.clone(), t0);
    assert!(matches!(&events(&mut s)[..], [_, SessionEvent::Message(m)] if *m == going));
    assert_eq!(s.closing(), Some(SessionEnd::ServerShutdown));
    assert_eq!(
        s.on_disconnected(t0),
        Disconnected::Over(SessionEnd::ServerShutdown)
    );
}

#[test]
fn answers_about_connections_are_not_messages_of_the_session() {
    let t0 = Instant::now();
    let mut s = session();
    assert_eq!(
        s.handle_incoming(None, resumed(0, 0), t0),
        Received::Ignored
    );
    assert!(events(&mut s).is_empty());
}

#[test]
fn take_pending_hands_back_every_unanswered_request_in_order() {
    let mut s = session();
    for tag in ["a", "b", "c"] {
        s.send_request(presence, tag).unwrap();
    }
    let _ = s.handle_incoming(None, ok(2), Instant::now());
    assert_eq!(s.take_pending(), vec![(1, "a"), (3, "c")]);
    assert_eq!(s.pending_requests(), 0);
}
