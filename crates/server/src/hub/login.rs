//! Logging in: the per-user login rate, the device limit, and making a new
//! session (a fresh login, or one taken over from a dead node) with what it
//! must hear first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::info;

use callinvite_protocol::invitation::GoneCause;
use callinvite_protocol::session::ServerSession;
use callinvite_protocol::wire::{encode, AuthMode, TimersMs};
use callinvite_protocol::{DeviceId, ErrorCode, ServerMessage, UserId};

use super::link::{ConnHandle, Link};
use super::presence::{Arrival, Follows};
use super::sessions::Device;
use super::Hub;
use crate::cluster::{Envelope, Target};
use crate::rate::{Rate, RateLimit, Refill};

/// How often each user id logged in lately. Only logins that succeed
/// count, so a stranger naming the user with bad tokens cannot lock them out.
pub(super) struct LoginRate {
    windows: HashMap<UserId, RateLimit>,
    /// Past this many entries, `windows` drops the ones that are over
    /// (then this becomes twice what is left: amortized O(1) per login, and
    /// at most about twice the users who logged in within the last second,
    /// not an entry per user who ever logged in).
    prune_at: usize,
}

impl Default for LoginRate {
    fn default() -> Self {
        LoginRate {
            windows: HashMap::new(),
            prune_at: 1024,
        }
    }
}

const WINDOW: Duration = Duration::from_secs(1);

/// At most `limit` logins in a one-second window.
fn per_second(limit: u32) -> Rate {
    Rate {
        limit,
        period: WINDOW,
        refill: Refill::Window,
    }
}

impl LoginRate {
    /// Whether `user` may log in once more at `now` with at most `limit`
    /// logins a second.
    pub(super) fn allows(&mut self, user: &UserId, limit: u32, now: Instant) -> bool {
        let rate = per_second(limit);
        if let Some(w) = self.windows.get(user) {
            if !w.allows(&rate, now) {
                return false;
            }
        }
        if self.windows.len() > self.prune_at {
            self.windows.retain(|_, w| !w.idle(&rate, now));
            self.windows.shrink_to_fit();
            self.prune_at = (2 * self.windows.len()).max(1024);
        }
        true
    }

    /// `user` logged in at `now`.
    pub(super) fn count(&mut self, user: &UserId, now: Instant) {
        // The limit does not matter for counting: a window is a second.
        self.windows
            .entry(user.clone())
            .or_default()
            .take(&per_second(0), now);
    }
}

/// How a new session came to be.
pub(super) enum Admission {
    /// A `login`.
    Login,
    /// A `resume` of a session of a node that is gone, taken over here
    /// with the users it followed.
    Moved { follows: Vec<UserId> },
}

impl Hub {
    /// A login whose credentials were checked by its connection: the new
    /// device, or `None` if it was refused (the connection was told why).
    pub(super) fn login(
        &mut self,
        user: UserId,
        req: Option<u64>,
        conn: ConnHandle,
        now: Instant,
    ) -> Option<DeviceId> {
        let limit = self.config.logins_per_second;
        if !self.logins.allows(&user, limit, now) {
            info!(%user, "login refused: too often");
            self.config.metrics.login("too_often");
            let msg = ServerMessage::error(
                req,
                ErrorCode::TooOften,
                format!("more than {limit} logins per second for this user id; wait a second"),
            );
            conn.put_text(encode(&msg));
            return None;
        }
        let mut online = self.presence.device_count(&user);
        if online >= self.config.max_devices_per_user {
            // A detached device is most likely this one coming back without
            // its session (say, the app restarted): it gives up its place.
            if let Some(old) = self.sessions.oldest_detached(self.presence.devices(&user)) {
                info!(%user, device = %old, "device limit reached: ending a detached session to make room");
                self.gone(old, GoneCause::ConnectionLost, now);
                online -= 1;
            }
        }
        if online >= self.config.max_devices_per_user {
            info!(%user, online, "login refused: too many devices");
            self.config.metrics.login("too_many_devices");
            let msg = ServerMessage::error(
                req,
                ErrorCode::TooManyDevices,
                format!(
                    "{user} already has {online} devices logged in (the limit); log one out first"
                ),
            );
            conn.put_text(encode(&msg));
            return None;
        }
        self.logins.count(&user, now);
        Some(self.admit(user, req, conn, Admission::Login, now))
    }

