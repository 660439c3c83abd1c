//! The messages on the wire: one JSON object per WebSocket text frame, with a
//! `type` field naming the message. Requests that expect a reply carry a
//! client-chosen number `ref`, echoed in the reply (`ok`, `invite_ok`,
//! `presence`, `login_ok` or `error`). Unknown fields are ignored so that
//! newer clients can talk to older servers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codes::{CallEndReason, ErrorCode, FailureReason};
use crate::media::{IceServer, MediaSignal};

/// The server's id of one invitation (a UUID in text form). Opaque to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvitationId(pub String);

impl fmt::Display for InvitationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server's id of one logged-in connection ("device"). A user may have many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u64);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// What a client acknowledges with an `ack` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOf {
    /// The `invitation` message reached the app (the callee "received" it).
    Invitation,
    /// The `canceled` message reached the app.
    Canceled,
}

/// Messages a client sends. User ids are plain strings here; the server
/// validates them and answers `invalid_argument` with the rule that failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Login {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Logout {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    Invite {
        #[serde(rename = "ref")]
        req: u64,
        callee: String,
        #[serde(default)]
        content: String,
    },
    Cancel {
        #[serde(rename = "ref")]
        req: u64,
        invitation_id: InvitationId,
    },
    Accept {
        #[serde(rename = "ref")]
        req: u64,
        invitation_id: InvitationId,
        #[serde(default)]
        response: String,
    },
    Refuse {
        #[serde(rename = "ref")]
        req: u64,
        invitation_id: InvitationId,
        #[serde(default)]
        response: String,
        #[serde(default)]
        busy: bool,
    },
    Hangup {
        #[serde(rename = "ref")]
        req: u64,
        invitation_id: InvitationId,
    },
    Ack {
        invitation_id: InvitationId,
        of: AckOf,
    },
    QueryPresence {
        #[serde(rename = "ref")]
        req: u64,
        users: Vec<String>,
    },
    SubscribePresence {
        #[serde(rename = "ref")]
        req: u64,
        users: Vec<String>,
    },
    UnsubscribePresence {
        #[serde(rename = "ref")]
        req: u64,
        users: Vec<String>,
    },
    /// Instead of `login` on a new connection: continue the session named by
    /// `session` (from `login_ok`). `last_seq` is the highest `seq` this client
    /// has processed; the server replays every later message, then carries on.
    Resume {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        session: String,
        last_seq: u64,
    },
    /// Cumulative acknowledgement: every message up to `seq` was processed, so
    /// the server may forget them (it keeps unacknowledged ones for a resume).
    Seen { seq: u64 },
    /// The user has seen these missed calls: the server forgets them (for
    /// every device of the user).
    ClearMissedCalls {
        #[serde(rename = "ref")]
        req: u64,
        invitation_ids: Vec<InvitationId>,
    },
    /// Media negotiation for an established call, relayed to the other
    /// device of the call (see [`crate::media`]).
    Media {
        #[serde(rename = "ref")]
        req: u64,
        invitation_id: InvitationId,
        signal: MediaSignal,
    },
    /// Asks for fresh STUN/TURN servers (TURN credentials expire).
    GetIceServers {
        #[serde(rename = "ref")]
        req: u64,
    },
}

impl ClientMessage {
    /// The request's `ref`, if it has one (for error replies).
    pub fn req(&self) -> Option<u64> {
        match self {
            ClientMessage::Login { req, .. }
            | ClientMessage::Logout { req }
            | ClientMessage::Resume { req, .. } => *req,
            ClientMessage::Invite { req, .. }
            | ClientMessage::Cancel { req, .. }
            | ClientMessage::Accept { req, .. }
            | ClientMessage::Refuse { req, .. }
            | ClientMessage::Hangup { req, .. }
            | ClientMessage::QueryPresence { req, .. }
            | ClientMessage::SubscribePresence { req, .. }
            | ClientMessage::UnsubscribePresence { req, .. }
            | ClientMessage::ClearMissedCalls { req, .. }
            | ClientMessage::Media { req, .. }
            | ClientMessage::GetIceServers { req } => Some(*req),
            ClientMessage::Ack { .. } | ClientMessage::Seen { .. } => None,
        }
    }
}

