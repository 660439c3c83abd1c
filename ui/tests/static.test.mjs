// Static checks of the UI files: the element ids the end-to-end tests rely on,
// labels, the ids the page's modules look up, how they import each other, and the sound
// files. Run: node --test ui/tests/
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

import * as L from "../logic.js";

const ui = join(dirname(fileURLToPath(import.meta.url)), "..");
const html = readFileSync(join(ui, "index.html"), "utf8");
const css = readFileSync(join(ui, "style.css"), "utf8");

/** A module's imports: [{names: [imported name] (null for `* as`), from}]. */
function importsOf(source) {
  return [...source.matchAll(/^import\s+([\s\S]*?)\s+from\s+"([^"]+)";$/gm)].map((m) => ({
    names: m[1].startsWith("*") ? null : m[1].replace(/[{}]/g, "").split(",").map((n) => n.trim().split(/\s+as\s+/)[0]).filter(Boolean),
    from: m[2],
  }));
}

/** The page's modules: app.js, which index.html loads, and every module it imports, in turn (name → source). */
const modules = new Map();
(function visit(name) {
  if (modules.has(name)) return;
  const source = readFileSync(join(ui, name), "utf8");
  modules.set(name, source);
  for (const { from } of importsOf(source)) if (/^\.\/[\w-]+\.js$/.test(from)) visit(from.slice(2));
})("app.js");
/** All of the page's code, for the checks that do not care which module says it. */
const app = [...modules.values()].join("\n");

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
  "signin-advanced": "details", "settings-open": "button", "me-avatar": null,
};

/** The markup between the opening tag with id `id` and its closing tag (same tag name, nesting counted). */
function inner(id) {
  const open = html.match(new RegExp(`<([a-z][a-z0-9]*)[^>]*\\sid="${id}"[^>]*>`));
  assert.ok(open, `#${id}`);
  const tag = open[1];
  let depth = 1;
  const re = new RegExp(`<(/?)${tag}\\b[^>]*>`, "g");
  re.lastIndex = open.index + open[0].length;
  for (let m; (m = re.exec(html)); ) {
    depth += m[1] ? -1 : 1;
    if (depth === 0) return html.slice(open.index + open[0].length, m.index);
  }
  throw new Error(`#${id} is not closed`);
}
const classes = (id) => (byId.get(id)[0].attrs.class ?? "").split(/\s+/);

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

