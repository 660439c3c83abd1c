//! Ended invitations, remembered for the retention window (60 s) so that a
//! late `accept`, `refuse`, `cancel`, `hangup` or media signal gets its
//! precise `already_*` answer (PROTOCOL.md §3.11) instead of `not_found`.
//!
//! An ended invitation is kept as a [`Tombstone`] (the two user ids, shared
//! with the hub's other copies, the caller's device and the outcome: no
//! content, responses, callee devices or timers), under its id packed into
//! 20 bytes, 80 bytes in all. At 8 000 invitations a second that is 480 000
//! of them, so how they are stored matters:
//!
//! * The invitations that end within one *slice* of time (a sixteenth of the
//!   window) go into a hash map. When the slice is over, its entries are
//!   sorted into one exactly sized array (looked up by binary search): no
//!   hash table's empty buckets for the remaining minute, and no timer per
//!   entry.
//! * A slice is dropped whole once its newest entry is past the window. An
//!   entry past the window but in a slice not yet dropped is not found, so
//!   the window is exact; the memory goes at most one slice later.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use callinvite_protocol::invitation::Tombstone;
use callinvite_protocol::InvitationId;

/// An invitation id as this server makes them — a UUID, in a cluster after
/// `n<node>.` — in 20 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Key {
    uuid: [u8; 16],
    /// The owning node; [`NO_NODE`] on a single server.
    node: u32,
}

const NO_NODE: u32 = u32::MAX;

impl Key {
    /// The key of an id this server could have made; `None` for any other
    /// string (which no invitation here has). Exact: only the spelling the
    /// server uses maps to a key, so `"N1.…"` or an upper-case UUID is not
    /// taken for the invitation it resembles.
    pub(super) fn of(id: &InvitationId) -> Option<Key> {
        let s = id.0.as_str();
        let (node, uuid) = match s.strip_prefix('n') {
            Some(rest) => {
                let (node, uuid) = rest.split_once('.')?;
                // Digits only, no leading zero: as the server writes a number.
                if !node.bytes().all(|b| b.is_ascii_digit()) || node.starts_with("0") && node != "0"
                {
                    return None;
                }
                let n: u32 = node.parse().ok()?;
                if n == NO_NODE {
                    return None;
                }
                (n, uuid)
            }
            None => (NO_NODE, s),
        };
        let parsed = uuid::Uuid::try_parse(uuid).ok()?;
        let mut canonical = uuid::Uuid::encode_buffer();
        if &*parsed.hyphenated().encode_lower(&mut canonical) != uuid {
            return None;
        }
        Some(Key {
            uuid: parsed.into_bytes(),
            node,
        })
    }
}

/// One ended invitation: its key, when it ended (nanoseconds into its
/// slice) and its tombstone.
struct Entry {
    key: Key,
    ended: u32,
    tomb: Tombstone,
}

/// The entries of one slice of time, sorted by key.
struct Slice {
    from: Instant,
    entries: Box<[Entry]>,
}

pub(super) struct Ended {
    retention: Duration,
    /// The time one slice covers: a sixteenth of the window, at most 4 s (so
    /// that an entry's time in its slice fits 32 bits of nanoseconds).
    width: Duration,
    /// The slice invitations end in now, from `open_from`.
    open: HashMap<Key, (u32, Tombstone)>,
    open_from: Instant,
    /// Earlier slices, oldest first.
    sealed: VecDeque<Slice>,
    len: usize,
}

impl Ended {
    pub(super) fn new(retention: Duration, now: Instant) -> Self {
        Ended {
            retention,
            width: (retention / 16).clamp(Duration::from_millis(1), Duration::from_secs(4)),
            open: HashMap::new(),
            open_from: now,
            sealed: VecDeque::new(),
            len: 0,
        }
    }

    /// Remembers that the invitation `id` ended now. An id this server did
    /// not make (none does) is not kept.
    pub(super) fn insert(&mut self, id: &InvitationId, tomb: Tombstone, now: Instant) {
        if self.retention.is_zero() {
            return;
        }
        let Some(key) = Key::of(id) else {
            return;
        };
        self.expire(now);
        let ended = now.saturating_duration_since(self.open_from).as_nanos() as u32;
        if self.open.insert(key, (ended, tomb)).is_none() {
            self.len += 1;
        }
    }

    /// The tombstone of `id` if it ended less than the window ago.
    pub(super) fn get(&self, id: &InvitationId, now: Instant) -> Option<&Tombstone> {
        let key = Key::of(id)?;
        let live = |from: Instant, ended: u32| {
            now < from + Duration::from_nanos(u64::from(ended)) + self.retention
        };
        if let Some((ended, tomb)) = self.open.get(&key) {
            return live(self.open_from, *ended).then_some(tomb);
        }
        // Newest first: a late request is most likely about a recent ending.
        self.sealed.iter().rev().find_map(|slice| {
            let i = slice.entries.binary_search_by(|e| e.key.cmp(&key)).ok()?;
            let e = &slice.entries[i];
            live(slice.from, e.ended).then_some(&e.tomb)
        })
    }

