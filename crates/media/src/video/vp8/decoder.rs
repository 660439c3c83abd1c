//! [`Vp8Decoder`]: libvpx's VP8 decoder, and the copy of its pictures
//! into packed [`VideoFrame`]s; anything it cannot decode is an error,
//! never a panic.

use std::os::raw::{c_int, c_uint};
use std::ptr;

use vpx_sys as vpx;

use super::ctx_error;
use crate::video::frame::i420_len;
use crate::video::VideoFrame;
use crate::MediaError;

/// A VP8 decoder (libvpx). Public for callers of
/// [`crate::video::EncodedVideoSink`] that want to decode what it taps
/// (tests, tools); the engine uses it on its receive thread.
pub struct Vp8Decoder {
    /// Boxed so that its address does not change when the decoder moves.
    ctx: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: as for Vp8Encoder: the decoder owns its libvpx context, libvpx
// keeps no thread-local state for it, and all use is through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// A VP8 decoder (one thread, no post-processing).
    pub fn new() -> Result<Self, MediaError> {
        // SAFETY: returns a pointer to libvpx's static VP8 decoder
        // interface.
        let iface = unsafe { vpx::vpx_codec_vp8_dx() };
        if iface.is_null() {
            return Err(MediaError::VideoCodec(
                "libvpx was built without the VP8 decoder".into(),
            ));
        }
        let cfg = vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: an all-zero context is valid and what libvpx expects
        // before init (see Vp8Encoder::new).
        let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `ctx` and `cfg` are valid for the call (libvpx copies the
        // configuration); the ABI version matches the bindings.
        let res = unsafe {
            vpx::vpx_codec_dec_init_ver(
                &mut *ctx,
                iface,
                &cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // SAFETY: init was called on `ctx` (which libvpx tore down).
            return Err(unsafe { ctx_error(&mut *ctx, "VP8 decoder init") });
        }
        Ok(Vp8Decoder { ctx })
    }

    /// Decodes one complete VP8 frame. `Ok(None)`: the frame gave no
    /// picture to show. A picture of odd width or height (which VP8
    /// allows) loses its last column or row, as [`VideoFrame`]s are even.
    /// Corrupt or truncated input, and a stream that does not start with a
    /// keyframe, are errors; the decoder is usable again from the next
    /// keyframe on.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<VideoFrame>, MediaError> {
        if data.is_empty() {
            return Err(MediaError::VideoCodec("VP8 decode: empty frame".into()));
        }
        let len = c_uint::try_from(data.len()).map_err(|_| {
            MediaError::VideoCodec(format!("VP8 decode: a {} byte frame", data.len()))
        })?;
        // SAFETY: the context is initialised and not destroyed; `data` is
        // valid for `len` bytes for the call (libvpx does not keep it:
        // no input fragments, one thread).
        let res = unsafe {
            vpx::vpx_codec_decode(&mut *self.ctx, data.as_ptr(), len, ptr::null_mut(), 0)
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // SAFETY: the context is initialised.
            return Err(unsafe { ctx_error(&mut *self.ctx, "VP8 decode") });
        }
        let mut picture = None;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialised; `iter` starts null and is
            // advanced by libvpx only; a returned image is valid until the
            // next decode call.
            let img = unsafe { vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: non-null, so an image the decoder filled in, whose
            // planes it owns until the next decode call.
            picture = Some(unsafe { copy_image(&*img) }?);
        }
        Ok(picture)
    }
}

/// Copies a decoded libvpx image into a packed [`VideoFrame`], cropping an
/// odd width or height to even.
///
/// # Safety
/// `img` must be an image libvpx returned, still valid: its plane pointers
/// and strides describe at least `d_w × d_h` luma and `⌈d_w/2⌉ × ⌈d_h/2⌉`
/// chroma samples.
unsafe fn copy_image(img: &vpx::vpx_image_t) -> Result<VideoFrame, MediaError> {
    if img.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420
        && img.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_YV12
    {
        return Err(MediaError::VideoCodec(format!(
            "VP8 decode: unexpected picture format {:?}",
            img.fmt
        )));
    }
    // YV12 is I420 with U and V swapped.
    let (u_plane, v_plane) = if img.fmt == vpx::vpx_img_fmt::VPX_IMG_FMT_YV12 {
        (2, 1)
    } else {
        (1, 2)
    };
    let (w, h) = ((img.d_w & !1) as usize, (img.d_h & !1) as usize);
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(MediaError::VideoCodec(format!(
            "VP8 decode: a {}x{} picture",
            img.d_w, img.d_h
        )));
    }
    let planes = [
        (0usize, w, h),
        (u_plane, w / 2, h / 2),
        (v_plane, w / 2, h / 2),
    ];
    for &(p, pw, _) in &planes {
        if img.planes[p].is_null() || img.stride[p] < 0 || (img.stride[p] as usize) < pw {
            return Err(MediaError::VideoCodec(
                "VP8 decode: malformed picture".into(),
            ));
        }
    }
    let mut out = Vec::with_capacity(i420_len(w as u32, h as u32));
    for (p, pw, ph) in planes {
        let stride = img.stride[p] as usize;
        for row in 0..ph {
            // SAFETY: per this function's contract, plane `p` holds at
            // least `ph` rows of `pw` samples, `stride` bytes apart
            // (checked non-negative and at least `pw` above).
            let line = unsafe { std::slice::from_raw_parts(img.planes[p].add(row * stride), pw) };
            out.extend_from_slice(line);
        }
    }
    VideoFrame::from_i420(w as u32, h as u32, out)
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised successfully in `new`, destroyed only here.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}
