//! Missed calls: invitations that ended unanswered (canceled, offline,
//! no response, expired, shutdown) while the callee had no device online.
//! The hub records them here; a login of the callee gets them in a
//! `missed_calls` message until the user clears them.
//!
//! Bounded ([`MissedConfig`]), so that no caller can make the store grow
//! without limit: per callee (count and bytes), per caller (across all
//! callees, and per callee: more from the same caller replace its oldest),
//! and as a whole (count and bytes: when full, the oldest overall go first);
//! none older than [`MissedConfig::max_age`]. The bounds live in [`Store`],
//! which does no I/O.
//!
//! With a file configured, the store survives a restart: it is an embedded
//! database (redb), one row per missed call keyed by (user, invitation id).
//! The hub's task only updates memory and hands the changed rows to a writer
//! task, which applies each batch in one transaction off the hub's task, so a
//! slow disk never stalls the hub and a change costs only its own rows.
//! An old JSON store of the same name next to it (`missed-calls.json` beside `missed-calls.redb`) is imported once and renamed
//! `missed-calls.json.imported`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, TableDefinition};
use tokio::sync::mpsc;
use tracing::{info, warn};

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{InvitationId, UserId};

/// Bounds and where to keep missed calls.
#[derive(Clone, Debug)]
pub struct MissedConfig {
    /// The database file (`missed-calls.redb`) that keeps them across
    /// restarts; `None` keeps them in memory only. A `missed-calls.json`
    /// in the same directory (the older format) is imported once.
    pub file: Option<PathBuf>,
    /// Missed calls kept per callee; older ones are dropped.
    pub per_user: usize,
    /// Bytes (content, caller and id, plus [`ENTRY_OVERHEAD`] each) kept per
    /// callee; older ones are dropped.
    pub per_user_bytes: usize,
    /// Missed calls one caller may leave across all callees; more replace
    /// that caller's oldest.
    pub per_caller: usize,
    /// Missed calls one caller may leave with one callee; more replace
    /// that caller's oldest with that callee.
    pub per_caller_per_user: usize,
    /// Missed calls kept in all; when full, the oldest overall go first.
    pub max_total: usize,
    /// Bytes kept in all (counted as for `per_user_bytes`); when full, the
    /// oldest overall go first.
    pub max_total_bytes: usize,
    /// Missed calls older than this are dropped.
    pub max_age: Duration,
}

impl Default for MissedConfig {
    fn default() -> Self {
        MissedConfig {
            file: None,
            per_user: 50,
            per_user_bytes: 128 * 1024,
            per_caller: 100,
            per_caller_per_user: 3,
            max_total: 100_000,
            max_total_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What a missed call is counted as besides its content, caller and id.
pub const ENTRY_OVERHEAD: usize = 64;

/// The size a missed call is counted as.
pub fn entry_bytes(call: &MissedCall) -> usize {
    call.content.len() + call.caller.len() + call.invitation_id.0.as_str().len() + ENTRY_OVERHEAD
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MissedError {
    #[error("cannot read the missed-calls file {path}: {source}; fix its permissions or pass another --data-dir")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the missed-calls database {path}: {message}; is another server using this --data-dir?")]
    Open { path: PathBuf, message: String },
}

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

pub(crate) struct MissedCalls {
    store: Store,
    /// The writer task's queue, when there is a file.
    writer: Option<mpsc::UnboundedSender<Vec<Change>>>,
    /// The writer task, awaited at shutdown so the last change reaches the disk.
    writer_task: Option<tokio::task::JoinHandle<()>>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One row per missed call: (callee, invitation id) → the call as JSON.
const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("missed_calls");

/// The database's page cache (redb's default is 1 GiB, which a flood of
/// writes would fill): the store in memory answers every read, so the cache
/// only serves writes.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Opens (or creates) the database; one that is not a database is moved
/// aside (`.corrupt`) and a new one created.
fn open_db(path: &Path) -> Result<redb::Database, MissedError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| MissedError::Read {
            path: path.to_owned(),
            source,
        })?;
    }
    match redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
    {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(source)))
            if source.kind() != std::io::ErrorKind::InvalidData =>
        {
            Err(MissedError::Read {
                path: path.to_owned(),
                source,
            })
        }
        Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => Err(MissedError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        }),
        Err(e) => {
            let aside = path.with_extension("redb.corrupt");
            warn!(path = %path.display(), error = %e, aside = %aside.display(), "missed-calls database is corrupt: moved aside, starting empty");
            let _ = std::fs::rename(path, &aside);
            redb::Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(|e| MissedError::Open {
                    path: path.to_owned(),
                    message: e.to_string(),
                })
        }
    }
}

