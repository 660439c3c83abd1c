// callinvite desktop UI: DOM rendering and wiring to the Tauri backend.
// All decisions that can be made without the DOM live in logic.js (and are tested there).

import * as L from "./logic.js";
import * as V from "./video-frames.js";

const NO_TAURI = "This page runs inside the callinvite app";
const NOTICE_MS = 8000;
const SCREENS = ["signin", "home", "outgoing", "incoming", "incall"];
const SOUND_FILES = { ringtone: "sounds/ringtone.wav", ringback: "sounds/ringback.wav" };

const $ = (id) => document.getElementById(id);

const tauri = window.__TAURI__;
const hasTauri = Boolean(tauri?.core?.invoke && tauri?.event?.listen);

function invoke(cmd, args) {
  if (!hasTauri) return Promise.reject({ kind: "internal", message: NO_TAURI });
  return tauri.core.invoke(cmd, args);
}

// ---- state ------------------------------------------------------------------

let snapshot = null; // latest AppSnapshot
let screen = null; // current screen name
let callStart = null; // {key, startMs} of the current call (logic.nextCallStart)
let sound = null; // {name, audio} playing now
const audioCache = {};
const inFlight = new Set(); // buttons whose command is running
let noticeTimer = null;
let lastErrorShown = null; // snapshot.last_error already shown
let settingsDirty = false; // the user edited the settings form since it was filled
let settingsFilledFrom = null; // JSON of the settings the form was filled from
let presenceKey = null; // contacts + connection the presence was last queried for
let localPresence = {}; // presence from query_presence answers
let lastHistoryRender = 0;
let eventCount = 0; // app-state events received so far
let screenShownAt = 0; // when the current screen appeared
let lastKeyDownAt = 0; // when a key was last pressed anywhere
const KEYBOARD_GRACE_MS = 700; // typing that was meant for the previous screen must not answer a call
let videoToken = null; // the running picture loops' token (null: stopped)
let lastVideo = { remote: false, preview: "starting" }; // what the canvases showed last

// ---- commands -----------------------------------------------------------------

/** Runs a command with `button` disabled meanwhile; errors go to the notice. Returns {ok, value}. */
async function run(button, cmd, args) {
  if (button && inFlight.has(button)) return { ok: false };
  if (button) {
    inFlight.add(button);
    button.setAttribute("aria-busy", "true");
    refreshDisabled();
  }
  try {
    return { ok: true, value: await invoke(cmd, args) };
  } catch (err) {
    showNotice(L.errorMessage(err), "error");
    return { ok: false, error: err };
  } finally {
    if (button) {
      inFlight.delete(button);
      button.removeAttribute("aria-busy");
      refreshDisabled();
    }
  }
}

/** Buttons the snapshot disables (besides those in flight). */
function disabledByState(button) {
  const answering = Boolean(snapshot?.call?.answering);
  if (["incoming-accept", "incoming-decline", "incoming-busy"].includes(button.id)) return answering;
  if (button.id === "incall-mute") return !snapshot?.call?.media;
  if (button.id === "incall-camera") return button.dataset.disabledByState === "1";
  return false;
}

function refreshDisabled() {
  for (const b of document.querySelectorAll("button")) {
    if (b.id === "notice-dismiss") continue;
    b.disabled = inFlight.has(b) || disabledByState(b);
  }
}

// ---- notice -------------------------------------------------------------------

function showNotice(text, kind = "info") {
  clearTimeout(noticeTimer);
  noticeTimer = null;
  $("notice-text").textContent = text;
  $("notice").dataset.kind = kind;
  $("notice-dismiss").hidden = false;
  if (kind !== "error") noticeTimer = setTimeout(clearNotice, NOTICE_MS);
}

function clearNotice() {
  clearTimeout(noticeTimer);
  noticeTimer = null;
  const hadFocus = document.activeElement === $("notice-dismiss");
  $("notice-text").textContent = "";
  $("notice").dataset.kind = "none";
  $("notice-dismiss").hidden = true;
  if (hadFocus) focusFor(screen);
}

