//! The server's side of one session, sans-I/O: numbering what the session is
//! sent, keeping it until the client says it has `seen` it, and replaying
//! it on `resume` (PROTOCOL.md §1.2 and §1.8).
//!
//! ```text
//!               handle_detach(now)
//!   Attached ──────────────────────────► Detached { until }
//!      ▲                                      │
//!      └───────── handle_resume(last_seq) ────┤  (also from Attached: a takeover)
//!                                             │
//!               handle_timeout(now ≥ until) ──┴──► over (the owner drops it)
//! ```
//!
//! The owner (the server's hub) hands it each message to send with a
//! function that encodes it under the `seq` it is given
//! ([`ServerSession::send`]), then writes out [`ServerSession::poll_transmit`]
//! on the attached connection. The outbox itself is the transmit queue: a
//! cursor says how far the current connection has been given it, so a
//! message costs one slot in the outbox whether or not it must be replayed,
//! and a resume only moves the cursor back to the client's `last_seq`.
//!
//! `T` is the encoded frame; the server uses a reference-counted string, so
//! keeping a message and writing it are the same bytes, never a copy. The
//! limits ([`OutboxLimits`]) are passed to the calls that need them rather
//! than kept in every session: a server holds one session per device, and
//! an idle device's bytes count.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much of a session the server keeps for a resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLimits {
    /// How long a session outlives its connection (the resume window). Zero
    /// turns resume off: nothing is kept for a replay.
    pub grace: Duration,
    /// At most this many unacknowledged messages are kept; a resume from
    /// before the oldest one kept is refused ([`ResumeRefusal::TooFarBehind`]).
    pub keep: usize,
}

impl OutboxLimits {
    /// Whether messages are kept for a resume at all.
    pub fn resumable(&self) -> bool {
        !self.grace.is_zero()
    }
}

/// Why a `resume` cannot continue this session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefusal {
    /// The client names a `seq` the session never sent: a client bug. The
    /// session goes on as it was.
    #[error("last_seq {last_seq} is ahead of this session's {seq}")]
    Ahead { last_seq: u64, seq: u64 },
    /// Messages the client never saw are no longer kept (more than
    /// [`OutboxLimits::keep`] went unacknowledged): it cannot catch up, and
    /// the session must end.
    #[error("{missed} messages of this session are no longer kept; log in again")]
    TooFarBehind { missed: u64 },
}

/// What a successful [`ServerSession::handle_resume`] found; the replay
/// follows from [`ServerSession::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The `seq` of the last message sent (for the `resumed` answer).
    pub seq: u64,
    /// The highest request `ref` seen (for the `resumed` answer).
    pub last_ref: u64,
    /// How many kept messages are replayed.
    pub replay: usize,
    /// The session was still attached to another connection, which the
    /// owner must now close (the session moved to the new one).
    pub took_over: bool,
}

/// Where the session's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attachment {
    /// To a connection that has been given every message up to `written`.
    Attached { written: u64 },
    /// Nowhere: the session waits for a resume until `until`.
    Detached { until: Instant },
}

/// One session's outbox on the server. See the module docs.
#[derive(Debug)]
pub struct ServerSession<T> {
    /// The `seq` of the last message sent (0: none yet).
    seq: u64,
    /// The highest request `ref` applied (reported on resume). Starts at the
    /// login's `ref`, so a client's requests are numbered above it.
    last_ref: u64,
    /// Messages not acknowledged with `seen`, oldest first, with consecutive
    /// `seq`s. Without resume, only those not yet given to a connection.
    unseen: VecDeque<(u64, T)>,
    attachment: Attachment,
}

impl<T: Clone> ServerSession<T> {
    /// A session that starts attached to the connection that logged in,
    /// with the `ref` of that login (0 without one).
    pub fn new(login_ref: u64) -> Self {
        ServerSession {
            seq: 0,
            last_ref: login_ref,
            unseen: VecDeque::new(),
            attachment: Attachment::Attached { written: 0 },
        }
    }

    /// The `seq` of the last message sent.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The highest request `ref` applied.
    pub fn last_ref(&self) -> u64 {
        self.last_ref
    }

    /// How many messages are kept, unacknowledged.
    pub fn unseen(&self) -> usize {
        self.unseen.len()
    }

