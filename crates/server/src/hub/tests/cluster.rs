//! Synchronous tests of the hub's cluster paths (`nodes.rs`): several hubs
//! joined by an in-memory [`Bus`] instead of Redis. What a hub publishes
//! goes through JSON, as over Redis, into one queue for the whole cluster,
//! so what one node sends another arrives in the order sent (Redis's
//! guarantee); a broadcast reaches every node, its sender too (as a
//! subscriber of `callinvite:all` hears itself). The session records and
//! claims are kept as Redis keeps them: a claim of a live node's session is
//! refused, a dead node's record is taken once. A node [`Cluster::kill`]ed
//! hears and says nothing more, as if it crashed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::InvitationId;

use super::*;
use crate::cluster::{Claim, SessionRecord};

const HEARTBEAT: Duration = Duration::from_millis(300);
const NODE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the nodes share: the channel they publish on, and what Redis keeps.
#[derive(Default)]
struct Wire {
    /// Published and not delivered yet: where to, the envelope as JSON.
    queue: VecDeque<(Target, String)>,
    /// Claims of sessions not answered yet: the claiming node, the
    /// session's node, the session, the connection.
    claims: VecDeque<(u32, u32, String, u64)>,
    /// Session records by node and secret.
    records: HashMap<(u32, String), SessionRecord>,
    /// Missed calls by user.
    missed: HashMap<UserId, Vec<MissedCall>>,
}

/// One node's [`Bus`]: everything goes onto the shared [`Wire`].
struct FakeBus {
    node: u32,
    wire: Arc<Mutex<Wire>>,
}

fn lock(wire: &Mutex<Wire>) -> MutexGuard<'_, Wire> {
    wire.lock().expect("no test panicked holding it")
}

impl Bus for FakeBus {
    fn node(&self) -> u32 {
        self.node
    }
    fn publish(&self, target: Target, envelope: &Envelope) {
        let json = serde_json::to_string(envelope).expect("an envelope encodes");
        lock(&self.wire).queue.push_back((target, json));
    }
    fn store_missed(&self, user: &UserId, calls: &[MissedCall], _: Duration) {
        lock(&self.wire).missed.insert(user.clone(), calls.to_vec());
    }
    fn liveness(&self) -> Option<(Duration, Duration)> {
        Some((HEARTBEAT, NODE_TIMEOUT))
    }
    fn keep_session(
        &self,
        node: u32,
        session: &str,
        record: Option<&SessionRecord>,
        _: Option<Duration>,
    ) {
        let mut wire = lock(&self.wire);
        let key = (node, session.to_owned());
        match record {
            Some(r) => wire.records.insert(key, r.clone()),
            None => wire.records.remove(&key),
        };
    }
    fn renew_sessions(&self, _: Duration, _: Duration) {}
    fn leaving(&self) {}
    fn claim_session(&self, node: u32, session: &str, conn: u64) {
        lock(&self.wire)
            .claims
            .push_back((self.node, node, session.to_owned(), conn));
    }
}

/// Nodes 1, 2, … on one [`Wire`], at one clock.
struct Cluster {
    hubs: HashMap<u32, Hub>,
    /// Nodes that crashed: they hear nothing, and their sessions may be claimed.
    dead: HashSet<u32>,
    wire: Arc<Mutex<Wire>>,
    now: Instant,
    next_conn: u64,
}

impl Cluster {
    /// `nodes` nodes that have said hello and heard each other's heartbeat.
    fn new(nodes: u32) -> Self {
        let mut c = Cluster {
            hubs: HashMap::new(),
            dead: HashSet::new(),
            wire: Arc::default(),
            now: Instant::now(),
            next_conn: 1,
        };
        for n in 1..=nodes {
            c.start_node(n);
        }
        for n in 1..=nodes {
            c.tick(n);
        }
        c
    }

