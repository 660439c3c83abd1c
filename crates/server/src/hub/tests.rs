//! Synchronous unit tests of the hub: no runtime, no socket, no clock. Each
//! test makes a hub at an instant of its own, feeds it [`Command`]s and
//! [`Hub::fire_timers`] at chosen instants, and reads what each connection's
//! queue was given — the frames a client would have received, in order.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use callinvite_protocol::wire::{decode_client, decode_server};
use callinvite_protocol::{DeviceId, ServerMessage, UserId};

use super::*;
use crate::cluster::SingleNode;
use crate::missed::{MissedCalls, MissedConfig};

/// The cluster paths: several hubs on an in-memory bus.
mod cluster;

/// One client connection: the handle the hub gets, the queue it fills.
struct Client {
    conn: ConnHandle,
    rx: OutRx,
}

impl Client {
    /// Connection `id`, with a queue of 64 frames.
    fn new(id: u64) -> Client {
        let (out, rx) = out_queue(64);
        let conn = ConnHandle {
            id,
            out,
            kill: CancellationToken::new(),
        };
        Client { conn, rx }
    }
}

/// What a connection was given, one frame each: `"<seq>:<type>"` for a
/// session's numbered message, `"<type>"` for one about the connection,
/// `"close:<code>"` for a close frame.
fn frames(client: &mut Client) -> Vec<String> {
    messages(client).into_iter().map(|(name, _)| name).collect()
}

/// As [`frames`], with each message as JSON (`Null` for a close frame).
fn messages(client: &mut Client) -> Vec<(String, Value)> {
    let mut out = vec![];
    while let Ok(frame) = client.rx.try_recv() {
        match frame {
            Outbound::Text(text) => {
                let (seq, msg) = decode_server(text.as_str()).expect("the hub sends valid JSON");
                let json: Value = serde_json::from_str(text.as_str()).expect("JSON");
                let kind = json["type"].as_str().expect("a type").to_owned();
                let name = match seq {
                    Some(s) => format!("{s}:{kind}"),
                    None => kind,
                };
                assert!(!matches!(msg, ServerMessage::Error { .. }) || json["code"].is_string());
                out.push((name, json));
            }
            Outbound::Close(code, _) => out.push((format!("close:{code}"), Value::Null)),
        }
    }
    out
}

struct Test {
    hub: Hub,
    now: Instant,
    next_conn: u64,
}

impl Test {
    fn new(config: Config) -> Self {
        let missed = MissedCalls::open(MissedConfig::default()).expect("no file: cannot fail");
        let now = Instant::now();
        Test {
            hub: Hub::new_at(config, missed, Box::new(SingleNode), now),
            now,
            next_conn: 1,
        }
    }

    fn connect(&mut self) -> Client {
        self.next_conn += 1;
        Client::new(self.next_conn - 1)
    }

    /// Time passes; deadlines due by then fire.
    fn wait(&mut self, d: Duration) {
        self.now += d;
        self.hub.fire_timers(self.now);
    }

    /// Feeds one command as [`run`] does: due timers first.
    fn command(&mut self, cmd: Command) {
        self.hub.fire_timers(self.now);
        self.hub.handle(cmd, self.now);
    }

    fn login(&mut self, user: &str, client: &Client) -> Option<DeviceId> {
        let (reply, mut answer) = oneshot::channel();
        self.command(Command::Login {
            user: UserId::parse(user).expect("valid"),
            req: Some(0),
            conn: client.conn.clone(),
            reply,
        });
        answer.try_recv().expect("answered at once")
    }

    /// A logged-in client: its device and connection, its `login_ok` read.
    fn logged_in(&mut self, user: &str) -> (DeviceId, Client) {
        let mut client = self.connect();
        let device = self.login(user, &client).expect("logged in");
        assert_eq!(frames(&mut client), ["login_ok"]);
        (device, client)
    }

    fn request(&mut self, device: DeviceId, client: &Client, json: &str) {
        let msg = decode_client(json).expect("a valid request");
        self.command(Command::Request {
            device,
            conn: client.conn.id,
            msg,
        });
    }