describe("the look (issue #12)", () => {
  test("sign-in: the logo and the product name; server and token behind Advanced", () => {
    const signin = inner("screen-signin");
    assert.match(signin, /<img class="logo" src="logo\.svg" alt=""/);
    assert.match(inner("signin-title"), /^callinvite$/);
    const advanced = inner("signin-advanced");
    assert.match(advanced, /<summary>Advanced/);
    for (const id of ["signin-server-embedded", "signin-server-url", "signin-url", "signin-token"]) assert.match(advanced, new RegExp(`id="${id}"`));
    assert.ok(!("open" in byId.get("signin-advanced")[0].attrs), "Advanced starts closed");
    // The id rules in words, not a line of punctuation in monospace.
    assert.doesNotMatch(inner("screen-signin"), /<code>/);
    assert.ok(existsSync(join(ui, "logo.svg")));
  });
  test("home: the logo in the bar, Settings a button that opens the Settings section", () => {
    assert.match(inner("screen-home"), /<img class="logo" src="logo\.svg" alt=""/);
    assert.equal(byId.get("settings-open")[0].attrs["aria-controls"], "settings");
    assert.match(app, /\$\("settings-open"\)\.addEventListener\("click"/);
    assert.ok(classes("history-clear").includes("btn") && "hidden" in byId.get("history-clear")[0].attrs, "Clear history starts hidden");
    assert.match(app, /\$\("history-clear"\)\.hidden = entries\.length === 0/);
  });
  test("no suggestion drop-down on the dial box", () => {
    const dial = byId.get("dial-input")[0].attrs;
    assert.ok(!("list" in dial));
    assert.equal(dial.autocomplete, "off");
    assert.doesNotMatch(html, /<datalist/);
  });
  test("calls: Cancel and Hang up look alike (big, red); Busy is the quiet third choice", () => {
    for (const id of ["outgoing-cancel", "incall-hangup", "incoming-decline"]) {
      assert.ok(classes(id).includes("danger") && classes(id).includes("big"), id);
    }
    assert.ok(classes("incoming-busy").includes("secondary") && !classes("incoming-busy").includes("big"));
  });
  test("errors and messages have boxes kept for them: below Sign in, with the shortcuts under the dial form", () => {
    const form = inner("signin-form");
    assert.ok(form.indexOf('id="signin-error"') > form.indexOf('id="signin-submit"'), "the sign-in error comes after the button");
    assert.ok(classes("signin-error").includes("slot"));
    assert.match(inner("dial-form"), /<div class="slot">\s*<p class="keys[^"]*"[^>]*>[\s\S]*?<\/p>\s*<p id="dial-error"/);
    assert.match(css, /\.slot\s*{\s*min-height:/);
    assert.match(css, /div\.slot > \*\s*{\s*grid-area: 1 \/ 1;/);
    assert.match(css, /\.notice\s*{[^}]*position:\s*fixed/);
    assert.match(css, /\.app\s*{[^}]*padding:[^;]*var\(--notice-space\)/);
    assert.match(css, /#outgoing-status\s*{\s*min-height:\s*3em/);
    for (const id of ["me", "connection-status"]) assert.ok(classes(id).includes("one-line"), id);
    assert.match(css, /\.one-line\s*{[^}]*white-space:\s*nowrap[^}]*text-overflow:\s*ellipsis/);
  });
  test("every shortcut a screen shows is one it has (logic.js keyAction / isCloseShortcut)", () => {
    const screens = { home: "screen-home", outgoing: "screen-outgoing", incoming: "screen-incoming", incall: "screen-incall" };
    let shown = 0;
    for (const [name, id] of Object.entries(screens)) {
      const lines = [...inner(id).matchAll(/<p class="keys[^"]*"[^>]*>([\s\S]*?)<\/p>/g)].map((m) => m[1]);
      assert.ok(lines.length === 1, `${id} shows its shortcuts`);
      for (const m of lines[0].matchAll(/<kbd>([^<]+)<\/kbd>(\+<kbd>([^<]+)<\/kbd>)?/g)) {
        shown += 1;
        if (m[3]) {
          assert.equal(m[1], "Ctrl");
          assert.ok(L.isCloseShortcut({ key: m[3].toLowerCase(), ctrlKey: true }), m[0]);
        } else {
          const key = { Esc: "Escape" }[m[1]] ?? m[1];
          assert.ok(L.keyAction(name, key), `${name} shows ${m[1]}, which does nothing there`);
        }
      }
    }
    assert.ok(shown >= 7);
    // And the buttons say so to assistive technology.
    assert.equal(byId.get("outgoing-cancel")[0].attrs["aria-keyshortcuts"], "Escape");
    assert.equal(byId.get("incoming-decline")[0].attrs["aria-keyshortcuts"], "Escape");
    assert.equal(byId.get("incall-mute")[0].attrs["aria-keyshortcuts"], "m");
  });
  test("light and dark colours follow the system", () => {
    assert.match(html, /<meta name="color-scheme" content="light dark">/);
    const dark = css.match(/@media \(prefers-color-scheme: dark\)\s*{\s*:root\s*{([^}]*)}/)?.[1] ?? "";
    const light = css.match(/^:root\s*{([^}]*)}/m)?.[1] ?? "";
    const names = (block) => new Set([...block.matchAll(/(--[\w-]+):/g)].map((m) => m[1]));
    // Every colour the light theme sets, the dark one sets too (sizes are shared).
    for (const n of names(light)) if (!/space|radius|primary/.test(n)) assert.ok(names(dark).has(n), `dark theme lacks ${n}`);
  });
});

describe("the page's modules (app.js and what it imports)", () => {
  test('every $("id") it uses exists in index.html', () => {
    const used = new Set([...app.matchAll(/\$\(\s*"([\w-]+)"\s*\)/g)].map((m) => m[1]));
    for (const s of ["signin", "home", "outgoing", "incoming", "incall"]) used.add(`screen-${s}`);
    assert.ok(used.size > 30);
    for (const id of used) assert.ok(byId.has(id), `the page uses #${id}, not in index.html`);
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
      ...app.matchAll(/^(?:export )?(?:async )?function (\w+)\(/gm),
      ...app.matchAll(/const (\w+) = (?:async )?\(/g),
      ...app.matchAll(/\((\w+)\) =>/g), // a parameter
    ].map((m) => m[1]));
    const handed = [
      ...app.matchAll(/addEventListener\("[\w-]+",\s*(\w+)\)/g),
      ...app.matchAll(/set(?:Interval|Timeout)\((\w+),/g),
      ...app.matchAll(/^\s*(\w+)\(\);$/gm),
    ].map((m) => m[1]);
    assert.ok(handed.includes("tick") && handed.includes("wire"));
    for (const name of handed) assert.ok(defined.has(name), `the page uses ${name}, which it does not define`);
  });
  test("they import only each other (no packages), and every ui/*.js is one of them", () => {
    for (const [name, source] of modules) {
      for (const { from } of importsOf(source)) assert.match(from, /^\.\/[\w-]+\.js$/, `${name} imports ${from}`);
    }
    const files = readdirSync(ui).filter((f) => f.endsWith(".js")).sort();
    assert.deepEqual([...modules.keys()].sort(), files);
    assert.ok(modules.has("logic.js"));
  });
  test("every name a module imports is one the module it names exports", () => {
    let checked = 0;
    for (const [name, source] of modules) {
      for (const { names, from } of importsOf(source)) {
        const target = modules.get(from.slice(2));
        for (const n of names ?? []) {
          checked += 1;
          const escaped = n.replace(/\$/g, "\\$");
          const exported = new RegExp(`^export (?:async )?(?:function\\*? |const |let |class )${escaped}(?![\\w$])`, "m");
          assert.match(target, exported, `${name} imports ${n} from ${from}, which does not export it`);
        }
      }
    }
    assert.ok(checked >= 30, `only ${checked} names imported`);
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
