// The notice at the bottom of every screen: the latest call outcome or error. Errors stay
// until dismissed; anything else goes after NOTICE_MS.

import { $, focusFor } from "./dom.js";
import { ui } from "./state.js";

const NOTICE_MS = 8000;

let noticeTimer = null;

export function showNotice(text, kind = "info") {
  clearTimeout(noticeTimer);
  noticeTimer = null;
  $("notice-text").textContent = text;
  $("notice").dataset.kind = kind;
  $("notice-dismiss").hidden = false;
  if (kind !== "error") noticeTimer = setTimeout(clearNotice, NOTICE_MS);
}

export function clearNotice() {
  clearTimeout(noticeTimer);
  noticeTimer = null;
  const hadFocus = document.activeElement === $("notice-dismiss");
  $("notice-text").textContent = "";
  $("notice").dataset.kind = "none";
  $("notice-dismiss").hidden = true;
  if (hadFocus) focusFor(ui.screen);
}
