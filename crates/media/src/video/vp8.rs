//! VP8 through libvpx (`env-libvpx-sys`, linking the system library).
//!
//! [`Vp8Encoder`] is set up for a call: real-time deadline, one pass, CBR
//! with a short buffer, error resilient (a lost packet damages only the
//! frames that refer to it), one temporal layer, no look-ahead (a frame
//! goes out as soon as it is encoded), frames dropped by the rate control
//! when the bitrate is short, and keyframes only on request (the peer's PLI
//! or FIR) or at the codec's very long maximum interval. [`Vp8Decoder`]
//! turns whole VP8 frames back into [`VideoFrame`]s; anything it cannot
//! decode is an error, never a panic.
//!
//! All libvpx calls go through the two types here; both own their codec
//! context and are used through `&mut self` only.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;

use vpx_sys as vpx;

use super::VideoFrame;
use crate::MediaError;

/// The RTP video clock: pts are in 1/90000 s.
const TIMEBASE_DEN: c_int = 90_000;

/// libvpx's real-time speed, as `VP8E_SET_CPUUSED`. Negative: that speed
/// fixed (positive values let libvpx pick a speed from how long frames
/// took, which varies with the load of the machine). 10 is what small
/// devices use in Chrome (12 on ARM): 640×480 at 30 fps costs a few ms per
/// frame on one core; the pictures are a little softer than at 6.
const CPU_USED: c_int = -10;

/// One compressed VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedFrame {
    /// The VP8 bitstream of the frame (RFC 6386), to be packetized (RFC 7741).
    pub data: Vec<u8>,
    /// A keyframe: decodable without any earlier frame.
    pub keyframe: bool,
}

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

/// A real-time VP8 encoder of pictures of one size.
pub(crate) struct Vp8Encoder {
    /// Boxed so that its address does not change when the encoder moves
    /// (libvpx is given this pointer on every call).
    ctx: Box<vpx::vpx_codec_ctx_t>,
    /// The configuration in force; changed and re-applied by
    /// [`Self::set_bitrate`].
    cfg: Box<vpx::vpx_codec_enc_cfg_t>,
    width: u32,
    height: u32,
    /// Nominal frame duration in 1/90000 s.
    duration: c_ulong,
    /// The pts of the last frame given to libvpx: later ones are kept
    /// strictly above it (libvpx's rate control divides by the difference).
    last_pts: Option<i64>,
}

