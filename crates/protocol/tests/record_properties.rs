//! Property tests: random sequences of everything that can happen to one
//! invitation (devices coming and going, acks, answers, cancels, hang-ups,
//! time passing), checking the invariants both parties rely on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use callinvite_protocol::invitation::{Effect, GoneCause, Input, Party, Record, Timeouts};
use callinvite_protocol::wire::AckOf;
use callinvite_protocol::{DeviceId, InvitationId, ServerMessage, UserId};

const CALLER: DeviceId = DeviceId(1);
const CALLEES: [DeviceId; 3] = [DeviceId(11), DeviceId(12), DeviceId(13)];

#[derive(Clone, Debug)]
enum Step {
    Online(usize),
    AckInvitation(usize),
    AckCanceled(usize),
    Accept(usize),
    Refuse(usize, bool),
    Cancel,
    HangupByCaller,
    HangupByCallee(usize),
    Gone(Option<usize>, bool),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let d = 0usize..3;
    prop_oneof![
        1 => d.clone().prop_map(Step::Online),
        3 => d.clone().prop_map(Step::AckInvitation),
        1 => d.clone().prop_map(Step::AckCanceled),
        2 => d.clone().prop_map(Step::Accept),
        1 => (d.clone(), any::<bool>()).prop_map(|(i, b)| Step::Refuse(i, b)),
        1 => Just(Step::Cancel),
        1 => Just(Step::HangupByCaller),
        1 => d.clone().prop_map(Step::HangupByCallee),
        1 => (prop::option::of(d), any::<bool>()).prop_map(|(i, b)| Step::Gone(i, b)),
        3 => (0u64..40_000).prop_map(Step::Wait),
    ]
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// Which messages each device got, in order.
type Inbox = BTreeMap<DeviceId, Vec<ServerMessage>>;

fn deliver(fx: Vec<Effect>, inbox: &mut Inbox) {
    for e in fx {
        inbox.entry(e.to).or_default().push(e.msg);
    }
}

fn is_final_for_caller(m: &ServerMessage) -> bool {
    matches!(
        m,
        ServerMessage::Accepted { .. }
            | ServerMessage::Refused { .. }
            | ServerMessage::Canceled { .. }
            | ServerMessage::Failed { .. }
    )
}

fn is_final_for_callee(m: &ServerMessage) -> bool {
    matches!(
        m,
        ServerMessage::Canceled { .. } | ServerMessage::Failed { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_invitation_ends_once_and_both_sides_agree(
        initially_online in prop::collection::vec(any::<bool>(), 3),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let online: Vec<DeviceId> = CALLEES.iter().zip(&initially_online).filter(|(_, on)| **on).map(|(d, _)| *d).collect();
        let caller = Party { user: user("alice"), device: CALLER };
        let (mut record, fx) = Record::new(InvitationId("i".into()), caller.clone(), 0, user("bob"), String::new(), &online, Timeouts::default(), now);
        let mut inbox: Inbox = BTreeMap::new();
        deliver(fx, &mut inbox);
        let mut gone: Vec<DeviceId> = vec![];
        // The `ref`s of accept and refuse requests (to tell an answer's `ok` from a hang-up's).
        let mut answer_reqs: Vec<u64> = vec![];
        let bob = |i: usize| Party { user: user("bob"), device: CALLEES[i] };
        for (n, s) in steps.iter().enumerate() {
            let req = n as u64 + 1;
            let input = match s.clone() {
                Step::Online(i) if !gone.contains(&CALLEES[i]) => Input::CalleeDeviceOnline(CALLEES[i]),
                Step::Online(_) => continue,
                Step::AckInvitation(i) => Input::Ack { from: CALLEES[i], of: AckOf::Invitation },
                Step::AckCanceled(i) => Input::Ack { from: CALLEES[i], of: AckOf::Canceled },
                Step::Accept(i) if !gone.contains(&CALLEES[i]) => {
                    answer_reqs.push(req);
                    Input::Accept { from: bob(i), req, response: String::new() }
                }
                Step::Refuse(i, busy) if !gone.contains(&CALLEES[i]) => {
                    answer_reqs.push(req);
                    Input::Refuse { from: bob(i), req, response: String::new(), busy }
                }
                Step::Accept(_) | Step::Refuse(..) => continue,
                Step::Cancel if !gone.contains(&CALLER) => Input::Cancel { from: caller.clone(), req },
                Step::HangupByCaller if !gone.contains(&CALLER) => Input::Hangup { from: caller.clone(), req },
                Step::Cancel | Step::HangupByCaller => continue,
                Step::HangupByCallee(i) => Input::Hangup { from: bob(i), req },
                Step::Gone(who, logout) => {
                    let device = who.map_or(CALLER, |i| CALLEES[i]);
                    if gone.contains(&device) {
                        continue;
                    }
                    gone.push(device);
                    Input::DeviceGone { device, cause: if logout { GoneCause::Logout } else { GoneCause::ConnectionLost } }
                }
                Step::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    Input::Tick
                }
            };
            let fx = record.handle(input, now);
            deliver(fx, &mut inbox);
        }
        // Much later, every timer has fired.
        now += Duration::from_secs(1000);
        let fx = record.handle(Input::Tick, now);
        deliver(fx, &mut inbox);

        // 1. Nothing rings forever, and nothing waits forever for cancel acks.
        prop_assert!(!record.is_ringing(), "still ringing: {}", record.phase_name());
        prop_assert!(record.phase_name() != "canceling");

        let caller_msgs = inbox.get(&CALLER).cloned().unwrap_or_default();
        // 2. The caller hears exactly one outcome, unless its own device went away first.
        let finals: Vec<&ServerMessage> = caller_msgs.iter().filter(|m| is_final_for_caller(m)).collect();
        prop_assert!(finals.len() <= 1, "caller got {:?}", finals);
        if !gone.contains(&CALLER) {
            prop_assert_eq!(finals.len(), 1, "caller got no outcome: {:?}", caller_msgs);
        }
        // 3. received_by_peer at most once, and never after the outcome.
        let rbp: Vec<usize> = caller_msgs.iter().enumerate().filter(|(_, m)| matches!(m, ServerMessage::ReceivedByPeer { .. })).map(|(i, _)| i).collect();
        prop_assert!(rbp.len() <= 1);
        if let (Some(r), Some(f)) = (rbp.first(), caller_msgs.iter().position(is_final_for_caller)) {
            prop_assert!(*r < f, "received_by_peer after the outcome");
        }
        // 4. Each callee device hears at most one ending; a device whose answer
        //    succeeded is never also told the invitation ended without it.
        let mut answered_ok = vec![];
        for d in CALLEES {
            let msgs = inbox.get(&d).cloned().unwrap_or_default();
            let endings = msgs.iter().filter(|m| is_final_for_callee(m)).count();
            prop_assert!(endings <= 1, "{} got {} endings: {:?}", d, endings, msgs);
            let answers = msgs.iter().filter(|m| matches!(m, ServerMessage::Ok { req: Some(r) } if answer_reqs.contains(r))).count();
            prop_assert!(answers <= 1, "{} answered successfully {} times", d, answers);
            if answers == 1 {
                answered_ok.push(d);
                prop_assert_eq!(endings, 0, "{} answered and was also told it ended: {:?}", d, msgs);
            }
        }
        // 5. Both sides agree: accepted or refused ⇔ exactly one device answered.
        match finals.first() {
            Some(ServerMessage::Accepted { .. }) | Some(ServerMessage::Refused { .. }) => {
                prop_assert_eq!(answered_ok.len(), 1, "answered by {:?}", answered_ok)
            }
            Some(_) => prop_assert!(answered_ok.is_empty(), "ended without an answer, yet {:?} answered", answered_ok),
            None => prop_assert!(answered_ok.len() <= 1),
        }
        // 6. call_ended at most once per device, and only after an accept.
        let accepted_somewhere = answered_ok.len() == 1 && record.outcome().is_none_or(|o| !matches!(o, callinvite_protocol::invitation::Outcome::Refused { .. }));
        for (d, msgs) in &inbox {
            let ended = msgs.iter().filter(|m| matches!(m, ServerMessage::CallEnded { .. })).count();
            prop_assert!(ended <= 1, "{} got call_ended {} times", d, ended);
            if ended == 1 {
                prop_assert!(accepted_somewhere, "call_ended without an accepted call");
            }
        }
    }
}
