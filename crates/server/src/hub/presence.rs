//! Who is online (every device of the cluster, by user) and who follows whose
//! presence. Owns no session: the hub tells it which devices come and go, and
//! asks it whom to tell.

use std::collections::{HashMap, HashSet};

use callinvite_protocol::wire::PresenceEntry;
use callinvite_protocol::{DeviceId, UserId};

/// A user's online devices: almost always one, kept inline (every node has
/// an entry for every online user of the cluster).
type DeviceList = smallvec::SmallVec<[DeviceId; 1]>;

/// What [`Presence::add`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The device was known already (a node said it twice).
    Known,
    /// The user's first device: the user came online.
    CameOnline,
    /// Another device of a user who was online.
    AnotherDevice,
}

#[derive(Default)]
pub(super) struct Presence {
    /// Online devices of each user; a user is online while this is non-empty.
    online: HashMap<UserId, DeviceList>,
    /// Devices following each user's presence.
    followers: HashMap<UserId, HashSet<DeviceId>>,
}

impl Presence {
    pub(super) fn is_online(&self, user: &UserId) -> bool {
        self.online.contains_key(user)
    }

    /// How many devices `user` has online.
    pub(super) fn device_count(&self, user: &UserId) -> usize {
        self.online.get(user).map_or(0, |l| l.len())
    }

    /// `user`'s online devices.
    pub(super) fn devices(&self, user: &UserId) -> &[DeviceId] {
        self.online.get(user).map_or(&[], |l| l.as_slice())
    }

    /// `user` as the copy kept here (so that a record shares its id with
    /// this map instead of holding one more), and its online devices.
    pub(super) fn shared(&self, user: UserId) -> (UserId, Vec<DeviceId>) {
        match self.online.get_key_value(&user) {
            Some((user, list)) => (user.clone(), list.to_vec()),
            None => (user, Vec::new()),
        }
    }

    /// `device` of `user` is online.
    pub(super) fn add(&mut self, user: &UserId, device: DeviceId) -> Arrival {
        let devices = self.online.entry(user.clone()).or_default();
        if devices.contains(&device) {
            return Arrival::Known;
        }
        let first = devices.is_empty();
        devices.push(device);
        if first {
            Arrival::CameOnline
        } else {
            Arrival::AnotherDevice
        }
    }

    /// Takes `device` off its user's online list; true if the user went offline.
    pub(super) fn remove(&mut self, user: &UserId, device: DeviceId) -> bool {
        let Some(list) = self.online.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|x| *x != device);
        let went_offline = before != list.len() && list.is_empty();
        if list.is_empty() {
            self.online.remove(user);
        }
        went_offline
    }

    /// The devices online on `node`, with their users.
    pub(super) fn devices_on(&self, node: u32) -> Vec<(DeviceId, UserId)> {
        self.online
            .iter()
            .flat_map(|(user, devices)| {
                devices
                    .iter()
                    .filter(|d| crate::cluster::node_of(**d) == node)
                    .map(move |d| (*d, user.clone()))
            })
            .collect()
    }

    /// Whether each of `users` is online.
    pub(super) fn snapshot(&self, users: &[UserId]) -> Vec<PresenceEntry> {
        users
            .iter()
            .map(|u| PresenceEntry {
                user: u.to_string(),
                online: self.online.contains_key(u),
            })
            .collect()
    }

    /// `device` follows the presence of `users` from now on.
    pub(super) fn follow(&mut self, device: DeviceId, users: &[UserId]) {
        for u in users {
            self.followers.entry(u.clone()).or_default().insert(device);
        }
    }

    /// `device` no longer follows `user`.
    pub(super) fn unfollow(&mut self, device: DeviceId, user: &UserId) {
        if let Some(set) = self.followers.get_mut(user) {
            set.remove(&device);
            if set.is_empty() {
                self.followers.remove(user);
            }
        }
    }

    /// The devices following `user`.
    pub(super) fn followers(&self, user: &UserId) -> Vec<DeviceId> {
        self.followers
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The users a device follows: most follow none, and an empty set is still
/// 48 bytes in every device, so the set is boxed and made on first use.
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes inline, not 48
pub(super) struct Follows(Option<Box<HashSet<UserId>>>);

impl Follows {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
    pub(super) fn contains(&self, user: &UserId) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(user))
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = &UserId> {
        self.0.iter().flat_map(|s| s.iter())
    }
    pub(super) fn extend(&mut self, users: impl IntoIterator<Item = UserId>) {
        self.0.get_or_insert_default().extend(users);
    }
    pub(super) fn remove(&mut self, user: &UserId) {
        if let Some(s) = &mut self.0 {
            s.remove(user);
            if s.is_empty() {
                self.0 = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).expect("valid user id")
    }

    #[test]
    fn online_while_a_device_is() {
        let mut p = Presence::default();
        let alice = user("alice");
        assert_eq!(p.add(&alice, DeviceId(1)), Arrival::CameOnline);
        assert_eq!(p.add(&alice, DeviceId(2)), Arrival::AnotherDevice);
        assert_eq!(p.add(&alice, DeviceId(2)), Arrival::Known);
        assert_eq!(p.device_count(&alice), 2);
        assert!(!p.remove(&alice, DeviceId(1)));
        assert!(p.is_online(&alice));
        assert!(p.remove(&alice, DeviceId(2)));
        assert!(!p.is_online(&alice));
        assert!(!p.remove(&alice, DeviceId(2)), "gone twice is gone once");
    }

    #[test]
    fn followers_come_and_go() {
        let mut p = Presence::default();
        let (alice, bob) = (user("alice"), user("bob"));
        p.follow(DeviceId(1), &[alice.clone(), bob.clone()]);
        p.follow(DeviceId(2), std::slice::from_ref(&alice));
        let mut f = p.followers(&alice);
        f.sort();
        assert_eq!(f, [DeviceId(1), DeviceId(2)]);
        p.unfollow(DeviceId(1), &alice);
        assert_eq!(p.followers(&alice), [DeviceId(2)]);
        p.unfollow(DeviceId(1), &bob);
        assert!(p.followers(&bob).is_empty());
        assert!(!p.followers.contains_key(&bob), "no empty set is left");
    }

    #[test]
    fn devices_by_node() {
        let mut p = Presence::default();
        let node2 = DeviceId(crate::cluster::first_device(2));
        p.add(&user("alice"), DeviceId(crate::cluster::first_device(1)));
        p.add(&user("bob"), node2);
        assert_eq!(p.devices_on(2), [(node2, user("bob"))]);
    }
}