    /// Seals the open slice if its time is over, and drops the slices whose
    /// every entry is past the window.
    pub(super) fn expire(&mut self, now: Instant) {
        if now >= self.open_from + self.width {
            if !self.open.is_empty() {
                let mut entries: Vec<Entry> = self
                    .open
                    .drain()
                    .map(|(key, (ended, tomb))| Entry { key, ended, tomb })
                    .collect();
                entries.sort_unstable_by_key(|e| e.key);
                self.sealed.push_back(Slice {
                    from: self.open_from,
                    entries: entries.into_boxed_slice(),
                });
                // The map's table goes too: the next slice may be quieter.
                self.open = HashMap::new();
            }
            self.open_from = now;
        }
        while let Some(oldest) = self.sealed.front() {
            if now < oldest.from + self.width + self.retention {
                break;
            }
            self.len -= oldest.entries.len();
            self.sealed.pop_front();
        }
    }

    /// When [`Ended::expire`] next has something to free.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        let open = (!self.open.is_empty()).then(|| self.open_from + self.width);
        let sealed = self
            .sealed
            .front()
            .map(|s| s.from + self.width + self.retention);
        open.into_iter().chain(sealed).min()
    }

    /// How many are remembered (some may be past the window, not yet freed).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bytes they take, less the user ids they share with the rest of
    /// the hub (an id held only here adds its length and 16 bytes).
    pub(super) fn bytes(&self) -> usize {
        let sealed: usize = self
            .sealed
            .iter()
            .map(|s| s.entries.len() * std::mem::size_of::<Entry>())
            .sum();
        let open = self.open.capacity() * (std::mem::size_of::<(Key, (u32, Tombstone))>() + 1);
        sealed + open + self.sealed.len() * std::mem::size_of::<Slice>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callinvite_protocol::invitation::{Input, Party, Record, Timeouts};
    use callinvite_protocol::{DeviceId, UserId};

    fn tomb(t0: Instant) -> Tombstone {
        let alice = Party {
            user: UserId::parse("alice").unwrap(),
            device: DeviceId(1),
        };
        let (mut r, _) = Record::new(
            InvitationId("x".into()),
            alice.clone(),
            1,
            UserId::parse("bob").unwrap(),
            "x".repeat(8192),
            &[],
            Timeouts::default(),
            t0,
        );
        r.handle(
            Input::Cancel {
                from: alice,
                req: 2,
            },
            t0,
        );
        r.tombstone().expect("ended")
    }

    fn id() -> InvitationId {
        InvitationId(uuid::Uuid::new_v4().to_string())
    }

    #[test]
    fn keys_take_only_the_spelling_the_server_makes() {
        let u = uuid::Uuid::new_v4();
        let plain = InvitationId(u.to_string());
        let node = InvitationId(format!("n7.{u}"));
        assert!(Key::of(&plain).is_some());
        assert!(Key::of(&node).is_some());
        assert_ne!(Key::of(&plain), Key::of(&node));
        assert_ne!(Key::of(&node), Key::of(&InvitationId(format!("n8.{u}"))));
        for other in [
            u.to_string().to_uppercase(),
            u.simple().to_string(),
            format!("{{{u}}}"),
            format!("urn:uuid:{u}"),
            format!("n07.{u}"),
            format!("n+7.{u}"),
            format!("N7.{u}"),
            format!("n{}.{u}", u32::MAX),
            format!("n7.{u}x"),
            "not-found".into(),
            String::new(),
        ] {
            assert_eq!(Key::of(&InvitationId(other.clone())), None, "{other}");
        }
    }

    #[test]
    fn found_for_exactly_the_window_then_freed_by_slice() {
        let t0 = Instant::now();
        let retention = Duration::from_secs(60);
        let mut e = Ended::new(retention, t0);
        let ids: Vec<InvitationId> = (0..100).map(|_| id()).collect();
        // One ending every 100 ms for 10 s: several slices.
        for (i, id) in ids.iter().enumerate() {
            e.insert(id, tomb(t0), t0 + Duration::from_millis(100 * i as u64));
        }
        assert_eq!(e.len(), 100);
        let last = t0 + Duration::from_millis(9_900);
        for (i, id) in ids.iter().enumerate() {
            let ended = t0 + Duration::from_millis(100 * i as u64);
            assert!(e.get(id, last).is_some(), "{i} is kept");
            assert!(e
                .get(id, ended + retention - Duration::from_nanos(1))
                .is_some());
            assert!(
                e.get(id, ended + retention).is_none(),
                "{i}: not a moment longer"
            );
        }
        assert!(e.get(&id(), last).is_none());
        // Freed a slice at a time; all gone one slice after the last one's window.
        e.expire(t0 + retention + Duration::from_secs(5));
        assert!(e.len() < 100 && e.len() > 0, "{}", e.len());
        e.expire(last + retention + e.width);
        assert_eq!(e.len(), 0);
        assert_eq!(e.next_expiry(), None);
    }

    #[test]
    fn no_content_is_kept() {
        let t0 = Instant::now();
        let mut e = Ended::new(Duration::from_secs(60), t0);
        for i in 0..10_000u64 {
            e.insert(&id(), tomb(t0), t0 + Duration::from_micros(i * 500));
        }
        e.expire(t0 + Duration::from_secs(5));
        assert_eq!(e.len(), 10_000);
        // 8 KiB of content each went with the record: about 80 bytes are left.
        let per = e.bytes() / e.len();
        assert!(per <= 160, "{per} bytes per ended invitation");
    }
}
