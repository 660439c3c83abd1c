use callinvite_client::{
    CallEndReason, ConnectionReason, ConnectionState, Event, FailureReason, InvitationId,
    LocalInvitationInfo, LocalState, RemoteInvitationInfo, RemoteState,
};

use super::*;
use crate::store::{BusyPolicy, Settings};

pub(super) fn iid(s: &str) -> InvitationId {
    InvitationId(s.into())
}

pub(super) fn local(id: Option<&str>, callee: &str) -> LocalInvitationInfo {
    LocalInvitationInfo {
        handle: 1,
        invitation_id: id.map(iid),
        callee: callee.into(),
        content: String::new(),
        state: LocalState::SentToRemote,
    }
}

pub(super) fn remote(id: &str, caller: &str) -> RemoteInvitationInfo {
    RemoteInvitationInfo {
        invitation_id: iid(id),
        caller: caller.into(),
        content: "room".into(),
        state: RemoteState::InvitationReceived,
    }
}

pub(super) fn signed_in() -> Calls {
    let mut c = Calls::new(vec![]);
    c.me = Some("alice".into());
    c.on_event(
        &Event::ConnectionStateChanged {
            state: ConnectionState::Connected,
            reason: ConnectionReason::LoginSuccess,
        },
        &Settings::default(),
        0,
    );
    c
}

/// An outgoing call to bob on screen, as `start_outgoing` leaves it (no LocalInvitation needed here).
pub(super) fn outgoing(c: &mut Calls, id: &str, online: bool) {
    c.call = Some(ActiveCall {
        invitation_id: None,
        direction: Direction::Outgoing,
        peer: "bob".into(),
        content: "room-9".into(),
        phase: Phase::Calling,
        phase_since_ms: 1_000,
        answering: false,
        local: None,
        accepted_ms: None,
        media: None,
        wait_until_ms: None,
        silent: false,
    });
    c.on_event(
        &Event::LocalInvitationSent {
            invitation: local(Some(id), "bob"),
            callee_online: online,
        },
        &Settings::default(),
        1_000,
    );
}

fn outcome_of(fx: &[Effect]) -> Option<&'static str> {
    fx.iter().find_map(|e| match e {
        Effect::Outcome(o) => Some(o.outcome),
        _ => None,
    })
}

#[test]
fn outgoing_phases_then_accept_and_hang_up_with_duration() {
    let mut c = signed_in();
    assert_eq!(c.connection, Connection::Connected);
    outgoing(&mut c, "i1", true);
    assert_eq!(c.call.as_ref().unwrap().phase, Phase::Calling);
    assert_eq!(c.call.as_ref().unwrap().invitation_id, Some(iid("i1")));
    c.on_event(
        &Event::LocalInvitationReceivedByPeer {
            invitation: local(Some("i1"), "bob"),
        },
        &Settings::default(),
        1_500,
    );
    assert_eq!(c.call.as_ref().unwrap().phase, Phase::Ringing);
    let settings = Settings {
        meeting_url_template: "https://meet.example.org/{channel}".into(),
        ..Settings::default()
    };
    let fx = c.on_event(
        &Event::LocalInvitationAccepted {
            invitation: local(Some("i1"), "bob"),
            response: "hi".into(),
        },
        &settings,
        2_000,
    );
    assert_eq!(outcome_of(&fx), Some("accepted"));
    assert!(fx.contains(&Effect::OpenUrl("https://meet.example.org/room-9".into())));
    assert_eq!(c.call.as_ref().unwrap().phase, Phase::InCall);
    assert_eq!(c.history[0].outcome, "accepted");
    let fx = c.on_event(
        &Event::CallEnded {
            invitation_id: iid("i1"),
            peer: "bob".into(),
            reason: CallEndReason::Hangup,
            by: Some("bob".into()),
        },
        &settings,
        67_000,
    );
    assert_eq!(outcome_of(&fx), Some("peer_hung_up"));
    assert!(c.call.is_none());
    assert_eq!(c.history.len(), 1);
    assert_eq!(c.history[0].duration_s, Some(65));
    assert!(fx.contains(&Effect::SaveHistory));
}