/// Every `type` a client may send, for telling "unknown type" from "bad fields".
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "login",
    "logout",
    "invite",
    "cancel",
    "accept",
    "refuse",
    "hangup",
    "ack",
    "query_presence",
    "subscribe_presence",
    "unsubscribe_presence",
    "resume",
    "seen",
    "clear_missed_calls",
    "media",
    "get_ice_servers",
];

/// How the server checks logins; reported in `login_ok` and in the server log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No secret configured: any valid user id may log in (development).
    Open,
    /// A token signed with the server's secret is required.
    Token,
}

/// The online state of one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: String,
    pub online: bool,
}

/// How a missed call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedReason {
    /// The caller canceled it.
    Canceled,
    /// No device of the callee came online within the offline window.
    PeerOffline,
    /// It was delivered but not acknowledged in time.
    NoResponse,
    /// Nobody answered within the ring timeout.
    Expired,
    /// The server shut down while it rang.
    ServerShutdown,
}

/// An invitation that ended unanswered while the callee had no device
/// online. Kept by the server and delivered at the callee's next login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedCall {
    pub invitation_id: InvitationId,
    pub caller: String,
    pub content: String,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub reason: MissedReason,
}

/// The server's timers, reported in `login_ok` so a client can show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimersMs {
    pub offline_ms: u64,
    pub no_response_ms: u64,
    pub ring_ms: u64,
    pub heartbeat_ms: u64,
    /// How long the server keeps a session whose connection dropped, waiting
    /// for a `resume` (0: sessions end with their connection).
    #[serde(default)]
    pub resume_ms: u64,
}

