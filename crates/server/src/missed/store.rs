//! The missed calls in memory and their bounds ([`Store`]): no I/O. Every
//! operation returns the rows it added and removed ([`Change`]), for the
//! database and the cluster's copy.

use std::collections::{BTreeMap, HashMap, VecDeque};

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{InvitationId, UserId};

use super::{entry_bytes, MissedConfig};

/// A change to persist.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put(UserId, MissedCall),
    Delete(UserId, InvitationId),
}

struct Slot {
    seq: u64,
    bytes: usize,
    call: MissedCall,
}

/// The missed calls in memory and their bounds; no I/O. Every operation
/// returns the rows it added and removed.
pub struct Store {
    config: MissedConfig,
    next_seq: u64,
    /// Per callee, in the order recorded (oldest first).
    by_user: HashMap<UserId, VecDeque<Slot>>,
    /// Per caller: seq → callee, oldest first.
    by_caller: HashMap<String, BTreeMap<u64, UserId>>,
    /// All: seq → callee, oldest first.
    order: BTreeMap<u64, UserId>,
    total_bytes: usize,
}

impl Store {
    pub fn new(config: MissedConfig) -> Self {
        Store {
            config,
            next_seq: 0,
            by_user: HashMap::new(),
            by_caller: HashMap::new(),
            order: BTreeMap::new(),
            total_bytes: 0,
        }
    }

    /// Missed calls kept in all.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Bytes kept in all (as counted by [`entry_bytes`]).
    pub fn bytes(&self) -> usize {
        self.total_bytes
    }

    /// Missed calls `caller` has left, across all callees.
    pub fn count_from(&self, caller: &str) -> usize {
        self.by_caller.get(caller).map_or(0, |m| m.len())
    }

    /// The user's missed calls, oldest first (no pruning).
    pub fn list(&self, user: &UserId) -> Vec<MissedCall> {
        self.by_user
            .get(user)
            .map(|l| l.iter().map(|s| s.call.clone()).collect())
            .unwrap_or_default()
    }

    /// Users with missed calls.
    pub fn users(&self) -> Vec<UserId> {
        self.by_user.keys().cloned().collect()
    }

    /// Removes the slot `seq` of `user`; records the deletion.
    fn remove_seq(&mut self, user: &UserId, seq: u64, changes: &mut Vec<Change>) {
        let Some(list) = self.by_user.get_mut(user) else {
            return;
        };
        let Some(pos) = list.iter().position(|s| s.seq == seq) else {
            return;
        };
        let slot = list.remove(pos).expect("position is in range");
        if list.is_empty() {
            self.by_user.remove(user);
        }
        self.order.remove(&seq);
        if let Some(m) = self.by_caller.get_mut(&slot.call.caller) {
            m.remove(&seq);
            if m.is_empty() {
                self.by_caller.remove(&slot.call.caller);
            }
        }
        self.total_bytes -= slot.bytes;
        changes.push(Change::Delete(user.clone(), slot.call.invitation_id));
    }

