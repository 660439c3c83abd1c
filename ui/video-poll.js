// One long-poll of the backend's `frame:` scheme, and the waits the picture loops
// (video-loops.js, video-vp8.js) pace themselves with.

/** Resolves at the next display refresh (never while the window is hidden). */
export const nextPaint = () => new Promise((resolve) => requestAnimationFrame(resolve));
export const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One long-poll of the frame: scheme: the answer parsed by `parse` and how
 * long reading and parsing it took (`bodyMs`), or null when there was none
 * (204: no new picture in time, asked again at once; an error or another
 * status: after 500 ms).
 */
export async function fetchFrames(url, parse) {
  let res;
  try {
    res = await fetch(url, { cache: "no-store" });
  } catch {
    await pause(500);
    return null;
  }
  if (res.status !== 200) {
    if (res.status !== 204) await pause(500);
    return null;
  }
  const answered = performance.now();
  const parsed = parse(await res.arrayBuffer());
  return { parsed, bodyMs: performance.now() - answered };
}
