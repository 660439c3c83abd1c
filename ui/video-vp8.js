// Their picture as VP8: the compressed frames from the backend decoded here with WebCodecs
// (VideoDecoder), one decoder per stream, and the decoded pictures of both streams drawn in
// the same display refresh. video-loops.js runs vp8Step while a stream is shown as VP8.

import { ui } from "./state.js";
import * as V from "./video-frames.js";
import { fetchFrames, nextPaint, pause } from "./video-poll.js";

/**
 * The VP8 path of one stream: a WebCodecs decoder fed every frame in order
 * (from a keyframe on; the backend starts a page at its latest keyframe), the
 * latest decoded picture waiting for the next display refresh (older ones are
 * dropped undrawn), and for each frame in the decoder when it came and how to
 * show it. A decoded I420 picture is copied out and converted like the I420
 * path's (half size and mirrored as the header says); any other is drawn with
 * drawImage, scaled to the canvas's box on screen and mirrored by a transform.
 */
export function newVp8State(canvas, ctx, counter, show, token) {
  const state = { decoder: null, seq: 0, info: new Map(), latest: null, failures: 0, lastError: "", counter, name: canvas.id };
  state.paint = () => {
    const latest = state.latest;
    state.latest = null;
    if (!latest) return;
    const { frame, info } = latest;
    if (ui.videoToken !== token) {
      frame.close?.();
      return;
    }
    const drawing = performance.now();
    if (latest.planes) {
      // Copied out of the decoder's picture already: converted here like the I420 path.
      const { width, height } = latest;
      const w = info.half ? width >> 1 : width, h = info.half ? height >> 1 : height;
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      if (!state.image || state.image.width !== w || state.image.height !== h) {
        state.image = new ImageData(w, h);
        state.words = new Uint32Array(state.image.data.buffer);
      }
      V.i420ToRgba(latest.planes, width, height, info.half, info.mirror, state.words);
      ctx.putImageData(state.image, 0, 0);
      state.spare = latest.planes;
      show("vp8", w, h, info.atMs, drawing);
      return;
    }
    // The canvas as large as it is on screen (device pixels; the picture's shape kept, never
    // larger than the picture): drawImage scales once — our preview to its corner — and
    // painting the canvas into the window is a plain copy.
    if (!state.box?.width || state.boxFor !== layoutGeneration) {
      const r = canvas.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      state.box = { width: r.width * dpr, height: r.height * dpr };
      state.boxFor = layoutGeneration;
    }
    const scale = Math.min(1, state.box.width / frame.displayWidth, state.box.height / frame.displayHeight);
    const fits = scale > 0 ? scale : 1; // a canvas not laid out (hidden): the picture's size
    const width = Math.max(2, Math.round(frame.displayWidth * fits));
    const height = Math.max(2, Math.round(frame.displayHeight * fits));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    // Our camera's preview as in a mirror.
    if (info.mirror) ctx.setTransform(-1, 0, 0, 1, width, 0);
    ctx.drawImage(frame, 0, 0, width, height);
    if (info.mirror) ctx.setTransform(1, 0, 0, 1, 0, 0);
    frame.close();
    show("vp8", width, height, info.atMs, drawing);
  };
  state.output = (frame) => {
    const info = state.info.get(frame.timestamp);
    state.info.delete(frame.timestamp);
    if (!info) {
      frame.close();
      return;
    }
    counter.time("decode", performance.now() - info.given);
    state.failures = 0;
    const { codedWidth: w, codedHeight: h } = frame;
    if (frame.format === "I420" && w % 2 === 0 && h % 2 === 0
      && frame.visibleRect?.width === w && frame.visibleRect?.height === h) {
      // The planes out of the decoder's picture (a copy), converted by i420ToRgba at the next
      // refresh, as the I420 path does: in WebKitGTK 2.50 drawImage of a VideoFrame takes twice as
      // long (3.5–5 ms against 2.3 at 640x480). Other pictures (NV12 from a hardware decoder,
      // odd sizes) are drawn with drawImage.
      const planes = state.spare?.length === w * h * 1.5 ? state.spare : new Uint8Array(w * h * 1.5);
      state.spare = null;
      frame.copyTo(planes).then(() => {
        frame.close();
        if (state.closed) return;
        if (state.latest?.planes) state.spare = state.latest.planes; // never drawn: a newer one is here
        else if (state.latest) state.latest.frame.close();
        state.latest = { planes, width: w, height: h, info };
        schedulePaint(state);
      }, (e) => {
        frame.close();
        console.warn(`VP8: copying a picture: ${e?.message ?? e}`);
      });
      return;
    }
    if (state.latest) state.latest.frame?.close(); // never drawn: a newer one is here
    state.latest = { frame, info };
    schedulePaint(state);
  };
  // `decoder` failed (its error callback, or a decode call that threw).
  state.failed = (e, decoder) => {
    if (decoder !== state.decoder) return; // one already given up
    state.failures += 1;
    state.lastError = String(e?.message ?? e);
    console.warn(`VP8 decoder: ${state.lastError}`);
    if (decoder.state !== "closed") decoder.close();
    // Start again at a keyframe (the backend serves from its latest one, or asks for one).
    state.decoder = null;
    state.seq = 0;
    state.info.clear();
  };
  return state;
}

