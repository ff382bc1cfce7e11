// Replays recorded lifecycle cases (JSON on stdin) through the browser verifier's
// verify-events.js and prints, per case, the JS outcome: "ok", a failure code, or "schema: …".
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [modulePath] = process.argv.slice(2);
const E = await import(pathToFileURL(modulePath).href);
const cases = JSON.parse(readFileSync(0, "utf-8"));
const leaf = (b64) => createHash("sha256").update(Buffer.concat([Buffer.of(0), Buffer.from(b64, "base64")])).digest("hex");
const parse = (b64) => E.parseEvent(new Uint8Array(Buffer.from(b64, "base64")));
const out = cases.map(({ path, event }) => {
  let state = null;
  try {
    for (const step of path) state = E.applyEvent(state, parse(step), leaf(step));
  } catch (err) { return `path refused: ${err.code || err.message}`; }
  let ev;
  try { ev = parse(event); } catch (err) { return `schema: ${err.message}`; }
  try { E.applyEvent(state, ev, leaf(event)); return "ok"; } catch (err) {
    if (err instanceof E.Refusal) return err.code;
    return `error: ${err.message}`;
  }
});
process.stdout.write(JSON.stringify(out));
