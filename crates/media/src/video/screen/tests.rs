//! The screen source as a whole: its argument checks, and capture under
//! an Xvfb of its own.

use super::*;

#[test]
fn bad_arguments_are_errors() {
    assert!(matches!(
        ScreenSource::open(None, 0, 480, 10),
        Err(MediaError::Video(_))
    ));
    assert!(matches!(
        ScreenSource::open(None, 640, 480, 0),
        Err(MediaError::Video(_))
    ));
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod xvfb {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{
        AtomEnum, ConnectionExt as _, CreateWindowAux, PropMode, WindowClass,
    };
    use x11rb::wrapper::ConnectionExt as _;

    use super::super::x11::screens_on;
    use super::super::ScreenSource;
    use crate::video::VideoSource;
    use crate::MediaError;

    /// An Xvfb of our own, on a display number it picks itself
    /// (`-displayfd`), killed on drop.
    struct Xvfb {
        child: Child,
        display: String,
    }

    impl Xvfb {
        fn start(screen: &str) -> Xvfb {
            let mut child = match Command::new("Xvfb")
                .args([
                    "-displayfd",
                    "1",
                    "-nolisten",
                    "tcp",
                    "-screen",
                    "0",
                    screen,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) => panic!(
                    "cannot run Xvfb ({e}): the screen capture tests need it — install the \
                     Debian package xvfb (scripts/ensure-tools.sh, TEST_PACKAGES)"
                ),
            };
            let mut line = String::new();
            let stdout = child.stdout.take().expect("piped stdout");
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read Xvfb's display number");
            let n: u32 = match line.trim().parse() {
                Ok(n) => n,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("Xvfb did not start (it said {line:?} on its display fd)");
                }
            };
            Xvfb {
                child,
                display: format!(":{n}"),
            }
        }
    }

    impl Drop for Xvfb {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Two windows side by side filling the screen: left red (titled
    /// "left red"), right blue. Returns the connection (the windows
    /// live as long as it does) and the left window's id.
    fn paint_halves(display: &str) -> (x11rb::rust_connection::RustConnection, u32) {
        let (conn, n) = x11rb::connect(Some(display)).expect("connect to Xvfb");
        let screen = conn.setup().roots[n].clone();
        let (w, h) = (screen.width_in_pixels, screen.height_in_pixels);
        // Full red and full blue in the root visual's own masks (the
        // pixel values differ between 24 and 16 bits).
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| &d.visuals)
            .find(|v| v.visual_id == screen.root_visual)
            .expect("the root visual");
        let mut left = 0;
        for (i, colour) in [visual.red_mask, visual.blue_mask].into_iter().enumerate() {
            let window = conn.generate_id().unwrap();
            conn.create_window(
                screen.root_depth,
                window,
                screen.root,
                (i as u16 * w / 2) as i16,
                0,
                w / 2,
                h,
                0,
                WindowClass::INPUT_OUTPUT,
                screen.root_visual,
                &CreateWindowAux::new().background_pixel(colour),
            )
            .unwrap();
            if i == 0 {
                conn.change_property8(
                    PropMode::REPLACE,
                    window,
                    AtomEnum::WM_NAME,
                    AtomEnum::STRING,
                    b"left red",
                )
                .unwrap();
                left = window;
            }
            conn.map_window(window).unwrap();
        }
        conn.sync().unwrap();
        (conn, left)
    }

    fn assert_near(got: [u8; 3], want: [u8; 3], what: &str) {
        for i in 0..3 {
            assert!(
                (i32::from(got[i]) - i32::from(want[i])).abs() <= 8,
                "{what}: {got:?}, expected about {want:?}"
            );
        }
    }

    #[test]
    fn captures_the_screen_a_window_and_scales_under_xvfb() {
        let x = Xvfb::start("640x480x24");
        let (_conn, left) = paint_halves(&x.display);

        let list = screens_on(Some(&x.display)).unwrap();
        assert_eq!(list[0].id, "screen:0");
        assert_eq!((list[0].width, list[0].height), (640, 480));
        let window = list
            .iter()
            .find(|s| s.name == "left red")
            .expect("the titled window is listed");
        assert_eq!(window.id, format!("window:{left:#x}"));
        assert_eq!((window.width, window.height), (320, 480));
        // The untitled right window is not listed.
        assert_eq!(
            list.iter().filter(|s| s.id.starts_with("window:")).count(),
            1,
            "{list:?}"
        );

        // The whole screen.
        let mut screen = ScreenSource::open_on(Some(&x.display), None, 1920, 1080, 20).unwrap();
        let frame = screen.next_frame().unwrap();
        assert_eq!((frame.width(), frame.height()), (640, 480));
        assert_near(frame.rgb_at(10, 10), [255, 0, 0], "left");
        assert_near(frame.rgb_at(630, 470), [0, 0, 255], "right");
        assert_near(frame.rgb_at(300, 240), [255, 0, 0], "left of the middle");
        assert_near(frame.rgb_at(340, 240), [0, 0, 255], "right of the middle");

        // Scaled down to fit 160×160: 160×120, colours kept.
        let mut small =
            ScreenSource::open_on(Some(&x.display), Some("screen:0"), 160, 160, 30).unwrap();
        let frame = small.next_frame().unwrap();
        assert_eq!((frame.width(), frame.height()), (160, 120));
        assert_near(frame.rgb_at(20, 60), [255, 0, 0], "scaled left");
        assert_near(frame.rgb_at(140, 60), [0, 0, 255], "scaled right");

        // One window: all red, its own size.
        let mut win =
            ScreenSource::open_on(Some(&x.display), Some(&window.id), 1920, 1080, 30).unwrap();
        let frame = win.next_frame().unwrap();
        assert_eq!((frame.width(), frame.height()), (320, 480));
        assert_near(frame.rgb_at(0, 0), [255, 0, 0], "window");
        assert_near(frame.rgb_at(319, 479), [255, 0, 0], "window corner");

        // Paced at 20 fps: 6 more frames take about 250 ms (the first
        // is late already, so due at once).
        let start = std::time::Instant::now();
        for _ in 0..6 {
            assert!(screen.next_frame().is_some());
        }
        let elapsed = start.elapsed();
        // Paced, not free-running (a loose floor: a busy machine may
        // start the schedule late, and timing is for benchmarks).
        assert!(
            elapsed >= std::time::Duration::from_millis(150),
            "{elapsed:?}"
        );

        // Unknown ids are errors, not panics.
        for id in ["screen:7", "monitor:NOPE", "window:0x7fffff", "nonsense"] {
            let r = ScreenSource::open_on(Some(&x.display), Some(id), 640, 480, 10);
            assert!(
                matches!(r, Err(MediaError::ScreenCapture(_))),
                "{id}: {r:?}"
            );
        }

        // The X server going away ends the source.
        drop(x);
        assert!(screen.next_frame().is_none());
    }

    #[test]
    fn a_16_bit_screen_converts_under_xvfb() {
        let x = Xvfb::start("320x240x16");
        let (_conn, _) = paint_halves(&x.display);
        let mut screen = ScreenSource::open_on(Some(&x.display), None, 1920, 1080, 30).unwrap();
        let frame = screen.next_frame().unwrap();
        assert_eq!((frame.width(), frame.height()), (320, 240));
        assert_near(frame.rgb_at(10, 10), [255, 0, 0], "left");
        assert_near(frame.rgb_at(310, 230), [0, 0, 255], "right");
    }

    // (Not above 59535: x11rb adds the TCP port base, 6000, to the
    // display number in a u16.)
    #[test]
    fn no_such_display_is_an_error() {
        let r = ScreenSource::open_on(Some(":59123"), None, 640, 480, 10);
        assert!(matches!(r, Err(MediaError::ScreenCapture(_))), "{r:?}");
        assert!(matches!(
            screens_on(Some(":59123")),
            Err(MediaError::ScreenCapture(_))
        ));
    }
}