// ---- audio --------------------------------------------------------------------

function startSound(name) {
  try {
    let audio = audioCache[name];
    if (!audio) {
      audio = new Audio(SOUND_FILES[name]);
      audio.loop = true;
      audioCache[name] = audio;
    }
    audio.currentTime = 0;
    sound = { name, audio };
    const p = audio.play();
    if (p && typeof p.catch === "function") p.catch(() => {});
  } catch {
    // no audio device or autoplay refused: calls work without sound
  }
}

function stopSound() {
  if (!sound) return;
  try {
    sound.audio.pause();
    sound.audio.currentTime = 0;
  } catch {
    // ignore
  }
  sound = null;
}

function updateSound() {
  const want = L.soundFor(screen, snapshot?.call);
  if ((sound?.name ?? null) === want) return;
  stopSound();
  if (want) startSound(want);
}

// ---- rendering ----------------------------------------------------------------

function render(snap) {
  if (!L.isNewerSnapshot(snapshot, snap)) return;
  snapshot = snap;
  const next = L.screenFor(snap);
  callStart = L.nextCallStart(callStart, snap.call ?? null, Date.now());
  const changed = next !== screen;
  if (changed) {
    stopSound();
    for (const name of SCREENS) $(`screen-${name}`).hidden = name !== next;
    document.body.dataset.screen = next;
    if (next === "signin") fillSignIn();
    if (L.clearsNotice(screen, next)) clearNotice();
    screen = next;
    screenShownAt = Date.now();
  }
  document.title = L.windowTitle(snap);

  renderHome();
  renderOutgoing();
  renderIncoming();
  renderInCall();
  refreshDisabled();
  updateVideoLoops();
  updateSound();
  tick();
  if (changed) focusFor(next);

  if (snap.last_error && snap.last_error !== lastErrorShown) showNotice(snap.last_error, "error");
  lastErrorShown = snap.last_error ?? null;
}

function focusFor(name) {
  const target = {
    signin: "signin-user",
    home: "dial-input",
    outgoing: "outgoing-cancel",
    incoming: "incoming-accept",
    incall: "incall-hangup",
  }[name];
  const el = target && $(target);
  if (el && !el.disabled) el.focus();
}

function fillSignIn() {
  const p = L.signInPrefill(snapshot?.settings);
  $("signin-user").value = p.user;
  $("signin-server-embedded").checked = !p.useUrl;
  $("signin-server-url").checked = p.useUrl;
  $("signin-url").value = p.url;
  $("signin-token").value = p.token;
  // Server and token sit behind "Advanced": open when this profile uses them.
  $("signin-advanced").open = p.useUrl || p.token !== "";
  $("signin-error").textContent = "";
  $("signin-user").removeAttribute("aria-invalid");
  syncServerChoice();
}

function syncServerChoice() {
  const useUrl = $("signin-server-url").checked;
  $("signin-url").disabled = !useUrl;
  if (!useUrl) $("signin-url").removeAttribute("aria-invalid");
}

function renderHome() {
  if (screen !== "home" || !snapshot) return;
  $("me").textContent = snapshot.user ?? "";
  $("me").title = snapshot.user ?? "";
  setAvatar("me-avatar", snapshot.user);
  const status = $("connection-status");
  status.textContent = L.connectionLabel(snapshot);
  status.title = status.textContent;
  status.dataset.state = snapshot.connection ?? "signed_out";
  renderContacts();
  renderHistory();
  fillSettings();
  $("notifications-note").hidden = snapshot.notifications_available !== false;
}

