//! A camera's raw pictures (YUYV, NV12, grey, RGB) to I420, with the
//! layout read from the buffer's length.

use nokhwa::utils::FrameFormat;

use crate::video::frame::i420_len;
use crate::video::VideoFrame;

/// Packed YUYV (Y0 U Y1 V per two pixels, rows `stride` bytes apart) to
/// I420 at `width × height` rounded down to even; the chroma of two rows is
/// averaged. `None` if `src` is too short.
pub fn yuyv_to_i420(src: &[u8], width: u32, height: u32, stride: usize) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 || stride < w * 2 || src.len() < stride * (h - 1) + w * 2 {
        return None;
    }
    let mut data = vec![0u8; i420_len(w as u32, h as u32)];
    let (y, uv) = data.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut((w / 2) * (h / 2));
    for row in 0..h {
        let line = &src[row * stride..row * stride + w * 2];
        for (dst, px) in y[row * w..(row + 1) * w]
            .iter_mut()
            .zip(line.iter().step_by(2))
        {
            *dst = *px;
        }
    }
    for row in 0..h / 2 {
        let a = &src[2 * row * stride..2 * row * stride + w * 2];
        let b = &src[(2 * row + 1) * stride..(2 * row + 1) * stride + w * 2];
        for col in 0..w / 2 {
            let i = col * 4;
            u[row * (w / 2) + col] = (u16::from(a[i + 1]) + u16::from(b[i + 1])).div_ceil(2) as u8;
            v[row * (w / 2) + col] = (u16::from(a[i + 3]) + u16::from(b[i + 3])).div_ceil(2) as u8;
        }
    }
    VideoFrame::from_i420(w as u32, h as u32, data).ok()
}

/// NV12 (a Y plane, then one plane of interleaved U, V at half size; rows
/// `stride` bytes apart in both, the UV plane at `uv_offset`) to I420 at
/// `width × height` rounded down to even. `None` if `src` is too short.
pub fn nv12_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    uv_offset: usize,
) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0
        || h == 0
        || stride < w
        || uv_offset < stride * (h - 1) + w
        || src.len() < uv_offset + stride * (h / 2 - 1) + w
    {
        return None;
    }
    let mut data = vec![0u8; i420_len(w as u32, h as u32)];
    let (y, uv) = data.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut((w / 2) * (h / 2));
    for row in 0..h {
        y[row * w..(row + 1) * w].copy_from_slice(&src[row * stride..row * stride + w]);
    }
    for row in 0..h / 2 {
        let line = &src[uv_offset + row * stride..uv_offset + row * stride + w];
        for col in 0..w / 2 {
            u[row * (w / 2) + col] = line[2 * col];
            v[row * (w / 2) + col] = line[2 * col + 1];
        }
    }
    VideoFrame::from_i420(w as u32, h as u32, data).ok()
}

/// One byte per pixel of luma to I420 (grey chroma).
fn gray_to_i420(src: &[u8], width: u32, height: u32, stride: usize) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 || stride < w || src.len() < stride * (h - 1) + w {
        return None;
    }
    let mut frame = VideoFrame::black(w as u32, h as u32).ok()?;
    let (y, _, _) = frame.planes_mut();
    for row in 0..h {
        y[row * w..(row + 1) * w].copy_from_slice(&src[row * stride..row * stride + w]);
    }
    Some(frame)
}