    fn resume(&mut self, secret: &str, last_seq: u64, client: &Client) -> Option<LoggedIn> {
        let (reply, mut answer) = oneshot::channel();
        self.command(Command::Resume {
            session: secret.to_owned(),
            last_seq,
            req: Some(9),
            conn: client.conn.clone(),
            reply,
        });
        answer
            .try_recv()
            .expect("answered at once on a single node")
    }

    fn gone(&mut self, device: DeviceId, client: &Client, how: Departure) {
        self.command(Command::Gone {
            device,
            conn: client.conn.id,
            how,
        });
    }

    fn secret(&self, device: DeviceId) -> String {
        self.hub
            .sessions
            .get(device)
            .expect("a session")
            .secret
            .clone()
    }
}

fn invite(callee: &str) -> String {
    format!(r#"{{"type":"invite","ref":1,"callee":"{callee}","content":"hi"}}"#)
}

/// The id of the invitation in the first message that names one.
fn invitation_id(msgs: &[(String, Value)]) -> String {
    msgs.iter()
        .find_map(|(_, m)| m["invitation_id"].as_str())
        .expect("an invitation id")
        .to_owned()
}

#[test]
fn an_invitation_rings_and_is_accepted() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    let (bob, mut b) = t.logged_in("bob");
    t.request(alice, &a, &invite("bob"));
    let to_alice = messages(&mut a);
    assert_eq!(
        to_alice.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["1:invite_ok"]
    );
    let id = invitation_id(&to_alice);
    assert_eq!(frames(&mut b), ["1:invitation"]);
    t.request(
        bob,
        &b,
        &format!(r#"{{"type":"ack","invitation_id":"{id}","of":"invitation"}}"#),
    );
    assert_eq!(frames(&mut a), ["2:received_by_peer"]);
    t.request(
        bob,
        &b,
        &format!(r#"{{"type":"accept","ref":2,"invitation_id":"{id}","response":"yes"}}"#),
    );
    assert!(frames(&mut a).contains(&"3:accepted".to_string()));
    assert!(frames(&mut b).iter().any(|f| f.starts_with("2:")));
    assert_eq!(t.hub.invitations.open_count(), 1, "in call");
}

#[test]
fn an_offline_callee_misses_the_call_and_hears_of_it_at_login() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    t.request(alice, &a, &invite("carol"));
    let msgs = messages(&mut a);
    assert_eq!(msgs[0].1["callee_online"], Value::Bool(false));
    // Nothing happens before the offline window is over…
    t.wait(t.hub.config.timeouts.offline - Duration::from_millis(1));
    assert_eq!(frames(&mut a), Vec::<String>::new());
    // …and the caller hears `failed` (peer_offline) when it is.
    t.wait(Duration::from_millis(1));
    let failed = messages(&mut a);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "2:failed");
    assert_eq!(failed[0].1["reason"], "peer_offline");
    let mut c = t.connect();
    t.login("carol", &c).expect("logged in");
    let to_carol = messages(&mut c);
    assert_eq!(to_carol[0].0, "login_ok");
    assert_eq!(to_carol[1].0, "1:missed_calls");
    assert_eq!(to_carol[1].1["calls"][0]["caller"], "alice");
}

#[test]
fn a_bad_request_is_answered_with_its_ref() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    t.request(alice, &a, &invite("alice"));
    let msgs = messages(&mut a);
    assert_eq!(msgs[0].0, "1:error");
    assert_eq!(msgs[0].1["code"], "invalid_argument");
    assert_eq!(msgs[0].1["ref"], 1);
    t.request(
        alice,
        &a,
        r#"{"type":"cancel","ref":2,"invitation_id":"nope"}"#,
    );
    let msgs = messages(&mut a);
    assert_eq!(msgs[0].1["code"], "not_found");
}

