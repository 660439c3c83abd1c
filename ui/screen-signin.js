// The sign-in screen (#screen-signin): the form filled from the last profile's settings,
// checked here (logic.js signInRequest) before sign_in.

import { run } from "./backend.js";
import { $ } from "./dom.js";
import * as L from "./logic.js";
import { ui } from "./state.js";

export function fillSignIn() {
  const p = L.signInPrefill(ui.snapshot?.settings);
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

/** Signs in; `render` shows the answer's snapshot unless an app-state event came meanwhile. */
async function signIn(event, render) {
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
  const before = ui.eventCount;
  const r = await run($("signin-submit"), "sign_in", req.args);
  // An app-state event received meanwhile is newer than this answer.
  if (r.ok && ui.eventCount === before) render(r.value);
}

/** `render`: app.js's, for the sign_in answer. */
export function wireSignIn(render) {
  $("signin-form").addEventListener("submit", (e) => signIn(e, render));
  $("signin-server-embedded").addEventListener("change", syncServerChoice);
  $("signin-server-url").addEventListener("change", () => {
    syncServerChoice();
    if ($("signin-server-url").checked) $("signin-url").focus();
  });
  $("signin-user").addEventListener("input", () => {
    $("signin-error").textContent = "";
    $("signin-user").removeAttribute("aria-invalid");
  });
}