/// Reads every row of the database.
fn read_db(db: &redb::Database) -> Result<Vec<(UserId, MissedCall)>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let table = match tx.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
        Err(e) => return Err(e.to_string()),
    };
    let mut rows = vec![];
    for row in table.iter().map_err(|e| e.to_string())? {
        let (k, v) = row.map_err(|e| e.to_string())?;
        let (user, _) = k.value();
        if let (Ok(user), Ok(call)) = (
            UserId::parse(user),
            serde_json::from_slice::<MissedCall>(v.value()),
        ) {
            rows.push((user, call));
        }
    }
    Ok(rows)
}

/// Applies a batch of changes in one transaction.
fn write_db(db: &redb::Database, changes: &[Change]) -> Result<(), Box<redb::Error>> {
    let tx = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut table = tx.open_table(TABLE).map_err(redb::Error::from)?;
        for c in changes {
            match c {
                Change::Put(user, call) => {
                    let bytes = serde_json::to_vec(call).unwrap_or_default();
                    table
                        .insert(
                            (user.as_str(), call.invitation_id.0.as_str()),
                            bytes.as_slice(),
                        )
                        .map_err(redb::Error::from)?;
                }
                Change::Delete(user, id) => {
                    table
                        .remove((user.as_str(), id.0.as_str()))
                        .map_err(redb::Error::from)?;
                }
            }
        }
    }
    tx.commit().map_err(redb::Error::from)?;
    Ok(())
}

