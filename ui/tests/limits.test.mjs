// The UI's copy of the user-id rules and size limits (logic.js, and the rules told in
// index.html) against the Rust constants they copy (crates/protocol/src/limits.rs and
// user_id.rs): a change on one side fails here until the other follows.
// Run: node --test ui/tests/
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

import * as L from "../logic.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const limits = readFileSync(join(root, "crates/protocol/src/limits.rs"), "utf8");
const userId = readFileSync(join(root, "crates/protocol/src/user_id.rs"), "utf8");
const html = readFileSync(join(root, "ui/index.html"), "utf8");

/** The value of `pub const NAME: usize = <n> [* <n>]*;` in Rust source. */
function rustUsize(source, name) {
  const m = source.match(new RegExp(`const ${name}: usize = ([0-9_ *]+);`));
  assert.ok(m, `${name} not found as a usize constant`);
  return m[1].split("*").map((f) => Number(f.trim().replace(/_/g, ""))).reduce((a, b) => a * b, 1);
}

/** The value of `const NAME: &str = "...";` (no escapes used in it). */
function rustStr(source, name) {
  const m = source.match(new RegExp(`const ${name}: &str = "([^"\\\\]*)";`));
  assert.ok(m, `${name} not found as a &str constant`);
  return m[1];
}

describe("the UI's limits are the protocol's", () => {
  test("MAX_USER_ID_BYTES", () => {
    assert.equal(L.MAX_USER_ID_BYTES, rustUsize(limits, "MAX_USER_ID_BYTES"));
    // The limit is enforced at exactly that many bytes.
    assert.equal(L.validateUserId("a".repeat(L.MAX_USER_ID_BYTES)), null);
    assert.match(L.validateUserId("a".repeat(L.MAX_USER_ID_BYTES + 1)), new RegExp(`limit is ${L.MAX_USER_ID_BYTES}\\b`));
  });
  test("MAX_CONTENT_BYTES", () => {
    assert.equal(L.MAX_CONTENT_BYTES, rustUsize(limits, "MAX_CONTENT_BYTES"));
    assert.ok(L.dialRequest({ callee: "bob", content: "x".repeat(L.MAX_CONTENT_BYTES) }).args);
    assert.match(L.dialRequest({ callee: "bob", content: "x".repeat(L.MAX_CONTENT_BYTES + 1) }).error, new RegExp(`limit is ${L.MAX_CONTENT_BYTES}\\b`));
  });
  test("the punctuation allowed in a user id", () => {
    assert.equal(L.ALLOWED_PUNCTUATION, rustStr(userId, "ALLOWED_PUNCTUATION"));
  });
  test("the other rules UserId::parse has, the UI has too", () => {
    // Each rule as the Rust source states it, and the UI refusing the same.
    assert.match(userId, /s == "null"/);
    assert.ok(L.validateUserId("null"));
    assert.match(userId, /s\.starts_with\(' '\)/);
    assert.ok(L.validateUserId(" bob"));
    assert.match(userId, /s\.ends_with\(' '\)/);
    assert.ok(L.validateUserId("bob "));
    assert.match(userId, /c\.is_ascii_alphanumeric\(\) \|\| \*c == ' ' \|\| ALLOWED_PUNCTUATION\.contains\(\*c\)/);
    for (const c of "aZ09 ") assert.equal(L.validateUserId(`x${c}y`), null, JSON.stringify(c));
    for (const c of "é*\"'/\\`") assert.ok(L.validateUserId(`x${c}y`), JSON.stringify(c));
  });
  test("the sign-in screen states the same length limit", () => {
    const help = html.match(/<p id="signin-user-help"[^>]*>([\s\S]*?)<\/p>/)?.[1] ?? "";
    assert.match(help, new RegExp(`up to ${rustUsize(limits, "MAX_USER_ID_BYTES")} `));
  });
});
