#!/usr/bin/env python3
"""Writes ringtone.wav and ringback.wav next to this script (Python stdlib only).

Both are the classic North American two-tone 440 Hz + 480 Hz signal, 8 kHz mono
16-bit PCM, with 10 ms fades so the loops don't click. The output is
deterministic, so re-running it leaves the committed files unchanged.

  ringtone.wav  2 s tone + 1 s silence (the 2 s on / 4 s off ring cut to a 3 s loop)
  ringback.wav  1 s tone + 2 s silence (what the caller hears while it rings)

Run: python3 ui/sounds/make_sounds.py
"""

import math
import struct
import wave
from pathlib import Path

RATE = 8000
FADE_S = 0.010


def two_tone(on_s, off_s, amplitude):
    """Samples of 440+480 Hz for on_s seconds, then silence for off_s seconds."""
    on = int(on_s * RATE)
    off = int(off_s * RATE)
    fade = int(FADE_S * RATE)
    samples = []
    for n in range(on):
        t = n / RATE
        v = 0.5 * (math.sin(2 * math.pi * 440 * t) + math.sin(2 * math.pi * 480 * t))
        env = min(1.0, n / fade, (on - 1 - n) / fade)
        samples.append(int(round(v * env * amplitude * 32767)))
    samples.extend([0] * off)
    return samples


def write(path, samples):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack("<%dh" % len(samples), *samples))


def main():
    here = Path(__file__).resolve().parent
    write(here / "ringtone.wav", two_tone(2.0, 1.0, 0.6))
    write(here / "ringback.wav", two_tone(1.0, 2.0, 0.4))


if __name__ == "__main__":
    main()
