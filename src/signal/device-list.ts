/**
 * A user's device list, signed by the primary device's identity key, so a party that pinned the primary's
 * identity can tell the devices the user linked from a device the transport slipped in (a "ghost").
 * Modelled on WhatsApp's signed device list (ADV, prefix 0x06 0x02), with Signal's addressing (device ids,
 * registration ids).
 *
 * ## Wire format (`GET /v1/devices/{address}` on the transport)
 *
 * ```json
 * { "account": "15551234567", "counter": 3,
 *   "devices": [ { "device_id": 1, "identity_key": "<base64, 33 bytes>", "registration_id": 4711 }, ... ],
 *   "signature": "<base64, 64 bytes>" }
 * ```
 *
 * `identity_key` is libsignal's `PublicKey.serialize()`; `signature` is the XEdDSA signature
 * (`PrivateKey.sign`) of the primary's identity key over the canonical bytes below. Device 1 is the primary;
 * the order of `devices` on the wire does not matter.
 *
 * ## Canonical bytes (what is signed)
 *
 * ```
 * 0x06 0x02                                  domain prefix: a device-list signature is never another signature
 * u16 BE  length of account | account UTF-8  the user's wa_id
 * u64 BE  counter                            grows with every list the primary signs
 * u8      number of devices
 * per device, by device_id ascending:
 *   u8 device_id | u32 BE registration_id | u8 length of identity key | identity key bytes
 * ```
 *
 * ## Verifying
 *
 * `verifyDeviceList(pinnedPrimary, json, { account, lastCounter })` accepts a list only when it is well formed,
 * names the expected account, carries a signature by the pinned primary identity over exactly these devices,
 * names the pinned key as device 1, and (given the counter last accepted) its counter did not go back. Anything
 * else throws a DeviceListError whose `reason` says which check failed.
 */
import { PublicKey, type PrivateKey } from '@signalapp/libsignal-client';
import { z } from 'zod';

/** The domain prefix of a signed device list (WhatsApp's ADV device-list signature prefix). */
export const DEVICE_LIST_PREFIX: Readonly<Uint8Array> = Uint8Array.of(0x06, 0x02);

/** The primary device's id: it signs the list and is always on it. */
export const PRIMARY_DEVICE_ID = 1;

/** Largest device id (libsignal's `ProtocolAddress` takes 1..127). */
export const MAX_DEVICE_ID = 127;

/** One device on a list. */
export interface DeviceListEntry {
  deviceId: number;
  identityKey: PublicKey;
  registrationId: number;
}

/** A user's devices as the primary states them. */
export interface DeviceList {
  /** The user's wa_id. */
  account: string;
  /** Grows with every list the primary signs; a verifier refuses one lower than the last it accepted. */
  counter: number;
  devices: DeviceListEntry[];
}

/** A list with the signature over its canonical bytes. */
export interface SignedDeviceList extends DeviceList {
  signature: Uint8Array<ArrayBuffer>;
}

/** `GET /v1/devices/{address}` answer (binary fields base64). */
export interface DeviceListWire {
  account: string;
  counter: number;
  devices: { device_id: number; identity_key: string; registration_id: number }[];
  signature: string;
}

/** Why a list was refused. */
export type DeviceListReason =
  | 'malformed'
  | 'missing_identity'
  | 'wrong_account'
  | 'bad_signature'
  | 'primary_mismatch'
  | 'counter_rollback';

/** A device list that cannot be encoded or is not accepted; `reason` names the check that failed. */
export class DeviceListError extends Error {
  override readonly name = 'DeviceListError';
  constructor(
    readonly reason: DeviceListReason,
    detail: string,
  ) {
    super(`device list refused (${reason}): ${detail}`);
  }
}

