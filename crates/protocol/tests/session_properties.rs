//! Property test of resume: a client session against a model server over a
//! connection that drops at random, with the server's messages, the client's
//! requests and acks, reconnects (some answered `session_moved`, as when the
//! session's node died), duplicated frames and time passing in random order.
//! Checks that every `seq` reaches the app exactly once and in order, that
//! every request is answered exactly once (or failed by a move) and applied by
//! the server at most once, that acks and `seen` reach the server, and that
//! the client never acknowledges what it has not processed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use callinvite_protocol::session::{
    ClientSession, Config, Disconnected, Received, SessionEvent, KEEP_ACKS, SEEN_DELAY,
};
use callinvite_protocol::wire::{AckOf, PresenceEntry, TimersMs};
use callinvite_protocol::{ClientMessage, DeviceId, ErrorCode, InvitationId, ServerMessage};

#[derive(Clone, Debug)]
enum Step {
    /// The app makes a request (`query_presence`).
    Request,
    /// The server has a message for the session (an `invitation` if true, which the app acks).
    Push(bool),
    /// The next frame in flight reaches the server.
    ToServer,
    /// The next frame in flight reaches the client.
    ToClient,
    /// The client gets again a numbered frame it already got.
    Duplicate(usize),
    /// The connection drops: whatever is in flight either way is lost.
    Drop,
    /// The client connects again; if true the session's node died meanwhile,
    /// and the server answers the resume with `session_moved`.
    Reconnect(bool),
    /// Time passes (milliseconds).
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Request),
        4 => prop::bool::weighted(0.25).prop_map(Step::Push),
        6 => Just(Step::ToServer),
        7 => Just(Step::ToClient),
        1 => any::<usize>().prop_map(Step::Duplicate),
        2 => Just(Step::Drop),
        3 => prop::bool::weighted(0.1).prop_map(Step::Reconnect),
        2 => (0u64..800).prop_map(Step::Wait),
    ]
}

/// The name of the message `seq` of session epoch `epoch`, carried in its
/// content so that the app can tell which one it got.
fn label(epoch: u32, seq: u64) -> String {
    format!("e{epoch}s{seq}")
}

fn parse(label: &str) -> (u32, u64) {
    let (e, s) = label[1..].split_once('s').expect("a label");
    (e.parse().unwrap(), s.parse().unwrap())
}

/// One connection and what is in flight on it.
#[derive(Default)]
struct Conn {
    to_server: VecDeque<ClientMessage>,
    to_client: VecDeque<(Option<u64>, ServerMessage)>,
    /// The server has not read a frame from it yet (the first must be `resume`).
    fresh: bool,
    /// The server answers the resume on it with `session_moved`.
    moves: bool,
}

/// The server's side of the session, as PROTOCOL.md §1.8 describes it.
struct Server {
    /// Bumped by every `session_moved` (a new device, numbered from 1).
    epoch: u32,
    secret: String,
    /// The last `seq` used in this epoch.
    seq: u64,
    /// Sent but not yet acknowledged, kept for a resume.
    outbox: VecDeque<(u64, ServerMessage)>,
    /// Everything up to here was acknowledged (`seen`, or `resume`'s `last_seq`).
    acked: u64,
    /// The highest request `ref` applied in this epoch.
    last_ref: u64,
    /// Whether the current connection carries the session.
    attached: bool,
    /// Every `ref` ever applied, to catch one applied twice.
    applied: BTreeSet<u64>,
    /// The last `seq` of each epoch.
    sent: Vec<u64>,
    /// The invitations acked, by label.
    acks: BTreeSet<String>,
}

