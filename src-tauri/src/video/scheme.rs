//! The `frame:` URI scheme: reads a request (which stream, the last picture
//! the page has, the format, the box to fit) and answers it from the call's
//! [`Frames`] as soon as there is something newer, or with `204` after
//! [`WAIT`] (a long poll). See [`crate::video`] for the requests and bodies.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::{Format, Frames};

/// How long a request waits for a newer picture before `204`.
pub const WAIT: Duration = Duration::from_millis(1000);

/// What a `frame:` request asks for: the slot's name, `after` and the format.
pub fn parse_request(uri: &str) -> Option<(String, u64, Format)> {
    // frame://localhost/remote?after=12 or http://frame.localhost/remote?after=12
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path_and_query = rest.split_once('/').map(|(_, p)| p)?;
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let name = path.trim_matches('/');
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let after = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .map(|v| v.parse::<u64>().ok())
        .unwrap_or(Some(0))?;
    let format = match query.split('&').find_map(|kv| kv.strip_prefix("format=")) {
        None | Some("rgba") => Format::Rgba,
        Some("i420") => Format::I420,
        Some("vp8") => Format::Vp8,
        Some(_) => return None,
    };
    Some((name.to_owned(), after, format))
}

/// The box a request asks the picture to fit (`&fit=WxH`, device pixels), if any.
pub fn parse_fit(uri: &str) -> Option<(u32, u32)> {
    let query = uri.split_once('?')?.1;
    let (w, h) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("fit="))?
        .split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// The response for a picture, or for none (`204`), or a bad request (`400`/`404`).
pub fn response(
    result: Result<Option<Vec<u8>>, (u16, &'static str)>,
) -> tauri::http::Response<Cow<'static, [u8]>> {
    let builder = tauri::http::Response::builder()
        // The page's origin (tauri://localhost) is not frame://localhost.
        .header("Access-Control-Allow-Origin", "*")
        .header("Cache-Control", "no-store");
    let built = match result {
        Ok(Some(body)) => builder
            .status(200)
            .header("Content-Type", "application/octet-stream")
            .body(Cow::Owned(body)),
        Ok(None) => builder.status(204).body(Cow::Borrowed(&[][..])),
        Err((status, why)) => builder
            .status(status)
            .header("Content-Type", "text/plain")
            .body(Cow::Borrowed(why.as_bytes())),
    };
    built.unwrap_or_else(|_| tauri::http::Response::new(Cow::Borrowed(&[][..])))
}

/// Answers one `frame:` request (see the module's doc), on the async runtime.
pub fn serve(frames: Arc<Frames>, uri: String, responder: tauri::UriSchemeResponder) {
    let Some((name, after, format)) = parse_request(&uri) else {
        responder.respond(response(Err((
            400,
            "expected /remote or /local, ?after=N and &format=rgba, i420 or vp8",
        ))));
        return;
    };
    if format == Format::Vp8 {
        let Some(queue) = frames.queue(&name).cloned() else {
            responder.respond(response(Err((
                404,
                "no such picture stream: remote or local",
            ))));
            return;
        };
        tauri::async_runtime::spawn(async move {
            let body = queue.wait_after(after, WAIT).await;
            responder.respond(response(Ok(body)));
        });
        return;
    }
    let Some(slot) = frames.slot(&name).cloned() else {
        responder.respond(response(Err((
            404,
            "no such picture stream: remote or local",
        ))));
        return;
    };
    tauri::async_runtime::spawn(async move {
        let picture = slot
            .wait_newer_than(after, format, parse_fit(&uri), WAIT)
            .await;
        responder.respond(response(Ok(picture.map(|p| p.body))));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_stream_and_the_last_picture_seen() {
        assert_eq!(
            parse_request("frame://localhost/remote?after=12&format=i420"),
            Some(("remote".into(), 12, Format::I420))
        );
        assert_eq!(
            parse_request("http://frame.localhost/local?x=1&after=7"),
            Some(("local".into(), 7, Format::Rgba))
        );
        assert_eq!(
            parse_request("frame://localhost/remote"),
            Some(("remote".into(), 0, Format::Rgba))
        );
        assert_eq!(
            parse_request("frame://localhost/local?after=3&format=vp8"),
            Some(("local".into(), 3, Format::Vp8))
        );
        assert_eq!(parse_request("frame://localhost/remote?after=x"), None);
        assert_eq!(parse_request("frame://localhost/remote?format=png"), None);
        assert_eq!(parse_request("frame://localhost/"), None);
        assert_eq!(parse_request("frame://localhost/a/b"), None);
    }

    #[test]
    fn responses_allow_the_page_to_read_them() {
        let r = response(Ok(None));
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["Access-Control-Allow-Origin"], "*");
        let r = response(Err((404, "no")));
        assert_eq!(r.status(), 404);
    }
}
