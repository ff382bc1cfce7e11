// In-browser verifier for ArchiveChain proofs (docs/proof-format.md), served by the node.
//
// A second, independent implementation of the whole procedure of docs/proof-format.md §7, for
// proof bundles (`archivechain.proof/v1`) and for the public page's public proofs
// (`archivechain.public-proof/v1`, docs/proof-format.md §11): §3 (size, depth, UTF-8, strict
// JSON, identity, every field), §4 (event schema and canonical bytes, verify-events.js), §5
// (RFC 6962 inclusion, WebCrypto SHA-256), §6.1 (eth_call reads of checkpointCount,
// checkpointAt and archive over JSON-RPC), §7.2–§7.5 (deployment, each entry, the lifecycle
// replay of §8, custody claim and on-chain custody record, the destruction certificate with its
// EIP-712 signature: Keccak-256 and secp256k1 recovery from the pinned @noble packages). It
// names the same first failure as `archivechain verify` (a browser test compares them).
"use strict";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import {
  BigNumber, JsonError, MAX_SAFE, HEX32, ULID, ZERO_ADDRESS, STATE_NAMES, Refusal,
  applyEvent, expectedCustody, isAddress, isObject, jcs, keccak, parseEvent, parseStrict,
  parseDate, parseTime, recordClassCode, checksum,
} from "/assets/app/verify-events.js";

export const BUNDLE_FORMAT = "archivechain.proof/v1";
export const PUBLIC_FORMAT = "archivechain.public-proof/v1";
const MAX_BYTES = 64 * 1024 * 1024;
const MAX_DEPTH = 8;
const MAX_ENTRIES = 100_000;
const MAX_PROOF = 64;
const MAX_EVENT_BYTES = 65536;
const MAX_CERTIFICATE_BYTES = 256 * 1024;
const SKEW = 300n * 1_000_000n; // microseconds: docs/proof-format.md §7.3 steps 4 and 5
const SEL_COUNT = "0x76a82342"; // checkpointCount(address)
const SEL_AT = "0x5cfa0e30"; // checkpointAt(address,uint64)
const SEL_ARCHIVE = "0xa995db26"; // archive(bytes32)
const SIGNATURE = /^0x[0-9a-f]{130}$/;
const CERTIFICATE_FORMAT = "archivechain.destruction-certificate/v1";

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

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function base64Decode(text) {
  const raw = atob(text);
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function base64Encode(bytes) {
  let raw = "";
  for (let k = 0; k < bytes.length; k += 0x8000) raw += String.fromCharCode(...bytes.subarray(k, k + 0x8000));
  return btoa(raw);
}

const bad = (path, message) => new Unusable(`malformed ${path}: ${message}`);

function exact(value, path, required, optional = []) {
  if (!isObject(value)) throw bad(path || "document", "must be a JSON object");
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) throw bad(path ? `${path}.${key}` : key, "unknown field");
  }
  for (const key of required) if (!Object.hasOwn(value, key)) throw bad(path ? `${path}.${key}` : key, "missing");
  return value;
}

function int(value, path, minimum = 0) {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) throw bad(path, "must be an integer");
  if (value < minimum || value > MAX_SAFE) throw bad(path, `must be between ${minimum} and ${MAX_SAFE}`);
  return value;
}

function address(value, path) {
  if (!isAddress(value)) throw bad(path, "must be an EIP-55 checksummed address");
  return value;
}

function hash(value, path) {
  if (typeof value !== "string" || !HEX32.test(value)) throw bad(path, "must be 64 lowercase hex characters");
  return hexToBytes(value);
}

function eventBase64(value, path) {
  if (typeof value !== "string") throw bad(path, "must be a string");
  if (value.length > 4 * Math.ceil(MAX_EVENT_BYTES / 3)) throw bad(path, "longer than 65,536 bytes once decoded");
  if (!B64.test(value)) throw bad(path, "malformed base64 (standard alphabet, with padding)");
  const bytes = base64Decode(value);
  if (base64Encode(bytes) !== value) throw bad(path, "non-canonical base64 (padding bits must be zero)");
  if (bytes.length === 0) throw bad(path, "is empty");
  if (bytes.length > MAX_EVENT_BYTES) throw bad(path, "longer than 65,536 bytes once decoded");
  return bytes;
}

