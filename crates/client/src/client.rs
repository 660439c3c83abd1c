//! The [`Client`] handle: log in, then use the invitation manager calls.
//!
//! All calls go to one background task (the driver) that owns the
//! connection, so calls may be made from any task, and their effects are
//! ordered. Each call returns once the server has answered it; the outcome of
//! an invitation arrives later as [`crate::Event`]s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use callinvite_protocol::limits::{MAX_CONTENT_BYTES, MAX_RESPONSE_BYTES};
use callinvite_protocol::wire::{AuthMode, PresenceEntry, TimersMs};
use callinvite_protocol::{DeviceId, ErrorCode, InvitationId, UserId};

use crate::driver::{self, Answer, Command};
use crate::error::ClientError;
use crate::event::EventStream;

/// How long a request may wait for the server's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// `ws://host:port` (or `wss://` once TLS is enabled).
    pub url: String,
    pub user: String,
    /// Required when the server has a secret.
    pub token: Option<String>,
    /// How long to wait for the WebSocket and the login answer.
    pub login_timeout: Duration,
    /// For `wss://`: a PEM file of extra CA certificates to trust besides the
    /// system's (a private CA, or a self-signed server certificate).
    pub ca_file: Option<std::path::PathBuf>,
    /// Reconnect and resume the session after a dropped connection (default
    /// true). When false, a drop ends the session at once.
    pub resume: bool,
}

impl LoginOptions {
    pub fn new(url: impl Into<String>, user: impl Into<String>) -> Self {
        LoginOptions {
            url: url.into(),
            user: user.into(),
            token: None,
            login_timeout: Duration::from_secs(10),
            ca_file: None,
            resume: true,
        }
    }
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
}

/// What the server said at login. It is not updated afterwards: after
/// [`crate::ConnectionReason::SessionMoved`] the session is another device
/// (its id is in no event; nothing in this API takes a device id).
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub user: UserId,
    pub device_id: DeviceId,
    pub auth: AuthMode,
    pub timers: TimersMs,
    /// STUN/TURN servers for calls' media as the login handed them out
    /// (TURN credentials expire: [`Client::ice_servers`] gets fresh ones).
    pub ice_servers: Vec<callinvite_protocol::IceServer>,
}

/// An invitation this device creates (Agora's `LocalInvitation`). Create it
/// with [`Client::create_local_invitation`], optionally add content, send it
/// once with [`Client::send_local_invitation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInvitation {
    pub(crate) handle: u64,
    callee: UserId,
    content: String,
}

impl LocalInvitation {
    /// Sets the text sent with the invitation (≤ 8 KiB UTF-8), e.g. a channel name.
    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }
    pub fn callee(&self) -> &UserId {
        &self.callee
    }
    pub fn content(&self) -> &str {
        &self.content
    }
    /// This client's handle, as reported in [`crate::LocalInvitationInfo::handle`].
    pub fn handle(&self) -> u64 {
        self.handle
    }
}

/// A logged-in session. Cheap to clone; the session ends at [`Client::logout`]
/// or when the connection is lost.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    session: Arc<SessionInfo>,
    next_handle: Arc<AtomicU64>,
}

impl Client {
    /// Connects and logs in. Returns the client and its event stream.
    pub async fn login(options: LoginOptions) -> Result<(Client, EventStream), ClientError> {
        let user = UserId::parse(&options.user)
            .map_err(|e| ClientError::api(ErrorCode::InvalidArgument, format!("user id: {e}")))?;
        let (commands, session, events) = driver::start(options, user).await?;
        let client = Client {
            commands,
            session: Arc::new(session),
            next_handle: Arc::new(AtomicU64::new(1)),
        };
        Ok((client, events))
    }