#[test]
fn a_late_request_gets_its_precise_answer_within_the_retention_window() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    let (_bob, mut b) = t.logged_in("bob");
    t.request(alice, &a, &invite("bob"));
    let id = invitation_id(&messages(&mut a));
    let cancel = format!(r#"{{"type":"cancel","ref":2,"invitation_id":"{id}"}}"#);
    t.request(alice, &a, &cancel);
    frames(&mut b);
    // Ends once the callee's cancel ack is overdue.
    t.wait(t.hub.config.timeouts.cancel_ack);
    frames(&mut a);
    assert_eq!(t.hub.invitations.open_count(), 0);
    t.request(alice, &a, &cancel);
    // As the record would have answered: not `not_found`.
    assert_eq!(messages(&mut a)[0].1["code"], "already_ended");
    t.wait(t.hub.config.timeouts.retention);
    t.request(alice, &a, &cancel);
    assert_eq!(messages(&mut a)[0].1["code"], "not_found");
}

#[test]
fn a_dropped_session_is_resumed_with_what_it_missed() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    let (bob, b) = t.logged_in("bob");
    t.request(
        bob,
        &b,
        r#"{"type":"subscribe_presence","ref":1,"users":["carol"]}"#,
    );
    t.gone(bob, &b, Departure::Lost);
    // Still online, and messages for it wait.
    t.request(
        alice,
        &a,
        r#"{"type":"query_presence","ref":1,"users":["bob"]}"#,
    );
    assert_eq!(messages(&mut a)[0].1["users"][0]["online"], true);
    let (_carol, _c) = t.logged_in("carol");
    t.request(alice, &a, &invite("bob"));
    // Requests of the old connection are not applied any more.
    t.request(bob, &b, r#"{"type":"logout","ref":5}"#);
    assert!(t.hub.sessions.contains(bob));

    let mut b2 = t.connect();
    let secret = t.secret(bob);
    let resumed = t.resume(&secret, 1, &b2).expect("resumed");
    assert_eq!(resumed.device, bob);
    let msgs = messages(&mut b2);
    let names: Vec<&str> = msgs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["resumed", "2:presence_changed", "3:invitation"]);
    assert_eq!(msgs[0].1["last_ref"], 1);
    assert_eq!(msgs[0].1["seq"], 3);
    // The new connection's requests are.
    t.request(bob, &b2, r#"{"type":"logout","ref":2}"#);
    assert_eq!(frames(&mut b2), ["4:ok", "close:1000"]);
    assert!(!t.hub.sessions.contains(bob));
}

#[test]
fn a_detached_session_ends_with_its_grace_window() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    let (bob, b) = t.logged_in("bob");
    t.request(
        alice,
        &a,
        r#"{"type":"subscribe_presence","ref":1,"users":["bob"]}"#,
    );
    frames(&mut a);
    t.gone(bob, &b, Departure::Lost);
    t.wait(t.hub.config.resume_grace - Duration::from_millis(1));
    assert!(t.hub.sessions.contains(bob));
    assert_eq!(frames(&mut a), Vec::<String>::new());
    t.wait(Duration::from_millis(1));
    assert!(!t.hub.sessions.contains(bob));
    let msgs = messages(&mut a);
    assert_eq!(msgs[0].0, "2:presence_changed");
    assert_eq!(msgs[0].1["online"], false);
    let mut b2 = t.connect();
    let secret = "no longer kept";
    assert_eq!(t.resume(secret, 0, &b2), None);
    assert_eq!(messages(&mut b2)[0].1["code"], "session_expired");
}

#[test]
fn a_closed_connection_ends_its_session_at_once() {
    let mut t = Test::new(Config::default());
    let (bob, b) = t.logged_in("bob");
    t.gone(bob, &b, Departure::Closed);
    assert!(!t.hub.sessions.contains(bob));
    assert!(!t
        .hub
        .presence
        .is_online(&UserId::parse("bob").expect("valid")));
}

#[test]
fn a_resume_takes_the_session_from_its_old_connection() {
    let mut t = Test::new(Config::default());
    let (bob, mut b) = t.logged_in("bob");
    let mut b2 = t.connect();
    let secret = t.secret(bob);
    assert!(t.resume(&secret, 0, &b2).is_some());
    assert_eq!(frames(&mut b), ["close:4001"]);
    assert_eq!(frames(&mut b2), ["resumed"]);
}