    /// Adds a missed call for `user` (ignored if it is there already or too
    /// old at `now_ms`), then applies every bound. Returns the changes; the
    /// new call's `Put` is among them unless a bound dropped it at once.
    pub fn insert(&mut self, user: &UserId, call: MissedCall, now_ms: u64) -> Vec<Change> {
        let mut changes = self.expire(now_ms);
        let oldest = now_ms.saturating_sub(self.config.max_age.as_millis() as u64);
        if call.at_ms < oldest {
            return changes;
        }
        if self
            .by_user
            .get(user)
            .is_some_and(|l| l.iter().any(|s| s.call.invitation_id == call.invitation_id))
        {
            return changes;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = entry_bytes(&call);
        let caller = call.caller.clone();
        let id = call.invitation_id.clone();
        self.by_user
            .entry(user.clone())
            .or_default()
            .push_back(Slot {
                seq,
                bytes,
                call: call.clone(),
            });
        self.order.insert(seq, user.clone());
        self.by_caller
            .entry(caller.clone())
            .or_default()
            .insert(seq, user.clone());
        self.total_bytes += bytes;
        let mark = changes.len();
        changes.push(Change::Put(user.clone(), call));

        // 1. Per caller and callee: the caller's oldest with this callee go.
        while let Some(list) = self.by_user.get(user) {
            let mine: Vec<u64> = list
                .iter()
                .filter(|s| s.call.caller == caller)
                .map(|s| s.seq)
                .collect();
            if mine.len() <= self.config.per_caller_per_user.max(1) {
                break;
            }
            self.remove_seq(user, mine[0], &mut changes);
        }
        // 2. Per callee, count and bytes: the callee's oldest go.
        while let Some(list) = self.by_user.get(user) {
            let bytes: usize = list.iter().map(|s| s.bytes).sum();
            if list.len() <= self.config.per_user.max(1) && bytes <= self.config.per_user_bytes {
                break;
            }
            let seq = list[0].seq;
            self.remove_seq(user, seq, &mut changes);
        }
        // 3. Per caller, across callees: the caller's oldest go.
        while let Some(m) = self.by_caller.get(&caller) {
            if m.len() <= self.config.per_caller.max(1) {
                break;
            }
            let (&seq, u) = m.iter().next().expect("not empty");
            let u = u.clone();
            self.remove_seq(&u, seq, &mut changes);
        }
        // 4. The whole store: the oldest overall go.
        while self.order.len() > self.config.max_total.max(1)
            || self.total_bytes > self.config.max_total_bytes
        {
            let Some((&seq, u)) = self.order.iter().next() else {
                break;
            };
            let u = u.clone();
            self.remove_seq(&u, seq, &mut changes);
        }
        // Put and Delete of the same row cancel out.
        if changes[mark..]
            .iter()
            .any(|c| matches!(c, Change::Delete(u, i) if u == user && *i == id))
        {
            changes.retain(|c| {
                !matches!(c, Change::Put(u, k) if u == user && k.invitation_id == id)
                    && !matches!(c, Change::Delete(u, i) if u == user && *i == id)
            });
        }
        changes
    }

    /// Drops the user's missed calls older than `max_age` at `now_ms`.
    pub fn prune(&mut self, user: &UserId, now_ms: u64) -> Vec<Change> {
        let oldest = now_ms.saturating_sub(self.config.max_age.as_millis() as u64);
        let old: Vec<u64> = self
            .by_user
            .get(user)
            .map(|l| {
                l.iter()
                    .filter(|s| s.call.at_ms < oldest)
                    .map(|s| s.seq)
                    .collect()
            })
            .unwrap_or_default();
        let mut changes = vec![];
        for seq in old {
            self.remove_seq(user, seq, &mut changes);
        }
        changes
    }

    /// Drops the oldest (by recording) while they are older than `max_age`.
    fn expire(&mut self, now_ms: u64) -> Vec<Change> {
        let oldest = now_ms.saturating_sub(self.config.max_age.as_millis() as u64);
        let mut changes = vec![];
        while let Some((&seq, u)) = self.order.iter().next() {
            let u = u.clone();
            let old = self
                .by_user
                .get(&u)
                .and_then(|l| l.iter().find(|s| s.seq == seq))
                .is_some_and(|s| s.call.at_ms < oldest);
            if !old {
                break;
            }
            self.remove_seq(&u, seq, &mut changes);
        }
        changes
    }

    /// Removes the user's missed calls with these ids.
    pub fn remove(&mut self, user: &UserId, ids: &[InvitationId]) -> Vec<Change> {
        let seqs: Vec<u64> = self
            .by_user
            .get(user)
            .map(|l| {
                l.iter()
                    .filter(|s| ids.contains(&s.call.invitation_id))
                    .map(|s| s.seq)
                    .collect()
            })
            .unwrap_or_default();
        let mut changes = vec![];
        for seq in seqs {
            self.remove_seq(user, seq, &mut changes);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callinvite_protocol::wire::MissedReason;

    fn call(id: &str, caller: &str, content: usize, at_ms: u64) -> MissedCall {
        MissedCall {
            invitation_id: InvitationId(id.to_string()),
            caller: caller.into(),
            content: "x".repeat(content),
            at_ms,
            reason: MissedReason::Canceled,
        }
    }

    fn user(u: &str) -> UserId {
        UserId::parse(u).unwrap()
    }

    const NOW: u64 = 1_800_000_000_000;

    fn ids(s: &Store, u: &str) -> Vec<String> {
        s.list(&user(u))
            .into_iter()
            .map(|c| c.invitation_id.0.as_str().to_owned())
            .collect()
    }

    #[test]
    fn one_caller_replaces_its_oldest_with_one_callee() {
        let mut s = Store::new(MissedConfig::default());
        s.insert(&user("bob"), call("other", "carol", 10, NOW), NOW);
        for i in 0..5 {
            s.insert(&user("bob"), call(&format!("a{i}"), "alice", 10, NOW), NOW);
        }
        assert_eq!(ids(&s, "bob"), ["other", "a2", "a3", "a4"]);
        assert_eq!(s.count_from("alice"), 3);
    }

    #[test]
    fn one_caller_is_capped_across_callees() {
        let config = MissedConfig {
            per_caller: 10,
            ..MissedConfig::default()
        };
        let mut s = Store::new(config);
        s.insert(&user("bob"), call("legit", "carol", 10, NOW), NOW);
        for i in 0..1000 {
            s.insert(
                &user(&format!("u{i}")),
                call(&format!("a{i}"), "mallory", 8192, NOW),
                NOW,
            );
        }
        assert_eq!(s.count_from("mallory"), 10);
        assert_eq!(s.len(), 11);
        assert!(s.bytes() < 11 * (8192 + 200), "{}", s.bytes());
        assert_eq!(ids(&s, "u999"), ["a999"]);
        assert!(ids(&s, "u0").is_empty());
        assert_eq!(ids(&s, "bob"), ["legit"]);
    }

    #[test]
    fn a_callee_is_capped_in_count_and_bytes() {
        let config = MissedConfig {
            per_user: 4,
            per_user_bytes: 3 * (1000 + 64 + 10),
            ..MissedConfig::default()
        };
        let mut s = Store::new(config);
        for i in 0..6 {
            s.insert(
                &user("bob"),
                call(&format!("c{i}"), &format!("caller{i}"), 10, NOW),
                NOW,
            );
        }
        assert_eq!(ids(&s, "bob"), ["c2", "c3", "c4", "c5"]);
        for i in 0..3 {
            s.insert(
                &user("bob"),
                call(&format!("big{i}"), &format!("x{i}"), 1000, NOW),
                NOW,
            );
        }
        let list = s.list(&user("bob"));
        let bytes: usize = list.iter().map(entry_bytes).sum();
        assert!(bytes <= 3 * (1000 + 64 + 10), "{bytes}");
        assert_eq!(ids(&s, "bob").last().unwrap(), "big2");
        // A single call over the byte bound is not kept at all.
        let config = MissedConfig {
            per_user_bytes: 100,
            ..MissedConfig::default()
        };
        let mut s = Store::new(config);
        let changes = s.insert(&user("bob"), call("huge", "alice", 8192, NOW), NOW);
        assert!(changes.is_empty(), "{changes:?}");
        assert!(s.is_empty());
    }

    #[test]
    fn the_whole_store_drops_its_oldest_when_full() {
        let config = MissedConfig {
            max_total: 5,
            max_total_bytes: 1 << 30,
            ..MissedConfig::default()
        };
        let mut s = Store::new(config);
        for i in 0..8 {
            s.insert(
                &user(&format!("u{i}")),
                call(&format!("c{i}"), &format!("caller{i}"), 10, NOW),
                NOW,
            );
        }
        assert_eq!(s.len(), 5);
        assert!(ids(&s, "u2").is_empty() && ids(&s, "u3") == ["c3"]);
        let config = MissedConfig {
            max_total_bytes: 4 * (100 + 64 + 9),
            ..MissedConfig::default()
        };
        let mut s = Store::new(config);
        for i in 0..8 {
            let changes = s.insert(
                &user(&format!("u{i}")),
                call(&format!("c{i}"), &format!("caller{i}"), 100, NOW),
                NOW,
            );
            if i >= 4 {
                assert!(
                    changes.contains(&Change::Delete(
                        user(&format!("u{}", i - 4)),
                        InvitationId(format!("c{}", i - 4))
                    )),
                    "{changes:?}"
                );
            }
        }
        assert_eq!(s.len(), 4);
        assert!(s.bytes() <= 4 * (100 + 64 + 9));
    }

    #[test]
    fn old_duplicate_and_cleared_calls() {
        let mut s = Store::new(MissedConfig::default());
        let day = 24 * 3600 * 1000;
        assert!(s
            .insert(&user("bob"), call("old", "a", 1, NOW - 31 * day), NOW)
            .is_empty());
        s.insert(&user("bob"), call("c1", "a", 1, NOW - 29 * day), NOW);
        assert!(
            s.insert(&user("bob"), call("c1", "a", 1, NOW), NOW)
                .is_empty(),
            "a duplicate"
        );
        s.insert(&user("bob"), call("c2", "a", 1, NOW), NOW);
        // Two days on, c1 is too old; the next insert anywhere drops it.
        let changes = s.insert(
            &user("eve"),
            call("c3", "b", 1, NOW + 2 * day),
            NOW + 2 * day,
        );
        assert_eq!(
            changes[0],
            Change::Delete(user("bob"), InvitationId("c1".to_string()))
        );
        assert_eq!(
            s.remove(&user("bob"), &[InvitationId("c2".to_string())])
                .len(),
            1
        );
        assert!(ids(&s, "bob").is_empty());
        assert_eq!(s.len(), 1);
        assert_eq!(s.bytes(), entry_bytes(&call("c3", "b", 1, 0)));
    }
}
