// Parses each base64 event (JSON array on stdin) with the browser verifier's §4 parser and
// prints, per event, "ok" or "event_invalid".
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [modulePath] = process.argv.slice(2);
const E = await import(pathToFileURL(modulePath).href);
const events = JSON.parse(readFileSync(0, "utf-8"));
process.stdout.write(JSON.stringify(events.map((b64) => {
  try { E.parseEvent(new Uint8Array(Buffer.from(b64, "base64"))); return "ok"; } catch (err) {
    if (err instanceof E.JsonError) return "event_invalid";
    return `error: ${err.message}`;
  }
})));
