// Tests of ui/video-frames.js (the pictures from the frame: scheme). Run: node --test ui/tests/
import { test, describe } from "node:test";
import assert from "node:assert/strict";

import * as V from "../video-frames.js";

describe("parseFrame and frameUrl", () => {
  const frame = ({ w, h, seq = 1, format = 0, look = 0, bytes = null, extra = 0, atMs = 1_764_500_000_123 }) => {
    const payload = bytes ?? (format === 1 ? w * h * 1.5 : w * h * 4);
    const buf = new ArrayBuffer(32 + payload + extra);
    const dv = new DataView(buf);
    dv.setUint32(0, w, true);
    dv.setUint32(4, h, true);
    dv.setUint32(8, seq % 2 ** 32, true);
    dv.setUint32(12, Math.floor(seq / 2 ** 32), true);
    dv.setUint32(16, atMs % 2 ** 32, true);
    dv.setUint32(20, Math.floor(atMs / 2 ** 32), true);
    dv.setUint32(24, format, true);
    dv.setUint32(28, look, true);
    new Uint8Array(buf, 32).fill(7);
    return buf;
  };
  test("an RGBA picture: size, number, when it came and the pixels without a copy", () => {
    const buf = frame({ w: 4, h: 2, seq: 2 ** 33 + 5 });
    const f = V.parseFrame(buf);
    assert.deepEqual([f.width, f.height, f.seq, f.atMs, f.format, f.half, f.mirror], [4, 2, 2 ** 33 + 5, 1_764_500_000_123, "rgba", false, false]);
    assert.equal(f.data.length, 32);
    assert.equal(f.data.buffer, buf);
    assert.equal(f.data[0], 7);
    assert.deepEqual(V.shownSize(f), { width: 4, height: 2 });
  });
  test("an I420 picture with its look", () => {
    const f = V.parseFrame(frame({ w: 4, h: 2, format: 1, look: 3 }));
    assert.deepEqual([f.format, f.half, f.mirror, f.data.length], ["i420", true, true, 12]);
    assert.deepEqual(V.shownSize(f), { width: 2, height: 1 });
  });
  test("anything else is not a picture", () => {
    assert.equal(V.parseFrame(frame({ w: 4, h: 2, extra: 1 })), null);
    assert.equal(V.parseFrame(frame({ w: 0, h: 2 })), null);
    assert.equal(V.parseFrame(frame({ w: 4, h: 2, format: 2 })), null);
    assert.equal(V.parseFrame(frame({ w: 3, h: 2, format: 1, bytes: 9 })), null);
    assert.equal(V.parseFrame(new ArrayBuffer(16)), null);
    assert.equal(V.parseFrame(null), null);
  });
  test("the URL asks for pictures after the last one drawn, as I420 unless told", () => {
    assert.equal(V.frameUrl("frame://localhost/remote", 41), "frame://localhost/remote?after=41&format=i420");
    assert.equal(V.frameUrl("http://frame.localhost/local", undefined, "rgba"), "http://frame.localhost/local?after=0&format=rgba");
    assert.equal(V.frameUrl("frame://localhost/local", 7, "vp8"), "frame://localhost/local?after=7&format=vp8");
    assert.equal(V.frameUrl("frame://localhost/local", 7, "png"), "frame://localhost/local?after=7&format=i420");
  });
});

