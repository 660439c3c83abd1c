// The page's state that more than one module reads: the latest snapshot and the screen
// showing it (set by app.js's render), and the little the screens and picture loops share.
// Everything else a module keeps to itself.

export const ui = {
  snapshot: null, // latest AppSnapshot
  screen: null, // current screen name
  eventCount: 0, // app-state events received so far
  screenShownAt: 0, // when the current screen appeared
  lastKeyDownAt: 0, // when a key was last pressed anywhere
  videoToken: null, // the running picture loops' token (null: stopped)
  lastVideo: { remote: false, preview: "starting" }, // what the canvases showed last
};
