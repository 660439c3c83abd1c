//! [`VideoFrame`]: one picture in I420 (the planar 4:2:0 YUV layout VP8
//! encodes and decodes), and the conversions the application needs.

use std::time::Instant;

use crate::MediaError;

/// One picture: I420, tightly packed — the Y plane (`width × height`
/// bytes), then U and V (`width/2 × height/2` each). Width and height are
/// even and non-zero.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    width: u32,
    height: u32,
    /// Y, then U, then V.
    data: Vec<u8>,
    /// When the picture was taken (for end-to-end latency figures); set by
    /// the source, or when the frame is made.
    pub captured: Instant,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VideoFrame({}x{})", self.width, self.height)
    }
}

/// Bytes of an I420 picture of that size.
pub fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * (w / 2) * (h / 2)
}

fn check_size(width: u32, height: u32) -> Result<(), MediaError> {
    if width == 0
        || height == 0
        || !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || width > 8192
        || height > 8192
    {
        return Err(MediaError::Video(format!(
            "a {width}x{height} picture: width and height must be even, 2 to 8192"
        )));
    }
    Ok(())
}

impl VideoFrame {
    /// A black picture.
    pub fn black(width: u32, height: u32) -> Result<Self, MediaError> {
        check_size(width, height)?;
        let luma = (width * height) as usize;
        let mut data = vec![16u8; i420_len(width, height)];
        data[luma..].fill(128);
        Ok(VideoFrame {
            width,
            height,
            data,
            captured: Instant::now(),
        })
    }

    /// A picture from packed I420 bytes (see the type's doc).
    pub fn from_i420(width: u32, height: u32, data: Vec<u8>) -> Result<Self, MediaError> {
        check_size(width, height)?;
        if data.len() != i420_len(width, height) {
            return Err(MediaError::Video(format!(
                "{} bytes for a {width}x{height} I420 picture, which needs {}",
                data.len(),
                i420_len(width, height)
            )));
        }
        Ok(VideoFrame {
            width,
            height,
            data,
            captured: Instant::now(),
        })
    }

    /// A picture from RGBA bytes (4 per pixel, rows top to bottom), as
    /// screen and some camera captures give them; BT.601 studio range.
    pub fn from_rgba(width: u32, height: u32, rgba: &[u8]) -> Result<Self, MediaError> {
        Self::from_packed(width, height, rgba, 4, [0, 1, 2])
    }

    /// A picture from BGRA bytes (X11 and Windows screen captures).
    pub fn from_bgra(width: u32, height: u32, bgra: &[u8]) -> Result<Self, MediaError> {
        Self::from_packed(width, height, bgra, 4, [2, 1, 0])
    }

    /// A picture from RGB bytes (3 per pixel).
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Self, MediaError> {
        Self::from_packed(width, height, rgb, 3, [0, 1, 2])
    }

    fn from_packed(
        width: u32,
        height: u32,
        src: &[u8],
        bpp: usize,
        [ri, gi, bi]: [usize; 3],
    ) -> Result<Self, MediaError> {
        check_size(width, height)?;
        let (w, h) = (width as usize, height as usize);
        if src.len() < w * h * bpp {
            return Err(MediaError::Video(format!(
                "{} bytes for a {width}x{height} picture of {bpp} bytes per pixel",
                src.len()
            )));
        }
        let mut frame = Self::black(width, height)?;
        let (y, rest) = frame.data.split_at_mut(w * h);
        let (u, v) = rest.split_at_mut((w / 2) * (h / 2));
        for row in 0..h {
            for col in 0..w {
                let p = (row * w + col) * bpp;
                let (r, g, b) = (
                    i32::from(src[p + ri]),
                    i32::from(src[p + gi]),
                    i32::from(src[p + bi]),
                );
                y[row * w + col] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
            }
        }
        for row in 0..h / 2 {
            for col in 0..w / 2 {
                // The mean of the 2×2 block.
                let (mut r, mut g, mut b) = (0i32, 0i32, 0i32);
                for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let p = ((2 * row + dr) * w + 2 * col + dc) * bpp;
                    r += i32::from(src[p + ri]);
                    g += i32::from(src[p + gi]);
                    b += i32::from(src[p + bi]);
                }
                let (r, g, b) = (r / 4, g / 4, b / 4);
                let i = row * (w / 2) + col;
                u[i] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
                v[i] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
            }
        }
        Ok(frame)
    }

    /// Width in pixels (even).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels (even).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The packed I420 bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The Y, U and V planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = (self.width * self.height) as usize;
        let chroma = luma / 4;
        let (y, rest) = self.data.split_at(luma);
        let (u, v) = rest.split_at(chroma);
        (y, u, v)
    }

    /// The Y, U and V planes, writable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = (self.width * self.height) as usize;
        let chroma = luma / 4;
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    /// The RGB colour (BT.601 studio range) of the pixel at `x`, `y`.
    pub fn rgb_at(&self, x: u32, y: u32) -> [u8; 3] {
        let (yp, up, vp) = self.planes();
        let w = self.width as usize;
        let (x, y) = (
            x.min(self.width - 1) as usize,
            y.min(self.height - 1) as usize,
        );
        let c = (y / 2) * (w / 2) + x / 2;
        yuv_to_rgb(yp[y * w + x], up[c], vp[c])
    }

    /// Writes the picture as RGBA (4 bytes per pixel, alpha 255) into
    /// `out`, resized to fit; `mirror` flips it left to right (a local
    /// preview, so that the user sees themselves as in a mirror).
    pub fn to_rgba(&self, out: &mut Vec<u8>, mirror: bool) {
        let (w, h) = (self.width as usize, self.height as usize);
        out.resize(w * h * 4, 255);
        let (yp, up, vp) = self.planes();
        for row in 0..h {
            let c_row = (row / 2) * (w / 2);
            let dst_row = &mut out[row * w * 4..(row + 1) * w * 4];
            for col in 0..w {
                let c = c_row + col / 2;
                let rgb = yuv_to_rgb(yp[row * w + col], up[c], vp[c]);
                let dc = if mirror { w - 1 - col } else { col };
                dst_row[dc * 4..dc * 4 + 3].copy_from_slice(&rgb);
                dst_row[dc * 4 + 3] = 255;
            }
        }
    }

    /// The picture at half the width and height (each output pixel the
    /// mean of a 2×2 block), for sending less when bandwidth is short. A
    /// picture whose halves would be odd is cropped by a pixel or two.
    pub fn half(&self) -> VideoFrame {
        let (w, h) = (self.width as usize, self.height as usize);
        let (hw, hh) = ((w / 2) & !1, (h / 2) & !1);
        let (hw, hh) = (hw.max(2), hh.max(2));
        let mut out = VideoFrame {
            width: hw as u32,
            height: hh as u32,
            data: vec![0; i420_len(hw as u32, hh as u32)],
            captured: self.captured,
        };
        let (sy, su, sv) = self.planes();
        let (dy, du, dv) = out.planes_mut();
        halve_plane(sy, w, h, dy, hw, hh);
        halve_plane(su, w / 2, h / 2, du, hw / 2, hh / 2);
        halve_plane(sv, w / 2, h / 2, dv, hw / 2, hh / 2);
        out
    }
}