describe("parseVp8Frames", () => {
  // Records as the backend writes them (src-tauri video/encoded.rs): 40-byte header, then the frame.
  const answer = (records) => {
    const size = records.reduce((n, r) => n + 40 + (r.bytes ?? r.len), 0);
    const buf = new ArrayBuffer(size);
    const dv = new DataView(buf);
    let at = 0;
    for (const r of records) {
      dv.setUint32(at, r.w ?? 640, true);
      dv.setUint32(at + 4, r.h ?? 480, true);
      dv.setUint32(at + 8, r.seq % 2 ** 32, true);
      dv.setUint32(at + 12, Math.floor(r.seq / 2 ** 32), true);
      dv.setUint32(at + 16, 1_764_500_000_123 % 2 ** 32, true);
      dv.setUint32(at + 20, Math.floor(1_764_500_000_123 / 2 ** 32), true);
      dv.setUint32(at + 24, r.format ?? 2, true);
      dv.setUint32(at + 28, r.flags ?? 0, true);
      dv.setUint32(at + 32, r.len, true);
      new Uint8Array(buf, at + 40, r.bytes ?? r.len).fill(r.seq % 256);
      at += 40 + (r.bytes ?? r.len);
    }
    return buf;
  };
  test("several frames in order, their flags, and the data without a copy", () => {
    const buf = answer([{ seq: 2 ** 33 + 1, flags: 4 | 2 | 1, len: 9 }, { seq: 2 ** 33 + 2, len: 3, w: 320, h: 240 }]);
    const f = V.parseVp8Frames(buf);
    assert.equal(f.length, 2);
    assert.deepEqual([f[0].seq, f[0].key, f[0].mirror, f[0].half, f[0].width, f[0].atMs, f[0].data.length], [2 ** 33 + 1, true, true, true, 640, 1_764_500_000_123, 9]);
    assert.deepEqual([f[1].seq, f[1].key, f[1].mirror, f[1].half, f[1].width, f[1].height, f[1].data.length], [2 ** 33 + 2, false, false, false, 320, 240, 3]);
    assert.equal(f[1].data.buffer, buf);
    assert.equal(f[1].data[0], (2 ** 33 + 2) % 256);
  });
  test("a cut or foreign answer is none", () => {
    assert.equal(V.parseVp8Frames(answer([{ seq: 1, len: 9, bytes: 8 }])), null);
    assert.equal(V.parseVp8Frames(answer([{ seq: 1, len: 0 }])), null);
    assert.equal(V.parseVp8Frames(answer([{ seq: 1, len: 4, format: 1 }])), null);
    assert.equal(V.parseVp8Frames(new ArrayBuffer(39)), null);
    assert.equal(V.parseVp8Frames(new ArrayBuffer(0)), null);
    assert.equal(V.parseVp8Frames(null), null);
  });
});

