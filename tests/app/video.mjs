// Helpers of the end-to-end video tests: where a canvas's picture is in the
// window, the colour bars read back from a screenshot (ImageMagick), and the
// CPU time of processes (/proc).

import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** The 75 % colour bars of the test pattern (crates/media/src/video/pattern.rs BARS), left to right. */
export const BARS = [
  [191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0],
  [191, 0, 191], [191, 0, 0], [0, 0, 191], [0, 0, 0],
];
export const BAR_NAMES = ['white', 'yellow', 'cyan', 'green', 'magenta', 'red', 'blue', 'black'];

/**
 * The rectangle (window pixels) where the picture of the canvas `css` is drawn: its
 * box, with `object-fit: contain` applied to its picture size. Also the page's size,
 * to check that the window capture has the page's pixels at the page's coordinates.
 */
export async function pictureRect(app, css) {
  return app.exec(`
    const c = document.querySelector(${JSON.stringify(css)});
    const r = c.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const scale = Math.min(r.width / c.width, r.height / c.height);
    const w = c.width * scale, h = c.height * scale;
    return { x: (r.left + (r.width - w) / 2) * dpr, y: (r.top + (r.height - h) / 2) * dpr, w: w * dpr, h: h * dpr,
             pageW: window.innerWidth * dpr, pageH: window.innerHeight * dpr, picture: [c.width, c.height] };`);
}

/** Width and height of an image file. */
export function imageSize(png) {
  const [w, h] = execFileSync('identify', ['-format', '%w %h', png], { encoding: 'utf8' }).trim().split(' ').map(Number);
  return { w, h };
}

/** Mean colour (0–255) of a rectangle of an image. */
export function meanColour(png, x, y, w, h) {
  const crop = `${Math.max(1, Math.round(w))}x${Math.max(1, Math.round(h))}+${Math.round(x)}+${Math.round(y)}`;
  const out = execFileSync('convert', [png, '-crop', crop, '+repage', '-format', '%[fx:mean.r*255] %[fx:mean.g*255] %[fx:mean.b*255]', 'info:'], { encoding: 'utf8' });
  return out.trim().split(/\s+/).map((v) => Math.round(Number(v)));
}

/**
 * The eight bars' mean colours in the picture at `rect` of `png`: the middle of each
 * bar (a fifth of its width either side), rows 10–55 % (clear of the moving block at
 * the bottom and of a preview in the corner). `mirrored`: right to left.
 */
export function readBars(png, rect, mirrored = false) {
  const out = [];
  for (let i = 0; i < 8; i += 1) {
    const bar = mirrored ? 7 - i : i;
    const x = rect.x + ((i + 0.3) / 8) * rect.w;
    out[bar] = meanColour(png, x, rect.y + 0.1 * rect.h, (0.4 / 8) * rect.w, 0.45 * rect.h);
  }
  return out;
}

/** The largest difference of one channel between the bars read and the pattern's. */
export function barsError(bars) {
  let worst = 0;
  bars.forEach((c, i) => c.forEach((v, k) => { worst = Math.max(worst, Math.abs(v - BARS[i][k])); }));
  return worst;
}

export function describeBars(bars) {
  return bars.map((c, i) => `${BAR_NAMES[i]} ${c.join(',')}`).join('; ');
}

/** A process and all its descendants (WebKit's web and network processes are the app's children). */
export function withDescendants(pid) {
  const all = [pid];
  for (let i = 0; i < all.length; i += 1) {
    try {
      for (const task of readdirSync(`/proc/${all[i]}/task`)) {
        const kids = readFileSync(`/proc/${all[i]}/task/${task}/children`, 'utf8').trim();
        if (kids) all.push(...kids.split(/\s+/).map(Number));
      }
    } catch {
      // gone meanwhile
    }
  }
  return [...new Set(all)];
}

/** CPU seconds (user + system) each process has used so far: {pid: {name, s}}. */
export function cpuSeconds(pids) {
  const hz = 100; // USER_HZ on Linux
  const out = {};
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[pid] = { name, s: (Number(fields[11]) + Number(fields[12])) / hz };
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Share of one core each process (by name) used between two cpuSeconds readings `ms` apart. */
export function cpuShare(before, after, ms) {
  const byName = {};
  for (const [pid, a] of Object.entries(after)) {
    const b = before[pid];
    if (!b) continue;
    byName[a.name] = (byName[a.name] ?? 0) + ((a.s - b.s) * 1000) / ms;
  }
  return byName;
}
