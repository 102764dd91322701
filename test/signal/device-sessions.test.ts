/**
 * DeviceSessions against real libsignal and the real platform process over HTTP (TransportClient): a user's
 * phone and linked companions, the signed list verified against the pinned primary, a session per device, and
 * what a ghost, a rolled-back list, an unlink, a companion reinstall, a phone reinstall and a companion
 * writing first do to it.
 */
import { CiphertextMessageType, PublicKey } from '@signalapp/libsignal-client';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tracingSettings } from '../../src/config.ts';
import { inSpan, startTracing, stopTracing } from '../../src/ops/tracing.ts';
import { PartyStores } from '../../src/platform/device-stores.ts';
import { startPlatform, type RunningPlatform } from '../../src/platform/server.ts';
import {
  TransportClient,
  UnknownAddressError,
  UnknownDeviceError,
  type MessageOutcome,
  type OutgoingDeviceMessage,
} from '../../src/runtime/transport-client.ts';
import { keyUploadFromRecords, keyUploadToWire } from '../../src/signal/bundle.ts';
import { decodeContent, encodeContent, type MessageContent } from '../../src/signal/content.ts';
import { ConversationCrypto } from '../../src/signal/conversation-crypto.ts';
import { DeviceListError } from '../../src/signal/device-list.ts';
import { DeviceSessionError, DeviceSessions } from '../../src/signal/device-sessions.ts';
import { decodeDeviceSessions, encodeDeviceSessions, fromConversationKeys } from '../../src/signal/device-sessions-codec.ts';
import { generateKeys } from '../../src/signal/prekeys.ts';
import type { NumberIdentity } from '../../src/store/businesses.ts';

const BIZ = '15550810810';
let platform: RunningPlatform;
let transport: TransportClient;
beforeEach(async () => {
  platform = await startPlatform({ port: 0 });
  transport = new TransportClient(platform.url);
});
afterEach(async () => {
  transport?.close();
  await platform?.close();
});

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const fromB64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