    pub fn session(&self) -> &SessionInfo {
        &self.session
    }
    pub fn user(&self) -> &UserId {
        &self.session.user
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| ClientError::NotLoggedIn)?;
        // A safety net: the server answers every request, and a session that
        // ends fails them all, but no call of this API may wait forever.
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(answer) => answer.map_err(|_| ClientError::NotLoggedIn)?,
            Err(_) => Err(ClientError::Timeout(REQUEST_TIMEOUT)),
        }
    }

    /// Agora's `createLocalCallInvitation`: checks the callee id (and that it is
    /// not yourself); nothing is sent yet.
    pub fn create_local_invitation(&self, callee: &str) -> Result<LocalInvitation, ClientError> {
        let callee = UserId::parse(callee)
            .map_err(|e| ClientError::api(ErrorCode::InvalidArgument, format!("callee: {e}")))?;
        if callee == self.session.user {
            return Err(ClientError::api(
                ErrorCode::InvalidArgument,
                "you cannot call yourself",
            ));
        }
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        Ok(LocalInvitation {
            handle,
            callee,
            content: String::new(),
        })
    }

    /// Agora's `sendLocalInvitation`. Returns the server's invitation id once
    /// the server has it; `already_sent` if this invitation was sent before.
    pub async fn send_local_invitation(
        &self,
        invitation: &LocalInvitation,
    ) -> Result<InvitationId, ClientError> {
        if invitation.content.len() > MAX_CONTENT_BYTES {
            return Err(ClientError::api(
                ErrorCode::InvalidArgument,
                format!(
                    "content is {} bytes; the limit is {MAX_CONTENT_BYTES}",
                    invitation.content.len()
                ),
            ));
        }
        let inv = invitation.clone();
        self.call(|reply| Command::Send {
            invitation: inv,
            reply,
        })
        .await
    }

    /// Agora's `cancelLocalInvitation`. May be called while the send is still
    /// in flight: the cancel then follows as soon as the server has the
    /// invitation. The outcome arrives as `LocalInvitationCanceled` (or
    /// whatever happened first, e.g. `LocalInvitationAccepted`).
    pub async fn cancel_local_invitation(
        &self,
        invitation: &LocalInvitation,
    ) -> Result<(), ClientError> {
        let handle = invitation.handle;
        self.call(|reply| Command::Cancel { handle, reply }).await
    }

    /// Agora's `acceptRemoteInvitation`, with an optional `response` (≤ 8 KiB).
    pub async fn accept_remote_invitation(
        &self,
        id: &InvitationId,
        response: &str,
    ) -> Result<(), ClientError> {
        check_response(response)?;
        let (id, response) = (id.clone(), response.to_owned());
        self.call(|reply| Command::Answer {
            id,
            answer: Answer::Accept { response },
            reply,
        })
        .await
    }

    /// Agora's `refuseRemoteInvitation`, with an optional `response`; `busy`
    /// tells the caller this is a busy refusal.
    pub async fn refuse_remote_invitation(
        &self,
        id: &InvitationId,
        response: &str,
        busy: bool,
    ) -> Result<(), ClientError> {
        check_response(response)?;
        let (id, response) = (id.clone(), response.to_owned());
        self.call(|reply| Command::Answer {
            id,
            answer: Answer::Refuse { response, busy },
            reply,
        })
        .await
    }

    /// Ends an accepted call; both sides get `CallEnded`. Works from any
    /// device of either party.
    pub async fn hang_up(&self, id: &InvitationId) -> Result<(), ClientError> {
        let id = id.clone();
        self.call(|reply| Command::Hangup { id, reply }).await
    }

    /// Sends a media signal (SDP, ICE candidate) to the other device of the
    /// established call `id`; it arrives there as [`crate::Event::MediaSignal`].
    /// Answered `ok` once relayed; `not_in_call`, `already_ended`,
    /// `invalid_argument` (a malformed signal) or `rate_limited` otherwise.
    pub async fn send_media_signal(
        &self,
        id: &InvitationId,
        signal: callinvite_protocol::MediaSignal,
    ) -> Result<(), ClientError> {
        signal
            .check()
            .map_err(|m| ClientError::api(ErrorCode::InvalidArgument, m))?;
        let id = id.clone();
        self.call(|reply| Command::SendMedia { id, signal, reply })
            .await
    }

    /// Fresh STUN/TURN servers (new TURN credentials) from the server.
    pub async fn ice_servers(&self) -> Result<Vec<callinvite_protocol::IceServer>, ClientError> {
        self.call(|reply| Command::GetIceServers { reply }).await
    }

    /// Online state of up to 64 users.
    pub async fn query_presence(&self, users: &[&str]) -> Result<Vec<PresenceEntry>, ClientError> {
        let users = users.iter().map(|s| s.to_string()).collect();
        self.call(|reply| Command::QueryPresence { users, reply })
            .await
    }

    /// Follow users' presence (≤ 512 in all): returns the snapshot, then
    /// changes arrive as `PresenceChanged` events.
    pub async fn subscribe_presence(
        &self,
        users: &[&str],
    ) -> Result<Vec<PresenceEntry>, ClientError> {
        let users = users.iter().map(|s| s.to_string()).collect();
        self.call(|reply| Command::SubscribePresence { users, reply })
            .await
    }

    pub async fn unsubscribe_presence(&self, users: &[&str]) -> Result<(), ClientError> {
        let users = users.iter().map(|s| s.to_string()).collect();
        self.call(|reply| Command::UnsubscribePresence { users, reply })
            .await
    }

    /// Forgets these missed calls on the server, for every device of this user.
    pub async fn clear_missed_calls(&self, ids: &[InvitationId]) -> Result<(), ClientError> {
        let ids = ids.to_vec();
        self.call(|reply| Command::ClearMissedCalls { ids, reply })
            .await
    }

    /// Ends the session. Pending invitations end with `not_logged_in` here
    /// and a defined reason on the other side.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call(|reply| Command::Logout { reply }).await
    }
}

fn check_response(response: &str) -> Result<(), ClientError> {
    if response.len() > MAX_RESPONSE_BYTES {
        return Err(ClientError::api(
            ErrorCode::InvalidArgument,
            format!(
                "response is {} bytes; the limit is {MAX_RESPONSE_BYTES}",
                response.len()
            ),
        ));
    }
    Ok(())
}
