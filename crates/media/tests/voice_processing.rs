//! Voice processing (cargo feature `voice-processing`): WebRTC's echo
//! canceller, noise suppressor and gain control on simulated rooms, and in
//! a call between two engines.

#![cfg(feature = "voice-processing")]

mod support;

use std::f64::consts::PI;
use std::time::Duration;

use callinvite_media::{
    AudioProcessing, AudioSource, MediaState, ToneSource, VoiceConfig, VoiceProcessing, VoiceStats,
    FRAME_SAMPLES, SAMPLE_RATE,
};
use support::{assert_hears, call_with, loopback, tone_power, unchanged};

const SR: f64 = SAMPLE_RATE as f64;

/// Deterministic white noise (xorshift64), uniform in −1..1.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Index of second `t`.
fn at(t: f64) -> usize {
    (t * SR) as usize
}

/// A voice-like far end, peak 1: the harmonics (up to 3.4 kHz) of a pitch
/// gliding around 150 Hz, shaped by two moving formants, in syllables of
/// about 250 ms, with a 300 ms pause every 2 s.
fn voice(n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    let mut phase = 0.0f64;
    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f64 / SR;
        let f0 = 150.0 + 40.0 * (2.0 * PI * 0.7 * t).sin() + 20.0 * (2.0 * PI * 2.3 * t).sin();
        phase += 2.0 * PI * f0 / SR;
        let f1 = 600.0 + 200.0 * (2.0 * PI * 1.1 * t).sin();
        let f2 = 1800.0 + 400.0 * (2.0 * PI * 0.8 * t).cos();
        let mut s = 0.0;
        let mut k = 1.0;
        while k * f0 < 3400.0 {
            let f = k * f0;
            let gain = 1.0 / (1.0 + ((f - f1) / 150.0).powi(2))
                + 0.5 / (1.0 + ((f - f2) / 250.0).powi(2))
                + 0.02;
            s += gain * (k * phase).sin();
            k += 1.0;
        }
        let syllables = (2.0 * PI * 2.0 * t).sin().abs().powf(0.6);
        let pause = if t % 2.0 > 1.7 { 0.0 } else { 1.0 };
        *o = s * syllables * pause;
    }
    let peak = out.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    out.iter_mut().for_each(|v| *v /= peak);
    out
}

/// A near-end talker at 440 Hz, amplitude `amp`: on 240 ms, off 160 ms
/// (with 10 ms ramps) — a steady tone would be taken for noise by the
/// noise suppressor, rightly.
fn talker(n: usize, amp: f64) -> Vec<f64> {
    (0..n).map(|i| talker_at(i, 440.0, amp)).collect()
}

/// Sample `i` of [`talker`] at `hz`.
fn talker_at(i: usize, hz: f64, amp: f64) -> f64 {
    let t = i as f64 / SR;
    let p = t % 0.4;
    let env = if p < 0.24 {
        (p / 0.01).min(1.0).min((0.24 - p) / 0.01)
    } else {
        0.0
    };
    amp * env * (2.0 * PI * hz * t).sin()
}

/// Whether sample `i` is in a gap of [`talker`] (20 ms away from its
/// edges).
fn in_gap(i: usize) -> bool {
    let p = (i as f64 / SR) % 0.4;
    p > 0.26 && p < 0.38
}

/// A room: `x` heard by the microphone 40 ms later at −10 dB, with a
/// decaying reverberation tail up to 150 ms.
fn room(x: &[f64]) -> Vec<f64> {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let direct = at(0.040);
    let mut taps = vec![(direct, 0.3)];
    for k in 1..110 {
        let d = direct + at(0.001) * k;
        taps.push((d, 0.08 * (-(k as f64) / 30.0).exp() * noise.next()));
    }
    (0..x.len())
        .map(|i| {
            taps.iter()
                .filter(|&&(d, _)| i >= d)
                .map(|&(d, g)| g * x[i - d])
                .sum()
        })
        .collect()
}

