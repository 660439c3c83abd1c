//! The built-in server: started on this computer's port (or joined when
//! another instance or profile runs it), its secret kept in a file shared by
//! the account's profiles, and taken over when the instance that ran it
//! quits.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tauri::{AppHandle, Manager, Runtime};
use tracing::{info, warn};

use callinvite_server::CancellationToken;

use super::AppState;
use crate::error::{CommandError, ErrorKind};

/// Starts the built-in server on `port`, or finds one already there (another
/// instance or profile runs it). Returns the URL and a label, and the token
/// that stops the server if this instance started it.
pub(super) async fn ensure_embedded(
    port: u16,
    lan: bool,
    data_dir: &Path,
    secret: &[u8],
) -> Result<(String, String, Option<CancellationToken>), CommandError> {
    let ip = if lan {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::LOCALHOST
    };
    let url = format!("ws://127.0.0.1:{port}");
    match tokio::net::TcpListener::bind(SocketAddr::from((ip, port))).await {
        Ok(listener) => {
            let token = CancellationToken::new();
            let mut config = callinvite_server::Config::default();
            // Missed calls of users who are offline survive a restart of the app.
            config.missed.file = Some(data_dir.join("server-missed-calls.redb"));
            // On this computer only, logins need a token from the account's
            // secret: other local accounts, and web pages, cannot sign in as
            // the user and answer their calls. Shared on the LAN, the server
            // is open to the other computers (Settings says so).
            if !lan {
                config.secret = Some(secret.to_vec());
            }
            let stop = token.clone();
            tokio::spawn(async move {
                if let Err(e) = callinvite_server::run(listener, config, stop).await {
                    warn!(error = %e, "built-in server stopped");
                }
            });
            let label = if lan {
                format!("embedded, shared on the LAN (port {port})")
            } else {
                format!("embedded (127.0.0.1:{port})")
            };
            info!(%label, "started the built-in server");
            Ok((url, label, Some(token)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            info!(port, "joining the built-in server another instance runs");
            Ok((url, format!("embedded (127.0.0.1:{port}, shared)"), None))
        }
        Err(e) => Err(CommandError::new(
            ErrorKind::Connect,
            format!("cannot start the built-in server on port {port}: {e}"),
        )),
    }
}

/// Why the built-in server's secret (see [`embedded_secret`]) could not be
/// read or made; without it the app cannot sign in to its built-in server.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedSecretError {
    #[error(
        "cannot read the built-in server's secret {}: {source} (check the file's permissions, or delete it to have a new one made)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot create {} for the built-in server's secret: {source} (check that the folder is writable)",
        dir.display()
    )]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write the built-in server's secret {}: {source} (is the disk full or the folder read-only?)",
        path.display()
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The built-in server's secret, from `path`; made (32 random bytes, hex,
/// readable by this account only) if there is none yet. Every profile of the
/// account reads the same file, so they can sign in to each other's server.
pub fn embedded_secret(path: &Path) -> Result<Vec<u8>, EmbeddedSecretError> {
    use std::io::Write;
    match std::fs::read(path) {
        Ok(bytes) if bytes.trim_ascii().len() >= 16 => return Ok(bytes.trim_ascii().to_vec()),
        Ok(_) => {
            warn!(file = %path.display(), "the built-in server's secret is too short: making a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EmbeddedSecretError::Read {
                path: path.to_owned(),
                source,
            })
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EmbeddedSecretError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = path.with_extension("tmp");
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| EmbeddedSecretError::Write { path, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(write_error(&tmp))?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_error(&tmp))?;
    // Another profile may have made one meanwhile: keep whichever is there.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            return embedded_secret(path);
        }
        Err(_) => {
            std::fs::rename(&tmp, path).map_err(write_error(path))?;
        }
    }
    let _ = std::fs::remove_file(&tmp);
    info!(file = %path.display(), "made the built-in server's secret");
    Ok(secret.into_bytes())
}

/// If this profile uses the built-in server and does not run it, tries to
/// start it (the port is free when the instance that ran it has quit). The
/// client's next resume then reaches the new server, which no longer has the
/// session: it ends, and the event pump signs in again at once.
pub(super) async fn take_over_embedded<R: Runtime>(app: AppHandle<R>) {
    let state = app.state::<AppState>();
    let (settings, runs_it) = {
        let inner = state.inner.lock().await;
        (inner.settings.clone(), inner.embedded.is_some())
    };
    if settings.server.trim() != "embedded" || runs_it {
        return;
    }
    let file = state.embedded_secret_file.clone();
    let secret = match tauri::async_runtime::spawn_blocking(move || embedded_secret(&file)).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    // Give a server that is merely restarting its listener a moment first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match ensure_embedded(
        state.options.embedded_port,
        settings.share_on_lan,
        state.store.dir(),
        &secret,
    )
    .await
    {
        Ok((_, label, Some(token))) => {
            info!(%label, "took over the built-in server (the instance that ran it is gone)");
            let mut inner = state.inner.lock().await;
            inner.server_label = label.clone();
            if let Some((old, _)) = inner.embedded.replace((token, label)) {
                old.cancel();
            }
        }
        Ok(_) => {} // Still there, or another profile was quicker.
        Err(e) => warn!(error = %e.message, "cannot take over the built-in server"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_and_a_file_that_cannot_be_read_says_what_to_do() {
        let dir = callinvite_test_support::temp_dir("secret");
        let path = dir.path().join("profiles").join("embedded-server.secret");
        let made = embedded_secret(&path).expect("made, with its folder");
        assert_eq!(made.len(), 64, "32 random bytes, hex");
        assert_eq!(
            embedded_secret(&path).unwrap(),
            made,
            "read back, not made again"
        );

        // A folder where the file should be: not made over, and the user is told what to do.
        let blocked = dir.path().join("blocked.secret");
        std::fs::create_dir(&blocked).unwrap();
        let e = embedded_secret(&blocked).unwrap_err();
        assert!(matches!(e, EmbeddedSecretError::Read { .. }), "{e:?}");
        assert!(
            e.to_string().contains("check the file's permissions"),
            "{e}"
        );
        let e = CommandError::from(e);
        assert_eq!(e.kind, ErrorKind::Connect);
    }
}