    /// Node `node` starts and says hello; the others answer.
    fn start_node(&mut self, node: u32) {
        let missed = MissedCalls::open(MissedConfig::default()).expect("no file: cannot fail");
        let bus = FakeBus {
            node,
            wire: self.wire.clone(),
        };
        let hub = Hub::new_at(Config::default(), missed, Box::new(bus), self.now);
        hub.start();
        self.hubs.insert(node, hub);
        self.pump();
    }

    fn hub(&mut self, node: u32) -> &mut Hub {
        self.hubs.get_mut(&node).expect("a node of the cluster")
    }

    /// Node `node` crashes: no goodbye, and nothing reaches it any more.
    fn kill(&mut self, node: u32) {
        self.dead.insert(node);
    }

    /// Feeds `cmd` to node `node` as its `run` loop does, then lets the
    /// cluster carry what follows.
    fn command(&mut self, node: u32, cmd: Command) {
        let now = self.now;
        let hub = self.hub(node);
        hub.fire_timers(now);
        hub.handle(cmd, now);
        self.pump();
    }

    /// Delivers what was published, and answers claims, until nothing is left.
    fn pump(&mut self) {
        loop {
            let next = lock(&self.wire).queue.pop_front();
            if let Some((target, json)) = next {
                let envelope: Envelope = serde_json::from_str(&json).expect("an envelope decodes");
                let to: Vec<u32> = match target {
                    Target::All => self.hubs.keys().copied().collect(),
                    Target::Node(n) => vec![n],
                };
                for n in to.into_iter().filter(|n| !self.dead.contains(n)) {
                    let now = self.now;
                    if let Some(hub) = self.hubs.get_mut(&n) {
                        hub.fire_timers(now);
                        hub.handle(Command::Cluster(envelope.clone()), now);
                    }
                }
                continue;
            }
            let claim = lock(&self.wire).claims.pop_front();
            let Some((by, node, session, conn)) = claim else {
                return;
            };
            let claim = if !self.dead.contains(&node) {
                Claim::NodeAlive
            } else {
                match lock(&self.wire).records.remove(&(node, session.clone())) {
                    Some(record) => Claim::Taken(record),
                    None => Claim::Gone,
                }
            };
            let now = self.now;
            self.hub(by).handle(
                Command::SessionClaimed {
                    conn,
                    node,
                    session,
                    claim,
                },
                now,
            );
        }
    }

    /// Time passes for every live node (timers fire; no heartbeat).
    fn wait(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for (n, hub) in &mut self.hubs {
            if !self.dead.contains(n) {
                hub.fire_timers(now);
            }
        }
        self.pump();
    }

    /// Node `node`'s heartbeat: it says it is alive and gives up silent nodes.
    fn tick(&mut self, node: u32) {
        let now = self.now;
        self.hub(node).cluster_tick(now);
        self.pump();
    }

    fn connect(&mut self) -> Client {
        self.next_conn += 1;
        Client::new(self.next_conn - 1)
    }

    fn login(&mut self, node: u32, user: &str, client: &Client) -> Option<DeviceId> {
        let (reply, mut answer) = oneshot::channel();
        self.command(
            node,
            Command::Login {
                user: UserId::parse(user).expect("valid"),
                req: Some(0),
                conn: client.conn.clone(),
                reply,
            },
        );
        answer.try_recv().expect("answered at once")
    }

    /// A client logged in on `node`: its device and connection, its `login_ok` read.
    fn logged_in(&mut self, node: u32, user: &str) -> (DeviceId, Client) {
        let mut client = self.connect();
        let device = self.login(node, user, &client).expect("logged in");
        assert_eq!(frames(&mut client), ["login_ok"]);
        (device, client)
    }

    /// A request of `device` on its connection `client` to `node`.
    fn request(&mut self, node: u32, device: DeviceId, client: &Client, json: &str) {
        let msg = decode_client(json).expect("a valid request");
        let conn = client.conn.id;
        self.command(node, Command::Request { device, conn, msg });
    }

