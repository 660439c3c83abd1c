//! Property test of the server's outbox ([`ServerSession`]): messages sent
//! at random while a connection drops, comes back and resumes, with `seen`
//! at random. Checks that the client gets every `seq` exactly once and in
//! order across resumes, that a resume is refused only when more than
//! `keep` messages went unprocessed, and that nothing is written while
//! detached.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use callinvite_protocol::session::{OutboxLimits, ResumeRefusal, ServerSession};

#[derive(Clone, Debug)]
enum Step {
    /// The server sends the session a message.
    Send,
    /// The next frame in flight reaches the client.
    Deliver,
    /// The client acknowledges what it processed.
    Seen,
    /// The connection drops: whatever is in flight is lost.
    Drop,
    /// The client connects again and resumes from what it processed.
    Resume,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => Just(Step::Send),
        5 => Just(Step::Deliver),
        2 => Just(Step::Seen),
        1 => Just(Step::Drop),
        2 => Just(Step::Resume),
    ]
}

const LIMITS: OutboxLimits = OutboxLimits {
    grace: Duration::from_secs(10),
    keep: 8,
};

proptest! {
    #[test]
    fn every_seq_once_and_in_order(steps in prop::collection::vec(step(), 1..300)) {
        let now = Instant::now();
        let mut server = ServerSession::<u64>::new(0);
        let mut wire: VecDeque<u64> = VecDeque::new();
        let mut connected = true;
        // The last seq the client processed.
        let mut last = 0u64;
        for step in steps {
            match step {
                Step::Send => {
                    server.send(&LIMITS, |seq| seq);
                    while let Some(frame) = server.poll_transmit(&LIMITS) {
                        prop_assert!(connected, "written while detached");
                        wire.push_back(frame);
                    }
                }
                Step::Deliver => {
                    if let Some(frame) = wire.pop_front() {
                        prop_assert_eq!(frame, last + 1, "out of order or twice");
                        last = frame;
                    }
                }
                Step::Seen => server.handle_seen(last),
                Step::Drop => {
                    if connected {
                        wire.clear();
                        connected = false;
                        server.handle_detach(&LIMITS, now);
                    }
                }
                Step::Resume => {
                    wire.clear();
                    let behind = server.seq() - last;
                    match server.handle_resume(last) {
                        Ok(resumed) => {
                            prop_assert_eq!(resumed.seq, server.seq());
                            prop_assert_eq!(resumed.replay as u64, behind);
                            prop_assert_eq!(resumed.took_over, connected);
                            connected = true;
                            while let Some(frame) = server.poll_transmit(&LIMITS) {
                                wire.push_back(frame);
                            }
                            prop_assert_eq!(wire.len() as u64, behind);
                        }
                        Err(ResumeRefusal::TooFarBehind { missed }) => {
                            prop_assert!(behind > LIMITS.keep as u64, "refused with only {} behind", behind);
                            prop_assert!(missed >= 1 && missed <= behind);
                            // The session is over: a new one starts.
                            server = ServerSession::new(0);
                            connected = true;
                            last = 0;
                        }
                        Err(e @ ResumeRefusal::Ahead { .. }) => {
                            prop_assert!(false, "the client is never ahead: {}", e);
                        }
                    }
                }
            }
        }
    }
}
