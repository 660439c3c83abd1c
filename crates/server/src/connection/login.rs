//! Logging a connection in: the token check (and the failed-login limits of
//! the connection and its address), then the hub's `login`; or a `resume`
//! handed to the hub, waited for as long as a cluster may take.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::timeout;
use tracing::{info, warn};

use callinvite_protocol::{ErrorCode, ServerMessage, UserId};

use crate::hub::{sending, Command, LoggedIn};

use super::Conn;

impl Conn {
    pub(super) async fn login(&mut self, req: Option<u64>, user: String, token: Option<String>) {
        let user = match UserId::parse(&user) {
            Ok(u) => u,
            Err(e) => {
                self.config.metrics.login("invalid_argument");
                self.reply(ServerMessage::error(
                    req,
                    ErrorCode::InvalidArgument,
                    format!("user id: {e}"),
                ))
                .await;
                return;
            }
        };
        // The token is checked here, before the hub: a failed login counts
        // against this connection and its address, never against the user id
        // it names, so nobody can lock a user out by naming them. The hub
        // counts successful logins per user id.
        if let Some(secret) = &self.config.secret {
            let checked = match token.as_deref() {
                None | Some("") => Err(crate::auth::TokenError::Missing),
                Some(t) => crate::auth::verify(secret, user.as_str(), t),
            };
            if let Err(e) = checked {
                return self.login_failed(req, &user, e).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Login {
            user: user.clone(),
            req,
            conn: self.handle.clone(),
            reply,
        };
        if !self.to_hub(cmd, req).await {
            return;
        }
        if let Ok(Some(device)) = answer.await {
            self.session = Some(LoggedIn { device, user });
        }
    }

    /// Answers a login whose token was refused, counting it against this
    /// connection and its address; past either limit, the connection is closed.
    async fn login_failed(&mut self, req: Option<u64>, user: &UserId, e: crate::auth::TokenError) {
        self.failed_logins = self.failed_logins.saturating_add(1);
        let per_connection = self.config.failed_logins_per_connection;
        let (over, first) = self.permit.login_failed();
        let address = self.permit.address();
        if over {
            // The address has failed too often: its failing logins are told
            // so, not why they failed, and their connections closed.
            if first {
                warn!(%address, limit = self.permit.failed_per_address(), %user, "too many failed logins from one address: refusing its failing logins for the rest of the minute");
            }
            self.config.metrics.login("too_often");
            let wait = self.permit.window_left();
            self.close = Some("too many failed logins");
            self.reply(ServerMessage::error(
                req,
                ErrorCode::TooOften,
                format!(
                    "more than {} failed logins from your address in a minute; try again in {wait} s with a valid token",
                    self.permit.failed_per_address()
                ),
            ))
            .await;
            return;
        }
        info!(peer = %self.peer, %user, error = %e, "login refused");
        self.config.metrics.login(e.code().as_str());
        self.reply(ServerMessage::error(req, e.code(), e.to_string()))
            .await;
        if per_connection > 0 && self.failed_logins >= per_connection {
            info!(peer = %self.peer, failed = self.failed_logins, "too many failed logins on one connection: closing it");
            self.close = Some("too many failed logins");
        }
    }

    /// Hands a login or resume to the hub; when the hub is gone (the server
    /// is shutting down), answers `rejected` instead.
    async fn to_hub(&self, cmd: Command, req: Option<u64>) -> bool {
        if sending(&self.hub, cmd).await {
            return true;
        }
        self.reply(ServerMessage::error(
            req,
            ErrorCode::Rejected,
            "the server is shutting down",
        ))
        .await;
        false
    }

    pub(super) async fn resume(&mut self, req: Option<u64>, session: String, last_seq: u64) {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Resume {
            session,
            last_seq,
            req,
            conn: self.handle.clone(),
            reply,
        };
        if !self.to_hub(cmd, req).await {
            return;
        }
        // A session on another node is answered through the cluster, or, if
        // that node died, taken over here once it is found dead (within a
        // node timeout and a heartbeat); a few seconds more for Redis.
        let wait = self
            .config
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(5), |c| {
                c.node_timeout + c.heartbeat_every + Duration::from_secs(5)
            });
        let mut answer = answer;
        let answered = match timeout(wait, &mut answer).await {
            Ok(a) => a,
            Err(_) => {
                // Too long: the hub gives up on it (and answers the client),
                // unless it settled it just now; either way it says which.
                sending(
                    &self.hub,
                    Command::ResumeAbandoned {
                        conn: self.handle.id,
                    },
                )
                .await;
                match timeout(Duration::from_secs(5), answer).await {
                    Ok(a) => a,
                    Err(_) => {
                        self.reply(ServerMessage::error(
                            req,
                            ErrorCode::SessionExpired,
                            "the server did not settle this resume; log in again",
                        ))
                        .await;
                        return;
                    }
                }
            }
        };
        if let Ok(Some(session)) = answered {
            self.session = Some(session);
        }
    }
}