const b64 = z.string().refine((s) => s.length > 0 && s.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(s), 'not standard base64');
const wireSchema = z.object({
  account: z.string().min(1).max(256),
  counter: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  devices: z.array(z.object({
    device_id: z.number().int().min(1).max(MAX_DEVICE_ID),
    identity_key: b64.optional(),
    registration_id: z.number().int().min(1).max(0xffffffff),
  })).min(1).max(MAX_DEVICE_ID),
  signature: b64,
});

const toB64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
const fromB64 = (s: string): Uint8Array<ArrayBuffer> => new Uint8Array(Buffer.from(s, 'base64'));

/** Devices by id ascending; throws on a duplicate, a bad id or registration id, or a missing primary. */
function canonicalDevices(devices: readonly DeviceListEntry[]): DeviceListEntry[] {
  const sorted = [...devices].sort((a, b) => a.deviceId - b.deviceId);
  for (let i = 0; i < sorted.length; i++) {
    const d = sorted[i]!;
    if (!Number.isInteger(d.deviceId) || d.deviceId < 1 || d.deviceId > MAX_DEVICE_ID) throw new DeviceListError('malformed', `device id ${d.deviceId} is not in 1..${MAX_DEVICE_ID}`);
    if (i > 0 && sorted[i - 1]!.deviceId === d.deviceId) throw new DeviceListError('malformed', `device ${d.deviceId} is listed twice`);
    if (!Number.isInteger(d.registrationId) || d.registrationId < 1 || d.registrationId > 0xffffffff) throw new DeviceListError('malformed', `device ${d.deviceId}: registration id out of range`);
    if (!d.identityKey) throw new DeviceListError('missing_identity', `device ${d.deviceId} has no identity key`);
  }
  if (sorted[0]?.deviceId !== PRIMARY_DEVICE_ID) throw new DeviceListError('malformed', 'the primary (device 1) is not on the list');
  return sorted;
}

/**
 * The canonical bytes of a list (what the primary signs); the order of `devices` does not matter.
 * Throws DeviceListError for a list that cannot be a valid one (duplicate ids, no primary, ...).
 * @example const bytes = encodeDeviceList({ account: '15551234567', counter: 1, devices: [{ deviceId: 1, identityKey, registrationId }] })
 */
