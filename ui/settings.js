// The Settings section of the home screen (#settings): filled from the snapshot's settings
// unless the user is editing it, the sound devices and cameras listed when it opens, and
// saved with set_settings.

import { hasTauri, invoke, run } from "./backend.js";
import { $ } from "./dom.js";
import * as L from "./logic.js";
import { showNotice } from "./notice.js";
import { ui } from "./state.js";

let settingsDirty = false; // the user edited the settings form since it was filled
let settingsFilledFrom = null; // JSON of the settings the form was filled from

/** The section as the snapshot says (with the home screen). */
export function renderSettings() {
  fillSettings();
  $("notifications-note").hidden = ui.snapshot.notifications_available !== false;
}

function fillSettings(force = false) {
  const s = ui.snapshot?.settings;
  if (!s) return;
  const json = JSON.stringify(s);
  if (!force && (settingsDirty || json === settingsFilledFrom)) return;
  settingsFilledFrom = json;
  settingsDirty = false;
  $("setting-busy-policy").value = s.busy_policy === "notify" ? "notify" : "auto_busy";
  $("setting-meeting-url").value = s.meeting_url_template ?? "";
  $("setting-ca-file").value = s.ca_file ?? "";
  $("setting-share-lan").checked = Boolean(s.share_on_lan);
  $("setting-start-muted").checked = Boolean(s.start_muted);
  $("setting-dnd").value = ["busy", "silent"].includes(s.do_not_disturb) ? s.do_not_disturb : "off";
  $("setting-microphone").value = s.microphone ?? "";
  $("setting-speaker").value = s.speaker ?? "";
  $("setting-camera").value = s.camera ?? "";
  $("setting-start-camera").checked = s.start_camera_on !== false;
  $("setting-start-at-login").checked = Boolean(s.start_at_login);
}

/** Fills the microphone and speaker choices (once per opening of Settings). */
async function fillDevices() {
  if (!hasTauri) return;
  let devices;
  try {
    devices = await invoke("audio_devices");
  } catch (e) {
    devices = { inputs: [], outputs: [], error: L.errorMessage(e) };
  }
  const fill = (id, names, chosen) => {
    const select = $(id);
    const options = [["", "System default"], ...names.map((n) => [n, n])];
    if (chosen && !names.includes(chosen)) options.push([chosen, `${chosen} (not connected)`]);
    select.replaceChildren(
      ...options.map(([value, label]) => {
        const o = document.createElement("option");
        o.value = value;
        o.textContent = label;
        return o;
      }),
    );
    select.value = chosen ?? "";
  };
  fill("setting-microphone", devices.inputs ?? [], ui.snapshot?.settings?.microphone);
  fill("setting-speaker", devices.outputs ?? [], ui.snapshot?.settings?.speaker);
  const help = $("setting-devices-help");
  help.hidden = !devices.error;
  help.textContent = devices.error ? `Sound devices: ${devices.error}` : "";
  fillCameras();
}

/** Fills the camera choice (with the sound devices, once per opening of Settings). */
async function fillCameras() {
  let video;
  try {
    video = await invoke("video_devices");
  } catch (e) {
    video = { cameras: [], error: L.errorMessage(e) };
  }
  const cameras = Array.isArray(video.cameras) ? video.cameras : [];
  const chosen = ui.snapshot?.settings?.camera ?? "";
  const options = [["", "First camera"], ...cameras.map((c) => [c.id, c.name])];
  if (chosen && !cameras.some((c) => c.id === chosen)) options.push([chosen, `${chosen} (not connected)`]);
  const select = $("setting-camera");
  select.replaceChildren(
    ...options.map(([value, label]) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      return o;
    }),
  );
  select.value = chosen;
  const help = $("setting-camera-help");
  const note = video.error ? `Cameras: ${video.error}` : cameras.length === 0 ? "No camera found: calls go without your picture." : "";
  help.hidden = !note;
  help.textContent = note;
}

async function saveSettings(event) {
  event.preventDefault();
  const form = {
    busy_policy: $("setting-busy-policy").value,
    meeting_url_template: $("setting-meeting-url").value,
    ca_file: $("setting-ca-file").value,
    share_on_lan: $("setting-share-lan").checked,
    start_muted: $("setting-start-muted").checked,
    do_not_disturb: $("setting-dnd").value,
    microphone: $("setting-microphone").value,
    speaker: $("setting-speaker").value,
    camera: $("setting-camera").value,
    start_camera_on: $("setting-start-camera").checked,
  };
  const urlError = L.validateMeetingUrl(form.meeting_url_template);
  if (urlError) {
    showNotice(urlError, "error");
    $("setting-meeting-url").focus();
    return;
  }
  const before = ui.eventCount;
  const settings = { ...L.mergeSettings(ui.snapshot?.settings, form), start_at_login: $("setting-start-at-login").checked };
  const r = await run($("settings-save"), "set_settings", { settings });
  if (r.ok) {
    const fresh = ui.eventCount === before && r.value && typeof r.value === "object" && ui.snapshot;
    if (fresh) ui.snapshot = { ...ui.snapshot, settings: r.value };
    settingsDirty = false;
    fillSettings(true);
    showNotice("Settings saved");
  }
}

export function wireSettings() {
  $("settings-open").addEventListener("click", () => {
    const details = $("settings");
    details.open = true;
    details.scrollIntoView({ block: "start" });
    details.querySelector("summary")?.focus({ preventScroll: true });
  });
  $("settings-form").addEventListener("submit", saveSettings);
  $("settings-form").addEventListener("input", () => (settingsDirty = true));
  $("settings-form").addEventListener("change", () => (settingsDirty = true));
  $("settings").addEventListener("toggle", () => {
    if ($("settings").open) fillDevices();
  });
}
