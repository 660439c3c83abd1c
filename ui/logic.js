// Pure UI logic for the callinvite desktop app: no DOM, no Tauri. Which screen a snapshot
// shows, the user-id rules and size limits, the forms' requests, messages and labels, and what
// the in-call sound line and picture boxes say (mediaView, videoView); the pictures' formats
// are in video-frames.js. Imported by the page's modules and by the tests in ui/tests/
// (run: node --test ui/tests/).

/** Longest user id, in bytes of UTF-8 (same as the server). */
export const MAX_USER_ID_BYTES = 64;
/** Largest invitation content, in bytes of UTF-8 (same as the server). */
export const MAX_CONTENT_BYTES = 8192;
/** Punctuation allowed in a user id besides letters, digits and space. */
export const ALLOWED_PUNCTUATION = "!#$%&()+-:;<=.>?@[]^_{}|~,";

/** The outcome words of `call-outcome` events and history entries. */
export const OUTCOMES = [
  "accepted",
  "refused",
  "busy",
  "canceled",
  "no_answer",
  "offline",
  "answered_elsewhere",
  "declined_elsewhere",
  "connection_lost",
  "hung_up",
  "peer_hung_up",
  "missed",
  "failed",
];

const OUTGOING_PHASES = ["calling", "ringing", "waiting_offline"];

/** Number of bytes `s` takes in UTF-8. */
export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/**
 * Whether snapshot `next` may replace `current`: not when it is older (a
 * `get_state` answer that crossed a newer `app-state` event). Snapshots
 * without a revision (a mock, or an older app) are always taken.
 */
export function isNewerSnapshot(current, next) {
  if (!next || typeof next !== "object") return false;
  if (!current || typeof current.rev !== "number" || typeof next.rev !== "number") return true;
  return next.rev >= current.rev;
}

/**
 * Which screen to show for an AppSnapshot:
 * "signin" | "home" | "incoming" | "incall" | "outgoing".
 */
export function screenFor(snapshot) {
  if (!snapshot || snapshot.user == null || snapshot.connection === "signed_out") return "signin";
  const call = snapshot.call;
  if (!call) return "home";
  if (call.phase === "incoming") return "incoming";
  if (call.phase === "in_call") return "incall";
  if (OUTGOING_PHASES.includes(call.phase)) return "outgoing";
  return "home"; // a phase this UI does not know: stay usable
}

/** How to name a character in a message: quoted, or by name/code point when invisible. */
function describeChar(c) {
  if (c === "\t") return "a tab";
  if (c === "\n" || c === "\r") return "a line break";
  if (/^[\s\p{C}]$/u.test(c)) {
    return `an invisible character (U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")})`;
  }
  return `"${c}"`;
}

/**
 * Checks a user id against the server's rules (checked in the server's order).
 * Returns null when valid, otherwise a message for the user.
 */
export function validateUserId(s) {
  if (typeof s !== "string" || s.length === 0) return `Enter a user ID (1 to ${MAX_USER_ID_BYTES} characters).`;
  const bytes = utf8Length(s);
  if (bytes > MAX_USER_ID_BYTES) return `User ID is ${bytes} bytes; the limit is ${MAX_USER_ID_BYTES}.`;
  if (s === "null") return 'User ID "null" is reserved; choose another.';
  if (s.startsWith(" ")) return "User ID must not start with a space.";
  if (s.endsWith(" ")) return "User ID must not end with a space (it would look like the ID without it).";
  for (const c of s) {
    const ok = /^[A-Za-z0-9 ]$/.test(c) || ALLOWED_PUNCTUATION.includes(c);
    if (!ok) {
      const shown = describeChar(c);
      return `User ID can't contain ${shown}; allowed are a–z A–Z 0–9, space and ${ALLOWED_PUNCTUATION}`;
    }
  }
  return null;
}

/** Message text for a command error ({kind, message}, a string, or anything else). */
export function errorMessage(err) {
  if (typeof err === "string" && err !== "") return err;
  if (err && typeof err === "object" && typeof err.message === "string" && err.message !== "") {
    return err.message;
  }
  return "Something went wrong.";
}