function parseEntry(value, where) {
  const e = exact(value, where, ["hospital", "log_index", "event", "proof", "checkpoint"]);
  if (!Array.isArray(e.proof)) throw bad(`${where}.proof`, "must be a JSON array");
  if (e.proof.length > MAX_PROOF) throw bad(`${where}.proof`, `more than ${MAX_PROOF} hashes`);
  const cp = exact(e.checkpoint, `${where}.checkpoint`, ["hospital", "index", "size", "root"]);
  return {
    hospital: address(e.hospital, `${where}.hospital`),
    logIndex: int(e.log_index, `${where}.log_index`),
    event: eventBase64(e.event, `${where}.event`),
    proof: e.proof.map((h, k) => hash(h, `${where}.proof[${k}]`)),
    checkpoint: {
      hospital: address(cp.hospital, `${where}.checkpoint.hospital`),
      index: int(cp.index, `${where}.checkpoint.index`),
      size: int(cp.size, `${where}.checkpoint.size`, 1),
      root: hash(cp.root, `${where}.checkpoint.root`),
    },
  };
}

function parseCustody(value) {
  const c = exact(value, "custody", ["custodian", "state", "on_hold", "commitment"]);
  if (!(c.custodian === ZERO_ADDRESS || isAddress(c.custodian))) throw bad("custody.custodian", "must be an EIP-55 address");
  if (!STATE_NAMES.includes(c.state)) throw bad("custody.state", "must be NONE, ARCHIVED, TRANSFER_PENDING or DESTROYED");
  if (typeof c.on_hold !== "boolean") throw bad("custody.on_hold", "must be true or false");
  if (!(c.commitment === null || (typeof c.commitment === "string" && HEX32.test(c.commitment)))) throw bad("custody.commitment", "must be a hash or null");
  return { custodian: c.custodian, state: c.state, onHold: c.on_hold, commitment: c.commitment };
}

function parseCertificate(value) {
  const c = exact(value, "certificate", ["document", "signature"]);
  if (typeof c.document !== "string") throw bad("certificate.document", "must be a string");
  if (c.document.length > 4 * Math.floor((MAX_CERTIFICATE_BYTES + 2) / 3)) throw bad("certificate.document", "longer than 256 KiB once decoded");
  if (!B64.test(c.document)) throw bad("certificate.document", "not standard base64");
  if (typeof c.signature !== "string" || !SIGNATURE.test(c.signature)) throw bad("certificate.signature", "must be 0x and 130 lower-case hex digits");
  return { document: base64Decode(c.document), signature: c.signature };
}

function describe(doc) {
  if (doc === null) return "JSON null, not a proof bundle";
  if (Array.isArray(doc)) return "a JSON array, not a proof bundle (a bundle is a JSON object)";
  if (!isObject(doc)) return "a JSON value that is not a proof bundle";
  if (!Object.hasOwn(doc, "format")) {
    const keys = Object.keys(doc);
    if (typeof doc.code === "string" && typeof doc.message === "string" && keys.every((k) => ["code", "message", "details"].includes(k))) {
      return `this is an error response from the node API (${doc.code}: ${doc.message}), not a proof bundle`;
    }
    return 'a JSON object without a "format" field, not a proof bundle';
  }
  if (typeof doc.format !== "string") return 'a JSON object whose "format" is not a string, not a proof bundle';
  if (doc.format.startsWith("archivechain.proof/")) return `a proof bundle of format ${doc.format}, which this verifier does not read`;
  return `a document of format ${doc.format}, not a proof bundle`;
}

/**
 * §3 (and §11 for public proofs): the document of `input` (bytes or text), or throws Unusable.
 * Returns {kind: "bundle"|"public", chainId, notary, archiveId, entries, custody, certificate}.
 */