#[test]
fn a_resume_from_before_what_is_kept_ends_the_session() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    for r in 1..=3 {
        t.request(
            alice,
            &a,
            &format!(r#"{{"type":"query_presence","ref":{r},"users":["bob"]}}"#),
        );
    }
    t.request(alice, &a, r#"{"type":"seen","seq":2}"#);
    frames(&mut a);
    let secret = t.secret(alice);
    let mut a2 = t.connect();
    // Ahead of the session: refused, the session goes on.
    assert_eq!(t.resume(&secret, 4, &a2), None);
    assert_eq!(messages(&mut a2)[0].1["code"], "invalid_argument");
    assert!(t.hub.sessions.contains(alice));
    // Behind what is kept (1 and 2 were seen): refused, and the session ends.
    assert_eq!(t.resume(&secret, 1, &a2), None);
    assert_eq!(messages(&mut a2)[0].1["code"], "session_expired");
    assert!(!t.hub.sessions.contains(alice));
}

#[test]
fn logins_are_limited_per_user_and_second() {
    let config = Config {
        logins_per_second: 2,
        ..Config::default()
    };
    let mut t = Test::new(config);
    t.logged_in("alice");
    t.logged_in("alice");
    let mut c = t.connect();
    assert_eq!(t.login("alice", &c), None);
    assert_eq!(messages(&mut c)[0].1["code"], "too_often");
    t.wait(Duration::from_secs(1));
    assert!(t.login("alice", &c).is_some());
}

#[test]
fn a_detached_device_makes_room_at_the_device_limit() {
    let config = Config {
        max_devices_per_user: 1,
        ..Config::default()
    };
    let mut t = Test::new(config);
    let (first, a) = t.logged_in("alice");
    let mut c = t.connect();
    assert_eq!(t.login("alice", &c), None);
    assert_eq!(messages(&mut c)[0].1["code"], "too_many_devices");
    t.gone(first, &a, Departure::Lost);
    let second = t
        .login("alice", &c)
        .expect("the detached one gave its place");
    assert_ne!(first, second);
    assert!(!t.hub.sessions.contains(first));
}

#[test]
fn without_resume_nothing_is_kept() {
    let config = Config {
        resume_grace: Duration::ZERO,
        ..Config::default()
    };
    let mut t = Test::new(config);
    let (alice, mut a) = t.logged_in("alice");
    t.request(
        alice,
        &a,
        r#"{"type":"query_presence","ref":1,"users":["bob"]}"#,
    );
    assert_eq!(frames(&mut a), ["1:presence"]);
    assert_eq!(
        t.hub.sessions.get(alice).map(|d| d.outbox.unseen()),
        Some(0)
    );
    t.gone(alice, &a, Departure::Lost);
    assert!(
        !t.hub.sessions.contains(alice),
        "no grace window: gone at once"
    );
}

#[test]
fn a_full_queue_closes_the_connection_as_too_slow() {
    let mut t = Test::new(Config::default());
    let (alice, a) = t.logged_in("alice");
    for r in 0..70 {
        t.request(
            alice,
            &a,
            &format!(r#"{{"type":"query_presence","ref":{r},"users":["bob"]}}"#),
        );
    }
    assert!(a.conn.kill.is_cancelled());
    // Kept for a resume all the same.
    assert_eq!(
        t.hub.sessions.get(alice).map(|d| d.outbox.unseen()),
        Some(70)
    );
}

#[test]
fn shutdown_ends_invitations_then_says_going_away() {
    let mut t = Test::new(Config::default());
    let (alice, mut a) = t.logged_in("alice");
    let (_bob, mut b) = t.logged_in("bob");
    t.request(alice, &a, &invite("bob"));
    frames(&mut a);
    frames(&mut b);
    t.hub.shutdown(t.now);
    let to_alice = messages(&mut a);
    let names: Vec<&str> = to_alice.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["2:failed", "3:going_away", "close:1001"]);
    assert_eq!(to_alice[0].1["reason"], "server_shutdown");
    assert_eq!(
        frames(&mut b).last().map(String::as_str),
        Some("close:1001")
    );
}