/// The rows of an old `missed-calls.json`, if there is one; a corrupt one
/// is moved aside (`.corrupt`), a good one is renamed `.imported` once the
/// caller has saved its rows.
fn read_json(path: &Path) -> Result<Option<Vec<(UserId, MissedCall)>>, MissedError> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<HashMap<String, Vec<MissedCall>>>(&bytes) {
            Ok(map) => Ok(Some(
                map.into_iter()
                    .filter_map(|(u, calls)| UserId::parse(&u).ok().map(|u| (u, calls)))
                    .flat_map(|(u, calls)| calls.into_iter().map(move |c| (u.clone(), c)))
                    .collect(),
            )),
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                warn!(path = %path.display(), error = %e, aside = %aside.display(), "missed-calls file is corrupt: moved aside, not imported");
                let _ = std::fs::rename(path, &aside);
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MissedError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

impl MissedCalls {
    /// Opens the database (if any), imports an old JSON file next to it, and
    /// starts its writer.
    pub(crate) fn open(config: MissedConfig) -> Result<Self, MissedError> {
        let file = config.file.clone();
        let mut store = Store::new(config);
        let mut writer = None;
        let mut writer_task = None;
        if let Some(path) = &file {
            let mut db = open_db(path)?;
            // Pages freed by earlier runs go back; the file stays near its
            // contents' size across restarts.
            if let Err(e) = db.compact() {
                warn!(path = %path.display(), error = %e, "cannot compact the missed-calls database");
            }
            let mut rows = read_db(&db).map_err(|message| MissedError::Open {
                path: path.clone(),
                message,
            })?;
            let json = path.with_extension("json");
            let imported = read_json(&json)?;
            let importing = imported.is_some();
            let from_db = rows.len();
            if let Some(more) = imported {
                rows.extend(more);
            }
            // Oldest first, so that the bounds drop the oldest.
            rows.sort_by_key(|(_, c)| c.at_ms);
            let now = now_ms();
            let mut changes = vec![];
            for (i, (user, call)) in rows.into_iter().enumerate() {
                let c = store.insert(&user, call, now);
                // Rows already in the database need no Put.
                changes.extend(
                    c.into_iter()
                        .filter(|c| i >= from_db || !matches!(c, Change::Put(..))),
                );
            }
            if !changes.is_empty() || importing {
                // Deletes of rows never written are harmless.
                write_db(&db, &changes).map_err(|e| MissedError::Open {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            if importing {
                let done = json.with_extension("json.imported");
                if let Err(e) = std::fs::rename(&json, &done) {
                    warn!(path = %json.display(), error = %e, "cannot rename the imported missed-calls file");
                } else {
                    info!(from = %json.display(), to = %done.display(), "old missed-calls file imported");
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            writer_task = Some(tokio::spawn(write_loop(path.clone(), Arc::new(db), rx)));
            writer = Some(tx);
            info!(path = %path.display(), calls = store.len(), bytes = store.bytes(), "missed calls loaded");
        }
        Ok(MissedCalls {
            store,
            writer,
            writer_task,
        })
    }

    fn save(&mut self, changes: Vec<Change>) -> Vec<UserId> {
        let mut users: Vec<UserId> = vec![];
        for c in &changes {
            let (Change::Put(u, _) | Change::Delete(u, _)) = c;
            if !users.contains(u) {
                users.push(u.clone());
            }
        }
        if let (Some(w), false) = (&self.writer, changes.is_empty()) {
            let _ = w.send(changes);
        }
        users
    }

    /// Takes in missed calls kept elsewhere (the cluster's copy in Redis).
    #[cfg(feature = "cluster")]
    pub(crate) fn seed(&mut self, snapshot: Vec<(UserId, Vec<MissedCall>)>) {
        let mut rows: Vec<(UserId, MissedCall)> = snapshot
            .into_iter()
            .flat_map(|(u, calls)| calls.into_iter().map(move |c| (u.clone(), c)))
            .collect();
        rows.sort_by_key(|(_, c)| c.at_ms);
        for (user, call) in rows {
            self.remember(&user, call);
        }
    }

    /// Adds a missed call another node recorded (no log line, no
    /// duplicates); the bounds apply as on the node that recorded it.
    pub(crate) fn remember(&mut self, user: &UserId, call: MissedCall) {
        let changes = self.store.insert(user, call, now_ms());
        self.save(changes);
    }

    /// Records a missed call for `user` and applies the bounds. Returns the
    /// users whose missed calls changed (the callee, and any whose calls a
    /// bound dropped), for the cluster's copy.
    pub(crate) fn record(&mut self, user: &UserId, call: MissedCall) -> Vec<UserId> {
        info!(%user, invitation = %call.invitation_id, caller = %call.caller, reason = ?call.reason, "missed call recorded");
        let changes = self.store.insert(user, call, now_ms());
        self.save(changes)
    }

    /// The user's missed calls, oldest first (pruned by age first).
    pub(crate) fn of(&mut self, user: &UserId) -> Vec<MissedCall> {
        let changes = self.store.prune(user, now_ms());
        self.save(changes);
        self.store.list(user)
    }

    /// Stops the writer once it has saved every change.
    pub(crate) async fn close(&mut self) {
        self.writer = None;
        if let Some(task) = self.writer_task.take() {
            let _ = task.await;
        }
    }

    pub(crate) fn clear(&mut self, user: &UserId, ids: &[InvitationId]) {
        let changes = self.store.remove(user, ids);
        if !changes.is_empty() {
            info!(%user, cleared = changes.len(), "missed calls cleared");
            self.save(changes);
        }
    }
}

/// Keeps the database in step with the store, one transaction per batch of changes.
async fn write_loop(
    path: PathBuf,
    db: Arc<redb::Database>,
    mut rx: mpsc::UnboundedReceiver<Vec<Change>>,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < 10_000 {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let db2 = db.clone();
        let written = tokio::task::spawn_blocking(move || write_db(&db2, &batch)).await;
        if let Ok(Err(e)) = written {
            warn!(path = %path.display(), error = %e, "cannot save missed calls");
        }
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
