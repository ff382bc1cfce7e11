// In-browser verifier for ArchiveChain proofs (docs/proof-format.md), served by the node.
//
// A second, independent implementation of the checks of docs/proof-format.md §3 (size, depth,
// identity), §5 (RFC 6962 inclusion), §6.1 (eth_call reads of checkpointCount/checkpointAt over
// JSON-RPC), §7.2 (chain id, trusted notary), §7.3 (each entry) and, for full bundles, the time
// order and the per-archive hash chain of §6.2 (every `prev` names an earlier entry) and the
// destruction certificate's hash. Hashes use WebCrypto SHA-256 only; nothing is fetched but the
// proof document (same origin) and the chain endpoint. What it does not do (the reference CLI
// does): strict-JSON duplicate-key refusal, full event schema checks, the lifecycle replay of §8,
// the custody comparison of §7.4 and the certificate's EIP-712 signature — see docs/console.md.
"use strict";

const MAX_BYTES = 64 * 1024 * 1024;
const MAX_DEPTH = 8;
const SKEW = 300n; // seconds: docs/proof-format.md §7.3 steps 4 and 5
const SEL_COUNT = "0x76a82342"; // checkpointCount(address)
const SEL_AT = "0x5cfa0e30"; // checkpointAt(address,uint64)
const EVENT_TYPES = new Set([
  "CREATE", "AMEND", "ARCHIVE", "ACCESS", "SHARE_GRANT", "SHARE_REVOKE", "TRANSFER_OFFER",
  "TRANSFER_ACCEPT", "TRANSFER_REJECT", "TRANSFER_CANCEL", "HOLD_PLACE", "HOLD_RELEASE",
  "RETENTION_EXTEND", "DISPOSITION_START", "DESTROY", "FIXITY_CHECK", "TIER_MOVE", "TAG_BIND",
  "TAG_SCAN",
]);
const HEX32 = /^[0-9a-f]{64}$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

export class Unusable extends Error {}
class ChainDown extends Error {}
class NotNotary extends Error {}

// -- bytes and hashes ------------------------------------------------------------------------

export function hexToBytes(hex) {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export async function leafHash(eventBytes) {
  return sha256(concat(Uint8Array.of(0), eventBytes));
}

async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

function bitLength(n) {
  let bits = 0;
  while (n > 0n) { bits++; n >>= 1n; }
  return bits;
}

function popcount(n) {
  let c = 0;
  while (n > 0n) { c += Number(n & 1n); n >>= 1n; }
  return c;
}

/** docs/proof-format.md §5: returns the calculated root, or throws with the reason. */
export async function verifyInclusion(index, size, leaf, proof, root) {
  const i = BigInt(index), n = BigInt(size);
  if (!(0n <= i && i < n)) throw new Error("index outside the tree");
  if ([leaf, root, ...proof].some((h) => h.length !== 32)) throw new Error("a hash is not 32 bytes");
  const inner = bitLength(i ^ (n - 1n));
  const border = popcount(i >> BigInt(inner));
  if (proof.length !== inner + border) throw new Error("wrong proof length");
  let h = leaf;
  for (let k = 0; k < inner; k++) {
    h = ((i >> BigInt(k)) & 1n) === 1n ? await nodeHash(proof[k], h) : await nodeHash(h, proof[k]);
  }
  for (let k = inner; k < proof.length; k++) h = await nodeHash(proof[k], h);
  if (bytesToHex(h) !== bytesToHex(root)) {
    throw new Error(`root mismatch (expected ${bytesToHex(root)}, calculated ${bytesToHex(h)})`);
  }
  return h;
}

// -- document (§3) -----------------------------------------------------------------------------

/** Nesting depth of objects and arrays, strings skipped (§3 step 2); stops past `limit`. */
export function jsonDepth(text, limit) {
  let depth = 0, max = 0, inString = false;
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    if (inString) {
      if (c === "\\") k++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") { depth++; if (depth > max) { max = depth; if (max > limit) return max; } }
    else if (c === "}" || c === "]") depth--;
  }
  return max;
}

/** RFC 8785 for the values events hold (strings, integers, booleans, null, objects, arrays). */
export function jcs(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error("not an integer");
    return String(value);
  }
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  const keys = Object.keys(value).sort();
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
}

function base64ToBytes(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new Unusable("an event is not base64");
  }
  const raw = atob(text);
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function isInt(v) { return typeof v === "number" && Number.isSafeInteger(v) && v >= 0; }