fn to_i16(x: &[f64]) -> Vec<i16> {
    x.iter()
        .map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Mean power (full scale = 1).
fn power(x: &[i16]) -> f64 {
    x.iter()
        .map(|&v| (f64::from(v) / 32768.0).powi(2))
        .sum::<f64>()
        / x.len() as f64
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// Runs `capture` and `render` through `vp` as the engine does — per 20 ms
/// tick the microphone frame, then the frame played — and returns the
/// processed capture and the module's stats each second.
fn run(vp: &mut VoiceProcessing, capture: &[i16], render: &[i16]) -> (Vec<i16>, Vec<VoiceStats>) {
    let mut out = capture.to_vec();
    let mut stats = Vec::new();
    for (k, (c, r)) in out
        .chunks_exact_mut(FRAME_SAMPLES)
        .zip(render.chunks_exact(FRAME_SAMPLES))
        .enumerate()
    {
        vp.process_capture(c);
        vp.process_render(r);
        if k % 50 == 49 {
            stats.push(vp.stats());
        }
    }
    (out, stats)
}

fn span(x: &[i16], from: f64, to: f64) -> &[i16] {
    &x[at(from)..at(to)]
}

/// The far end talks (0–9 s) and its echo comes back through a room at
/// about −10 dB (ERL); the near end talks from 6 s on (double talk 6–9 s,
/// near end alone 9–12 s). After 3 s of convergence, the echo alone must
/// be cancelled by far more than the near end's voice is touched.
#[test]
fn echo_is_cancelled_and_the_near_end_kept() {
    let n = at(12.0);
    let mut far = voice(n);
    far[at(9.0)..].fill(0.0);
    far.iter_mut().for_each(|v| *v *= 0.5);
    let echo = room(&far);
    let mut near = talker(n, 0.1);
    near[..at(6.0)].fill(0.0);
    let mut hiss = Noise(42);
    let capture: Vec<f64> = (0..n)
        .map(|i| echo[i] + near[i] + 0.0003 * hiss.next())
        .collect();
    let (far, capture, near) = (to_i16(&far), to_i16(&capture), to_i16(&near));
    let erl = db(power(span(&far, 3.0, 6.0)) / power(span(&capture, 3.0, 6.0)));
    eprintln!("echo path: ERL {erl:.1} dB");

    for (name, config) in [
        ("all stages", VoiceConfig::default()),
        (
            "without gain control",
            VoiceConfig {
                gain_control: false,
                ..VoiceConfig::default()
            },
        ),
    ] {
        let mut vp = VoiceProcessing::with_config(config).expect("voice processing");
        let (out, stats) = run(&mut vp, &capture, &far);
        let erle = |a: f64, b: f64| db(power(span(&capture, a, b)) / power(span(&out, a, b)));
        let kept = |a: f64, b: f64| {
            db(tone_power(span(&out, a, b), 440.0) / tone_power(span(&near, a, b), 440.0))
        };
        let (erle_first, erle_converged) = (erle(0.0, 1.0), erle(3.0, 6.0));
        let (double_talk, near_alone) = (kept(6.4, 9.0), kept(9.4, 12.0));
        // stats[k] covers second k..k+1.
        let echo_seen = stats[3..6]
            .iter()
            .filter_map(|s| s.echo_fraction)
            .sum::<f32>()
            / 3.0;
        let echo_after = stats[10..12]
            .iter()
            .filter_map(|s| s.echo_fraction)
            .sum::<f32>()
            / 2.0;
        eprintln!(
            "{name}: ERLE {erle_first:.1} dB in the first second, {erle_converged:.1} dB over 3–6 s; \
             near end {double_talk:+.1} dB in double talk, {near_alone:+.1} dB alone; \
             echo flagged in {:.0} % of frames with echo, {:.0} % once the far end is silent; \
             module: {:?}",
            echo_seen * 100.0,
            echo_after * 100.0,
            stats[5],
        );
        assert!(
            erle_converged >= 25.0,
            "{name}: ERLE {erle_converged:.1} dB"
        );
        if config.gain_control {
            // The gain control raises a quiet talker (−25 dBFS RMS): ~+10 dB here.
            assert!(
                (-3.0..=12.0).contains(&near_alone),
                "{name}: near end {near_alone:+.1} dB"
            );
        } else {
            assert!(
                near_alone.abs() <= 3.0,
                "{name}: near end {near_alone:+.1} dB"
            );
        }
        // In double talk the echo suppressor attenuates the near end too
        // (about 12 dB here), but far less than the echo.
        assert!(
            double_talk >= -18.0 && double_talk > -erle_converged + 15.0,
            "{name}: near end {double_talk:+.1} dB in double talk"
        );
        assert!(echo_seen >= 0.9, "{name}: echo flagged in {echo_seen}");
        assert!(echo_after <= 0.1, "{name}: echo flagged in {echo_after}");
    }
}

/// A talker (440 Hz, −25 dBFS RMS) in white noise at −35 dBFS: after the
/// noise estimate settles, the output's signal-to-noise ratio is better.
#[test]
fn noise_is_suppressed() {
    let n = at(10.0);
    let mut hiss = Noise(7);
    let clean = talker(n, 0.1);
    let noisy: Vec<f64> = clean.iter().map(|v| v + 0.03 * hiss.next()).collect();
    let noisy = to_i16(&noisy);
    let silence = vec![0i16; n];
    let mut vp = VoiceProcessing::new().expect("voice processing");
    let (out, _) = run(&mut vp, &noisy, &silence);

    // Signal: the talker's tone; noise: the power in its gaps.
    let gap_power = |x: &[i16]| {
        let gaps: Vec<f64> = (at(3.0)..n)
            .filter(|&i| in_gap(i))
            .map(|i| (f64::from(x[i]) / 32768.0).powi(2))
            .collect();
        gaps.iter().sum::<f64>() / gaps.len() as f64
    };
    let tone_in = tone_power(span(&noisy, 3.0, 10.0), 440.0);
    let tone_out = tone_power(span(&out, 3.0, 10.0), 440.0);
    let snr_in = db(tone_in / gap_power(&noisy));
    let snr_out = db(tone_out / gap_power(&out));
    eprintln!(
        "SNR {snr_in:.1} dB in, {snr_out:.1} dB out: {:+.1} dB; the talker {:+.1} dB, the noise {:+.1} dB",
        snr_out - snr_in,
        db(tone_out / tone_in),
        db(gap_power(&out) / gap_power(&noisy)),
    );
    assert!(
        snr_out - snr_in >= 6.0,
        "SNR gain {:.1} dB",
        snr_out - snr_in
    );
    assert!(
        db(tone_out / tone_in) >= -3.0,
        "talker {:+.1} dB",
        db(tone_out / tone_in)
    );
}

/// [`talker`] as a microphone: `hz` in 240 ms bursts.
struct Talker {
    hz: f64,
    amp: f64,
    i: usize,
}

impl AudioSource for Talker {
    fn read(&mut self, frame: &mut [i16]) -> bool {
        for s in frame.iter_mut() {
            *s = (talker_at(self.i, self.hz, self.amp) * 32768.0).round() as i16;
            self.i += 1;
        }
        true
    }
}

/// Two engines with voice processing, no echo path between speaker and
/// microphone: each hears the other's tone. A talks in bursts through every
/// stage; B sends a steady tone through echo cancellation, high-pass filter
/// and gain control (no noise suppression, which would rightly take a
/// steady tone for noise) — the echo canceller does not mistake what the
/// microphone hears for the echo of the other tone being played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_voice_processing_carries_both_voices() {
    support::init_tracing();
    let a_processing = VoiceProcessing::new().expect("voice processing");
    let b_processing = VoiceProcessing::with_config(VoiceConfig {
        noise_suppression: false,
        ..VoiceConfig::default()
    })
    .expect("voice processing");
    let (a, b) = call_with(
        (
            loopback(),
            Box::new(Talker {
                hz: 440.0,
                amp: 0.3,
                i: 0,
            }),
            Box::new(a_processing),
        ),
        (
            loopback(),
            Box::new(ToneSource::new(880.0, 0.3)),
            Box::new(b_processing),
        ),
        unchanged(),
        unchanged(),
    );
    let connect = Duration::from_secs(10);
    a.wait_for(MediaState::Connected, connect).await;
    b.wait_for(MediaState::Connected, connect).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let rec_a = a.sink.samples();
    let rec_b = b.sink.samples();
    let second = support::samples(1000);
    assert!(rec_a.len() >= 3 * second && rec_b.len() >= 3 * second);
    assert_hears("A hears B", &rec_a[rec_a.len() - second..], 880.0, 440.0);
    assert_hears("B hears A", &rec_b[rec_b.len() - second..], 440.0, 880.0);
    let (sa, sb) = (
        a.last_stats().expect("stats"),
        b.last_stats().expect("stats"),
    );
    eprintln!(
        "A: mic {:.3}, echo {:?}; B: mic {:.3}, echo {:?}",
        sa.mic_level, sa.echo, sb.mic_level, sb.echo
    );
    for (who, s) in [("A", &sa), ("B", &sb)] {
        let echo = s.echo.expect("the echo canceller reports");
        assert!(echo <= 0.2, "{who}: echo flagged in {echo} of the frames");
    }
    a.handle.close();
    a.wait_for(MediaState::Closed, connect).await;
    b.wait_for(MediaState::Closed, connect).await;
}