/// Messages the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Reply to `login`.
    LoginOk {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        user: String,
        device_id: DeviceId,
        auth: AuthMode,
        timers: TimersMs,
        /// The secret that lets a new connection `resume` this session.
        #[serde(default)]
        session: String,
        /// STUN/TURN servers for calls' media (TURN credentials expire: ask
        /// again with `get_ice_servers`).
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    /// Reply to `resume`: the session continues on this connection. Every
    /// message with `seq` greater than the `last_seq` the client sent follows,
    /// in order, then new ones.
    Resumed {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        device_id: DeviceId,
        /// The highest request `ref` of this session the server has applied:
        /// requests with a higher `ref` never arrived and should be sent again.
        last_ref: u64,
        /// The `seq` of the last message the server has sent in this session.
        seq: u64,
    },
    /// Reply to `resume` when the server node that kept the session is gone
    /// (a cluster): this node took the session over as a new device of the
    /// same user, with a new `session` secret, its presence subscriptions
    /// kept, and `seq` starting again at 1. What the old node had not
    /// delivered is lost: the client ends the invitations and calls it had
    /// (their other parties saw the old device or node go), fails the
    /// requests it had not had answers to, and takes what rings from now on
    /// as new. Then `missed_calls`, invitations still ringing for the user,
    /// and the presence of the users it follows come, numbered from 1.
    SessionMoved {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        user: String,
        device_id: DeviceId,
        timers: TimersMs,
        session: String,
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    /// Reply to `get_ice_servers`: STUN/TURN servers with fresh credentials,
    /// valid for `ttl_ms`.
    IceServers {
        #[serde(rename = "ref")]
        req: u64,
        ice_servers: Vec<IceServer>,
        ttl_ms: u64,
    },
    /// Reply to `logout`, `cancel`, `accept`, `refuse`, `hangup`, `unsubscribe_presence`.
    Ok {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// A request failed (and changed nothing), or a frame could not be used.
    Error {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        code: ErrorCode,
        message: String,
    },
    /// Reply to `invite`: the invitation exists and is being delivered.
    InviteOk {
        #[serde(rename = "ref")]
        req: u64,
        invitation_id: InvitationId,
        /// Whether any device of the callee was online at send time. If not,
        /// the server waits up to the offline window for one to log in.
        callee_online: bool,
    },
    /// Reply to `query_presence` and `subscribe_presence` (the snapshot).
    Presence {
        #[serde(rename = "ref")]
        req: u64,
        users: Vec<PresenceEntry>,
    },
    /// A subscribed user went online or offline.
    PresenceChanged { user: String, online: bool },
    /// Calls this user missed while none of its devices was online, oldest
    /// first. Sent after `login_ok` until cleared with `clear_missed_calls`.
    MissedCalls { calls: Vec<MissedCall> },

    // ---- to the callee's devices ----
    /// A new invitation for this user. The client must answer with `ack` (`of: invitation`).
    Invitation {
        invitation_id: InvitationId,
        caller: String,
        content: String,
    },

    // ---- to the caller's device ----
    /// A callee device acknowledged the invitation: it is ringing.
    ReceivedByPeer { invitation_id: InvitationId },
    /// The callee accepted; the call is now established.
    Accepted {
        invitation_id: InvitationId,
        response: String,
    },
    /// The callee refused; `busy` says it was a busy refusal.
    Refused {
        invitation_id: InvitationId,
        response: String,
        busy: bool,
    },

    // ---- to either side ----
    /// Caller's cancel took effect. The callee's devices get it first and must
    /// `ack` it (`of: canceled`); then the caller gets it.
    Canceled { invitation_id: InvitationId },
    /// The invitation ended without an answer (see [`FailureReason`]).
    Failed {
        invitation_id: InvitationId,
        reason: FailureReason,
    },
    /// The server is shutting down: every invitation and call of this
    /// connection has been ended (`server_shutdown`), and the server closes the
    /// connection with 1001 next. Reconnect after a moment (to another node).
    GoingAway { reason: String },
    /// The other device of an established call sent a media signal.
    Media {
        invitation_id: InvitationId,
        /// The user who sent it (the other party of the call).
        from: String,
        signal: MediaSignal,
    },
    /// An accepted call ended. `by` names the user who hung up, if anyone did.
    CallEnded {
        invitation_id: InvitationId,
        reason: CallEndReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
}

impl ServerMessage {
    pub fn error(req: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            req,
            code,
            message: message.into(),
        }
    }
}

/// Why a text frame is not a usable client message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not a JSON object: {0}")]
    NotJson(String),
    #[error("message has no string field \"type\"")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("bad fields in {kind:?} message: {detail}")]
    BadFields { kind: String, detail: String },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            _ => ErrorCode::BadMessage,
        }
    }
}

/// Decodes one text frame. On error, also returns the frame's `ref` when it
/// could be read, so the error reply can name the request it belongs to.
pub fn decode_client(text: &str) -> Result<ClientMessage, (Option<u64>, DecodeError)> {
    // The common case, a valid message, in one pass; the slower path below
    // only runs to explain what is wrong with a bad one.
    if let Ok(msg) = serde_json::from_str::<ClientMessage>(text) {
        return Ok(msg);
    }
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // A number too large for an f64 (`1e400`) is valid JSON that
            // serde_json refuses to hold, even in a field nobody reads. Such a
            // number in an unknown field is ignored like the field; in a known
            // one the message is refused as before.
            if let Some(tamed) = tame_huge_numbers(text) {
                return decode_client(&tamed).map_err(|(req, err)| match err {
                    DecodeError::BadFields { kind, detail }
                        if detail.contains(HUGE_NUMBER_KEY)
                            || detail.starts_with("invalid type: map") =>
                    {
                        (
                            req,
                            DecodeError::BadFields {
                                kind,
                                detail: e.to_string(),
                            },
                        )
                    }
                    other => (req, other),
                });
            }
            return Err((None, DecodeError::NotJson(e.to_string())));
        }
    };
    let Some(obj) = value.as_object() else {
        return Err((None, DecodeError::NotJson("not an object".into())));
    };
    let req = obj.get("ref").and_then(|r| r.as_u64());
    let kind = match obj.get("type").and_then(|t| t.as_str()) {
        Some(k) => k.to_owned(),
        None => return Err((req, DecodeError::MissingType)),
    };
    if !CLIENT_MESSAGE_TYPES.contains(&kind.as_str()) {
        return Err((req, DecodeError::UnknownType(kind)));
    }
    serde_json::from_value(value).map_err(|e| {
        (
            req,
            DecodeError::BadFields {
                kind,
                detail: e.to_string(),
            },
        )
    })
}

