//! Opening connections: the first one with its `login` (which starts the
//! driver), and the later ones a resume goes over, with TLS for `wss://`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use callinvite_protocol::session::{ClientSession, Config, LOGIN_REF};
use callinvite_protocol::wire::encode;
use callinvite_protocol::{ClientMessage, ErrorCode, ServerMessage, UserId};

use super::invitations::Invitations;
use super::{Command, Driver, Ws};
use crate::client::{LoginOptions, SessionInfo};
use crate::error::ClientError;
use crate::event::{ConnectionReason, ConnectionState, Event, EventStream};

/// Connects, logs in, and spawns the driver.
/// The WebSocket's settings: tungstenite zero-fills its read buffer up to
/// `read_buffer_size` before every read, and its 128 KiB default made that
/// the largest cost of a busy client (the load tool measured 39 % of its
/// CPU); our frames are at most a few KiB (8 KiB content plus JSON), and a
/// larger one just takes more reads.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

pub(crate) async fn start(
    options: LoginOptions,
    user: UserId,
) -> Result<(mpsc::UnboundedSender<Command>, SessionInfo, EventStream), ClientError> {
    let url = options.url.clone();
    let connector = if url.starts_with("wss://") {
        Some(tls_connector(&options)?)
    } else {
        None
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        options.url.as_str(),
        Some(ws_config()),
        true,
        connector.clone(),
    );
    let (mut ws, _) = match timeout(options.login_timeout, connect).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            return Err(ClientError::Connect {
                url,
                reason: e.to_string(),
            })
        }
        Err(_) => return Err(ClientError::Timeout(options.login_timeout)),
    };
    let login = ClientMessage::Login {
        req: Some(LOGIN_REF),
        user: user.to_string(),
        token: options.token.clone(),
    };
    ws.send(Message::text(encode(&login)))
        .await
        .map_err(|e| ClientError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let answer = timeout(options.login_timeout, async {
        while let Some(frame) = ws.next().await {
            let Ok(Message::Text(text)) = frame else {
                continue;
            };
            match serde_json::from_str::<ServerMessage>(text.as_str()) {
                Ok(ServerMessage::LoginOk {
                    user,
                    device_id,
                    auth,
                    timers,
                    session,
                    ice_servers,
                    ..
                }) => {
                    let user = UserId::parse(&user)
                        .map_err(|e| ClientError::api(ErrorCode::Internal, e.to_string()))?;
                    return Ok((
                        SessionInfo {
                            user,
                            device_id,
                            auth,
                            timers,
                            ice_servers,
                        },
                        session,
                    ));
                }
                Ok(ServerMessage::Error { code, message, .. }) => {
                    return Err(ClientError::Login { code, message })
                }
                _ => continue,
            }
        }
        Err(ClientError::Connect {
            url: url.clone(),
            reason: "the server closed the connection during login".into(),
        })
    })
    .await
    .map_err(|_| ClientError::Timeout(options.login_timeout))??;
    let (answer, secret) = answer;

    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, rx) = mpsc::unbounded_channel();
    let _ = events.send(Event::ConnectionStateChanged {
        state: ConnectionState::Connected,
        reason: ConnectionReason::LoginSuccess,
    });
    // Without resume (the app's choice, or a server that offers none) a
    // drop ends the session.
    let resume_window = match options.resume {
        true => Duration::from_millis(answer.timers.resume_ms),
        false => Duration::ZERO,
    };
    let heartbeat = Duration::from_millis(answer.timers.heartbeat_ms.max(1000));
    let driver = Driver {
        ws: Some(ws),
        options,
        connector,
        session: ClientSession::new(Config::new(secret, resume_window, heartbeat)),
        invitations: Invitations::new(events),
        heartbeat,
    };
    tokio::spawn(driver.run(command_rx));
    Ok((commands, answer, EventStream { rx }))
}

/// A new connection for a resume, opened after `wait`. Returns it with the
/// deadline for the answer to `resume`: the connection and that answer
/// together get the login timeout.
pub(super) fn open_after(
    options: &LoginOptions,
    connector: Option<Connector>,
    wait: Duration,
) -> impl Future<Output = Result<(Ws, Instant), String>> + Send + 'static {
    let url = options.url.clone();
    let limit = options.login_timeout;
    async move {
        tokio::time::sleep(wait).await;
        let deadline = Instant::now() + limit;
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            Some(ws_config()),
            true,
            connector,
        );
        match timeout_at(deadline, connect).await {
            Ok(Ok((ws, _))) => Ok((ws, deadline)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// TLS for `wss://`: the system's root certificates plus the optional CA file.
fn tls_connector(options: &LoginOptions) -> Result<Connector, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &options.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientError::Connect {
                url: options.url.clone(),
                reason: format!("cannot read CA file {}: {e}", path.display()),
            })?;
        for cert in certs {
            roots.add(cert).map_err(|e| ClientError::Connect {
                url: options.url.clone(),
                reason: format!("bad CA certificate in {}: {e}", path.display()),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Connect {
        url: options.url.clone(),
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}