/** Asks for the frames after the last one given to the decoder and decodes them all, in order. */
export async function vp8Step(state, base, token) {
  // A decoder that cannot keep up gets no more for now: the backend keeps the frames
  // (a page too far behind starts again at a keyframe).
  while (state.decoder && state.decoder.decodeQueueSize > 3 && ui.videoToken === token) await pause(10);
  const answer = await fetchFrames(V.frameUrl(base, state.seq, "vp8"), V.parseVp8Frames);
  if (!answer) return;
  const frames = answer.parsed;
  if (!frames || ui.videoToken !== token) return;
  for (const f of frames) {
    // A keyframe of another size gets a decoder of its own: WebKitGTK's (GStreamer) kept
    // giving pictures of the old size filled with the new, smaller one (the bars twice side by
    // side, garbage below) after the sender's picture dropped from 640x480 to 320x240.
    if (state.decoder && V.vp8NeedsNewDecoder(state.size, f)) {
      state.decoder.close();
      state.decoder = null;
      state.info.clear();
    }
    // A stream starts (again) at a keyframe: the backend sends one first.
    if (!state.decoder) {
      if (!f.key) continue;
      const decoder = new VideoDecoder({ output: state.output, error: (e) => state.failed(e, decoder) });
      decoder.configure({ codec: "vp8", optimizeForLatency: true, codedWidth: f.width, codedHeight: f.height });
      state.decoder = decoder;
      state.size = { width: f.width, height: f.height };
    }
    state.info.set(f.seq, { atMs: f.atMs, half: f.half, mirror: f.mirror, given: performance.now() });
    try {
      state.decoder.decode(new EncodedVideoChunk({ type: f.key ? "key" : "delta", timestamp: f.seq, data: f.data }));
    } catch (e) {
      state.failed(e, state.decoder);
      return;
    }
    state.seq = f.seq;
  }
  state.counter.time("body", answer.bodyMs);
  // Ask again after the next display refresh: at most one answer per refresh, none while hidden.
  await nextPaint();
}

export function closeVp8(state) {
  state.closed = true;
  painter.states.delete(state);
  if (state.latest) state.latest.frame?.close();
  state.latest = null;
  state.info.clear();
  if (state.decoder && state.decoder.state !== "closed") state.decoder.close();
  state.decoder = null;
}

/**
 * The VP8 pictures waiting for a display refresh, both streams: drawn in the
 * same refresh, so the window repaints once for both (the preview lies over
 * their picture). Their picture sets the pace: ours waits for it (at most a
 * picture's time) unless theirs has not come for a while.
 */
const painter = { states: new Set(), scheduled: false, remoteAt: 0 };

/** Bumped when the window's layout may have changed size (the canvases' boxes are measured again). */
let layoutGeneration = 0;
window.addEventListener("resize", () => {
  layoutGeneration += 1;
});

function schedulePaint(state) {
  painter.states.add(state);
  const remote = state.name === "incall-remote-video";
  if (painter.scheduled || (!remote && performance.now() - painter.remoteAt < 100)) return;
  painter.scheduled = true;
  requestAnimationFrame(() => {
    painter.scheduled = false;
    for (const s of painter.states) {
      if (s.name === "incall-remote-video" && s.latest) painter.remoteAt = performance.now();
      s.paint();
    }
    painter.states.clear();
  });
}