function renderContacts() {
  const contacts = L.recentContacts(snapshot.history, snapshot.user, 8);
  const presence = { ...localPresence, ...(snapshot.presence ?? {}) };
  const list = $("contacts");
  const hadFocus = list.contains(document.activeElement) ? document.activeElement.dataset.peer : null;
  list.replaceChildren(
    ...contacts.map((peer) => {
      const li = document.createElement("li");
      const state = presence[peer] === true ? "online" : presence[peer] === false ? "offline" : "unknown";
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "chip call-contact";
      btn.dataset.peer = peer;
      btn.title = `Call ${peer}`;
      btn.setAttribute("aria-label", `Call ${peer}${state === "unknown" ? "" : ` (${state})`}`);
      const dot = document.createElement("span");
      dot.className = `presence-dot ${state}`;
      dot.setAttribute("aria-hidden", "true");
      const name = document.createElement("span");
      name.className = "peer";
      name.textContent = peer;
      btn.append(dot, name);
      li.append(btn);
      return li;
    }),
  );
  $("contacts-empty").hidden = contacts.length > 0;
  if (hadFocus != null) {
    const again = [...list.querySelectorAll("button.call-contact")].find((b) => b.dataset.peer === hadFocus);
    again?.focus();
  }
  queryPresence(contacts);
}

/**
 * Asks for the contacts' presence once per change of the list or the connection (never polls):
 * subscribe_presence where the backend has it (later changes then arrive in app-state),
 * else a one-off query_presence.
 */
function queryPresence(contacts) {
  if (!hasTauri || snapshot.connection !== "connected" || contacts.length === 0) return;
  const key = `${snapshot.connection}\n${contacts.join("\n")}`;
  if (key === presenceKey) return;
  presenceKey = key;
  const args = { users: contacts };
  invoke("subscribe_presence", args).catch(() => invoke("query_presence", args)).then(
    (rows) => {
      if (!Array.isArray(rows)) return;
      for (const r of rows) if (r && typeof r.user === "string") localPresence[r.user] = Boolean(r.online);
      if (screen === "home") renderContacts();
    },
    () => {
      presenceKey = null; // not important enough for a notice; try again on the next change
    },
  );
}

function renderHistory() {
  const now = Date.now();
  lastHistoryRender = now;
  const entries = Array.isArray(snapshot.history) ? snapshot.history : [];
  $("history-clear").hidden = entries.length === 0;
  $("history-list").replaceChildren(
    ...entries.map((entry) => {
      const h = L.historyLabel(entry, now);
      const li = document.createElement("li");
      if (h.missed) li.classList.add("missed");
      const dir = document.createElement("span");
      dir.className = "dir";
      dir.setAttribute("aria-hidden", "true");
      dir.textContent = h.arrow;
      const dirText = document.createElement("span");
      dirText.className = "visually-hidden";
      dirText.textContent = `${h.direction}: `;
      const peer = document.createElement("span");
      peer.className = "peer";
      peer.textContent = h.peer;
      const outcome = document.createElement("span");
      outcome.className = "outcome";
      outcome.textContent = h.outcome;
      const meta = document.createElement("span");
      meta.className = "meta";
      const time = document.createElement("time");
      if (Number.isFinite(entry?.at_ms)) {
        time.dateTime = new Date(entry.at_ms).toISOString();
        time.title = new Date(entry.at_ms).toLocaleString();
      }
      time.textContent = h.when;
      meta.append(time);
      if (h.duration) {
        const d = document.createElement("span");
        d.className = "duration";
        d.textContent = ` · ${h.duration}`;
        meta.append(d);
      }
      li.append(dir, dirText, peer, outcome, meta);
      return li;
    }),
  );
  $("history-empty").hidden = entries.length > 0;
}

