//! The image work every backend shares: an X server's pixel layouts
//! read into B, G, R, X bytes, the size a picture scales down to, the
//! box-filter scaling, and the [`VideoFrame`] that comes out.

use crate::video::VideoFrame;
use crate::MediaError;

/// The even size that `width × height` scales down to so as to fit in
/// `max_width × max_height`, keeping the aspect ratio (never scaled up).
pub(crate) fn fit_size(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width.max(2)), u64::from(height.max(2)));
    let (mw, mh) = (u64::from(max_width.max(2)), u64::from(max_height.max(2)));
    let (mut dw, mut dh) = (w, h);
    if dw > mw {
        dh = dh * mw / dw;
        dw = mw;
    }
    if dh > mh {
        dw = dw * mh / dh;
        dh = mh;
    }
    ((dw as u32 & !1).max(2), (dh as u32 & !1).max(2))
}

/// Scales (box filter: each output pixel is the mean of the source pixels
/// it covers) or crops 4-byte pixels (`stride` bytes a row) to exactly
/// `dw × dh`, tightly packed. `dw ≤ sw` and `dh ≤ sh`.
pub(crate) fn scale_bgrx(
    src: &[u8],
    sw: usize,
    sh: usize,
    stride: usize,
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; dw * dh * 4];
    if dw + 1 >= sw && dh + 1 >= sh {
        // The same size but for an odd column or row: a copy.
        for row in 0..dh {
            out[row * dw * 4..(row + 1) * dw * 4]
                .copy_from_slice(&src[row * stride..row * stride + dw * 4]);
        }
        return out;
    }
    // Source column and row ranges of each output column and row.
    let cols: Vec<(usize, usize)> = (0..dw)
        .map(|x| {
            let a = x * sw / dw;
            let b = ((x + 1) * sw / dw).max(a + 1);
            (a, b)
        })
        .collect();
    let mut acc = vec![[0u32; 3]; dw];
    for y in 0..dh {
        let (ra, rb) = (y * sh / dh, ((y + 1) * sh / dh).max(y * sh / dh + 1));
        acc.iter_mut().for_each(|a| *a = [0; 3]);
        for row in ra..rb {
            let line = &src[row * stride..];
            for (a, &(ca, cb)) in acc.iter_mut().zip(&cols) {
                for px in line[ca * 4..cb * 4].chunks_exact(4) {
                    a[0] += u32::from(px[0]);
                    a[1] += u32::from(px[1]);
                    a[2] += u32::from(px[2]);
                }
            }
        }
        let dst = &mut out[y * dw * 4..(y + 1) * dw * 4];
        for ((px, a), &(ca, cb)) in dst.chunks_exact_mut(4).zip(&acc).zip(&cols) {
            let n = ((cb - ca) * (rb - ra)) as u32;
            px[0] = ((a[0] + n / 2) / n) as u8;
            px[1] = ((a[1] + n / 2) / n) as u8;
            px[2] = ((a[2] + n / 2) / n) as u8;
            px[3] = 255;
        }
    }
    out
}

/// How the X server lays out a ZPixmap image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PixelLayout {
    /// 8, 16, 24 or 32.
    pub bits_per_pixel: u8,
    /// Row padding, in bits (8, 16 or 32).
    pub scanline_pad: u8,
    /// `true`: least significant byte first (the X server's image byte
    /// order).
    pub lsb_first: bool,
    pub red_mask: u32,
    pub green_mask: u32,
    pub blue_mask: u32,
}

impl PixelLayout {
    /// Bytes a row of `width` pixels takes.
    pub(crate) fn stride(self, width: usize) -> usize {
        let pad = usize::from(self.scanline_pad.max(8));
        (width * usize::from(self.bits_per_pixel)).div_ceil(pad) * pad / 8
    }

    /// Already B, G, R, X bytes in memory.
    fn is_bgrx(self) -> bool {
        self.bits_per_pixel == 32
            && self.lsb_first
            && (self.red_mask, self.green_mask, self.blue_mask) == (0xff_0000, 0xff00, 0xff)
    }

    /// The image as tightly packed B, G, R, X bytes (X = 255); `None` for
    /// a pixel size we cannot read (indexed colour, under 15 bits).
    pub(crate) fn to_bgrx(self, data: &[u8], width: usize, height: usize) -> Option<Vec<u8>> {
        let stride = self.stride(width);
        let bytes = usize::from(self.bits_per_pixel) / 8;
        if !matches!(self.bits_per_pixel, 16 | 24 | 32)
            || self.red_mask == 0
            || self.green_mask == 0
            || self.blue_mask == 0
            || data.len() < stride * height.saturating_sub(1) + width * bytes
        {
            return None;
        }
        let channel = |mask: u32| {
            let shift = mask.trailing_zeros();
            let max = mask >> shift;
            move |p: u32| -> u8 { (((p & mask) >> shift) * 255 / max) as u8 }
        };
        let (r, g, b) = (
            channel(self.red_mask),
            channel(self.green_mask),
            channel(self.blue_mask),
        );
        let mut out = Vec::with_capacity(width * height * 4);
        for row in 0..height {
            let line = &data[row * stride..row * stride + width * bytes];
            for px in line.chunks_exact(bytes) {
                let mut p = 0u32;
                for (i, &byte) in px.iter().enumerate() {
                    let shift = if self.lsb_first {
                        8 * i
                    } else {
                        8 * (bytes - 1 - i)
                    };
                    p |= u32::from(byte) << shift;
                }
                out.extend_from_slice(&[b(p), g(p), r(p), 255]);
            }
        }
        Some(out)
    }
}