export function parseDocument(input) {
  let text = input;
  if (typeof input !== "string") {
    if (input.length > MAX_BYTES) throw new Unusable(`larger than the limit of ${MAX_BYTES} bytes`);
    try { text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(input); } catch { throw new Unusable("not UTF-8"); }
  } else if (new TextEncoder().encode(text).length > MAX_BYTES) throw new Unusable(`larger than the limit of ${MAX_BYTES} bytes`);
  if (jsonDepth(text, MAX_DEPTH) > MAX_DEPTH) throw new Unusable(`objects and arrays nest deeper than ${MAX_DEPTH}`);
  let parsed;
  try { parsed = parseStrict(text); } catch (err) {
    if (err instanceof JsonError) throw new Unusable(`not JSON: ${err.message}`);
    throw err;
  }
  const doc = parsed.value;
  let kind = null;
  if (isObject(doc) && doc.format === BUNDLE_FORMAT) kind = "bundle";
  else if (isObject(doc) && doc.format === PUBLIC_FORMAT) kind = "public";
  else throw new Unusable(describe(doc));
  if (parsed.violation !== null) throw new Unusable(`malformed document: ${parsed.violation}`);
  const optional = kind === "bundle" ? ["custody", "certificate"] : ["certificate"];
  exact(doc, "", ["format", "chain_id", "notary", "archive_id", "entries"], optional);
  if (!Array.isArray(doc.entries)) throw bad("entries", "must be a JSON array");
  const limit = kind === "bundle" ? MAX_ENTRIES : 2;
  if (doc.entries.length > limit) throw bad("entries", `has more than the limit of ${limit}`);
  if (doc.entries.length === 0) throw bad("entries", "must hold at least one entry");
  const chainId = int(doc.chain_id, "chain_id", 1);
  const notary = address(doc.notary, "notary");
  if (typeof doc.archive_id !== "string" || !ULID.test(doc.archive_id)) throw bad("archive_id", "must be an archive id (ULID)");
  return {
    kind, chainId, notary, archiveId: doc.archive_id,
    entries: doc.entries.map((e, k) => parseEntry(e, `entries[${k}]`)),
    custody: Object.hasOwn(doc, "custody") ? parseCustody(doc.custody) : null,
    certificate: Object.hasOwn(doc, "certificate") ? parseCertificate(doc.certificate) : null,
  };
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

  async chainId() {
    const result = await this.call("eth_chainId", []);
    if (!/^0x[0-9a-fA-F]+$/.test(result)) throw new ChainDown(`eth_chainId answered ${result}`);
    return BigInt(result);
  }

  async words(to, data, count) {
    const result = await this.call("eth_call", [{ to, data }, "latest"]);
    const hex = result.replace(/^0x/, "");
    if (hex.length !== 64 * count || !/^[0-9a-fA-F]*$/.test(hex)) throw new NotNotary(`the call returned ${hex.length / 2} bytes, not ${count * 32}`);
    const out = [];
    for (let k = 0; k < count; k++) out.push(hex.slice(k * 64, (k + 1) * 64).toLowerCase());
    return out;
  }
}

function uint(word, max, what) {
  const v = BigInt("0x" + word);
  if (v > max) throw new NotNotary(`${what}: a value is out of range`);
  return v;
}
const U64 = (1n << 64n) - 1n;

function wordAddress(word, what) {
  if (!word.startsWith("0".repeat(24))) throw new NotNotary(`${what}: an address is out of range`);
  return checksum("0x" + word.slice(24));
}

function addressArg(a) { return a.toLowerCase().replace(/^0x/, "").padStart(64, "0"); }

/** The archive's on-chain key: 16 zero bytes and the ULID's 128-bit value (§6.1). */
export function archiveKey(archiveId) {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let v = 0n;
  for (const c of archiveId) v = v * 32n + BigInt(alphabet.indexOf(c));
  return v.toString(16).padStart(64, "0");
}

async function checkpointCount(rpc, notary, hospital) {
  const [w] = await rpc.words(notary, SEL_COUNT + addressArg(hospital), 1);
  return uint(w, U64, "checkpointCount");
}

async function checkpointAt(rpc, notary, hospital, index) {
  const data = SEL_AT + addressArg(hospital) + BigInt(index).toString(16).padStart(64, "0");
  const [size, root, anchoredAt] = await rpc.words(notary, data, 3);
  return { size: uint(size, U64, "checkpointAt"), root, anchoredAt: uint(anchoredAt, U64, "checkpointAt") };
}

async function custodyRecord(rpc, notary, archiveId) {
  const w = await rpc.words(notary, SEL_ARCHIVE + archiveKey(archiveId), 9);
  return {
    custodian: wordAddress(w[0], "archive"), state: Number(uint(w[1], 3n, "archive")),
    onHold: uint(w[2], 1n, "archive") === 1n, holdByRegulator: uint(w[3], 1n, "archive") === 1n,
    recordClass: Number(uint(w[4], 255n, "archive")), deadline: uint(w[5], U64, "archive"),
    commitment: w[6], recipient: wordAddress(w[7], "archive"), certificateHash: w[8],
  };
}