/// What the app saw.
#[derive(Default)]
struct App {
    epoch: u32,
    /// (epoch, seq) of every numbered message that reached the app, in order.
    delivered: Vec<(u32, u64)>,
    /// For each request (by tag): how many replies, and whether it failed.
    replies: BTreeMap<u64, u32>,
    failed: BTreeSet<u64>,
    next_tag: u64,
    /// Numbered frames the client got in this epoch, to send again as duplicates.
    history: Vec<(u64, ServerMessage)>,
    /// Invitations acked, with the epoch they were acked in.
    acked: Vec<(u32, String)>,
    /// The resume was refused: the session is over.
    over: bool,
}

struct World {
    now: Instant,
    client: ClientSession<u64>,
    server: Server,
    conn: Option<Conn>,
    app: App,
}

impl World {
    fn new() -> Self {
        let config = Config::new("s0", Duration::from_secs(10), Duration::from_secs(15));
        World {
            now: Instant::now(),
            client: ClientSession::new(config),
            server: Server {
                epoch: 0,
                secret: "s0".into(),
                seq: 0,
                outbox: VecDeque::new(),
                acked: 0,
                last_ref: 0,
                attached: true,
                applied: BTreeSet::new(),
                sent: vec![0],
                acks: BTreeSet::new(),
            },
            conn: Some(Conn::default()),
            app: App::default(),
        }
    }

