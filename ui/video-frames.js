// The in-call pictures as the page gets them from the backend's `frame:` scheme, without a
// DOM: the URL to ask with (frameUrl), the answers' formats (parseFrame: one I420 or RGBA
// picture; parseVp8Frames: compressed VP8 frames), I420 to RGBA (i420ToRgba, the backend's
// colours to the bit), when a VP8 decoder must be replaced, and the counters behind the
// canvases' data-fps and data-*-ms. Used by video-loops.js and video-vp8.js; tested by
// ui/tests/video-frames.test.mjs (run: node --test ui/tests/).

/** Bytes before the pixels in a picture from the `frame:` scheme. */
export const FRAME_HEADER_BYTES = 32;

/**
 * A picture from the `frame:` scheme (an ArrayBuffer: u32 width, u32 height,
 * u64 sequence number, u64 when the backend got it (Unix ms), u32 format
 * (0 RGBA, 1 I420), u32 look (bit 0 half size, bit 1 mirrored; I420 only),
 * little-endian, then the picture): {width, height, seq, atMs, format
 * ("rgba" | "i420"), half, mirror, data (a Uint8Array over the buffer, no
 * copy)}, or null when it is not a whole picture.
 */
export function parseFrame(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < FRAME_HEADER_BYTES) return null;
  const dv = new DataView(buffer);
  const width = dv.getUint32(0, true);
  const height = dv.getUint32(4, true);
  const seq = dv.getUint32(8, true) + dv.getUint32(12, true) * 2 ** 32;
  const atMs = dv.getUint32(16, true) + dv.getUint32(20, true) * 2 ** 32;
  const code = dv.getUint32(24, true);
  const look = dv.getUint32(28, true);
  if (width === 0 || height === 0 || code > 1) return null;
  const format = code === 1 ? "i420" : "rgba";
  if (format === "i420" && (width % 2 || height % 2)) return null;
  const bytes = format === "i420" ? width * height * 1.5 : width * height * 4;
  if (buffer.byteLength !== FRAME_HEADER_BYTES + bytes) return null;
  return {
    width, height, seq, atMs, format,
    half: format === "i420" && (look & 1) === 1,
    mirror: format === "i420" && (look & 2) === 2,
    data: new Uint8Array(buffer, FRAME_HEADER_BYTES, bytes),
  };
}

/** Size a parsed picture is shown at: {width, height}. */
export function shownSize(frame) {
  return frame.half ? { width: frame.width >> 1, height: frame.height >> 1 } : { width: frame.width, height: frame.height };
}

