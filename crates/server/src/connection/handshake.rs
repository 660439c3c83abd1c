//! The WebSocket handshake of a connection, with the `Origin` policy: web
//! pages are kept out unless their origin is allowed.

use std::net::SocketAddr;

use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info};

use crate::config::Config;

/// The WebSocket handshake, refused for a web page's `Origin` unless allowed;
/// `None` if it failed or took too long.
pub(super) async fn handshake<S>(
    stream: S,
    peer: SocketAddr,
    config: &Config,
) -> Option<tokio_tungstenite::WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Small buffers: tungstenite's default read buffer is 128 KiB per connection,
    // which would dominate the memory of an idle connection, and every
    // connection keeps its read buffer for good. Frames here are small (a
    // request is 60–300 bytes); reads go in 512-byte chunks, so a larger
    // frame (an 8 KiB invitation, an SDP offer) takes a few reads.
    // The write buffer grows only as needed; 16 KiB lets a batch go out in one write.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
        .read_buffer_size(512)
        .write_buffer_size(16 * 1024);
    // Web pages are kept out: a browser always says which page opened the
    // WebSocket (`Origin`), native clients say nothing.
    let mut refused_origin = None;
    // The callback's type is tungstenite's; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let check_origin = |request: &Request, response: Response| match origin_refusal(
        request,
        &config.allowed_origins,
    ) {
        None => Ok(response),
        Some((origin, answer)) => {
            refused_origin = Some(origin);
            Err(answer)
        }
    };
    let handshake = timeout(
        config.handshake_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_origin, Some(ws_config)),
    )
    .await;
    match handshake {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            match refused_origin {
                Some(origin) => {
                    config.metrics.refused("origin");
                    info!(%peer, %origin, "WebSocket handshake refused: a web page's origin that is not allowed (--allowed-origin)");
                }
                None => debug!(%peer, error = %e, "WebSocket handshake failed"),
            }
            None
        }
        Err(_) => {
            debug!(%peer, "WebSocket handshake timed out");
            None
        }
    }
}
/// Whether a handshake must be refused for its `Origin`: the origin and the
/// HTTP answer (403) when it must.
fn origin_refusal(request: &Request, allowed: &[String]) -> Option<(String, ErrorResponse)> {
    let origin = request.headers().get(ORIGIN)?;
    let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    if origin_allowed(&text, allowed) {
        return None;
    }
    let body = format!(
        "this server does not accept connections from web pages (Origin: {text}); \
         its operator can allow an origin with --allowed-origin\n"
    );
    let length = HeaderValue::from(body.len());
    let mut answer = ErrorResponse::new(Some(body));
    *answer.status_mut() = StatusCode::FORBIDDEN;
    answer.headers_mut().insert(CONTENT_LENGTH, length);
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    Some((text, answer))
}

/// Whether a page of `origin` may connect: it is one of `allowed` (scheme,
/// host and port compared without regard to case, a trailing `/` ignored),
/// or `allowed` holds `*`.
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    let origin = norm(origin);
    allowed.iter().any(|a| a == "*" || norm(a) == origin)
}