    /// A `resume` on connection `client` to `node`: the answer, if it came.
    fn resume(
        &mut self,
        node: u32,
        secret: &str,
        last_seq: u64,
        client: &Client,
    ) -> oneshot::Receiver<Option<LoggedIn>> {
        let (reply, answer) = oneshot::channel();
        self.command(
            node,
            Command::Resume {
                session: secret.to_owned(),
                last_seq,
                req: Some(9),
                conn: client.conn.clone(),
                reply,
            },
        );
        answer
    }

    fn gone(&mut self, node: u32, device: DeviceId, client: &Client, how: Departure) {
        let conn = client.conn.id;
        self.command(node, Command::Gone { device, conn, how });
    }

    fn online(&mut self, node: u32, user: &str) -> bool {
        let user = UserId::parse(user).expect("valid");
        self.hub(node).presence.is_online(&user)
    }
}

fn names(msgs: &[(String, Value)]) -> Vec<&str> {
    msgs.iter().map(|(n, _)| n.as_str()).collect()
}

fn ack(id: &str) -> String {
    format!(r#"{{"type":"ack","invitation_id":"{id}","of":"invitation"}}"#)
}

fn accept(req: u64, id: &str) -> String {
    format!(r#"{{"type":"accept","ref":{req},"invitation_id":"{id}","response":"yes"}}"#)
}

fn hangup(req: u64, id: &str) -> String {
    format!(r#"{{"type":"hangup","ref":{req},"invitation_id":"{id}"}}"#)
}

fn subscribe(user: &str) -> String {
    format!(r#"{{"type":"subscribe_presence","ref":1,"users":["{user}"]}}"#)
}

#[test]
fn a_call_between_two_nodes_runs_on_the_callers_node() {
    let mut c = Cluster::new(2);
    let (alice, mut a) = c.logged_in(1, "alice");
    let (bob, mut b) = c.logged_in(2, "bob");
    c.request(1, alice, &a, &invite("bob"));
    let to_alice = messages(&mut a);
    assert_eq!(names(&to_alice), ["1:invite_ok"]);
    assert_eq!(to_alice[0].1["callee_online"], true);
    let id = invitation_id(&to_alice);
    assert!(id.starts_with("n1."), "owned by the caller's node: {id}");
    // The invitation reaches bob's node and its device.
    let to_bob = messages(&mut b);
    assert_eq!(names(&to_bob), ["1:invitation"]);
    assert_eq!(to_bob[0].1["caller"], "alice");
    // bob's ack and accept go to node 1, which answers on both nodes.
    c.request(2, bob, &b, &ack(&id));
    assert_eq!(frames(&mut a), ["2:received_by_peer"]);
    c.request(2, bob, &b, &accept(2, &id));
    assert_eq!(frames(&mut a), ["3:accepted"]);
    let to_bob = messages(&mut b);
    assert_eq!(names(&to_bob), ["2:ok"]);
    assert_eq!(to_bob[0].1["ref"], 2);
    assert_eq!(c.hub(2).cluster.unanswered(), 0);
    // bob's node knows bob is in a call it does not own.
    let id = InvitationId(id);
    assert_eq!(c.hub(2).cluster.part_in(&id, bob), Some(true));
    // bob (node 2) hangs up the call node 1 owns.
    c.request(2, bob, &b, &hangup(3, &id.0));
    let to_alice = messages(&mut a);
    assert_eq!(names(&to_alice), ["4:call_ended"]);
    assert_eq!(to_alice[0].1["by"], "bob");
    assert_eq!(frames(&mut b), ["3:ok", "4:call_ended"]);
    assert_eq!(c.hub(2).cluster.part_in(&id, bob), None, "over for bob");
    assert_eq!(c.hub(1).invitations.open_count(), 0);
    assert_eq!(c.hub(2).invitations.open_count(), 0);
}

#[test]
fn an_unknown_or_ended_invitation_is_answered_from_its_node() {
    let mut c = Cluster::new(2);
    let (alice, mut a) = c.logged_in(1, "alice");
    let (bob, mut b) = c.logged_in(2, "bob");
    c.request(2, bob, &b, &accept(1, "n1.nosuch"));
    let to_bob = messages(&mut b);
    assert_eq!(names(&to_bob), ["1:error"]);
    assert_eq!(to_bob[0].1["code"], "not_found");
    assert_eq!(to_bob[0].1["ref"], 1);
    assert_eq!(c.hub(2).cluster.unanswered(), 0);
    // Ended within the retention window: answered as its record would.
    c.request(1, alice, &a, &invite("bob"));
    let id = invitation_id(&messages(&mut a));
    c.request(
        1,
        alice,
        &a,
        &format!(r#"{{"type":"cancel","ref":2,"invitation_id":"{id}"}}"#),
    );
    c.wait(Config::default().timeouts.cancel_ack);
    assert_eq!(c.hub(1).invitations.open_count(), 0);
    frames(&mut b);
    c.request(2, bob, &b, &accept(2, &id));
    let to_bob = messages(&mut b);
    assert_eq!(names(&to_bob), ["4:error"]);
    assert_eq!(to_bob[0].1["code"], "already_ended");
}

#[test]
fn a_login_on_another_node_rings_there_and_is_seen_everywhere() {
    let mut c = Cluster::new(2);
    let (alice, mut a) = c.logged_in(1, "alice");
    c.request(1, alice, &a, &subscribe("bob"));
    assert_eq!(frames(&mut a), ["1:presence"]);
    c.request(1, alice, &a, &invite("bob"));
    let to_alice = messages(&mut a);
    assert_eq!(to_alice[0].1["callee_online"], false);
    // bob logs in on node 2: node 1 hears of the device, tells alice, and
    // rings it.
    let mut b = c.connect();
    let bob = c.login(2, "bob", &b).expect("logged in");
    assert!(c.online(1, "bob"));
    let to_alice = messages(&mut a);
    assert_eq!(names(&to_alice), ["3:presence_changed"]);
    assert_eq!(to_alice[0].1["online"], true);
    assert_eq!(frames(&mut b), ["login_ok", "1:invitation"]);
    // A second device of bob rings too, and says nothing to his followers.
    let mut b2 = c.connect();
    let bob2 = c.login(2, "bob", &b2).expect("logged in");
    assert_eq!(frames(&mut b2), ["login_ok", "1:invitation"]);
    assert_eq!(frames(&mut a), Vec::<String>::new());
    // Both log out: offline once, on every node.
    c.request(2, bob, &b, r#"{"type":"logout","ref":2}"#);
    assert_eq!(frames(&mut a), Vec::<String>::new());
    c.request(2, bob2, &b2, r#"{"type":"logout","ref":2}"#);
    assert!(!c.online(1, "bob"));
    let to_alice = messages(&mut a);
    assert_eq!(names(&to_alice), ["4:presence_changed"]);
    assert_eq!(to_alice[0].1["online"], false);
}

#[test]
fn a_node_that_starts_later_hears_who_is_online() {
    let mut c = Cluster::new(1);
    let (_bob, _b) = c.logged_in(1, "bob");
    c.start_node(2);
    assert!(c.hub(2).cluster.knows(1));
    assert!(c.hub(1).cluster.knows(2));
    assert!(c.online(2, "bob"));
    let (carol, mut cc) = c.logged_in(2, "carol");
    c.request(
        2,
        carol,
        &cc,
        r#"{"type":"query_presence","ref":1,"users":["bob"]}"#,
    );
    assert_eq!(messages(&mut cc)[0].1["users"][0]["online"], true);
}

#[test]
fn missed_calls_are_kept_by_every_node() {
    let mut c = Cluster::new(2);
    let (alice, mut a) = c.logged_in(1, "alice");
    c.request(1, alice, &a, &invite("carol"));
    let id = invitation_id(&messages(&mut a));
    c.wait(Config::default().timeouts.offline);
    assert_eq!(frames(&mut a), ["2:failed"]);
    let carol = UserId::parse("carol").expect("valid");
    assert_eq!(
        lock(&c.wire).missed[&carol].len(),
        1,
        "stored for the cluster"
    );
    // carol logs in on the other node, and hears of it there.
    let mut c2 = c.connect();
    let carol_dev = c.login(2, "carol", &c2).expect("logged in");
    let to_carol = messages(&mut c2);
    assert_eq!(names(&to_carol), ["login_ok", "1:missed_calls"]);
    assert_eq!(to_carol[1].1["calls"][0]["invitation_id"], id.as_str());
    // Cleared there, cleared everywhere.
    c.request(
        2,
        carol_dev,
        &c2,
        &format!(r#"{{"type":"clear_missed_calls","ref":1,"invitation_ids":["{id}"]}}"#),
    );
    assert_eq!(frames(&mut c2), ["2:ok"]);
    let mut c1 = c.connect();
    c.login(1, "carol", &c1).expect("logged in");
    assert_eq!(frames(&mut c1), ["login_ok"]);
}

#[test]
fn a_session_resumes_through_another_node() {
    let mut c = Cluster::new(2);
    let (alice, mut a) = c.logged_in(1, "alice");
    let (bob, b) = c.logged_in(2, "bob");
    let secret = c
        .hub(2)
        .sessions
        .get(bob)
        .expect("a session")
        .secret
        .clone();
    assert!(secret.starts_with("n2."), "{secret}");
    c.gone(2, bob, &b, Departure::Lost);
    // bob's client comes back on node 1; node 2 keeps the session.
    let mut b1 = c.connect();
    let mut answer = c.resume(1, &secret, 0, &b1);
    let resumed = answer.try_recv().expect("answered").expect("resumed");
    assert_eq!(resumed.device, bob);
    assert_eq!(frames(&mut b1), ["resumed"]);
    assert!(c.hub(2).sessions.contains(bob));
    assert!(!c.hub(1).sessions.contains(bob));
    // What the session sends reaches the connection on node 1…
    c.request(1, alice, &a, &invite("bob"));
    let id = invitation_id(&messages(&mut a));
    assert_eq!(frames(&mut b1), ["1:invitation"]);
    // …and what the connection asks is applied by node 2.
    c.request(1, bob, &b1, &accept(2, &id));
    assert_eq!(frames(&mut b1), ["2:ok"]);
    assert_eq!(frames(&mut a), ["2:received_by_peer", "3:accepted"]);
    // The connection closes: the session on node 2 ends, the call with it.
    c.gone(1, bob, &b1, Departure::Closed);
    assert!(!c.hub(2).sessions.contains(bob));
    assert!(!c.online(1, "bob"));
    let to_alice = messages(&mut a);
    assert_eq!(names(&to_alice), ["4:call_ended"]);
    assert_eq!(to_alice[0].1["reason"], "peer_connection_lost");
}

#[test]
fn a_node_that_falls_silent_is_given_up_and_what_it_owned_ends() {
    let mut c = Cluster::new(2);
    let (alice, mut a) = c.logged_in(1, "alice");
    c.request(1, alice, &a, &subscribe("bob"));
    let (bob, mut b) = c.logged_in(2, "bob");
    frames(&mut a);
    // bob (node 2) calls alice (node 1): node 2 owns the invitation.
    c.request(2, bob, &b, &invite("alice"));
    let id = invitation_id(&messages(&mut b));
    assert!(id.starts_with("n2."), "{id}");
    assert_eq!(frames(&mut a), ["3:invitation"]);
    // Heartbeats keep a node alive past the timeout.
    for _ in 0..6 {
        c.wait(HEARTBEAT);
        c.tick(1);
        c.tick(2);
    }
    assert!(c.hub(1).cluster.knows(2));
    // Node 2 crashes; alice's accept goes to it and is never answered.
    c.kill(2);
    c.request(1, alice, &a, &accept(2, &id));
    assert_eq!(frames(&mut a), Vec::<String>::new());
    c.wait(NODE_TIMEOUT);
    c.tick(1);
    assert_eq!(
        frames(&mut a),
        Vec::<String>::new(),
        "not silent for longer than the timeout yet"
    );
    c.wait(Duration::from_millis(1));
    c.tick(1);
    assert!(!c.hub(1).cluster.knows(2));
    assert!(!c.online(1, "bob"));
    let to_alice = messages(&mut a);
    let mut got: Vec<(&str, &Value)> = to_alice
        .iter()
        .map(|(_, m)| (m["type"].as_str().unwrap_or(""), m))
        .collect();
    got.sort_by_key(|(t, _)| *t);
    let kinds: Vec<&str> = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        kinds,
        ["call_ended", "error", "failed", "presence_changed"],
        "{to_alice:?}"
    );
    assert_eq!(got[0].1["reason"], "server_shutdown");
    assert_eq!(got[1].1["code"], "already_ended");
    assert_eq!(got[1].1["ref"], 2);
    assert_eq!(got[2].1["reason"], "server_shutdown");
    assert_eq!(got[3].1["online"], false);
    // What is asked of the gone node now is answered at once.
    c.request(1, alice, &a, &hangup(3, &id));
    let to_alice = messages(&mut a);
    assert_eq!(to_alice[0].1["code"], "already_ended");
    assert_eq!(to_alice[0].1["ref"], 3);
}

#[test]
fn a_session_of_a_dead_node_is_taken_over() {
    let mut c = Cluster::new(2);
    let (bob, b) = c.logged_in(2, "bob");
    c.request(2, bob, &b, &subscribe("dave"));
    let secret = c
        .hub(2)
        .sessions
        .get(bob)
        .expect("a session")
        .secret
        .clone();
    // Node 2 dies; bob's client comes back on node 1 before node 1 knows.
    c.kill(2);
    let mut b1 = c.connect();
    let mut answer = c.resume(1, &secret, 0, &b1);
    assert!(answer.try_recv().is_err(), "waits for node 2");
    c.wait(NODE_TIMEOUT + Duration::from_millis(1));
    c.tick(1);
    // Node 1 gave node 2 up, claimed the session and carries it on.
    let moved = answer.try_recv().expect("answered").expect("taken over");
    assert_eq!(moved.user.as_str(), "bob");
    assert_ne!(moved.device, bob);
    let to_bob = messages(&mut b1);
    assert_eq!(to_bob[0].0, "session_moved");
    assert_eq!(to_bob[0].1["device_id"], moved.device.0);
    assert!(c.hub(1).sessions.contains(moved.device));
    assert!(c.online(1, "bob"));
    // The subscription came along.
    let (_dave, _d) = c.logged_in(1, "dave");
    let to_bob = messages(&mut b1);
    let last = &to_bob.last().expect("a message").1;
    assert_eq!(
        (&last["type"], &last["user"], &last["online"]),
        (&"presence_changed".into(), &"dave".into(), &true.into())
    );
    // The record was taken once: a second resume of it finds nothing.
    let mut b2 = c.connect();
    let mut answer = c.resume(1, &secret, 0, &b2);
    assert_eq!(answer.try_recv(), Ok(None));
    assert_eq!(messages(&mut b2)[0].1["code"], "session_expired");
}

#[test]
fn a_session_of_a_node_that_said_goodbye_is_taken_over_at_once() {
    let mut c = Cluster::new(2);
    let (bob, _b) = c.logged_in(2, "bob");
    let secret = c
        .hub(2)
        .sessions
        .get(bob)
        .expect("a session")
        .secret
        .clone();
    // Node 2 stops hearing; bob's client comes back on node 1 and waits.
    c.kill(2);
    let mut b1 = c.connect();
    let mut answer = c.resume(1, &secret, 0, &b1);
    assert!(answer.try_recv().is_err(), "waits for node 2");
    // Node 2's goodbye reaches node 1: no heartbeat needed to take over.
    c.command(1, Command::Cluster(Envelope::Bye { from: 2 }));
    let moved = answer.try_recv().expect("answered").expect("taken over");
    assert_eq!(moved.user.as_str(), "bob");
    assert_eq!(frames(&mut b1)[0], "session_moved");
}
