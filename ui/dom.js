// Small DOM helpers every screen uses.

import * as L from "./logic.js";

export const $ = (id) => document.getElementById(id);

/** Puts the focus where each screen starts: the field or button one uses first. */
export function focusFor(name) {
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

export function setAvatar(id, peer) {
  $(id).textContent = L.initialOf(peer);
}

export function blank(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
}
