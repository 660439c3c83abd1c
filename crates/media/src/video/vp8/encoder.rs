//! [`Vp8Encoder`]: libvpx's VP8 encoder set up for a call — real-time
//! deadline, CBR with a short buffer, error resilient, no look-ahead,
//! frames dropped when the bitrate is short, keyframes on request.

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;

use vpx_sys as vpx;

use super::{ctx_error, err_text};
use crate::video::frame::i420_len;
use crate::video::VideoFrame;
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
        debug_assert_eq!(data.len(), i420_len(self.width, self.height));
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
