// The outgoing-call screen (#screen-outgoing): who we call, how far it got, for how long,
// and Cancel.

import { run } from "./backend.js";
import { $, setAvatar } from "./dom.js";
import * as L from "./logic.js";
import { ui } from "./state.js";

export function renderOutgoing() {
  if (ui.screen !== "outgoing") return;
  const call = ui.snapshot.call;
  $("outgoing-peer").textContent = call.peer;
  setAvatar("outgoing-avatar", call.peer);
  $("outgoing-status").textContent = L.outgoingStatus(call);
}

/** app.js's tick on this screen: the time since the call started (`callStart`), and the offline wait. */
export function tickOutgoing(now, callStart) {
  $("outgoing-elapsed").textContent = L.formatDuration(now - callStart.startMs);
  if (ui.snapshot?.call?.phase === "waiting_offline") $("outgoing-status").textContent = L.outgoingStatus(ui.snapshot.call, now);
}

export function cancelCall() {
  return run($("outgoing-cancel"), "cancel");
}

export function wireOutgoing() {
  $("outgoing-cancel").addEventListener("click", cancelCall);
}
