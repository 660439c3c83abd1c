//! A decoded picture made into the body the page gets: its I420 planes,
//! halved here while they still cover the box they are shown in
//! ([`i420_body`]), or RGBA with the look applied ([`to_rgba`]). Both are
//! written for the debug build as much as the release one (plain index
//! loops, lookup tables): they run once for every picture the page draws.

use std::sync::OnceLock;

use callinvite_client::media::VideoFrame;

use super::{header, Format, Look, HEADER_BYTES};

/// Lookup tables of BT.601 studio-range YUV to RGB — the formulas of the
/// media crate's `yuv_to_rgb`, so the colours are the same to the bit —
/// one lookup per term instead of multiplications and clamps per pixel.
struct Tables {
    /// 298 × (y − 16) + 128 (the rounding).
    y: [i32; 256],
    /// 409 × (v − 128), −100 × (u − 128), −208 × (v − 128), 516 × (u − 128).
    rv: [i32; 256],
    gu: [i32; 256],
    gv: [i32; 256],
    bu: [i32; 256],
    /// `clamp[(x >> 8) + CLAMP_OFFSET]` is x >> 8 clamped to 0..=255.
    clamp: [u8; CLAMP_LEN],
}

const CLAMP_OFFSET: i32 = 384;
const CLAMP_LEN: usize = 1024;

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Tables {
            y: [0; 256],
            rv: [0; 256],
            gu: [0; 256],
            gv: [0; 256],
            bu: [0; 256],
            clamp: [0; CLAMP_LEN],
        };
        for i in 0..256 {
            let c = i as i32 - 16;
            let d = i as i32 - 128;
            t.y[i] = 298 * c + 128;
            t.rv[i] = 409 * d;
            t.gu[i] = -100 * d;
            t.gv[i] = -208 * d;
            t.bu[i] = 516 * d;
        }
        for (i, v) in t.clamp.iter_mut().enumerate() {
            *v = (i as i32 - CLAMP_OFFSET).clamp(0, 255) as u8;
        }
        t
    })
}

/// How many times to halve a `w`×`h` picture: once if `half`, and more
/// while the result still covers `fit` (at most to an eighth).
pub fn halvings(w: u32, h: u32, half: bool, fit: Option<(u32, u32)>) -> u32 {
    let mut n = u32::from(half);
    if let Some((fw, fh)) = fit {
        while n < 3 && (w >> (n + 1)) >= fw.max(2) && (h >> (n + 1)) >= fh.max(2) {
            n += 1;
        }
    }
    n
}

/// The picture as the page gets it in I420: header, then the Y, U and V
/// planes. Halved here when the look says so, or more while it still
/// covers `fit` (fewer bytes to carry into the page: they cost more than
/// the halving); the mirroring is left to the page's conversion, which
/// does it for nothing.
pub fn i420_body(
    frame: &VideoFrame,
    look: Look,
    seq: u64,
    at_ms: u64,
    fit: Option<(u32, u32)>,
) -> (u32, u32, Vec<u8>) {
    let n = halvings(frame.width(), frame.height(), look.half, fit);
    // All but the last halving by the media crate, the last into the body.
    let smaller;
    let frame = if n > 1 {
        let mut f = frame.half();
        for _ in 2..n {
            f = f.half();
        }
        smaller = f;
        &smaller
    } else {
        frame
    };
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    if n == 0 {
        let mut body = Vec::with_capacity(HEADER_BYTES + frame.data().len());
        body.extend_from_slice(&header(w as u32, h as u32, seq, at_ms, Format::I420, look));
        body.extend_from_slice(frame.data());
        return (w as u32, h as u32, body);
    }
    // Even halves (I420 needs them): a pixel or two of a larger odd half is cropped.
    let (hw, hh) = (((w / 2) & !1).max(2), ((h / 2) & !1).max(2));
    let shown = Look {
        half: false,
        mirror: look.mirror,
    };
    let mut body = vec![0u8; HEADER_BYTES + hw * hh + 2 * (hw / 2) * (hh / 2)];
    body[..HEADER_BYTES].copy_from_slice(&header(
        hw as u32,
        hh as u32,
        seq,
        at_ms,
        Format::I420,
        shown,
    ));
    let (yp, up, vp) = frame.planes();
    let (dy, rest) = body[HEADER_BYTES..].split_at_mut(hw * hh);
    let (du, dv) = rest.split_at_mut((hw / 2) * (hh / 2));
    halve(yp, w, h, dy, hw, hh);
    halve(up, w / 2, h / 2, du, hw / 2, hh / 2);
    halve(vp, w / 2, h / 2, dv, hw / 2, hh / 2);
    (hw as u32, hh as u32, body)
}