/// Three bytes per pixel, R, G, B (`bgr`: B, G, R), to I420.
fn rgb_to_i420(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    bgr: bool,
) -> Option<VideoFrame> {
    let (w, h) = ((width & !1) as usize, (height & !1) as usize);
    if w == 0 || h == 0 || stride < w * 3 || src.len() < stride * (h - 1) + w * 3 {
        return None;
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        let line = &src[row * stride..row * stride + w * 3];
        if bgr {
            for px in line.chunks_exact(3) {
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        } else {
            rgb.extend_from_slice(line);
        }
    }
    VideoFrame::from_rgb(w as u32, h as u32, &rgb).ok()
}

/// A camera picture in `format` (as the backend labels it) to I420. The
/// layout is checked against the buffer's length: rows may be padded, an
/// NV12 Y plane may have extra rows (Media Foundation aligns it), and
/// AVFoundation labels 4:2:0 bi-planar buffers YUYV — a buffer too short
/// for YUYV but right for NV12 is read as NV12.
pub(crate) fn convert(
    format: FrameFormat,
    data: &[u8],
    width: u32,
    height: u32,
) -> Result<VideoFrame, String> {
    let (w, h, len) = (width as usize, height as usize, data.len());
    if w < 2 || h < 2 {
        return Err(format!("a {width}x{height} picture"));
    }
    // Rows padded to a larger stride show as a length that is a whole
    // multiple of the height.
    let stride_for = |bytes_per_row: usize| {
        if len % h == 0 && len / h >= bytes_per_row {
            len / h
        } else {
            bytes_per_row
        }
    };
    let nv12 = || {
        // The Y plane is `stride × plane_rows`, then half as many UV rows.
        let plane_rows = if (len * 2) % (3 * w) == 0 && len * 2 / (3 * w) >= h {
            len * 2 / (3 * w)
        } else {
            h
        };
        nv12_to_i420(data, width, height, w, w * plane_rows)
    };
    let frame = match format {
        FrameFormat::YUYV if len >= w * h * 2 => {
            yuyv_to_i420(data, width, height, stride_for(w * 2))
        }
        FrameFormat::YUYV | FrameFormat::NV12 => nv12(),
        FrameFormat::GRAY => gray_to_i420(data, width, height, stride_for(w)),
        FrameFormat::RAWRGB => rgb_to_i420(data, width, height, stride_for(w * 3), false),
        FrameFormat::RAWBGR => rgb_to_i420(data, width, height, stride_for(w * 3), true),
        FrameFormat::MJPEG => return Err("MJPEG pictures are not supported".into()),
    };
    frame.ok_or_else(|| format!("{len} bytes do not make a {width}x{height} {format} picture"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_converts_and_crops_odd_sizes() {
        // 4×2: Y 10 20 30 40 / 50 60 70 80, U 100/110 and 120/130 in the
        // two rows, V 200/210 and 220/230.
        let src = [
            10, 100, 20, 200, 30, 120, 40, 220, //
            50, 110, 60, 210, 70, 130, 80, 230,
        ];
        let f = yuyv_to_i420(&src, 4, 2, 8).unwrap();
        let (y, u, v) = f.planes();
        assert_eq!(y, &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(u, &[105, 125]);
        assert_eq!(v, &[205, 225]);
        // 5×3 in rows of 12 bytes (padded): cropped to 4×2.
        let mut padded = vec![0u8; 12 * 3];
        for row in 0..2 {
            padded[row * 12..row * 12 + 8].copy_from_slice(&src[row * 8..row * 8 + 8]);
        }
        let f = yuyv_to_i420(&padded, 5, 3, 12).unwrap();
        assert_eq!((f.width(), f.height()), (4, 2));
        assert_eq!(f.planes().0, &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert!(yuyv_to_i420(&src[..15], 4, 2, 8).is_none());
    }

    #[test]
    fn nv12_converts_and_crops_odd_sizes() {
        // 4×2: Y plane, then one UV row: U 1, V 2, U 3, V 4.
        let src = [10, 20, 30, 40, 50, 60, 70, 80, 1, 2, 3, 4];
        let f = nv12_to_i420(&src, 4, 2, 4, 8).unwrap();
        let (y, u, v) = f.planes();
        assert_eq!(y, &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(u, &[1, 3]);
        assert_eq!(v, &[2, 4]);
        assert!(nv12_to_i420(&src[..11], 4, 2, 4, 8).is_none());
        // 3×3 is read as 2×2.
        let src = [10, 20, 0, 50, 60, 0, 0, 0, 0, 7, 8, 0];
        let f = nv12_to_i420(&src, 3, 3, 3, 9).unwrap();
        assert_eq!((f.width(), f.height()), (2, 2));
        assert_eq!(f.planes(), (&[10, 20, 50, 60][..], &[7][..], &[8][..]));
    }

    #[test]
    fn colours_survive_yuyv() {
        // Red in BT.601 studio range: Y 81, U 90, V 240.
        let src: Vec<u8> = std::iter::repeat_n([81, 90, 81, 240], 8)
            .flatten()
            .collect();
        let f = yuyv_to_i420(&src, 4, 4, 8).unwrap();
        let [r, g, b] = f.rgb_at(1, 1);
        assert!(r > 240 && g < 15 && b < 15, "{:?}", [r, g, b]);
    }

    #[test]
    fn convert_reads_the_layout_from_the_length() {
        // YUYV rows padded from 8 to 16 bytes.
        let mut src = vec![0u8; 16 * 2];
        src[..8].copy_from_slice(&[1, 128, 2, 128, 3, 128, 4, 128]);
        src[16..24].copy_from_slice(&[5, 128, 6, 128, 7, 128, 8, 128]);
        let f = convert(FrameFormat::YUYV, &src, 4, 2).unwrap();
        assert_eq!(f.planes().0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        // Labelled YUYV but NV12-sized (AVFoundation's 4:2:0 formats).
        let nv12 = [10, 20, 30, 40, 50, 60, 70, 80, 1, 2, 3, 4];
        let f = convert(FrameFormat::YUYV, &nv12, 4, 2).unwrap();
        assert_eq!(f.planes().1, &[1, 3]);
        // NV12 with a Y plane padded to 4 rows (as for a 16-row alignment).
        let mut tall = vec![0u8; 4 * 4 + 4 * 2];
        tall[..8].copy_from_slice(&nv12[..8]);
        tall[16..20].copy_from_slice(&[1, 2, 3, 4]);
        let f = convert(FrameFormat::NV12, &tall, 4, 2).unwrap();
        assert_eq!((f.planes().1, f.planes().2), (&[1, 3][..], &[2, 4][..]));
        // Grey, BGR.
        let f = convert(FrameFormat::GRAY, &[9; 4], 2, 2).unwrap();
        assert_eq!(f.planes(), (&[9, 9, 9, 9][..], &[128][..], &[128][..]));
        let f = convert(FrameFormat::RAWBGR, &[0, 0, 255].repeat(4), 2, 2).unwrap();
        assert!(f.rgb_at(0, 0)[0] > 240);
        // Short buffers and MJPEG are errors, not panics.
        assert!(convert(FrameFormat::YUYV, &[0; 5], 4, 2).is_err());
        assert!(convert(FrameFormat::MJPEG, &[0; 100], 4, 2).is_err());
        assert!(convert(FrameFormat::NV12, &[], 0, 0).is_err());
    }
}