/// The key of the object that stands in for a number too large to hold.
const HUGE_NUMBER_KEY: &str = "callinvite:number_out_of_range";

/// Replaces every number literal outside strings whose value does not fit an
/// f64 (such as `1e400`, which JSON allows and serde_json refuses) with a
/// small object no field of any message accepts. `None` when there is none
/// (the text is then left to serde_json and its precise error).
fn tame_huge_numbers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut i, mut copied, mut in_string) = (0, 0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                // Only ASCII was scanned, so these are char boundaries.
                let token = &text[start..i];
                if token.parse::<f64>().is_ok_and(f64::is_infinite) {
                    let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    o.push_str(&text[copied..start]);
                    o.push_str("{\"");
                    o.push_str(HUGE_NUMBER_KEY);
                    o.push_str("\":true}");
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    let mut out = out?;
    out.push_str(text.get(copied..).unwrap_or_default());
    Some(out)
}

/// Encodes a session message with its sequence number as the first field:
/// `{"seq":7,"type":...}`. Clients process each `seq` once, in order.
pub fn encode_seq(seq: u64, msg: &ServerMessage) -> String {
    // Write `{"seq":N` and then the message (`{"type":...}`) right behind it,
    // and turn the message's opening brace into the comma between the two:
    // one buffer, no copy.
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    let at = out.len();
    if serde_json::to_writer(&mut out, msg).is_err() || out.get(at) != Some(&b'{') {
        return encode(msg);
    }
    out[at] = b',';
    // Only ASCII was replaced in valid UTF-8 from serde_json.
    String::from_utf8(out).unwrap_or_else(|_| encode(msg))
}

/// Decodes one server frame, with its `seq` if it has one (messages about the
/// connection itself, such as `login_ok` or a rate-limit error, have none).
pub fn decode_server(text: &str) -> Result<(Option<u64>, ServerMessage), serde_json::Error> {
    let msg: ServerMessage = match serde_json::from_str(text) {
        Ok(msg) => msg,
        // Unknown fields are ignored in this direction too, whatever number they hold.
        Err(e) => match tame_huge_numbers(text) {
            Some(tamed) => serde_json::from_str(&tamed).map_err(|_| e)?,
            None => return Err(e),
        },
    };
    // `seq` comes first (see `encode_seq`): read its digits, no second parse.
    let seq = text.strip_prefix("{\"seq\":").and_then(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest[..digits].parse().ok()
    });
    Ok((seq, msg))
}