function fillSettings(force = false) {
  const s = snapshot?.settings;
  if (!s) return;
  const json = JSON.stringify(s);
  if (!force && (settingsDirty || json === settingsFilledFrom)) return;
  settingsFilledFrom = json;
  settingsDirty = false;
  $("setting-busy-policy").value = s.busy_policy === "notify" ? "notify" : "auto_busy";
  $("setting-meeting-url").value = s.meeting_url_template ?? "";
  $("setting-ca-file").value = s.ca_file ?? "";
  $("setting-share-lan").checked = Boolean(s.share_on_lan);
  $("setting-start-muted").checked = Boolean(s.start_muted);
  $("setting-dnd").value = ["busy", "silent"].includes(s.do_not_disturb) ? s.do_not_disturb : "off";
  $("setting-microphone").value = s.microphone ?? "";
  $("setting-speaker").value = s.speaker ?? "";
  $("setting-camera").value = s.camera ?? "";
  $("setting-start-camera").checked = s.start_camera_on !== false;
  $("setting-start-at-login").checked = Boolean(s.start_at_login);
}

function setAvatar(id, peer) {
  $(id).textContent = L.initialOf(peer);
}

function renderOutgoing() {
  if (screen !== "outgoing") return;
  const call = snapshot.call;
  $("outgoing-peer").textContent = call.peer;
  setAvatar("outgoing-avatar", call.peer);
  $("outgoing-status").textContent = L.outgoingStatus(call);
}

function renderIncoming() {
  if (screen !== "incoming") return;
  const call = snapshot.call;
  $("incoming-caller").textContent = `${call.peer} is calling`;
  setAvatar("incoming-avatar", call.peer);
  const content = $("incoming-content");
  content.textContent = call.content ?? "";
  content.hidden = !call.content;
  $("incoming-status").textContent = call.answering ? "Answering…" : "";
}

function renderInCall() {
  if (screen !== "incall") return;
  const call = snapshot.call;
  $("incall-peer").textContent = call.peer;
  setAvatar("incall-avatar", call.peer);
  const content = $("incall-content");
  content.textContent = call.content ?? "";
  content.hidden = !call.content;
  const media = call.media ?? null;
  const view = L.mediaView(media, snapshot.connection);
  $("incall-media").dataset.phase = media?.phase ?? "none";
  $("incall-media-status").textContent = view.status;
  $("incall-mic-level").value = media && !media.muted ? Math.min(1, (media.mic_level ?? 0) * 3) : 0;
  $("incall-speaker-level").value = media ? Math.min(1, (media.speaker_level ?? 0) * 3) : 0;
  $("incall-quality").dataset.quality = view.quality;
  $("incall-quality").textContent = view.qualityText;
  const mute = $("incall-mute");
  mute.textContent = view.muteLabel;
  mute.setAttribute("aria-pressed", media?.muted ? "true" : "false");
  mute.disabled = !media;
  renderVideo(media, call.peer);
}

/** The pictures' boxes and buttons (the canvases are drawn by videoLoop). */
function renderVideo(media, peer) {
  const v = L.videoView(media, peer);
  $("incall-stage").dataset.remote = v.remote ? "on" : "off";
  $("incall-placeholder-text").textContent = v.remoteText;
  $("incall-video-info").textContent = v.info;
  $("incall-preview").dataset.state = v.preview;
  $("incall-preview-text").textContent = v.previewText;
  // A picture that stopped must not come back as a still when it starts again.
  if (lastVideo.remote && !v.remote) blank($("incall-remote-video"));
  if (lastVideo.preview === "on" && v.preview !== "on") blank($("incall-local-video"));
  lastVideo = { remote: v.remote, preview: v.preview };
  const camera = $("incall-camera");
  camera.textContent = v.cameraLabel;
  camera.setAttribute("aria-pressed", v.cameraPressed ? "true" : "false");
  camera.dataset.disabledByState = v.cameraDisabled ? "1" : "";
  const sw = $("incall-switch-camera");
  sw.hidden = !v.switchShown;
  sw.title = v.switchTitle;
  const share = $("incall-share-screen");
  share.hidden = !v.shareShown;
  share.textContent = v.shareLabel;
  share.setAttribute("aria-pressed", v.sharePressed ? "true" : "false");
  refreshDisabled();
}

function blank(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
}

