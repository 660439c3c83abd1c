// Static checks of the UI files: the element ids the end-to-end tests rely on,
// labels, the ids app.js looks up, and the sound files. Run: node --test ui/tests/
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const ui = join(dirname(fileURLToPath(import.meta.url)), "..");
const html = readFileSync(join(ui, "index.html"), "utf8");
const app = readFileSync(join(ui, "app.js"), "utf8");
const css = readFileSync(join(ui, "style.css"), "utf8");

/** Opening tags of the document: [{tag, attrs: {name: value}}]. */
function tags(source) {
  const out = [];
  for (const m of source.matchAll(/<([a-zA-Z][\w-]*)((?:\s+[^\s=>]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?)*)\s*\/?>/g)) {
    const attrs = {};
    for (const a of m[2].matchAll(/([^\s=>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g)) {
      attrs[a[1].toLowerCase()] = a[2] ?? a[3] ?? a[4] ?? "";
    }
    out.push({ tag: m[1].toLowerCase(), attrs });
  }
  return out;
}
const all = tags(html);
const byId = new Map();
for (const t of all) if (t.attrs.id) byId.set(t.attrs.id, [...(byId.get(t.attrs.id) ?? []), t]);

const REQUIRED = {
  "screen-signin": "section", "signin-user": "input", "signin-server-embedded": "input", "signin-server-url": "input",
  "signin-url": "input", "signin-token": "input", "signin-submit": "button", "signin-error": null,
  "screen-home": "section", me: null, "connection-status": null, signout: "button", "dial-input": "input",
  "dial-content": "input", "dial-call": "button", contacts: "ul", "history-list": "ul", "history-clear": "button",
  settings: "details", "setting-busy-policy": "select", "setting-meeting-url": "input", "setting-ca-file": "input", "setting-share-lan": "input",
  "settings-save": "button",
  "screen-outgoing": "section", "outgoing-peer": null, "outgoing-status": null, "outgoing-elapsed": null,
  "outgoing-cancel": "button",
  "screen-incoming": "section", "incoming-caller": null, "incoming-content": null, "incoming-accept": "button",
  "incoming-decline": "button", "incoming-busy": "button",
  "screen-incall": "section", "incall-peer": null, "incall-duration": null, "incall-hangup": "button", "incall-mute": "button",
  "incall-media": null, "incall-media-status": null, "incall-mic-level": "meter", "incall-speaker-level": "meter", "incall-quality": null,
  "setting-microphone": "select", "setting-speaker": "select", "setting-start-muted": "input", "setting-dnd": "select",
  "incall-stage": null, "incall-remote-video": "canvas", "incall-placeholder": null, "incall-avatar": null,
  "incall-preview": null, "incall-local-video": "canvas", "incall-preview-text": null, "incall-camera": "button",
  "incall-switch-camera": "button", "incall-share-screen": "button", "setting-camera": "select", "setting-start-camera": "input",
  notice: null, "notice-dismiss": "button",
};

describe("index.html", () => {
  test("every id is unique", () => {
    for (const [id, list] of byId) assert.equal(list.length, 1, `#${id} appears ${list.length} times`);
  });
  test("every id the end-to-end tests use exists with the right element", () => {
    for (const [id, tag] of Object.entries(REQUIRED)) {
      assert.ok(byId.has(id), `#${id} missing`);
      if (tag) assert.equal(byId.get(id)[0].tag, tag, `#${id} should be <${tag}>`);
    }
  });
  test("only the sign-in screen is visible before app.js runs", () => {
    for (const s of ["signin", "home", "outgoing", "incoming", "incall"]) {
      const hidden = "hidden" in byId.get(`screen-${s}`)[0].attrs;
      assert.equal(hidden, s !== "signin", `#screen-${s}`);
    }
    assert.match(html, /<body[^>]*data-screen="signin"/);
  });
  test("input types and defaults", () => {
    const a = (id) => byId.get(id)[0].attrs;
    assert.equal(a("signin-server-embedded").type, "radio");
    assert.ok("checked" in a("signin-server-embedded"));
    assert.equal(a("signin-server-url").type, "radio");
    assert.ok("disabled" in a("signin-url"), "URL input starts disabled");
    assert.equal(a("signin-token").type, "password");
    assert.equal(a("setting-share-lan").type, "checkbox");
    assert.equal(a("setting-meeting-url").placeholder, "https://meet.example.org/{channel}");
    assert.equal(a("signin-error").role, "alert");
    assert.equal(a("notice").role, "status");
    assert.equal(a("notice")["aria-live"], "polite");
  });
  test("every input and select has a <label for>", () => {
    const labelled = new Set(all.filter((t) => t.tag === "label").map((t) => t.attrs.for));
    for (const t of all.filter((t) => t.tag === "input" || t.tag === "select")) {
      assert.ok(t.attrs.id && labelled.has(t.attrs.id), `<${t.tag} id="${t.attrs.id}"> has no label`);
    }
  });
  test("label texts the spec names", () => {
    const labelText = (id) => html.match(new RegExp(`<label for="${id}">([^<]*)</label>`))?.[1];
    assert.equal(labelText("signin-user"), "User ID");
    assert.equal(labelText("signin-server-embedded"), "Built-in server on this computer");
    assert.equal(labelText("signin-server-url"), "Server URL");
    assert.equal(labelText("dial-input"), "Call user ID");
    assert.equal(labelText("dial-content"), "Message (optional)");
    assert.equal(labelText("setting-share-lan"), "Let other computers on the network use my built-in server");
    assert.match(html, /<option value="auto_busy">While in a call, answer new calls 'busy'<\/option>/);
    assert.match(html, /<option value="notify">While in a call, let new calls ring<\/option>/);
  });
  test("every button has text and an explicit type", () => {
    for (const m of html.matchAll(/<button([^>]*)>([\s\S]*?)<\/button>/g)) {
      assert.match(m[1], /type="(button|submit)"/, m[0]);
      assert.ok(m[2].replace(/<[^>]*>/g, "").trim().length > 0, m[0]);
    }
  });
  test("button texts the spec names", () => {
    const text = (id) => html.match(new RegExp(`<button id="${id}"[^>]*>([^<]*)</button>`))?.[1];
    assert.equal(text("signin-submit"), "Sign in");
    assert.equal(text("dial-call"), "Call");
    assert.equal(text("outgoing-cancel"), "Cancel");
    assert.equal(text("incoming-accept"), "Accept");
    assert.equal(text("incoming-decline"), "Decline");
    assert.equal(text("incoming-busy"), "Busy");
    assert.equal(text("incall-hangup"), "Hang up");
    assert.equal(text("incall-camera"), "Stop camera");
  });
  test("loads app.js as a module and style.css", () => {
    assert.match(html, /<script type="module" src="app.js"><\/script>/);
    assert.match(html, /<link rel="stylesheet" href="style.css">/);
  });
});

describe("app.js", () => {
  test('every $("id") it uses exists in index.html', () => {
    const used = new Set([...app.matchAll(/\$\(\s*"([\w-]+)"\s*\)/g)].map((m) => m[1]));
    for (const s of ["signin", "home", "outgoing", "incoming", "incall"]) used.add(`screen-${s}`);
    assert.ok(used.size > 30);
    for (const id of used) assert.ok(byId.has(id), `app.js uses #${id}, not in index.html`);
  });
  test("uses only the contract's commands and events", () => {
    const commands = new Set([
      "get_state", "sign_in", "sign_out", "call", "cancel", "accept", "refuse", "hang_up", "query_presence",
      "subscribe_presence", // not in the written contract; the backend has it, with query_presence as fallback
      "get_history", "clear_history", "get_settings", "set_settings",
      "set_muted", "audio_devices", // the call's sound
      "set_camera", "switch_camera", "share_screen", "video_devices", // its pictures
    ]);
    const used = [...app.matchAll(/(?:run\([^,]+,\s*|invoke\()"([a-z_]+)"/g)].map((m) => m[1]);
    assert.ok(used.length >= 10);
    for (const c of used) assert.ok(commands.has(c), c);
    assert.match(app, /listen\("app-state"/);
    assert.match(app, /listen\("call-outcome"/);
  });
  test("every function it hands over by name (listeners, timers) and every top-level call is defined", () => {
    const defined = new Set([
      ...app.matchAll(/^(?:async )?function (\w+)\(/gm),
      ...app.matchAll(/const (\w+) = (?:async )?\(/g),
      ...app.matchAll(/\((\w+)\) =>/g), // a parameter
    ].map((m) => m[1]));
    const handed = [
      ...app.matchAll(/addEventListener\("[\w-]+",\s*(\w+)\)/g),
      ...app.matchAll(/set(?:Interval|Timeout)\((\w+),/g),
      ...app.matchAll(/^\s*(\w+)\(\);$/gm),
    ].map((m) => m[1]);
    assert.ok(handed.includes("tick") && handed.includes("wire"));
    for (const name of handed) assert.ok(defined.has(name), `app.js uses ${name}, which it does not define`);
  });
  test("imports only logic.js (no packages)", () => {
    const imports = [...app.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1]);
    assert.deepEqual(imports, ["./logic.js"]);
  });
});

describe("style.css", () => {
  test("[hidden] always hides, even on flex/grid elements", () => assert.match(css, /\[hidden\]\s*{\s*display:\s*none\s*!important;?\s*}/));
  test("honours reduced motion and has visible focus", () => {
    assert.match(css, /prefers-reduced-motion:\s*reduce/);
    assert.match(css, /:focus-visible\s*{[^}]*outline:\s*3px solid/);
  });
  test("container max width", () => assert.match(css, /max-width:\s*520px/));
  test("the video boxes keep their size: a 4:3 stage, the preview in a corner, pictures hidden not removed", () => {
    assert.match(css, /\.stage\s*{[^}]*aspect-ratio:\s*4 \/ 3/);
    assert.match(css, /\.preview\s*{[^}]*position:\s*absolute/);
    assert.match(css, /\.stage \.remote-video\s*{[^}]*visibility:\s*hidden/);
    assert.doesNotMatch(css, /\.remote-video[^{]*{[^}]*display:\s*none/);
  });
});

describe("sounds", () => {
  function wav(name) {
    const b = readFileSync(join(ui, "sounds", name));
    assert.equal(b.toString("ascii", 0, 4), "RIFF");
    assert.equal(b.toString("ascii", 8, 12), "WAVE");
    assert.equal(b.toString("ascii", 12, 16), "fmt ");
    const data = b.indexOf("data", 36, "ascii");
    return {
      format: b.readUInt16LE(20), channels: b.readUInt16LE(22), rate: b.readUInt32LE(24), bits: b.readUInt16LE(34),
      seconds: b.readUInt32LE(data + 4) / (b.readUInt32LE(24) * 2), bytes: b.length,
    };
  }
  for (const name of ["ringtone.wav", "ringback.wav"]) {
    test(`${name} is 8 kHz mono 16-bit PCM, a ~3 s loop, small`, () => {
      const w = wav(name);
      assert.deepEqual([w.format, w.channels, w.rate, w.bits], [1, 1, 8000, 16]);
      assert.ok(w.seconds >= 2.5 && w.seconds <= 3.5, `${w.seconds} s`);
      assert.ok(w.bytes < 64 * 1024);
    });
  }
});
