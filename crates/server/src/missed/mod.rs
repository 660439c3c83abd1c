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
//!
//! Here: the bounds ([`MissedConfig`]) and what the hub holds
//! ([`MissedCalls`]); `store.rs`: the calls in memory and the bounds applied
//! ([`Store`], unit-tested); `db.rs`: the database, the JSON import and the
//! writer task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{info, warn};

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{InvitationId, UserId};

mod db;
mod store;

pub use store::{Change, Store};

use db::{open_db, read_db, read_json, write_db, write_loop};

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
