// End-to-end: how the app looks and holds still (issue #12), in the real app under Xvfb.
// - Nothing jumps: the element rects of Sign in, Call, the header, Cancel and Hang up are
//   read before and after what used to move them (an error, a status, a message going).
// - The home screen: Sign out on one line, the history above the fold, Clear history only
//   with a history, Settings opens from the bar, no second window (suggestion list).
// - Calls: Cancel red like Hang up, Busy the quiet third choice, a new call without the last
//   call's message.
// - Accessibility: axe-core (tests/app/node_modules, installed by run.sh) run in the page on
//   every screen, light and then dark: no serious or critical finding.
// - Dark: the app started with a dark GTK theme shows the dark colours (prefers-color-scheme).
// Screenshots: dark-*.png (the light ones come from app.test.mjs), in SCREENSHOT_DIR when set.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

import { Session, sleep } from './webdriver.mjs';
import { pictureRect, readBars, barsError } from './video.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BIN = resolve(ROOT, process.env.CALLINVITE_BIN_DIR ?? join('target', 'debug'));
const SHOTS = resolve(process.env.SCREENSHOT_DIR ?? mkdtempSync(join(tmpdir(), 'callinvite-shots-')));
mkdirSync(SHOTS, { recursive: true });
const AXE = readFileSync(join(HERE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

let server;
let url;
let app;
let profile;
const children = [];
const USER = 'lookuser';

/** A CLI process (the other party) and its JSON events. */
function cli(user, ...args) {
  const child = spawn(join(BIN, 'callinvite'), ['--server', url, '--user', user, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const events = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      events.push(JSON.parse(line));
    } catch {
      // not an event
    }
  });
  const exit = new Promise((res) => child.on('exit', (code) => res(code)));
  return {
    child,
    events,
    exit,
    async waitEvent(name, timeoutMs = 20000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const found = events.find((e) => e.event === name);
        if (found) return found;
        await sleep(100);
      }
      throw new Error(`${user}: no ${name} event; saw ${JSON.stringify(events)}`);
    },
  };
}