function parseEntry(e, position) {
  const where = `entries[${position}]`;
  if (typeof e !== "object" || e === null || Array.isArray(e)) throw new Unusable(`${where} is not an object`);
  const cp = e.checkpoint;
  if (typeof e.hospital !== "string" || !ADDRESS.test(e.hospital)) throw new Unusable(`${where}.hospital is not an address`);
  if (!isInt(e.log_index)) throw new Unusable(`${where}.log_index is not an integer`);
  if (!Array.isArray(e.proof) || e.proof.some((h) => typeof h !== "string" || !HEX32.test(h))) {
    throw new Unusable(`${where}.proof is not a list of hashes`);
  }
  if (typeof cp !== "object" || cp === null || !ADDRESS.test(String(cp.hospital)) || !isInt(cp.index) || !isInt(cp.size) || !HEX32.test(String(cp.root))) {
    throw new Unusable(`${where}.checkpoint is malformed`);
  }
  return {
    hospital: e.hospital, logIndex: e.log_index, event: base64ToBytes(e.event),
    proof: e.proof.map(hexToBytes),
    checkpoint: { hospital: cp.hospital, index: cp.index, size: cp.size, root: hexToBytes(cp.root) },
  };
}

/** §3: the document, or throws Unusable. `kind` is "bundle" or "public". */
export function parseDocument(text) {
  if (text.length > MAX_BYTES) throw new Unusable("larger than 64 MiB");
  if (jsonDepth(text, MAX_DEPTH) > MAX_DEPTH) throw new Unusable(`nests deeper than ${MAX_DEPTH}`);
  let doc;
  try { doc = JSON.parse(text); } catch (err) { throw new Unusable("not JSON"); }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Unusable("a JSON value that is not a proof bundle");
  let kind;
  if (doc.format === "archivechain.proof/v1") kind = "bundle";
  else if (doc.format === "archivechain.public-proof/v1") kind = "public";
  else if (typeof doc.code === "string" && typeof doc.message === "string") {
    throw new Unusable(`an error response from the node API (${doc.code}: ${doc.message}), not a proof bundle`);
  } else throw new Unusable(`a document of format ${JSON.stringify(doc.format)}, not a proof bundle`);
  if (!Number.isSafeInteger(doc.chain_id) || doc.chain_id <= 0) throw new Unusable("chain_id is not an integer");
  if (typeof doc.notary !== "string" || !ADDRESS.test(doc.notary)) throw new Unusable("notary is not an address");
  if (typeof doc.archive_id !== "string" || !ULID.test(doc.archive_id)) throw new Unusable("archive_id is not an archive id");
  if (!Array.isArray(doc.entries) || (kind === "bundle" && doc.entries.length === 0)) throw new Unusable("entries is not a non-empty list");
  const entries = doc.entries.map(parseEntry);
  let certificate = null;
  if (doc.certificate != null) {
    if (typeof doc.certificate.document !== "string") throw new Unusable("certificate.document is not base64");
    certificate = base64ToBytes(doc.certificate.document);
  }
  return { kind, chainId: doc.chain_id, notary: doc.notary, archiveId: doc.archive_id, entries, certificate };
}

// -- chain (§6.1) ------------------------------------------------------------------------------

export class RpcReader {
  constructor(url) { this.url = url; this.id = 0; }

  async call(method, params) {
    let response;
    try {
      response = await fetch(this.url, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++this.id, method, params }),
      });
    } catch (err) { throw new ChainDown(`the chain endpoint ${this.url} cannot be reached`); }
    if (!response.ok) throw new ChainDown(`the chain endpoint answered HTTP ${response.status}`);
    let body;
    try { body = await response.json(); } catch (err) { throw new ChainDown("the chain endpoint did not answer JSON-RPC"); }
    if (body && body.error) {
      const text = String(body.error.message || "").toLowerCase();
      if (method === "eth_call" && (body.error.code === 3 || text.includes("revert"))) throw new NotNotary("the call reverted");
      throw new ChainDown(`JSON-RPC error ${body.error.code}`);
    }
    if (!body || typeof body.result !== "string") throw new ChainDown("the chain endpoint did not answer JSON-RPC");
    return body.result;
  }

  async chainId() { return BigInt(await this.call("eth_chainId", [])); }

  async words(to, data, count) {
    const result = await this.call("eth_call", [{ to, data }, "latest"]);
    const hex = result.replace(/^0x/, "");
    if (hex.length !== 64 * count) throw new NotNotary(`the call returned ${hex.length / 2} bytes, not ${count * 32}`);
    const out = [];
    for (let k = 0; k < count; k++) out.push(hex.slice(k * 64, (k + 1) * 64));
    return out;
  }
}