#[test]
fn outgoing_endings_map_to_outcomes() {
    let cases: Vec<(Event, &str)> = vec![
        (
            Event::LocalInvitationRefused {
                invitation: local(Some("i"), "bob"),
                response: "no".into(),
                busy: false,
            },
            "refused",
        ),
        (
            Event::LocalInvitationRefused {
                invitation: local(Some("i"), "bob"),
                response: "busy".into(),
                busy: true,
            },
            "busy",
        ),
        (
            Event::LocalInvitationCanceled {
                invitation: local(Some("i"), "bob"),
            },
            "canceled",
        ),
        (
            Event::LocalInvitationFailure {
                invitation: local(Some("i"), "bob"),
                reason: FailureReason::PeerOffline,
            },
            "offline",
        ),
        (
            Event::LocalInvitationFailure {
                invitation: local(Some("i"), "bob"),
                reason: FailureReason::NoResponse,
            },
            "no_answer",
        ),
        (
            Event::LocalInvitationFailure {
                invitation: local(Some("i"), "bob"),
                reason: FailureReason::Expired,
            },
            "no_answer",
        ),
        (
            Event::LocalInvitationFailure {
                invitation: local(Some("i"), "bob"),
                reason: FailureReason::NotLoggedIn,
            },
            "connection_lost",
        ),
    ];
    for (event, expected) in cases {
        let mut c = signed_in();
        outgoing(&mut c, "i", true);
        let fx = c.on_event(&event, &Settings::default(), 5_000);
        assert_eq!(outcome_of(&fx), Some(expected), "{event:?}");
        assert!(c.call.is_none());
        assert_eq!(c.history[0].outcome, expected);
        assert!(!c.history[0].missed);
    }
}

#[test]
fn offline_callee_shows_waiting_and_until_when() {
    let mut c = signed_in();
    c.offline_window_ms = 4_000;
    outgoing(&mut c, "i", false);
    let call = c.call.as_ref().unwrap();
    assert_eq!(call.phase, Phase::WaitingOffline);
    // `outgoing` sends at 1 000 ms: the server waits the offline window from then.
    assert_eq!(call.wait_until_ms, Some(5_000));
}

#[test]
fn events_of_other_invitations_do_not_touch_the_call() {
    let mut c = signed_in();
    outgoing(&mut c, "mine", true);
    let fx = c.on_event(
        &Event::LocalInvitationCanceled {
            invitation: local(Some("other"), "bob"),
        },
        &Settings::default(),
        5,
    );
    assert!(fx.is_empty());
    assert!(c.call.is_some());
}

#[test]
fn incoming_rings_notifies_and_accept_withdraws() {
    let mut c = signed_in();
    let fx = c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r1", "carol"),
        },
        &Settings::default(),
        10,
    );
    assert_eq!(
        fx,
        vec![Effect::NotifyIncoming {
            invitation_id: iid("r1"),
            caller: "carol".into(),
            content: "room".into()
        }]
    );
    assert_eq!(c.call.as_ref().unwrap().phase, Phase::Incoming);
    let fx = c.on_event(
        &Event::RemoteInvitationAccepted {
            invitation: remote("r1", "carol"),
        },
        &Settings::default(),
        20,
    );
    assert_eq!(fx[0], Effect::Withdraw(iid("r1")));
    assert_eq!(c.call.as_ref().unwrap().phase, Phase::InCall);
    let fx = c.on_event(
        &Event::CallEnded {
            invitation_id: iid("r1"),
            peer: "carol".into(),
            reason: CallEndReason::Hangup,
            by: Some("alice".into()),
        },
        &Settings::default(),
        30_020,
    );
    assert_eq!(outcome_of(&fx), Some("hung_up"));
    assert_eq!(c.history[0].duration_s, Some(30));
}

#[test]
fn canceled_or_expired_incoming_is_a_missed_call() {
    for event in [
        Event::RemoteInvitationCanceled {
            invitation: remote("r", "carol"),
        },
        Event::RemoteInvitationFailure {
            invitation: remote("r", "carol"),
            reason: FailureReason::Expired,
        },
        Event::RemoteInvitationFailure {
            invitation: remote("r", "carol"),
            reason: FailureReason::PeerOffline,
        },
    ] {
        let mut c = signed_in();
        c.on_event(
            &Event::RemoteInvitationReceived {
                invitation: remote("r", "carol"),
            },
            &Settings::default(),
            10,
        );
        let fx = c.on_event(&event, &Settings::default(), 20);
        assert_eq!(fx[0], Effect::Withdraw(iid("r")));
        assert_eq!(outcome_of(&fx), Some("missed"));
        assert!(fx.contains(&Effect::NotifyMissed("carol".into())));
        assert!(c.call.is_none());
        assert!(c.history[0].missed);
    }
}