    /// Whether a connection is attached.
    pub fn is_attached(&self) -> bool {
        matches!(self.attachment, Attachment::Attached { .. })
    }

    /// Sends one message: numbers it, has `encode` make the frame for that
    /// `seq`, and keeps it for a resume and for [`Self::poll_transmit`].
    /// Without resume, a message for a detached session is dropped.
    pub fn send(&mut self, limits: &OutboxLimits, encode: impl FnOnce(u64) -> T) {
        self.seq += 1;
        if !limits.resumable() && !self.is_attached() {
            return;
        }
        self.unseen.push_back((self.seq, encode(self.seq)));
        if limits.resumable() && self.unseen.len() > limits.keep {
            // Too far behind to resume from the start; a resume from
            // before the oldest kept message is refused.
            self.unseen.pop_front();
        }
    }

    /// The next frame to write on the attached connection, oldest first.
    /// (`limits` says whether it is kept for a replay or handed over.)
    pub fn poll_transmit(&mut self, limits: &OutboxLimits) -> Option<T> {
        let Attachment::Attached { written } = &mut self.attachment else {
            return None;
        };
        if !limits.resumable() {
            let (seq, text) = self.unseen.pop_front()?;
            *written = seq;
            return Some(text);
        }
        let &(first, _) = self.unseen.front()?;
        if first > *written + 1 {
            // Dropped before it was given out (acknowledged early, or past
            // the bound): the connection goes on from what is kept.
            *written = first - 1;
        }
        let at = usize::try_from(*written + 1 - first).ok()?;
        let (seq, text) = self.unseen.get(at)?;
        *written = *seq;
        Some(text.clone())
    }

    /// The client has processed every message up to `seq` (`seen`).
    pub fn handle_seen(&mut self, seq: u64) {
        while self.unseen.front().is_some_and(|&(s, _)| s <= seq) {
            self.unseen.pop_front();
        }
    }

    /// A request with `ref` `req` is being applied.
    pub fn handle_request(&mut self, req: Option<u64>) {
        if let Some(r) = req {
            self.last_ref = self.last_ref.max(r);
        }
    }

    /// The connection dropped: the session waits for a resume until the
    /// instant returned. What it is sent meanwhile is kept.
    pub fn handle_detach(&mut self, limits: &OutboxLimits, now: Instant) -> Instant {
        let until = now + limits.grace;
        self.attachment = Attachment::Detached { until };
        if !limits.resumable() {
            // Nothing was kept for a replay: what was not written is lost.
            self.unseen.clear();
        }
        until
    }

    /// A new connection resumes the session from `last_seq`: acknowledges
    /// everything up to it and queues the rest for [`Self::poll_transmit`].
    /// On [`ResumeRefusal::TooFarBehind`] the owner ends the session.
    pub fn handle_resume(&mut self, last_seq: u64) -> Result<Resumed, ResumeRefusal> {
        if last_seq > self.seq {
            return Err(ResumeRefusal::Ahead {
                last_seq,
                seq: self.seq,
            });
        }
        let oldest = self.unseen.front().map_or(self.seq + 1, |&(s, _)| s);
        if last_seq + 1 < oldest {
            return Err(ResumeRefusal::TooFarBehind {
                missed: oldest - last_seq - 1,
            });
        }
        while self.unseen.front().is_some_and(|&(s, _)| s <= last_seq) {
            self.unseen.pop_front();
        }
        let took_over = self.is_attached();
        self.attachment = Attachment::Attached { written: last_seq };
        Ok(Resumed {
            seq: self.seq,
            last_ref: self.last_ref,
            replay: self.unseen.len(),
            took_over,
        })
    }

