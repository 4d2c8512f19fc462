// A device without the agent, for tests that need events of exact
// content: it enrolls over ingest's gRPC with the tenant's enrollment token
// and sends a batch on the Connect stream as the agent does, then waits for
// ingest's ack. gRPC over Node's own HTTP/2 (h2c, as the test stack
// serves it), and the few protobuf messages it needs encoded here by hand
// from proto/mamori/agent/v1/*.proto (field numbers in the comments' order).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http2 from 'node:http2';

const ingest = process.env.MAMORI_INGEST_ADDR;
const SERVICE = '/mamori.agent.v1.AgentService';

// --- protobuf, the wire types used here: varint (0) and length-delimited (2).

function varint(n) {
  let v = BigInt(n);
  assert.ok(v >= 0n, 'negative varints are not used here');
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}

/** A message from `[field, value]` pairs: a number or bigint is a varint,
 * a boolean a varint 0/1, a string or Buffer length-delimited. Default
 * values (0, false, '') are left out, as proto3 encoders do. */
export function message(fields) {
  const parts = [];
  for (const [num, value] of fields) {
    if (value === undefined || value === 0 || value === 0n || value === false || value === '') continue;
    if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
      parts.push(varint(num << 3), varint(typeof value === 'boolean' ? 1 : value));
    } else {
      const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
      parts.push(varint((num << 3) | 2), varint(bytes.length), bytes);
    }
  }
  return Buffer.concat(parts);
}

/** A message's fields: number → last value (a bigint, or a Buffer). */
function decode(buf) {
  const fields = new Map();
  let at = 0;
  const read = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const b = buf[at++];
      assert.ok(b !== undefined, 'truncated protobuf');
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (at < buf.length) {
    const key = Number(read());
    const wire = key & 7;
    if (wire === 0) fields.set(key >> 3, read());
    else if (wire === 2) {
      const n = Number(read());
      fields.set(key >> 3, buf.subarray(at, at + n));
      at += n;
    } else throw new Error(`wire type ${wire} is not expected from ingest`);
  }
  return fields;
}

const str = (fields, n) => fields.get(n)?.toString('utf8') ?? '';

// --- gRPC: length-prefixed messages on an HTTP/2 stream.

function frame(msg) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/** Splits received bytes into whole gRPC messages; keeps the rest. */
function unframe(state, chunk) {
  state.buf = Buffer.concat([state.buf, chunk]);
  const out = [];
  while (state.buf.length >= 5) {
    const n = state.buf.readUInt32BE(1);
    if (state.buf.length < 5 + n) break;
    assert.equal(state.buf[0], 0, 'ingest answered compressed');
    out.push(state.buf.subarray(5, 5 + n));
    state.buf = state.buf.subarray(5 + n);
  }
  return out;
}

/** Opens a call and sends `first`; `onMessage` gets each answer until it
 * returns something: the call's result, or an Error it fails with. */
function rpc(method, credential, first, onMessage) {
  assert.ok(ingest, 'MAMORI_INGEST_ADDR (tests/run.sh sets it)');
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${ingest}`);
    const fail = (e) => {
      session.destroy();
      reject(e);
    };
    session.on('error', fail);
    const stream = session.request({
      ':method': 'POST',
      ':path': `${SERVICE}/${method}`,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...(credential ? { authorization: `Bearer ${credential}` } : {}),
    });
    const state = { buf: Buffer.alloc(0) };
    let result;
    const status = (headers) => {
      const code = headers['grpc-status'];
      if (code !== undefined && code !== '0' && result === undefined) {
        fail(new Error(`${method}: gRPC status ${code}: ${decodeURIComponent(headers['grpc-message'] ?? '')}`));
      }
    };
    stream.on('response', status);
    stream.on('trailers', status);
    stream.on('data', (chunk) => {
      for (const m of unframe(state, chunk)) {
        if (result !== undefined) return;
        const r = onMessage(decode(m));
        if (r === undefined) continue;
        result = r;
        stream.close();
        session.close();
        if (r instanceof Error) reject(r);
        else resolve(r);
      }
    });
    stream.on('error', fail);
    stream.on('end', () => {
      if (result === undefined) fail(new Error(`${method}: the stream ended without an answer`));
    });
    stream.write(frame(first));
    // A unary call ends its side; Connect stays open until the ack.
    if (method === 'Enroll') stream.end();
  });
}

/** Enrolls a machine named `hostname`: its device id and credential (the
 * device `sendEvents` takes). */
export async function enrollDevice(enrollmentToken, hostname) {
  const machine = `console-test-${crypto.randomUUID()}`;
  const facts = message([
    [1, machine],
    [2, hostname],
    [3, 'Debian GNU/Linux'],
    [4, '13'],
    [5, 'test'],
    [6, crypto.randomUUID()],
  ]);
  return rpc('Enroll', null, message([[1, enrollmentToken], [2, facts]]), (r) => ({
    id: str(r, 1),
    credential: str(r, 3),
  }));
}

/** A UUIDv7 (the agent's event ids) for the instant `ms`. */
function uuidv7(ms) {
  const b = crypto.randomBytes(16);
  b.writeUIntBE(ms, 0, 6);
  b[6] = 0x70 | (b[6] & 0x0f);
  b[8] = 0x80 | (b[8] & 0x3f);
  return b;
}

/** An `Event` that happened at `at` (a Date) with body field `kind` (its
 * number in `Event.kind`) holding the encoded `body`. */
export function event(at, kind, body) {
  const ms = at.getTime();
  return message([
    [1, uuidv7(ms)],
    [2, BigInt(ms) * 1000n],
    [kind, body],
  ]);
}

/** A `security_status` event (`SecurityStatusEvent`, field names as in
 * the proto). */
export function securityStatusEvent(at, s) {
  const body = message([
    [1, s.patch_level],
    [2, s.pending_updates],
    [3, s.pending_security_updates],
    [4, s.antivirus_product],
    [5, s.antivirus_enabled],
    [6, s.antivirus_signature_version],
    [7, s.antivirus_up_to_date],
    [8, s.antivirus_signature_age_days],
    [9, s.firewall_active],
    [10, s.firewall],
    [11, s.disk_encrypted],
    [12, s.disk_encryption],
  ]);
  return event(at, 20, body);
}

/** Sends `events` (encoded) as one batch from `device` and waits for the
 * ack; a refused batch fails with ingest's reason. */
export async function sendEvents(device, events) {
  device.sequence = (device.sequence ?? 0) + 1;
  const batch = message([[1, device.sequence], ...events.map((e) => [2, e]), [4, device.id]]);
  const accepted = await rpc('Connect', device.credential, message([[1, batch]]), (m) => {
    if (m.has(2)) return new Error(`batch refused: ${str(decode(m.get(2)), 2)}`);
    if (m.has(1)) return Number(decode(m.get(1)).get(2) ?? 0n);
    return undefined; // a policy update
  });
  assert.equal(accepted, events.length, 'every event accepted');
}
