// The home screen (#screen-home): who we are and the connection, the dial form, recent
// contacts with their presence, and the call history. Its Settings section is settings.js.

import { hasTauri, invoke, run } from "./backend.js";
import { $, setAvatar } from "./dom.js";
import * as L from "./logic.js";
import { renderSettings } from "./settings.js";
import { ui } from "./state.js";

let presenceKey = null; // contacts + connection the presence was last queried for
let localPresence = {}; // presence from query_presence answers
let lastHistoryRender = 0;

export function renderHome() {
  const snapshot = ui.snapshot;
  if (ui.screen !== "home" || !snapshot) return;
  $("me").textContent = snapshot.user ?? "";
  $("me").title = snapshot.user ?? "";
  setAvatar("me-avatar", snapshot.user);
  const status = $("connection-status");
  status.textContent = L.connectionLabel(snapshot);
  status.title = status.textContent;
  status.dataset.state = snapshot.connection ?? "signed_out";
  renderContacts();
  renderHistory();
  renderSettings();
}

function renderContacts() {
  const contacts = L.recentContacts(ui.snapshot.history, ui.snapshot.user, 8);
  const presence = { ...localPresence, ...(ui.snapshot.presence ?? {}) };
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
  if (!hasTauri || ui.snapshot.connection !== "connected" || contacts.length === 0) return;
  const key = `${ui.snapshot.connection}\n${contacts.join("\n")}`;
  if (key === presenceKey) return;
  presenceKey = key;
  const args = { users: contacts };
  invoke("subscribe_presence", args).catch(() => invoke("query_presence", args)).then(
    (rows) => {
      if (!Array.isArray(rows)) return;
      for (const r of rows) if (r && typeof r.user === "string") localPresence[r.user] = Boolean(r.online);
      if (ui.screen === "home") renderContacts();
    },
    () => {
      presenceKey = null; // not important enough for a notice; try again on the next change
    },
  );
}

function renderHistory() {
  const now = Date.now();
  lastHistoryRender = now;
  const entries = Array.isArray(ui.snapshot.history) ? ui.snapshot.history : [];
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

/** app.js's tick on this screen: the history's relative times, now and then. */
export function tickHome(now) {
  if (now - lastHistoryRender > 30000) renderHistory();
}

export async function dial(callee, button) {
  const req = L.dialRequest({ callee, content: $("dial-content").value, me: ui.snapshot?.user });
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

export function wireHome() {
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
}