    /// When a detached session is given up; `None` while attached.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.attachment {
            Attachment::Detached { until } => Some(until),
            Attachment::Attached { .. } => None,
        }
    }

    /// Time passes: true once a detached session's resume window is over
    /// (the owner then ends it).
    pub fn handle_timeout(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|until| until <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: OutboxLimits = OutboxLimits {
        grace: Duration::from_secs(10),
        keep: 4,
    };
    const OFF: OutboxLimits = OutboxLimits {
        grace: Duration::ZERO,
        keep: 4,
    };

    fn drain(s: &mut ServerSession<String>, limits: &OutboxLimits) -> Vec<String> {
        std::iter::from_fn(|| s.poll_transmit(limits)).collect()
    }

    fn send(s: &mut ServerSession<String>, limits: &OutboxLimits, n: usize) {
        for _ in 0..n {
            s.send(limits, |seq| format!("m{seq}"));
        }
    }

    #[test]
    fn numbers_messages_and_writes_each_once() {
        let mut s = ServerSession::new(7);
        send(&mut s, &ON, 2);
        assert_eq!(drain(&mut s, &ON), ["m1", "m2"]);
        send(&mut s, &ON, 1);
        assert_eq!(drain(&mut s, &ON), ["m3"]);
        assert_eq!(drain(&mut s, &ON), Vec::<String>::new());
        assert_eq!((s.seq(), s.last_ref(), s.unseen()), (3, 7, 3));
    }

    #[test]
    fn seen_drops_what_the_client_has() {
        let mut s = ServerSession::new(0);
        send(&mut s, &ON, 3);
        drain(&mut s, &ON);
        s.handle_seen(2);
        assert_eq!(s.unseen(), 1);
        s.handle_seen(99);
        assert_eq!(s.unseen(), 0);
    }

    #[test]
    fn resume_replays_what_was_not_seen() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(0);
        send(&mut s, &ON, 2);
        drain(&mut s, &ON);
        let until = s.handle_detach(&ON, t0);
        assert_eq!(until, t0 + ON.grace);
        assert_eq!(s.poll_timeout(), Some(until));
        send(&mut s, &ON, 1);
        assert_eq!(
            s.poll_transmit(&ON),
            None,
            "nothing is written while detached"
        );
        s.handle_request(Some(5));
        let r = s.handle_resume(1).expect("resumable");
        assert_eq!(
            r,
            Resumed {
                seq: 3,
                last_ref: 5,
                replay: 2,
                took_over: false
            }
        );
        assert_eq!(drain(&mut s, &ON), ["m2", "m3"]);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn resume_of_an_attached_session_takes_it_over() {
        let mut s = ServerSession::new(0);
        send(&mut s, &ON, 2);
        drain(&mut s, &ON);
        let r = s.handle_resume(2).expect("resumable");
        assert!(r.took_over);
        assert_eq!(r.replay, 0);
        assert_eq!(drain(&mut s, &ON), Vec::<String>::new());
    }

    #[test]
    fn resume_refusals() {
        let mut s = ServerSession::new(0);
        send(&mut s, &ON, 6);
        drain(&mut s, &ON);
        assert_eq!(
            s.handle_resume(7),
            Err(ResumeRefusal::Ahead {
                last_seq: 7,
                seq: 6
            })
        );
        // Kept: 3..=6 (four); the client had only 1.
        assert_eq!(
            s.handle_resume(1),
            Err(ResumeRefusal::TooFarBehind { missed: 1 })
        );
        assert!(s.handle_resume(2).is_ok());
    }

    #[test]
    fn without_resume_nothing_is_kept() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(0);
        send(&mut s, &OFF, 2);
        assert_eq!(drain(&mut s, &OFF), ["m1", "m2"]);
        assert_eq!(s.unseen(), 0);
        s.handle_detach(&OFF, t0);
        send(&mut s, &OFF, 1);
        assert_eq!(s.unseen(), 0);
        assert_eq!(
            s.handle_resume(2),
            Err(ResumeRefusal::TooFarBehind { missed: 1 })
        );
        assert_eq!(s.handle_resume(3).map(|r| r.replay), Ok(0));
    }

    #[test]
    fn detached_session_expires_at_the_end_of_its_window() {
        let t0 = Instant::now();
        let mut s = ServerSession::<String>::new(0);
        assert!(!s.handle_timeout(t0 + Duration::from_secs(3600)));
        s.handle_detach(&ON, t0);
        assert!(!s.handle_timeout(t0 + ON.grace - Duration::from_millis(1)));
        assert!(s.handle_timeout(t0 + ON.grace));
    }

    #[test]
    fn the_bound_drops_the_oldest_while_detached() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(0);
        s.handle_detach(&ON, t0);
        send(&mut s, &ON, 6);
        assert_eq!(s.unseen(), ON.keep);
        let r = s
            .handle_resume(2)
            .expect("2 is just before the oldest kept");
        assert_eq!(r.replay, 4);
        assert_eq!(drain(&mut s, &ON), ["m3", "m4", "m5", "m6"]);
    }
}
