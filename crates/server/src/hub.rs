//! The hub: one task that owns all shared state — logged-in devices, the
//! invitation records and their timers, presence subscriptions — and applies
//! every request in arrival order. Connections talk to it over a channel, so
//! races (cancel vs accept, two devices accepting, expiry vs accept) are
//! decided by the order in which the hub receives them, and both parties
//! always get the same outcome.
//!
//! The hub never blocks on a connection: messages go to a bounded queue per
//! connection, and a connection whose queue is full is closed as too slow.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use callinvite_protocol::invitation::{GoneCause, Input, Party, Record};
use callinvite_protocol::limits::{
    CLOSE_GOING_AWAY, CLOSE_NORMAL, MAX_CONTENT_BYTES, MAX_PRESENCE_QUERY,
    MAX_PRESENCE_SUBSCRIPTIONS, MAX_RESPONSE_BYTES,
};
use callinvite_protocol::wire::{encode, AuthMode, PresenceEntry, TimersMs};
use callinvite_protocol::{
    ClientMessage, DeviceId, ErrorCode, InvitationId, ServerMessage, UserId,
};

use crate::config::Config;

/// What the hub asks a connection's writer to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(String),
    Close(u16, &'static str),
}

/// What connections tell the hub.
pub(crate) enum Command {
    /// A connection with a verified user id wants to log in. The hub sends
    /// `login_ok` or the error itself, and answers `reply` with the device id.
    Login {
        user: UserId,
        token: Option<String>,
        req: Option<u64>,
        out: mpsc::Sender<Outbound>,
        kill: CancellationToken,
        reply: oneshot::Sender<Option<DeviceId>>,
    },
    /// Any request of a logged-in device other than login.
    Request {
        device: DeviceId,
        msg: ClientMessage,
    },
    /// The device's connection is gone.
    Gone { device: DeviceId, cause: GoneCause },
}

/// A logged-in connection.
struct Device {
    user: UserId,
    /// Its writer's queue.
    out: mpsc::Sender<Outbound>,
    /// Cancelled to make the connection close itself (too slow).
    kill: CancellationToken,
    /// Users whose presence it follows.
    subscriptions: HashSet<UserId>,
    /// Invitations that have sent it something, so its departure reaches them.
    invitations: HashSet<InvitationId>,
}

pub(crate) struct Hub {
    config: Config,
    next_device: u64,
    devices: HashMap<DeviceId, Device>,
    /// Online devices of each user; a user is online while this is non-empty.
    users: HashMap<UserId, Vec<DeviceId>>,
    records: HashMap<InvitationId, Record>,
    /// Invitations still ringing for each callee, delivered to devices that log in.
    ringing_for: HashMap<UserId, HashSet<InvitationId>>,
    /// Invitations still ringing from each caller (for the per-user limit).
    ringing_from: HashMap<UserId, HashSet<InvitationId>>,
    /// Timer queue: (deadline, invitation) for each record that wants a tick.
    timers: BTreeSet<(Instant, InvitationId)>,
    scheduled: HashMap<InvitationId, Instant>,
    /// Devices following each user's presence.
    subscribers: HashMap<UserId, HashSet<DeviceId>>,
    /// Login rate per user id: (window start, logins in window).
    login_rate: HashMap<UserId, (Instant, u32)>,
}