    /// Makes a new device of `user` on connection `conn`. Sends `login_ok`
    /// or `session_moved`, then what the device must hear.
    pub(super) fn admit(
        &mut self,
        user: UserId,
        req: Option<u64>,
        conn: ConnHandle,
        how: Admission,
        now: Instant,
    ) -> DeviceId {
        let device = self.sessions.new_id();
        // In a cluster the secret names its node, so a resume on another node finds it.
        let secret = if self.bus.clustered() {
            format!("n{}.{}", self.bus.node(), uuid::Uuid::new_v4().simple())
        } else {
            uuid::Uuid::new_v4().simple().to_string()
        };
        // login_ok is about this connection, so it is sent before the session's numbered messages.
        let t = &self.config.timeouts;
        let timers = TimersMs {
            offline_ms: t.offline.as_millis() as u64,
            no_response_ms: t.no_response.as_millis() as u64,
            ring_ms: t.ring.as_millis() as u64,
            heartbeat_ms: self.config.heartbeat.as_millis() as u64,
            resume_ms: self.config.resume_grace.as_millis() as u64,
        };
        let ice_servers = self
            .config
            .ice
            .servers_for(user.as_str(), std::time::SystemTime::now());
        let ok = match &how {
            Admission::Login => ServerMessage::LoginOk {
                req,
                user: user.to_string(),
                device_id: device,
                auth: if self.config.secret.is_some() {
                    AuthMode::Token
                } else {
                    AuthMode::Open
                },
                timers,
                session: secret.clone(),
                ice_servers,
            },
            Admission::Moved { .. } => ServerMessage::SessionMoved {
                req,
                user: user.to_string(),
                device_id: device,
                timers,
                session: secret.clone(),
                ice_servers,
            },
        };
        conn.put_text(encode(&ok));
        self.sessions.insert(
            device,
            Device {
                user: user.clone(),
                link: Some(Link::local(self.me(), conn)),
                secret,
                outbox: ServerSession::new(req.unwrap_or(0)),
                follows: Follows::default(),
            },
        );
        let arrival = self.presence.add(&user, device);
        let follows = match how {
            Admission::Moved { follows } => {
                info!(%user, %device, "session taken over from a node that is gone");
                self.config.metrics.login("session_moved");
                follows
            }
            Admission::Login => {
                info!(%user, %device, devices = self.presence.device_count(&user), "logged in");
                self.config.metrics.login("ok");
                Vec::new()
            }
        };
        self.config.metrics.devices.inc();
        if arrival == Arrival::CameOnline {
            self.notify_presence(&user, true);
        }
        self.bus.publish(
            Target::All,
            &Envelope::DeviceOnline {
                from: self.bus.node(),
                user: user.clone(),
                device,
            },
        );
        let missed = self.missed.of(&user);
        if !missed.is_empty() {
            self.send(device, &ServerMessage::MissedCalls { calls: missed });
        }
        self.ring_new_device(&user, device, now);
        if !follows.is_empty() {
            // The subscriptions go on; what changed meanwhile may have been
            // lost with the old node, so each user's presence comes afresh.
            self.follow(device, &follows);
            for p in self.presence.snapshot(&follows) {
                self.send(
                    device,
                    &ServerMessage::PresenceChanged {
                        user: p.user,
                        online: p.online,
                    },
                );
            }
        }
        self.keep_session_record(device);
        device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_rate_is_per_user_and_per_second() {
        let t0 = Instant::now();
        let (alice, bob) = (
            UserId::parse("alice").expect("valid"),
            UserId::parse("bob").expect("valid"),
        );
        let mut rate = LoginRate::default();
        for _ in 0..2 {
            assert!(rate.allows(&alice, 2, t0));
            rate.count(&alice, t0);
        }
        assert!(!rate.allows(&alice, 2, t0 + Duration::from_millis(999)));
        assert!(rate.allows(&bob, 2, t0));
        assert!(rate.allows(&alice, 2, t0 + WINDOW));
        rate.count(&alice, t0 + WINDOW);
        assert!(rate.allows(&alice, 2, t0 + WINDOW));
    }

    #[test]
    fn login_rate_forgets_windows_that_are_over() {
        let t0 = Instant::now();
        let mut rate = LoginRate::default();
        for i in 0..1100 {
            rate.count(&UserId::parse(&format!("u{i}")).expect("valid"), t0);
        }
        let later = t0 + WINDOW;
        assert!(rate.allows(&UserId::parse("x").expect("valid"), 1, later));
        assert!(rate.windows.is_empty());
        assert_eq!(rate.prune_at, 1024);
    }
}