#[test]
fn answered_elsewhere_is_not_missed() {
    for (reason, word) in [
        (FailureReason::AnsweredElsewhere, "answered_elsewhere"),
        (FailureReason::DeclinedElsewhere, "declined_elsewhere"),
    ] {
        let mut c = signed_in();
        c.on_event(
            &Event::RemoteInvitationReceived {
                invitation: remote("r", "carol"),
            },
            &Settings::default(),
            10,
        );
        let fx = c.on_event(
            &Event::RemoteInvitationFailure {
                invitation: remote("r", "carol"),
                reason,
            },
            &Settings::default(),
            20,
        );
        assert_eq!(outcome_of(&fx), Some(word));
        assert!(!fx.iter().any(|e| matches!(e, Effect::NotifyMissed(_))));
        assert!(!c.history[0].missed);
    }
}

#[test]
fn busy_policy_refuses_a_second_call_or_lets_it_ring() {
    let mut c = signed_in();
    outgoing(&mut c, "i", true);
    let auto = Settings::default();
    assert_eq!(auto.busy_policy, BusyPolicy::AutoBusy);
    let fx = c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r2", "dave"),
        },
        &auto,
        10,
    );
    assert_eq!(fx, vec![Effect::RefuseBusy(iid("r2"))]);
    assert_eq!(
        c.call.as_ref().unwrap().peer,
        "bob",
        "the call on screen stays"
    );
    let fx = c.on_event(
        &Event::RemoteInvitationRefused {
            invitation: remote("r2", "dave"),
            busy: true,
        },
        &auto,
        11,
    );
    assert_eq!(outcome_of(&fx), Some("missed"));
    assert!(c.history[0].missed);

    let notify = Settings {
        busy_policy: BusyPolicy::Notify,
        ..Settings::default()
    };
    let fx = c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r3", "erin"),
        },
        &notify,
        12,
    );
    assert!(matches!(&fx[..], [Effect::NotifyIncoming { .. }]));
    assert!(c.waiting.contains_key(&iid("r3")));
}

#[test]
fn session_over_ends_the_call_and_withdraws() {
    let mut c = signed_in();
    c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r", "carol"),
        },
        &Settings::default(),
        10,
    );
    let fx = c.session_over(20);
    assert_eq!(fx[0], Effect::Withdraw(iid("r")));
    assert_eq!(outcome_of(&fx), Some("connection_lost"));
    assert!(c.call.is_none());
}

#[test]
fn meeting_url_only_when_configured_and_encoded() {
    let s = Settings {
        meeting_url_template: "https://meet.example.org/{channel}".into(),
        ..Settings::default()
    };
    assert_eq!(
        meeting_url(&s, "a b/c"),
        Some("https://meet.example.org/a%20b%2Fc".into())
    );
    assert_eq!(meeting_url(&s, ""), None);
    assert_eq!(meeting_url(&Settings::default(), "room"), None);
}

#[test]
fn recent_peers_are_unique_newest_first() {
    let mut c = signed_in();
    for (i, peer) in ["bob", "carol", "bob", "dave"].iter().enumerate() {
        c.history.push(crate::store::HistoryEntry {
            id: format!("{i}"),
            direction: "outgoing".into(),
            peer: peer.to_string(),
            at_ms: 0,
            outcome: "accepted".into(),
            duration_s: None,
            missed: false,
        });
    }
    assert_eq!(c.recent_peers(2), ["bob", "carol"]);
    assert_eq!(c.recent_peers(10), ["bob", "carol", "dave"]);
}

