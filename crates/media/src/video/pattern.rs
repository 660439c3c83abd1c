//! [`TestPattern`]: a synthetic video source — colour bars over a moving
//! block — and [`bar_colours`] / [`bars_error`], which read the bars back
//! out of a picture that went through scaling, a codec and the network.

use std::time::{Duration, Instant};

use super::frame::{i420_len, yuv_to_rgb};
use super::{VideoFrame, VideoSource};
use crate::MediaError;

/// The eight bars, left to right: white, yellow, cyan, green, magenta, red,
/// blue, black — at 75 % intensity (191 of 255), as the SMPTE / EBU 75 %
/// bars. 75 % rather than 100 % keeps every colour inside what studio-range
/// YUV can carry without clipping, so a colour shifted by the codec reads
/// back shifted rather than clipped to the right value.
pub const BARS: [[u8; 3]; 8] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
    [0, 0, 0],
];

/// The dark grey behind the moving block.
const GREY: [u8; 3] = [48, 48, 48];
/// The moving block.
const WHITE: [u8; 3] = [235, 235, 235];

/// BT.601 studio-range RGB to YUV, the formulas of [`VideoFrame::from_rgba`].
fn rgb_to_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    [
        y.clamp(0, 255) as u8,
        u.clamp(0, 255) as u8,
        v.clamp(0, 255) as u8,
    ]
}

/// Which bar column `x` of a `width` wide picture is in.
fn bar_of(x: usize, width: usize) -> usize {
    (x * 8 / width).min(7)
}

/// A source of colour bars: the eight [`BARS`] over the top three quarters
/// of the picture; in the bottom quarter a white block moving left to
/// right, one step per frame, over dark grey, so that successive frames
/// differ (a codec has motion to encode, a viewer sees that it is live).
pub struct TestPattern {
    width: u32,
    height: u32,
    /// Time between frames; `None`: unpaced.
    period: Option<Duration>,
    /// When frame `index` of the current schedule is due: `start +
    /// index × period` (computed afresh each time, so no drift).
    start: Option<Instant>,
    index: u64,
    /// Frames made so far (the block's position).
    count: u64,
    /// Rows of bars (even).
    bars_rows: usize,
    /// One row of bars: Y (`width` bytes), U and V (`width / 2` each).
    bar_y: Vec<u8>,
    bar_u: Vec<u8>,
    bar_v: Vec<u8>,
    grey_y: u8,
    white_y: u8,
    /// The block: its rows (absolute, even bounds), width and step (even).
    block_rows: (usize, usize),
    block_w: usize,
    step: usize,
}