async function sim(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(platform.url + path, {
    method, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

/** A user: the phone plus `companions` linked devices (2, 3, ...). */
async function user(phone: string, companions: number): Promise<string> {
  const r = await sim('POST', '/sim/devices', { phone, prekeys: 10 });
  expect(r.status).toBe(200);
  for (let i = 0; i < companions; i++) expect((await sim('POST', `/sim/devices/${r.json.wa_id}/linked`, { prekeys: 10 })).json.device_id).toBe(2 + i);
  return r.json.wa_id;
}

async function view(waId: string, device: number): Promise<[string, number][]> {
  await platform.state.settled();
  const r = await sim('GET', `/sim/devices/${waId}/messages?device=${device}`);
  expect(r.status).toBe(200);
  return r.json.messages.map((m: { text: { body: string }; arrivals: number }) => [m.text.body, m.arrivals]);
}

async function phoneIdentity(waId: string): Promise<PublicKey> {
  return PublicKey.deserialize(new Uint8Array(fromB64((await sim('GET', `/sim/devices/${waId}`)).json.identity_key)));
}

/** The business number: its identity (what DeviceSessions takes) and in-memory prekey stores. */
function business(): { own: NumberIdentity; stores: PartyStores; keys: ReturnType<typeof generateKeys> } {
  const keys = generateKeys({ oneTime: 5 });
  return { own: { identity: keys.identity, registrationId: keys.registrationId }, stores: new PartyStores(keys), keys };
}

/** Plays the host's send step: seq per device (a message sent again keeps its seq on each device). */
/** A conversation's DeviceSessions with the user's list accepted and a session with every listed device. */
async function readyToSend(waId: string): Promise<{ ds: DeviceSessions; sender: Sender }> {
  const { own } = business();
  const ds = new DeviceSessions(own, BIZ, waId);
  ds.acceptList(await transport.fetchDeviceList(waId), waId);
  await fetchBundles(ds, waId);
  return { ds, sender: new Sender(ds, waId) };
}

class Sender {
  private readonly next = new Map<number, number>();
  private readonly seqOf = new Map<string, number>();
  private n = 0;
  constructor(private readonly ds: DeviceSessions, private readonly waId: string) {}

  async message(body: string, devices: number[], id = `wamid.ds-${++this.n}-${Date.now()}`): Promise<OutgoingDeviceMessage> {
    const envelopes = [];
    for (const d of devices) {
      const seq = this.seqOf.get(`${id}:${d}`) ?? (this.next.get(d) ?? 0) + 1;
      this.seqOf.set(`${id}:${d}`, seq);
      this.next.set(d, Math.max(seq, this.next.get(d) ?? 0));
      const content: MessageContent = {
        v: 1, kind: 'message', id, seq, from: BIZ, timestamp: String(Math.floor(Date.now() / 1000)), message: { type: 'text', text: { body } },
      };
      const c = await this.ds.encrypt(d, encodeContent(content));
      expect(c.deviceId).toBe(d);
      envelopes.push({ device_id: c.deviceId, registration_id: c.registrationId, type: c.type, body: b64(c.body) });
    }
    return { id, from: BIZ, to: this.waId, envelopes };
  }

  async send(body: string, devices: number[], id?: string): Promise<{ id: string; outcome: MessageOutcome }> {
    const m = await this.message(body, devices, id);
    const [outcome] = await transport.sendMessages([m]);
    return { id: m.id, outcome: outcome! };
  }
}

async function fetchBundles(ds: DeviceSessions, waId: string): Promise<number[]> {
  const need = ds.needsBundle();
  for (const d of need) await ds.processBundle(d, await transport.fetchDeviceBundle(waId, d), new Date());
  return need;
}

async function refusal(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof DeviceListError || e instanceof DeviceSessionError) return e.reason;
    throw e;
  }
  throw new Error('not refused');
}

const roundTrip = (ds: DeviceSessions, own: NumberIdentity, waId: string): DeviceSessions =>
  new DeviceSessions(own, BIZ, waId, decodeDeviceSessions(encodeDeviceSessions(ds.snapshot())));

describe('DeviceSessions', () => {
  it('fans out to a phone and two companions from the verified list; the sessions survive a snapshot', async () => {
    const waId = await user('+15558100001', 2);
    const { own } = business();
    const ds = new DeviceSessions(own, BIZ, waId);
    expect(ds.primaryIdentity()).toBeNull();

    const change = ds.acceptList(await transport.fetchDeviceList(waId), waId);
    expect(change).toEqual({ devices: [1, 2, 3], added: [1, 2, 3], removed: [], changed: [], identityChanged: false });
    expect(ds.primaryIdentity()!.equals(await phoneIdentity(waId))).toBe(true); // pinned on first contact
    expect(ds.lastListCounter()).toBe(3);
    expect(ds.dirty).toBe(true);
    expect(await refusal(() => ds.encrypt(2, new Uint8Array([1])))).toBe('no_session');
    expect(await fetchBundles(ds, waId)).toEqual([1, 2, 3]);
    expect(ds.needsBundle()).toEqual([]);
    expect([1, 2, 3].map((d) => ds.verified(d))).toEqual([true, true, true]);

    const one = await new Sender(ds, waId).message('one', [1, 2, 3]);
    expect(one.envelopes.map((e) => e.type)).toEqual([CiphertextMessageType.PreKey, CiphertextMessageType.PreKey, CiphertextMessageType.PreKey]);
    expect(new Set(one.envelopes.map((e) => e.registration_id)).size).toBe(3);
    expect(await transport.sendMessages([one])).toEqual([{ id: one.id, outcome: 'accepted' }]);
    for (const d of [1, 2, 3]) expect(await view(waId, d)).toEqual([['one', 1]]);

    // Companions count their own sequence numbers, kept with the sessions (never given twice).
    expect([ds.takeSeq(2), ds.takeSeq(2), ds.takeSeq(3)]).toEqual([1, 2, 1]);
    // Stored and loaded: the same sessions continue (no bundle needed, the devices keep decrypting).
    const stored = encodeDeviceSessions(ds.snapshot());
    expect([...stored.subarray(0, 3)]).toEqual([0x44, 0x53, 0x01]);
    expect(decodeDeviceSessions(stored)).toEqual(ds.snapshot());
    const loaded = new DeviceSessions(own, BIZ, waId, decodeDeviceSessions(stored));
    expect([loaded.dirty, loaded.needsBundle(), loaded.listedDevices(), loaded.lastListCounter()]).toEqual([false, [], [1, 2, 3], 3]);
    expect(decodeDeviceSessions(stored).devices.map((d) => d.lastSeq)).toEqual([undefined, 2, 1]);
    expect(new DeviceSessions(own, BIZ, waId, decodeDeviceSessions(stored)).takeSeq(2)).toBe(3);
    expect(loaded.remoteIdentityHash()).toBe(ds.remoteIdentityHash());
    const sender = new Sender(loaded, waId);
    (sender as unknown as { next: Map<number, number> }).next = new Map([[1, 1], [2, 1], [3, 1]]);
    expect((await sender.send('two', [1, 2, 3])).outcome.outcome).toBe('accepted');
    expect(loaded.dirty).toBe(true);
    for (const d of [1, 2, 3]) expect(await view(waId, d)).toEqual([['one', 1], ['two', 1]]);
    // The same list again is accepted and changes nothing.
    loaded.markClean();
    expect(loaded.acceptList(await transport.fetchDeviceList(waId))).toEqual({ devices: [1, 2, 3], added: [], removed: [], changed: [], identityChanged: false });
    expect(loaded.dirty).toBe(false);

    await expect(transport.fetchDeviceBundle(waId, 9)).rejects.toBeInstanceOf(UnknownDeviceError);
    await expect(transport.fetchDeviceList('15558109999')).rejects.toBeInstanceOf(UnknownAddressError);
    await expect(transport.fetchDeviceBundle('15558109999', 1)).rejects.toBeInstanceOf(UnknownAddressError);
    const nobody: OutgoingDeviceMessage = { id: 'wamid.ds-nobody', from: BIZ, to: '15558109999', envelopes: [{ device_id: 1, registration_id: 1, type: 2, body: 'AAAA' }] };
    expect(await transport.sendMessages([nobody])).toEqual([{ id: nobody.id, outcome: 'unknown_recipient' }]);

    // One batch, an outcome per message in the order given: taken, mismatched, to nobody; then a block maps to
    // the Cloud API code as /v1/envelopes refusals do.
    const ok = await sender.message('three', [1, 2, 3]);
    const partial = await sender.message('four', [1, 2]);
    expect(await transport.sendMessages([ok, partial, nobody])).toEqual([
      { id: ok.id, outcome: 'accepted' }, { id: partial.id, outcome: 'mismatch', missing: [3], extra: [] }, { id: nobody.id, outcome: 'unknown_recipient' },
    ]);
    expect((await sim('POST', `/sim/devices/${waId}/block`, { from: BIZ })).status).toBe(200);
    const blocked = await sender.message('five', [1, 2, 3]);
    expect(await transport.sendMessages([blocked])).toEqual([{ id: blocked.id, outcome: 'refused', code: 131026 }]);
    for (const d of [1, 2, 3]) expect((await view(waId, d)).map(([b]) => b)).toEqual(['one', 'two', 'three']);
    await expect(transport.sendMessages([ok, ok])).rejects.toThrow(/distinct/);
  });

  it('reads today\'s single-device state as device 1 and continues its session once the list names it', async () => {
    const waId = await user('+15558100002', 0);
    const { own } = business();
    const legacy = new ConversationCrypto(own, BIZ, waId, { session: null, remoteIdentity: null });
    await legacy.processBundle(await transport.fetchBundle(waId), new Date());
    const first: MessageContent = { v: 1, kind: 'message', id: 'wamid.legacy-1', seq: 1, from: BIZ, timestamp: '1', message: { type: 'text', text: { body: 'before' } } };
    const c = await legacy.encrypt(encodeContent(first), new Date());
    const phone = (await sim('GET', `/sim/devices/${waId}`)).json as { registration_id: number };
    const envelope = { device_id: 1, registration_id: phone.registration_id, type: c.type, body: b64(c.body) };
    expect(await transport.send([{ id: first.id, from: BIZ, to: waId, envelopes: [envelope] }])).toEqual([{ id: first.id, outcome: 'accepted' }]);
    expect(await view(waId, 1)).toEqual([['before', 1]]);

    const keys = legacy.snapshot();
    // The single-session form stored before: u16 identity length, the identity, the session record.
    const head = Buffer.alloc(2);
    head.writeUInt16BE(keys.remoteIdentity!.length);
    const fromBinary = decodeDeviceSessions(Buffer.concat([head, keys.remoteIdentity!, keys.session!]));
    const fromJson = decodeDeviceSessions(Buffer.from(JSON.stringify({ s: b64(keys.session!), i: b64(keys.remoteIdentity!) })));
    expect(fromBinary).toEqual(fromConversationKeys(keys));
    expect(fromJson).toEqual(fromBinary);
    expect(fromBinary.devices.map((d) => d.deviceId)).toEqual([1]);

    const ds = new DeviceSessions(own, BIZ, waId, fromBinary);
    expect(ds.primaryIdentity()!.equals(await phoneIdentity(waId))).toBe(true);
    expect(ds.remoteIdentityHash()).toBe(legacy.remoteIdentityHash());
    // Not encrypted to before a list names it, even with a session.
    expect(await refusal(() => ds.encrypt(1, new Uint8Array([1])))).toBe('not_listed');
    const counts = (await sim('GET', `/v1/keys/${waId}/1/count`)).json;
    expect(ds.acceptList(await transport.fetchDeviceList(waId), waId)).toEqual({ devices: [1], added: [1], removed: [], changed: [], identityChanged: false });
    expect(ds.needsBundle()).toEqual([]);
    const second: MessageContent = { ...first, id: 'wamid.legacy-2', seq: 2, message: { type: 'text', text: { body: 'after' } } };
    const e = await ds.encrypt(1, encodeContent(second));
    expect(await transport.sendMessages([{ id: second.id, from: BIZ, to: waId, envelopes: [{ device_id: 1, registration_id: e.registrationId, type: e.type, body: b64(e.body) }] }]))
      .toEqual([{ id: second.id, outcome: 'accepted' }]);
    expect(await view(waId, 1)).toEqual([['before', 1], ['after', 1]]);
    expect((await sim('GET', `/v1/keys/${waId}/1/count`)).json).toEqual(counts); // no bundle taken: the same session

    // The phone's session_ack decrypts on device 1's session too.
    const acks = (await transport.pull(100, 0, 30_000)).filter((ev) => ev.kind === 'envelope') as unknown as { device_id: number; type: number; body: string }[];
    expect(acks.length).toBeGreaterThan(0);
    expect(decodeContent(await ds.decrypt(acks[0]!.device_id, { type: acks[0]!.type, body: fromB64(acks[0]!.body) }))).toEqual({ v: 1, kind: 'session_ack' });
  });

  it('refuses a ghost\'s list and a forged one; the ghost gets no session and nothing is delivered without it', async () => {
    const waId = await user('+15558100003', 1);
    const { own } = business();
    const ds = new DeviceSessions(own, BIZ, waId);
    ds.acceptList(await transport.fetchDeviceList(waId), waId);
    await fetchBundles(ds, waId);
    ds.markClean();

    const ghost = (await sim('POST', `/sim/devices/${waId}/ghost`)).json.device_id as number;
    expect(ghost).toBe(3);
    const served = (await transport.fetchDeviceList(waId)) as { devices: { device_id: number }[] };
    expect(served.devices.map((d) => d.device_id)).toEqual([1, 2, 3]);
    expect(await refusal(() => ds.acceptList(served, waId))).toBe('bad_signature');
    expect([ds.listedDevices(), ds.needsBundle(), ds.dirty, ds.lastListCounter()]).toEqual([[1, 2], [], false, 2]);
    expect(await refusal(() => ds.encrypt(ghost, new Uint8Array([1])))).toBe('not_listed');
    expect(await refusal(async () => ds.processBundle(ghost, await transport.fetchDeviceBundle(waId, ghost), new Date()))).toBe('not_listed');
    expect(ds.snapshot().devices.map((d) => d.deviceId)).toEqual([1, 2]);

    // The transport believes its own view and refuses a message without the ghost: nothing reaches anyone.
    const { id, outcome } = await new Sender(ds, waId).send('secret', [1, 2]);
    expect(outcome).toEqual({ id, outcome: 'mismatch', missing: [ghost], extra: [] });
    for (const d of [1, 2, ghost]) expect(await view(waId, d)).toEqual([]);

    // A list the transport signs with a key of its own fails the same way.
    expect((await sim('POST', `/sim/devices/${waId}/device-list-fault`, { kind: 'forged' })).status).toBe(200);
    expect(await refusal(async () => ds.acceptList(await transport.fetchDeviceList(waId), waId))).toBe('bad_signature');
    expect(ds.listedDevices()).toEqual([1, 2]);
  });

  it('refuses a list whose counter goes back, also after a snapshot', async () => {
    const waId = await user('+15558100004', 0);
    const { own } = business();
    const ds = new DeviceSessions(own, BIZ, waId);
    expect(ds.acceptList(await transport.fetchDeviceList(waId), waId).devices).toEqual([1]);
    expect((await sim('POST', `/sim/devices/${waId}/linked`)).json.device_id).toBe(2);
    expect(ds.acceptList(await transport.fetchDeviceList(waId), waId)).toMatchObject({ devices: [1, 2], added: [2] });
    expect(ds.lastListCounter()).toBe(2);

    expect((await sim('POST', `/sim/devices/${waId}/device-list-fault`, { kind: 'rollback' })).status).toBe(200);
    const rolledBack = await transport.fetchDeviceList(waId);
    expect(await refusal(() => ds.acceptList(rolledBack, waId))).toBe('counter_rollback');
    expect(await refusal(() => roundTrip(ds, own, waId).acceptList(rolledBack, waId))).toBe('counter_rollback');
    expect([ds.listedDevices(), ds.lastListCounter()]).toEqual([[1, 2], 2]);
    // A conversation that never accepted a list has no counter to hold: the check is the state's.
    expect(new DeviceSessions(own, BIZ, waId).acceptList(rolledBack, waId).devices).toEqual([1]);
  });

  it('drops an unlinked companion\'s session; the old device set is refused as extra and nothing delivered', async () => {
    const waId = await user('+15558100005', 2);
    const { ds, sender } = await readyToSend(waId);
    expect((await sender.send('one', [1, 2, 3])).outcome.outcome).toBe('accepted');

    expect((await sim('DELETE', `/sim/devices/${waId}/linked/3`)).json).toEqual({ success: true });
    const stale = await sender.send('two', [1, 2, 3]);
    expect(stale.outcome).toEqual({ id: stale.id, outcome: 'mismatch', missing: [], extra: [3] });
    expect(ds.acceptList(await transport.fetchDeviceList(waId), waId)).toEqual({ devices: [1, 2], added: [], removed: [3], changed: [], identityChanged: false });
    expect(ds.snapshot().devices.map((d) => d.deviceId)).toEqual([1, 2]);
    expect(await refusal(() => ds.encrypt(3, new Uint8Array([1])))).toBe('not_listed');
    expect(ds.needsBundle()).toEqual([]);

    expect((await sender.send('two', ds.listedDevices(), stale.id)).outcome.outcome).toBe('accepted');
    for (const d of [1, 2]) expect(await view(waId, d)).toEqual([['one', 1], ['two', 1]]);
    expect(await view(waId, 3)).toEqual([['one', 1]]);
  });

  it('a reinstalled companion is stale (410); the next list archives its session and its new bundle rebuilds it', async () => {
    const waId = await user('+15558100006', 1);
    const { ds, sender } = await readyToSend(waId);
    expect((await sender.send('one', [1, 2])).outcome.outcome).toBe('accepted');

    const before = ds.snapshot().devices.find((d) => d.deviceId === 2)!.listed!.registrationId;
    let after = before;
    for (let i = 0; i < 5 && after === before; i++) after = (await sim('POST', `/sim/devices/${waId}/linked/2/reinstall`)).json.registration_id;
    expect(after).not.toBe(before);
    const lost = await sender.send('two', [1, 2]);
    expect(lost.outcome).toEqual({ id: lost.id, outcome: 'stale', stale: [2] });

    // Its new bundle is not the listed identity until a list says so.
    expect(await refusal(async () => ds.processBundle(2, await transport.fetchDeviceBundle(waId, 2), new Date()))).toBe('identity_mismatch');
    expect(ds.acceptList(await transport.fetchDeviceList(waId), waId)).toMatchObject({ devices: [1, 2], added: [], removed: [], changed: [2] });
    expect(ds.needsBundle()).toEqual([2]);
    expect(await refusal(() => ds.encrypt(2, new Uint8Array([1])))).toBe('no_session');
    expect(await fetchBundles(ds, waId)).toEqual([2]);
    expect((await sender.send('two', [1, 2], lost.id)).outcome.outcome).toBe('accepted');
    for (const d of [1, 2]) expect(await view(waId, d)).toEqual([['one', 1], ['two', 1]]);
  });

  it('a companion writing before any list decrypts, stays unverified until the list names it, then gets replies on its session', async () => {
    const waId = await user('+15558100007', 1);
    const { own, stores, keys } = business();
    await transport.publishKeys(BIZ, keyUploadToWire(keyUploadFromRecords(keys)));
    const sent = await sim('POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: 'hi from the laptop', device: 2 });
    expect(sent.status).toBe(200);
    await platform.state.settled();
    const events = await transport.pull(100, 0, 30_000);
    const env = events.find((e) => e.kind === 'envelope') as unknown as { id: string; from: string; device_id: number; type: number; body: string };
    expect([env.from, env.device_id, env.type]).toEqual([waId, 2, CiphertextMessageType.PreKey]);

    const ds = new DeviceSessions(own, BIZ, waId);
    const content = decodeContent(await ds.decrypt(2, { type: env.type, body: fromB64(env.body) }, stores));
    expect(content).toMatchObject({ kind: 'message', id: sent.json.id, seq: 1, from: waId, message: { text: { body: 'hi from the laptop' } } });
    expect([ds.verified(2), ds.listedDevices(), ds.primaryIdentity(), ds.dirty]).toEqual([false, [], null, true]);
    expect(await refusal(() => ds.encrypt(2, new Uint8Array([1])))).toBe('not_listed');

    // Kept across a commit, then the list names the companion with the identity it proved.
    const loaded = roundTrip(ds, own, waId);
    expect(loaded.verified(2)).toBe(false);
    expect(loaded.acceptList(await transport.fetchDeviceList(waId), waId)).toEqual({ devices: [1, 2], added: [1, 2], removed: [], changed: [], identityChanged: false });
    expect([loaded.verified(2), loaded.needsBundle()]).toEqual([true, [1]]);
    const count2 = (await sim('GET', `/v1/keys/${waId}/2/count`)).json;
    await fetchBundles(loaded, waId);
    const reply = await new Sender(loaded, waId).message('hello laptop', [1, 2]);
    expect(reply.envelopes.find((e) => e.device_id === 2)!.type).toBe(CiphertextMessageType.Whisper); // the session it opened
    expect(await transport.sendMessages([reply])).toEqual([{ id: reply.id, outcome: 'accepted' }]);
    for (const d of [1, 2]) expect(await view(waId, d)).toEqual([['hello laptop', 1]]);
    expect((await sim('GET', `/v1/keys/${waId}/2/count`)).json).toEqual(count2);
  });

  it('a device the list does not name loses the session it opened by writing', async () => {
    const waId = await user('+15558100008', 1);
    const { own, stores, keys } = business();
    await transport.publishKeys(BIZ, keyUploadToWire(keyUploadFromRecords(keys)));
    await sim('POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: 'soon gone', device: 2 });
    await platform.state.settled();
    const env = (await transport.pull(100, 0, 30_000)).find((e) => e.kind === 'envelope') as unknown as { type: number; body: string };
    const ds = new DeviceSessions(own, BIZ, waId);
    await ds.decrypt(2, { type: env.type, body: fromB64(env.body) }, stores);
    expect((await sim('DELETE', `/sim/devices/${waId}/linked/2`)).json).toEqual({ success: true });
    expect(ds.acceptList(await transport.fetchDeviceList(waId), waId)).toEqual({ devices: [1], added: [1], removed: [2], changed: [], identityChanged: false });
    expect([ds.verified(2), ds.snapshot().devices.map((d) => d.deviceId)]).toEqual([false, [1]]);
  });

  it('a reinstalled phone: its new list is refused until device 1\'s fresh bundle re-pins the primary', async () => {
    const waId = await user('+15558100009', 1);
    const { ds, sender } = await readyToSend(waId);
    expect((await sender.send('one', [1, 2])).outcome.outcome).toBe('accepted');
    const oldHash = ds.remoteIdentityHash();

    expect((await sim('POST', '/sim/devices', { phone: '+15558100009', reinstall: true })).status).toBe(200);
    const list = await transport.fetchDeviceList(waId);
    expect(['bad_signature', 'primary_mismatch']).toContain(await refusal(() => ds.acceptList(list, waId)));
    const bundle = await transport.fetchDeviceBundle(waId, 1);
    expect(bundle.identityKey().equals(ds.primaryIdentity()!)).toBe(false); // not the transport's forgery: the phone changed
    expect(ds.repin(bundle.identityKey())).toBe(true);
    expect(ds.repin(bundle.identityKey())).toBe(false);
    expect([ds.listedDevices(), ds.needsBundle(), ds.lastListCounter()]).toEqual([[], [], null]);
    expect(ds.remoteIdentityHash()).not.toBe(oldHash);
    expect(await refusal(() => ds.encrypt(1, new Uint8Array([1])))).toBe('not_listed');

    const change = ds.acceptList(list, waId);
    expect(change).toMatchObject({ devices: [1], removed: [2], identityChanged: true }); // the phone logged its companion out
    await ds.processBundle(1, bundle, new Date());
    expect(ds.needsBundle()).toEqual([]);
    expect((await sender.send('two', [1])).outcome.outcome).toBe('accepted');
    expect(await view(waId, 1)).toEqual([['one', 1], ['two', 1]]);
  });

  it('refuses malformed stored state', () => {
    expect(() => decodeDeviceSessions(Uint8Array.of(0x44, 0x53, 0x02, 0))).toThrow(/unknown version/);
    expect(() => decodeDeviceSessions(Uint8Array.of(0x44, 0x53, 0x01, 0, 1, 1, 8, 0, 0))).toThrow(/truncated/);
    expect(() => decodeDeviceSessions(Uint8Array.of(0x44, 0x53, 0x01, 0, 0, 9))).toThrow(/trailing/);
    expect(() => decodeDeviceSessions(Uint8Array.of(0x13))).toThrow(DeviceSessionError);
    expect(decodeDeviceSessions(new Uint8Array(0))).toEqual({ primary: null, listCounter: null, devices: [] });
  });

  it('traces the new routes without naming the user (the route stands in for the address)', async () => {
    const waId = await user('+15558100010', 1);
    const bodies: string[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks).toString('utf8'));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_TRACES_SAMPLER: 'always_on' };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    try {
      expect(await startTracing(tracingSettings(process.env), 'device-sessions-test')).toBe(true);
      const { own } = business();
      const ds = new DeviceSessions(own, BIZ, waId);
      await inSpan('drain', {}, async () => {
        ds.acceptList(await transport.fetchDeviceList(waId), waId);
        await fetchBundles(ds, waId);
        expect((await new Sender(ds, waId).send('traced', [1, 2])).outcome.outcome).toBe('accepted');
      });
      await stopTracing();
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await stopTracing();
      collector.close();
    }
    const urls = bodies.flatMap((b) => JSON.parse(b).resourceSpans ?? []).flatMap((rs: any) => rs.scopeSpans ?? []).flatMap((ss: any) => ss.spans ?? [])
      .filter((sp: any) => sp.kind === 3).map((sp: any) => sp.attributes.find((a: any) => a.key === 'url.full')?.value.stringValue as string)
      .map((u) => decodeURIComponent(new URL(u).pathname)).sort();
    expect(bodies.join('')).not.toContain(waId);
    expect(urls).toEqual(['/v1/devices/{address}', '/v1/keys/{address}/{device_id}', '/v1/keys/{address}/{device_id}', '/v1/messages']);
  });
});
