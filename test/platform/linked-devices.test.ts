/**
 * Linked devices on the transport: the test plays the router with libsignal directly (fetch the signed list,
 * verify it against the pinned primary, fetch a bundle per device, encrypt once per device, hand the message
 * over in one request) against the platform's HTTP API.
 */
import { PublicKey } from '@signalapp/libsignal-client';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { QueuedEvent } from '../../src/platform/events.ts';
import { buildPlatform, type Platform } from '../../src/platform/server.ts';
import { bundleFromWire } from '../../src/signal/bundle.ts';
import { DeviceListError, verifyDeviceList, type DeviceList, type DeviceListReason } from '../../src/signal/device-list.ts';
import { call, drainEvents, quietPlatform, registerDevice, TestBusiness } from './helpers.ts';

const BIZ = '15550700700';
let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

/** The phone's real identity (as the phone itself knows it): what the router pins on first contact. */
async function pinPrimary(waId: string): Promise<PublicKey> {
  const phone = await call(p.app, 'GET', `/sim/devices/${waId}`);
  return PublicKey.deserialize(new Uint8Array(Buffer.from(phone.json.identity_key, 'base64')));
}

/** Fetches the list the transport serves and verifies it the router's way. */
async function verifiedList(waId: string, pinned: PublicKey, lastCounter?: number): Promise<DeviceList> {
  const r = await call(p.app, 'GET', `/v1/devices/${waId}`);
  expect(r.status).toBe(200);
  return verifyDeviceList(pinned, r.json, { account: waId, lastCounter: lastCounter ?? null });
}

/** The reason the served list is refused for. */
async function refusal(waId: string, pinned: PublicKey, lastCounter?: number): Promise<DeviceListReason> {
  try {
    await verifiedList(waId, pinned, lastCounter);
  } catch (err) {
    expect(err).toBeInstanceOf(DeviceListError);
    return (err as DeviceListError).reason;
  }
  throw new Error('the served list verified');
}

async function link(waId: string): Promise<number> {
  const r = await call(p.app, 'POST', `/sim/devices/${waId}/linked`);
  expect(r.status).toBe(200);
  return r.json.device_id;
}

async function view(waId: string, device: number): Promise<{ id: string; text: { body: string }; arrivals: number }[]> {
  const r = await call(p.app, 'GET', `/sim/devices/${waId}/messages?device=${device}`);
  expect(r.status).toBe(200);
  return r.json.messages;
}

const byDevice = (events: QueuedEvent[], kind: string): Map<number, QueuedEvent[]> => {
  const out = new Map<number, QueuedEvent[]>();
  for (const e of events) {
    if (e.kind !== kind || !('device_id' in e)) continue;
    out.set(e.device_id, [...(out.get(e.device_id) ?? []), e]);
  }
  return out;
};