impl TestPattern {
    /// `width × height` (even) pictures, `fps` a second: `next_frame`
    /// sleeps until the next frame is due (the first comes at once; the
    /// schedule runs from then on, so sleeping late does not add up; a
    /// caller more than a frame behind starts a new schedule rather than
    /// getting a burst).
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        if fps == 0 || fps > 1000 {
            return Err(MediaError::Video(format!(
                "a test pattern at {fps} frames per second"
            )));
        }
        let mut p = Self::unpaced(width, height)?;
        p.period = Some(Duration::from_secs(1) / fps);
        Ok(p)
    }

    /// The same without pacing: `next_frame` returns at once (for tests and
    /// benchmarks).
    pub fn unpaced(width: u32, height: u32) -> Result<Self, MediaError> {
        // Validates the size the same way as every other frame.
        VideoFrame::black(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let yuv: Vec<[u8; 3]> = BARS.iter().map(|&c| rgb_to_yuv(c)).collect();
        let bar_y = (0..w).map(|x| yuv[bar_of(x, w)][0]).collect();
        // A chroma sample covers luma columns 2c and 2c+1: mean of the two.
        let chroma = |i: usize| -> Vec<u8> {
            (0..w / 2)
                .map(|c| {
                    let a = u16::from(yuv[bar_of(2 * c, w)][i]);
                    let b = u16::from(yuv[bar_of(2 * c + 1, w)][i]);
                    (a + b).div_ceil(2) as u8
                })
                .collect()
        };
        let bars_rows = (h * 3 / 4) & !1;
        let bottom = h - bars_rows;
        let block_top = (bars_rows + bottom / 4) & !1;
        let block_bottom = ((bars_rows + bottom * 3 / 4) & !1)
            .max(block_top + 2)
            .min(h);
        let block_w = ((w / 10) & !1).max(2);
        let step = ((w / 80) & !1).max(2);
        Ok(TestPattern {
            width,
            height,
            period: None,
            start: None,
            index: 0,
            count: 0,
            bars_rows,
            bar_y,
            bar_u: chroma(1),
            bar_v: chroma(2),
            grey_y: rgb_to_yuv(GREY)[0],
            white_y: rgb_to_yuv(WHITE)[0],
            block_rows: (block_top, block_bottom),
            block_w,
            step,
        })
    }

    /// Sleeps until the next frame is due.
    fn pace(&mut self) {
        let Some(period) = self.period else { return };
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let due = start + period.saturating_mul(u32::try_from(self.index).unwrap_or(u32::MAX));
        if due > now {
            std::thread::sleep(due - now);
            self.index += 1;
        } else if now - due > period {
            // More than a frame late (the caller was busy): start again
            // from now instead of catching up with a burst.
            self.start = Some(now);
            self.index = 1;
        } else {
            self.index += 1;
        }
        // Keep the multiplier small (u32) on long runs: re-anchor on the
        // exact due time every hour or so of frames.
        if self.index >= 100_000 {
            self.start = Some(start + period * 100_000);
            self.index -= 100_000;
        }
    }

    /// The picture for frame `count`.
    fn render(&self) -> VideoFrame {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut data = Vec::with_capacity(i420_len(self.width, self.height));
        // The block's left edge: one step per frame, wrapping around.
        let travel = (w - self.block_w.min(w)) / self.step + 1;
        let x0 = (self.count % travel as u64) as usize * self.step;
        let x1 = (x0 + self.block_w).min(w);
        let mut block_row = vec![self.grey_y; w];
        block_row[x0..x1].fill(self.white_y);
        let grey_row = vec![self.grey_y; w];

        for _ in 0..self.bars_rows {
            data.extend_from_slice(&self.bar_y);
        }
        for row in self.bars_rows..h {
            let in_block = row >= self.block_rows.0 && row < self.block_rows.1;
            data.extend_from_slice(if in_block { &block_row } else { &grey_row });
        }
        // Chroma: the bars, then neutral (grey and white have no colour).
        for plane in [&self.bar_u, &self.bar_v] {
            for _ in 0..self.bars_rows / 2 {
                data.extend_from_slice(plane);
            }
            data.resize(data.len() + (w / 2) * (h / 2 - self.bars_rows / 2), 128);
        }
        VideoFrame::from_i420(self.width, self.height, data)
            .expect("size checked in the constructor and data built to it")
    }
}

impl VideoSource for TestPattern {
    fn next_frame(&mut self) -> Option<VideoFrame> {
        self.pace();
        let mut frame = self.render();
        self.count += 1;
        frame.captured = Instant::now();
        Some(frame)
    }
}

/// The mean RGB of each of the eight bars in `frame` (any size: the bars
/// are eighths of the width). Only the middle half of each bar's width and
/// the rows from 10 % to 60 % of the height are sampled, so that blur at
/// the bars' edges from scaling or a codec does not count.
pub fn bar_colours(frame: &VideoFrame) -> [[u8; 3]; 8] {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (yp, up, vp) = frame.planes();
    let y0 = h / 10;
    let y1 = (h * 6 / 10).max(y0 + 1).min(h);
    let mut out = [[0u8; 3]; 8];
    for (bar, colour) in out.iter_mut().enumerate() {
        let (left, right) = (bar * w / 8, (bar + 1) * w / 8);
        let x0 = (left + (right - left) / 4).min(w - 1);
        let x1 = (left + (right - left) * 3 / 4).max(x0 + 1).min(w);
        let mut sum = [0u64; 3];
        for y in y0..y1 {
            let (row, crow) = (y * w, (y / 2) * (w / 2));
            for x in x0..x1 {
                let c = crow + x / 2;
                let rgb = yuv_to_rgb(yp[row + x], up[c], vp[c]);
                for i in 0..3 {
                    sum[i] += u64::from(rgb[i]);
                }
            }
        }
        let n = ((y1 - y0) * (x1 - x0)) as u64;
        for i in 0..3 {
            colour[i] = ((sum[i] + n / 2) / n) as u8;
        }
    }
    out
}

