// callinvite desktop UI: the page's entry (index.html loads it as a module). It renders every
// snapshot of the backend's state: picks the screen (logic.js screenFor), lets each screen's
// module fill its part, and keeps the ring sounds, the picture loops and the timers in step.
// Where each concern lives (ui/README.md has the list):
//   backend.js        the bridge to the Rust backend: invoke, run a command behind a button
//   screen-*.js       one module per screen (signin, home, outgoing, incoming, incall);
//                     settings.js the Settings section of the home screen
//   notice.js         the notice; sound.js the ring sounds; keys.js the shortcuts
//   video-*.js        the in-call pictures: loops, VP8 decoding, the long-poll, the formats
//   logic.js          everything decidable without a DOM (tested in ui/tests/)
//   state.js, dom.js  the state the modules share; small DOM helpers

import { hasTauri, invoke, NO_TAURI, refreshDisabled, tauri } from "./backend.js";
import { $, focusFor } from "./dom.js";
import { onKeyDown } from "./keys.js";
import * as L from "./logic.js";
import { clearNotice, showNotice } from "./notice.js";
import { renderHome, tickHome, wireHome } from "./screen-home.js";
import { renderInCall, tickInCall, wireInCall } from "./screen-incall.js";
import { renderIncoming, wireIncoming } from "./screen-incoming.js";
import { renderOutgoing, tickOutgoing, wireOutgoing } from "./screen-outgoing.js";
import { fillSignIn, wireSignIn } from "./screen-signin.js";
import { wireSettings } from "./settings.js";
import { stopSound, updateSound } from "./sound.js";
import { ui } from "./state.js";
import { updateVideoLoops } from "./video-loops.js";

const SCREENS = ["signin", "home", "outgoing", "incoming", "incall"];

let callStart = null; // {key, startMs} of the current call (logic.nextCallStart)
let lastErrorShown = null; // snapshot.last_error already shown

// ---- rendering ----------------------------------------------------------------

function render(snap) {
  if (!L.isNewerSnapshot(ui.snapshot, snap)) return;
  ui.snapshot = snap;
  const next = L.screenFor(snap);
  callStart = L.nextCallStart(callStart, snap.call ?? null, Date.now());
  const changed = next !== ui.screen;
  if (changed) {
    stopSound();
    for (const name of SCREENS) $(`screen-${name}`).hidden = name !== next;
    document.body.dataset.screen = next;
    if (next === "signin") fillSignIn();
    if (L.clearsNotice(ui.screen, next)) clearNotice();
    ui.screen = next;
    ui.screenShownAt = Date.now();
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

/** Once a second: the call timers, and now and then the history's relative times. */
function tick() {
  const now = Date.now();
  if (ui.screen === "outgoing" && callStart) {
    tickOutgoing(now, callStart);
  } else if (ui.screen === "incall" && ui.snapshot?.call) {
    tickInCall(now);
  } else if (ui.screen === "home") {
    tickHome(now);
  }
}

function wire() {
  wireSignIn(render);
  wireHome();
  wireSettings();
  wireOutgoing();
  wireIncoming();
  wireInCall();

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
      ui.eventCount += 1;
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
    if (!ui.snapshot) render({ user: null, connection: "signed_out", call: null, settings: {} });
    showNotice(L.errorMessage(err), "error");
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
