// Tests of ui/logic.js. Run: node --test ui/tests/
import { test, describe } from "node:test";
import assert from "node:assert/strict";

import * as L from "../logic.js";

const snap = (over = {}) => ({
  profile: "alice",
  user: "alice",
  connection: "connected",
  server: "embedded (127.0.0.1:7450)",
  call: null,
  presence: {},
  history: [],
  settings: {},
  notifications_available: true,
  last_error: null,
  ...over,
});
const call = (over = {}) => ({
  invitation_id: "inv-1",
  direction: "outgoing",
  peer: "bob",
  content: "",
  phase: "calling",
  phase_since_ms: 1_000,
  answering: false,
  ...over,
});

describe("screenFor", () => {
  test("no snapshot → signin", () => {
    assert.equal(L.screenFor(null), "signin");
    assert.equal(L.screenFor(undefined), "signin");
  });
  test("user null → signin", () => assert.equal(L.screenFor(snap({ user: null })), "signin"));
  test("signed_out → signin even with a user", () =>
    assert.equal(L.screenFor(snap({ connection: "signed_out" })), "signin"));
  test("no call → home, whatever the connection", () => {
    for (const connection of ["connected", "connecting", "disconnected"]) {
      assert.equal(L.screenFor(snap({ connection })), "home");
    }
  });
  test("incoming phase → incoming", () =>
    assert.equal(L.screenFor(snap({ call: call({ direction: "incoming", phase: "incoming" }) })), "incoming"));
  test("in_call → incall (both directions)", () => {
    assert.equal(L.screenFor(snap({ call: call({ phase: "in_call" }) })), "incall");
    assert.equal(L.screenFor(snap({ call: call({ direction: "incoming", phase: "in_call" }) })), "incall");
  });
  test("calling / ringing / waiting_offline → outgoing", () => {
    for (const phase of ["calling", "ringing", "waiting_offline"]) {
      assert.equal(L.screenFor(snap({ call: call({ phase }) })), "outgoing", phase);
    }
  });
  test("unknown phase → home", () => assert.equal(L.screenFor(snap({ call: call({ phase: "weird" }) })), "home"));
});

describe("isNewerSnapshot", () => {
  test("an older revision does not replace a newer one", () => {
    assert.equal(L.isNewerSnapshot(snap({ rev: 7 }), snap({ rev: 6 })), false);
  });
  test("the same or a newer revision does", () => {
    assert.equal(L.isNewerSnapshot(snap({ rev: 7 }), snap({ rev: 7 })), true);
    assert.equal(L.isNewerSnapshot(snap({ rev: 7 }), snap({ rev: 8 })), true);
  });
  test("the first snapshot, or one without revisions, is taken", () => {
    assert.equal(L.isNewerSnapshot(null, snap({ rev: 1 })), true);
    assert.equal(L.isNewerSnapshot(snap({}), snap({ rev: 1 })), true);
    assert.equal(L.isNewerSnapshot(snap({ rev: 3 }), snap({})), true);
  });
  test("not a snapshot → not taken", () => {
    assert.equal(L.isNewerSnapshot(snap({ rev: 1 }), null), false);
    assert.equal(L.isNewerSnapshot(snap({ rev: 1 }), "x"), false);
  });
});

