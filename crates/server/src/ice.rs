//! The STUN/TURN servers handed to clients for their calls' media, with
//! short-lived TURN credentials in coturn's shared-secret scheme
//! ("TURN REST API", coturn's `use-auth-secret` / `static-auth-secret`):
//! the user name is `<expiry unix time>:<user id>` and the password is
//! base64(HMAC-SHA1(secret, user name)). coturn checks both without talking
//! to us; the credential stops working at the expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};

use callinvite_protocol::IceServer;

/// Which servers to hand out, and how TURN credentials are made.
#[derive(Clone, Debug, Default)]
pub struct IceConfig {
    /// `stun:host:port` URLs, handed out as they are.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs of a TURN server sharing `turn_secret`.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`; TURN URLs are only handed out with it.
    pub turn_secret: Option<Vec<u8>>,
    /// How long a TURN credential is valid (coturn refuses it after that).
    pub turn_ttl: Duration,
}

impl IceConfig {
    /// The servers for `user`, with TURN credentials valid from `now` for `turn_ttl`.
    pub fn servers_for(&self, user: &str, now: SystemTime) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (false, Some(secret)) = (self.turn_urls.is_empty(), &self.turn_secret) {
            let expiry = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_add(self.turn_ttl)
                .as_secs();
            let username = format!("{expiry}:{user}");
            out.push(IceServer {
                urls: self.turn_urls.clone(),
                credential: Some(turn_password(secret, &username)),
                username: Some(username),
            });
        }
        out
    }
}

/// coturn's password for a user name under the shared secret.
pub fn turn_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_coturns_scheme() {
        let config = IceConfig {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some(b"north".to_vec()),
            turn_ttl: Duration::from_secs(3600),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let servers = config.servers_for("alice", now);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1003600:alice"));
        // The value `echo -n 1003600:alice | openssl dgst -sha1 -hmac north -binary | base64` prints.
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("udLEuyyDOwk3mLEbdxPxYtNXKVA=")
        );
    }

    #[test]
    fn turn_urls_without_a_secret_are_not_handed_out() {
        let config = IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            ..Default::default()
        };
        assert!(config.servers_for("alice", SystemTime::now()).is_empty());
    }
}
