//! Missed calls: invitations that ended unanswered (canceled, offline,
//! no response, expired, shutdown) while the callee had no device online.
//! The hub records them here; a login of the callee gets them in a
//! `missed_calls` message until the user clears them.
//!
//! Bounded: at most [`MissedConfig::per_user`] per user (the oldest go first)
//! and none older than [`MissedConfig::max_age`]. With a file configured, the
//! store survives a restart: the hub's task only updates memory and hands a
//! snapshot of the changed user to a writer task, which rewrites the file
//! atomically (write to a temporary file, then rename), so a slow disk never
//! stalls the hub.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{info, warn};

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::{InvitationId, UserId};

/// Bounds and where to keep missed calls.
#[derive(Clone, Debug)]
pub struct MissedConfig {
    /// A JSON file that keeps them across restarts; `None` keeps them in memory only.
    pub file: Option<PathBuf>,
    /// Missed calls kept per user; older ones are dropped.
    pub per_user: usize,
    /// Missed calls older than this are dropped.
    pub max_age: Duration,
}

impl Default for MissedConfig {
    fn default() -> Self {
        MissedConfig {
            file: None,
            per_user: 50,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MissedError {
    #[error("cannot read the missed-calls file {path}: {source}; fix its permissions or pass another --data-dir")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) struct MissedCalls {
    config: MissedConfig,
    by_user: HashMap<UserId, VecDeque<MissedCall>>,
    /// The writer task's queue, when there is a file.
    writer: Option<mpsc::UnboundedSender<(UserId, Vec<MissedCall>)>>,
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
    /// Loads the file (if any) and starts its writer. A corrupt file is moved
    /// aside (`.corrupt`) and reported; the store then starts empty.
    pub(crate) fn open(config: MissedConfig) -> Result<Self, MissedError> {
        let mut by_user: HashMap<UserId, VecDeque<MissedCall>> = HashMap::new();
        let mut writer = None;
        let mut writer_task = None;
        if let Some(path) = &config.file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    match serde_json::from_slice::<HashMap<String, Vec<MissedCall>>>(&bytes) {
                        Ok(map) => {
                            for (user, calls) in map {
                                if let Ok(user) = UserId::parse(&user) {
                                    by_user.insert(user, calls.into());
                                }
                            }
                        }
                        Err(e) => {
                            let aside = path.with_extension("json.corrupt");
                            warn!(path = %path.display(), error = %e, aside = %aside.display(), "missed-calls file is corrupt: moved aside, starting empty");
                            let _ = std::fs::rename(path, &aside);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(MissedError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let snapshot: HashMap<UserId, Vec<MissedCall>> = by_user
                .iter()
                .map(|(u, c)| (u.clone(), c.iter().cloned().collect()))
                .collect();
            writer_task = Some(tokio::spawn(write_loop(path.clone(), snapshot, rx)));
            writer = Some(tx);
            info!(path = %path.display(), users = by_user.len(), "missed calls loaded");
        }
        let mut store = MissedCalls {
            config,
            by_user,
            writer,
            writer_task,
        };
        let users: Vec<UserId> = store.by_user.keys().cloned().collect();
        for u in users {
            store.prune(&u);
        }
        Ok(store)
    }

    /// Drops what is too old or over the bound; saves if anything changed.
    fn prune(&mut self, user: &UserId) {
        let oldest = now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
        let Some(list) = self.by_user.get_mut(user) else {
            return;
        };
        let before = list.len();
        list.retain(|c| c.at_ms >= oldest);
        while list.len() > self.config.per_user {
            list.pop_front();
        }
        if list.len() != before {
            self.save(user);
        }
    }

    fn save(&mut self, user: &UserId) {
        let calls: Vec<MissedCall> = match self.by_user.get(user) {
            Some(list) if !list.is_empty() => list.iter().cloned().collect(),
            _ => {
                self.by_user.remove(user);
                Vec::new()
            }
        };
        if let Some(w) = &self.writer {
            let _ = w.send((user.clone(), calls));
        }
    }

    /// Takes in missed calls kept elsewhere (the cluster's copy in Redis).
    pub(crate) fn seed(&mut self, snapshot: Vec<(UserId, Vec<MissedCall>)>) {
        for (user, calls) in snapshot {
            for call in calls {
                self.remember(&user, call);
            }
        }
    }

    /// Adds a missed call another node recorded (no log line, no duplicates).
    pub(crate) fn remember(&mut self, user: &UserId, call: MissedCall) {
        let list = self.by_user.entry(user.clone()).or_default();
        if list.iter().any(|c| c.invitation_id == call.invitation_id) {
            return;
        }
        list.push_back(call);
        self.prune(user);
        self.save(user);
    }

    pub(crate) fn record(&mut self, user: &UserId, call: MissedCall) {
        info!(%user, invitation = %call.invitation_id, caller = %call.caller, reason = ?call.reason, "missed call recorded");
        self.by_user
            .entry(user.clone())
            .or_default()
            .push_back(call);
        self.prune(user);
        self.save(user);
    }

    /// The user's missed calls, oldest first (pruned by age first).
    pub(crate) fn of(&mut self, user: &UserId) -> Vec<MissedCall> {
        self.prune(user);
        self.by_user
            .get(user)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops the writer once it has saved every change.
    pub(crate) async fn close(&mut self) {
        self.writer = None;
        if let Some(task) = self.writer_task.take() {
            let _ = task.await;
        }
    }

    pub(crate) fn clear(&mut self, user: &UserId, ids: &[InvitationId]) {
        let Some(list) = self.by_user.get_mut(user) else {
            return;
        };
        let before = list.len();
        list.retain(|c| !ids.contains(&c.invitation_id));
        if list.len() != before {
            info!(%user, cleared = before - list.len(), "missed calls cleared");
            self.save(user);
        }
    }
}

/// Keeps the file in step with the store, one atomic rewrite per batch of changes.
async fn write_loop(
    path: PathBuf,
    mut all: HashMap<UserId, Vec<MissedCall>>,
    mut rx: mpsc::UnboundedReceiver<(UserId, Vec<MissedCall>)>,
) {
    while let Some((user, calls)) = rx.recv().await {
        let mut apply = |user: UserId, calls: Vec<MissedCall>| {
            if calls.is_empty() {
                all.remove(&user);
            } else {
                all.insert(user, calls);
            }
        };
        apply(user, calls);
        while let Ok((user, calls)) = rx.try_recv() {
            apply(user, calls);
        }
        let body: HashMap<&str, &Vec<MissedCall>> =
            all.iter().map(|(u, c)| (u.as_str(), c)).collect();
        let text = serde_json::to_vec_pretty(&body).unwrap_or_default();
        let path2 = path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path2, &text)).await;
        if let Ok(Err(e)) = written {
            warn!(path = %path.display(), error = %e, "cannot save missed calls");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