/** Outcomes whose detail is the other side's response message (shown in quotes). */
const QUOTED_DETAIL = new Set(["accepted", "refused", "busy"]);

/** A clear human message for a `call-outcome` event payload. */
export function outcomeMessage({ peer, direction, outcome, detail } = {}) {
  const named = typeof peer === "string" && peer !== "";
  const who = named ? peer : "someone";
  const out = direction !== "incoming";
  let text;
  switch (outcome) {
    case "accepted":
      text = out ? `${who} accepted` : `Connected with ${who}`;
      break;
    case "refused":
      text = out ? `${who} declined` : `You declined the call from ${who}`;
      break;
    case "busy":
      text = out ? `${who} is busy` : `Told ${who} you're busy`;
      break;
    case "canceled":
      text = out ? "Call canceled" : `${who} canceled the call`;
      break;
    case "no_answer":
      text = out ? `No answer from ${who}` : `Missed call from ${who}`;
      break;
    case "offline":
      text = `${who} is offline`;
      break;
    case "answered_elsewhere":
      text = "Answered on another device";
      break;
    case "declined_elsewhere":
      text = "Declined on another device";
      break;
    case "connection_lost":
      text = "Connection lost";
      break;
    case "hung_up":
      text = "Call ended";
      break;
    case "peer_hung_up":
      text = `${who} hung up`;
      break;
    case "missed":
      text = `Missed call from ${who}`;
      break;
    case "failed":
      text = out ? `Call to ${who} failed` : `Call from ${who} failed`;
      break;
    default:
      text = `Call with ${who} ended`;
  }
  if (!named) text = text[0].toUpperCase() + text.slice(1);
  if (typeof detail === "string" && detail.trim() !== "") {
    text += QUOTED_DETAIL.has(outcome) ? `: "${detail}"` : `: ${detail}`;
  }
  return text;
}

