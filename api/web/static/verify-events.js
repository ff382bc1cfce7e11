// Strict JSON, the event schema and the lifecycle rules of docs/proof-format.md (§3 step 5, §4,
// §8), for the in-browser verifier. Written from the specification, independently of the
// reference implementation (anchoring/events.py, anchoring/lifecycle.py); a browser test feeds
// both the same tampered documents and compares their failure codes.
"use strict";
import { keccak_256 } from "@noble/hashes/sha3.js";

export const MAX_SAFE = 2 ** 53 - 1;

// -- strict JSON (RFC 8259 + §3 step 5) ---------------------------------------------------------

/** An integer literal outside ±(2^53−1): no field of the format accepts it. */
export class BigNumber { constructor(text) { this.text = text; } }

export class JsonError extends Error {}

/**
 * Parse `text` as one JSON value (RFC 8259; only space, tab, LF and CR as whitespace). Objects
 * have no prototype (a `__proto__` key is an ordinary key). Returns {value, violation}:
 * `violation` names the first duplicate key or non-integer number (a fraction or an exponent),
 * noted rather than thrown, so that a document can first be identified by its `format`.
 */
export function parseStrict(text) {
  let at = 0;
  let violation = null;
  const note = (what) => { if (violation === null) violation = what; };
  const fail = (what) => { throw new JsonError(`${what} at offset ${at}`); };
  const ws = () => {
    while (at < text.length) {
      const c = text.charCodeAt(at);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) at++; else break;
    }
  };
  const string = () => {
    at++; // opening quote
    let out = "";
    let start = at;
    for (;;) {
      if (at >= text.length) fail("unterminated string");
      const c = text.charCodeAt(at);
      if (c === 0x22) { out += text.slice(start, at); at++; return out; }
      if (c < 0x20) fail("control character in a string");
      if (c === 0x5c) {
        out += text.slice(start, at);
        const e = text[at + 1];
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
        if (simple !== undefined) { out += simple; at += 2; }
        else if (e === "u") {
          const hex = text.slice(at + 2, at + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
          out += String.fromCharCode(parseInt(hex, 16)); at += 6;
        } else fail("bad escape");
        start = at;
      } else at++;
    }
  };
  const number = () => {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(at, at + 5000));
    if (!m || m[0] === "-") fail("bad number");
    at += m[0].length;
    if (m[2] !== undefined || m[3] !== undefined) { note(`non-integer number ${m[0]} is not allowed`); return 0; }
    const big = BigInt(m[0]);
    if (big > BigInt(MAX_SAFE) || big < -BigInt(MAX_SAFE)) return new BigNumber(m[0]);
    return Number(big);
  };
  const value = () => {
    ws();
    const c = text[at];
    if (c === "{") {
      at++;
      const obj = Object.create(null);
      ws();
      if (text[at] === "}") { at++; return obj; }
      for (;;) {
        ws();
        if (text[at] !== '"') fail("expected a key");
        const key = string();
        ws();
        if (text[at] !== ":") fail("expected ':'");
        at++;
        const v = value();
        if (Object.prototype.hasOwnProperty.call(obj, key)) note(`duplicate key ${JSON.stringify(key)}`);
        obj[key] = v;
        ws();
        if (text[at] === ",") { at++; continue; }
        if (text[at] === "}") { at++; return obj; }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      at++;
      const arr = [];
      ws();
      if (text[at] === "]") { at++; return arr; }
      for (;;) {
        arr.push(value());
        ws();
        if (text[at] === ",") { at++; continue; }
        if (text[at] === "]") { at++; return arr; }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, at)) { at += word.length; return v; }
    }
    fail("unexpected character");
  };
  const result = value();
  ws();
  if (at !== text.length) fail("extra data");
  return { value: result, violation };
}

export function isObject(v) { return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof BigNumber); }

/** RFC 8785 for the values events and certificates hold; throws on anything else. */
export function jcs(value) {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "string") {
    if (!value.isWellFormed()) throw new JsonError("a lone surrogate");
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new JsonError("not an integer");
    return String(value);
  }
  if (value instanceof BigNumber) throw new JsonError("an integer beyond 2^53−1");
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  const keys = Object.keys(value).sort(utf16Order);
  return "{" + keys.map((k) => jcs(k) + ":" + jcs(value[k])).join(",") + "}";
}

