//! The invitations this node owns: the open [`Record`]s with their timers
//! and indexes, and the ended ones kept to answer late requests. Owns no
//! connection: stepping a record returns its effects, which the hub sends
//! (`hub/drive.rs`) before telling this part to [`Invitations::settle`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use callinvite_protocol::invitation::{Effect, Input, Record, Tombstone};
use callinvite_protocol::{DeviceId, InvitationId, UserId};

use super::ended::Ended;

/// One step of a record: the phase it was in, and what it says to whom.
pub(super) struct Step {
    pub(super) before: &'static str,
    pub(super) effects: Vec<Effect>,
}

pub(super) struct Invitations {
    /// Invitations that have not ended.
    records: HashMap<InvitationId, Record>,
    /// Invitations that ended within the retention window: what answers late requests.
    ended: Ended,
    /// Invitations still ringing for each callee, delivered to devices that log in.
    ringing_for: HashMap<UserId, HashSet<InvitationId>>,
    /// Invitations still ringing from each caller (for the per-user limit).
    ringing_from: HashMap<UserId, HashSet<InvitationId>>,
    /// Timer queue: (deadline, invitation) for each record that wants a tick…
    timers: BTreeSet<(Instant, InvitationId)>,
    /// …and each one's deadline in that queue, to take it out again.
    scheduled: HashMap<InvitationId, Instant>,
    /// Devices (here or on other nodes) taking part in invitations owned
    /// here, so that their departure reaches those invitations.
    involved: HashMap<DeviceId, HashSet<InvitationId>>,
}

impl Invitations {
    /// Ended invitations are kept for `retention`.
    pub(super) fn new(retention: std::time::Duration, now: Instant) -> Self {
        Invitations {
            records: HashMap::new(),
            ended: Ended::new(retention, now),
            ringing_for: HashMap::new(),
            ringing_from: HashMap::new(),
            timers: BTreeSet::new(),
            scheduled: HashMap::new(),
            involved: HashMap::new(),
        }
    }

    /// How many are open.
    pub(super) fn open_count(&self) -> usize {
        self.records.len()
    }

    /// How many ended ones are kept, and their bytes.
    pub(super) fn ended_count(&self) -> (usize, usize) {
        (self.ended.len(), self.ended.bytes())
    }

    pub(super) fn get(&self, id: &InvitationId) -> Option<&Record> {
        self.records.get(id)
    }

    pub(super) fn contains(&self, id: &InvitationId) -> bool {
        self.records.contains_key(id)
    }

    /// The ids of every open invitation.
    pub(super) fn ids(&self) -> Vec<InvitationId> {
        self.records.keys().cloned().collect()
    }

    /// How an invitation that ended within the retention window ended.
    pub(super) fn ended(&self, id: &InvitationId, now: Instant) -> Option<&Tombstone> {
        self.ended.get(id, now)
    }

    /// How many invitations `caller` has ringing.
    pub(super) fn ringing_from(&self, caller: &UserId) -> usize {
        self.ringing_from.get(caller).map_or(0, HashSet::len)
    }