// SAFETY: the encoder owns its libvpx context outright (nothing else holds
// a pointer to it or to its configuration), libvpx keeps no thread-local
// state for it, and every use goes through `&mut self`; so moving it to
// another thread is sound. (It is not `Sync`: libvpx contexts must not be
// used from two threads at once — `&self` methods do not call libvpx.)
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    /// A real-time VP8 encoder for `width × height` pictures (even sizes
    /// only, as [`VideoFrame`]) at about `fps` frames a second, aiming at
    /// `bitrate_kbps`.
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> Result<Self, MediaError> {
        if width == 0
            || height == 0
            || !width.is_multiple_of(2)
            || !height.is_multiple_of(2)
            || width > 16383
            || height > 16383
        {
            return Err(MediaError::Video(format!(
                "cannot encode {width}x{height} pictures"
            )));
        }
        if fps == 0 || fps > 1000 {
            return Err(MediaError::Video(format!(
                "cannot encode at {fps} frames per second"
            )));
        }
        // SAFETY: vpx_codec_vp8_cx returns a pointer to libvpx's static
        // VP8 encoder interface.
        let iface = unsafe { vpx::vpx_codec_vp8_cx() };
        if iface.is_null() {
            return Err(MediaError::VideoCodec(
                "libvpx was built without the VP8 encoder".into(),
            ));
        }
        let mut cfg = Box::new(MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit());
        // SAFETY: `cfg` points to writable memory of the right size and
        // alignment; vpx_codec_enc_config_default fills all of it when it
        // returns OK (usage 0, the only one VP8 has).
        let res = unsafe { vpx::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(err_text("default encoder config", res));
        }
        // SAFETY: initialised by vpx_codec_enc_config_default just above
        // (checked OK). Box<MaybeUninit<T>> and Box<T> have the same layout.
        let mut cfg: Box<vpx::vpx_codec_enc_cfg_t> =
            unsafe { Box::from_raw(Box::into_raw(cfg).cast()) };

        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_timebase = vpx::vpx_rational {
            num: 1,
            den: TIMEBASE_DEN,
        };
        // Two threads for VGA and up on a machine with cores to spare (the
        // audio must keep one); VP8 splits a frame by macroblock rows.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cfg.g_threads = if width * height >= 640 * 480 && cores > 2 {
            2
        } else {
            1
        };
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = bitrate_kbps.max(1);
        // Drop a frame rather than overshoot when the buffer runs low.
        cfg.rc_dropframe_thresh = 30;
        cfg.rc_resize_allowed = 0;
        // WebRTC's values: quantizers 2..56, a 1 s buffer aimed at 0.6 s,
        // undershoot as much as needed, overshoot little.
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        // Keyframes when asked for (a new receiver, a PLI) and on scene
        // cuts; otherwise at most every 3000 frames (100 s at 30 fps).
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = 3000;
        cfg.ts_number_layers = 1;

        // SAFETY: an all-zero vpx_codec_ctx_t is valid (null pointers, err
        // VPX_CODEC_OK = 0, a null union) and is what libvpx expects
        // before init.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `ctx` and `cfg` are valid and live for the call (libvpx
        // copies the configuration); the ABI version is the one the
        // bindings were generated for (the version pkg-config reported).
        let res = unsafe {
            vpx::vpx_codec_enc_init_ver(
                &mut *ctx,
                iface,
                &*cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // On failure libvpx has already torn the context down; it
            // still carries the error and its detail.
            // SAFETY: init was called on `ctx`.
            return Err(unsafe { ctx_error(&mut *ctx, "VP8 encoder init") });
        }
        let mut enc = Vp8Encoder {
            ctx,
            cfg,
            width,
            height,
            duration: (90_000 / fps) as c_ulong,
            last_pts: None,
        };
        // The real-time controls Chrome sets for VP8 (besides the speed):
        // skip the encoding of static macroblocks below a small threshold,
        // one token partition (one packetization partition), no noise
        // reduction, and a keyframe no larger than 9 average frames, so
        // that a keyframe does not stall the stream for long.
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED, CPU_USED)?;
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1)?;
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 0)?;
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0)?;
        enc.control_uint(
            vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT,
            900,
        )?;
        Ok(enc)
    }

    /// `vpx_codec_control` with an `int` argument.
    fn control(&mut self, id: vpx::vp8e_enc_control_id, value: c_int) -> Result<(), MediaError> {
        // SAFETY: the context is initialised (constructor) and not yet
        // destroyed (Drop); the controls used take an `int` vararg.
        let res = unsafe { vpx::vpx_codec_control_(&mut *self.ctx, id as c_int, value) };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // SAFETY: the context is initialised.
            return Err(unsafe { ctx_error(&mut *self.ctx, &format!("VP8 control {id:?}")) });
        }
        Ok(())
    }

    /// `vpx_codec_control` with an `unsigned int` argument.
    fn control_uint(
        &mut self,
        id: vpx::vp8e_enc_control_id,
        value: c_uint,
    ) -> Result<(), MediaError> {
        // SAFETY: the context is initialised and not destroyed; the
        // controls used take an `unsigned int` vararg.
        let res = unsafe { vpx::vpx_codec_control_(&mut *self.ctx, id as c_int, value) };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // SAFETY: the context is initialised.
            return Err(unsafe { ctx_error(&mut *self.ctx, &format!("VP8 control {id:?}")) });
        }
        Ok(())
    }

    /// Changes the target bitrate on the fly (from the next frame on).
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), MediaError> {
        let kbps = kbps.max(1);
        if self.cfg.rc_target_bitrate == kbps {
            return Ok(());
        }
        let old = self.cfg.rc_target_bitrate;
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: the context is initialised and not destroyed; `cfg` is a
        // valid configuration (the one in force but for the bitrate), which
        // libvpx copies.
        let res = unsafe { vpx::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            self.cfg.rc_target_bitrate = old;
            // SAFETY: the context is initialised.
            return Err(unsafe { ctx_error(&mut *self.ctx, "VP8 bitrate change") });
        }
        Ok(())
    }

    /// The current target bitrate in kbit/s.
    #[allow(dead_code)]
    pub fn bitrate(&self) -> u32 {
        self.cfg.rc_target_bitrate
    }

    /// The picture size the encoder takes.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Encodes one picture, which must be of the encoder's size. `pts` is
    /// in 1/90000 s (the RTP video clock); a pts not above the previous
    /// one is taken as the previous plus one. `force_keyframe` makes this
    /// frame a keyframe. `None`: the rate control dropped the frame (the
    /// bitrate is short); send nothing for it.
    pub fn encode(
        &mut self,
        frame: &VideoFrame,
        pts: i64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, MediaError> {
        if (frame.width(), frame.height()) != (self.width, self.height) {
            return Err(MediaError::Video(format!(
                "a {}x{} picture for a {}x{} encoder",
                frame.width(),
                frame.height(),
                self.width,
                self.height
            )));
        }
        let pts = match self.last_pts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        let data = frame.data();
        debug_assert_eq!(data.len(), super::frame::i420_len(self.width, self.height));
        let mut img = MaybeUninit::<vpx::vpx_image_t>::uninit();
        // SAFETY: vpx_img_wrap initialises `img` (it zeroes it, then sets
        // the format, size, strides and plane pointers) without allocating,
        // since a buffer is given. The buffer is the frame's packed I420,
        // which is exactly the layout it computes for an even-sized I420
        // picture with stride alignment 1 (Y at w per row, then U and V at
        // w/2 per row, h/2 rows). The pointer is cast to *mut only because
        // of the C signature: the encoder only reads its input.
        let wrapped = unsafe {
            vpx::vpx_img_wrap(
                img.as_mut_ptr(),
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                self.width,
                self.height,
                1,
                data.as_ptr() as *mut u8,
            )
        };
        if wrapped.is_null() {
            return Err(MediaError::VideoCodec(format!(
                "cannot wrap a {}x{} picture for libvpx",
                self.width, self.height
            )));
        }
        let flags = if force_keyframe {
            vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: the context is initialised and not destroyed; `wrapped`
        // is the image initialised above, whose planes point into `data`,
        // which outlives the call (libvpx copies the picture into its own
        // buffers during the call, lag being 0).
        let res = unsafe {
            vpx::vpx_codec_encode(
                &mut *self.ctx,
                wrapped,
                pts,
                self.duration,
                flags,
                c_ulong::from(vpx::VPX_DL_REALTIME),
            )
        };
        if res != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            // SAFETY: the context is initialised.
            return Err(unsafe { ctx_error(&mut *self.ctx, "VP8 encode") });
        }
        self.last_pts = Some(pts);

        let mut out: Option<EncodedFrame> = None;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialised; `iter` starts null and is
            // only advanced by libvpx; a non-null packet stays valid until
            // the next encode call on this context.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-null, so a packet libvpx filled in; `kind` says
            // which union member is valid.
            let pkt = unsafe { &*pkt };
            if pkt.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: a frame packet, so `frame` is the valid member.
            let f = unsafe { pkt.data.frame };
            if f.buf.is_null() || f.sz == 0 {
                continue;
            }
            // SAFETY: libvpx's frame packet: `sz` bytes at `buf`, in its
            // output buffer, valid until the next encode call; copied here.
            let bytes = unsafe { std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize) };
            let key = f.flags & vpx::VPX_FRAME_IS_KEY != 0;
            match &mut out {
                // With no look-ahead and one partition there is one frame
                // packet per picture; should there be more, they are one
                // frame's parts in order.
                Some(o) => {
                    o.data.extend_from_slice(bytes);
                    o.keyframe |= key;
                }
                None => {
                    out = Some(EncodedFrame {
                        data: bytes.to_vec(),
                        keyframe: key,
                    })
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised successfully (a failed init
        // returns before a Vp8Encoder exists) and is destroyed only here.
        // The status is ignored: there is nothing to do about it.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

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
    let mut out = Vec::with_capacity(super::frame::i420_len(w as u32, h as u32));
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

/// True if `data` is a VP8 keyframe: bit 0 of the frame tag's first byte
/// is 0 (RFC 6386 §9.1), and the keyframe start code follows (§9.1: bytes
/// 3..6 are 9d 01 2a).
pub(crate) fn is_keyframe(data: &[u8]) -> bool {
    data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a]
}

/// The picture size a keyframe announces (RFC 6386 §9.1: 14-bit width and
/// height after the start code; the top two bits are scaling), read before
/// decoding so that a peer cannot make us allocate for a huge picture.
pub(crate) fn keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if !is_keyframe(data) {
        return None;
    }
    let w = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
    let h = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
    Some((u32::from(w), u32::from(h)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern::{bars_error, TestPattern};
    use crate::video::VideoSource;
    use std::time::{Duration, Instant};

    const PTS_30FPS: i64 = 3000;

    #[test]
    fn keyframe_size_reads_the_header() {
        let mut enc = Vp8Encoder::new(320, 240, 30, 300).unwrap();
        let f = pattern_frames(320, 240, 1).remove(0);
        let key = enc.encode(&f, 0, true).unwrap().unwrap();
        assert_eq!(keyframe_size(&key.data), Some((320, 240)));
        let delta = enc.encode(&f, PTS_30FPS, false).unwrap().unwrap();
        assert_eq!(keyframe_size(&delta.data), None);
        assert_eq!(keyframe_size(&[0u8; 4]), None);
    }

    fn pattern_frames(w: u32, h: u32, n: usize) -> Vec<VideoFrame> {
        let mut p = TestPattern::unpaced(w, h).unwrap();
        (0..n).map(|_| p.next_frame().unwrap()).collect()
    }

    /// A picture that costs bits: the pattern with pseudo-random noise
    /// that changes every frame.
    fn noisy(frame: &VideoFrame, seed: u64) -> VideoFrame {
        let mut f = frame.clone();
        let mut rng = fastrand::Rng::with_seed(seed);
        let (y, _, _) = f.planes_mut();
        for px in y.iter_mut() {
            *px = px.saturating_add(rng.u8(0..48));
        }
        f
    }

    #[test]
    fn vp8_round_trip_keeps_the_bars() {
        let frames = pattern_frames(640, 480, 30);
        let mut enc = Vp8Encoder::new(640, 480, 30, 800).unwrap();
        assert_eq!(enc.size(), (640, 480));
        let mut dec = Vp8Decoder::new().unwrap();
        let (mut decoded, mut worst) = (0, 0);
        for (i, f) in frames.iter().enumerate() {
            let Some(e) = enc.encode(f, i as i64 * PTS_30FPS, false).unwrap() else {
                continue;
            };
            assert_eq!(e.keyframe, i == 0, "frame {i}");
            assert_eq!(is_keyframe(&e.data), e.keyframe, "frame {i}");
            let out = dec.decode(&e.data).unwrap().expect("a picture");
            assert_eq!((out.width(), out.height()), (640, 480));
            let err = bars_error(&out);
            assert!(err <= 40, "frame {i}: bars off by {err}");
            worst = worst.max(err);
            decoded += 1;
        }
        eprintln!("VP8 at 800 kbit/s: {decoded} of 30 frames decoded, bars off by at most {worst}");
        assert!(decoded >= 25, "only {decoded} of 30 frames came out");
    }

    #[test]
    fn vp8_forced_keyframes() {
        let frames = pattern_frames(320, 240, 12);
        let mut enc = Vp8Encoder::new(320, 240, 30, 500).unwrap();
        let mut kinds = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let force = i == 5 || i == 9;
            let e = enc
                .encode(f, i as i64 * PTS_30FPS, force)
                .unwrap()
                .expect("not dropped");
            assert_eq!(is_keyframe(&e.data), e.keyframe);
            kinds.push(e.keyframe);
        }
        let expected: Vec<bool> = (0..12).map(|i| i == 0 || i == 5 || i == 9).collect();
        assert_eq!(kinds, expected);
    }

    #[test]
    fn vp8_lower_bitrate_gives_smaller_frames() {
        let base = pattern_frames(640, 480, 90);
        let mut enc = Vp8Encoder::new(640, 480, 30, 2000).unwrap();
        let mut sizes = Vec::new();
        for (i, f) in base.iter().enumerate() {
            if i == 45 {
                enc.set_bitrate(200).unwrap();
                assert_eq!(enc.bitrate(), 200);
            }
            let size = enc
                .encode(&noisy(f, i as u64), i as i64 * PTS_30FPS, false)
                .unwrap()
                .map_or(0, |e| e.data.len());
            sizes.push(size);
        }
        // Skip the keyframe and let the rate control settle after the change.
        let high: usize = sizes[15..45].iter().sum::<usize>() / 30;
        let low: usize = sizes[60..90].iter().sum::<usize>() / 30;
        eprintln!("mean frame: {high} B at 2000 kbit/s, {low} B at 200 kbit/s");
        assert!(
            low * 2 < high,
            "{low} B at 200 kbit/s vs {high} B at 2000 kbit/s"
        );
        // Roughly on target: 2000 kbit/s at 30 fps is 8333 B a frame.
        assert!(high > 3000 && high < 16000, "{high}");
        assert!(low < 2500, "{low}");
    }

    #[test]
    fn vp8_wrong_size_or_rate_is_an_error() {
        let mut enc = Vp8Encoder::new(320, 240, 30, 300).unwrap();
        let f = VideoFrame::black(640, 480).unwrap();
        assert!(matches!(
            enc.encode(&f, 0, false),
            Err(MediaError::Video(_))
        ));
        // Still usable.
        let f = VideoFrame::black(320, 240).unwrap();
        assert!(enc.encode(&f, 0, false).unwrap().unwrap().keyframe);
        assert!(Vp8Encoder::new(321, 240, 30, 300).is_err());
        assert!(Vp8Encoder::new(0, 240, 30, 300).is_err());
        assert!(Vp8Encoder::new(320, 240, 0, 300).is_err());
    }

    #[test]
    fn vp8_pts_going_backwards_is_tolerated() {
        let frames = pattern_frames(160, 120, 4);
        let mut enc = Vp8Encoder::new(160, 120, 30, 300).unwrap();
        for (f, pts) in frames.iter().zip([9000, 9000, 3000, 12000]) {
            enc.encode(f, pts, false).unwrap();
        }
    }

    #[test]
    fn vp8_decoder_survives_garbage_and_truncation() {
        let frames = pattern_frames(320, 240, 3);
        let mut enc = Vp8Encoder::new(320, 240, 30, 500).unwrap();
        let encoded: Vec<EncodedFrame> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| enc.encode(f, i as i64 * PTS_30FPS, false).unwrap().unwrap())
            .collect();
        let key = &encoded[0].data;

        let mut dec = Vp8Decoder::new().unwrap();
        assert!(dec.decode(&[]).is_err());
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [1, 2, 3, 9, 10, 50, 1000, 20000] {
            let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = dec.decode(&junk);
            // Junk that looks like a keyframe header.
            let mut fake = junk.clone();
            if fake.len() >= 10 {
                fake[0] &= !1;
                fake[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                let _ = dec.decode(&fake);
            }
        }
        // A keyframe cut short, and one with its middle scrambled.
        for cut in [1, 3, 10, 20, key.len() / 4, key.len() / 2, key.len() - 1] {
            let _ = dec.decode(&key[..cut]);
        }
        let mut scrambled = key.clone();
        for b in scrambled[20..].iter_mut().step_by(7) {
            *b ^= 0x5a;
        }
        let _ = dec.decode(&scrambled);
        // Random bit flips and cuts of every frame, a few hundred times.
        for round in 0..300 {
            let mut m = encoded[round % encoded.len()].data.clone();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..m.len());
                m[i] ^= 1 << rng.u8(..8);
            }
            if round % 3 == 0 {
                m.truncate(rng.usize(1..=m.len()));
            }
            let _ = dec.decode(&m);
        }
        for p in &encoded[1..] {
            let _ = dec.decode(&p.data[..p.data.len() / 2]);
        }
        // After all that, a whole keyframe decodes, and so do its successors.
        let pic = dec.decode(key).unwrap().expect("a picture");
        assert!(bars_error(&pic) <= 40);
        for p in &encoded[1..] {
            assert!(dec.decode(&p.data).unwrap().is_some());
        }
    }

    #[test]
    fn vp8_decoder_joining_late_waits_for_a_keyframe() {
        let frames = pattern_frames(320, 240, 10);
        let mut enc = Vp8Encoder::new(320, 240, 30, 500).unwrap();
        let encoded: Vec<EncodedFrame> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                enc.encode(f, i as i64 * PTS_30FPS, i == 6)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let mut dec = Vp8Decoder::new().unwrap();
        // Frames 3..6 are delta frames: nothing to refer to yet.
        for e in &encoded[3..6] {
            assert!(!is_keyframe(&e.data));
            assert!(matches!(
                dec.decode(&e.data),
                Err(MediaError::VideoCodec(_)) | Ok(None)
            ));
        }
        assert!(is_keyframe(&encoded[6].data));
        for e in &encoded[6..] {
            let pic = dec.decode(&e.data).unwrap().expect("a picture");
            assert!(bars_error(&pic) <= 40);
        }
    }

    #[test]
    fn vp8_size_changes_at_a_keyframe() {
        let mut dec = Vp8Decoder::new().unwrap();
        for (w, h) in [(320, 240), (160, 120), (640, 360)] {
            let f = &pattern_frames(w, h, 1)[0];
            let e = Vp8Encoder::new(w, h, 30, 500)
                .unwrap()
                .encode(f, 0, false)
                .unwrap()
                .unwrap();
            let pic = dec.decode(&e.data).unwrap().unwrap();
            assert_eq!((pic.width(), pic.height()), (w, h));
        }
    }

    #[test]
    fn is_keyframe_reads_the_frame_tag() {
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0; 5]));
        assert!(is_keyframe(&[
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00
        ]));
        assert!(!is_keyframe(&[
            0x11, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00
        ]));
    }

    #[test]
    fn encoder_and_decoder_are_send() {
        fn send<T: Send>() {}
        send::<Vp8Encoder>();
        send::<Vp8Decoder>();
    }

    /// Encode and decode cost per 640×480 frame (printed; run with
    /// `--release --nocapture` for figures worth quoting). No bound is
    /// asserted.
    #[test]
    fn vp8_speed_640x480() {
        let frames = pattern_frames(640, 480, 60);
        let mut enc = Vp8Encoder::new(640, 480, 30, 1000).unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        let (mut enc_t, mut dec_t, mut bytes, mut n) = (Duration::ZERO, Duration::ZERO, 0, 0);
        for (i, f) in frames.iter().enumerate() {
            let t = Instant::now();
            let e = enc.encode(f, i as i64 * PTS_30FPS, false).unwrap();
            enc_t += t.elapsed();
            if let Some(e) = e {
                bytes += e.data.len();
                n += 1;
                let t = Instant::now();
                dec.decode(&e.data).unwrap();
                dec_t += t.elapsed();
            }
        }
        let mut noisy_t = Duration::ZERO;
        let mut enc2 = Vp8Encoder::new(640, 480, 30, 1000).unwrap();
        let noisy_frames: Vec<VideoFrame> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| noisy(f, i as u64))
            .collect();
        for (i, f) in noisy_frames.iter().enumerate() {
            let t = Instant::now();
            enc2.encode(f, i as i64 * PTS_30FPS, false).unwrap();
            noisy_t += t.elapsed();
        }
        eprintln!(
            "VP8 640x480: encode {:.2} ms/frame (pattern), {:.2} ms/frame (noisy), decode {:.2} ms/frame, {} B/frame, {n} of {} frames",
            enc_t.as_secs_f64() * 1000.0 / frames.len() as f64,
            noisy_t.as_secs_f64() * 1000.0 / frames.len() as f64,
            dec_t.as_secs_f64() * 1000.0 / n.max(1) as f64,
            bytes / n.max(1),
            frames.len()
        );
    }
}