/// Encodes a message as the text of one frame.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no floats.
    serde_json::to_string(msg).unwrap_or_else(|e| {
        format!("{{\"type\":\"error\",\"code\":\"internal\",\"message\":\"encode: {e}\"}}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip_with_documented_spelling() {
        let m = ClientMessage::Refuse {
            req: 7,
            invitation_id: InvitationId("i1".into()),
            response: "in a meeting".into(),
            busy: true,
        };
        let text = encode(&m);
        assert_eq!(
            text,
            r#"{"type":"refuse","ref":7,"invitation_id":"i1","response":"in a meeting","busy":true}"#
        );
        assert_eq!(decode_client(&text), Ok(m));
    }

    #[test]
    fn optional_fields_default() {
        assert_eq!(
            decode_client(r#"{"type":"invite","ref":1,"callee":"bob"}"#),
            Ok(ClientMessage::Invite {
                req: 1,
                callee: "bob".into(),
                content: String::new()
            })
        );
        assert_eq!(
            decode_client(r#"{"type":"login","user":"a","extra":1}"#),
            Ok(ClientMessage::Login {
                req: None,
                user: "a".into(),
                token: None
            })
        );
    }

    #[test]
    fn unknown_fields_may_hold_numbers_too_large_for_a_double() {
        let login = ClientMessage::Login {
            req: None,
            user: "a".into(),
            token: None,
        };
        for text in [
            r#"{"type":"login","user":"a","x":1e400}"#,
            r#"{"type":"login","user":"a","x":-1E+400,"y":[1e999,{"z":2e308}]}"#,
            r#"{"x":1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000, "type":"login","user":"a"}"#,
        ] {
            assert_eq!(decode_client(text), Ok(login.clone()), "{text}");
        }
        // Strings that look like numbers, and escaped quotes, are left alone.
        assert_eq!(
            decode_client(r#"{"type":"login","user":"a","token":"1e400 \" 1e400","x":1e400}"#),
            Ok(ClientMessage::Login {
                req: None,
                user: "a".into(),
                token: Some("1e400 \" 1e400".into()),
            })
        );
        // Nested unknown fields too.
        let media =
            r#"{"type":"media","ref":3,"invitation_id":"i","signal":{"kind":"bye","x":1e400}}"#;
        assert!(decode_client(media).is_ok(), "{:?}", decode_client(media));
        // In a field that is read, such a number is still refused, with its position.
        let (req, e) = decode_client(r#"{"type":"invite","ref":1e400,"callee":"b"}"#).unwrap_err();
        assert_eq!(req, None);
        assert_eq!(e.code(), ErrorCode::BadMessage);
        assert!(e.to_string().contains("number out of range"), "{e}");
        let (req, e) = decode_client(r#"{"type":"invite","ref":4,"callee":1e400}"#).unwrap_err();
        assert_eq!(req, Some(4));
        assert!(e.to_string().contains("number out of range"), "{e}");
        // Other mistakes keep their precise error.
        let (req, e) = decode_client(r#"{"type":"invite","ref":5,"x":1e400}"#).unwrap_err();
        assert_eq!(req, Some(5));
        assert!(e.to_string().contains("missing field `callee`"), "{e}");
        assert!(matches!(
            decode_client(r#"{"type":"login","user":"a","x":1e400"#),
            Err((None, DecodeError::NotJson(_)))
        ));
        // And the client reads server messages the same way.
        let (seq, msg) =
            decode_server(r#"{"seq":2,"type":"ok","ref":1,"later":1e400}"#).expect("decodes");
        assert_eq!((seq, msg), (Some(2), ServerMessage::Ok { req: Some(1) }));
    }

    #[test]
    fn decode_errors_are_precise() {
        assert!(matches!(
            decode_client("{nope"),
            Err((None, DecodeError::NotJson(_)))
        ));
        assert!(matches!(
            decode_client("[1]"),
            Err((None, DecodeError::NotJson(_)))
        ));
        assert_eq!(
            decode_client(r#"{"ref":3}"#),
            Err((Some(3), DecodeError::MissingType))
        );
        assert_eq!(
            decode_client(r#"{"type":"dance","ref":4}"#),
            Err((Some(4), DecodeError::UnknownType("dance".into())))
        );
        let e = decode_client(r#"{"type":"invite","ref":5,"callee":12}"#).unwrap_err();
        assert_eq!(e.0, Some(5));
        assert_eq!(e.1.code(), ErrorCode::BadMessage);
    }

    #[test]
    fn sequenced_messages_put_seq_first_and_decode_back() {
        let m = ServerMessage::ReceivedByPeer {
            invitation_id: InvitationId("x".into()),
        };
        let text = encode_seq(42, &m);
        assert_eq!(
            text,
            r#"{"seq":42,"type":"received_by_peer","invitation_id":"x"}"#
        );
        assert_eq!(decode_server(&text).unwrap(), (Some(42), m.clone()));
        assert_eq!(decode_server(&encode(&m)).unwrap(), (None, m));
    }

    #[test]
    fn server_messages_are_tagged() {
        let m = ServerMessage::Failed {
            invitation_id: InvitationId("x".into()),
            reason: FailureReason::NoResponse,
        };
        assert_eq!(
            encode(&m),
            r#"{"type":"failed","invitation_id":"x","reason":"no_response"}"#
        );
        let back: ServerMessage = serde_json::from_str(&encode(&m)).unwrap();
        assert_eq!(back, m);
    }
}
