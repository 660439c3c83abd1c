//! Login tokens: compact JWTs signed with HMAC-SHA256 (`alg: HS256`) whose
//! claims are `sub` (the user id) and `exp` (expiry, Unix seconds). Any JWT
//! library can mint or read them given the same secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use callinvite_protocol::ErrorCode;

type HmacSha256 = Hmac<Sha256>;

/// The fixed JOSE header of every token.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Why a token was not accepted. Maps onto the login error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is required: this server was started with a secret")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's signature does not match this server's secret")]
    BadSignature,
    #[error("the token was issued for user {0:?}, not this one")]
    WrongUser(String),
    #[error("the token expired {0} s ago; mint a new one with `callinvite-server token`")]
    Expired(u64),
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired(_) => ErrorCode::TokenExpired,
            _ => ErrorCode::InvalidToken,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Mints a token for `user` valid for `ttl` from now.
pub fn mint(secret: &[u8], user: &str, ttl: Duration) -> String {
    mint_with_expiry(secret, user, unix_now() + ttl.as_secs())
}

/// Mints a token with an explicit expiry (Unix seconds). Tests use it for expired tokens.
pub fn mint_with_expiry(secret: &[u8], user: &str, exp: u64) -> String {
    let claims = serde_json::to_string(&Claims {
        sub: user.to_owned(),
        exp,
    })
    .unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Checks that `token` was signed with `secret`, names `user`, and has not expired.
pub fn verify(secret: &[u8], user: &str, token: &str) -> Result<(), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(header.as_bytes());
    m.update(b".");
    m.update(claims.as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed("header is not JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Malformed("alg must be HS256"));
    }
    let claims = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    let claims: Claims = serde_json::from_slice(&claims)
        .map_err(|_| TokenError::Malformed("claims need string sub and integer exp"))?;
    if claims.sub != user {
        return Err(TokenError::WrongUser(claims.sub));
    }
    let now = unix_now();
    if claims.exp <= now {
        return Err(TokenError::Expired(now - claims.exp));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"test-secret";

    #[test]
    fn minted_token_verifies_for_its_user_only() {
        let t = mint(S, "alice", Duration::from_secs(60));
        assert_eq!(verify(S, "alice", &t), Ok(()));
        assert_eq!(
            verify(S, "bob", &t),
            Err(TokenError::WrongUser("alice".into()))
        );
        assert_eq!(verify(b"other", "alice", &t), Err(TokenError::BadSignature));
    }

    #[test]
    fn expired_and_forged_tokens_are_rejected() {
        let t = mint_with_expiry(S, "alice", unix_now() - 10);
        assert!(matches!(
            verify(S, "alice", &t),
            Err(TokenError::Expired(_))
        ));
        assert_eq!(
            verify(S, "alice", &t).unwrap_err().code(),
            ErrorCode::TokenExpired
        );
        // Re-signing the claims with another secret, or editing them, breaks the signature.
        let good = mint(S, "alice", Duration::from_secs(60));
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory","exp":9999999999}"#);
        parts[1] = &forged_claims;
        assert_eq!(
            verify(S, "mallory", &parts.join(".")),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify(S, "alice", "abc"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify(S, "alice", "a.b.!!"),
            Err(TokenError::Malformed(_))
        ));
    }
}