/// 2×2 box filter of plane `src` (`sw × sh`) into `dst` (`dw × dh`, at most
/// half of each); plain index loops, for the debug build's sake.
fn halve(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for row in 0..dh {
        let r0 = (2 * row).min(sh - 1) * sw;
        let r1 = (2 * row + 1).min(sh - 1) * sw;
        let o = row * dw;
        let mut x = 0;
        while x < dw {
            let c = 2 * x;
            let c1 = if c + 1 < sw { c + 1 } else { c };
            let sum =
                src[r0 + c] as u32 + src[r0 + c1] as u32 + src[r1 + c] as u32 + src[r1 + c1] as u32;
            dst[o + x] = ((sum + 2) >> 2) as u8;
            x += 1;
        }
    }
}

/// One RGBA pixel as a native 32-bit word whose bytes in memory are R, G,
/// B, A (a macro, not a function: the debug build calls functions).
macro_rules! rgba_word {
    ($r:expr, $g:expr, $b:expr) => {
        if cfg!(target_endian = "little") {
            ($r as u32) | (($g as u32) << 8) | (($b as u32) << 16) | 0xFF00_0000
        } else {
            (($r as u32) << 24) | (($g as u32) << 16) | (($b as u32) << 8) | 0xFF
        }
    };
}

/// The picture as the page gets it: header, then RGBA (alpha 255), `look`
/// applied. Returns the width and height served, and the body.
///
/// Written for the debug build as much as the release one: plain index
/// loops, no closures or iterators in the inner loop, one 32-bit store per
/// pixel.
pub fn to_rgba(frame: &VideoFrame, look: Look, seq: u64, at_ms: u64) -> (u32, u32, Vec<u8>) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (ow, oh) = if look.half { (w / 2, h / 2) } else { (w, h) };
    let mut body = vec![0u8; HEADER_BYTES + ow * oh * 4];
    // The look is applied: the page shows it as it is.
    body[..HEADER_BYTES].copy_from_slice(&header(
        ow as u32,
        oh as u32,
        seq,
        at_ms,
        Format::Rgba,
        Look::AS_IS,
    ));
    // SAFETY: every bit pattern is a valid u32 and a valid u8; align_to_mut
    // only hands out the part of the buffer that is aligned for u32.
    let (before, words, after) = unsafe { body[HEADER_BYTES..].align_to_mut::<u32>() };
    if before.is_empty() && after.is_empty() {
        convert(frame, look, words, ow, oh);
    } else {
        // An allocator that does not align to 4 (none we know of): via a copy.
        let mut words = vec![0u32; ow * oh];
        convert(frame, look, &mut words, ow, oh);
        for (dst, word) in body[HEADER_BYTES..].chunks_exact_mut(4).zip(&words) {
            dst.copy_from_slice(&word.to_ne_bytes());
        }
    }
    (ow as u32, oh as u32, body)
}