describe("i420ToRgba", () => {
  // The backend's formula (crates/media/src/video/frame.rs yuv_to_rgb), pixel by pixel.
  const yuvToRgb = (y, u, v) => {
    const c = y - 16, d = u - 128, e = v - 128;
    const cl = (x) => Math.max(0, Math.min(255, x));
    return [cl((298 * c + 409 * e + 128) >> 8), cl((298 * c - 100 * d - 208 * e + 128) >> 8), cl((298 * c + 516 * d + 128) >> 8)];
  };
  const picture = (w, h) => {
    const data = new Uint8Array(w * h * 1.5);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
    return data;
  };
  const pixel = (out, i) => [...new Uint8Array(out.buffer, i * 4, 4)];
  test("every pixel as the backend's formula, alpha 255", () => {
    const [w, h] = [18, 6];
    const data = picture(w, h);
    const out = new Uint32Array(w * h);
    V.i420ToRgba(data, w, h, false, false, out);
    const uo = w * h, vo = uo + (w / 2) * (h / 2);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const c = (y >> 1) * (w / 2) + (x >> 1);
        assert.deepEqual(pixel(out, y * w + x), [...yuvToRgb(data[y * w + x], data[uo + c], data[vo + c]), 255], `${x},${y}`);
      }
    }
  });
  test("mirrored: the same rows right to left", () => {
    const [w, h] = [8, 4];
    const data = picture(w, h);
    const plain = new Uint32Array(w * h);
    const mirrored = new Uint32Array(w * h);
    V.i420ToRgba(data, w, h, false, false, plain);
    V.i420ToRgba(data, w, h, false, true, mirrored);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) assert.equal(mirrored[y * w + x], plain[y * w + w - 1 - x]);
  });
  test("half size: the mean of each 2×2 block with its own chroma, mirrored too", () => {
    const [w, h] = [8, 4];
    const data = picture(w, h);
    const out = new Uint32Array((w / 2) * (h / 2));
    V.i420ToRgba(data, w, h, true, true, out);
    const uo = w * h, vo = uo + (w / 2) * (h / 2);
    for (let y = 0; y < h / 2; y++) {
      for (let x = 0; x < w / 2; x++) {
        const luma = (data[2 * y * w + 2 * x] + data[2 * y * w + 2 * x + 1] + data[(2 * y + 1) * w + 2 * x] + data[(2 * y + 1) * w + 2 * x + 1] + 2) >> 2;
        const c = y * (w / 2) + x;
        assert.deepEqual(pixel(out, y * (w / 2) + (w / 2 - 1 - x)), [...yuvToRgb(luma, data[uo + c], data[vo + c]), 255]);
      }
    }
  });
  test("the 75 % bars come out as the pattern's colours", () => {
    // White, yellow, … as the test pattern puts them in I420 (rgb_to_yuv of BARS), 2x2 each.
    const bars = [[180, 128, 128], [162, 44, 142], [131, 156, 44], [112, 72, 58], [84, 184, 198], [65, 100, 212], [35, 212, 114], [16, 128, 128]];
    const expected = [[191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0], [0, 0, 191], [0, 0, 0]];
    for (let i = 0; i < bars.length; i++) {
      const [y, u, v] = bars[i];
      const data = new Uint8Array([y, y, y, y, u, v]);
      const out = new Uint32Array(4);
      V.i420ToRgba(data, 2, 2, false, false, out);
      const got = pixel(out, 0).slice(0, 3);
      for (let k = 0; k < 3; k++) assert.ok(Math.abs(got[k] - expected[i][k]) <= 2, `bar ${i}: ${got} vs ${expected[i]}`);
    }
  });
  test("a 640×480 picture converts in a few milliseconds", () => {
    const data = picture(640, 480);
    const out = new Uint32Array(640 * 480);
    V.i420ToRgba(data, 640, 480, false, false, out);
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) V.i420ToRgba(data, 640, 480, false, false, out);
    const ms = (performance.now() - t0) / 10;
    assert.ok(ms < 50, `${ms} ms`);
  });
});

describe("FrameCounter", () => {
  test("pictures in the last second, in all, and mean times", () => {
    const c = new V.FrameCounter();
    for (let t = 0; t < 2000; t += 40) c.add(t);
    assert.equal(c.frames, 50);
    assert.equal(c.fps, 25);
    c.time("draw", 2);
    c.time("draw", 4);
    assert.equal(c.meanMs("draw"), 3);
    assert.equal(c.meanMs("fetch"), 0);
    c.resetTimes();
    assert.equal(c.meanMs("draw"), 0);
    assert.equal(c.frames, 50);
  });
});

describe("vp8NeedsNewDecoder", () => {
  const key = (width, height) => ({ key: true, width, height });
  test("a keyframe of another size needs a new decoder", () => {
    assert.equal(V.vp8NeedsNewDecoder({ width: 640, height: 480 }, key(320, 240)), true);
    assert.equal(V.vp8NeedsNewDecoder({ width: 320, height: 240 }, key(640, 480)), true);
    assert.equal(V.vp8NeedsNewDecoder({ width: 640, height: 480 }, key(640, 360)), true);
  });
  test("the same size, a delta frame, or no decoder yet do not", () => {
    assert.equal(V.vp8NeedsNewDecoder({ width: 640, height: 480 }, key(640, 480)), false);
    assert.equal(V.vp8NeedsNewDecoder({ width: 640, height: 480 }, { key: false, width: 320, height: 240 }), false);
    assert.equal(V.vp8NeedsNewDecoder(undefined, key(320, 240)), false);
  });
});
