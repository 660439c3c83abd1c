//! Which of a camera's modes to ask for: the raw one closest to the
//! asked size and rate.

use nokhwa::utils::{CameraFormat, FrameFormat};

/// The frame formats we convert ourselves.
pub(super) const RAW_FORMATS: [FrameFormat; 5] = [
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::GRAY,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
];

/// Every format, so that a camera opens whatever it offers and we can see
/// its modes.
pub(super) const ALL_FORMATS: [FrameFormat; 6] = [
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::GRAY,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::MJPEG,
];

/// The raw mode closest to `width × height` at `fps`: the cost is the size
/// ratio's log plus twice the log of any rate shortfall (a third of the
/// rate costs more than twice or half the size), a little for a rate above
/// what was asked, and a little for grey or RGB over YUYV and NV12. `None`
/// when nothing raw is offered.
pub(crate) fn choose_format(
    modes: &[CameraFormat],
    width: u32,
    height: u32,
    fps: u32,
) -> Option<CameraFormat> {
    let want_area = f64::from(width.max(2)) * f64::from(height.max(2));
    let want_fps = f64::from(fps.max(1));
    let cost = |m: &CameraFormat| {
        let area = f64::from(m.width().max(1)) * f64::from(m.height().max(1));
        let rate = f64::from(m.frame_rate().max(1));
        let size = (area / want_area).ln().abs();
        let slow = (want_fps / rate).ln().max(0.0) * 2.0;
        let fast = (rate / want_fps).ln().max(0.0) * 0.1;
        let format = match m.format() {
            FrameFormat::YUYV | FrameFormat::NV12 => 0.0,
            FrameFormat::RAWRGB | FrameFormat::RAWBGR => 0.2,
            _ => 1.0,
        };
        size + slow + fast + format
    };
    modes
        .iter()
        .filter(|m| RAW_FORMATS.contains(&m.format()) && m.width() >= 2 && m.height() >= 2)
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nokhwa::utils::Resolution;

    fn mode(w: u32, h: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new(Resolution::new(w, h), format, fps)
    }

    #[test]
    fn the_closest_raw_mode_is_chosen() {
        let modes = [
            mode(640, 480, FrameFormat::YUYV, 30),
            mode(1280, 720, FrameFormat::YUYV, 10),
            mode(1280, 720, FrameFormat::MJPEG, 30),
            mode(320, 240, FrameFormat::YUYV, 30),
            mode(640, 480, FrameFormat::YUYV, 15),
        ];
        // 720p30 asked: 640×480 at 30 beats 720p at 10; MJPEG is out.
        assert_eq!(choose_format(&modes, 1280, 720, 30), Some(modes[0]));
        // 720p at 10 fps is what was asked.
        assert_eq!(choose_format(&modes, 1280, 720, 10), Some(modes[1]));
        assert_eq!(choose_format(&modes, 320, 240, 30), Some(modes[3]));
        // 15 fps asked: 640×480 at 15 rather than at 30.
        assert_eq!(choose_format(&modes, 640, 480, 15), Some(modes[4]));
        // NV12 and YUYV before RGB.
        let modes = [
            mode(640, 480, FrameFormat::RAWRGB, 30),
            mode(640, 480, FrameFormat::NV12, 30),
        ];
        assert_eq!(choose_format(&modes, 640, 480, 30), Some(modes[1]));
        // MJPEG only: nothing.
        assert_eq!(
            choose_format(&[mode(640, 480, FrameFormat::MJPEG, 30)], 640, 480, 30),
            None
        );
    }
}