describe('linked devices on the transport', () => {
  it('fans a message out to three devices from a verified list; each device shows every message once, in order', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001001', { prekeys: 10 });
    const pinned = await pinPrimary(waId);
    expect(await link(waId)).toBe(2);
    expect(await link(waId)).toBe(3);

    const list = await verifiedList(waId, pinned);
    expect(list.counter).toBe(3); // registration, then one signature per link
    expect(list.devices.map((d) => d.deviceId)).toEqual([1, 2, 3]);
    const biz = new TestBusiness(BIZ);
    for (const d of list.devices) {
      const r = await call(p.app, 'GET', `/v1/keys/${waId}/${d.deviceId}`);
      expect(r.status).toBe(200);
      const bundle = bundleFromWire(r.json);
      // The bundle is the listed device's: same id, identity and registration id.
      expect([bundle.deviceId(), bundle.registrationId(), bundle.identityKey().equals(d.identityKey)]).toEqual([d.deviceId, d.registrationId, true]);
      await biz.startSession(p.app, waId, d.deviceId);
      // Each device's one-time keys are its own, each handed out once: two bundles taken from each device.
      expect((await call(p.app, 'GET', `/v1/keys/${waId}/${d.deviceId}/count`)).json).toEqual({ prekeys: 8, kyber_prekeys: 8 });
      expect((await call(p.app, 'GET', `/v1/keys/${waId}/${d.deviceId}`)).json.prekey.id).not.toBe(r.json.prekey.id);
    }
    // The companions' identities differ from the phone's and from each other.
    expect(new Set(list.devices.map((d) => Buffer.from(d.identityKey.serialize()).toString('hex'))).size).toBe(3);

    const m1 = await biz.message(waId, 'one', [1, 2, 3]);
    expect(await call(p.app, 'POST', '/v1/messages', m1)).toEqual({ status: 202, json: { accepted: 1 } });
    const m2 = await biz.message(waId, 'two', [3, 1, 2]);
    const m3 = await biz.message(waId, 'three', [1, 2, 3]);
    expect(await call(p.app, 'POST', '/v1/messages', { messages: [m2, m3] })).toEqual({ status: 202, json: { accepted: 2, rejected: [] } });
    await p.state.settled();

    for (const device of [1, 2, 3]) {
      expect((await view(waId, device)).map((m) => [m.id, m.text.body, m.arrivals])).toEqual([[m1.id, 'one', 1], [m2.id, 'two', 1], [m3.id, 'three', 1]]);
    }
    expect(await view(waId, 1)).toEqual(await call(p.app, 'GET', `/sim/devices/${waId}/messages`).then((r) => r.json.messages));

    // Every device acknowledged every message, naming itself, and acknowledged its session once: the business
    // decrypts each ack with that device's session, so a wrong device_id would fail here.
    const events = await drainEvents(p.app);
    const receipts = byDevice(events, 'receipt');
    const acks = byDevice(events, 'envelope');
    for (const device of [1, 2, 3]) {
      expect(receipts.get(device)!.map((e) => e.kind === 'receipt' && [e.status, e.id, e.from, e.to])).toEqual(
        [m1, m2, m3].map((m) => ['delivered', m.id, waId, BIZ]),
      );
      expect(acks.get(device)).toHaveLength(1);
      expect(await biz.decrypt(acks.get(device)![0] as { from: string; device_id: number; type: number; body: string })).toEqual({ v: 1, kind: 'session_ack' });
    }
  });

  it('refuses envelopes that do not match the devices (410 stale first, then 409 missing/extra) and delivers nothing', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001002');
    const pinned = await pinPrimary(waId);
    await link(waId);
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId, 1);
    await biz.startSession(p.app, waId, 2);
    const shownNothing = async (): Promise<void> => {
      await p.state.settled();
      for (const device of [1, 2]) {
        expect(await view(waId, device)).toEqual([]);
        expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats?device=${device}`)).json.decrypted).toBe(0);
      }
    };

    // One message, tried again after each refusal as a router would (same id, same seq per device).
    const first = await biz.message(waId, 'first', [1]);
    expect(await call(p.app, 'POST', '/v1/messages', first)).toEqual({ status: 409, json: { error: 'mismatched_devices', missing: [2], extra: [] } });
    const tooMany = await biz.message(waId, 'first', [1, 2], { id: first.id });
    tooMany.envelopes.push({ ...tooMany.envelopes[1]!, device_id: 5 });
    expect(await call(p.app, 'POST', '/v1/messages', tooMany)).toEqual({ status: 409, json: { error: 'mismatched_devices', missing: [], extra: [5] } });
    await shownNothing();

    // Unlinked: device 2 is extra now; the list no longer has it and its keys are gone.
    expect(await call(p.app, 'DELETE', `/sim/devices/${waId}/linked/2`)).toEqual({ status: 200, json: { success: true } });
    expect((await verifiedList(waId, pinned, 2)).devices.map((d) => d.deviceId)).toEqual([1]);
    expect(await call(p.app, 'GET', `/v1/keys/${waId}/2`)).toEqual({ status: 404, json: { error: 'unknown_device' } });
    const toUnlinked = await biz.message(waId, 'first', [1, 2], { id: first.id });
    expect(await call(p.app, 'POST', '/v1/messages', toUnlinked)).toEqual({ status: 409, json: { error: 'mismatched_devices', missing: [], extra: [2] } });
    await shownNothing();

    // Linked again: a new id (never reused), missing until the sender has a session with it.
    expect(await link(waId)).toBe(3);
    expect(await call(p.app, 'POST', '/v1/messages', await biz.message(waId, 'first', [1], { id: first.id }))).toEqual({
      status: 409, json: { error: 'mismatched_devices', missing: [3], extra: [] },
    });
    await biz.startSession(p.app, waId, 3);
    expect(await call(p.app, 'POST', '/v1/messages', await biz.message(waId, 'first', [1, 3], { id: first.id }))).toEqual({ status: 202, json: { accepted: 1 } });
    await p.state.settled();
    expect((await view(waId, 1)).map((m) => [m.text.body, m.arrivals])).toEqual([['first', 1]]);

    // Device 3 re-registers under its id: a new registration id, so the sender's session is stale (410), checked
    // before the device set (device 4, just linked, is missing too).
    const before = (await call(p.app, 'GET', `/sim/devices/${waId}`)).json.devices.find((d: { device_id: number }) => d.device_id === 3);
    let after = before;
    let reinstalls = 0;
    // A fresh registration id is random (14 bits): reinstall again in the rare case it came out the same.
    while (reinstalls < 5 && after.registration_id === before.registration_id) {
      after = (await call(p.app, 'POST', `/sim/devices/${waId}/linked/3/reinstall`)).json;
      reinstalls++;
    }
    expect(after.registration_id).not.toBe(before.registration_id);
    expect(await link(waId)).toBe(4);
    const stale = await biz.message(waId, 'second', [1, 3]);
    expect(await call(p.app, 'POST', '/v1/messages', stale)).toEqual({ status: 410, json: { error: 'stale_devices', stale: [3] } });
    // In a batch, per message: one stale, one to nobody, none taken.
    const nobody = { ...(await biz.message(waId, 'x', [1])), to: '15557009999' };
    expect(await call(p.app, 'POST', '/v1/messages', { messages: [stale, nobody] })).toEqual({
      status: 202, json: { accepted: 0, rejected: [{ id: stale.id, error: 'stale_devices', stale: [3] }, { id: nobody.id, error: 'unknown_recipient' }] },
    });
    expect(await call(p.app, 'POST', '/v1/messages', nobody)).toEqual({ status: 404, json: { error: 'unknown_recipient', to: '15557009999' } });
    await p.state.settled();
    expect((await view(waId, 1)).map((m) => m.text.body)).toEqual(['first']);
    expect((await view(waId, 3)).map((m) => m.text.body)).toEqual(['first']);

    // What a Signal client does: new sessions for the stale and the missing device, then the message again. Device
    // 3's new identity is trusted because the primary signed it into a newer list.
    const relisted = await verifiedList(waId, pinned, 3);
    expect(relisted.counter).toBe(5 + reinstalls); // registration, link 2, unlink 2, link 3, reinstall(s) of 3, link 4
    const newIdentity = relisted.devices.find((d) => d.deviceId === 3)!;
    expect([newIdentity.registrationId, Buffer.from(newIdentity.identityKey.serialize()).toString('base64')]).toEqual([after.registration_id, after.identity_key]);
    await biz.stores.identities.saveIdentity(biz.device(waId, 3), newIdentity.identityKey);
    await biz.startSession(p.app, waId, 3);
    await biz.startSession(p.app, waId, 4);
    expect(await call(p.app, 'POST', '/v1/messages', await biz.message(waId, 'second', [1, 3, 4], { id: stale.id }))).toEqual({ status: 202, json: { accepted: 1 } });
    await p.state.settled();
    for (const device of [1, 3]) expect((await view(waId, device)).map((m) => [m.text.body, m.arrivals])).toEqual([['first', 1], ['second', 1]]);
    expect((await view(waId, 4)).map((m) => m.text.body)).toEqual(['second']); // linked later: only what came after
    // The unlinked companion's view is still readable, and it got nothing after it was unlinked.
    expect(await view(waId, 2)).toEqual([]);
    expect((await verifiedList(waId, pinned, 3)).devices.map((d) => d.deviceId)).toEqual([1, 3, 4]);
  });

  it('allows four companions, refuses a fifth with a reason, and never reuses a device id', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001003', { prekeys: 1 });
    for (const id of [2, 3, 4, 5]) expect(await link(waId)).toBe(id);
    const fifth = await call(p.app, 'POST', `/sim/devices/${waId}/linked`);
    expect(fifth.status).toBe(400);
    expect(fifth.json.error).toMatch(/^linked: the account already has 4 linked companions/);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}`)).json.devices.map((d: { device_id: number; kind: string }) => [d.device_id, d.kind])).toEqual(
      [[1, 'primary'], [2, 'companion'], [3, 'companion'], [4, 'companion'], [5, 'companion']],
    );
    expect(await call(p.app, 'DELETE', `/sim/devices/${waId}/linked/1`)).toEqual({ status: 400, json: { error: expect.stringMatching(/^device_id: 1 is the phone/) } });
    expect(await call(p.app, 'DELETE', `/sim/devices/${waId}/linked/9`)).toEqual({ status: 404, json: { error: 'unknown_linked_device' } });
    expect((await call(p.app, 'DELETE', `/sim/devices/${waId}/linked/3`)).status).toBe(200);
    expect(await call(p.app, 'DELETE', `/sim/devices/${waId}/linked/3`)).toEqual({ status: 404, json: { error: 'unknown_linked_device' } });
    expect(await link(waId)).toBe(6);
    expect((await call(p.app, 'POST', `/sim/devices/${waId}/linked`)).status).toBe(400);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}`)).json.device_list_counter).toBe(7); // 1 + 4 links + unlink + link
  });

  it('re-signs the list with the new identity when the phone is reinstalled, and logs its companions out', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001009');
    const oldPin = await pinPrimary(waId);
    await link(waId);
    expect((await verifiedList(waId, oldPin)).counter).toBe(2);
    await registerDevice(p.app, '+15557001009', { reinstall: true });
    const newPin = await pinPrimary(waId);
    expect(newPin.equals(oldPin)).toBe(false);
    // A router pinned to the old identity refuses the new list (an identity change it must handle first).
    expect(await refusal(waId, oldPin, 2)).toBe('bad_signature');
    const list = await verifiedList(waId, newPin, 2);
    expect([list.counter, list.devices.map((d) => d.deviceId)]).toEqual([3, [1]]);
    expect(await call(p.app, 'GET', `/v1/keys/${waId}/2`)).toEqual({ status: 404, json: { error: 'unknown_device' } });
    expect(await link(waId)).toBe(3);
  });

  it('serves a ghost device the transport added on its own, and forged or rolled-back lists, none of which verify', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001004');
    const pinned = await pinPrimary(waId);
    expect((await call(p.app, 'POST', `/sim/devices/${waId}/device-list-fault`, { kind: 'rollback' })).json.error).toMatch(/^kind: rollback needs an earlier list/);
    await link(waId);
    const honest = await verifiedList(waId, pinned);
    expect(honest.counter).toBe(2);

    // Forged: the transport's own list (counter + 1) with its own signature.
    expect(await call(p.app, 'POST', `/sim/devices/${waId}/device-list-fault`, { kind: 'forged' })).toEqual({ status: 200, json: { kind: 'forged' } });
    expect((await call(p.app, 'GET', `/v1/devices/${waId}`)).json.counter).toBe(3);
    expect(await refusal(waId, pinned)).toBe('bad_signature');
    // Rolled back: the primary's earlier list, genuinely signed, but its counter went back.
    await call(p.app, 'POST', `/sim/devices/${waId}/device-list-fault`, { kind: 'rollback' });
    expect((await verifiedList(waId, pinned)).counter).toBe(1);
    expect(await refusal(waId, pinned, honest.counter)).toBe('counter_rollback');
    await call(p.app, 'POST', `/sim/devices/${waId}/device-list-fault`, { kind: null });
    expect((await verifiedList(waId, pinned, honest.counter)).counter).toBe(2);

    // A ghost: keys the transport made, on the list it serves under the primary's old signature.
    const ghost = await call(p.app, 'POST', `/sim/devices/${waId}/ghost`);
    expect(ghost).toEqual({ status: 200, json: { device_id: 3 } });
    const served = (await call(p.app, 'GET', `/v1/devices/${waId}`)).json;
    expect(served.devices.map((d: { device_id: number }) => d.device_id)).toEqual([1, 2, 3]);
    expect(served.counter).toBe(2);
    expect(await refusal(waId, pinned, honest.counter)).toBe('bad_signature');
    expect(bundleFromWire((await call(p.app, 'GET', `/v1/keys/${waId}/3`)).json).deviceId()).toBe(3);
    // The transport believes its own list: a message to the signed devices only is missing the ghost.
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId, 1);
    await biz.startSession(p.app, waId, 2);
    expect(await call(p.app, 'POST', '/v1/messages', await biz.message(waId, 'x', [1, 2]))).toEqual({ status: 409, json: { error: 'mismatched_devices', missing: [3], extra: [] } });
    expect((await call(p.app, 'GET', `/sim/devices/${waId}`)).json.devices.at(-1)).toMatchObject({ device_id: 3, kind: 'ghost' });
    // The primary's next signature (a link) still leaves the ghost out, so what is served still fails.
    expect(await link(waId)).toBe(4);
    expect(await refusal(waId, pinned, honest.counter)).toBe('bad_signature');
    expect((await call(p.app, 'POST', `/sim/devices/${waId}/device-list-fault`, { kind: 'other' })).status).toBe(400);
  });

  it('names the device a user\'s message and receipts come from; reading on a companion sends its read receipt', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001005');
    await link(waId);
    const biz = new TestBusiness(BIZ);
    expect((await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload())).status).toBe(200);

    // The companion writes first: its own session with the business (a PreKey message), named by device_id.
    const sent = await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: 'from my laptop', device: 2 });
    expect(sent.status).toBe(200);
    await p.state.settled();
    const [fromCompanion] = await drainEvents(p.app);
    expect(fromCompanion).toMatchObject({ kind: 'envelope', id: sent.json.id, from: waId, device_id: 2, to: BIZ, type: 3 });
    expect(await biz.decrypt(fromCompanion as { from: string; device_id: number; type: number; body: string })).toMatchObject({
      kind: 'message', id: sent.json.id, seq: 1, from: waId, message: { text: { body: 'from my laptop' } },
    });
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/sent?device=2`)).json.messages).toMatchObject([{ id: sent.json.id, to: BIZ }]);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/sent`)).json.messages).toEqual([]);

    // The phone has no session yet: it makes its own (device 1, seq 1 of its own).
    const fromPhone = await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: 'from my phone' });
    await p.state.settled();
    const [phoneEvent] = await drainEvents(p.app);
    expect(phoneEvent).toMatchObject({ kind: 'envelope', id: fromPhone.json.id, device_id: 1, type: 3 });
    expect(await biz.decrypt(phoneEvent as { from: string; device_id: number; type: number; body: string })).toMatchObject({ seq: 1 });

    // The business answers both devices on the sessions they opened.
    const answer = await biz.message(waId, 'hello both', [1, 2]);
    expect(await call(p.app, 'POST', '/v1/messages', answer)).toEqual({ status: 202, json: { accepted: 1 } });
    await p.state.settled();
    const delivered = await drainEvents(p.app);
    expect(delivered.map((e) => e.kind === 'receipt' && [e.status, e.id, e.device_id]).sort()).toEqual([['delivered', answer.id, 1], ['delivered', answer.id, 2]]);

    expect(await call(p.app, 'POST', `/sim/devices/${waId}/read`, { message_id: answer.id, device: 2 })).toEqual({ status: 200, json: { success: true } });
    await p.state.settled();
    expect(await drainEvents(p.app)).toMatchObject([{ kind: 'receipt', status: 'read', id: answer.id, from: waId, device_id: 2, to: BIZ }]);
    expect(await call(p.app, 'POST', `/sim/devices/${waId}/read`, { message_id: answer.id, device: 3 })).toEqual({ status: 404, json: { error: 'unknown_device' } });

    // `POST /v1/envelopes` (today's router) still reaches the phone only, with device_id 1 on its receipt.
    const single = await biz.text(waId, 'phone only', { device: 1 });
    expect(await call(p.app, 'POST', '/v1/envelopes', single)).toEqual({ status: 202, json: { accepted: 1 } });
    await p.state.settled();
    expect((await view(waId, 1)).map((m) => m.text.body)).toEqual(['hello both', 'phone only']);
    expect((await view(waId, 2)).map((m) => m.text.body)).toEqual(['hello both']);
    expect(await drainEvents(p.app)).toMatchObject([{ kind: 'receipt', status: 'delivered', id: single.id, device_id: 1 }]);
  });

  it('applies transport faults per device envelope', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001006');
    await link(waId);
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId, 1);
    await biz.startSession(p.app, waId, 2);
    await call(p.app, 'POST', '/sim/faults', { drop: 1 });
    expect((await call(p.app, 'POST', '/v1/messages', await biz.message(waId, 'lost', [1, 2]))).status).toBe(202);
    await p.state.settled();
    expect((await call(p.app, 'GET', '/sim/faults')).json.dropped).toBe(2);

    await call(p.app, 'POST', '/sim/faults', { duplicate: 1 });
    const twice = await biz.message(waId, 'twice', [1, 2]);
    await call(p.app, 'POST', '/v1/messages', twice);
    await p.state.settled();
    for (const device of [1, 2]) {
      // seq 1 was lost on each device: the message waits for it, held, after arriving twice.
      expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats?device=${device}`)).json).toMatchObject({ decrypted: 1, duplicates: 1, held: 1, key_reuse: 0 });
    }
  });

  it('refuses bad input on the new routes with a one-line reason', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557001007');
    await link(waId);
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId, 1);
    await biz.startSession(p.app, waId, 2);
    const good = await biz.message(waId, 'x', [1, 2]);
    const bad = async (url: string, body: unknown, reason: RegExp): Promise<void> => {
      const r = await call(p.app, 'POST', url, body);
      expect(r.status).toBe(400);
      expect(r.json.error).toMatch(reason);
    };
    await bad('/v1/messages', { ...good, envelopes: [good.envelopes[0], good.envelopes[0]] }, /^envelopes: device_id 1 appears twice$/);
    await bad('/v1/messages', { ...good, envelopes: [] }, /^envelopes: /);
    await bad('/v1/messages', { ...good, envelopes: [{ ...good.envelopes[0], type: 8 }] }, /^envelopes\.0\.type: type must be 2/);
    await bad('/v1/messages', { ...good, envelopes: [{ ...good.envelopes[0], device_id: 0 }] }, /^envelopes\.0\.device_id: /);
    await bad('/v1/messages', { ...good, envelopes: [{ ...good.envelopes[0], registration_id: undefined }] }, /^envelopes\.0\.registration_id: /);
    await bad('/v1/messages', { messages: [good, { ...good, to: 'a/b' }] }, /^messages\.1\.to: /);
    await bad(`/sim/devices/${waId}/linked`, { prekeys: -1 }, /^prekeys: /);
    await bad(`/sim/devices/${waId}/messages`, { to: BIZ, text: 'x', device: 200 }, /^device: /);
    for (const url of [`/sim/devices/${waId}/messages?device=0`, `/sim/devices/${waId}/messages?device=two`, `/v1/keys/${waId}/abc`]) {
      const r = await call(p.app, 'GET', url);
      expect(r.status).toBe(400);
      expect(r.json.error).toMatch(/^(device|device_id): /);
    }
    expect(await call(p.app, 'GET', `/sim/devices/${waId}/messages?device=9`)).toEqual({ status: 404, json: { error: 'unknown_device' } });
    expect(await call(p.app, 'GET', '/v1/devices/15557009998')).toEqual({ status: 404, json: { error: 'unknown_address' } });
    expect(await call(p.app, 'GET', '/v1/keys/15557009998/1')).toEqual({ status: 404, json: { error: 'unknown_address' } });
    expect(await call(p.app, 'POST', '/sim/devices/15557009998/linked')).toEqual({ status: 404, json: { error: 'unknown_device' } });
    // Nothing of the refused messages was delivered.
    await p.state.settled();
    expect(await view(waId, 1)).toEqual([]);
  });

  it('logs no plaintext and no unmasked number while linking, ghosting and fanning out', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } }));
    p = buildPlatform({ logger });
    const waId = await registerDevice(p.app, '+15557001008');
    await link(waId);
    await call(p.app, 'POST', `/sim/devices/${waId}/ghost`);
    const biz = new TestBusiness(BIZ);
    await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload());
    for (const d of [1, 2, 3]) await biz.startSession(p.app, waId, d);
    const canary = 'CANARY-91c2-plaintext';
    await call(p.app, 'POST', '/v1/messages', await biz.message(waId, canary, [1, 2, 3]));
    const broken = await biz.message(waId, `${canary} broken`, [1, 2, 3]);
    broken.envelopes[1]!.body = Buffer.from('garbage-garbage-garbage!').toString('base64');
    await call(p.app, 'POST', '/v1/messages', broken);
    await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: `${canary} reply`, device: 2 });
    await call(p.app, 'DELETE', `/sim/devices/${waId}/linked/2`);
    await p.state.settled();
    await drainEvents(p.app);
    const all = lines.join('');
    expect(all).toContain('ghost device');
    expect(all).toContain('decrypt failed');
    expect(all).not.toContain('CANARY');
    expect(all).not.toContain(waId);
    expect(all).not.toContain(BIZ);
  });
});