// -- the destruction certificate (§3.5) ----------------------------------------------------------

const utf8 = new TextEncoder();
const word = (hex) => hexToBytes(hex.replace(/^0x/, "").toLowerCase().padStart(64, "0"));

/** The EIP-712 digest the custodian signs for a certificate of hash `digest` (hex). */
export function certificateDigest(chainId, notary, archiveId, digest, custodian) {
  const domainType = keccak(utf8.encode("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"));
  const certType = keccak(utf8.encode("DestructionCertificate(bytes32 archiveId,bytes32 certificateHash,address custodian)"));
  const domain = keccak(concat(domainType, keccak(utf8.encode("ArchiveChain")), keccak(utf8.encode("1")), word(BigInt(chainId).toString(16)), word(notary)));
  const message = keccak(concat(certType, hexToBytes(archiveKey(archiveId)), hexToBytes(digest), word(custodian)));
  return keccak(concat(Uint8Array.of(0x19, 0x01), domain, message));
}

/** The address that signed `digest` (65-byte r ‖ s ‖ v hex signature, v 27/28), or null. */
export function recoverSigner(digest, signature) {
  const raw = hexToBytes(signature.slice(2));
  if (raw.length !== 65 || (raw[64] !== 27 && raw[64] !== 28)) return null;
  try {
    const sig = secp256k1.Signature.fromBytes(raw.subarray(0, 64), "compact").addRecoveryBit(raw[64] - 27);
    const point = sig.recoverPublicKey(digest).toBytes(false);
    return checksum("0x" + bytesToHex(keccak(point.subarray(1)).subarray(12)));
  } catch {
    return null;
  }
}

/** The certificate document if `bytes` is a canonical certificate object, else a reason. */
function certificateDocument(bytes) {
  if (bytes.length > MAX_CERTIFICATE_BYTES) return { error: "the certificate is too large" };
  let value;
  try {
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    const parsed = parseStrict(text);
    value = parsed.value;
    if (!isObject(value) || value.format !== CERTIFICATE_FORMAT) return { error: `the certificate is not a ${CERTIFICATE_FORMAT} object` };
    let canonical;
    try { canonical = jcs(value); } catch { return { error: "the certificate holds a value JCS cannot encode" }; }
    if (canonical !== text || parsed.violation !== null) return { error: "the certificate is not in RFC 8785 canonical form" };
  } catch {
    return { error: "the certificate is not JSON" };
  }
  return { document: value };
}

// -- the procedure (§7) -------------------------------------------------------------------------

class Failure {
  constructor(code, position, message) { this.code = code; this.position = position; this.message = message; }
}

const DEPLOYMENT = new Set(["chain_id_mismatch", "notary_mismatch"]);
function order(f) {
  if (DEPLOYMENT.has(f.code)) return [0, 0];
  if (f.position !== null) return [1, f.position];
  return [2, 0];
}

/**
 * Verify a parsed document. `report(step)` is called for each step shown to the user:
 * {text, ok} where ok is true, false, or null (information). Returns
 * {outcome: "VALID"|"INVALID"|"CHAIN_UNAVAILABLE", code, position, message}.
 */