    fn step(&mut self, step: Step) {
        if self.app.over {
            return;
        }
        match step {
            Step::Request => {
                let tag = self.app.next_tag;
                self.app.next_tag += 1;
                let make = |req| ClientMessage::QueryPresence {
                    req,
                    users: vec!["bob".into()],
                };
                self.client.send_request(make, tag).unwrap();
                self.app.replies.insert(tag, 0);
            }
            Step::Push(invitation) => self.push(invitation),
            Step::ToServer => {
                if let Some(frame) = self.conn.as_mut().and_then(|c| c.to_server.pop_front()) {
                    self.server_gets(frame);
                }
            }
            Step::ToClient => {
                if let Some((seq, msg)) = self.conn.as_mut().and_then(|c| c.to_client.pop_front()) {
                    self.client_gets(seq, msg);
                }
            }
            Step::Duplicate(i) => {
                if self.client.is_up() && !self.app.history.is_empty() {
                    let (seq, msg) = self.app.history[i % self.app.history.len()].clone();
                    let r = self.client.handle_incoming(Some(seq), msg, self.now);
                    assert_eq!(r, Received::Duplicate);
                    assert!(self.client.poll_event().is_none());
                }
            }
            Step::Drop => {
                if self.conn.take().is_some() {
                    self.server.attached = false;
                    let d = self.client.on_disconnected(self.now);
                    assert!(matches!(d, Disconnected::Reconnect { .. }), "{d:?}");
                }
            }
            Step::Reconnect(moves) => {
                if self.conn.is_none() {
                    self.conn = Some(Conn {
                        fresh: true,
                        moves,
                        ..Conn::default()
                    });
                    self.client.on_connected().unwrap();
                }
            }
            Step::Wait(ms) => {
                self.now += Duration::from_millis(ms);
                if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.client.handle_timeout(self.now);
                }
            }
        }
        self.pump();
    }

    /// Moves what the client wants to write onto the connection.
    fn pump(&mut self) {
        while let Some(frame) = self.client.poll_transmit() {
            let conn = self
                .conn
                .as_mut()
                .expect("the client writes only while connected");
            conn.to_server.push_back(frame);
        }
    }

    /// The server sends a numbered message of the session.
    fn push(&mut self, invitation: bool) {
        let msg = if invitation {
            ServerMessage::Invitation {
                invitation_id: InvitationId(label(self.server.epoch, self.server.seq + 1)),
                caller: "alice".into(),
                content: String::new(),
            }
        } else {
            ServerMessage::PresenceChanged {
                user: label(self.server.epoch, self.server.seq + 1),
                online: true,
            }
        };
        self.send_numbered(msg);
    }

    fn send_numbered(&mut self, msg: ServerMessage) {
        let s = &mut self.server;
        s.seq += 1;
        s.sent[s.epoch as usize] = s.seq;
        s.outbox.push_back((s.seq, msg.clone()));
        if s.attached {
            let conn = self.conn.as_mut().expect("attached to a connection");
            conn.to_client.push_back((Some(s.seq), msg));
        }
    }

    fn server_gets(&mut self, frame: ClientMessage) {
        let conn = self.conn.as_mut().expect("connected");
        let fresh = std::mem::replace(&mut conn.fresh, false);
        if fresh {
            assert!(
                matches!(frame, ClientMessage::Resume { .. }),
                "{frame:?} before resume"
            );
        }
        let s = &mut self.server;
        match frame {
            ClientMessage::Resume {
                session, last_seq, ..
            } => {
                assert!(fresh, "resume on a live connection");
                if session != s.secret {
                    // The session was taken over and this client did not hear it.
                    let err = ServerMessage::error(None, ErrorCode::SessionExpired, "gone");
                    conn.to_client.push_back((None, err));
                    return;
                }
                if conn.moves {
                    s.epoch += 1;
                    s.secret = format!("s{}", s.epoch);
                    s.seq = 0;
                    s.outbox.clear();
                    s.acked = 0;
                    s.last_ref = 0;
                    s.sent.push(0);
                    s.attached = true;
                    conn.to_client.push_back((None, moved(&s.secret)));
                    return;
                }
                let current = self
                    .app
                    .delivered
                    .iter()
                    .filter(|(e, _)| *e == s.epoch)
                    .count();
                assert_eq!(
                    last_seq, current as u64,
                    "resume asks for what follows what the app got"
                );
                assert!(last_seq >= s.acked && last_seq <= s.seq);
                s.acked = last_seq;
                s.outbox.retain(|(seq, _)| *seq > last_seq);
                s.attached = true;
                conn.to_client.push_back((
                    None,
                    ServerMessage::Resumed {
                        req: None,
                        device_id: DeviceId(1),
                        last_ref: s.last_ref,
                        seq: s.seq,
                    },
                ));
                for (seq, msg) in &s.outbox {
                    conn.to_client.push_back((Some(*seq), msg.clone()));
                }
            }
            ClientMessage::Seen { seq } => {
                assert!(seq <= s.seq, "seen {seq} ahead of the server's {}", s.seq);
                assert!(
                    seq <= self.client.last_seq(),
                    "seen {seq} for what was not processed"
                );
                assert!(seq >= s.acked, "seen went back");
                s.acked = seq;
                s.outbox.retain(|(n, _)| *n > seq);
            }
            ClientMessage::Ack { invitation_id, of } => {
                assert_eq!(of, AckOf::Invitation);
                s.acks.insert(invitation_id.0);
            }
            ClientMessage::QueryPresence { req, .. } => {
                assert!(
                    req > s.last_ref,
                    "ref {req} at or below last_ref {}",
                    s.last_ref
                );
                assert!(s.applied.insert(req), "ref {req} applied twice");
                s.last_ref = req;
                let users = vec![PresenceEntry {
                    user: label(s.epoch, s.seq + 1),
                    online: true,
                }];
                self.send_numbered(ServerMessage::Presence { req, users });
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn client_gets(&mut self, seq: Option<u64>, msg: ServerMessage) {
        let r = self.client.handle_incoming(seq, msg.clone(), self.now);
        assert!(
            !matches!(r, Received::AfterGap { .. }),
            "the server skips nothing: {r:?}"
        );
        if let (Some(seq), Received::Processed) = (seq, r) {
            self.app.history.push((seq, msg));
        }
        while let Some(event) = self.client.poll_event() {
            match event {
                SessionEvent::Message(ServerMessage::PresenceChanged { user, .. }) => {
                    self.app.delivered.push(parse(&user));
                }
                SessionEvent::Message(ServerMessage::Invitation { invitation_id, .. }) => {
                    self.app.delivered.push(parse(&invitation_id.0));
                    self.app
                        .acked
                        .push((self.app.epoch, invitation_id.0.clone()));
                    self.client.send_ack(invitation_id, AckOf::Invitation);
                }
                SessionEvent::Reply {
                    tag,
                    reply: ServerMessage::Presence { users, .. },
                    ..
                } => {
                    self.app.delivered.push(parse(&users[0].user));
                    *self.app.replies.get_mut(&tag).expect("a request") += 1;
                }
                SessionEvent::Resumed { .. } => {}
                SessionEvent::Moved { unanswered } => {
                    self.app.epoch += 1;
                    self.app.history.clear();
                    for tag in unanswered {
                        assert!(self.app.failed.insert(tag));
                    }
                }
                SessionEvent::ResumeRefused(_) => {
                    self.app.over = true;
                    for (_, tag) in self.client.take_pending() {
                        assert!(self.app.failed.insert(tag));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The network heals: reconnect if needed, deliver everything, let the
    /// `seen` delay pass.
    fn settle(&mut self) {
        if self.conn.is_none() && !self.app.over {
            self.step(Step::Reconnect(false));
        }
        for _ in 0..2 {
            while !self.app.over
                && self
                    .conn
                    .as_ref()
                    .is_some_and(|c| !c.to_server.is_empty() || !c.to_client.is_empty())
            {
                self.step(Step::ToServer);
                self.step(Step::ToClient);
            }
            self.step(Step::Wait(SEEN_DELAY.as_millis() as u64));
        }
    }
}

fn moved(secret: &str) -> ServerMessage {
    ServerMessage::SessionMoved {
        req: None,
        user: "bob".into(),
        device_id: DeviceId(2),
        timers: TimersMs {
            offline_ms: 30_000,
            no_response_ms: 30_000,
            ring_ms: 60_000,
            heartbeat_ms: 15_000,
            resume_ms: 10_000,
        },
        session: secret.into(),
        ice_servers: vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn resume_loses_nothing_and_delivers_nothing_twice(steps in prop::collection::vec(step(), 0..150)) {
        let mut w = World::new();
        for s in steps {
            w.step(s);
        }
        w.settle();

        // Each epoch's messages reached the app once and in order: all of
        // them in the last epoch (unless the session ended), a prefix in the
        // ones a move cut short.
        let last = w.server.epoch;
        for epoch in 0..=last {
            let got: Vec<u64> = w.app.delivered.iter().filter(|(e, _)| *e == epoch).map(|(_, s)| *s).collect();
            let sent = w.server.sent[epoch as usize];
            let want: Vec<u64> = if epoch == last && !w.app.over {
                (1..=sent).collect()
            } else {
                (1..=got.len() as u64).collect()
            };
            prop_assert_eq!(&got, &want, "epoch {} of {}", epoch, last);
            prop_assert!(got.len() as u64 <= sent);
        }
        let mut sorted = w.app.delivered.clone();
        sorted.sort();
        prop_assert_eq!(&sorted, &w.app.delivered, "epochs in order");

        // Every request answered exactly once, or failed (by a move or the end).
        for (tag, replies) in &w.app.replies {
            let failed = w.app.failed.contains(tag);
            prop_assert!(
                (*replies == 1 && !failed) || (*replies == 0 && failed),
                "request {} got {} replies, failed: {}", tag, replies, failed
            );
        }
        prop_assert_eq!(w.client.pending_requests(), 0);

        if !w.app.over {
            // The server knows the app has everything, and has every ack of
            // this epoch (the recent ones are sent again after a resume).
            prop_assert_eq!(w.server.acked, w.server.seq);
            prop_assert!(w.server.outbox.is_empty());
            let acks: Vec<&String> = w.app.acked.iter().filter(|(e, _)| *e == last).map(|(_, id)| id).collect();
            if acks.len() <= KEEP_ACKS {
                for id in acks {
                    prop_assert!(w.server.acks.contains(id), "ack of {} lost", id);
                }
            }
        }
    }
}
