import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { describe, expect, it } from 'vitest';
import {
  checkDeviceListCounter,
  DeviceListError,
  deviceListToWire,
  encodeDeviceList,
  parseDeviceList,
  signDeviceList,
  verifyDeviceList,
  type DeviceList,
  type DeviceListReason,
} from '../../src/signal/device-list.ts';

const ACCOUNT = '15557770001';
const primary = IdentityKeyPair.generate();
const companion = IdentityKeyPair.generate();
const stranger = IdentityKeyPair.generate();

const list = (counter = 2, account = ACCOUNT): DeviceList => ({
  account,
  counter,
  devices: [
    { deviceId: 2, identityKey: companion.publicKey, registrationId: 222 },
    { deviceId: 1, identityKey: primary.publicKey, registrationId: 111 },
  ],
});

/** Asserts `fn` throws a DeviceListError with this reason. */
function refusedWith(reason: DeviceListReason, fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(DeviceListError);
  expect((caught as DeviceListError).reason).toBe(reason);
  expect((caught as DeviceListError).message).toMatch(new RegExp(`^device list refused \\(${reason}\\): `));
}

describe('signed device list', () => {
  it('encodes canonically: prefix 0x06 0x02, account, counter, devices by id whatever their order', () => {
    const bytes = encodeDeviceList(list(258));
    const reversed = encodeDeviceList({ ...list(258), devices: [...list().devices].reverse() });
    expect(Buffer.from(reversed).equals(Buffer.from(bytes))).toBe(true);
    const account = Buffer.from(ACCOUNT);
    expect([...bytes.subarray(0, 4)]).toEqual([0x06, 0x02, 0, account.length]);
    expect(Buffer.from(bytes.subarray(4, 4 + account.length)).toString()).toBe(ACCOUNT);
    let at = 4 + account.length;
    expect([...bytes.subarray(at, at + 8)]).toEqual([0, 0, 0, 0, 0, 0, 1, 2]);
    at += 8;
    expect(bytes[at]).toBe(2);
    // Device 1 first: id, registration id (u32 BE), key length, the 33-byte key.
    expect([...bytes.subarray(at + 1, at + 7)]).toEqual([1, 0, 0, 0, 111, 33]);
    expect(Buffer.from(bytes.subarray(at + 7, at + 40)).equals(Buffer.from(primary.publicKey.serialize()))).toBe(true);
    expect(bytes[at + 40]).toBe(2);
    expect(bytes.length).toBe(at + 1 + 2 * (6 + 33));
    // Any change of a signed field changes the bytes.
    expect(Buffer.from(encodeDeviceList(list(259))).equals(Buffer.from(bytes))).toBe(false);
    const otherReg = { ...list(258), devices: [list().devices[1]!, { ...list().devices[0]!, registrationId: 223 }] };
    expect(Buffer.from(encodeDeviceList(otherReg)).equals(Buffer.from(bytes))).toBe(false);
  });

  it('verifies a list the pinned primary signed, from its JSON form', () => {
    const wire = JSON.parse(JSON.stringify(deviceListToWire(signDeviceList(primary.privateKey, list()))));
    expect(wire.devices.map((d: { device_id: number }) => d.device_id)).toEqual([1, 2]);
    expect(Buffer.from(wire.signature, 'base64')).toHaveLength(64);
    const ok = verifyDeviceList(primary.publicKey, wire, { account: ACCOUNT, lastCounter: 2 });
    expect(ok.counter).toBe(2);
    expect(ok.devices.map((d) => [d.deviceId, d.registrationId, d.identityKey.equals(d.deviceId === 1 ? primary.publicKey : companion.publicKey)])).toEqual([[1, 111, true], [2, 222, true]]);
    // The parsed form verifies too.
    expect(verifyDeviceList(primary.publicKey, parseDeviceList(wire), { account: ACCOUNT }).counter).toBe(2);
  });

  it('refuses a device added after signing, a stranger\'s signature and a primary that is not the pinned one', () => {
    const signed = signDeviceList(primary.privateKey, list());
    const ghost = { deviceId: 3, identityKey: stranger.publicKey, registrationId: 333 };
    refusedWith('bad_signature', () => verifyDeviceList(primary.publicKey, deviceListToWire({ ...signed, devices: [...signed.devices, ghost] }), { account: ACCOUNT }));
    refusedWith('bad_signature', () => verifyDeviceList(primary.publicKey, deviceListToWire({ ...signed, counter: 3 }), { account: ACCOUNT }));
    const byStranger = signDeviceList(stranger.privateKey, { ...list(), devices: [...list().devices, ghost] });
    refusedWith('bad_signature', () => verifyDeviceList(primary.publicKey, deviceListToWire(byStranger), { account: ACCOUNT }));
    // Signed by the pinned key but naming another key as device 1.
    const swapped = signDeviceList(primary.privateKey, { ...list(), devices: [{ deviceId: 1, identityKey: stranger.publicKey, registrationId: 111 }] });
    refusedWith('primary_mismatch', () => verifyDeviceList(primary.publicKey, deviceListToWire(swapped), { account: ACCOUNT }));
  });

  it('refuses another account\'s list, a device without an identity key and malformed lists', () => {
    const wire = deviceListToWire(signDeviceList(primary.privateKey, list()));
    refusedWith('wrong_account', () => verifyDeviceList(primary.publicKey, wire, { account: '15557770002' }));
    const noKey = { ...wire, devices: [wire.devices[0], { device_id: 2, registration_id: 222 }] };
    refusedWith('missing_identity', () => verifyDeviceList(primary.publicKey, noKey, { account: ACCOUNT }));
    refusedWith('malformed', () => verifyDeviceList(primary.publicKey, { ...wire, devices: [wire.devices[0], wire.devices[0]] }, { account: ACCOUNT }));
    refusedWith('malformed', () => verifyDeviceList(primary.publicKey, { ...wire, devices: [wire.devices[1]] }, { account: ACCOUNT }));
    refusedWith('malformed', () => verifyDeviceList(primary.publicKey, { ...wire, signature: 'not base64!' }, { account: ACCOUNT }));
    refusedWith('malformed', () => verifyDeviceList(primary.publicKey, { ...wire, counter: -1 }, { account: ACCOUNT }));
    refusedWith('malformed', () => verifyDeviceList(primary.publicKey, { ...wire, devices: [{ ...wire.devices[0]!, identity_key: 'AAAA' }] }, { account: ACCOUNT }));
    refusedWith('malformed', () => verifyDeviceList(primary.publicKey, null, { account: ACCOUNT }));
    refusedWith('malformed', () => encodeDeviceList({ ...list(), devices: [{ deviceId: 128, identityKey: primary.publicKey, registrationId: 1 }] }));
  });

  it('refuses a counter lower than the last accepted, and accepts the same one again', () => {
    const old = deviceListToWire(signDeviceList(primary.privateKey, list(4)));
    refusedWith('counter_rollback', () => verifyDeviceList(primary.publicKey, old, { account: ACCOUNT, lastCounter: 5 }));
    refusedWith('counter_rollback', () => checkDeviceListCounter({ counter: 4 }, 5));
    expect(() => checkDeviceListCounter({ counter: 5 }, 5)).not.toThrow();
    expect(() => checkDeviceListCounter({ counter: 4 }, null)).not.toThrow();
    expect(verifyDeviceList(primary.publicKey, old, { account: ACCOUNT, lastCounter: 4 }).counter).toBe(4);
  });
});