#[test]
fn missed_calls_from_the_server_join_the_history_in_time_order_once_and_are_cleared() {
    use callinvite_client::{MissedCall, MissedReason};
    let mut c = signed_in();
    c.history.push(crate::store::HistoryEntry {
        id: "recent".into(),
        direction: "outgoing".into(),
        peer: "dave".into(),
        at_ms: 5_000,
        outcome: "accepted".into(),
        duration_s: Some(3),
        missed: false,
    });
    let missed = |id: &str, caller: &str, at_ms| MissedCall {
        invitation_id: iid(id),
        caller: caller.into(),
        content: String::new(),
        at_ms,
        reason: MissedReason::PeerOffline,
    };
    let event = Event::MissedCalls {
        calls: vec![missed("m1", "bob", 1_000), missed("m2", "carol", 9_000)],
    };
    let fx = c.on_event(&event, &Settings::default(), 10_000);
    let order: Vec<(&str, &str)> = c
        .history
        .iter()
        .map(|h| (h.id.as_str(), h.outcome.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![("m2", "missed"), ("recent", "accepted"), ("m1", "missed")]
    );
    assert!(c
        .history
        .iter()
        .filter(|h| h.id.starts_with('m'))
        .all(|h| h.missed));
    assert_eq!(
        fx,
        vec![
            Effect::NotifyMissed("bob".into()),
            Effect::NotifyMissed("carol".into()),
            Effect::SaveHistory,
            Effect::ClearMissed(vec![iid("m1"), iid("m2")]),
        ]
    );
    // Delivered again (the clear did not reach the server): no duplicates, no new notifications.
    let fx = c.on_event(&event, &Settings::default(), 11_000);
    assert_eq!(c.history.len(), 3);
    assert!(!fx.iter().any(|e| matches!(e, Effect::NotifyMissed(_))));
    assert!(fx.contains(&Effect::ClearMissed(vec![iid("m1"), iid("m2")])));
}

pub(super) fn media_of(c: &Calls) -> MediaStatus {
    c.call
        .as_ref()
        .and_then(|c| c.media.clone())
        .expect("a call with media")
}

#[test]
fn an_accepted_call_starts_its_sound_and_the_end_stops_it() {
    // Caller side: the caller's device offers.
    let mut c = signed_in();
    outgoing(&mut c, "i1", true);
    let fx = c.on_event(
        &Event::LocalInvitationAccepted {
            invitation: local(Some("i1"), "bob"),
            response: String::new(),
        },
        &Settings::default(),
        2_000,
    );
    assert!(fx.contains(&Effect::StartMedia {
        invitation_id: iid("i1"),
        role: MediaRole::Offerer
    }));
    assert_eq!(media_of(&c).phase, MediaPhase::Connecting);
    assert!(c.on_media(&iid("i1"), MediaUpdate::Connected));
    assert!(
        !c.on_media(&iid("other"), MediaUpdate::Reconnecting),
        "another call's media changes nothing"
    );
    assert_eq!(media_of(&c).phase, MediaPhase::Connected);
    let fx = c.on_event(
        &Event::CallEnded {
            invitation_id: iid("i1"),
            peer: "bob".into(),
            reason: CallEndReason::Hangup,
            by: Some("bob".into()),
        },
        &Settings::default(),
        9_000,
    );
    assert_eq!(fx[0], Effect::StopMedia, "the sound stops first");

    // Callee side: answers; a lost session stops the sound too.
    let mut c = signed_in();
    c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r1", "carol"),
        },
        &Settings::default(),
        10,
    );
    let muted = Settings {
        start_muted: true,
        ..Settings::default()
    };
    let fx = c.on_event(
        &Event::RemoteInvitationAccepted {
            invitation: remote("r1", "carol"),
        },
        &muted,
        20,
    );
    assert!(fx.contains(&Effect::StartMedia {
        invitation_id: iid("r1"),
        role: MediaRole::Answerer
    }));
    assert!(media_of(&c).muted, "start muted is honoured");
    let fx = c.session_over(30);
    assert!(fx.contains(&Effect::StopMedia));
    assert!(c.call.is_none());
}

#[test]
fn calls_that_were_never_accepted_start_and_stop_no_sound() {
    let mut c = signed_in();
    outgoing(&mut c, "i1", true);
    let fx = c.on_event(
        &Event::LocalInvitationRefused {
            invitation: local(Some("i1"), "bob"),
            response: String::new(),
            busy: true,
        },
        &Settings::default(),
        2_000,
    );
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::StartMedia { .. } | Effect::StopMedia)));
}

#[test]
fn do_not_disturb_answers_busy_or_rings_silently() {
    let busy = Settings {
        do_not_disturb: crate::store::DoNotDisturb::Busy,
        ..Settings::default()
    };
    let mut c = signed_in();
    let fx = c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r1", "carol"),
        },
        &busy,
        10,
    );
    assert_eq!(
        fx,
        vec![Effect::RefuseBusy(iid("r1"))],
        "no ringing, no notification"
    );
    assert!(c.call.is_none());
    let fx = c.on_event(
        &Event::RemoteInvitationRefused {
            invitation: remote("r1", "carol"),
            busy: true,
        },
        &busy,
        20,
    );
    assert!(fx.contains(&Effect::NotifyMissed("carol".into())));
    let detail = fx.iter().find_map(|e| match e {
        Effect::Outcome(o) => Some(o.detail.clone()),
        _ => None,
    });
    assert_eq!(
        detail.as_deref(),
        Some("answered busy: do not disturb is on")
    );
    assert!(c.history[0].missed);

    let silent = Settings {
        do_not_disturb: crate::store::DoNotDisturb::Silent,
        ..Settings::default()
    };
    let mut c = signed_in();
    let fx = c.on_event(
        &Event::RemoteInvitationReceived {
            invitation: remote("r2", "dave"),
        },
        &silent,
        10,
    );
    assert!(
        matches!(fx[0], Effect::NotifyIncoming { .. }),
        "still shown"
    );
    assert!(c.call.as_ref().unwrap().silent, "but without the ringtone");
}