/** m:ss (or h:mm:ss from one hour) for a duration in milliseconds; negative/NaN → 0:00. */
export function formatDuration(ms) {
  const total = Number.isFinite(ms) && ms > 0 ? Math.floor(ms / 1000) : 0;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** Status line of the outgoing-call screen. */
export function outgoingStatus(call, nowMs = Date.now()) {
  switch (call?.phase) {
    case "calling":
      return "Calling…";
    case "ringing":
      return "Ringing…";
    case "waiting_offline": {
      const left = Number.isFinite(call.wait_until_ms) ? Math.max(0, call.wait_until_ms - nowMs) : null;
      return left == null
        ? `${call.peer} is offline — waiting for them to come online…`
        : `${call.peer} is offline — waiting ${formatDuration(Math.ceil(left / 1000) * 1000)} more for them to come online`;
    }
    default:
      return "";
  }
}

/**
 * Recent peers from history: unique, newest first, without `me`, at most `max`.
 */
export function recentContacts(history, me, max = 12) {
  if (!Array.isArray(history)) return [];
  const sorted = history
    .map((e, i) => ({ e, i }))
    .sort((a, b) => (b.e?.at_ms ?? 0) - (a.e?.at_ms ?? 0) || a.i - b.i)
    .map(({ e }) => e);
  const seen = new Set();
  const out = [];
  for (const e of sorted) {
    const p = e?.peer;
    if (typeof p !== "string" || p === "" || p === me || seen.has(p)) continue;
    seen.add(p);
    out.push(p);
    if (out.length >= max) break;
  }
  return out;
}

/** "just now", "5 min ago", "3 h ago", "yesterday", "4 d ago", or a local date YYYY-MM-DD. */
export function relativeTime(ms, nowMs) {
  if (!Number.isFinite(ms) || !Number.isFinite(nowMs)) return "";
  const diff = Math.max(0, nowMs - ms);
  const min = Math.floor(diff / 60000);
  if (min < 1) return "just now";
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.floor(h / 24);
  if (d === 1) return "yesterday";
  if (d < 7) return `${d} d ago`;
  const t = new Date(ms);
  const mm = String(t.getMonth() + 1).padStart(2, "0");
  const dd = String(t.getDate()).padStart(2, "0");
  return `${t.getFullYear()}-${mm}-${dd}`;
}

const HISTORY_OUTCOME = {
  accepted: "Answered",
  refused: "Declined",
  busy: "Busy",
  canceled: "Canceled",
  no_answer: "No answer",
  offline: "Offline",
  answered_elsewhere: "Answered elsewhere",
  declined_elsewhere: "Declined elsewhere",
  connection_lost: "Connection lost",
  hung_up: "Ended",
  peer_hung_up: "They hung up",
  missed: "Missed",
  failed: "Failed",
};

/**
 * The parts of one history row. `missed` is true when the entry says so (or its
 * outcome is "missed"); then the outcome reads "Missed".
 * Returns {arrow, direction, peer, when, outcome, duration, missed, text}.
 */
export function historyLabel(entry, nowMs) {
  const incoming = entry?.direction === "incoming";
  const missed = entry?.missed === true || entry?.outcome === "missed";
  const outcome = missed
    ? "Missed"
    : HISTORY_OUTCOME[entry?.outcome] ?? String(entry?.outcome ?? "").replace(/_/g, " ");
  const duration = Number.isFinite(entry?.duration_s) ? formatDuration(entry.duration_s * 1000) : "";
  const arrow = incoming ? "↙" : "↗";
  const peer = entry?.peer ?? "";
  const when = relativeTime(entry?.at_ms, nowMs);
  const text = [`${arrow} ${peer}`, outcome, when, duration].filter((x) => x !== "").join(" · ");
  return { arrow, direction: incoming ? "Incoming" : "Outgoing", peer, when, outcome, duration, missed, text };
}

/**
 * What a key press does on a screen: "call" | "accept" | "cancel" | "decline" | "mute" | "camera" | null.
 * The screens show these (index.html's `.keys` lines; a test compares them).
 */
export function keyAction(screen, key) {
  if (screen === "home" && key === "Enter") return "call";
  if (screen === "incoming" && key === "Enter") return "accept";
  if (screen === "outgoing" && key === "Escape") return "cancel";
  if (screen === "incoming" && key === "Escape") return "decline";
  if (screen === "incall" && (key === "m" || key === "M")) return "mute";
  if (screen === "incall" && (key === "v" || key === "V")) return "camera";
  return null;
}

/**
 * Whether a screen change clears the notice: a new call (outgoing or incoming)
 * starts clean, so "Call ended" or "bob declined" from the last call does not
 * sit under "Ringing…".
 */
export function clearsNotice(prev, next) {
  return prev !== next && (next === "outgoing" || next === "incoming");
}

/** Ctrl+W (Cmd+W on macOS) closes the window, which hides it to the tray. */
export function isCloseShortcut({ key, ctrlKey, metaKey, altKey, shiftKey } = {}) {
  return (key === "w" || key === "W") && Boolean(ctrlKey || metaKey) && !altKey && !shiftKey;
}

/** Text of the connection status line. */
export function connectionLabel(snapshot) {
  switch (snapshot?.connection) {
    case "connected": {
      const server = serverLabel(snapshot.server);
      return server ? `Connected · ${server}` : "Connected";
    }
    case "connecting":
      return "Connecting…";
    case "disconnected":
      return "Disconnected";
    default:
      return "Signed out";
  }
}

/**
 * The server as a user would name it: the built-in one in words (the backend's
 * label carries its port, for the log), another by its host.
 */
export function serverLabel(label) {
  const s = String(label ?? "").trim();
  if (!s) return "";
  if (s.startsWith("embedded")) {
    return /shared|LAN/.test(s) ? "built-in server, shared on your network" : "built-in server";
  }
  const m = s.match(/^wss?:\/\/([^/:?#]+)/i);
  return m ? m[1] : s;
}

/**
 * Keeps the start time of the current call across phase changes (for the
 * outgoing screen's elapsed time, which counts from the first outgoing phase).
 * Returns {key, startMs} or null when there is no call.
 */
export function nextCallStart(prev, call, nowMs) {
  if (!call) return null;
  const key = `${call.direction}|${call.peer}`;
  if (prev && prev.key === key) return prev;
  const startMs = Number.isFinite(call.phase_since_ms) ? call.phase_since_ms : nowMs;
  return { key, startMs };
}

/** Which looping sound plays: "ringtone" on the incoming screen, "ringback" while ringing out, else null. */
export function soundFor(screen, call) {
  if (screen === "incoming") return call?.silent ? null : "ringtone";
  if (screen === "outgoing" && call?.phase === "ringing") return "ringback";
  return null;
}

/** First character of a peer id, upper-cased, for the avatar circle. */
export function initialOf(peer) {
  if (typeof peer !== "string") return "?";
  const first = [...peer.trim()][0];
  return first ? first.toUpperCase() : "?";
}

/**
 * The sign-in form → sign_in arguments.
 * form: {user, useUrl, url, token}. Returns {args: {user, server, token}} or {error, field}.
 */
export function signInRequest({ user, useUrl, url, token } = {}) {
  const userError = validateUserId(user);
  if (userError) return { error: userError, field: "user" };
  let server = "embedded";
  if (useUrl) {
    const u = (url ?? "").trim();
    if (!/^wss?:\/\/[^\s/]+/i.test(u)) {
      return { error: "Enter a server URL that starts with ws:// or wss://.", field: "url" };
    }
    server = u;
  }
  const t = (token ?? "").trim();
  return { args: { user, server, token: t === "" ? null : t } };
}

/**
 * The dial form → call arguments. Returns {args: {callee, content}} or {error}.
 */
export function dialRequest({ callee, content, me } = {}) {
  const idError = validateUserId(callee);
  if (idError) return { error: idError };
  if (me != null && callee === me) return { error: "You can't call yourself — enter someone else's user ID." };
  const c = typeof content === "string" ? content : "";
  const bytes = utf8Length(c);
  if (bytes > MAX_CONTENT_BYTES) return { error: `The message is ${bytes} bytes; the limit is ${MAX_CONTENT_BYTES}.` };
  return { args: { callee, content: c === "" ? null : c } };
}

/** Checks the meeting URL template: empty, or http(s)://… Returns null or a message. */
export function validateMeetingUrl(s) {
  const t = (s ?? "").trim();
  if (t === "") return null;
  if (!/^https?:\/\/\S+$/i.test(t)) return "The meeting link must start with https:// (or http://).";
  if (!t.includes("{channel}")) return "The meeting link must contain {channel}, where the call's message goes.";
  return null;
}

/** Settings to save: the current settings with the settings form's values. */
export function mergeSettings(current, form) {
  return {
    ...(current ?? {}),
    busy_policy: form.busy_policy === "notify" ? "notify" : "auto_busy",
    meeting_url_template: (form.meeting_url_template ?? "").trim(),
    ca_file: (form.ca_file ?? "").trim(),
    share_on_lan: Boolean(form.share_on_lan),
    microphone: form.microphone ?? current?.microphone ?? "",
    speaker: form.speaker ?? current?.speaker ?? "",
    start_muted: Boolean(form.start_muted),
    camera: form.camera ?? current?.camera ?? "",
    start_camera_on: Boolean(form.start_camera_on ?? current?.start_camera_on ?? true),
    do_not_disturb: ["busy", "silent"].includes(form.do_not_disturb) ? form.do_not_disturb : "off",
  };
}

/**
 * The in-call sound line: {status, quality, qualityText, muteLabel} from the
 * call's media status (null before the call has sound).
 */
export function mediaView(media, connection = "connected") {
  if (connection !== "connected" && connection != null) {
    // The server link broke (say, the app running the built-in server quit):
    // never a running timer with no sign of trouble.
    return {
      status: "Reconnecting to the server…",
      quality: "none",
      qualityText: "",
      muteLabel: media?.muted ? "Unmute" : "Mute",
    };
  }
  if (!media) return { status: "", quality: "none", qualityText: "", muteLabel: "Mute" };
  const status = {
    connecting: "Connecting audio…",
    connected: media.muted ? "You are muted" : "Connected",
    reconnecting: "Reconnecting…",
    failed: media.message || "No audio",
  }[media.phase] ?? "";
  // A warning (no microphone, no speaker) stays visible while connected, and
  // then one about the picture (no camera), unless muted is more to the point.
  let line = status;
  if (media.phase === "connected" && media.message) line = media.message;
  else if (media.phase === "connected" && !media.muted && media.video?.message) line = media.video.message;
  let qualityText = "";
  if (media.phase === "connected" && media.rtt_ms != null) {
    const loss = Math.round((media.loss ?? 0) * 100);
    const word = { good: "Good", fair: "Fair", poor: "Poor" }[media.quality] ?? "";
    qualityText = `${word} · ${Math.round(media.rtt_ms)} ms · ${loss}% loss · ${Math.round(media.jitter_ms ?? 0)} ms jitter`;
    if (media.relayed) qualityText += " · via relay";
  }
  return {
    status: line,
    quality: media.phase === "connected" ? media.quality ?? "none" : "none",
    qualityText,
    muteLabel: media.muted ? "Unmute" : "Mute",
  };
}

/** Sign-in form prefill from Settings: {user, useUrl, url, token}. */
export function signInPrefill(settings) {
  const server = settings?.server;
  const useUrl = typeof server === "string" && /^wss?:\/\//i.test(server);
  return {
    user: settings?.last_user ?? "",
    useUrl,
    url: useUrl ? server : "",
    token: settings?.token ?? "",
  };
}

/** Window title for a snapshot. */
export function windowTitle(snapshot) {
  const call = snapshot?.call;
  switch (screenFor(snapshot)) {
    case "incoming":
      return `${call.peer} is calling — callinvite`;
    case "outgoing":
      return `Calling ${call.peer} — callinvite`;
    case "incall":
      return `In call with ${call.peer} — callinvite`;
    case "home":
      return `${snapshot.user} — callinvite`;
    default:
      return "callinvite";
  }
}

/**
 * The in-call pictures: what the big box (theirs) and the corner (ours) show,
 * and the video buttons. `media` is the call's media status (null before the
 * call has media), `peer` their user id. Returns:
 * - remote: their picture is shown (else the placeholder with `initial` and `remoteText`);
 * - preview: "on" (our picture) | "off" (camera off) | "none" (no camera) |
 *   "starting" | "error"; previewText says it in words;
 * - camera button: cameraLabel, cameraPressed (true while off), cameraDisabled;
 * - switchShown (more than one camera), switchTitle (the next one's name);
 * - shareShown (the screen can be shared), shareLabel, sharePressed;
 * - info: their picture's size and rate ("640×480 · 30 fps"), or "".
 */
export function videoView(media, peer) {
  const v = media?.video ?? null;
  const remote = Boolean(v?.remote);
  let remoteText = "";
  if (!remote && media?.phase === "connected") remoteText = "No video from them";
  const cameras = Array.isArray(v?.cameras) ? v.cameras : null;
  let preview;
  if (media?.phase === "failed") preview = "error";
  else if (!v) preview = "starting";
  else if (v.sending) preview = "on";
  else if (!v.camera_on && !v.sharing_screen) preview = cameras && cameras.length === 0 ? "none" : "off";
  else if (cameras && cameras.length === 0 && !v.sharing_screen) preview = "none";
  else if (v.message) preview = "error";
  else preview = "starting";
  const previewText = {
    on: v?.sharing_screen ? "Your screen" : "",
    off: "Camera off",
    none: "No camera",
    starting: "Starting camera…",
    error: "No picture",
  }[preview];
  const cameraOn = Boolean(v?.camera_on);
  const next = cameras && cameras.length > 1 ? cameras[((v.camera ?? 0) + 1) % cameras.length] : "";
  const received = v?.received;
  const info = remote && received && received.width > 0
    ? `${received.width}×${received.height} · ${Math.round(received.fps ?? 0)} fps`
    : "";
  return {
    remote,
    initial: initialOf(peer),
    remoteText,
    preview,
    previewText,
    cameraLabel: cameraOn ? "Stop camera" : "Start camera",
    cameraPressed: !cameraOn,
    cameraDisabled: !cameras || cameras.length === 0,
    switchShown: Boolean(cameras && cameras.length > 1),
    switchTitle: next ? `Switch to ${next}` : "",
    shareShown: Boolean(v?.can_share_screen),
    shareLabel: v?.sharing_screen ? "Stop sharing" : "Share screen",
    sharePressed: Boolean(v?.sharing_screen),
    info,
  };
}