function uint64(word) {
  const v = BigInt("0x" + word);
  if (v >= 1n << 64n) throw new NotNotary("a uint64 answer is out of range");
  return v;
}

function addressArg(address) { return address.toLowerCase().replace(/^0x/, "").padStart(64, "0"); }

export async function checkpointCount(rpc, notary, hospital) {
  const [w] = await rpc.words(notary, SEL_COUNT + addressArg(hospital), 1);
  return uint64(w);
}

export async function checkpointAt(rpc, notary, hospital, index) {
  const data = SEL_AT + addressArg(hospital) + BigInt(index).toString(16).padStart(64, "0");
  const [size, root, anchoredAt] = await rpc.words(notary, data, 3);
  return { size: uint64(size), root, anchoredAt: uint64(anchoredAt), data };
}

// -- the procedure (§7) -------------------------------------------------------------------------

function unixSeconds(iso) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) throw new Error("bad time");
  return BigInt(Math.floor(ms / 1000));
}

class Failure extends Error {
  constructor(code, position, message) { super(message); this.code = code; this.position = position; }
}

/**
 * Verify a parsed document. `report(step)` is called for each step shown to the user:
 * {text, ok} where ok is true, false, or null (information). Returns
 * {outcome: "VALID"|"INVALID"|"CHAIN_UNAVAILABLE", code, position, message}.
 */
