// Wires the public verification page (/v/{id}) to verify.js: the node's public proof of the
// archive, or a proof bundle file the visitor chooses. Every step is listed as it happens.
"use strict";
import { parseDocument, verifyDocument, Unusable, BUNDLE_FORMAT, PUBLIC_FORMAT } from "/assets/app/verify.js";

const root = document.getElementById("verifier");
const steps = document.getElementById("steps");
const outcome = document.getElementById("outcome");
const T = JSON.parse(document.getElementById("verifier-text").textContent);

function step({ text, ok }) {
  const li = document.createElement("li");
  li.className = ok === true ? "ok" : ok === false ? "bad" : "info";
  const mark = document.createElement("span");
  mark.className = "mark";
  mark.textContent = ok === true ? "✓ " : ok === false ? "✗ " : "• ";
  li.append(mark, document.createTextNode(text));
  steps.append(li);
}

function show(result) {
  outcome.className = result.outcome.toLowerCase();
  outcome.dataset.outcome = result.outcome;
  outcome.dataset.code = result.code || "";
  outcome.dataset.position = result.position ?? "";
  const label = T[result.outcome] || result.outcome;
  outcome.textContent = result.code ? `${label} — ${result.code}: ${result.message}` : `${label}: ${result.message}`;
}

async function run(bytes) {
  steps.replaceChildren();
  outcome.textContent = T.running;
  outcome.className = "";
  delete outcome.dataset.outcome;
  try {
    await verifyBytes(bytes);
  } catch (err) { // a bug, not a verdict: say so rather than hang on "running"
    show({ outcome: "ERROR", code: "verifier_error", message: String(err && err.message) });
  }
}

async function verifyBytes(bytes) {
  let doc;
  try {
    doc = parseDocument(bytes);
  } catch (err) {
    if (!(err instanceof Unusable)) throw err;
    show({ outcome: "UNUSABLE", code: "unusable", message: err.message });
    return;
  }
  step({ text: `${T.document}: ${doc.kind === "bundle" ? BUNDLE_FORMAT : PUBLIC_FORMAT}, ${doc.entries.length} ${T.entries}`, ok: true });
  const result = await verifyDocument(doc, {
    rpcUrl: root.dataset.rpcUrl,
    trustedNotary: root.dataset.notary,
    // No clock, as `archivechain verify` (§7.3 step 4 is optional): an event dated after its
    // anchoring block is time_after_anchor in both, whatever the visitor's clock says.
    now: null,
    report: step,
  });
  show(result);
}

document.getElementById("verify-here").addEventListener("click", async () => {
  const response = await fetch(root.dataset.proofUrl, { headers: { Accept: "application/json" } });
  await run(new Uint8Array(await response.arrayBuffer()));
});

document.getElementById("bundle-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) await run(new Uint8Array(await file.arrayBuffer()));
});
