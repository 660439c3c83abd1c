// The bridge to the Rust backend (window.__TAURI__): invoke a command, or run one behind a
// button that is disabled (aria-busy) until it answers, its error shown in the notice.
// Opened in a plain browser there is no backend: every command fails with NO_TAURI.

import * as L from "./logic.js";
import { showNotice } from "./notice.js";
import { ui } from "./state.js";

export const NO_TAURI = "This page runs inside the callinvite app";

export const tauri = window.__TAURI__;
export const hasTauri = Boolean(tauri?.core?.invoke && tauri?.event?.listen);

export function invoke(cmd, args) {
  if (!hasTauri) return Promise.reject({ kind: "internal", message: NO_TAURI });
  return tauri.core.invoke(cmd, args);
}

const inFlight = new Set(); // buttons whose command is running

/** Runs a command with `button` disabled meanwhile; errors go to the notice. Returns {ok, value}. */
export async function run(button, cmd, args) {
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
  const answering = Boolean(ui.snapshot?.call?.answering);
  if (["incoming-accept", "incoming-decline", "incoming-busy"].includes(button.id)) return answering;
  if (button.id === "incall-mute") return !ui.snapshot?.call?.media;
  if (button.id === "incall-camera") return button.dataset.disabledByState === "1";
  return false;
}

export function refreshDisabled() {
  for (const b of document.querySelectorAll("button")) {
    if (b.id === "notice-dismiss") continue;
    b.disabled = inFlight.has(b) || disabledByState(b);
  }
}