export async function verifyDocument(doc, { rpcUrl, trustedNotary, now, report, checkCustody = true }) {
  const say = (text, ok = null) => report({ text, ok });
  const rpc = new RpcReader(rpcUrl);
  const failures = [];
  const fail = (code, position, message) => { failures.push(new Failure(code, position, message)); say(`${code}: ${message}`, false); };
  const facts = { halted: false, error: null, notANotary: null };
  const read = async (fn) => {
    if (facts.halted) return undefined;
    try { return await fn(); } catch (err) {
      if (err instanceof ChainDown) { facts.error = err.message; say(`chain unavailable: ${err.message}`, false); }
      else if (err instanceof NotNotary) facts.notANotary = `the trusted address holds no ArchiveNotary (${err.message})`;
      else throw err;
    }
    facts.halted = true;
    return undefined;
  };

  // §7.2 deployment
  const id = await read(() => rpc.chainId());
  if (id !== undefined && id !== BigInt(doc.chainId)) {
    fail("chain_id_mismatch", null, `the bundle names chain ${doc.chainId}, the RPC endpoint serves chain ${id}`);
    facts.halted = true;
  } else if (id !== undefined) say(`eth_chainId = ${id} = bundle chain_id`, true);
  if (!facts.halted) {
    if (doc.notary.toLowerCase() !== trustedNotary.toLowerCase()) {
      fail("notary_mismatch", null, `the bundle names notary ${doc.notary}, the trusted notary is ${trustedNotary}`);
      facts.halted = true;
    } else say(`notary ${doc.notary} = trusted ArchiveNotary`, true);
  }

  // §7.3 each entry
  const counts = new Map();
  const checkpoints = new Map();
  const entries = [];
  for (let p = 0; p < doc.entries.length; p++) {
    const e = doc.entries[p];
    const entry = { event: null, leaf: bytesToHex(await leafHash(e.event)), failure: null };
    entries.push(entry);
    const entryFail = (code, message) => {
      if (entry.failure === null) { entry.failure = new Failure(code, p, `entry ${p}: ${message}`); say(`${code}: entry ${p}: ${message}`, false); }
    };
    try { entry.event = parseEvent(e.event); } catch (err) {
      if (!(err instanceof JsonError)) throw err;
      entryFail("event_invalid", `event does not parse: ${err.message}`); continue;
    }
    const event = entry.event;
    const time = parseTime(event.time);
    say(`entry ${p}: ${event.type} at ${event.time}, log ${e.hospital} #${e.logIndex}`, null);
    if (event.hospital !== e.hospital) entryFail("hospital_mismatch", `event names hospital ${event.hospital}, the entry ${e.hospital}`);
    if (event.log_index !== e.logIndex) entryFail("log_index_mismatch", `event names log index ${event.log_index}, the entry ${e.logIndex}`);
    if (event.archive_id !== doc.archiveId) entryFail("archive_mismatch", `event is for archive ${event.archive_id}, the document for ${doc.archiveId}`);
    if (e.checkpoint.hospital !== e.hospital) entryFail("checkpoint_hospital_mismatch", `checkpoint of ${e.checkpoint.hospital} cannot prove an entry of ${e.hospital}`);
    say(`entry ${p}: leaf hash SHA-256(0x00 ‖ event) = ${entry.leaf}`, true);
    try {
      const root = await verifyInclusion(e.logIndex, e.checkpoint.size, hexToBytes(entry.leaf), e.proof, e.checkpoint.root);
      say(`entry ${p}: inclusion proof (${e.proof.length} hashes) → root ${bytesToHex(root)} = checkpoint ${e.checkpoint.index} root (size ${e.checkpoint.size})`, true);
    } catch (err) { entryFail("inclusion_invalid", `not included in checkpoint ${e.checkpoint.index} (size ${e.checkpoint.size}): ${err.message}`); }
    if (now !== null && time > now + SKEW) entryFail("time_in_future", `dated ${event.time}, after now`);
    if (entry.failure !== null) continue;
    // step 5: the chain
    const hk = e.checkpoint.hospital;
    if (!counts.has(hk)) {
      const count = await read(() => checkpointCount(rpc, trustedNotary, hk));
      if (count === undefined) continue;
      counts.set(hk, count);
    }
    if (counts.get(hk) <= BigInt(e.checkpoint.index)) { entryFail("checkpoint_missing", `${hk} has no checkpoint ${e.checkpoint.index} on chain`); continue; }
    const key = `${hk}/${e.checkpoint.index}`;
    if (!checkpoints.has(key)) {
      const found = await read(() => checkpointAt(rpc, trustedNotary, hk, e.checkpoint.index));
      if (found === undefined) continue;
      checkpoints.set(key, found);
    }
    const onChain = checkpoints.get(key);
    say(`entry ${p}: eth_call checkpointAt(${hk}, ${e.checkpoint.index}) → size ${onChain.size}, root ${onChain.root}, anchored at ${new Date(Number(onChain.anchoredAt) * 1000).toISOString()}`, null);
    if (onChain.size !== BigInt(e.checkpoint.size) || onChain.root !== bytesToHex(e.checkpoint.root)) {
      entryFail("checkpoint_mismatch", `the chain's checkpoint ${e.checkpoint.index} has size ${onChain.size} and root ${onChain.root}`);
    } else if (time > onChain.anchoredAt * 1_000_000n + SKEW) {
      entryFail("time_after_anchor", `dated ${event.time}, after its checkpoint was anchored`);
    } else say(`entry ${p}: on-chain checkpoint agrees`, true);
  }

  // §7.4 across entries
  const final = doc.kind === "bundle" ? replay(entries, say) : publicSequence(entries, say);
  if (final !== null) {
    if (doc.kind === "bundle") {
      const expected = expectedCustody(final);
      if (doc.custody !== null) custodyClaim(doc.custody, expected, fail, say);
      if (checkCustody) {
        const record = await read(() => custodyRecord(rpc, trustedNotary, doc.archiveId));
        if (record !== undefined) compareRecord(bundlePairs(expected, final, record), fail, say);
      }
      await certificateCheck(doc, final.status === "DESTROYED", final.certificateHash, final.custodian, fail, say);
    } else {
      if (checkCustody) {
        const record = await read(() => custodyRecord(rpc, trustedNotary, doc.archiveId));
        if (record !== undefined) compareRecord(publicPairs(final, record), fail, say);
      }
      const destroy = final.destroy;
      await certificateCheck(doc, destroy !== null, destroy && destroy.data.certificate_hash, destroy && destroy.hospital, fail, say);
    }
  }
  if (facts.notANotary !== null) fail("notary_mismatch", null, facts.notANotary);
  for (const entry of entries) if (entry.failure !== null) failures.push(entry.failure);

  if (failures.length > 0) {
    const sorted = failures.map((f, k) => [f, k]).sort(([a, i], [b, j]) => {
      const [x, y] = [order(a), order(b)];
      return x[0] - y[0] || x[1] - y[1] || i - j;
    });
    const first = sorted[0][0];
    return { outcome: "INVALID", code: first.code, position: first.position, message: first.message };
  }
  if (facts.error !== null) return { outcome: "CHAIN_UNAVAILABLE", code: "chain_unavailable", position: null, message: `chain unavailable: ${facts.error}` };
  return { outcome: "VALID", code: null, position: null, message: `${doc.entries.length} events verified against the chain` };
}

