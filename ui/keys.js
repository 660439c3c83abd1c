// The keyboard: each screen's shortcuts (logic.js keyAction; index.html's `.keys` lines show
// them) and Ctrl+W, which hides the window to the tray like its close button.

import { tauri } from "./backend.js";
import { $ } from "./dom.js";
import * as L from "./logic.js";
import { showNotice } from "./notice.js";
import { dial } from "./screen-home.js";
import { toggleCamera, toggleMute } from "./screen-incall.js";
import { answer } from "./screen-incoming.js";
import { cancelCall } from "./screen-outgoing.js";
import { ui } from "./state.js";

export function onKeyDown(event) {
  ui.lastKeyDownAt = Date.now();
  if (event.isComposing || event.defaultPrevented || event.repeat) return;
  if (L.isCloseShortcut(event)) {
    event.preventDefault();
    closeWindow();
    return;
  }
  const action = L.keyAction(ui.screen, event.key);
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
