// Wires the public verification page (/v/{id}) to verify.js: the node's public proof of the
// archive, or a proof bundle file the visitor chooses. Every step is listed as it happens.
"use strict";
import { parseDocument, verifyDocument, Unusable } from "/assets/app/verify.js";

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
  const label = T[result.outcome] || result.outcome;
  outcome.textContent = result.code ? `${label} — ${result.code}: ${result.message}` : `${label}: ${result.message}`;
}

async function run(text) {
  steps.replaceChildren();
  outcome.textContent = T.running;
  outcome.className = "";
  delete outcome.dataset.outcome;
  let doc;
  try {
    doc = parseDocument(text);
  } catch (err) {
    if (!(err instanceof Unusable)) throw err;
    show({ outcome: "UNUSABLE", code: "unusable", message: err.message });
    return;
  }
  step({ text: `${T.document}: ${doc.kind === "bundle" ? "archivechain.proof/v1" : "archivechain.public-proof/v1"}, ${doc.entries.length} ${T.entries}`, ok: true });
  const result = await verifyDocument(doc, {
    rpcUrl: root.dataset.rpcUrl,
    trustedNotary: root.dataset.notary,
    now: BigInt(Math.floor(Date.now() / 1000)),
    report: step,
  });
  show(result);
}

document.getElementById("verify-here").addEventListener("click", async () => {
  const response = await fetch(root.dataset.proofUrl, { headers: { Accept: "application/json" } });
  await run(await response.text());
});

document.getElementById("bundle-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) await run(await file.text());
});
