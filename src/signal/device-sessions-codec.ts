/**
 * The stored form of a conversation's DeviceSessions state (`encodeDeviceSessions`; `decodeDeviceSessions`
 * also reads the single-device form of the host before linked devices, binary `u16 len | identity | record`
 * or JSON `{s, i}`, as device 1 with its identity pinned and no list accepted yet):
 * ```
 * 0x44 0x53 0x01                  magic "DS", version 1 (today's form starts 0x00 or '{': never confused)
 * u8 flags                        bit 0 pinned primary present, bit 1 list counter present
 * [u8 len | primary key] [u64 BE last accepted counter]
 * u8 devices, then per device by id ascending:
 *   u8 device_id | u8 flags       bit 0 listed, bit 1 session identity present, bit 2 session identity is the
 *                                 listed one (not repeated), bit 3 session record present, bit 4 last seq present
 *   [u32 BE registration_id | u8 len | listed identity] [u8 len | session identity] [u32 BE len | record]
 *   [u32 BE last seq given to the companion]
 * ```
 */
import type { ConversationKeys } from './conversation-crypto.ts';
import { MAX_DEVICE_ID, PRIMARY_DEVICE_ID } from './device-list.ts';
import { checkId, DeviceSessionError, emptyState, type DeviceSessionsState, type DeviceSnapshot } from './device-sessions.ts';

/** Today's single-device state as device 1: its identity pinned as the primary, no list accepted yet. */
export function fromConversationKeys(k: ConversationKeys): DeviceSessionsState {
  if (!k.session && !k.remoteIdentity) return emptyState();
  const device1 = { deviceId: PRIMARY_DEVICE_ID, session: k.session, identity: k.remoteIdentity, listed: null };
  return { primary: k.remoteIdentity, listCounter: null, devices: [device1] };
}

const MAGIC = [0x44, 0x53] as const;
const VERSION = 1;

/** Encodes the state in its stored form (before sealing): see the module comment. */
export function encodeDeviceSessions(s: DeviceSessionsState): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [Uint8Array.of(...MAGIC, VERSION, (s.primary ? 1 : 0) | (s.listCounter !== null ? 2 : 0))];
  const short = (b: Uint8Array): void => {
    if (b.length > 255) throw new DeviceSessionError('malformed_state', null, 'identity key too long');
    parts.push(Uint8Array.of(b.length), b);
  };
  const int = (n: number | bigint, size: 4 | 8): void => {
    const b = Buffer.alloc(size);
    if (size === 4) b.writeUInt32BE(Number(n));
    else b.writeBigUInt64BE(BigInt(n));
    parts.push(b);
  };
  if (s.primary) short(s.primary);
  if (s.listCounter !== null) int(s.listCounter, 8);
  const devices = [...s.devices].sort((x, y) => x.deviceId - y.deviceId);
  if (devices.length > MAX_DEVICE_ID) throw new DeviceSessionError('malformed_state', null, 'too many devices');
  parts.push(Uint8Array.of(devices.length));
  for (const d of devices) {
    checkId(d.deviceId);
    const sameIdentity = !!d.listed && !!d.identity && Buffer.compare(d.listed.identity, d.identity) === 0;
    parts.push(Uint8Array.of(d.deviceId, (d.listed ? 1 : 0) | (d.identity ? 2 : 0) | (sameIdentity ? 4 : 0) | (d.session ? 8 : 0) | (d.lastSeq ? 16 : 0)));
    if (d.listed) { int(d.listed.registrationId, 4); short(d.listed.identity); }
    if (d.identity && !sameIdentity) short(d.identity);
    if (d.session) { int(d.session.length, 4); parts.push(d.session); }
    if (d.lastSeq) int(d.lastSeq, 4);
  }
  return new Uint8Array(Buffer.concat(parts));
}

/**
 * Decodes a stored state (after opening): this module's form, or today's single-device form (binary or JSON)
 * as device 1. Throws DeviceSessionError `malformed_state` on bytes that are neither.
 */
export function decodeDeviceSessions(raw: Uint8Array): DeviceSessionsState {
  const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  if (buf.length === 0) return emptyState();
  if (buf[0] === 0x7b) {
    const j = JSON.parse(buf.toString()) as { s?: string; i?: string };
    return fromConversationKeys({
      session: j.s ? new Uint8Array(Buffer.from(j.s, 'base64')) : null,
      remoteIdentity: j.i ? new Uint8Array(Buffer.from(j.i, 'base64')) : null,
    });
  }
  if (buf[0] === 0x00) {
    if (buf.length < 2) throw new DeviceSessionError('malformed_state', null, 'truncated single-device state');
    const n = buf.readUInt16BE(0);
    if (buf.length < 2 + n) throw new DeviceSessionError('malformed_state', null, 'truncated single-device state');
    const session = buf.subarray(2 + n);
    return fromConversationKeys({ remoteIdentity: n ? new Uint8Array(buf.subarray(2, 2 + n)) : null, session: session.length ? new Uint8Array(session) : null });
  }
  if (buf[0] !== MAGIC[0] || buf[1] !== MAGIC[1]) throw new DeviceSessionError('malformed_state', null, 'not a device sessions state');
  if (buf[2] !== VERSION) throw new DeviceSessionError('malformed_state', null, `unknown version ${buf[2]}`);
  let at = 3;
  const need = (n: number): void => {
    if (at + n > buf.length) throw new DeviceSessionError('malformed_state', null, 'truncated');
  };
  const u8 = (): number => (need(1), buf[at++]!);
  const u32 = (): number => (need(4), (at += 4), buf.readUInt32BE(at - 4));
  const bytes = (n: number): Uint8Array => (need(n), (at += n), new Uint8Array(buf.subarray(at - n, at)));
  const flags = u8();
  const primary = flags & 1 ? bytes(u8()) : null;
  const listCounter = flags & 2 ? (need(8), (at += 8), Number(buf.readBigUInt64BE(at - 8))) : null;
  const devices: DeviceSnapshot[] = [];
  for (let n = u8(); n > 0; n--) {
    const deviceId = u8();
    const f = u8();
    const listed = f & 1 ? { registrationId: u32(), identity: bytes(u8()) } : null;
    const identity = f & 2 ? (f & 4 && listed ? listed.identity : bytes(u8())) : null;
    const session = f & 8 ? bytes(u32()) : null;
    const lastSeq = f & 16 ? u32() : 0;
    devices.push({ deviceId, session, identity, listed, ...(lastSeq ? { lastSeq } : {}) });
  }
  if (at !== buf.length) throw new DeviceSessionError('malformed_state', null, 'trailing bytes');
  return { primary, listCounter, devices };
}