function toggleMute() {
  const media = snapshot?.call?.media;
  if (!media) return;
  run($("incall-mute"), "set_muted", { muted: !media.muted });
}

function toggleCamera() {
  const video = snapshot?.call?.media?.video;
  if (!video || $("incall-camera").disabled) return;
  run($("incall-camera"), "set_camera", { on: !video.camera_on });
}

// ---- pictures -------------------------------------------------------------------

/** Starts the picture loops for the call on screen, or stops them. */
function updateVideoLoops() {
  const want = screen === "incall" && Boolean(snapshot?.call?.media) && hasTauri && Boolean(tauri.core.convertFileSrc);
  if (want && !videoToken) {
    const token = {};
    videoToken = token;
    videoLoop("remote", $("incall-remote-video"), token);
    videoLoop("local", $("incall-local-video"), token);
  } else if (!want && videoToken) {
    videoToken = null;
    blank($("incall-remote-video"));
    blank($("incall-local-video"));
    lastVideo = { remote: false, preview: "starting" };
  }
}

const nextPaint = () => new Promise((resolve) => requestAnimationFrame(resolve));
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
 * or as I420 converted here (logic.js i420ToRgba), or as RGBA (streamPlan).
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
    while (videoToken === token) {
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
  if (videoToken !== token) return;
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

/**
 * The VP8 path of one stream: a WebCodecs decoder fed every frame in order
 * (from a keyframe on; the backend starts a page at its latest keyframe), the
 * latest decoded picture waiting for the next display refresh (older ones are
 * dropped undrawn), and for each frame in the decoder when it came and how to
 * show it. A decoded I420 picture is copied out and converted like the I420
 * path's (half size and mirrored as the header says); any other is drawn with
 * drawImage, scaled to the canvas's box on screen and mirrored by a transform.
 */
function newVp8State(canvas, ctx, counter, show, token) {
  const state = { decoder: null, seq: 0, info: new Map(), latest: null, failures: 0, lastError: "", counter, name: canvas.id };
  state.paint = () => {
    const latest = state.latest;
    state.latest = null;
    if (!latest) return;
    const { frame, info } = latest;
    if (videoToken !== token) {
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

/**
 * One long-poll of the frame: scheme: the answer parsed by `parse` and how
 * long reading and parsing it took (`bodyMs`), or null when there was none
 * (204: no new picture in time, asked again at once; an error or another
 * status: after 500 ms).
 */
async function fetchFrames(url, parse) {
  let res;
  try {
    res = await fetch(url, { cache: "no-store" });
  } catch {
    await pause(500);
    return null;
  }
  if (res.status !== 200) {
    if (res.status !== 204) await pause(500);
    return null;
  }
  const answered = performance.now();
  const parsed = parse(await res.arrayBuffer());
  return { parsed, bodyMs: performance.now() - answered };
}

/** Asks for the frames after the last one given to the decoder and decodes them all, in order. */
async function vp8Step(state, base, token) {
  // A decoder that cannot keep up gets no more for now: the backend keeps the frames
  // (a page too far behind starts again at a keyframe).
  while (state.decoder && state.decoder.decodeQueueSize > 3 && videoToken === token) await pause(10);
  const answer = await fetchFrames(V.frameUrl(base, state.seq, "vp8"), V.parseVp8Frames);
  if (!answer) return;
  const frames = answer.parsed;
  if (!frames || videoToken !== token) return;
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

function closeVp8(state) {
  state.closed = true;
  painter.states.delete(state);
  if (state.latest) state.latest.frame?.close();
  state.latest = null;
  state.info.clear();
  if (state.decoder && state.decoder.state !== "closed") state.decoder.close();
  state.decoder = null;
}

/** Fills the microphone and speaker choices (once per opening of Settings). */
async function fillDevices() {
  if (!hasTauri) return;
  let devices;
  try {
    devices = await invoke("audio_devices");
  } catch (e) {
    devices = { inputs: [], outputs: [], error: L.errorMessage(e) };
  }
  const fill = (id, names, chosen) => {
    const select = $(id);
    const options = [["", "System default"], ...names.map((n) => [n, n])];
    if (chosen && !names.includes(chosen)) options.push([chosen, `${chosen} (not connected)`]);
    select.replaceChildren(
      ...options.map(([value, label]) => {
        const o = document.createElement("option");
        o.value = value;
        o.textContent = label;
        return o;
      }),
    );
    select.value = chosen ?? "";
  };
  fill("setting-microphone", devices.inputs ?? [], snapshot?.settings?.microphone);
  fill("setting-speaker", devices.outputs ?? [], snapshot?.settings?.speaker);
  const help = $("setting-devices-help");
  help.hidden = !devices.error;
  help.textContent = devices.error ? `Sound devices: ${devices.error}` : "";
  fillCameras();
}

/** Fills the camera choice (with the sound devices, once per opening of Settings). */
async function fillCameras() {
  let video;
  try {
    video = await invoke("video_devices");
  } catch (e) {
    video = { cameras: [], error: L.errorMessage(e) };
  }
  const cameras = Array.isArray(video.cameras) ? video.cameras : [];
  const chosen = snapshot?.settings?.camera ?? "";
  const options = [["", "First camera"], ...cameras.map((c) => [c.id, c.name])];
  if (chosen && !cameras.some((c) => c.id === chosen)) options.push([chosen, `${chosen} (not connected)`]);
  const select = $("setting-camera");
  select.replaceChildren(
    ...options.map(([value, label]) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      return o;
    }),
  );
  select.value = chosen;
  const help = $("setting-camera-help");
  const note = video.error ? `Cameras: ${video.error}` : cameras.length === 0 ? "No camera found: calls go without your picture." : "";
  help.hidden = !note;
  help.textContent = note;
}

/** Once a second: the call timers, and now and then the history's relative times. */
function tick() {
  const now = Date.now();
  if (screen === "outgoing" && callStart) {
    $("outgoing-elapsed").textContent = L.formatDuration(now - callStart.startMs);
    if (snapshot?.call?.phase === "waiting_offline") $("outgoing-status").textContent = L.outgoingStatus(snapshot.call, now);
  } else if (screen === "incall" && snapshot?.call) {
    const since = snapshot.call.phase_since_ms;
    $("incall-duration").textContent = L.formatDuration(Number.isFinite(since) ? now - since : 0);
  } else if (screen === "home" && now - lastHistoryRender > 30000) {
    renderHistory();
  }
}

// ---- actions ------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const req = L.signInRequest({
    user: $("signin-user").value,
    useUrl: $("signin-server-url").checked,
    url: $("signin-url").value,
    token: $("signin-token").value,
  });
  const userInput = $("signin-user");
  const urlInput = $("signin-url");
  userInput.removeAttribute("aria-invalid");
  urlInput.removeAttribute("aria-invalid");
  if (req.error) {
    $("signin-error").textContent = req.error;
    const field = req.field === "url" ? urlInput : userInput;
    field.setAttribute("aria-invalid", "true");
    field.focus();
    return;
  }
  $("signin-error").textContent = "";
  const before = eventCount;
  const r = await run($("signin-submit"), "sign_in", req.args);
  // An app-state event received meanwhile is newer than this answer.
  if (r.ok && eventCount === before) render(r.value);
}

async function dial(callee, button) {
  const req = L.dialRequest({ callee, content: $("dial-content").value, me: snapshot?.user });
  const input = $("dial-input");
  if (req.error) {
    $("dial-error").textContent = req.error;
    if (button === $("dial-call")) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return;
  }
  $("dial-error").textContent = "";
  input.removeAttribute("aria-invalid");
  const result = await run(button, "call", req.args);
  if (result.ok) {
    // The call is placed: clear the form (this also closes the suggestion list).
    input.value = "";
    $("dial-content").value = "";
    input.blur();
  }
}

function cancelCall() {
  return run($("outgoing-cancel"), "cancel");
}

function answer(kind, event) {
  if (snapshot?.call?.answering) return;
  // A keyboard "click" (detail 0) while typing just as the call appeared (focus jumps to
  // Accept) was meant for the previous screen: ignore it.
  const now = Date.now();
  if (event && event.detail === 0 && now - screenShownAt < KEYBOARD_GRACE_MS && now - lastKeyDownAt < KEYBOARD_GRACE_MS) {
    return;
  }
  const invitationId = snapshot?.call?.invitation_id ?? null;
  if (kind === "accept") return run($("incoming-accept"), "accept", { invitationId });
  const busy = kind === "busy";
  return run($(busy ? "incoming-busy" : "incoming-decline"), "refuse", { invitationId, busy });
}

async function saveSettings(event) {
  event.preventDefault();
  const form = {
    busy_policy: $("setting-busy-policy").value,
    meeting_url_template: $("setting-meeting-url").value,
    ca_file: $("setting-ca-file").value,
    share_on_lan: $("setting-share-lan").checked,
    start_muted: $("setting-start-muted").checked,
    do_not_disturb: $("setting-dnd").value,
    microphone: $("setting-microphone").value,
    speaker: $("setting-speaker").value,
    camera: $("setting-camera").value,
    start_camera_on: $("setting-start-camera").checked,
  };
  const urlError = L.validateMeetingUrl(form.meeting_url_template);
  if (urlError) {
    showNotice(urlError, "error");
    $("setting-meeting-url").focus();
    return;
  }
  const before = eventCount;
  const settings = { ...L.mergeSettings(snapshot?.settings, form), start_at_login: $("setting-start-at-login").checked };
  const r = await run($("settings-save"), "set_settings", { settings });
  if (r.ok) {
    const fresh = eventCount === before && r.value && typeof r.value === "object" && snapshot;
    if (fresh) snapshot = { ...snapshot, settings: r.value };
    settingsDirty = false;
    fillSettings(true);
    showNotice("Settings saved");
  }
}

function onKeyDown(event) {
  lastKeyDownAt = Date.now();
  if (event.isComposing || event.defaultPrevented || event.repeat) return;
  if (L.isCloseShortcut(event)) {
    event.preventDefault();
    closeWindow();
    return;
  }
  const action = L.keyAction(screen, event.key);
  if (action === "call") {
    const t = event.target;
    if (!(t instanceof HTMLInputElement) || !t.closest("#dial-form")) return;
    event.preventDefault();
    dial($("dial-input").value, $("dial-call"));
  } else if (action === "accept") {
    // On Accept itself (where the call puts the focus) Enter is the button's own click.
    if (event.target instanceof HTMLButtonElement) return;
    event.preventDefault();
    answer("accept", event);
  } else if (action === "cancel") {
    event.preventDefault();
    cancelCall();
  } else if (action === "decline") {
    event.preventDefault();
    answer("decline");
  } else if (action === "mute") {
    event.preventDefault();
    toggleMute();
  } else if (action === "camera") {
    event.preventDefault();
    toggleCamera();
  }
}

/** Closes the window like its close button does (the backend then hides it to the tray). */
async function closeWindow() {
  try {
    const win = tauri?.window?.getCurrentWindow?.() ?? tauri?.webviewWindow?.getCurrentWebviewWindow?.();
    if (win) await win.close();
  } catch (err) {
    showNotice(L.errorMessage(err), "error");
  }
}

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("signin-server-embedded").addEventListener("change", syncServerChoice);
  $("signin-server-url").addEventListener("change", () => {
    syncServerChoice();
    if ($("signin-server-url").checked) $("signin-url").focus();
  });
  $("signin-user").addEventListener("input", () => {
    $("signin-error").textContent = "";
    $("signin-user").removeAttribute("aria-invalid");
  });

  $("signout").addEventListener("click", async () => {
    const r = await run($("signout"), "sign_out");
    if (r.ok) {
      localPresence = {};
      presenceKey = null;
    }
  });
  $("dial-form").addEventListener("submit", (e) => {
    e.preventDefault();
    dial($("dial-input").value, $("dial-call"));
  });
  $("dial-input").addEventListener("input", () => {
    $("dial-error").textContent = "";
    $("dial-input").removeAttribute("aria-invalid");
  });
  $("contacts").addEventListener("click", (e) => {
    const btn = e.target.closest("button.call-contact");
    if (btn) dial(btn.dataset.peer, btn);
  });
  $("history-clear").addEventListener("click", () => run($("history-clear"), "clear_history"));
  $("settings-open").addEventListener("click", () => {
    const details = $("settings");
    details.open = true;
    details.scrollIntoView({ block: "start" });
    details.querySelector("summary")?.focus({ preventScroll: true });
  });
  $("settings-form").addEventListener("submit", saveSettings);
  $("settings-form").addEventListener("input", () => (settingsDirty = true));
  $("settings-form").addEventListener("change", () => (settingsDirty = true));

  $("outgoing-cancel").addEventListener("click", cancelCall);
  $("incoming-accept").addEventListener("click", (e) => answer("accept", e));
  $("incoming-decline").addEventListener("click", (e) => answer("decline", e));
  $("incoming-busy").addEventListener("click", (e) => answer("busy", e));
  $("incall-hangup").addEventListener("click", () => run($("incall-hangup"), "hang_up"));
  $("incall-mute").addEventListener("click", toggleMute);
  $("incall-camera").addEventListener("click", toggleCamera);
  $("incall-switch-camera").addEventListener("click", () => run($("incall-switch-camera"), "switch_camera"));
  $("incall-share-screen").addEventListener("click", () => {
    const sharing = Boolean(snapshot?.call?.media?.video?.sharing_screen);
    run($("incall-share-screen"), "share_screen", { on: !sharing });
  });
  $("settings").addEventListener("toggle", () => {
    if ($("settings").open) fillDevices();
  });

  $("notice-dismiss").addEventListener("click", clearNotice);
  document.addEventListener("keydown", onKeyDown);
  setInterval(tick, 1000);
  // Coming back from the tray or another window: take the app's state afresh
  // (render() ignores an answer older than what is on screen).
  const resync = () => {
    if (!hasTauri || document.visibilityState === "hidden") return;
    invoke("get_state").then(render, () => {});
  };
  document.addEventListener("visibilitychange", resync);
  window.addEventListener("focus", resync);
}

// ---- start --------------------------------------------------------------------

async function init() {
  wire();
  if (!hasTauri) {
    render({
      profile: "",
      user: null,
      connection: "signed_out",
      server: "",
      call: null,
      presence: {},
      history: [],
      settings: { server: "embedded", token: "", share_on_lan: false, busy_policy: "auto_busy", meeting_url_template: "", last_user: "", ca_file: "", start_camera_on: true },
      notifications_available: false,
      last_error: null,
    });
    showNotice(NO_TAURI, "error");
    return;
  }
  let eventSeen = false;
  try {
    await tauri.event.listen("app-state", (e) => {
      eventSeen = true;
      eventCount += 1;
      render(e.payload);
    });
    await tauri.event.listen("call-outcome", (e) => {
      if (e?.payload) showNotice(L.outcomeMessage(e.payload), "info");
    });
  } catch (err) {
    showNotice(L.errorMessage(err), "error");
  }
  try {
    const snap = await invoke("get_state");
    // An app-state event that arrived meanwhile is at least as new as this
    // answer (render() also compares revisions).
    if (!eventSeen) render(snap);
  } catch (err) {
    if (!snapshot) render({ user: null, connection: "signed_out", call: null, settings: {} });
    showNotice(L.errorMessage(err), "error");
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
