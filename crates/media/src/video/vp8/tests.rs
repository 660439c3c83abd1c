//! The encoder and decoder together: round trips, keyframes, bitrate,
//! bad input, and their cost (printed).

use super::encoder::EncodedFrame;
use super::*;
use crate::video::pattern::{bars_error, TestPattern};
use crate::video::{VideoFrame, VideoSource};
use crate::MediaError;
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