function utf16Order(a, b) { return a < b ? -1 : a > b ? 1 : 0; } // JS compares UTF-16 code units

// -- encodings (§3.4) ----------------------------------------------------------------------------

export const HEX32 = /^[0-9a-f]{64}$/;
export const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
const CODE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MEDIA = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$/;
const TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{6}))?Z$/;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
export const ZERO_ADDRESS = "0x0000000000000000000000000000000000000000";

const ascii = new TextEncoder();

export function keccak(bytes) { return keccak_256(bytes); }

/** EIP-55 form of a 40-hex-digit address (any case, with 0x). */
export function checksum(address) {
  const lower = address.slice(2).toLowerCase();
  const digest = keccak(ascii.encode(lower));
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    const nibble = (digest[i >> 1] >> (i % 2 === 0 ? 4 : 0)) & 0xf;
    out += nibble >= 8 ? lower[i].toUpperCase() : lower[i];
  }
  return out;
}

/** A non-zero address exactly in EIP-55 form. */
export function isAddress(v) {
  return typeof v === "string" && /^0x[0-9a-fA-F]{40}$/.test(v) && v !== ZERO_ADDRESS && checksum(v) === v;
}

function daysInMonth(y, m) {
  return [31, (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
}

function daysFromCivil(y, m, d) { // days since 1970-01-01 (proleptic Gregorian)
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function validDate(y, m, d) { return y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= daysInMonth(y, m); }

/** A canonical timestamp → microseconds since the epoch (BigInt), or null. */
export function parseTime(v) {
  if (typeof v !== "string") return null;
  const m = TIME.exec(v);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
  if (m[7] === "000000" || !validDate(y, mo, d) || h > 23 || mi > 59 || s > 59) return null;
  // The reference writes years below 1000 without leading zeros ("999-…"), so "0999-…" is not
  // its canonical text: refused there as non-canonical, here as no timestamp (event_invalid).
  if (y < 1000) return null;
  const seconds = BigInt(daysFromCivil(y, mo, d)) * 86400n + BigInt(h * 3600 + mi * 60 + s);
  return seconds * 1_000_000n + BigInt(m[7] ? Number(m[7]) : 0);
}

/** A date `YYYY-MM-DD` → microseconds of its 00:00Z, or null. */
export function parseDate(v) {
  if (typeof v !== "string") return null;
  const m = DATE.exec(v);
  if (!m) return null;
  const [y, mo, d] = m.slice(1).map(Number);
  if (!validDate(y, mo, d)) return null;
  return BigInt(daysFromCivil(y, mo, d)) * 86_400_000_000n;
}

// -- the event schema (§4) -------------------------------------------------------------------

const RECORD_CLASSES = ["OUTPATIENT", "EMERGENCY", "INPATIENT", "LAB", "IMAGING", "NURSING", "ADMINISTRATIVE"];
const enumOf = (...values) => (v) => typeof v === "string" && values.includes(v);
const T = {
  hash: (v) => typeof v === "string" && HEX32.test(v),
  address: isAddress,
  archiveId: (v) => typeof v === "string" && ULID.test(v),
  actor: (v) => (typeof v === "string" && HEX32.test(v)) || isAddress(v),
  code: (v) => typeof v === "string" && CODE.test(v),
  media: (v) => typeof v === "string" && MEDIA.test(v),
  time: (v) => parseTime(v) !== null,
  date: (v) => parseDate(v) !== null,
  count: (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0,
  version: (v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 1,
  bool: (v) => typeof v === "boolean",
  recordClass: enumOf(...RECORD_CLASSES),
  sensitivity: enumOf("NORMAL", "SENSITIVE", "HIGHLY_SENSITIVE"),
  purpose: enumOf("treatment", "referral", "research", "insurance", "audit", "legal", "quality", "patient_request", "operations"),
  scope: enumOf("content", "metadata", "proof"),
  tier: enumOf("hot", "cold"),
  tagKind: enumOf("qr", "rfid_epc"),
  method: enumOf("crypto_erasure", "crypto_erasure_and_physical"),
  revokeReason: enumOf("revoked", "expired", "purpose_fulfilled", "member_suspended"),
  cancelReason: enumOf("withdrawn", "expired", "recipient_unavailable", "member_suspended"),
  fact: enumOf("record_class", "state", "custodian", "dates", "commitment", "archive_id"),
  consentRevokeReason: enumOf("withdrawn", "superseded", "recorded_in_error"),
  replicaAction: enumOf("placed", "verified", "failed", "dropped"),
  notice: enumOf("custodian_destroyed"),
};
T.recipient = (v) => isAddress(v) || T.code(v);
const nullable = (check) => (v) => v === null || check(v);
const sortedUnique = (check) => (v) => Array.isArray(v) && v.length > 0 && v.every(check)
  && v.every((x, i) => i === 0 || v[i - 1] < x);

/** §4.3: the `data` fields of each type, with their checks. */
export const SCHEMA = {
  CREATE: { record_class: T.recordClass, sensitivity: T.sensitivity, department: T.code, patient: T.hash, source_system: T.code, version: T.version, commitment: T.hash, ciphertext_sha256: T.hash, size: T.count, media_type: T.media },
  AMEND: { version: T.version, commitment: T.hash, ciphertext_sha256: T.hash, size: T.count, media_type: T.media },
  ARCHIVE: { record_class: T.recordClass, retention_policy: T.code, trigger_date: T.date, retention_deadline: T.time, commitment: T.hash },
  ACCESS: { purpose: T.purpose, scope: T.scope, break_glass: T.bool, grant: nullable(T.hash), reason_hash: nullable(T.hash) },
  SHARE_GRANT: { grantee: T.address, purpose: T.purpose, expires_at: T.time },
  SHARE_REVOKE: { grantee: T.address, reason: T.revokeReason },
  TRANSFER_OFFER: { to: T.address, expires_at: nullable(T.time) },
  TRANSFER_ACCEPT: { from: T.address, offer_hash: nullable(T.hash) },
  TRANSFER_REJECT: { by: T.address, reason_hash: T.hash },
  TRANSFER_CANCEL: { to: T.address, reason: T.cancelReason },
  HOLD_PLACE: { reason_hash: T.hash, by_regulator: T.bool },
  HOLD_RELEASE: { reason_hash: T.hash },
  RETENTION_EXTEND: { previous_deadline: T.time, new_deadline: T.time },
  DISPOSITION_START: {},
  DESTROY: { certificate_hash: T.hash, method: T.method },
  FIXITY_CHECK: { version: T.version, ciphertext_sha256: T.hash, ok: T.bool },
  TIER_MOVE: { from_tier: T.tier, to_tier: T.tier },
  TAG_BIND: { tag_kind: T.tagKind, tag_hash: T.hash },
  TAG_SCAN: { tag_hash: T.hash, reader: T.actor },
  DISPOSITION_PROPOSE: { proposal: T.archiveId, reason_hash: T.hash },
  DISPOSITION_APPROVE: { proposal: T.archiveId, expires_at: T.time, reason_hash: T.hash },
  RECLASSIFY: { previous_class: T.recordClass, previous_sensitivity: T.sensitivity, record_class: T.recordClass, sensitivity: T.sensitivity, reason_hash: T.hash },
  BREAK_GLASS: { reason_hash: T.hash, purpose: T.purpose, expires_at: T.time },
  CONSENT_GRANT: { patient: T.hash, insurer: T.address, purpose: T.purpose, record_classes: sortedUnique(T.recordClass), period_start: T.date, period_end: T.date, facts: sortedUnique(T.fact), expires_at: T.time, document_hash: T.hash },
  CONSENT_REVOKE: { reason: T.consentRevokeReason },
  ATTEST: { attestation_id: T.hash, digest: T.hash, insurer: T.address, records: T.count, expires_at: T.time },
  DERIVE: { source_archive: T.archiveId, source_commitment: T.hash, commitment: T.hash, profile: T.code, purpose: T.purpose, recipient: T.recipient },
  REPLICA: { action: T.replicaAction, peer: T.address, version: T.version, ciphertext_sha256: T.hash },
  REPAIR: { version: T.version, ciphertext_sha256: T.hash, source: T.address },
  DESTRUCTION_NOTICE: { certificate_hash: T.hash, reason: T.notice },
};
const COMMON = { v: (v) => v === 1, hospital: T.address, log_index: T.count, archive_id: T.archiveId, type: (v) => typeof v === "string" && Object.hasOwn(SCHEMA, v), actor: T.actor, time: T.time, prev: nullable(T.hash), data: isObject };
const FIRST = new Set(["CREATE", "CONSENT_GRANT"]);

function exactFields(obj, checks, where) {
  for (const key of Object.keys(obj)) if (!Object.hasOwn(checks, key)) return `${where}${key}: unknown field`;
  for (const [key, check] of Object.entries(checks)) {
    if (!Object.hasOwn(obj, key)) return `${where}${key}: missing`;
    if (!check(obj[key])) return `${where}${key}: invalid value`;
  }
  return null;
}

/**
 * §4: the event of canonical `bytes`, with its times as microseconds ({event, time}), or
 * throws JsonError saying what is wrong (→ `event_invalid`).
 */
export function parseEvent(bytes) {
  if (bytes.length > 65536) throw new JsonError("larger than 65,536 bytes");
  let structures = 0;
  for (const b of bytes) if (b === 0x7b || b === 0x5b) structures++;
  if (structures > 16) throw new JsonError("more than 16 objects or arrays");
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes); } catch { throw new JsonError("not UTF-8"); }
  const { value, violation } = parseStrict(text);
  if (violation !== null) throw new JsonError(violation);
  if (!isObject(value)) throw new JsonError("not a JSON object");
  if (value.v !== 1) throw new JsonError("unsupported schema version");
  const common = exactFields(value, COMMON, "");
  if (common) throw new JsonError(common);
  const data = exactFields(value.data, SCHEMA[value.type], "data.");
  if (data) throw new JsonError(data);
  if (FIRST.has(value.type) !== (value.prev === null)) throw new JsonError("prev: null exactly for CREATE and CONSENT_GRANT");
  const d = value.data;
  if (value.type === "ACCESS" && d.break_glass !== (d.reason_hash !== null)) throw new JsonError("data.reason_hash: present exactly for break-glass access");
  if (value.type === "CONSENT_GRANT" && parseDate(d.period_end) < parseDate(d.period_start)) throw new JsonError("data.period_end: before period_start");
  if (jcs(value) !== text) throw new JsonError("the event bytes are not RFC 8785 canonical");
  return value;
}

export const t = (v) => parseTime(v); // microseconds of a validated timestamp

// -- the lifecycle (§8) --------------------------------------------------------------------------

export class Refusal extends Error {
  constructor(code, message) { super(message); this.code = code; }
}
const illegal = (m) => new Refusal("illegal_transition", m);

const LIVE = ["CREATED", "ARCHIVED", "TRANSFER_PENDING", "DISPOSITION_REVIEW"];
const SETTLED = ["CREATED", "ARCHIVED", "DISPOSITION_REVIEW"];
const ANY = [...LIVE, "DESTROYED"];
const NOT_IN_TRANSIT = ["CREATED", "ARCHIVED", "DISPOSITION_REVIEW", "DESTROYED"];

/** Event type → [allowed states, blocked by a hold]. CREATE and a grantee's reads are apart. */
const RULES = {
  AMEND: [["CREATED"], false], ARCHIVE: [["CREATED"], false], ACCESS: [NOT_IN_TRANSIT, false],
  SHARE_GRANT: [["CREATED", "ARCHIVED"], false], SHARE_REVOKE: [LIVE, false],
  TRANSFER_OFFER: [["ARCHIVED"], true], TRANSFER_ACCEPT: [["TRANSFER_PENDING"], true],
  TRANSFER_REJECT: [["TRANSFER_PENDING"], false], TRANSFER_CANCEL: [["TRANSFER_PENDING"], false],
  HOLD_PLACE: [LIVE, false], HOLD_RELEASE: [ANY, false],
  RETENTION_EXTEND: [["ARCHIVED", "TRANSFER_PENDING", "DISPOSITION_REVIEW"], false],
  DISPOSITION_START: [["ARCHIVED"], true], DESTROY: [["DISPOSITION_REVIEW"], true],
  FIXITY_CHECK: [SETTLED, false], TIER_MOVE: [SETTLED, false], TAG_BIND: [SETTLED, false],
  TAG_SCAN: [NOT_IN_TRANSIT, false], DISPOSITION_PROPOSE: [["DISPOSITION_REVIEW"], true],
  DISPOSITION_APPROVE: [["DISPOSITION_REVIEW"], true], RECLASSIFY: [["CREATED", "ARCHIVED"], false],
  BREAK_GLASS: [SETTLED, false], CONSENT_GRANT: [[], false], CONSENT_REVOKE: [[], false],
  ATTEST: [[], false], DERIVE: [["CREATED"], false], REPLICA: [[...SETTLED, "DESTROYED"], false],
  REPAIR: [SETTLED, false], DESTRUCTION_NOTICE: [["DESTROYED"], false],
};

function stateRefusal(s, type) {
  const [allowed, hold] = RULES[type];
  if (!allowed.includes(s.status)) return `${type} is not allowed in state ${s.status}`;
  if (hold && s.onHold) return `the archive is on legal hold: ${type} is blocked`;
  return null;
}

const version = (s, n) => s.versions.find((v) => v.version === n);
const isMember = (actor) => actor.startsWith("0x");

/**
 * Apply one event (§8) to state `s` (null before CREATE); `leaf` is its leaf hash (hex).
 * Returns the new state, or throws Refusal with code illegal_transition, prev_mismatch or
 * time_order.
 */
export function applyEvent(s, ev, leaf) {
  const time = parseTime(ev.time);
  const d = ev.data;
  if (s === null) {
    if (ev.type !== "CREATE") throw illegal("the archive does not exist yet: its first event must be CREATE");
    if (d.version !== 1) throw illegal("the first version must be 1");
    return {
      archiveId: ev.archive_id, status: "CREATED", custodian: ev.hospital, recordClass: d.record_class,
      sensitivity: d.sensitivity, versions: [{ version: 1, commitment: d.commitment, cipher: d.ciphertext_sha256 }],
      head: leaf, lastTime: time, count: 1, commitment: null, deadline: null, onHold: false, holdByRegulator: false,
      recipient: null, offerHash: null, grants: [], tier: "hot", tags: new Set(), certificateHash: null,
      proposal: null, proposedBy: null, approvedUntil: null, replicas: new Set(), destroyedEvent: null,
      breakGlass: [],
    };
  }
  if (ev.type === "CREATE") throw illegal("the archive already exists");
  if (ev.archive_id !== s.archiveId) throw illegal("the event is for another archive");
  if (ev.type === "ACCESS" && ev.hospital !== s.custodian) {
    const grant = s.grants.find((g) => g.grantee === ev.hospital);
    if (!grant || !(time < grant.expiresAt)) throw illegal(`${ev.hospital} is neither the custodian nor holds an active share grant`);
    if (d.grant !== grant.grantHash) throw illegal("grantee access must name its SHARE_GRANT (data.grant)");
    if (d.purpose !== grant.purpose) throw illegal("the purpose differs from the grant's");
    if (d.break_glass) throw illegal("break-glass access is only possible at the custodian");
    if (ev.prev !== grant.head) throw new Refusal("prev_mismatch", `prev ${ev.prev} is not the grant's last event ${grant.head}`);
    if (time < grant.lastTime) throw new Refusal("time_order", "dated before the grantee's previous event");
    const grants = s.grants.map((g) => (g === grant ? { ...g, head: leaf, lastTime: time } : g));
    return { ...s, grants, count: s.count + 1 };
  }
  if (ev.type === "DESTRUCTION_NOTICE") {
    const refusal = stateRefusal(s, ev.type);
    if (refusal) throw illegal(refusal);
    if (ev.hospital === s.custodian) throw illegal("a destruction notice is logged by a grantee, not the custodian");
    if (ev.prev !== s.destroyedEvent) throw new Refusal("prev_mismatch", `prev ${ev.prev} is not the archive's DESTROY`);
    if (d.certificate_hash !== s.certificateHash) throw illegal("certificate_hash differs from the DESTROY's");
    return { ...s, count: s.count + 1 };
  }
  if (ev.prev !== s.head) throw new Refusal("prev_mismatch", `prev ${ev.prev} is not the archive's last event ${s.head}`);
  if (time < s.lastTime) throw new Refusal("time_order", "dated before the previous event");
  // the logging hospital
  const transferAnswer = ev.type === "TRANSFER_ACCEPT" || ev.type === "TRANSFER_REJECT";
  if (!(s.status !== "TRANSFER_PENDING" && transferAnswer)) {
    if (ev.type === "TRANSFER_ACCEPT") { if (ev.hospital !== s.recipient) throw illegal("logged by another hospital than the pending recipient"); }
    else if (ev.type === "TRANSFER_REJECT") { if (ev.hospital !== s.custodian && ev.hospital !== s.recipient) throw illegal("logged by neither custodian nor recipient"); }
    else if (ev.hospital !== s.custodian) throw illegal(`logged by ${ev.hospital}, which is not the custodian ${s.custodian}`);
  }
  const refusal = stateRefusal(s, ev.type);
  if (refusal) throw illegal(refusal);
  const next = effect(s, ev, d, time, leaf);
  return { ...next, head: leaf, lastTime: time, count: s.count + 1 };
}

/** Whether break-glass window `w` (opened by a BREAK_GLASS) allows the break-glass ACCESS `ev` at `time` (§8). */
function coversBreakGlass(w, ev, time) {
  return w.hospital === ev.hospital && w.actor === ev.actor && w.purpose === ev.data.purpose
    && w.reasonHash === ev.data.reason_hash && w.openedAt <= time && time < w.expiresAt;
}

function endTransfer(s) { return { ...s, status: "ARCHIVED", recipient: null, offerHash: null }; }

function effect(s, ev, d, time, leaf) {
  switch (ev.type) {
    case "AMEND": {
      const expected = s.versions[s.versions.length - 1].version + 1;
      if (d.version !== expected) throw illegal(`version must be ${expected}`);
      return { ...s, versions: [...s.versions, { version: d.version, commitment: d.commitment, cipher: d.ciphertext_sha256 }] };
    }
    case "ARCHIVE":
      if (d.record_class !== s.recordClass) throw illegal("the record class differs from the archive's class");
      if (d.commitment !== s.versions[s.versions.length - 1].commitment) throw illegal("the archived commitment is not the current version's");
      if (parseTime(d.retention_deadline) < parseDate(d.trigger_date)) throw illegal("the retention deadline is before its trigger date");
      return { ...s, status: "ARCHIVED", commitment: d.commitment, deadline: parseTime(d.retention_deadline) };
    case "ACCESS":
      if (s.status === "DESTROYED" && d.scope === "content") throw illegal("the content was destroyed");
      if (d.grant !== null) {
        const grant = s.grants.find((g) => g.grantHash === d.grant);
        if (!grant) throw illegal("the custodian's access names no grant of this archive");
        if (!(time < grant.expiresAt)) throw illegal("a disclosure after the grant expired");
        if (ev.actor !== grant.grantee) throw illegal("a disclosure names another actor than the grantee");
        if (d.purpose !== grant.purpose) throw illegal("the purpose differs from the grant's");
        if (d.break_glass) throw illegal("a disclosure under a grant is never break-glass");
      } else if (d.break_glass && !s.breakGlass.some((w) => coversBreakGlass(w, ev, time))) {
        throw new Refusal("break_glass_unopened", `break-glass access by ${ev.actor} is not inside a break-glass window this actor opened on this archive (same hospital, actor, purpose and reason_hash, before its expires_at)`);
      }
      return s;
    case "SHARE_GRANT": {
      if (d.grantee === s.custodian) throw illegal("the custodian cannot grant access to itself");
      const expiresAt = parseTime(d.expires_at);
      if (expiresAt <= time) throw illegal("the grant would already be expired");
      const held = s.grants.find((g) => g.grantee === d.grantee);
      if (held && time < held.expiresAt) throw illegal("the grantee already holds an active grant");
      const grant = { grantee: d.grantee, purpose: d.purpose, expiresAt, grantHash: leaf, head: leaf, lastTime: time };
      return { ...s, grants: [...s.grants.filter((g) => g.grantee !== d.grantee), grant] };
    }
    case "SHARE_REVOKE": {
      const held = s.grants.find((g) => g.grantee === d.grantee);
      if (!held) throw illegal("the grantee holds no grant");
      if (d.reason === "expired" && time < held.expiresAt) throw illegal("reason 'expired' before the grant's expiry");
      return { ...s, grants: s.grants.filter((g) => g !== held) };
    }
    case "TRANSFER_OFFER":
      if (d.to === s.custodian) throw illegal("cannot transfer to the current custodian");
      if (d.expires_at !== null && parseTime(d.expires_at) <= time) throw illegal("the offer would already be expired");
      return { ...s, status: "TRANSFER_PENDING", recipient: d.to, offerHash: leaf };
    case "TRANSFER_ACCEPT":
      if (d.from !== s.custodian) throw illegal("from is not the custodian");
      if (d.offer_hash !== null && d.offer_hash !== s.offerHash) throw illegal("offer_hash does not name the pending offer");
      return { ...endTransfer(s), custodian: ev.hospital, grants: [] };
    case "TRANSFER_REJECT":
      if (d.by !== s.recipient) throw illegal("rejected by another than the pending recipient");
      return endTransfer(s);
    case "TRANSFER_CANCEL":
      if (d.to !== s.recipient) throw illegal("cancels an offer to another than the pending recipient");
      return endTransfer(s);
    case "HOLD_PLACE":
      if (s.onHold && (s.holdByRegulator || !d.by_regulator)) throw illegal("the archive is already on hold");
      if (d.by_regulator && !isMember(ev.actor)) throw illegal("a regulator hold names a member address as actor");
      return { ...s, onHold: true, holdByRegulator: d.by_regulator };
    case "HOLD_RELEASE":
      if (!s.onHold) throw illegal("the archive is not on hold");
      if (s.holdByRegulator && !isMember(ev.actor)) throw illegal("a regulator hold is released by a member address");
      return { ...s, onHold: false, holdByRegulator: false };
    case "RETENTION_EXTEND": {
      const previous = parseTime(d.previous_deadline), next = parseTime(d.new_deadline);
      if (previous !== s.deadline) throw illegal("previous_deadline is not the current retention deadline");
      if (next <= previous) throw illegal("retention can be extended, never shortened");
      return { ...s, status: s.status === "DISPOSITION_REVIEW" ? "ARCHIVED" : s.status, deadline: next, proposal: null, proposedBy: null, approvedUntil: null };
    }
    case "DISPOSITION_START":
      if (s.deadline === null || time < s.deadline) throw illegal("the retention period has not ended");
      return { ...s, status: "DISPOSITION_REVIEW" };
    case "DISPOSITION_PROPOSE":
      return { ...s, proposal: d.proposal, proposedBy: ev.actor, approvedUntil: null };
    case "DISPOSITION_APPROVE": {
      if (s.proposal === null) throw illegal("the archive is on no disposition list");
      if (d.proposal !== s.proposal) throw illegal("the archive is on another list");
      if (s.approvedUntil !== null) throw illegal("the disposition is already approved");
      if (ev.actor === s.proposedBy) throw illegal("four eyes: the proposer cannot approve its own list");
      const until = parseTime(d.expires_at);
      if (until <= time) throw illegal("an approval must expire after it is given");
      return { ...s, approvedUntil: until };
    }
    case "DESTROY":
      if (s.approvedUntil === null) throw illegal("no approved disposition");
      if (time >= s.approvedUntil) throw illegal("the approval expired");
      return { ...s, status: "DESTROYED", grants: [], certificateHash: d.certificate_hash, destroyedEvent: leaf };
    case "FIXITY_CHECK": {
      const v = version(s, d.version);
      if (!v) throw illegal(`there is no version ${d.version}`);
      if (d.ok && d.ciphertext_sha256 !== v.cipher) throw illegal("a passing fixity check must report the recorded ciphertext hash");
      return s;
    }
    case "TIER_MOVE":
      if (d.from_tier !== s.tier) throw illegal(`the payload is in tier ${s.tier}`);
      if (d.to_tier === d.from_tier) throw illegal("a tier move must change the tier");
      return { ...s, tier: d.to_tier };
    case "TAG_BIND":
      if (s.tags.has(d.tag_hash)) throw illegal("the tag is already bound");
      return { ...s, tags: new Set([...s.tags, d.tag_hash]) };
    case "TAG_SCAN":
      if (!s.tags.has(d.tag_hash)) throw illegal("the scanned tag is not bound to this archive");
      return s;
    case "RECLASSIFY":
      if (d.previous_class !== s.recordClass) throw illegal("previous_class is not the archive's class");
      if (d.previous_sensitivity !== s.sensitivity) throw illegal("previous_sensitivity is not the archive's sensitivity");
      if (d.record_class === s.recordClass && d.sensitivity === s.sensitivity) throw illegal("a reclassification must change something");
      return { ...s, recordClass: d.record_class, sensitivity: d.sensitivity };
    case "BREAK_GLASS":
      if (isMember(ev.actor)) throw illegal("break-glass is opened by a member of staff (a pseudonym)");
      if (parseTime(d.expires_at) <= time) throw illegal("a break-glass window must end after it opens");
      return {
        ...s,
        breakGlass: [
          ...s.breakGlass.filter((w) => w.expiresAt > time),
          { hospital: ev.hospital, actor: ev.actor, purpose: d.purpose, reasonHash: d.reason_hash, openedAt: time, expiresAt: parseTime(d.expires_at) },
        ],
      };
    case "DERIVE":
      if (s.count !== 1) throw illegal("DERIVE must directly follow CREATE");
      if (d.commitment !== s.versions[s.versions.length - 1].commitment) throw illegal("commitment is not version 1's");
      if (d.source_archive === s.archiveId) throw illegal("an archive cannot be derived from itself");
      return s;
    case "REPLICA": {
      if (s.status === "DESTROYED" && d.action !== "dropped") throw illegal("after DESTROYED a replica can only be dropped");
      // `dropped` may name the custodian: a replica it held for the previous custodian before a transfer
      if (d.peer === s.custodian && d.action !== "dropped") throw illegal("a replica is held by another hospital than the custodian");
      const v = version(s, d.version);
      if (!v) throw illegal(`there is no version ${d.version}`);
      const key = `${d.peer}/${d.version}`;
      if (d.action === "placed") {
        if (s.replicas.has(key)) throw illegal("the peer already holds a replica of this version");
        if (d.ciphertext_sha256 !== v.cipher) throw illegal("a placed replica must have the recorded ciphertext hash");
        return { ...s, replicas: new Set([...s.replicas, key]) };
      }
      if (!s.replicas.has(key)) throw illegal("the peer holds no replica of this version");
      if (d.action === "verified" && d.ciphertext_sha256 !== v.cipher) throw illegal("a verified replica must have the recorded ciphertext hash");
      if (d.action === "dropped") { const r = new Set(s.replicas); r.delete(key); return { ...s, replicas: r }; }
      return s;
    }
    case "REPAIR": {
      const v = version(s, d.version);
      if (!v) throw illegal(`there is no version ${d.version}`);
      if (d.ciphertext_sha256 !== v.cipher) throw illegal("a repair must restore the recorded ciphertext hash");
      if (!s.replicas.has(`${d.source}/${d.version}`)) throw illegal("the source holds no replica of this version");
      return s;
    }
    default: // CONSENT_GRANT, CONSENT_REVOKE, ATTEST: never on an archive (the state rule refuses)
      throw illegal(`${ev.type} is never part of an archive's chain`);
  }
}

const CUSTODY_STATE = { ARCHIVED: 1, DISPOSITION_REVIEW: 1, TRANSFER_PENDING: 2, DESTROYED: 3 };
export const STATE_NAMES = ["NONE", "ARCHIVED", "TRANSFER_PENDING", "DESTROYED"];

/** §7.4: the custody record the final state implies (numbers for uint fields, lower-case hex). */
export function expectedCustody(s) {
  if (s.status === "CREATED") {
    return { state: 0, custodian: ZERO_ADDRESS, onHold: false, holdByRegulator: false, recipient: ZERO_ADDRESS, commitment: null, recordClass: null, deadline: null };
  }
  return {
    state: CUSTODY_STATE[s.status], custodian: s.custodian, onHold: s.onHold,
    holdByRegulator: s.onHold && s.holdByRegulator, recipient: s.recipient || ZERO_ADDRESS,
    commitment: s.commitment, recordClass: RECORD_CLASSES.indexOf(s.recordClass),
    deadline: s.deadline === null ? null : s.deadline / 1_000_000n, // whole seconds, fraction dropped
  };
}

export function recordClassCode(name) { return RECORD_CLASSES.indexOf(name); }
