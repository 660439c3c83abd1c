// Reads the 16-bit PCM WAV files the app and the CLI record, and measures
// tones in them (Goertzel), so a test can tell which frequency was heard.
import { readFileSync } from 'node:fs';

/** {samples: Int16Array (first channel), rate} of a 16-bit PCM WAV file. */
export function readWav(path) {
  const b = readFileSync(path);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${path}: not a WAV file`);
  let off = 12;
  let rate = 0;
  let channels = 1;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4);
    const size = b.readUInt32LE(off + 4);
    if (id === 'fmt ') {
      channels = b.readUInt16LE(off + 10);
      rate = b.readUInt32LE(off + 12);
      if (b.readUInt16LE(off + 22) !== 16) throw new Error(`${path}: not 16-bit`);
    } else if (id === 'data') {
      const n = Math.floor(Math.min(size, b.length - off - 8) / 2 / channels);
      const samples = new Int16Array(n);
      for (let i = 0; i < n; i++) samples[i] = b.readInt16LE(off + 8 + i * 2 * channels);
      return { samples, rate };
    }
    off += 8 + size + (size % 2);
  }
  throw new Error(`${path}: no data chunk`);
}

/** Power of `freq` in `samples` as a fraction of a full-scale sine's. */
export function tonePower(samples, rate, freq) {
  const w = (2 * Math.PI * freq) / rate;
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (const x of samples) {
    const s0 = x / 32768 + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const n = samples.length;
  return n ? (s1 * s1 + s2 * s2 - coeff * s1 * s2) / ((n * n) / 4) : 0;
}

export function rms(samples) {
  let sum = 0;
  for (const x of samples) sum += (x / 32768) ** 2;
  return samples.length ? Math.sqrt(sum / samples.length) : 0;
}

/**
 * Checks that the loudest second of the recording carries `expect` Hz well
 * above `own` Hz and a few other frequencies; returns a report for the log.
 */
export function hears(what, { samples, rate }, expect, own) {
  if (samples.length < rate) throw new Error(`${what}: only ${samples.length} samples recorded`);
  let best = 0;
  let bestRms = -1;
  for (let at = 0; at + rate <= samples.length; at += rate / 10) {
    const r = rms(samples.subarray(at, at + rate));
    if (r > bestRms) [best, bestRms] = [at, r];
  }
  const s = samples.subarray(best, best + rate);
  const heard = tonePower(s, rate, expect);
  let report = `${what}: rms ${bestRms.toFixed(3)}, ${expect} Hz ${heard.toFixed(4)}`;
  for (const other of [own, 300, 660, 1000, 1500]) {
    const p = tonePower(s, rate, other);
    report += `, ${other} Hz ${p.toFixed(5)}`;
    if (!(heard > 10 * p)) throw new Error(`${what}: ${expect} Hz does not dominate ${other} Hz: ${report}`);
  }
  if (!(bestRms > 0.05)) throw new Error(`${what}: near silence: ${report}`);
  return report;
}