/// The largest difference, over the bars and R, G and B, between
/// [`bar_colours`] of `frame` and [`BARS`]: 0 to 255, a few units for a
/// pattern straight from [`TestPattern`], larger after lossy coding.
pub fn bars_error(frame: &VideoFrame) -> u8 {
    bar_colours(frame)
        .iter()
        .zip(BARS.iter())
        .flat_map(|(got, want)| got.iter().zip(want.iter()).map(|(a, b)| a.abs_diff(*b)))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_reads_back_its_bars() {
        for (w, h) in [(640, 480), (1280, 720), (320, 240), (200, 150), (16, 16)] {
            let mut p = TestPattern::unpaced(w, h).unwrap();
            let f = p.next_frame().unwrap();
            assert_eq!((f.width(), f.height()), (w, h));
            let err = bars_error(&f);
            assert!(err <= 3, "{w}x{h}: {:?} off by {err}", bar_colours(&f));
            // Halved (as the sender does when bandwidth is short) the bars
            // are still there.
            if w >= 64 {
                assert!(bars_error(&f.half()) <= 3, "{w}x{h} halved");
            }
        }
    }

    #[test]
    fn pattern_bottom_is_grey_with_a_moving_white_block() {
        let mut p = TestPattern::unpaced(640, 480).unwrap();
        let a = p.next_frame().unwrap();
        let b = p.next_frame().unwrap();
        assert_ne!(a.data(), b.data(), "successive frames differ");
        // The bars part is the same in both.
        let bars_len = 640 * 360;
        assert_eq!(a.data()[..bars_len], b.data()[..bars_len]);
        let row = 420; // in the bottom quarter, inside the block's rows
        let white_x = |f: &VideoFrame| (0..640).find(|&x| f.rgb_at(x, row)[0] > 200).unwrap();
        assert_eq!(white_x(&a), 0);
        assert!(white_x(&b) > 0);
        let grey = a.rgb_at(639, row);
        assert!(grey.iter().all(|&c| (40..=56).contains(&c)), "{grey:?}");
        assert!(a.rgb_at(0, 470)[0] < 60, "grey under the block");
        // The block wraps around instead of leaving the picture.
        for _ in 0..200 {
            let f = p.next_frame().unwrap();
            assert!((0..640).any(|x| f.rgb_at(x, row)[0] > 200));
        }
    }

    #[test]
    fn pattern_pacing_holds_the_frame_rate() {
        let mut p = TestPattern::new(160, 120, 50).unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            let f = p.next_frame().unwrap();
            assert!(f.captured >= t);
        }
        // Frame 0 at once, frame 9 at 9 × 20 ms.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(178), "{took:?}");
    }

    #[test]
    fn pattern_rejects_bad_sizes_and_rates() {
        assert!(TestPattern::unpaced(641, 480).is_err());
        assert!(TestPattern::unpaced(0, 480).is_err());
        assert!(TestPattern::new(640, 480, 0).is_err());
    }

    #[test]
    fn bars_error_sees_a_wrong_colour() {
        let mut f = TestPattern::unpaced(320, 240)
            .unwrap()
            .next_frame()
            .unwrap();
        assert!(bars_error(&f) <= 3);
        // Paint everything black: white is then off by 191.
        let (y, u, v) = f.planes_mut();
        y.fill(16);
        u.fill(128);
        v.fill(128);
        assert_eq!(bars_error(&f), 191);
    }

    /// Cost of a 640×480 frame (printed; no bound asserted).
    #[test]
    fn pattern_speed_640x480() {
        let mut p = TestPattern::unpaced(640, 480).unwrap();
        let t = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(p.next_frame());
        }
        eprintln!(
            "test pattern 640x480: {:.3} ms/frame",
            t.elapsed().as_secs_f64() * 10.0
        );
    }
}
