// The in-call pictures on the two canvases: a loop per canvas, while the call on screen has
// media, that long-polls the backend for what is new and draws it at the next display
// refresh — as VP8 decoded here (video-vp8.js) or as I420/RGBA converted here. Which format
// each stream asks for is settled here too (body[data-video-decoding]).

import { hasTauri, tauri } from "./backend.js";
import { $, blank } from "./dom.js";
import { ui } from "./state.js";
import * as V from "./video-frames.js";
import { fetchFrames, nextPaint, pause } from "./video-poll.js";
import { closeVp8, newVp8State, vp8Step } from "./video-vp8.js";

/** Starts the picture loops for the call on screen, or stops them. */
export function updateVideoLoops() {
  const want = ui.screen === "incall" && Boolean(ui.snapshot?.call?.media) && hasTauri && Boolean(tauri.core.convertFileSrc);
  if (want && !ui.videoToken) {
    const token = {};
    ui.videoToken = token;
    videoLoop("remote", $("incall-remote-video"), token);
    videoLoop("local", $("incall-local-video"), token);
  } else if (!want && ui.videoToken) {
    ui.videoToken = null;
    blank($("incall-remote-video"));
    blank($("incall-local-video"));
    ui.lastVideo = { remote: false, preview: "starting" };
  }
}

/**
 * How their picture comes when no test forces a format: "vp8" — the
 * compressed frames, decoded here with WebCodecs — when the webview can
 * decode VP8, else "i420". Settled once at start (videoFormatReady).
 */
let defaultVideoFormat = "i420";
const videoFormatReady = (async () => {
  try {
    if (typeof VideoDecoder === "function" && typeof EncodedVideoChunk === "function") {
      const support = await VideoDecoder.isConfigSupported({ codec: "vp8" });
      if (support?.supported) defaultVideoFormat = "vp8";
    }
  } catch {
    // no WebCodecs: I420
  }
  document.body.dataset.videoDecoding = defaultVideoFormat;
})();

/** Our preview's pictures per second at most (it is small; their picture is what matters). */
const PREVIEW_FPS = 15;

/**
 * How a stream's pictures are asked for: {format, small}. Their picture as
 * defaultVideoFormat; our preview as I420 made small by the backend (no larger
 * than its box on screen needs: 160x120 for a 640x480 camera) at PREVIEW_FPS —
 * cheaper than decoding our own 640x480 VP8 for a corner. A test can force
 * one format for both, as before (`window.callinviteVideoFormat`: "vp8",
 * "i420" or "rgba"; the preview then full rate, I420 and RGBA halved).
 */
function streamPlan(name) {
  const forced = window.callinviteVideoFormat;
  if (forced) return { format: forced, small: false };
  if (name === "local") return { format: "i420", small: true };
  return { format: defaultVideoFormat, small: false };
}

/**
 * Draws one picture stream (`remote` or `local`) into `canvas` while `token`
 * is current: asks the backend for what is newer than the last picture (it
 * answers as soon as there is something, or 204 after a second), then draws
 * it at the next display refresh. A hidden window gets no refreshes, so the
 * loop waits, and the backend sends nothing for it.
 * Pictures come as compressed VP8 frames decoded here with WebCodecs (vp8Step),
 * or as I420 converted here (video-frames.js i420ToRgba), or as RGBA (streamPlan).
 * The canvas's data-frames and data-fps count what was shown; data-body-ms
 * (reading the answer), data-draw-ms (converting and drawing), data-decode-ms
 * (VP8: from handing a frame to the decoder to its picture) and
 * data-latency-ms (from the backend getting the picture to drawing it) time it.
 */
async function videoLoop(name, canvas, token) {
  await videoFormatReady;
  const ctx = canvas.getContext("2d", { alpha: false });
  const base = tauri.core.convertFileSrc(name, "frame");
  const counter = new V.FrameCounter();
  const raw = { image: null, words: null, seq: 0, askedAt: 0 }; // the I420/RGBA path's state
  let vp8 = null; // the VP8 path's state (newVp8State)
  const show = (format, width, height, atMs, drawing) => {
    const drawn = performance.now();
    counter.time("draw", drawn - drawing);
    // From the decoder (or the camera) handing the picture over to it on the canvas.
    counter.time("latency", Date.now() - atMs);
    counter.add(drawn);
    canvas.dataset.frames = String(counter.frames);
    canvas.dataset.fps = String(counter.fps);
    canvas.dataset.bodyMs = counter.meanMs("body").toFixed(2);
    canvas.dataset.drawMs = counter.meanMs("draw").toFixed(2);
    canvas.dataset.decodeMs = counter.meanMs("decode").toFixed(2);
    canvas.dataset.latencyMs = counter.meanMs("latency").toFixed(1);
    canvas.dataset.size = `${width}x${height}`;
    canvas.dataset.format = format;
  };
  try {
    while (ui.videoToken === token) {
      const { format, small } = streamPlan(name);
      const wants = small ? `${format} small` : format;
      if (wants !== canvas.dataset.wants) {
        canvas.dataset.wants = wants;
        counter.resetTimes(); // the means are per format
      }
      if (format === "vp8") {
        vp8 ??= newVp8State(canvas, ctx, counter, show, token);
        await vp8Step(vp8, base, token);
        if (vp8.failures >= 3) {
          // This webview says it decodes VP8 but does not: I420 from now on.
          console.warn(`${name}: VP8 decoding keeps failing (${vp8.lastError}); showing I420 instead`);
          defaultVideoFormat = "i420";
          document.body.dataset.videoDecoding = "i420";
          closeVp8(vp8);
          vp8 = null;
        }
        continue;
      }
      if (vp8) {
        closeVp8(vp8);
        vp8 = null;
      }
      await rawStep(raw, base, format, small, canvas, ctx, counter, show, token);
    }
  } finally {
    if (vp8) closeVp8(vp8);
  }
}

/**
 * One picture as I420 or RGBA: fetch, then convert and draw at the next refresh.
 * `small`: at most PREVIEW_FPS, made no larger by the backend than the canvas's box needs.
 */
async function rawStep(raw, base, format, small, canvas, ctx, counter, show, token) {
  let url = V.frameUrl(base, raw.seq, format);
  if (small) {
    const wait = raw.askedAt + 1000 / PREVIEW_FPS - performance.now();
    if (wait > 0) await pause(wait);
    const box = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    if (box.width > 0) url += `&fit=${Math.ceil(box.width * dpr)}x${Math.ceil(box.height * dpr)}`;
  }
  raw.askedAt = performance.now();
  const answer = await fetchFrames(url, V.parseFrame);
  if (!answer) return;
  const frame = answer.parsed;
  if (!frame) return;
  raw.seq = frame.seq;
  counter.time("body", answer.bodyMs);
  await nextPaint();
  if (ui.videoToken !== token) return;
  const drawing = performance.now();
  const { width, height } = V.shownSize(frame);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  if (frame.format === "i420") {
    if (!raw.image || raw.image.width !== width || raw.image.height !== height) {
      raw.image = new ImageData(width, height);
      raw.words = new Uint32Array(raw.image.data.buffer);
    }
    V.i420ToRgba(frame.data, frame.width, frame.height, frame.half, frame.mirror, raw.words);
    ctx.putImageData(raw.image, 0, 0);
  } else {
    const pixels = new Uint8ClampedArray(frame.data.buffer, frame.data.byteOffset, frame.data.length);
    ctx.putImageData(new ImageData(pixels, width, height), 0, 0);
  }
  show(frame.format, width, height, frame.atMs, drawing);
}