describe("validateUserId", () => {
  test("accepts ordinary ids and every allowed character", () => {
    assert.equal(L.validateUserId("alice"), null);
    assert.equal(L.validateUserId("bob smith"), null);
    assert.equal(L.validateUserId("Null"), null, "only the exact lowercase literal is reserved");
    assert.equal(L.validateUserId("nullx"), null);
    assert.equal(L.validateUserId(`aZ09 ${L.ALLOWED_PUNCTUATION}`), null);
  });
  test("no trailing space (the server refuses it too: \"alice \" must not pass for \"alice\")", () =>
    assert.match(L.validateUserId("trailing "), /must not end with a space/));
  test("empty or not a string", () => {
    assert.match(L.validateUserId(""), /Enter a user ID/);
    assert.match(L.validateUserId(undefined), /Enter a user ID/);
    assert.match(L.validateUserId(null), /Enter a user ID/);
    assert.match(L.validateUserId(42), /Enter a user ID/);
  });
  test("64-byte limit, counted in UTF-8 bytes", () => {
    assert.equal(L.validateUserId("x".repeat(64)), null);
    assert.equal(L.validateUserId("x".repeat(65)), "User ID is 65 bytes; the limit is 64.");
    // 33 two-byte characters = 66 bytes though only 33 UTF-16 units: the byte rule fires first
    assert.equal(L.validateUserId("é".repeat(33)), "User ID is 66 bytes; the limit is 64.");
    // 32 two-byte characters = 64 bytes: passes the length rule, fails the character rule
    assert.match(L.validateUserId("é".repeat(32)), /can't contain "é"/);
    assert.equal(L.utf8Length("é"), 2);
    assert.equal(L.utf8Length("😀"), 4);
  });
  test('"null" is reserved', () => assert.match(L.validateUserId("null"), /"null" is reserved/));
  test("no leading space", () => {
    assert.match(L.validateUserId(" bob"), /must not start with a space/);
    assert.match(L.validateUserId(" "), /must not start with a space/);
  });
  test("bad characters are named", () => {
    assert.match(L.validateUserId("bob/x"), /can't contain "\/"/);
    assert.match(L.validateUserId("bö"), /can't contain "ö"/);
    assert.match(L.validateUserId('a"b'), /can't contain """/);
    assert.match(L.validateUserId("a*b"), /can't contain "\*"/);
    assert.match(L.validateUserId("a'b"), /can't contain "'"/);
    assert.match(L.validateUserId("a😀"), /can't contain "😀"/, "whole code points, not surrogate halves");
    assert.match(L.validateUserId("a\tb"), /can't contain a tab;/);
    assert.match(L.validateUserId("a\nb"), /can't contain a line break;/);
    assert.match(L.validateUserId("a\rb"), /can't contain a line break;/);
    assert.match(L.validateUserId("a\u00a0b"), /can't contain an invisible character \(U\+00A0\)/);
    assert.match(L.validateUserId("a\u200bb"), /can't contain an invisible character \(U\+200B\)/);
  });
});

describe("errorMessage", () => {
  test("uses the message of {kind, message}", () =>
    assert.equal(L.errorMessage({ kind: "not_signed_in", message: "Sign in first" }), "Sign in first"));
  test("a plain string error is shown as is", () => assert.equal(L.errorMessage("boom"), "boom"));
  test("anything else gets a generic text", () => {
    for (const e of [null, undefined, {}, { message: "" }, "", 7]) {
      assert.equal(L.errorMessage(e), "Something went wrong.");
    }
  });
});

describe("outcomeMessage", () => {
  const out = (outcome, detail = "") => L.outcomeMessage({ peer: "bob", direction: "outgoing", outcome, detail });
  const inc = (outcome, detail = "") => L.outcomeMessage({ peer: "bob", direction: "incoming", outcome, detail });

  test("outgoing call, every outcome word", () => {
    const expected = {
      accepted: "bob accepted",
      refused: "bob declined",
      busy: "bob is busy",
      canceled: "Call canceled",
      no_answer: "No answer from bob",
      offline: "bob is offline",
      answered_elsewhere: "Answered on another device",
      declined_elsewhere: "Declined on another device",
      connection_lost: "Connection lost",
      hung_up: "Call ended",
      peer_hung_up: "bob hung up",
      missed: "Missed call from bob",
      failed: "Call to bob failed",
    };
    assert.deepEqual(Object.keys(expected).sort(), [...L.OUTCOMES].sort());
    for (const [outcome, text] of Object.entries(expected)) assert.equal(out(outcome), text, outcome);
  });
  test("incoming call, every outcome word", () => {
    const expected = {
      accepted: "Connected with bob",
      refused: "You declined the call from bob",
      busy: "Told bob you're busy",
      canceled: "bob canceled the call",
      no_answer: "Missed call from bob",
      offline: "bob is offline",
      answered_elsewhere: "Answered on another device",
      declined_elsewhere: "Declined on another device",
      connection_lost: "Connection lost",
      hung_up: "Call ended",
      peer_hung_up: "bob hung up",
      missed: "Missed call from bob",
      failed: "Call from bob failed",
    };
    for (const [outcome, text] of Object.entries(expected)) assert.equal(inc(outcome), text, outcome);
  });
  test("an unknown outcome still reads sensibly", () => assert.equal(out("exploded"), "Call with bob ended"));
  test("a response message is quoted", () => {
    assert.equal(out("refused", "in a meeting"), 'bob declined: "in a meeting"');
    assert.equal(out("busy", "call you back"), 'bob is busy: "call you back"');
    assert.equal(out("accepted", "on my way"), 'bob accepted: "on my way"');
  });
  test("other details are appended plainly", () => {
    assert.equal(out("failed", "server error"), "Call to bob failed: server error");
    assert.equal(out("connection_lost", "timeout"), "Connection lost: timeout");
  });
  test("empty or blank detail is not shown", () => {
    assert.equal(out("refused", ""), "bob declined");
    assert.equal(out("refused", "   "), "bob declined");
    assert.equal(L.outcomeMessage({ peer: "bob", direction: "outgoing", outcome: "refused" }), "bob declined");
    assert.equal(L.outcomeMessage({ peer: "bob", direction: "outgoing", outcome: "refused", detail: null }), "bob declined");
  });
  test("a missing peer reads as someone, capitalised at the start", () => {
    assert.equal(L.outcomeMessage({ direction: "outgoing", outcome: "busy" }), "Someone is busy");
    assert.equal(L.outcomeMessage({ peer: "", direction: "incoming", outcome: "missed" }), "Missed call from someone");
    assert.equal(L.outcomeMessage(), "Call with someone ended");
  });
  test("a missing direction counts as outgoing", () =>
    assert.equal(L.outcomeMessage({ peer: "bob", outcome: "refused" }), "bob declined"));
});

describe("formatDuration", () => {
  test("0", () => assert.equal(L.formatDuration(0), "0:00"));
  test("59 s", () => assert.equal(L.formatDuration(59_000), "0:59"));
  test("59.999 s rounds down", () => assert.equal(L.formatDuration(59_999), "0:59"));
  test("65 s", () => assert.equal(L.formatDuration(65_000), "1:05"));
  test("59:59", () => assert.equal(L.formatDuration(3_599_000), "59:59"));
  test("1 h and more", () => {
    assert.equal(L.formatDuration(3_600_000), "1:00:00");
    assert.equal(L.formatDuration(3_725_000), "1:02:05");
    assert.equal(L.formatDuration(36_000_000 + 61_000), "10:01:01");
  });
  test("negative and not-a-number → 0:00", () => {
    assert.equal(L.formatDuration(-5_000), "0:00");
    assert.equal(L.formatDuration(NaN), "0:00");
    assert.equal(L.formatDuration(undefined), "0:00");
    assert.equal(L.formatDuration(Infinity), "0:00");
  });
});

describe("outgoingStatus", () => {
  test("calling", () => assert.equal(L.outgoingStatus(call({ phase: "calling" })), "Calling…"));
  test("ringing", () => assert.equal(L.outgoingStatus(call({ phase: "ringing" })), "Ringing…"));
  test("offline: how long the wait still lasts", () => {
    const c = call({ phase: "waiting_offline", peer: "bob", wait_until_ms: 40_000 });
    assert.equal(L.outgoingStatus(c, 10_000), "bob is offline — waiting 0:30 more for them to come online");
    assert.equal(L.outgoingStatus(c, 39_100), "bob is offline — waiting 0:01 more for them to come online");
    assert.equal(L.outgoingStatus(c, 45_000), "bob is offline — waiting 0:00 more for them to come online");
  });
  test("waiting_offline", () =>
    assert.equal(
      L.outgoingStatus(call({ phase: "waiting_offline" })),
      "bob is offline — waiting for them to come online…",
    ));
  test("anything else → empty", () => {
    assert.equal(L.outgoingStatus(call({ phase: "in_call" })), "");
    assert.equal(L.outgoingStatus(null), "");
  });
});

describe("recentContacts", () => {
  const h = (peer, at_ms) => ({ id: `${peer}${at_ms}`, direction: "outgoing", peer, at_ms, outcome: "hung_up", duration_s: 1, missed: false });
  test("unique, newest first, without me", () => {
    const history = [h("bob", 50), h("alice", 45), h("carol", 40), h("bob", 30), h("dave", 20)];
    assert.deepEqual(L.recentContacts(history, "alice", 12), ["bob", "carol", "dave"]);
  });
  test("sorts by time even if the list is not ordered; ties keep list order", () => {
    const history = [h("old", 1), h("new", 9), h("tie1", 5), h("tie2", 5)];
    assert.deepEqual(L.recentContacts(history, "me", 12), ["new", "tie1", "tie2", "old"]);
  });
  test("at most max (default 12)", () => {
    const history = Array.from({ length: 20 }, (_, i) => h(`u${i}`, 100 - i));
    assert.equal(L.recentContacts(history, "me").length, 12);
    assert.deepEqual(L.recentContacts(history, "me", 2), ["u0", "u1"]);
  });
  test("skips entries without a peer; tolerates a missing history", () => {
    assert.deepEqual(L.recentContacts([h("", 3), { at_ms: 2 }, null, h("bob", 1)], "me", 12), ["bob"]);
    assert.deepEqual(L.recentContacts(undefined, "me", 12), []);
    assert.deepEqual(L.recentContacts([{ peer: "x" }, { peer: "y" }], "me", 12), ["x", "y"]);
  });
});

describe("relativeTime", () => {
  const now = Date.UTC(2024, 5, 15, 12, 0, 0);
  test("under a minute → just now", () => {
    assert.equal(L.relativeTime(now, now), "just now");
    assert.equal(L.relativeTime(now - 59_000, now), "just now");
  });
  test("future times (clock skew) → just now", () => assert.equal(L.relativeTime(now + 60_000, now), "just now"));
  test("minutes", () => {
    assert.equal(L.relativeTime(now - 60_000, now), "1 min ago");
    assert.equal(L.relativeTime(now - 59 * 60_000, now), "59 min ago");
  });
  test("hours", () => {
    assert.equal(L.relativeTime(now - 3_600_000, now), "1 h ago");
    assert.equal(L.relativeTime(now - 23 * 3_600_000, now), "23 h ago");
  });
  test("yesterday and days", () => {
    assert.equal(L.relativeTime(now - 24 * 3_600_000, now), "yesterday");
    assert.equal(L.relativeTime(now - 2 * 86_400_000, now), "2 d ago");
    assert.equal(L.relativeTime(now - 6 * 86_400_000, now), "6 d ago");
  });
  test("a week and older → local date", () => {
    const t = now - 30 * 86_400_000;
    const d = new Date(t);
    const expected = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
    assert.equal(L.relativeTime(t, now), expected);
    assert.match(expected, /^\d{4}-\d{2}-\d{2}$/);
  });
  test("not a number → empty", () => {
    assert.equal(L.relativeTime(undefined, now), "");
    assert.equal(L.relativeTime(now, NaN), "");
  });
});

describe("historyLabel", () => {
  const now = 10_000_000;
  const entry = (over = {}) => ({
    id: "1", direction: "outgoing", peer: "bob", at_ms: now - 5 * 60_000, outcome: "hung_up", duration_s: 65, missed: false, ...over,
  });
  test("outgoing answered call with duration", () => {
    assert.deepEqual(L.historyLabel(entry(), now), {
      arrow: "↗",
      direction: "Outgoing",
      peer: "bob",
      when: "5 min ago",
      outcome: "Ended",
      duration: "1:05",
      missed: false,
      text: "↗ bob · Ended · 5 min ago · 1:05",
    });
  });
  test("incoming missed call: ↙, Missed, no duration", () => {
    const h = L.historyLabel(entry({ direction: "incoming", outcome: "no_answer", duration_s: null, missed: true }), now);
    assert.equal(h.arrow, "↙");
    assert.equal(h.direction, "Incoming");
    assert.equal(h.missed, true);
    assert.equal(h.outcome, "Missed");
    assert.equal(h.duration, "");
    assert.equal(h.text, "↙ bob · Missed · 5 min ago");
  });
  test('outcome "missed" counts as missed even if the flag is false', () => {
    const h = L.historyLabel(entry({ direction: "incoming", outcome: "missed", duration_s: null }), now);
    assert.equal(h.missed, true);
    assert.equal(h.outcome, "Missed");
  });
  test("every outcome word has a short label", () => {
    const labels = {
      accepted: "Answered", refused: "Declined", busy: "Busy", canceled: "Canceled", no_answer: "No answer",
      offline: "Offline", answered_elsewhere: "Answered elsewhere", declined_elsewhere: "Declined elsewhere",
      connection_lost: "Connection lost", hung_up: "Ended", peer_hung_up: "They hung up", missed: "Missed",
      failed: "Failed",
    };
    assert.deepEqual(Object.keys(labels).sort(), [...L.OUTCOMES].sort());
    for (const [outcome, label] of Object.entries(labels)) {
      assert.equal(L.historyLabel(entry({ outcome }), now).outcome, label, outcome);
    }
  });
  test("an unknown outcome is shown readably", () =>
    assert.equal(L.historyLabel(entry({ outcome: "some_new_thing" }), now).outcome, "some new thing"));
  test("a near-empty entry does not throw", () => {
    const h = L.historyLabel({}, now);
    assert.equal(h.text, "↗ ");
    assert.equal(h.missed, false);
    assert.equal(L.historyLabel(null, now).outcome, "");
  });
  test("zero duration is shown; a missing time is left out", () => {
    const h = L.historyLabel(entry({ duration_s: 0, at_ms: undefined }), now);
    assert.equal(h.duration, "0:00");
    assert.equal(h.when, "");
    assert.equal(h.text, "↗ bob · Ended · 0:00");
  });
});

describe("keyAction", () => {
  test("Enter on home → call", () => assert.equal(L.keyAction("home", "Enter"), "call"));
  test("Escape on outgoing → cancel", () => assert.equal(L.keyAction("outgoing", "Escape"), "cancel"));
  test("Escape on incoming → decline", () => assert.equal(L.keyAction("incoming", "Escape"), "decline"));
  test("Enter on incoming → accept", () => assert.equal(L.keyAction("incoming", "Enter"), "accept"));
  test("Escape in call does nothing (no accidental hang-up)", () => assert.equal(L.keyAction("incall", "Escape"), null));
  test("M mutes and V turns the camera on or off, in a call only", () => {
    assert.equal(L.keyAction("incall", "m"), "mute");
    assert.equal(L.keyAction("incall", "V"), "camera");
    assert.equal(L.keyAction("incall", "v"), "camera");
    assert.equal(L.keyAction("home", "v"), null);
  });
  test("everything else → null", () => {
    for (const screen of ["signin", "home", "outgoing", "incoming", "incall"]) {
      for (const key of ["Enter", "Escape", "a", " "]) {
        const expected =
          (screen === "home" && key === "Enter" && "call") ||
          (screen === "outgoing" && key === "Escape" && "cancel") ||
          (screen === "incoming" && key === "Escape" && "decline") ||
          (screen === "incoming" && key === "Enter" && "accept") ||
          null;
        assert.equal(L.keyAction(screen, key), expected, `${screen} ${key}`);
      }
    }
  });
});

describe("isCloseShortcut", () => {
  test("Ctrl+W and Cmd+W", () => {
    assert.equal(L.isCloseShortcut({ key: "w", ctrlKey: true }), true);
    assert.equal(L.isCloseShortcut({ key: "W", ctrlKey: true }), true);
    assert.equal(L.isCloseShortcut({ key: "w", metaKey: true }), true);
  });
  test("not with Shift/Alt, not without a modifier, not other keys", () => {
    assert.equal(L.isCloseShortcut({ key: "w", ctrlKey: true, shiftKey: true }), false);
    assert.equal(L.isCloseShortcut({ key: "w", ctrlKey: true, altKey: true }), false);
    assert.equal(L.isCloseShortcut({ key: "w" }), false);
    assert.equal(L.isCloseShortcut({ key: "q", ctrlKey: true }), false);
    assert.equal(L.isCloseShortcut(), false);
  });
});

describe("connectionLabel", () => {
  test("connected shows the server", () =>
    assert.equal(L.connectionLabel(snap()), "Connected · built-in server"));
  test("connected without a server", () => assert.equal(L.connectionLabel(snap({ server: "" })), "Connected"));
  test("connecting", () => assert.equal(L.connectionLabel(snap({ connection: "connecting" })), "Connecting…"));
  test("disconnected", () => assert.equal(L.connectionLabel(snap({ connection: "disconnected" })), "Disconnected"));
  test("signed out / missing", () => {
    assert.equal(L.connectionLabel(snap({ connection: "signed_out" })), "Signed out");
    assert.equal(L.connectionLabel(null), "Signed out");
  });
});

describe("nextCallStart", () => {
  test("no call → null", () => assert.equal(L.nextCallStart({ key: "x", startMs: 1 }, null, 5), null));
  test("a new call starts at its phase_since_ms", () =>
    assert.deepEqual(L.nextCallStart(null, call({ phase_since_ms: 1234 }), 9999), { key: "outgoing|bob", startMs: 1234 }));
  test("the same call keeps its start across phases (calling → ringing → waiting)", () => {
    const a = L.nextCallStart(null, call({ phase: "calling", phase_since_ms: 100, invitation_id: null }), 0);
    const b = L.nextCallStart(a, call({ phase: "ringing", phase_since_ms: 900 }), 0);
    const c = L.nextCallStart(b, call({ phase: "waiting_offline", phase_since_ms: 1900 }), 0);
    assert.equal(c.startMs, 100);
    assert.equal(b, a);
  });
  test("another peer is another call", () => {
    const a = L.nextCallStart(null, call({ phase_since_ms: 100 }), 0);
    assert.equal(L.nextCallStart(a, call({ peer: "carol", phase_since_ms: 500 }), 0).startMs, 500);
  });
  test("no phase_since_ms → now", () =>
    assert.equal(L.nextCallStart(null, call({ phase_since_ms: undefined }), 777).startMs, 777));
});

describe("soundFor", () => {
  test("incoming screen rings", () => assert.equal(L.soundFor("incoming", call({ phase: "incoming" })), "ringtone"));
  test("ringback only while ringing", () => {
    assert.equal(L.soundFor("outgoing", call({ phase: "ringing" })), "ringback");
    assert.equal(L.soundFor("outgoing", call({ phase: "calling" })), null);
    assert.equal(L.soundFor("outgoing", call({ phase: "waiting_offline" })), null);
  });
  test("silence elsewhere", () => {
    for (const s of ["signin", "home", "incall"]) assert.equal(L.soundFor(s, null), null);
  });
});

describe("initialOf", () => {
  test("first character upper-cased", () => {
    assert.equal(L.initialOf("bob"), "B");
    assert.equal(L.initialOf("😀x"), "😀");
    assert.equal(L.initialOf("9lives"), "9");
  });
  test("nothing usable → ?", () => {
    assert.equal(L.initialOf(""), "?");
    assert.equal(L.initialOf(null), "?");
  });
});

describe("signInRequest", () => {
  test("embedded server, no token", () =>
    assert.deepEqual(L.signInRequest({ user: "alice", useUrl: false, url: "ws://ignored", token: "" }), {
      args: { user: "alice", server: "embedded", token: null },
    }));
  test("URL server and a token (trimmed)", () =>
    assert.deepEqual(L.signInRequest({ user: "alice", useUrl: true, url: " wss://calls.example.org:443 ", token: " s3cret " }), {
      args: { user: "alice", server: "wss://calls.example.org:443", token: "s3cret" },
    }));
  test("a bad user id is reported on the user field", () => {
    const r = L.signInRequest({ user: "null", useUrl: false });
    assert.equal(r.field, "user");
    assert.match(r.error, /reserved/);
    assert.equal(r.args, undefined);
  });
  test("the URL must be ws:// or wss://", () => {
    for (const url of ["", "http://x", "ws://", "calls.example.org", undefined]) {
      const r = L.signInRequest({ user: "alice", useUrl: true, url });
      assert.equal(r.field, "url", String(url));
    }
    assert.ok(L.signInRequest({ user: "alice", useUrl: true, url: "WS://127.0.0.1:7450" }).args);
  });
  test("no form at all → user error", () => assert.equal(L.signInRequest().field, "user"));
});

describe("dialRequest", () => {
  test("valid callee, empty message → content null", () =>
    assert.deepEqual(L.dialRequest({ callee: "bob", content: "", me: "alice" }), { args: { callee: "bob", content: null } }));
  test("message passed as is", () =>
    assert.deepEqual(L.dialRequest({ callee: "bob", content: "room-42", me: "alice" }), { args: { callee: "bob", content: "room-42" } }));
  test("missing content → null", () =>
    assert.deepEqual(L.dialRequest({ callee: "bob", me: "alice" }), { args: { callee: "bob", content: null } }));
  test("invalid callee", () => assert.match(L.dialRequest({ callee: "", me: "alice" }).error, /Enter a user ID/));
  test("calling yourself is refused clearly", () =>
    assert.match(L.dialRequest({ callee: "alice", me: "alice" }).error, /can't call yourself/));
  test("content over 8192 bytes", () => {
    assert.ok(L.dialRequest({ callee: "bob", content: "x".repeat(8192), me: "a" }).args);
    assert.match(L.dialRequest({ callee: "bob", content: "é".repeat(4097), me: "a" }).error, /8194 bytes/);
  });
  test("no form at all → error", () => assert.ok(L.dialRequest().error));
});

describe("validateMeetingUrl", () => {
  test("empty is fine", () => {
    assert.equal(L.validateMeetingUrl(""), null);
    assert.equal(L.validateMeetingUrl("  "), null);
    assert.equal(L.validateMeetingUrl(undefined), null);
  });
  test("http(s) with {channel}", () => {
    assert.equal(L.validateMeetingUrl("https://meet.example.org/{channel}"), null);
    assert.equal(L.validateMeetingUrl("http://10.0.0.2/{channel}"), null);
  });
  test("other schemes or spaces are refused", () => {
    assert.ok(L.validateMeetingUrl("meet.example.org/{channel}"));
    assert.ok(L.validateMeetingUrl("javascript:alert(1)"));
    assert.ok(L.validateMeetingUrl("https://a b"));
  });
  test("{channel} is required (as the backend requires)", () =>
    assert.match(L.validateMeetingUrl("https://meet.example.org/room"), /\{channel\}/));
});

describe("mergeSettings", () => {
  const current = {
    server: "ws://h:1", token: "t", share_on_lan: false, busy_policy: "auto_busy", meeting_url_template: "", last_user: "alice",
  };
  test("keeps the fields the form does not edit", () =>
    assert.deepEqual(
      L.mergeSettings(current, { busy_policy: "notify", meeting_url_template: " https://m/{channel} ", ca_file: " /etc/ca.pem ", share_on_lan: true }),
      { ...current, busy_policy: "notify", meeting_url_template: "https://m/{channel}", ca_file: "/etc/ca.pem", share_on_lan: true,
        microphone: "", speaker: "", start_muted: false, do_not_disturb: "off", camera: "", start_camera_on: true },
    ));
  test("unknown policy → auto_busy; no current settings", () =>
    assert.deepEqual(L.mergeSettings(null, { busy_policy: "?" }), {
      busy_policy: "auto_busy", meeting_url_template: "", ca_file: "", share_on_lan: false,
      microphone: "", speaker: "", start_muted: false, do_not_disturb: "off", camera: "", start_camera_on: true,
    }));
  test("devices and start muted", () =>
    assert.deepEqual(
      L.mergeSettings({ microphone: "old", speaker: "spk" }, { microphone: "USB Mic", start_muted: true }),
      { microphone: "USB Mic", speaker: "spk", start_muted: true, busy_policy: "auto_busy", meeting_url_template: "", ca_file: "", share_on_lan: false, do_not_disturb: "off",
        camera: "", start_camera_on: true },
    ));
  test("camera and start with the camera on (kept when the form has neither)", () => {
    const merged = L.mergeSettings({ camera: "/dev/video2", start_camera_on: false }, {});
    assert.equal(merged.camera, "/dev/video2");
    assert.equal(merged.start_camera_on, false);
    const chosen = L.mergeSettings({ camera: "/dev/video2", start_camera_on: false }, { camera: "", start_camera_on: true });
    assert.equal(chosen.camera, "");
    assert.equal(chosen.start_camera_on, true);
  });
});

describe("mediaView", () => {
  const base = { phase: "connected", muted: false, message: null, rtt_ms: 42.4, loss: 0.031, jitter_ms: 7.6, quality: "fair" };
  test("no sound yet", () => assert.equal(L.mediaView(null).status, ""));
  test("connecting, reconnecting", () => {
    assert.equal(L.mediaView({ ...base, phase: "connecting" }).status, "Connecting audio…");
    assert.equal(L.mediaView({ ...base, phase: "reconnecting" }).status, "Reconnecting…");
    assert.equal(L.mediaView({ ...base, phase: "reconnecting" }).quality, "none");
  });
  test("connected: quality figures", () => {
    const v = L.mediaView(base);
    assert.equal(v.status, "Connected");
    assert.equal(v.quality, "fair");
    assert.equal(v.qualityText, "Fair · 42 ms · 3% loss · 8 ms jitter");
    assert.equal(L.mediaView({ ...base, relayed: true }).qualityText, "Fair · 42 ms · 3% loss · 8 ms jitter · via relay");
  });
  test("muted", () => {
    const v = L.mediaView({ ...base, muted: true });
    assert.equal(v.status, "You are muted");
    assert.equal(v.muteLabel, "Unmute");
  });
  test("a failure is never a silent screen", () => {
    assert.equal(L.mediaView({ ...base, phase: "failed", message: "No audio: no path." }).status, "No audio: no path.");
    assert.equal(L.mediaView({ ...base, phase: "failed", message: null }).status, "No audio");
  });
  test("a broken server link shows in the call", () => {
    assert.equal(L.mediaView(base, "connecting").status, "Reconnecting to the server…");
    assert.equal(L.mediaView(null, "disconnected").status, "Reconnecting to the server…");
    assert.equal(L.mediaView(base, "connected").status, "Connected");
  });
  test("a warning stays while connected", () =>
    assert.match(L.mediaView({ ...base, message: "No microphone (x): they cannot hear you." }).status, /No microphone/));
});

describe("keyAction: m mutes in a call", () => {
  test("m", () => assert.equal(L.keyAction("incall", "m"), "mute"));
  test("not elsewhere", () => assert.equal(L.keyAction("home", "m"), null));
});

describe("signInPrefill", () => {
  test("embedded", () =>
    assert.deepEqual(L.signInPrefill({ server: "embedded", token: "", last_user: "alice" }), {
      user: "alice", useUrl: false, url: "", token: "",
    }));
  test("URL server", () =>
    assert.deepEqual(L.signInPrefill({ server: "wss://x.org", token: "tok", last_user: "" }), {
      user: "", useUrl: true, url: "wss://x.org", token: "tok",
    }));
  test("no settings", () =>
    assert.deepEqual(L.signInPrefill(undefined), { user: "", useUrl: false, url: "", token: "" }));
});

describe("windowTitle", () => {
  test("each screen", () => {
    assert.equal(L.windowTitle(null), "callinvite");
    assert.equal(L.windowTitle(snap()), "alice — callinvite");
    assert.equal(L.windowTitle(snap({ call: call({ direction: "incoming", phase: "incoming" }) })), "bob is calling — callinvite");
    assert.equal(L.windowTitle(snap({ call: call({ phase: "ringing" }) })), "Calling bob — callinvite");
    assert.equal(L.windowTitle(snap({ call: call({ phase: "in_call" }) })), "In call with bob — callinvite");
  });
});

describe("clearsNotice", () => {
  test("a new call starts without the last call's message", () => {
    assert.equal(L.clearsNotice("home", "outgoing"), true);
    assert.equal(L.clearsNotice("home", "incoming"), true);
    assert.equal(L.clearsNotice("incall", "incoming"), true);
  });
  test("the message of a call that just ended stays on home", () => {
    assert.equal(L.clearsNotice("incall", "home"), false);
    assert.equal(L.clearsNotice("outgoing", "home"), false);
    assert.equal(L.clearsNotice("outgoing", "incall"), false);
    assert.equal(L.clearsNotice("outgoing", "outgoing"), false);
  });
});

describe("serverLabel", () => {
  test("the built-in server in words", () => {
    assert.equal(L.serverLabel("embedded (127.0.0.1:22450, shared)"), "built-in server, shared on your network");
    assert.equal(L.serverLabel("embedded (127.0.0.1:7450)"), "built-in server");
    assert.equal(L.serverLabel("embedded, shared on the LAN (port 7450)"), "built-in server, shared on your network");
  });
  test("another server by its host", () => {
    assert.equal(L.serverLabel("wss://calls.example.org:8443/x"), "calls.example.org");
    assert.equal(L.serverLabel(""), "");
  });
});

describe("do not disturb", () => {
  test("silent calls do not ring", () => {
    assert.equal(L.soundFor("incoming", { silent: true }), null);
    assert.equal(L.soundFor("incoming", { silent: false }), "ringtone");
  });
  test("saved only as a known value", () => {
    assert.equal(L.mergeSettings({}, { do_not_disturb: "busy" }).do_not_disturb, "busy");
    assert.equal(L.mergeSettings({}, { do_not_disturb: "nap" }).do_not_disturb, "off");
  });
});

describe("videoView", () => {
  const video = (over = {}) => ({
    camera_on: true, sharing_screen: false, sending: true, cameras: ["Test pattern"], camera: 0,
    can_share_screen: false, remote: true, message: null, received: { width: 640, height: 480, fps: 29.6 }, sent: null, ...over,
  });
  const media = (over = {}, phase = "connected") => ({ phase, muted: false, message: null, video: video(over) });
  test("both pictures", () => {
    const v = L.videoView(media(), "bob");
    assert.equal(v.remote, true);
    assert.equal(v.preview, "on");
    assert.equal(v.previewText, "");
    assert.equal(v.info, "640×480 · 30 fps");
    assert.equal(v.cameraLabel, "Stop camera");
    assert.equal(v.cameraPressed, false);
    assert.equal(v.cameraDisabled, false);
    assert.equal(v.switchShown, false, "one camera: no switch");
    assert.equal(v.shareShown, false);
  });
  test("their video off: the placeholder with their initial", () => {
    const v = L.videoView(media({ remote: false, received: null }), "bob");
    assert.equal(v.remote, false);
    assert.equal(v.initial, "B");
    assert.equal(v.remoteText, "No video from them");
    assert.equal(v.info, "");
    assert.equal(L.videoView(media({ remote: false }, "connecting"), "bob").remoteText, "", "not before the line is up");
    assert.equal(L.videoView(null, "carol").initial, "C");
    assert.equal(L.videoView(null, "carol").remote, false);
  });
  test("our camera off, starting, missing or failed", () => {
    const off = L.videoView(media({ camera_on: false, sending: false }), "bob");
    assert.deepEqual([off.preview, off.previewText, off.cameraLabel, off.cameraPressed], ["off", "Camera off", "Start camera", true]);
    const starting = L.videoView(media({ sending: false, cameras: null }), "bob");
    assert.deepEqual([starting.preview, starting.previewText, starting.cameraDisabled], ["starting", "Starting camera…", true]);
    const none = L.videoView(media({ sending: false, cameras: [], message: "No camera: they cannot see you." }), "bob");
    assert.deepEqual([none.preview, none.previewText, none.cameraDisabled], ["none", "No camera", true]);
    const noneOff = L.videoView(media({ camera_on: false, sending: false, cameras: [] }), "bob");
    assert.equal(noneOff.preview, "none");
    const failed = L.videoView(media({ sending: false, message: "Camera: busy. They cannot see you." }), "bob");
    assert.deepEqual([failed.preview, failed.previewText], ["error", "No picture"]);
    const noLine = L.videoView(media({ sending: false, remote: false }, "failed"), "bob");
    assert.deepEqual([noLine.preview, noLine.remote, noLine.remoteText], ["error", false, ""], "no media: the status line says why");
  });
  test("switch with more than one camera, naming the next", () => {
    const v = L.videoView(media({ cameras: ["Front", "Back", "USB"], camera: 2 }), "bob");
    assert.equal(v.switchShown, true);
    assert.equal(v.switchTitle, "Switch to Front");
  });
  test("screen sharing where it works", () => {
    const v = L.videoView(media({ can_share_screen: true }), "bob");
    assert.deepEqual([v.shareShown, v.shareLabel, v.sharePressed], [true, "Share screen", false]);
    const sharing = L.videoView(media({ can_share_screen: true, sharing_screen: true, camera_on: false }), "bob");
    assert.deepEqual([sharing.shareLabel, sharing.sharePressed, sharing.preview, sharing.previewText], ["Stop sharing", true, "on", "Your screen"]);
  });
  test("the status line tells of a missing camera unless there is more to the point", () => {
    const noCam = { phase: "connected", muted: false, message: null, video: video({ message: "No camera: they cannot see you." }) };
    assert.equal(L.mediaView(noCam).status, "No camera: they cannot see you.");
    assert.equal(L.mediaView({ ...noCam, muted: true }).status, "You are muted");
    assert.match(L.mediaView({ ...noCam, message: "No microphone (x): they cannot hear you." }).status, /No microphone/);
  });
});