/** §7.4 steps 1–2 for a bundle: the final lifecycle state, or null after a failure. */
function replay(entries, say) {
  let state = null;
  let previous = null;
  for (let p = 0; p < entries.length; p++) {
    const entry = entries[p];
    if (entry.failure !== null || entry.event === null) return null;
    const time = parseTime(entry.event.time);
    if (previous !== null && time < previous) {
      entry.failure = new Failure("time_order", p, `entry ${p}: dated before the previous entry`);
      say(`time_order: entry ${p}: dated before the previous entry`, false);
      return null;
    }
    try { state = applyEvent(state, entry.event, entry.leaf); } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      entry.failure = new Failure(err.code, p, `entry ${p}: ${entry.event.type}: ${err.message}`);
      say(`${err.code}: entry ${p}: ${entry.event.type}: ${err.message}`, false);
      return null;
    }
    previous = time;
  }
  say(`lifecycle (§8): ${entries.length} events replayed, every prev names the expected event; final state ${state.status}`, true);
  return state;
}

/** §11: a public proof's entries are ARCHIVE, then DESTROY if published, in time order. */
function publicSequence(entries, say) {
  const expected = ["ARCHIVE", "DESTROY"];
  for (let p = 0; p < entries.length; p++) {
    const entry = entries[p];
    if (entry.failure !== null || entry.event === null) return null;
    const ev = entry.event;
    const refuse = (code, message) => { entry.failure = new Failure(code, p, `entry ${p}: ${message}`); say(`${code}: entry ${p}: ${message}`, false); };
    if (ev.type !== expected[p]) { refuse("illegal_transition", `a public proof holds ARCHIVE, then DESTROY; entry ${p} is ${ev.type}`); return null; }
    if (p === 1 && parseTime(ev.time) < parseTime(entries[0].event.time)) { refuse("time_order", "dated before the previous entry"); return null; }
    if (ev.type === "ARCHIVE" && parseTime(ev.data.retention_deadline) < parseDate(ev.data.trigger_date)) {
      refuse("illegal_transition", "the retention deadline is before its trigger date"); return null;
    }
  }
  say("public proof (§11): ARCHIVE" + (entries.length > 1 ? " then DESTROY, in time order" : ""), true);
  return { archive: entries[0].event, destroy: entries.length > 1 ? entries[1].event : null };
}

