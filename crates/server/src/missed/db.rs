//! The missed calls on disk: the redb database (one row per call), the
//! import of the older JSON file, and the writer task that applies each
//! batch of changes in one transaction off the hub's task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use tokio::sync::mpsc;
use tracing::warn;

use callinvite_protocol::wire::MissedCall;
use callinvite_protocol::UserId;

use super::{Change, MissedError};

/// One row per missed call: (callee, invitation id) → the call as JSON.
const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("missed_calls");

/// The database's page cache (redb's default is 1 GiB, which a flood of
/// writes would fill): the store in memory answers every read, so the cache
/// only serves writes.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Opens (or creates) the database; one that is not a database is moved
/// aside (`.corrupt`) and a new one created.
pub(super) fn open_db(path: &Path) -> Result<redb::Database, MissedError> {
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
pub(super) fn read_db(db: &redb::Database) -> Result<Vec<(UserId, MissedCall)>, String> {
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
pub(super) fn write_db(db: &redb::Database, changes: &[Change]) -> Result<(), Box<redb::Error>> {
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
pub(super) fn read_json(path: &Path) -> Result<Option<Vec<(UserId, MissedCall)>>, MissedError> {
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

/// Keeps the database in step with the store, one transaction per batch of changes.
pub(super) async fn write_loop(
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
