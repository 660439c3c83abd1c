//! VP8 through libvpx (`env-libvpx-sys`, linking the system library).
//!
//! [`Vp8Encoder`] is set up for a call: real-time deadline, one pass, CBR
//! with a short buffer, error resilient (a lost packet damages only the
//! frames that refer to it), one temporal layer, no look-ahead (a frame
//! goes out as soon as it is encoded), frames dropped by the rate control
//! when the bitrate is short, and keyframes only on request (the peer's PLI
//! or FIR) or at the codec's very long maximum interval. [`Vp8Decoder`]
//! turns whole VP8 frames back into [`VideoFrame`](super::VideoFrame)s;
//! anything it cannot decode is an error, never a panic.
//!
//! All libvpx calls go through these two types; both own their codec
//! context and are used through `&mut self` only.
//!
//! # Layout
//!
//! - `encoder`: [`Vp8Encoder`] and its real-time settings (rate control,
//!   keyframes, speed), with the bitrate changeable on the fly.
//! - `decoder`: [`Vp8Decoder`], and the copy of its pictures out of libvpx.
//! - `header`: what the first bytes of a frame say (keyframe, picture
//!   size), read without libvpx.
//! - here: libvpx's error texts, which both use.

mod decoder;
mod encoder;
mod header;

#[cfg(test)]
mod tests;

pub use decoder::Vp8Decoder;
pub(crate) use encoder::Vp8Encoder;
pub(crate) use header::{is_keyframe, keyframe_size};

use std::ffi::CStr;

use vpx_sys as vpx;

use crate::MediaError;

/// The text of libvpx's last error on `ctx`, with its detail when there is
/// one.
///
/// # Safety
/// `ctx` must point to a codec context that `vpx_codec_*_init_ver` was
/// called on (successfully or not) and that is not used concurrently.
unsafe fn ctx_error(ctx: *mut vpx::vpx_codec_ctx_t, what: &str) -> MediaError {
    // SAFETY: per this function's contract, `ctx` is a context libvpx
    // initialised (or failed to and left `err`/`err_detail` set);
    // vpx_codec_error never returns NULL (it falls back to a static
    // string) and vpx_codec_error_detail returns NULL or a NUL-terminated
    // string owned by the context, which we copy before returning.
    let (error, detail) = unsafe {
        let e = vpx::vpx_codec_error(ctx);
        let d = vpx::vpx_codec_error_detail(ctx);
        (
            (!e.is_null()).then(|| CStr::from_ptr(e).to_string_lossy().into_owned()),
            (!d.is_null()).then(|| CStr::from_ptr(d).to_string_lossy().into_owned()),
        )
    };
    let mut msg = format!(
        "{what}: {}",
        error.unwrap_or_else(|| "unknown error".into())
    );
    if let Some(d) = detail {
        msg.push_str(" (");
        msg.push_str(&d);
        msg.push(')');
    }
    MediaError::VideoCodec(msg)
}

/// The text of a libvpx status code, for calls without a context (or whose
/// context is gone).
fn err_text(what: &str, err: vpx::vpx_codec_err_t) -> MediaError {
    // SAFETY: vpx_codec_err_to_string only looks at the value and returns a
    // static NUL-terminated string (or "Unrecognized error code").
    let s = unsafe {
        let p = vpx::vpx_codec_err_to_string(err);
        if p.is_null() {
            format!("{err:?}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    MediaError::VideoCodec(format!("{what}: {s}"))
}
