// The in-call screen (#screen-incall): the peer and the call's time, the sound line (state,
// levels, quality), the picture boxes' texts and the mute, camera, switch-camera and
// share-screen buttons. The pictures themselves are drawn by video-loops.js.

import { refreshDisabled, run } from "./backend.js";
import { $, blank, setAvatar } from "./dom.js";
import * as L from "./logic.js";
import { ui } from "./state.js";

export function renderInCall() {
  if (ui.screen !== "incall") return;
  const call = ui.snapshot.call;
  $("incall-peer").textContent = call.peer;
  setAvatar("incall-avatar", call.peer);
  const content = $("incall-content");
  content.textContent = call.content ?? "";
  content.hidden = !call.content;
  const media = call.media ?? null;
  const view = L.mediaView(media, ui.snapshot.connection);
  $("incall-media").dataset.phase = media?.phase ?? "none";
  $("incall-media-status").textContent = view.status;
  $("incall-mic-level").value = media && !media.muted ? Math.min(1, (media.mic_level ?? 0) * 3) : 0;
  $("incall-speaker-level").value = media ? Math.min(1, (media.speaker_level ?? 0) * 3) : 0;
  $("incall-quality").dataset.quality = view.quality;
  $("incall-quality").textContent = view.qualityText;
  const mute = $("incall-mute");
  mute.textContent = view.muteLabel;
  mute.setAttribute("aria-pressed", media?.muted ? "true" : "false");
  mute.disabled = !media;
  renderVideo(media, call.peer);
}

/** The pictures' boxes and buttons (the canvases are drawn by video-loops.js). */
function renderVideo(media, peer) {
  const v = L.videoView(media, peer);
  $("incall-stage").dataset.remote = v.remote ? "on" : "off";
  $("incall-placeholder-text").textContent = v.remoteText;
  $("incall-video-info").textContent = v.info;
  $("incall-preview").dataset.state = v.preview;
  $("incall-preview-text").textContent = v.previewText;
  // A picture that stopped must not come back as a still when it starts again.
  if (ui.lastVideo.remote && !v.remote) blank($("incall-remote-video"));
  if (ui.lastVideo.preview === "on" && v.preview !== "on") blank($("incall-local-video"));
  ui.lastVideo = { remote: v.remote, preview: v.preview };
  const camera = $("incall-camera");
  camera.textContent = v.cameraLabel;
  camera.setAttribute("aria-pressed", v.cameraPressed ? "true" : "false");
  camera.dataset.disabledByState = v.cameraDisabled ? "1" : "";
  const sw = $("incall-switch-camera");
  sw.hidden = !v.switchShown;
  sw.title = v.switchTitle;
  const share = $("incall-share-screen");
  share.hidden = !v.shareShown;
  share.textContent = v.shareLabel;
  share.setAttribute("aria-pressed", v.sharePressed ? "true" : "false");
  refreshDisabled();
}

/** app.js's tick on this screen: the call's duration. */
export function tickInCall(now) {
  const since = ui.snapshot.call.phase_since_ms;
  $("incall-duration").textContent = L.formatDuration(Number.isFinite(since) ? now - since : 0);
}

export function toggleMute() {
  const media = ui.snapshot?.call?.media;
  if (!media) return;
  run($("incall-mute"), "set_muted", { muted: !media.muted });
}

export function toggleCamera() {
  const video = ui.snapshot?.call?.media?.video;
  if (!video || $("incall-camera").disabled) return;
  run($("incall-camera"), "set_camera", { on: !video.camera_on });
}

export function wireInCall() {
  $("incall-hangup").addEventListener("click", () => run($("incall-hangup"), "hang_up"));
  $("incall-mute").addEventListener("click", toggleMute);
  $("incall-camera").addEventListener("click", toggleCamera);
  $("incall-switch-camera").addEventListener("click", () => run($("incall-switch-camera"), "switch_camera"));
  $("incall-share-screen").addEventListener("click", () => {
    const sharing = Boolean(ui.snapshot?.call?.media?.video?.sharing_screen);
    run($("incall-share-screen"), "share_screen", { on: !sharing });
  });
}