/// Fills `out` (`ow × oh` pixels) from `frame` as `look` says.
fn convert(frame: &VideoFrame, look: Look, out: &mut [u32], ow: usize, oh: usize) {
    let t = tables();
    let (ty, clamp) = (&t.y, &t.clamp);
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (yp, up, vp) = frame.planes();
    let cw = w / 2;
    // The clamp table's offset, folded into the chroma terms:
    // (x >> 8) + 384 = (x + 384·256) >> 8.
    let off = CLAMP_OFFSET << 8;
    let mirror = look.mirror;
    if !look.half {
        for row in 0..h {
            let (yb, cb, ob) = (row * w, (row / 2) * cw, row * w);
            let mut cx = 0;
            while cx < cw {
                let (u, v) = (up[cb + cx] as usize, vp[cb + cx] as usize);
                let rv = t.rv[v] + off;
                let guv = t.gu[u] + t.gv[v] + off;
                let bu = t.bu[u] + off;
                let x = 2 * cx;
                let (d0, d1) = if mirror {
                    (ob + w - 1 - x, ob + w - 2 - x)
                } else {
                    (ob + x, ob + x + 1)
                };
                let c = ty[yp[yb + x] as usize];
                out[d0] = rgba_word!(
                    clamp[((c + rv) >> 8) as usize],
                    clamp[((c + guv) >> 8) as usize],
                    clamp[((c + bu) >> 8) as usize]
                );
                let c = ty[yp[yb + x + 1] as usize];
                out[d1] = rgba_word!(
                    clamp[((c + rv) >> 8) as usize],
                    clamp[((c + guv) >> 8) as usize],
                    clamp[((c + bu) >> 8) as usize]
                );
                cx += 1;
            }
        }
    } else {
        // Each output pixel: the mean of a 2×2 block of luma, and that
        // block's own chroma sample (I420 has one per 2×2 block).
        for row in 0..oh {
            let (y0, y1, cb, ob) = (2 * row * w, (2 * row + 1) * w, row * cw, row * ow);
            let mut x = 0;
            while x < ow {
                let (u, v) = (up[cb + x] as usize, vp[cb + x] as usize);
                let sum = yp[y0 + 2 * x] as usize
                    + yp[y0 + 2 * x + 1] as usize
                    + yp[y1 + 2 * x] as usize
                    + yp[y1 + 2 * x + 1] as usize;
                let c = ty[(sum + 2) >> 2];
                let d = if mirror { ob + ow - 1 - x } else { ob + x };
                out[d] = rgba_word!(
                    clamp[((c + t.rv[v] + off) >> 8) as usize],
                    clamp[((c + t.gu[u] + t.gv[v] + off) >> 8) as usize],
                    clamp[((c + t.bu[u] + off) >> 8) as usize]
                );
                x += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{parse_fit, pattern, FrameSlot};
    use super::*;

    /// A picture of every colour the planes can carry, in blocks.
    fn noise(w: u32, h: u32) -> VideoFrame {
        let n = (w * h + 2 * (w / 2) * (h / 2)) as usize;
        let data = (0..n).map(|i| (i * 7919 % 251) as u8).collect();
        VideoFrame::from_i420(w, h, data).unwrap()
    }

    #[test]
    fn the_colours_are_the_media_crates_to_the_bit() {
        for (w, h) in [(640, 480), (18, 6)] {
            let frame = noise(w, h);
            let mut expected = Vec::new();
            frame.to_rgba(&mut expected, false);
            let (ow, oh, body) = to_rgba(&frame, Look::AS_IS, 9, 1234);
            assert_eq!((ow, oh), (w, h));
            assert_eq!(
                &body[..HEADER_BYTES],
                &header(w, h, 9, 1234, Format::Rgba, Look::AS_IS)
            );
            assert!(body[HEADER_BYTES..] == expected[..], "{w}x{h}");
        }
    }

    #[test]
    fn i420_is_halved_while_it_still_covers_the_box_it_is_shown_in() {
        assert_eq!(
            parse_fit("frame://localhost/local?after=1&fit=108x81"),
            Some((108, 81))
        );
        assert_eq!(parse_fit("frame://localhost/local?fit=108"), None);
        assert_eq!(parse_fit("frame://localhost/local?after=1"), None);
        assert_eq!(
            halvings(640, 480, true, Some((108, 81))),
            2,
            "160x120 covers 108x81"
        );
        assert_eq!(halvings(640, 480, true, Some((200, 150))), 1);
        assert_eq!(halvings(640, 480, false, Some((388, 291))), 0);
        assert_eq!(
            halvings(640, 480, false, Some((1, 1))),
            3,
            "an eighth at most"
        );
        assert_eq!(halvings(640, 480, false, None), 0);
        let local = FrameSlot::default();
        local.put(
            pattern(640, 480),
            Look {
                half: true,
                mirror: true,
            },
        );
        let p = local
            .newer_than_fit(0, Format::I420, Some((108, 81)))
            .unwrap();
        assert_eq!((p.width, p.height), (160, 120));
        assert_eq!(p.body.len(), HEADER_BYTES + 160 * 120 * 3 / 2);
        assert_eq!(
            &p.body[24..32],
            &[1, 0, 0, 0, 2, 0, 0, 0],
            "i420, mirrored by the page"
        );
        // The bars are still there: white on the left, black on the right (the page mirrors).
        let y = |x: usize, row: usize| p.body[HEADER_BYTES + row * 160 + x];
        assert!(y(2, 10) > 150, "the white bar: {}", y(2, 10));
        assert!(y(157, 10) < 30, "the black bar: {}", y(157, 10));
    }

    /// Prints what a conversion costs in this build (`cargo test … -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn conversion_cost() {
        let frame = pattern(640, 480);
        for (look, name) in [
            (Look::AS_IS, "640x480"),
            (
                Look {
                    half: true,
                    mirror: true,
                },
                "preview 320x240",
            ),
        ] {
            let started = Instant::now();
            for i in 0..30 {
                std::hint::black_box(to_rgba(&frame, look, i, 0));
            }
            println!(
                "{name}: {:.2} ms",
                started.elapsed().as_secs_f64() * 1000.0 / 30.0
            );
        }
        let started = Instant::now();
        let mut out = Vec::new();
        for _ in 0..10 {
            frame.to_rgba(&mut out, false);
        }
        println!(
            "VideoFrame::to_rgba 640x480: {:.2} ms",
            started.elapsed().as_secs_f64() * 100.0
        );
    }
}