/// 2×2 box filter from `src` (`sw × sh`) into `dst` (`dw × dh`, at most
/// half of each).
fn halve_plane(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for row in 0..dh {
        let r0 = (2 * row).min(sh - 1) * sw;
        let r1 = (2 * row + 1).min(sh - 1) * sw;
        for col in 0..dw {
            let c0 = (2 * col).min(sw - 1);
            let c1 = (2 * col + 1).min(sw - 1);
            let sum = u32::from(src[r0 + c0])
                + u32::from(src[r0 + c1])
                + u32::from(src[r1 + c0])
                + u32::from(src[r1 + c1]);
            dst[row * dw + col] = ((sum + 2) / 4) as u8;
        }
    }
}

/// BT.601 studio-range YUV to RGB.
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = i32::from(y) - 16;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let r = (298 * c + 409 * e + 128) >> 8;
    let g = (298 * c - 100 * d - 208 * e + 128) >> 8;
    let b = (298 * c + 516 * d + 128) >> 8;
    [
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_even_and_buffers_whole() {
        assert!(VideoFrame::black(641, 480).is_err());
        assert!(VideoFrame::black(0, 480).is_err());
        assert!(VideoFrame::from_i420(4, 4, vec![0; 23]).is_err());
        assert!(VideoFrame::from_i420(4, 4, vec![0; 24]).is_ok());
        assert!(VideoFrame::from_rgba(4, 4, &[0; 63]).is_err());
    }

    #[test]
    fn rgb_survives_a_round_trip_through_i420() {
        for rgb in [
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 0],
            [128, 64, 200],
        ] {
            let px: Vec<u8> = std::iter::repeat_n([rgb[0], rgb[1], rgb[2], 255], 16)
                .flatten()
                .collect();
            let f = VideoFrame::from_rgba(4, 4, &px).unwrap();
            let back = f.rgb_at(1, 1);
            for i in 0..3 {
                assert!(
                    (i32::from(back[i]) - i32::from(rgb[i])).abs() <= 3,
                    "{rgb:?} -> {back:?}"
                );
            }
            let mut out = Vec::new();
            f.to_rgba(&mut out, false);
            assert_eq!(out.len(), 64);
            assert_eq!(&out[..3], &back);
        }
    }

    #[test]
    fn half_and_mirror() {
        // Left half red, right half blue.
        let mut px = Vec::new();
        for _row in 0..4 {
            for col in 0..8 {
                px.extend_from_slice(if col < 4 {
                    &[255, 0, 0, 255]
                } else {
                    &[0, 0, 255, 255]
                });
            }
        }
        let f = VideoFrame::from_rgba(8, 4, &px).unwrap();
        let h = f.half();
        assert_eq!((h.width(), h.height()), (4, 2));
        assert!(h.rgb_at(0, 0)[0] > 200 && h.rgb_at(3, 0)[2] > 200);
        let mut out = Vec::new();
        f.to_rgba(&mut out, true);
        // Mirrored: the first pixel is blue.
        assert!(out[2] > 200 && out[0] < 30, "{:?}", &out[..4]);
    }
}