/** The app's windows by their title, which ends in "callinvite (<profile>)". */
function windows() {
  try {
    const out = execFileSync('xdotool', ['search', '--onlyvisible', '--name', `callinvite \\(${profile}\\)$`], { encoding: 'utf8' });
    return out.trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

async function shot(name) {
  await sleep(300);
  const area = (id) => {
    const g = execFileSync('xdotool', ['getwindowgeometry', id], { encoding: 'utf8' }).match(/Geometry: (\d+)x(\d+)/);
    return g ? Number(g[1]) * Number(g[2]) : 0;
  };
  const id = windows().sort((a, b) => area(b) - area(a))[0];
  execFileSync('import', ['-window', id, join(SHOTS, `${name}.png`)]);
}

/** An element's box in page coordinates (so scrolling does not count as moving): [x, y, w, h]. */
function rect(css) {
  return app.exec(`const r = document.querySelector(${JSON.stringify(css)}).getBoundingClientRect();
    return [r.x + scrollX, r.y + scrollY, r.width, r.height].map((v) => Math.round(v * 10) / 10);`);
}

/** Whether the element is on screen: rendered, not in a closed <details>, not visibility:hidden. */
const shown = (css) => app.exec(`const e = document.querySelector(${JSON.stringify(css)});
  return Boolean(e && e.getClientRects().length > 0 && e.checkVisibility({ visibilityProperty: true }) && !e.closest('details:not([open]) > :not(summary)'));`);
const noticeText = () => app.exec("return document.getElementById('notice-text').textContent");

/**
 * Where `css` is with a message in the notice and without (the notice set and cleared as
 * ui/notice.js's showNotice and clearNotice do): the two must be the same.
 */
async function stillWithNotice(css) {
  const at = async (text) => {
    await app.exec(`document.getElementById('notice-text').textContent = ${JSON.stringify(text)};
      document.getElementById('notice').dataset.kind = ${JSON.stringify(text ? 'info' : 'none')};
      document.getElementById('notice-dismiss').hidden = ${!text};`);
    return rect(css);
  };
  const without = await at('');
  assert.deepEqual(await at('bob declined: "in a meeting, call you back at three"'), without, `${css} moved when a message showed`);
  await at('');
}

/** Puts axe-core into the page (once per page load). */
async function loadAxe() {
  if (await app.exec('return typeof window.axe === "object"')) return;
  await app.exec(`${AXE}\n;window.axe = axe; return true;`);
}

/**
 * Runs axe-core on what the screen shows (hidden screens are skipped by axe itself) and
 * fails on any serious or critical finding; the lesser ones are printed.
 */
async function checkAccessibility(where) {
  await loadAxe();
  const r = await app.execAsync(`const done = arguments[arguments.length - 1];
    axe.run(document, { resultTypes: ['violations'] }).then((r) => done({
      passes: r.passes.length,
      violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + (n.failureSummary || '').replace(/\\s+/g, ' ').slice(0, 240)) })),
    }), (e) => done({ error: String(e) }));`);
  assert.ok(!r.error, `axe failed to run: ${r.error}`);
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = r.violations.filter((v) => !bad.includes(v));
  console.error(`# axe, ${where}: ${r.passes} rules pass, ${bad.length} serious/critical, ${minor.length} lesser${minor.length ? `: ${minor.map((v) => `${v.id} (${v.impact})`).join(', ')}` : ''}`);
  assert.deepEqual(bad, [], `${where}: ${JSON.stringify(bad, null, 1)}`);
  assert.ok(r.passes > 10, `${where}: axe checked too little (${r.passes} rules passed)`);
}

/** Starts the app (through `launcher` when given) with a fresh profile and data directory. */
async function startApp(name, launcher) {
  profile = name;
  const dataDir = mkdtempSync(join(tmpdir(), `callinvite-${name}-`));
  app = await Session.start(launcher ?? join(BIN, 'callinvite-app'), [
    '--profile', name, '--data-dir', dataDir,
    '--fake-audio-input', 'tone:440', '--fake-audio-output', join(dataDir, 'heard.wav'), '--media-ip', '127.0.0.1',
    '--fake-video-input', 'pattern',
  ]);
  await app.untilScreen('signin');
}

async function signIn() {
  await app.type('#signin-user', USER);
  if (!(await app.exec("return document.getElementById('signin-advanced').open"))) await app.click('#signin-advanced > summary');
  await app.click('#signin-server-url');
  await app.type('#signin-url', url);
  await app.click('#signin-submit');
  await app.untilScreen('home');
  await app.until('connected', async () => (await app.exec("return document.getElementById('connection-status').dataset.state")) === 'connected');
}

before(async () => {
  server = spawn(join(BIN, 'callinvite-server'), ['--listen', '127.0.0.1:0', '--offline-window', '3s', '--log', 'info', '--data-dir', '-'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(server);
  url = await new Promise((res, reject) => {
    createInterface({ input: server.stderr }).on('line', (line) => {
      const m = line.match(/addr=(\S+)/);
      if (m && line.includes('listening')) res(`ws://${m[1]}`);
    });
    setTimeout(() => reject(new Error('server did not start')), 10000);
  });
  await startApp('e2e-look');
});

after(async () => {
  if (app) await app.end();
  for (const c of children) c.kill('SIGTERM');
});

test('axe-core finds what it should in this webview (the check below can fail)', async () => {
  await loadAxe();
  // A planted image without text, an empty button and grey on grey: axe must report all three.
  const found = await app.execAsync(`const done = arguments[arguments.length - 1];
    const box = document.createElement('div');
    const img = document.createElement('img'); img.src = 'logo.svg';
    const btn = document.createElement('button'); btn.type = 'button';
    const p = document.createElement('p'); p.textContent = 'faint'; p.style.color = '#aaaaaa'; p.style.background = '#bbbbbb';
    box.append(img, btn, p);
    document.querySelector('#screen-signin').append(box);
    axe.run(box, { runOnly: ['image-alt', 'button-name', 'color-contrast'] })
      .then((r) => { box.remove(); done(r.violations.map((v) => v.id).sort()); }, (e) => { box.remove(); done(String(e)); });`);
  assert.deepEqual(found, ['button-name', 'color-contrast', 'image-alt']);
});

test('sign-in: the logo and the name, server and token behind Advanced; an error moves nothing', async () => {
  assert.equal(await app.text('#signin-title'), 'callinvite');
  assert.ok(await app.exec("const l = document.querySelector('#screen-signin img.logo'); return l.complete && l.naturalWidth > 0"), 'the logo loads');
  assert.equal(await shown('#signin-server-url'), false, 'the server choice is behind Advanced');
  assert.equal(await shown('#signin-token'), false, 'the token is behind Advanced');
  await checkAccessibility('sign-in');
  const button = await rect('#signin-submit');
  await app.type('#signin-user', 'no*stars');
  await app.click('#signin-submit');
  await app.until('the error', async () => (await app.text('#signin-error')).includes('*'));
  assert.deepEqual(await rect('#signin-submit'), button, 'Sign in stayed where it was');
  await checkAccessibility('sign-in with an error');
  await signIn();
});

test('home: one window, the header holds its height, Sign out on one line, the history above the fold', async () => {
  assert.equal(windows().length, 1, 'one window: no suggestion list or other popup');
  // The header with each text the status line can show (set here as the app sets it).
  const header = async () => ({ bar: await rect('.appbar'), me: await rect('.me'), call: await rect('#dial-call') });
  const connected = await header();
  const texts = ['Connecting…', 'Disconnected', 'Connected · built-in server, shared on your network', `Connected · ${'very-long-host-name.'.repeat(4)}example.org`];
  for (const text of texts) {
    await app.exec(`const s = document.getElementById('connection-status'); s.textContent = ${JSON.stringify(text)}; s.dataset.state = ${JSON.stringify(text.startsWith('Connected') ? 'connected' : 'connecting')};`);
    assert.deepEqual(await header(), connected, `with "${text}"`);
  }
  await app.exec("const s = document.getElementById('connection-status'); s.textContent = 'Connected'; s.dataset.state = 'connected'");
  // Sign out and Settings: one line each.
  for (const id of ['signout', 'settings-open']) {
    const fits = await app.exec(`const b = document.getElementById('${id}'); const lh = parseFloat(getComputedStyle(b).lineHeight) || 20;
      return b.scrollWidth <= b.clientWidth && b.getBoundingClientRect().height < 2 * lh + 12;`);
    assert.ok(fits, `#${id} on one line`);
  }
  // A fresh profile has no history: no Clear history button.
  assert.equal(await shown('#history-clear'), false, 'no Clear history without a history');
  assert.ok(await shown('#history-empty'));
  // The history's heading is on screen without scrolling, above the notice's band.
  const fold = await app.exec("return innerHeight - parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--notice-space'))");
  const title = await rect('#history-title');
  assert.ok(title[1] + title[3] <= fold, `the history starts at ${title[1]} px, the fold at ${fold} px`);
  await stillWithNotice('#dial-call');
  // Settings opens from the bar.
  await app.click('#settings-open');
  assert.equal(await app.exec("return document.getElementById('settings').open"), true);
  await checkAccessibility('home, settings open');
  await app.exec("document.getElementById('settings').open = false; window.scrollTo(0, 0)");
  await sleep(200);
});

test('home: the Call button and what is below it stay put when an error shows', async () => {
  const before = { call: await rect('#dial-call'), recent: await rect('.recent') };
  for (const [input, expect] of [[USER, /yourself/], ['no*stars', /\*/], ['', /Enter a user ID/]]) {
    await app.type('#dial-input', input || ' ');
    if (!input) await app.exec("document.getElementById('dial-input').value = ''");
    await app.click('#dial-call');
    await app.until(`the error for ${JSON.stringify(input)}`, async () => expect.test(await app.text('#dial-error')));
    await app.exec('window.scrollTo(0, 0)');
    assert.deepEqual({ call: await rect('#dial-call'), recent: await rect('.recent') }, before, `with the error for ${JSON.stringify(input)}`);
    assert.equal(await shown('.dial .keys'), false, 'the error covers the shortcuts');
  }
  await checkAccessibility('home with an error');
  await app.type('#dial-input', 'x');
  await app.exec("document.getElementById('dial-input').value = ''; document.getElementById('dial-input').blur()");
  assert.equal(await app.text('#dial-error'), '');
  assert.equal(await shown('.dial .keys'), true, 'the shortcuts are back');
});

test('outgoing: Cancel is red like Hang up and holds still while the status changes; the next call starts without the message', async () => {
  await app.type('#dial-input', 'ghost');
  await app.click('#dial-call');
  await app.untilScreen('outgoing');
  const colour = (id) => app.exec(`return getComputedStyle(document.getElementById('${id}')).backgroundColor`);
  assert.equal(await colour('outgoing-cancel'), await colour('incall-hangup'), 'Cancel and Hang up share a colour');
  await checkAccessibility('outgoing');
  // Every status the call goes through (Calling…, then two lines of "ghost is offline — waiting…")
  // with Cancel where it was.
  await stillWithNotice('#outgoing-cancel');
  const cancelAt = await rect('#outgoing-cancel');
  const statuses = new Set();
  for (;;) {
    const [screen, status, where] = await app.exec(`const r = document.getElementById('outgoing-cancel').getBoundingClientRect();
      return [document.body.dataset.screen, document.getElementById('outgoing-status').textContent,
        [r.x + scrollX, r.y + scrollY, r.width, r.height].map((v) => Math.round(v * 10) / 10)]`);
    if (screen !== 'outgoing') break;
    if (status) statuses.add(status);
    assert.deepEqual(where, cancelAt, `Cancel moved with status "${status}"`);
    await sleep(100);
  }
  assert.ok([...statuses].some((s) => /offline/.test(s)), `saw ${[...statuses].join(' | ')}`);
  await app.untilScreen('home');
  await app.until('the offline message', async () => /offline/.test(await noticeText()));

  // The next call: the last call's message is gone from its screen.
  const bot = cli('lookbot', 'answer', '--accept', '--play', 'tone:660', '--media-ip', '127.0.0.1');
  await bot.waitEvent('connection_state_changed');
  await app.type('#dial-input', 'lookbot');
  await app.click('#dial-call');
  await app.until('the call screen', async () => ['outgoing', 'incall'].includes(await app.screen()));
  assert.doesNotMatch(await noticeText(), /ghost|offline/, 'the message of the last call is not on the new one');
  await app.untilScreen('incall');

  // In the call: Hang up stays where it is when the message ("lookbot accepted") goes.
  await app.until('audio connected', async () => (await app.exec("return document.getElementById('incall-media').dataset.phase")) === 'connected', 15000);
  await app.until('the accepted message', async () => /accepted/.test(await noticeText()), 5000);
  const hangup = await rect('#incall-hangup');
  await app.click('#notice-dismiss');
  await app.until('the message gone', async () => (await noticeText()) === '');
  assert.deepEqual(await rect('#incall-hangup'), hangup, 'Hang up stayed where it was');
  assert.ok(hangup[1] + hangup[3] <= (await app.exec('return innerHeight')), 'Hang up is on screen');
  await checkAccessibility('in call');
  await app.click('#incall-hangup');
  await app.untilScreen('home');
  assert.equal(await bot.exit, 0);
  // Now there is a history, and a way to clear it.
  await app.until('Clear history shown', async () => shown('#history-clear'), 5000);
});

test('incoming: Busy is the quiet third choice', async () => {
  const caller = cli('lookcaller', 'call', USER, '--content', 'standup', '--cancel-after', '30s');
  await app.untilScreen('incoming');
  const style = (id) => app.exec(`const s = getComputedStyle(document.getElementById('${id}')); const r = document.getElementById('${id}').getBoundingClientRect();
    return { bg: s.backgroundColor, w: r.width, h: r.height }`);
  const [accept, decline, busy] = [await style('incoming-accept'), await style('incoming-decline'), await style('incoming-busy')];
  assert.match(busy.bg, /rgba\(0, 0, 0, 0\)|transparent/, 'Busy has no fill');
  assert.ok(busy.h < accept.h && busy.w < accept.w, `Busy ${JSON.stringify(busy)} is smaller than Accept ${JSON.stringify(accept)}`);
  assert.notEqual(accept.bg, decline.bg);
  await stillWithNotice('#incoming-accept');
  await checkAccessibility('incoming');
  await app.click('#incoming-decline');
  await app.untilScreen('home');
  await caller.exit;
});

test('dark: with a dark system theme the app is dark, and accessible on every screen', async () => {
  await app.end();
  app = null;
  // The system says dark through GTK's theme, as a desktop set to dark does.
  const dir = mkdtempSync(join(tmpdir(), 'callinvite-dark-'));
  const launcher = join(dir, 'callinvite-app-dark');
  writeFileSync(launcher, `#!/bin/sh\nGTK_THEME=Adwaita:dark exec ${JSON.stringify(join(BIN, 'callinvite-app'))} "$@"\n`);
  chmodSync(launcher, 0o755);
  await startApp('e2e-look-dark', launcher);
  assert.equal(await app.exec("return matchMedia('(prefers-color-scheme: dark)').matches"), true, 'the page sees a dark system');
  const bg = await app.exec("return getComputedStyle(document.body).backgroundColor");
  const [r, g, b] = bg.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 3 * 60, `the background is dark: ${bg}`);
  await checkAccessibility('dark sign-in');
  await shot('dark-signin');
  await signIn();
  // A call first, so the home screen shows a history.
  const bot = cli('darkbot', 'answer', '--accept', '--play', 'tone:660', '--video', 'pattern', '--media-ip', '127.0.0.1');
  await bot.waitEvent('connection_state_changed');
  await app.type('#dial-input', 'darkbot');
  await app.click('#dial-call');
  await app.untilScreen('incall');
  await app.until('their video drawn', async () => (await app.exec("return document.getElementById('incall-stage').dataset.remote === 'on' && Number(document.getElementById('incall-remote-video').dataset.frames) > 10")), 20000);
  await app.until('audio connected', async () => (await app.exec("return document.getElementById('incall-media').dataset.phase")) === 'connected', 15000);
  await app.until('call quality shown', async () => (await app.text('#incall-quality')).includes('ms'), 10000);
  await app.click('#notice-dismiss').catch(() => {});
  await checkAccessibility('dark in call');
  // For the docs: a moment when their picture is whole (a busy machine shows a half-repaired one now and then).
  for (let i = 0; i < 10; i += 1) {
    await shot('dark-in-call');
    const error = barsError(readBars(join(SHOTS, 'dark-in-call.png'), await pictureRect(app, '#incall-remote-video')));
    if (error <= 50) break;
    console.error(`# dark-in-call: their picture off by ${error}, again`);
  }
  await app.click('#incall-hangup');
  await app.untilScreen('home');
  assert.equal(await bot.exit, 0);
  await app.until('the message gone', async () => (await app.click('#notice-dismiss').catch(() => {}), (await noticeText()) === ''), 5000);
  await checkAccessibility('dark home');
  await shot('dark-home');
  const caller = cli('darkcaller', 'call', USER, '--content', 'standup', '--cancel-after', '30s');
  await app.untilScreen('incoming');
  await checkAccessibility('dark incoming');
  await shot('dark-incoming');
  await app.click('#incoming-decline');
  await app.untilScreen('home');
  await caller.exit;
});
