// A minimal W3C WebDriver client (Node 20's fetch), enough to drive the app
// through tauri-driver: sessions, elements, keys, scripts, screenshots.

const BASE = process.env.WEBDRIVER_URL ?? 'http://127.0.0.1:4444';

async function call(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok || (json.value && json.value.error)) {
    const v = json.value ?? {};
    throw new Error(`WebDriver ${method} ${path}: ${v.error ?? res.status} ${v.message ?? ''}`);
  }
  return json.value;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Session {
  static async start(application, args = []) {
    const value = await call('POST', '/session', {
      capabilities: { alwaysMatch: { 'tauri:options': { application, args } } },
    });
    return new Session(value.sessionId);
  }

  constructor(id) {
    this.id = id;
  }

  path(p) {
    return `/session/${this.id}${p}`;
  }

  async end() {
    await call('DELETE', this.path('')).catch(() => {});
  }

  async find(css) {
    const v = await call('POST', this.path('/element'), { using: 'css selector', value: css });
    return Object.values(v)[0];
  }

  async click(css) {
    const el = await this.find(css);
    await call('POST', this.path(`/element/${el}/click`), {});
  }

  async type(css, text) {
    const el = await this.find(css);
    await call('POST', this.path(`/element/${el}/clear`), {});
    await call('POST', this.path(`/element/${el}/value`), { text });
  }

  async text(css) {
    const el = await this.find(css);
    return call('GET', this.path(`/element/${el}/text`));
  }

  async exec(script, ...args) {
    return call('POST', this.path('/execute/sync'), { script, args });
  }

  /** Runs an async script: it ends by calling its last argument with the result. */
  async execAsync(script, ...args) {
    return call('POST', this.path('/execute/async'), { script, args });
  }

  async screen() {
    return this.exec('return document.body.dataset.screen || null');
  }

  /** Polls `probe` (async) until it returns a truthy value; returns it. */
  async until(what, probe, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      try {
        last = await probe();
        if (last) return last;
      } catch (e) {
        last = e.message;
      }
      await sleep(150);
    }
    throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
  }

  async untilScreen(name, timeoutMs) {
    // The screens seen while waiting, in order, for the failure message.
    const seen = [];
    try {
      return await this.until(`screen ${name}`, async () => {
        const now = await this.screen();
        if (seen[seen.length - 1] !== now) seen.push(now);
        return now === name;
      }, timeoutMs);
    } catch (e) {
      // Say where the app is instead, and what it last told the user.
      const where = await this.screen().catch(() => '?');
      const notice = await this.exec("return document.getElementById('notice-text')?.textContent ?? ''").catch(() => '?');
      throw new Error(`${e.message}; screens seen meanwhile: ${seen.join(' → ')}; on screen ${JSON.stringify(where)}, notice ${JSON.stringify(notice)}`);
    }
  }

  async screenshotBase64() {
    return call('GET', this.path('/screenshot'));
  }
}