    /// The invitations ringing for `callee`.
    pub(super) fn ringing_for(&self, callee: &UserId) -> Vec<InvitationId> {
        self.ringing_for
            .get(callee)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A new invitation (ringing): indexed by its caller and callee.
    pub(super) fn open(&mut self, record: Record) {
        let id = record.id().clone();
        self.ringing_for
            .entry(record.callee().clone())
            .or_default()
            .insert(id.clone());
        self.ringing_from
            .entry(record.caller().user.clone())
            .or_default()
            .insert(id.clone());
        self.records.insert(id, record);
    }

    /// Feeds `input` to the open invitation `id`; `None` if there is none.
    pub(super) fn step(&mut self, id: &InvitationId, input: Input, now: Instant) -> Option<Step> {
        let record = self.records.get_mut(id)?;
        let before = record.phase_name();
        let effects = record.handle(input, now);
        Some(Step { before, effects })
    }

    /// Notes that `device` is told about invitation `id`: if it takes part
    /// in it (not, say, a stranger told `not_found`), its departure will
    /// reach the invitation.
    pub(super) fn involve(&mut self, id: &InvitationId, device: DeviceId) {
        let party = self
            .records
            .get(id)
            .is_some_and(|r| r.devices().any(|d| d == device));
        if party {
            self.involved.entry(device).or_default().insert(id.clone());
        }
    }

    /// The invitations `device` takes part in, forgotten: it is gone.
    pub(super) fn take_involved(&mut self, device: DeviceId) -> HashSet<InvitationId> {
        self.involved.remove(&device).unwrap_or_default()
    }

    /// After a step's effects went out: updates the indexes and the timer of
    /// `id`, and keeps only a tombstone of it if it ended. True if it ended.
    pub(super) fn settle(&mut self, id: &InvitationId, now: Instant) -> bool {
        let Some(record) = self.records.get(id) else {
            return false;
        };
        if !record.is_ringing() {
            for (index, user) in [
                (&mut self.ringing_for, record.callee()),
                (&mut self.ringing_from, &record.caller().user),
            ] {
                if let Some(set) = index.get_mut(user) {
                    set.remove(id);
                    if set.is_empty() {
                        index.remove(user);
                    }
                }
            }
        }
        let deadline = record.deadline();
        let tombstone = record.tombstone();
        if let Some(old) = self.scheduled.remove(id) {
            self.timers.remove(&(old, id.clone()));
        }
        if let Some(tomb) = tombstone {
            // Ended: only late requests are left to answer, and the
            // tombstone answers them as the record would, without its
            // content, responses, devices or timers.
            if let Some(record) = self.records.remove(id) {
                for d in record.devices() {
                    if let Some(set) = self.involved.get_mut(&d) {
                        set.remove(id);
                        if set.is_empty() {
                            self.involved.remove(&d);
                        }
                    }
                }
            }
            self.ended.insert(id, tomb, now);
            return true;
        }
        if let Some(t) = deadline {
            self.scheduled.insert(id.clone(), t);
            self.timers.insert((t, id.clone()));
        }
        false
    }

    /// The next instant something here is due: a record's timer, or ended
    /// invitations to forget.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [
            self.timers.first().map(|(t, _)| *t),
            self.ended.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Forgets ended invitations past the retention window; true if it was due.
    pub(super) fn expire_ended(&mut self, now: Instant) -> bool {
        if self.ended.next_expiry().is_some_and(|t| t <= now) {
            self.ended.expire(now);
            return true;
        }
        false
    }

    /// The next invitation whose timer is due by `now`, taken off the queue.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<InvitationId> {
        let (t, _) = self.timers.first()?;
        if *t > now {
            return None;
        }
        let (_, id) = self.timers.pop_first()?;
        self.scheduled.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use callinvite_protocol::invitation::{Party, Timeouts};

    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).expect("valid user id")
    }

    fn ringing(now: Instant) -> (Invitations, InvitationId) {
        let mut inv = Invitations::new(Duration::from_secs(60), now);
        let id = InvitationId(uuid::Uuid::new_v4().to_string());
        let caller = Party {
            user: user("alice"),
            device: DeviceId(1),
        };
        let (record, _) = Record::new(
            id.clone(),
            caller,
            1,
            user("bob"),
            String::new(),
            &[DeviceId(2)],
            Timeouts::default(),
            now,
        );
        inv.open(record);
        assert!(!inv.settle(&id, now));
        (inv, id)
    }

    #[test]
    fn a_ringing_invitation_is_indexed_and_timed() {
        let t0 = Instant::now();
        let (mut inv, id) = ringing(t0);
        assert_eq!(inv.ringing_from(&user("alice")), 1);
        assert_eq!(inv.ringing_for(&user("bob")), std::slice::from_ref(&id));
        let due = inv
            .next_deadline()
            .expect("a ringing invitation has a timer");
        assert_eq!(inv.pop_due(due - Duration::from_millis(1)), None);
        assert_eq!(inv.pop_due(due), Some(id));
        assert_eq!(inv.pop_due(due), None);
    }

    #[test]
    fn an_ended_invitation_leaves_a_tombstone_and_no_index() {
        let t0 = Instant::now();
        let (mut inv, id) = ringing(t0);
        inv.involve(&id, DeviceId(2));
        inv.involve(&id, DeviceId(99));
        let step = inv.step(&id, Input::Shutdown, t0).expect("open");
        assert_eq!(step.before, "delivering");
        assert!(!step.effects.is_empty());
        assert!(inv.settle(&id, t0));
        assert!(!inv.contains(&id));
        assert!(inv.ended(&id, t0).is_some());
        assert_eq!(inv.ringing_from(&user("alice")), 0);
        assert!(inv.ringing_for(&user("bob")).is_empty());
        assert!(inv.take_involved(DeviceId(2)).is_empty());
        assert!(inv.take_involved(DeviceId(99)).is_empty(), "not a party");
        assert_eq!(inv.open_count(), 0);
        assert_eq!(inv.ended_count().0, 1);
    }
}
