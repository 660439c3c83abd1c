// The incoming-call screen (#screen-incoming): who calls and their message, and Accept,
// Decline or Busy.

import { run } from "./backend.js";
import { $, setAvatar } from "./dom.js";
import { ui } from "./state.js";

const KEYBOARD_GRACE_MS = 700; // typing that was meant for the previous screen must not answer a call

export function renderIncoming() {
  if (ui.screen !== "incoming") return;
  const call = ui.snapshot.call;
  $("incoming-caller").textContent = `${call.peer} is calling`;
  setAvatar("incoming-avatar", call.peer);
  const content = $("incoming-content");
  content.textContent = call.content ?? "";
  content.hidden = !call.content;
  $("incoming-status").textContent = call.answering ? "Answering…" : "";
}

export function answer(kind, event) {
  if (ui.snapshot?.call?.answering) return;
  // A keyboard "click" (detail 0) while typing just as the call appeared (focus jumps to
  // Accept) was meant for the previous screen: ignore it.
  const now = Date.now();
  if (event && event.detail === 0 && now - ui.screenShownAt < KEYBOARD_GRACE_MS && now - ui.lastKeyDownAt < KEYBOARD_GRACE_MS) {
    return;
  }
  const invitationId = ui.snapshot?.call?.invitation_id ?? null;
  if (kind === "accept") return run($("incoming-accept"), "accept", { invitationId });
  const busy = kind === "busy";
  return run($(busy ? "incoming-busy" : "incoming-decline"), "refuse", { invitationId, busy });
}

export function wireIncoming() {
  $("incoming-accept").addEventListener("click", (e) => answer("accept", e));
  $("incoming-decline").addEventListener("click", (e) => answer("decline", e));
  $("incoming-busy").addEventListener("click", (e) => answer("busy", e));
}