let yuvTables = null;
/** BT.601 studio-range tables, the backend's formulas (crates/media yuv_to_rgb), with the clamp offset folded in. */
function tables() {
  if (yuvTables) return yuvTables;
  const off = 384 << 8;
  const t = { y: new Int32Array(256), rv: new Int32Array(256), guv: new Int32Array(256 * 256), bu: new Int32Array(256), clamp: new Uint8Array(1024) };
  for (let i = 0; i < 256; i++) {
    t.y[i] = 298 * (i - 16) + 128;
    t.rv[i] = 409 * (i - 128) + off;
    t.bu[i] = 516 * (i - 128) + off;
  }
  for (let u = 0; u < 256; u++) for (let v = 0; v < 256; v++) t.guv[(u << 8) | v] = -100 * (u - 128) - 208 * (v - 128) + off;
  for (let i = 0; i < 1024; i++) t.clamp[i] = Math.max(0, Math.min(255, i - 384));
  yuvTables = t;
  return t;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Converts an I420 picture (`data`: Y, then U and V, `width × height`) to RGBA
 * words in `out` (a Uint32Array over an ImageData's pixels, shownSize of
 * it): at half size (the mean of each 2×2 block) and mirrored as `half` and
 * `mirror` say. The same colours as the backend's conversion, to the bit.
 */
export function i420ToRgba(data, width, height, half, mirror, out) {
  const { y: Y, rv: RV, guv: GUV, bu: BU, clamp: C } = tables();
  const w = width, cw = w >> 1;
  const uo = w * height, vo = uo + cw * (height >> 1);
  const alpha = LITTLE_ENDIAN ? 0xff000000 : 0xff;
  const rs = LITTLE_ENDIAN ? 0 : 24, gs = LITTLE_ENDIAN ? 8 : 16, bs = LITTLE_ENDIAN ? 16 : 8;
  if (!half) {
    for (let row = 0; row < height; row++) {
      const yb = row * w, cb = (row >> 1) * cw, ob = row * w;
      for (let cx = 0; cx < cw; cx++) {
        const u = data[uo + cb + cx], v = data[vo + cb + cx];
        const rv = RV[v], guv = GUV[(u << 8) | v], bu = BU[u];
        const x = cx << 1;
        const d0 = mirror ? ob + w - 1 - x : ob + x;
        const d1 = mirror ? d0 - 1 : d0 + 1;
        let c = Y[data[yb + x]];
        out[d0] = (C[(c + rv) >> 8] << rs) | (C[(c + guv) >> 8] << gs) | (C[(c + bu) >> 8] << bs) | alpha;
        c = Y[data[yb + x + 1]];
        out[d1] = (C[(c + rv) >> 8] << rs) | (C[(c + guv) >> 8] << gs) | (C[(c + bu) >> 8] << bs) | alpha;
      }
    }
    return;
  }
  const ow = w >> 1, oh = height >> 1;
  for (let row = 0; row < oh; row++) {
    const y0 = 2 * row * w, y1 = y0 + w, cb = row * cw, ob = row * ow;
    for (let x = 0; x < ow; x++) {
      const u = data[uo + cb + x], v = data[vo + cb + x];
      const c = Y[(data[y0 + 2 * x] + data[y0 + 2 * x + 1] + data[y1 + 2 * x] + data[y1 + 2 * x + 1] + 2) >> 2];
      const d = mirror ? ob + ow - 1 - x : ob + x;
      out[d] = (C[(c + RV[v]) >> 8] << rs) | (C[(c + GUV[(u << 8) | v]) >> 8] << gs) | (C[(c + BU[u]) >> 8] << bs) | alpha;
    }
  }
}

/**
 * The URL asking for the first picture after number `after` (`base`:
 * convertFileSrc(name, "frame")), as I420 (converted here), RGBA, or the
 * compressed VP8 frames after it (decoded here with WebCodecs).
 */
export function frameUrl(base, after, format = "i420") {
  const n = Number.isFinite(after) && after > 0 ? Math.floor(after) : 0;
  const f = format === "rgba" || format === "vp8" ? format : "i420";
  return `${base}?after=${n}&format=${f}`;
}

/** Bytes before each compressed frame in a `format=vp8` answer. */
export const VP8_RECORD_BYTES = 40;

/**
 * The compressed frames of a `format=vp8` answer (an ArrayBuffer of records:
 * u32 width, u32 height, u64 sequence number, u64 when the backend got it
 * (Unix ms), u32 format 2, u32 flags (bit 0 half size, bit 1 mirrored, bit 2
 * keyframe), u32 length, u32 zero, little-endian, then the frame): an array
 * of {width, height, seq, atMs, half, mirror, key, data (a Uint8Array over
 * the buffer, no copy)} in order, or null when the answer is not whole.
 */
export function parseVp8Frames(buffer) {
  if (!(buffer instanceof ArrayBuffer)) return null;
  const dv = new DataView(buffer);
  const out = [];
  let at = 0;
  while (at < buffer.byteLength) {
    if (buffer.byteLength - at < VP8_RECORD_BYTES) return null;
    const width = dv.getUint32(at, true);
    const height = dv.getUint32(at + 4, true);
    const seq = dv.getUint32(at + 8, true) + dv.getUint32(at + 12, true) * 2 ** 32;
    const atMs = dv.getUint32(at + 16, true) + dv.getUint32(at + 20, true) * 2 ** 32;
    const code = dv.getUint32(at + 24, true);
    const flags = dv.getUint32(at + 28, true);
    const length = dv.getUint32(at + 32, true);
    const start = at + VP8_RECORD_BYTES;
    if (code !== 2 || length === 0 || start + length > buffer.byteLength) return null;
    out.push({
      width, height, seq, atMs,
      half: (flags & 1) === 1,
      mirror: (flags & 2) === 2,
      key: (flags & 4) === 4,
      data: new Uint8Array(buffer, start, length),
    });
    at = start + length;
  }
  return out.length ? out : null;
}

/**
 * Whether frame `f` (from parseVp8Frames) needs a new VP8 decoder, given the
 * size the current one was configured for: a keyframe of another size does
 * (a decoder is not trusted to follow a size change); a delta frame never
 * does (it belongs to the picture the decoder has).
 */
export function vp8NeedsNewDecoder(size, f) {
  if (!f.key || !size) return false;
  return size.width !== f.width || size.height !== f.height;
}

/**
 * Counts pictures shown: `add(nowMs)` for each; `fps` is how many in the last
 * second; `frames` in all; `meanMs(name)` the mean of the times recorded with
 * `time(name, ms)`.
 */
export class FrameCounter {
  constructor() {
    this.frames = 0;
    this.recent = [];
    this.sums = {};
  }
  add(nowMs) {
    this.frames += 1;
    this.recent.push(nowMs);
    while (this.recent.length && this.recent[0] <= nowMs - 1000) this.recent.shift();
    return this.fps;
  }
  get fps() {
    return this.recent.length;
  }
  time(name, ms) {
    const s = (this.sums[name] ??= { total: 0, n: 0 });
    s.total += ms;
    s.n += 1;
  }
  meanMs(name) {
    const s = this.sums[name];
    return s && s.n ? s.total / s.n : 0;
  }
  /** Starts the mean times afresh (the frame count goes on). */
  resetTimes() {
    this.sums = {};
  }
}