export function encodeDeviceList(list: DeviceList): Uint8Array<ArrayBuffer> {
  const account = Buffer.from(list.account, 'utf8');
  if (account.length === 0 || account.length > 0xffff) throw new DeviceListError('malformed', 'account must be 1 to 65535 bytes');
  if (!Number.isSafeInteger(list.counter) || list.counter < 0) throw new DeviceListError('malformed', 'counter must be a non-negative integer');
  const devices = canonicalDevices(list.devices);
  if (devices.length > 255) throw new DeviceListError('malformed', 'too many devices');
  const keys = devices.map((d) => d.identityKey.serialize());
  const size = DEVICE_LIST_PREFIX.length + 2 + account.length + 8 + 1 + keys.reduce((n, k) => n + 1 + 4 + 1 + k.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  out.set(DEVICE_LIST_PREFIX, at);
  at += DEVICE_LIST_PREFIX.length;
  view.setUint16(at, account.length);
  out.set(account, at + 2);
  at += 2 + account.length;
  view.setBigUint64(at, BigInt(list.counter));
  at += 8;
  out[at++] = devices.length;
  devices.forEach((d, i) => {
    const key = keys[i]!;
    out[at] = d.deviceId;
    view.setUint32(at + 1, d.registrationId);
    out[at + 5] = key.length;
    out.set(key, at + 6);
    at += 6 + key.length;
  });
  return out;
}

/**
 * The primary signs its list with its identity private key (XEdDSA over the canonical bytes).
 * @example const signed = signDeviceList(primaryIdentity.privateKey, { account, counter: 2, devices })
 */
export function signDeviceList(identityPrivateKey: PrivateKey, list: DeviceList): SignedDeviceList {
  const devices = canonicalDevices(list.devices);
  const canonical = { account: list.account, counter: list.counter, devices };
  return { ...canonical, signature: identityPrivateKey.sign(encodeDeviceList(canonical)) };
}

/** The JSON form of a signed list, devices by id ascending. */
export function deviceListToWire(s: SignedDeviceList): DeviceListWire {
  return {
    account: s.account,
    counter: s.counter,
    devices: [...s.devices].sort((a, b) => a.deviceId - b.deviceId).map((d) => ({
      device_id: d.deviceId, identity_key: toB64(d.identityKey.serialize()), registration_id: d.registrationId,
    })),
    signature: toB64(s.signature),
  };
}

/**
 * Parses the JSON form (signature not checked); throws DeviceListError `malformed`, or `missing_identity`
 * for a device listed without an identity key.
 */
export function parseDeviceList(json: unknown): SignedDeviceList {
  const r = wireSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new DeviceListError('malformed', `${issue?.path.map(String).join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
  }
  const w = r.data;
  const devices = w.devices.map((d, i): DeviceListEntry => {
    if (d.identity_key === undefined) throw new DeviceListError('missing_identity', `device ${d.device_id} has no identity key`);
    let identityKey: PublicKey;
    try {
      identityKey = PublicKey.deserialize(fromB64(d.identity_key));
    } catch {
      throw new DeviceListError('malformed', `devices.${i}.identity_key: not a public key`);
    }
    return { deviceId: d.device_id, identityKey, registrationId: d.registration_id };
  });
  return { account: w.account, counter: w.counter, devices: canonicalDevices(devices), signature: fromB64(w.signature) };
}

/**
 * Throws `counter_rollback` when a list's counter is lower than the last one accepted for the account (the
 * caller keeps that counter; the same counter again is the same list fetched twice).
 * @example checkDeviceListCounter(list, conversation.lastDeviceListCounter)
 */
export function checkDeviceListCounter(list: Pick<DeviceList, 'counter'>, lastAccepted: number | null | undefined): void {
  if (lastAccepted !== null && lastAccepted !== undefined && list.counter < lastAccepted) {
    throw new DeviceListError('counter_rollback', `counter ${list.counter} is lower than ${lastAccepted}, the last accepted`);
  }
}

/**
 * Accepts a device list (its JSON form or a parsed SignedDeviceList) only if it is signed by the pinned primary
 * identity, names `account`, lists the pinned key as device 1 and, with `lastCounter`, did not go back. Returns
 * the list; throws DeviceListError whose `reason` is `malformed`, `missing_identity`, `wrong_account`,
 * `bad_signature`, `primary_mismatch` or `counter_rollback`.
 * @example const list = verifyDeviceList(pinned, await (await fetch(`${platform}/v1/devices/${waId}`)).json(), { account: waId, lastCounter: 3 })
 */
export function verifyDeviceList(
  pinnedPrimary: PublicKey,
  signed: unknown,
  expect: { account: string; lastCounter?: number | null },
): DeviceList {
  const s = isSigned(signed) ? { ...signed, devices: canonicalDevices(signed.devices) } : parseDeviceList(signed);
  if (s.account !== expect.account) throw new DeviceListError('wrong_account', 'the list is for another account');
  if (!pinnedPrimary.verify(encodeDeviceList(s), s.signature)) {
    throw new DeviceListError('bad_signature', 'not signed by the pinned primary identity');
  }
  if (!s.devices[0]!.identityKey.equals(pinnedPrimary)) throw new DeviceListError('primary_mismatch', 'device 1 is not the pinned primary identity');
  checkDeviceListCounter(s, expect.lastCounter);
  return { account: s.account, counter: s.counter, devices: s.devices };
}

function isSigned(v: unknown): v is SignedDeviceList {
  return typeof v === 'object' && v !== null && (v as { signature?: unknown }).signature instanceof Uint8Array
    && Array.isArray((v as { devices?: unknown }).devices) && (v as { devices: unknown[] }).devices.every((d) => typeof d === 'object' && d !== null && 'deviceId' in d);
}