/// A captured image in the server's layout to a [`VideoFrame`] no larger
/// than `max_width × max_height`.
pub(crate) fn image_to_frame(
    layout: &PixelLayout,
    data: &[u8],
    width: u32,
    height: u32,
    max_width: u32,
    max_height: u32,
) -> Result<VideoFrame, MediaError> {
    if width < 2 || height < 2 {
        return Err(MediaError::ScreenCapture(format!(
            "a {width}x{height} image is too small"
        )));
    }
    let (w, h) = (width as usize, height as usize);
    let converted;
    let (pixels, stride) = if layout.is_bgrx() {
        (data, layout.stride(w))
    } else {
        converted = layout.to_bgrx(data, w, h).ok_or_else(|| {
            MediaError::ScreenCapture(format!(
                "unsupported pixel layout {layout:?} ({} bytes for {width}x{height})",
                data.len()
            ))
        })?;
        (&converted[..], w * 4)
    };
    if pixels.len() < stride * (h - 1) + w * 4 {
        return Err(MediaError::ScreenCapture(format!(
            "{} bytes for a {width}x{height} image",
            pixels.len()
        )));
    }
    let (dw, dh) = fit_size(width, height, max_width.min(8192), max_height.min(8192));
    let scaled = scale_bgrx(pixels, w, h, stride, dw as usize, dh as usize);
    VideoFrame::from_bgra(dw, dh, &scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_even_sizes() {
        assert_eq!(fit_size(1920, 1080, 1280, 720), (1280, 720));
        assert_eq!(fit_size(1920, 1080, 640, 640), (640, 360));
        assert_eq!(fit_size(641, 481, 1920, 1080), (640, 480));
        assert_eq!(fit_size(1080, 1920, 1280, 720), (404, 720));
        assert_eq!(fit_size(3, 3, 1, 1), (2, 2));
    }

    #[test]
    fn box_scaling_averages_and_crop_copies() {
        // 4×2, left half white, right half black, 4-byte rows padded to 20.
        let mut src = vec![0u8; 20 * 2];
        for row in 0..2 {
            for col in 0..2 {
                src[row * 20 + col * 4..row * 20 + col * 4 + 4]
                    .copy_from_slice(&[255, 255, 255, 0]);
            }
        }
        let half = scale_bgrx(&src, 4, 2, 20, 2, 2);
        assert_eq!(&half[..4], &[255, 255, 255, 255]);
        assert_eq!(&half[4..8], &[0, 0, 0, 255]);
        let one = scale_bgrx(&src, 4, 2, 20, 2, 1);
        assert_eq!(one.len(), 8);
        // Crop of an odd width: 3×2 to 2×2 copies the first two columns.
        let crop = scale_bgrx(&src, 3, 2, 20, 2, 2);
        assert_eq!(&crop[..8], &src[..8]);
        assert_eq!(&crop[8..16], &src[20..28]);
    }

    #[test]
    fn layouts_other_than_bgrx_convert() {
        // 16-bit 5-6-5, LSB first, 2 pixels: pure red then pure blue; rows
        // padded to 32 bits.
        let layout = PixelLayout {
            bits_per_pixel: 16,
            scanline_pad: 32,
            lsb_first: true,
            red_mask: 0xf800,
            green_mask: 0x07e0,
            blue_mask: 0x001f,
        };
        assert_eq!(layout.stride(3), 8);
        let data = [0x00, 0xf8, 0x1f, 0x00];
        let bgrx = layout.to_bgrx(&data, 2, 1).unwrap();
        assert_eq!(bgrx, vec![0, 0, 255, 255, 255, 0, 0, 255]);
        // 24-bit packed, MSB first (R, G, B bytes).
        let layout = PixelLayout {
            bits_per_pixel: 24,
            scanline_pad: 8,
            lsb_first: false,
            red_mask: 0xff_0000,
            green_mask: 0xff00,
            blue_mask: 0xff,
        };
        let bgrx = layout.to_bgrx(&[10, 20, 30], 1, 1).unwrap();
        assert_eq!(bgrx, vec![30, 20, 10, 255]);
        // Indexed colour: refused.
        let layout = PixelLayout {
            bits_per_pixel: 8,
            ..layout
        };
        assert!(layout.to_bgrx(&[0; 4], 2, 2).is_none());
    }
}
