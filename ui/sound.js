// The looping ring sounds: the ringtone while a call comes in, the ringback while ours rings
// (logic.js soundFor decides which).

import * as L from "./logic.js";
import { ui } from "./state.js";

const SOUND_FILES = { ringtone: "sounds/ringtone.wav", ringback: "sounds/ringback.wav" };

let sound = null; // {name, audio} playing now
const audioCache = {};

function startSound(name) {
  try {
    let audio = audioCache[name];
    if (!audio) {
      audio = new Audio(SOUND_FILES[name]);
      audio.loop = true;
      audioCache[name] = audio;
    }
    audio.currentTime = 0;
    sound = { name, audio };
    const p = audio.play();
    if (p && typeof p.catch === "function") p.catch(() => {});
  } catch {
    // no audio device or autoplay refused: calls work without sound
  }
}

export function stopSound() {
  if (!sound) return;
  try {
    sound.audio.pause();
    sound.audio.currentTime = 0;
  } catch {
    // ignore
  }
  sound = null;
}

export function updateSound() {
  const want = L.soundFor(ui.screen, ui.snapshot?.call);
  if ((sound?.name ?? null) === want) return;
  stopSound();
  if (want) startSound(want);
}