function custodyClaim(claim, expected, fail, say) {
  const pairs = [
    ["state", STATE_NAMES[expected.state], claim.state],
    ["custodian", expected.custodian, claim.custodian],
    ["on_hold", expected.onHold, claim.onHold],
    ["commitment", expected.commitment, claim.commitment],
  ];
  const diff = differences(pairs);
  if (diff) fail("custody_claim_mismatch", null, `the bundle's custody claim disagrees with its events: ${diff}`);
  else say("the bundle's custody claim agrees with its events", true);
}

const ZERO32 = "0".repeat(64);

function bundlePairs(expected, state, record) {
  const pairs = [
    ["state", STATE_NAMES[expected.state], STATE_NAMES[record.state]],
    ["custodian", expected.custodian.toLowerCase(), record.custodian.toLowerCase()],
    ["on_hold", expected.onHold, record.onHold],
    ["hold_by_regulator", expected.holdByRegulator, record.onHold && record.holdByRegulator],
    ["pending_recipient", expected.recipient.toLowerCase(), record.recipient.toLowerCase()],
    ["commitment", expected.commitment || ZERO32, record.commitment],
    ["certificate_hash", state.certificateHash || ZERO32, record.certificateHash],
  ];
  if (expected.recordClass !== null) pairs.push(["record_class", expected.recordClass, record.recordClass]);
  if (expected.deadline !== null) pairs.push(["retention_deadline", expected.deadline, record.deadline]);
  return pairs;
}

/** §11: what a public proof says of the custody record (the rest is not published). */
function publicPairs(final, record) {
  const { archive, destroy } = final;
  const pairs = [];
  if (destroy !== null) {
    pairs.push(
      ["state", "DESTROYED", STATE_NAMES[record.state]],
      ["custodian", destroy.hospital.toLowerCase(), record.custodian.toLowerCase()],
      ["on_hold", false, record.onHold],
      ["hold_by_regulator", false, record.onHold && record.holdByRegulator],
      ["pending_recipient", ZERO_ADDRESS, record.recipient.toLowerCase()],
    );
  } else {
    const state = STATE_NAMES[record.state];
    pairs.push(["state", "ARCHIVED or TRANSFER_PENDING", state === "ARCHIVED" || state === "TRANSFER_PENDING" ? "ARCHIVED or TRANSFER_PENDING" : state]);
  }
  pairs.push(
    ["commitment", archive.data.commitment, record.commitment],
    ["certificate_hash", destroy !== null ? destroy.data.certificate_hash : ZERO32, record.certificateHash],
    ["record_class", recordClassCode(archive.data.record_class), record.recordClass],
  );
  return pairs;
}

function compareRecord(pairs, fail, say) {
  const diff = differences(pairs);
  if (diff) fail("custody_mismatch", null, `the on-chain custody record disagrees with the events: ${diff}`);
  else say("eth_call archive(id): the on-chain custody record agrees with the events", true);
}

function differences(pairs) {
  return pairs.filter(([, want, got]) => want !== got).map(([name, want, got]) => `${name}: events say ${want}, found ${got}`).join("; ");
}

async function certificateCheck(doc, destroyed, recordedHash, custodian, fail, say) {
  const claim = doc.certificate;
  if (!destroyed) {
    if (claim !== null) fail("certificate_mismatch", null, "a certificate for an archive not destroyed");
    return;
  }
  if (claim === null) { fail("certificate_missing", null, "the archive is destroyed; the document lacks its certificate"); return; }
  const digest = bytesToHex(await sha256(claim.document));
  if (digest !== recordedHash) { fail("certificate_mismatch", null, `the certificate hashes to ${digest}, the DESTROY event records ${recordedHash}`); return; }
  say(`destruction certificate SHA-256 = ${digest} = DESTROY certificate_hash`, true);
  const parsed = certificateDocument(claim.document);
  if (parsed.error) { fail("certificate_mismatch", null, parsed.error); return; }
  const c = parsed.document;
  if (c.archive_id !== doc.archiveId || c.chain_id !== doc.chainId || String(c.notary) !== doc.notary) {
    fail("certificate_mismatch", null, "the certificate names another archive, chain or notary than the document"); return;
  }
  const signer = recoverSigner(certificateDigest(doc.chainId, doc.notary, doc.archiveId, digest, custodian), claim.signature);
  if (signer === null || signer.toLowerCase() !== custodian.toLowerCase()) {
    fail("certificate_signature_invalid", null, `the certificate is not signed by the custodian ${custodian}`); return;
  }
  say(`EIP-712 signature (Keccak-256, secp256k1) recovers to the custodian ${custodian}`, true);
}