export async function verifyDocument(doc, { rpcUrl, trustedNotary, now, report }) {
  const say = (text, ok = null) => report({ text, ok });
  const rpc = new RpcReader(rpcUrl);
  let chainOk = true;
  let chainDown = null;
  const failures = [];
  const fail = (code, position, message) => { failures.push(new Failure(code, position, message)); say(`${code}: ${message}`, false); };

  // §7.2 deployment
  try {
    const id = await rpc.chainId();
    if (id !== BigInt(doc.chainId)) {
      fail("chain_id_mismatch", null, `the endpoint serves chain ${id}, the bundle names ${doc.chainId}`);
      chainOk = false;
    } else say(`eth_chainId = ${id} = bundle chain_id`, true);
  } catch (err) {
    if (!(err instanceof ChainDown)) throw err;
    chainDown = err.message; chainOk = false; say(`chain unavailable: ${err.message}`, false);
  }
  if (doc.notary.toLowerCase() !== trustedNotary.toLowerCase()) {
    fail("notary_mismatch", null, `the bundle names notary ${doc.notary}, the trusted one is ${trustedNotary}`);
    chainOk = false;
  } else say(`notary ${doc.notary} = trusted ArchiveNotary`, true);

  // §7.3 each entry
  const cache = new Map();
  const counts = new Map();
  const events = [];
  const leaves = [];
  for (let p = 0; p < doc.entries.length; p++) {
    const e = doc.entries[p];
    let event = null;
    const entryFail = (code, message) => { fail(code, p, `entry ${p}: ${message}`); events.push(null); leaves.push(null); };
    // step 1: the event
    let text;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(e.event); event = JSON.parse(text); } catch (err) { entryFail("event_invalid", "the event is not UTF-8 JSON"); continue; }
    let canonical = null;
    try { canonical = jcs(event); } catch (err) { canonical = null; }
    if (typeof event !== "object" || event === null || canonical !== text) { entryFail("event_invalid", "the event bytes are not canonical JSON (RFC 8785)"); continue; }
    if (event.v !== 1 || !EVENT_TYPES.has(event.type) || typeof event.time !== "string" || typeof event.data !== "object") { entryFail("event_invalid", "the event breaks the schema"); continue; }
    say(`entry ${p}: ${event.type} at ${event.time}, log ${e.hospital} #${e.logIndex}`, null);
    // step 2: where it sits
    if (event.hospital !== e.hospital) { entryFail("hospital_mismatch", "the event names another hospital"); continue; }
    if (event.log_index !== e.logIndex) { entryFail("log_index_mismatch", "the event names another log index"); continue; }
    if (event.archive_id !== doc.archiveId) { entryFail("archive_mismatch", "the event belongs to another archive"); continue; }
    if (e.checkpoint.hospital !== e.hospital) { entryFail("checkpoint_hospital_mismatch", "the checkpoint belongs to another log"); continue; }
    // step 3: leaf and inclusion
    const leaf = await leafHash(e.event);
    say(`entry ${p}: leaf hash SHA-256(0x00 ‖ event) = ${bytesToHex(leaf)}`, true);
    try {
      const root = await verifyInclusion(e.logIndex, e.checkpoint.size, leaf, e.proof, e.checkpoint.root);
      say(`entry ${p}: inclusion proof (${e.proof.length} hashes) → root ${bytesToHex(root)} = checkpoint ${e.checkpoint.index} root (size ${e.checkpoint.size})`, true);
    } catch (err) { entryFail("inclusion_invalid", err.message); continue; }
    // step 4: clock
    let eventTime;
    try { eventTime = unixSeconds(event.time); } catch (err) { entryFail("event_invalid", "the event time is not a timestamp"); continue; }
    if (now !== null && eventTime > now + SKEW) { entryFail("time_in_future", "the event is dated after now"); continue; }
    events.push(event); leaves.push(bytesToHex(leaf));
    // step 5: the chain
    if (!chainOk) continue;
    try {
      const hk = e.hospital.toLowerCase();
      if (!counts.has(hk)) counts.set(hk, await checkpointCount(rpc, doc.notary, e.hospital));
      const count = counts.get(hk);
      if (count <= BigInt(e.checkpoint.index)) { fail("checkpoint_missing", p, `entry ${p}: the chain holds ${count} checkpoints of ${e.hospital}, none with index ${e.checkpoint.index}`); events[p] = null; continue; }
      const key = `${hk}/${e.checkpoint.index}`;
      if (!cache.has(key)) cache.set(key, await checkpointAt(rpc, doc.notary, e.hospital, e.checkpoint.index));
      const onChain = cache.get(key);
      say(`entry ${p}: eth_call checkpointAt(${e.hospital}, ${e.checkpoint.index}) → size ${onChain.size}, root ${onChain.root}, anchored at ${new Date(Number(onChain.anchoredAt) * 1000).toISOString()}`, null);
      if (onChain.size !== BigInt(e.checkpoint.size) || onChain.root !== bytesToHex(e.checkpoint.root)) {
        fail("checkpoint_mismatch", p, `entry ${p}: the chain's checkpoint ${e.checkpoint.index} has size ${onChain.size} and root ${onChain.root}`); events[p] = null; continue;
      }
      if (eventTime > onChain.anchoredAt + SKEW) { fail("time_after_anchor", p, `entry ${p}: the event is dated after the block that anchored it`); events[p] = null; continue; }
      say(`entry ${p}: on-chain checkpoint agrees`, true);
    } catch (err) {
      if (err instanceof NotNotary) { fail("notary_mismatch", p, `the trusted address holds no ArchiveNotary (${err.message})`); chainOk = false; continue; }
      if (err instanceof ChainDown) { chainDown = err.message; chainOk = false; say(`chain unavailable: ${err.message}`, false); continue; }
      throw err;
    }
  }

  // §7.4 across entries (full bundles): time order and the hash chain
  if (doc.kind === "bundle" && failures.length === 0) {
    const seen = new Set();
    let previousTime = null;
    for (let p = 0; p < events.length; p++) {
      const ev = events[p];
      if (previousTime !== null && Date.parse(ev.time) < previousTime) { fail("time_order", p, `entry ${p}: dated before the entry it follows`); break; }
      previousTime = Date.parse(ev.time);
      const expectNull = p === 0;
      if (expectNull ? ev.prev !== null || ev.type !== "CREATE" : !seen.has(ev.prev)) {
        fail("prev_mismatch", p, `entry ${p}: prev ${ev.prev} is not the leaf hash of an earlier event of this archive`); break;
      }
      seen.add(leaves[p]);
    }
    if (failures.length === 0) say("hash chain: every prev names an earlier event", true);
    const destroy = events.find((ev) => ev && ev.type === "DESTROY");
    if (failures.length === 0 && destroy && doc.certificate === null) fail("certificate_missing", null, "the archive is destroyed and the bundle lacks its destruction certificate");
    if (failures.length === 0 && doc.certificate !== null) {
      const digest = bytesToHex(await sha256(doc.certificate));
      if (!destroy || destroy.data.certificate_hash !== digest) fail("certificate_mismatch", null, `the certificate hashes to ${digest}, not to the DESTROY event's certificate_hash`);
      else say(`destruction certificate SHA-256 = ${digest} = DESTROY certificate_hash`, true);
    }
  }

  if (failures.length > 0) {
    const first = failures.slice().sort((a, b) => (a.position ?? -1) - (b.position ?? -1))[0];
    return { outcome: "INVALID", code: first.code, position: first.position, message: first.message, events };
  }
  if (chainDown !== null) return { outcome: "CHAIN_UNAVAILABLE", code: "chain_unavailable", position: null, message: chainDown, events };
  return { outcome: "VALID", code: null, position: null, message: `${doc.entries.length} events verified against the chain`, events };
}