/// The hub's clock. `tokio::time::Instant` so tests can pause time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) async fn run(
    mut hub: Hub,
    mut rx: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) {
    loop {
        let next = hub.timers.first().map(|(t, _)| *t);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                hub.shutdown(now());
                break;
            }
            cmd = rx.recv() => match cmd {
                Some(cmd) => {
                    // A deadline that passed before this request arrived is applied first,
                    // so "arrival order" holds between requests and timers too.
                    let now = now();
                    hub.fire_timers(now);
                    hub.handle(cmd, now);
                }
                None => break,
            },
            _ = sleep_until(next) => hub.fire_timers(now()),
        }
    }
    debug!("hub stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

fn invalid(message: impl Into<String>) -> (ErrorCode, String) {
    (ErrorCode::InvalidArgument, message.into())
}

/// Validates a list of user ids for presence requests.
fn parse_users(users: &[String]) -> Result<Vec<UserId>, (ErrorCode, String)> {
    users
        .iter()
        .map(|u| UserId::parse(u).map_err(|e| invalid(format!("{u:?}: {e}"))))
        .collect()
}

impl Hub {
    pub(crate) fn new(config: Config) -> Self {
        Hub {
            config,
            next_device: 1,
            devices: HashMap::new(),
            users: HashMap::new(),
            records: HashMap::new(),
            ringing_for: HashMap::new(),
            ringing_from: HashMap::new(),
            timers: BTreeSet::new(),
            scheduled: HashMap::new(),
            subscribers: HashMap::new(),
            login_rate: HashMap::new(),
        }
    }

    fn handle(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Login {
                user,
                token,
                req,
                out,
                kill,
                reply,
            } => {
                let device = self.login(user, token, req, out, kill, now);
                let _ = reply.send(device);
            }
            Command::Request { device, msg } => {
                let req = msg.req();
                if let Err((code, message)) = self.request(device, msg, now) {
                    self.send(device, &ServerMessage::error(req, code, message));
                }
            }
            Command::Gone { device, cause } => self.gone(device, cause, now),
        }
    }

    fn send(&self, device: DeviceId, msg: &ServerMessage) {
        let Some(d) = self.devices.get(&device) else {
            return;
        };
        match d.out.try_send(Outbound::Text(encode(msg))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(%device, user = %d.user, "outbound queue full: closing the connection as too slow");
                d.kill.cancel();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn login(
        &mut self,
        user: UserId,
        token: Option<String>,
        req: Option<u64>,
        out: mpsc::Sender<Outbound>,
        kill: CancellationToken,
        now: Instant,
    ) -> Option<DeviceId> {
        let window = self.login_rate.entry(user.clone()).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 > self.config.logins_per_second {
            info!(%user, "login refused: too often");
            self.config.metrics.login("too_often");
            let msg = ServerMessage::error(
                req,
                ErrorCode::TooOften,
                format!(
                    "more than {} logins per second for this user id; wait a second",
                    self.config.logins_per_second
                ),
            );
            let _ = out.try_send(Outbound::Text(encode(&msg)));
            return None;
        }
        if self.login_rate.len() > 100_000 {
            self.login_rate
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        if let Some(secret) = &self.config.secret {
            let checked = match token.as_deref() {
                None | Some("") => Err(crate::auth::TokenError::Missing),
                Some(t) => crate::auth::verify(secret, user.as_str(), t),
            };
            if let Err(e) = checked {
                info!(%user, error = %e, "login refused");
                self.config.metrics.login(e.code().as_str());
                let _ = out.try_send(Outbound::Text(encode(&ServerMessage::error(
                    req,
                    e.code(),
                    e.to_string(),
                ))));
                return None;
            }
        }

        let online = self.users.get(&user).map_or(0, Vec::len);
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
            let _ = out.try_send(Outbound::Text(encode(&msg)));
            return None;
        }
        let device = DeviceId(self.next_device);
        self.next_device += 1;
        self.devices.insert(
            device,
            Device {
                user: user.clone(),
                out,
                kill,
                subscriptions: HashSet::new(),
                invitations: HashSet::new(),
            },
        );
        let devices = self.users.entry(user.clone()).or_default();
        let came_online = devices.is_empty();
        devices.push(device);
        let t = &self.config.timeouts;
        self.send(
            device,
            &ServerMessage::LoginOk {
                req,
                user: user.to_string(),
                device_id: device,
                auth: if self.config.secret.is_some() {
                    AuthMode::Token
                } else {
                    AuthMode::Open
                },
                timers: TimersMs {
                    offline_ms: t.offline.as_millis() as u64,
                    no_response_ms: t.no_response.as_millis() as u64,
                    ring_ms: t.ring.as_millis() as u64,
                    heartbeat_ms: self.config.heartbeat.as_millis() as u64,
                },
            },
        );
        info!(%user, %device, devices = self.users.get(&user).map_or(0, Vec::len), "logged in");
        self.config.metrics.login("ok");
        self.config.metrics.devices.inc();
        if came_online {
            self.notify_presence(&user, true);
        }
        // Every invitation still ringing for this user rings on the new device too.
        let pending: Vec<InvitationId> = self
            .ringing_for
            .get(&user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for id in pending {
            self.drive(&id, Input::CalleeDeviceOnline(device), now);
        }
        Some(device)
    }

    fn request(
        &mut self,
        device: DeviceId,
        msg: ClientMessage,
        now: Instant,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(d) = self.devices.get(&device) else {
            return Ok(());
        };
        let party = Party {
            user: d.user.clone(),
            device,
        };
        match msg {
            ClientMessage::Login { .. } => Err((
                ErrorCode::AlreadyLoggedIn,
                "this connection is already logged in; log out first".into(),
            )),
            ClientMessage::Logout { req } => {
                self.send(device, &ServerMessage::Ok { req });
                if let Some(d) = self.devices.get(&device) {
                    let _ = d.out.try_send(Outbound::Close(CLOSE_NORMAL, "logged out"));
                }
                self.gone(device, GoneCause::Logout, now);
                Ok(())
            }
            ClientMessage::Invite {
                req,
                callee,
                content,
            } => {
                let callee = UserId::parse(&callee).map_err(|e| invalid(format!("callee: {e}")))?;
                if callee == party.user {
                    return Err(invalid("you cannot call yourself"));
                }
                if content.len() > MAX_CONTENT_BYTES {
                    return Err(invalid(format!(
                        "content is {} bytes; the limit is {MAX_CONTENT_BYTES}",
                        content.len()
                    )));
                }
                let ringing = self.ringing_from.get(&party.user).map_or(0, HashSet::len);
                if ringing >= self.config.max_outgoing_invitations {
                    return Err((
                        ErrorCode::TooManyInvitations,
                        format!("you already have {ringing} invitations ringing (the limit); cancel one or wait"),
                    ));
                }
                let id = InvitationId(uuid::Uuid::new_v4().to_string());
                let online: Vec<DeviceId> = self.users.get(&callee).cloned().unwrap_or_default();
                info!(invitation = %id, caller = %party.user, %device, %callee, callee_devices = online.len(), "invitation sent");
                let (record, effects) = Record::new(
                    id.clone(),
                    party,
                    req,
                    callee.clone(),
                    content,
                    &online,
                    self.config.timeouts,
                    now,
                );
                self.ringing_for
                    .entry(callee)
                    .or_default()
                    .insert(id.clone());
                self.ringing_from
                    .entry(record.caller().user.clone())
                    .or_default()
                    .insert(id.clone());
                self.records.insert(id.clone(), record);
                self.apply(&id, "new", effects, now);
                Ok(())
            }
            ClientMessage::Cancel { req, invitation_id } => {
                self.drive_request(&invitation_id, Input::Cancel { from: party, req }, now)
            }
            ClientMessage::Accept {
                req,
                invitation_id,
                response,
            } => {
                check_response(&response)?;
                self.drive_request(
                    &invitation_id,
                    Input::Accept {
                        from: party,
                        req,
                        response,
                    },
                    now,
                )
            }
            ClientMessage::Refuse {
                req,
                invitation_id,
                response,
                busy,
            } => {
                check_response(&response)?;
                self.drive_request(
                    &invitation_id,
                    Input::Refuse {
                        from: party,
                        req,
                        response,
                        busy,
                    },
                    now,
                )
            }
            ClientMessage::Hangup { req, invitation_id } => {
                self.drive_request(&invitation_id, Input::Hangup { from: party, req }, now)
            }
            ClientMessage::Ack { invitation_id, of } => {
                self.drive(&invitation_id, Input::Ack { from: device, of }, now);
                Ok(())
            }
            ClientMessage::QueryPresence { req, users } => {
                if users.is_empty() || users.len() > MAX_PRESENCE_QUERY {
                    return Err(invalid(format!(
                        "query 1 to {MAX_PRESENCE_QUERY} user ids at once"
                    )));
                }
                let users = parse_users(&users)?;
                let users = self.presence_of(&users);
                self.send(device, &ServerMessage::Presence { req, users });
                Ok(())
            }
            ClientMessage::SubscribePresence { req, users } => {
                if users.is_empty() {
                    return Err(invalid("name at least one user id"));
                }
                let users = parse_users(&users)?;
                let subs = &self.devices[&device].subscriptions;
                let total = subs.len()
                    + users
                        .iter()
                        .filter(|u| !subs.contains(*u))
                        .collect::<HashSet<_>>()
                        .len();
                if total > MAX_PRESENCE_SUBSCRIPTIONS {
                    return Err(invalid(format!(
                        "a device may follow at most {MAX_PRESENCE_SUBSCRIPTIONS} users; this would make {total}"
                    )));
                }
                for u in &users {
                    self.subscribers
                        .entry(u.clone())
                        .or_default()
                        .insert(device);
                }
                if let Some(d) = self.devices.get_mut(&device) {
                    d.subscriptions.extend(users.iter().cloned());
                }
                let snapshot = self.presence_of(&users);
                self.send(
                    device,
                    &ServerMessage::Presence {
                        req,
                        users: snapshot,
                    },
                );
                Ok(())
            }
            ClientMessage::UnsubscribePresence { req, users } => {
                if users.is_empty() {
                    return Err(invalid("name at least one user id"));
                }
                let users = parse_users(&users)?;
                for u in &users {
                    self.unsubscribe(device, u);
                    if let Some(d) = self.devices.get_mut(&device) {
                        d.subscriptions.remove(u);
                    }
                }
                self.send(device, &ServerMessage::Ok { req: Some(req) });
                Ok(())
            }
        }
    }

    fn presence_of(&self, users: &[UserId]) -> Vec<PresenceEntry> {
        users
            .iter()
            .map(|u| PresenceEntry {
                user: u.to_string(),
                online: self.users.contains_key(u),
            })
            .collect()
    }

    fn unsubscribe(&mut self, device: DeviceId, user: &UserId) {
        if let Some(set) = self.subscribers.get_mut(user) {
            set.remove(&device);
            if set.is_empty() {
                self.subscribers.remove(user);
            }
        }
    }

    fn notify_presence(&self, user: &UserId, online: bool) {
        let Some(subs) = self.subscribers.get(user) else {
            return;
        };
        let msg = ServerMessage::PresenceChanged {
            user: user.to_string(),
            online,
        };
        for &d in subs {
            self.send(d, &msg);
        }
    }

    /// Feeds an input from a request to a record; unknown ids are `not_found`.
    fn drive_request(
        &mut self,
        id: &InvitationId,
        input: Input,
        now: Instant,
    ) -> Result<(), (ErrorCode, String)> {
        if !self.records.contains_key(id) {
            return Err((ErrorCode::NotFound, format!("no invitation {id} for you")));
        }
        self.drive(id, input, now);
        Ok(())
    }

    fn drive(&mut self, id: &InvitationId, input: Input, now: Instant) {
        let Some(record) = self.records.get_mut(id) else {
            return;
        };
        let before = record.phase_name();
        let effects = record.handle(input, now);
        self.apply(id, before, effects, now);
    }

    /// Sends a record's effects in order, then updates the indexes and timers.
    fn apply(
        &mut self,
        id: &InvitationId,
        before: &'static str,
        effects: Vec<callinvite_protocol::invitation::Effect>,
        now: Instant,
    ) {
        // Index the invitation under the devices taking part in it (not, say, a
        // stranger who was told `not_found`), so their departure reaches it.
        for e in &effects {
            let party = self
                .records
                .get(id)
                .is_some_and(|r| r.devices().any(|d| d == e.to));
            if party {
                if let Some(d) = self.devices.get_mut(&e.to) {
                    d.invitations.insert(id.clone());
                }
            }
            self.send(e.to, &e.msg);
        }
        let Some(record) = self.records.get(id) else {
            return;
        };
        let after = record.phase_name();
        self.count(record, before, after, &effects, now);
        if before != after {
            match record.outcome() {
                Some(outcome) if before != "new" => {
                    info!(invitation = %id, caller = %record.caller().user, callee = %record.callee(), from = before, ?outcome, "invitation ended")
                }
                _ => info!(invitation = %id, from = before, to = after, "invitation state"),
            }
        }
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
        let finished = record.is_finished(now);
        if let Some(old) = self.scheduled.remove(id) {
            self.timers.remove(&(old, id.clone()));
        }
        if finished {
            if let Some(record) = self.records.remove(id) {
                for d in record.devices() {
                    if let Some(dev) = self.devices.get_mut(&d) {
                        dev.invitations.remove(id);
                    }
                }
                debug!(invitation = %id, "record forgotten");
            }
        } else if let Some(t) = deadline {
            self.scheduled.insert(id.clone(), t);
            self.timers.insert((t, id.clone()));
        }
    }

    /// Ends every invitation and call with `server_shutdown`, then tells every
    /// device the server is going away and closes it (1001), in that order on
    /// each connection.
    fn shutdown(&mut self, now: Instant) {
        let ids: Vec<InvitationId> = self.records.keys().cloned().collect();
        info!(
            invitations = ids.len(),
            devices = self.devices.len(),
            "shutting down: ending invitations and closing connections"
        );
        for id in ids {
            self.drive(&id, Input::Shutdown, now);
        }
        let bye = ServerMessage::GoingAway {
            reason: "the server is shutting down".into(),
        };
        for (&device, d) in &self.devices {
            self.send(device, &bye);
            let _ = d
                .out
                .try_send(Outbound::Close(CLOSE_GOING_AWAY, "server shutting down"));
        }
    }

    /// Metrics for one step of a record: outcomes and latencies.
    fn count(
        &self,
        record: &Record,
        before: &str,
        after: &str,
        effects: &[callinvite_protocol::invitation::Effect],
        now: Instant,
    ) {
        use callinvite_protocol::invitation::Outcome;
        let m = &self.config.metrics;
        let since = now.saturating_duration_since(record.created_at());
        if effects
            .iter()
            .any(|e| matches!(e.msg, ServerMessage::ReceivedByPeer { .. }))
        {
            crate::metrics::Metrics::observe(&m.delivery_seconds, since);
        }
        if before == after || before == "in_call" {
            return;
        }
        if after == "in_call" {
            m.invitation("accepted");
            crate::metrics::Metrics::observe(&m.answer_seconds, since);
            return;
        }
        match record.outcome() {
            Some(Outcome::Refused { busy, .. }) => {
                m.invitation(if busy { "busy" } else { "refused" });
                crate::metrics::Metrics::observe(&m.answer_seconds, since);
            }
            Some(Outcome::Canceled) => m.invitation("canceled"),
            Some(Outcome::Failed(reason)) => m.invitation(reason.as_str()),
            Some(Outcome::CallEnded { .. }) | None => {}
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((t, id)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.scheduled.remove(&id);
            self.drive(&id, Input::Tick, now);
        }
    }

    fn gone(&mut self, device: DeviceId, cause: GoneCause, now: Instant) {
        let Some(d) = self.devices.remove(&device) else {
            return;
        };
        info!(user = %d.user, %device, ?cause, "device gone");
        self.config.metrics.devices.dec();
        for u in &d.subscriptions {
            self.unsubscribe(device, u);
        }
        let went_offline = match self.users.get_mut(&d.user) {
            Some(list) => {
                list.retain(|x| *x != device);
                list.is_empty()
            }
            None => false,
        };
        if went_offline {
            self.users.remove(&d.user);
        }
        for id in d.invitations {
            self.drive(&id, Input::DeviceGone { device, cause }, now);
        }
        if went_offline {
            self.notify_presence(&d.user, false);
        }
    }
}

fn check_response(response: &str) -> Result<(), (ErrorCode, String)> {
    if response.len() > MAX_RESPONSE_BYTES {
        return Err(invalid(format!(
            "response is {} bytes; the limit is {MAX_RESPONSE_BYTES}",
            response.len()
        )));
    }
    Ok(())
}
