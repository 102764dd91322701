/**
 * Groups on the transport: the test plays the router with real libsignal (pairwise sessions from bundles,
 * SenderKeyDistributionMessage.create, groupEncrypt/groupDecrypt) against the platform's HTTP API.
 */
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import {
  ProtocolAddress,
  SenderKeyDistributionMessage,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
} from '@signalapp/libsignal-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { QueuedEvent } from '../../src/platform/events.ts';
import { buildPlatform, type Platform } from '../../src/platform/server.ts';
import { decodeContent, encodeContent, type MessageContent, type SenderKeyContent } from '../../src/signal/content.ts';
import { call, drainEvents, quietPlatform, registerDevice, TestBusiness } from './helpers.ts';

const BIZ = '15550800800';
const GROUP = 'Gk9vdXAtMQ';
let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

interface Shown { id: string; from: string; group_id?: string; text: { body: string }; arrivals: number }

async function view(waId: string, device = 1): Promise<Shown[]> {
  const r = await call(p.app, 'GET', `/sim/devices/${waId}/messages?device=${device}`);
  expect(r.status).toBe(200);
  return r.json.messages;
}

async function stats(waId: string, device = 1): Promise<Record<string, unknown>> {
  return (await call(p.app, 'GET', `/sim/devices/${waId}/stats?device=${device}`)).json;
}

/** The business's side of a group, as the router will play it: its sender key and the member devices it reaches. */
class GroupBusiness {
  distributionId = randomUUID();
  private seq = 0;
  constructor(readonly biz: TestBusiness, readonly groupId: string) {}

  /** Registers the group with these members (the router is authoritative for membership). */
  async register(members: string[], opts: { invite_code?: string; join_approval?: string } = {}): Promise<void> {
    const r = await call(p.app, 'PUT', `/v1/groups/${this.groupId}`, {
      owner: BIZ, invite_code: opts.invite_code ?? 'InviteCode1', join_approval: opts.join_approval ?? 'auto_approve', members,
    });
    expect(r).toEqual({ status: 200, json: { group_id: this.groupId } });
  }

  /**
   * The `POST /v1/messages` bodies carrying the business's sender key to every device of each member (sessions
   * built from the devices' bundles where there are none yet).
   */
  async keyMessages(members: Record<string, number[]>): Promise<unknown[]> {
    const skdm = await SenderKeyDistributionMessage.create(this.biz.address, this.distributionId, this.biz.stores.senderKeys);
    const content: SenderKeyContent = {
      v: 1, kind: 'sender_key', group_id: this.groupId, distribution_id: this.distributionId, skdm: Buffer.from(skdm.serialize()).toString('base64'),
    };
    const out: unknown[] = [];
    for (const [waId, devices] of Object.entries(members)) {
      const id = `wamid.skdm-${randomUUID()}`;
      const envelopes = [];
      for (const d of devices) {
        if (!(await this.biz.stores.sessions.getSession(this.biz.device(waId, d)))?.hasCurrentState()) await this.biz.startSession(p.app, waId, d);
        const env = await this.biz.envelope(waId, id, content, d);
        const session = await this.biz.stores.sessions.getSession(this.biz.device(waId, d));
        envelopes.push({ device_id: d, registration_id: session!.remoteRegistrationId(), type: env.type, body: env.body });
      }
      out.push({ id, from: BIZ, to: waId, envelopes });
    }
    return out;
  }

  /** Distributes the sender key (one multi-device message per member). */
  async distribute(members: Record<string, number[]>): Promise<void> {
    const messages = await this.keyMessages(members);
    expect(await call(p.app, 'POST', '/v1/messages', { messages })).toEqual({ status: 202, json: { accepted: messages.length, rejected: [] } });
  }

  /** One group message, encrypted once with the business's sender key: the body of `POST /v1/groups/{id}/messages`. */
  async message(text: string): Promise<{ id: string; from: string; type: 7; body: string }> {
    const id = `wamid.group-${randomUUID()}`;
    await SenderKeyDistributionMessage.create(this.biz.address, this.distributionId, this.biz.stores.senderKeys); // the key exists
    const content: MessageContent = {
      v: 1, kind: 'message', id, seq: ++this.seq, from: BIZ, timestamp: String(Math.floor(Date.now() / 1000)),
      message: { type: 'text', text: { body: text } }, group_id: this.groupId,
    };
    const ct = await groupEncrypt(this.biz.address, this.distributionId, this.biz.stores.senderKeys, new Uint8Array(encodeContent(content)));
    return { id, from: BIZ, type: 7, body: Buffer.from(ct.serialize()).toString('base64') };
  }

  /** Posts a group message and expects the transport to take it. */
  async post(m: unknown): Promise<void> {
    const r = await call(p.app, 'POST', `/v1/groups/${this.groupId}/messages`, m);
    expect(r).toMatchObject({ status: 202, json: { accepted: 1 } });
    // The answer names the devices each registered member has now (what the copies went to).
    const group = (await call(p.app, 'GET', `/v1/groups/${this.groupId}`)).json as { members: string[] };
    expect(Object.keys((r.json as { devices: Record<string, number[]> }).devices).sort()).toEqual([...group.members].sort());
  }
}

/** Two members (one with a linked companion) and a registered user outside the group. */
async function world(): Promise<{ biz: TestBusiness; g: GroupBusiness; ada: string; bob: string; eve: string }> {
  p = quietPlatform();
  const ada = await registerDevice(p.app, '+15558001001', { name: 'Ada' });
  const bob = await registerDevice(p.app, '+15558001002', { name: 'Bob' });
  const eve = await registerDevice(p.app, '+15558001003', { name: 'Eve' });
  expect((await call(p.app, 'POST', `/sim/devices/${ada}/linked`)).json.device_id).toBe(2);
  const biz = new TestBusiness(BIZ);
  expect((await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload())).status).toBe(200);
  const g = new GroupBusiness(biz, GROUP);
  await g.register([ada, bob]);
  return { biz, g, ada, bob, eve };
}

const kinds = (events: QueuedEvent[], kind: string): QueuedEvent[] => events.filter((e) => e.kind === kind);

describe('groups on the transport', () => {
  it('relays one business ciphertext to every device of every member; each shows it once with group_id and acknowledges it', async () => {
    const { g, ada, bob, eve } = await world();
    await g.distribute({ [ada]: [1, 2], [bob]: [1] });
    const m = await g.message('hello group');
    await g.post(m);
    await p.state.settled();

    for (const [waId, device] of [[ada, 1], [ada, 2], [bob, 1]] as const) {
      expect(await view(waId, device)).toEqual([{ id: m.id, from: BIZ, type: 'text', text: { body: 'hello group' }, group_id: GROUP, timestamp: expect.any(String), arrivals: 1 }]);
      expect(await stats(waId, device)).toMatchObject({ decrypted: 2, duplicates: 0, held: 0, key_reuse: 0, failures: {} });
    }
    expect(await view(eve)).toEqual([]);
    expect((await call(p.app, 'GET', `/sim/devices/${ada}/groups?device=2`)).json.groups).toEqual([{ group_id: GROUP, senders: [BIZ], left: false, own_distribution_id: null }]);

    const events = await drainEvents(p.app);
    const receipts = kinds(events, 'receipt').map((e) => e.kind === 'receipt' && [e.from, e.device_id, e.id, e.group_id ?? null, e.to, e.status]);
    // The sender key envelopes are acknowledged like skip notices (no group_id); the group message names the group.
    expect(receipts.filter((r) => r && r[3] === GROUP).sort()).toEqual([[ada, 1, m.id, GROUP, BIZ, 'delivered'], [ada, 2, m.id, GROUP, BIZ, 'delivered'], [bob, 1, m.id, GROUP, BIZ, 'delivered']].sort());
    expect(receipts.filter((r) => r && r[3] === null && String(r[2]).startsWith('wamid.skdm-'))).toHaveLength(3);
    expect(kinds(events, 'envelope')).toHaveLength(3); // each device's session ack, nothing else

    // The same ciphertext again (a router retransmitting): shown once, counted, acknowledged again.
    await g.post(m);
    await p.state.settled();
    expect((await view(bob)).map((s) => s.arrivals)).toEqual([2]);
    expect(kinds(await drainEvents(p.app), 'receipt')).toHaveLength(3);
  });

  it('holds a group message until its sender key arrives, and shows it once through drops and duplicates', async () => {
    const { g, ada, bob } = await world();
    const keys = await g.keyMessages({ [ada]: [1, 2], [bob]: [1] });
    const m = await g.message('through faults');

    // Everything lost on the way.
    await call(p.app, 'POST', '/sim/faults', { drop: 1 });
    await call(p.app, 'POST', '/v1/messages', { messages: keys });
    await g.post(m);
    await p.state.settled();
    expect((await call(p.app, 'GET', '/sim/faults')).json.dropped).toBe(3 + 3);

    // The group message comes back before the key: held on every device.
    await call(p.app, 'POST', '/sim/faults', {});
    await g.post(m);
    await p.state.settled();
    for (const [waId, device] of [[ada, 1], [ada, 2], [bob, 1]] as const) {
      expect(await view(waId, device)).toEqual([]);
      expect(await stats(waId, device)).toMatchObject({ held: 1, decrypted: 0 });
    }
    expect(await drainEvents(p.app)).toEqual([]);

    // The key arrives twice, then the message twice more: each device shows it once.
    await call(p.app, 'POST', '/sim/faults', { duplicate: 1 });
    await call(p.app, 'POST', '/v1/messages', { messages: keys });
    await p.state.settled();
    await g.post(m);
    await p.state.settled();
    for (const [waId, device] of [[ada, 1], [ada, 2], [bob, 1]] as const) {
      expect((await view(waId, device)).map((s) => [s.id, s.text.body, s.group_id, s.arrivals])).toEqual([[m.id, 'through faults', GROUP, 3]]);
      expect(await stats(waId, device)).toMatchObject({ held: 0, decrypted: 2, duplicates: 2, key_reuse: 0 });
    }
  });

  it('counts a sender key whose distribution id differs from the one inside it as invalid, without a receipt', async () => {
    const { biz, g, bob } = await world();
    await biz.startSession(p.app, bob, 1);
    const skdm = await SenderKeyDistributionMessage.create(biz.address, g.distributionId, biz.stores.senderKeys);
    const content: SenderKeyContent = { v: 1, kind: 'sender_key', group_id: GROUP, distribution_id: randomUUID(), skdm: Buffer.from(skdm.serialize()).toString('base64') };
    expect((await call(p.app, 'POST', '/v1/envelopes', await biz.envelope(bob, 'wamid.bad-key', content))).status).toBe(202);
    await g.post(await g.message('unreadable'));
    await p.state.settled();
    expect(await stats(bob)).toMatchObject({ decrypted: 1, held: 1, failures: { invalid_message: 1 } });
    expect(kinds(await drainEvents(p.app), 'receipt')).toEqual([]);
  });

  it('lets users join by link: group_join to the owner, pending when the group needs approval; old and unknown codes are refused', async () => {
    const { g, eve } = await world();
    expect(await call(p.app, 'POST', `/sim/devices/${eve}/groups/join`, { invite_link: 'https://chat.whatsapp.com/InviteCode1' })).toEqual({ status: 200, json: { group_id: GROUP } });
    expect(await drainEvents(p.app)).toMatchObject([{ kind: 'group_join', group_id: GROUP, from: eve, to: BIZ, invite_code: 'InviteCode1', pending: false }]);
    // Joining changes nothing until the router registers the new list.
    expect((await call(p.app, 'GET', `/v1/groups/${GROUP}`)).json.members).not.toContain(eve);

    // The router revokes the link (a new code) and asks for approval.
    const members = (await call(p.app, 'GET', `/v1/groups/${GROUP}`)).json.members;
    await g.register(members, { invite_code: 'InviteCode2', join_approval: 'approval_required' });
    expect(await call(p.app, 'POST', `/sim/devices/${eve}/groups/join`, { invite_link: 'https://chat.whatsapp.com/InviteCode1' })).toEqual({ status: 404, json: { error: 'unknown_invite_link' } });
    expect(await call(p.app, 'POST', `/sim/devices/${eve}/groups/join`, { invite_link: 'https://chat.whatsapp.com/InviteCode2' })).toEqual({ status: 200, json: { group_id: GROUP, pending: true } });
    expect(await drainEvents(p.app)).toMatchObject([{ kind: 'group_join', group_id: GROUP, from: eve, to: BIZ, invite_code: 'InviteCode2', pending: true }]);
    expect((await call(p.app, 'POST', `/sim/devices/${eve}/groups/join`, { invite_link: 'https://example.com/InviteCode2' })).status).toBe(400);
  });

  it('carries a member\'s message to the business (sender key pairwise, then one group_envelope) and to the other members\' devices', async () => {
    const { biz, g, ada, bob, eve } = await world();
    await g.distribute({ [ada]: [1, 2], [bob]: [1] });
    await p.state.settled();
    await drainEvents(p.app);

    const sent = await call(p.app, 'POST', `/sim/devices/${bob}/groups/${GROUP}/messages`, { text: 'hi all, Bob here' });
    expect(sent.status).toBe(200);
    await p.state.settled();
    const events = await drainEvents(p.app);

    // The business gets Bob's sender key over their pairwise session, then the group message.
    const [keyEnv] = kinds(events, 'envelope');
    // (A Whisper message: Bob's phone answers on the session the business opened when it sent its own key.)
    expect(keyEnv).toMatchObject({ kind: 'envelope', from: bob, device_id: 1, to: BIZ, type: 2 });
    const key = (await biz.decrypt(keyEnv as { from: string; device_id: number; type: number; body: string })) as SenderKeyContent;
    expect(key).toMatchObject({ v: 1, kind: 'sender_key', group_id: GROUP });
    const bobAddress = ProtocolAddress.new(bob, 1);
    await processSenderKeyDistributionMessage(bobAddress, SenderKeyDistributionMessage.deserialize(new Uint8Array(Buffer.from(key.skdm, 'base64'))), biz.stores.senderKeys);
    const [groupEnv] = kinds(events, 'group_envelope');
    expect(groupEnv).toEqual({
      kind: 'group_envelope', id: sent.json.id, group_id: GROUP, from: bob, device_id: 1, to: BIZ, type: 7, body: expect.any(String),
      timestamp: expect.any(String), event_id: expect.any(String),
    });
    const content = decodeContent(await groupDecrypt(bobAddress, biz.stores.senderKeys, new Uint8Array(Buffer.from((groupEnv as { body: string }).body, 'base64'))));
    expect(content).toMatchObject({ kind: 'message', id: sent.json.id, seq: 1, from: bob, group_id: GROUP, profile_name: 'Bob', message: { type: 'text', text: { body: 'hi all, Bob here' } } });
    // Members' devices do not acknowledge a member's message to the router.
    expect(events.filter((e) => e.kind === 'receipt' && e.id === sent.json.id)).toEqual([]);

    // Ada's phone and companion show it, from Bob, in the group; Bob's own view and Eve's stay as they were.
    for (const device of [1, 2]) {
      expect((await view(ada, device)).map((s) => [s.from, s.text.body, s.group_id])).toEqual([[bob, 'hi all, Bob here', GROUP]]);
    }
    expect(await view(bob)).toEqual([]);
    expect(await view(eve)).toEqual([]);

    // A second message needs no new key: only the group_envelope reaches the router.
    await call(p.app, 'POST', `/sim/devices/${bob}/groups/${GROUP}/messages`, { text: 'second' });
    await p.state.settled();
    expect((await drainEvents(p.app)).map((e) => e.kind)).toEqual(['group_envelope']);
    expect((await view(ada, 2)).map((s) => s.text.body)).toEqual(['hi all, Bob here', 'second']);

    expect(await call(p.app, 'POST', `/sim/devices/${eve}/groups/${GROUP}/messages`, { text: 'let me in' })).toEqual({ status: 403, json: { error: 'not_a_member' } });
  });

  it('after a member leaves and the router re-registers without them with a new sender key, the removed member sees nothing more', async () => {
    const { g, ada, bob } = await world();
    await g.distribute({ [ada]: [1, 2], [bob]: [1] });
    await g.post(await g.message('before'));
    // Ada writes too: her phone's key goes to Bob's phone as well.
    expect((await call(p.app, 'POST', `/sim/devices/${ada}/groups/${GROUP}/messages`, { text: 'ada before' })).status).toBe(200);
    await p.state.settled();
    await drainEvents(p.app);
    const adaKey = (await call(p.app, 'GET', `/sim/devices/${ada}/groups`)).json.groups[0].own_distribution_id;
    expect((await view(bob)).map((s) => s.text.body)).toEqual(['before', 'ada before']);

    expect(await call(p.app, 'POST', `/sim/devices/${bob}/groups/${GROUP}/leave`)).toEqual({ status: 200, json: { success: true } });
    expect(await drainEvents(p.app)).toMatchObject([{ kind: 'group_leave', group_id: GROUP, from: bob, to: BIZ }]);

    // The router: the list without Bob, a new sender key (new distribution id) for those who remain.
    await g.register([ada]);
    const old = g.distributionId;
    g.distributionId = randomUUID();
    expect(g.distributionId).not.toBe(old);
    await g.distribute({ [ada]: [1, 2] });
    await g.post(await g.message('after'));
    await p.state.settled();
    // Ada's phone writes again: Bob had her key, so it starts a new one for the group (a new distribution id).
    expect((await call(p.app, 'POST', `/sim/devices/${ada}/groups/${GROUP}/messages`, { text: 'ada after' })).status).toBe(200);
    await p.state.settled();
    const [adaAfter] = kinds(await drainEvents(p.app), 'envelope');
    expect(adaAfter).toMatchObject({ from: ada, to: BIZ }); // the new key to the business
    expect((await call(p.app, 'GET', `/sim/devices/${ada}/groups`)).json.groups[0].own_distribution_id).not.toBe(adaKey);
    for (const device of [1, 2]) expect((await view(ada, device)).map((s) => s.text.body)).toEqual(['before', 'after']);
    expect((await view(bob)).map((s) => s.text.body)).toEqual(['before', 'ada before']);
    expect((await call(p.app, 'GET', `/sim/devices/${bob}/groups`)).json.groups).toMatchObject([{ group_id: GROUP, left: true }]);
    expect(await stats(bob)).toMatchObject({ held: 0, failures: {} }); // nothing reached Bob at all
    expect((await call(p.app, 'GET', `/sim/devices/${ada}/groups`)).json.groups).toMatchObject([{ group_id: GROUP, senders: [BIZ], left: false }]);
    expect(await call(p.app, 'POST', `/sim/devices/${bob}/groups/${GROUP}/messages`, { text: 'still here?' })).toEqual({ status: 403, json: { error: 'not_a_member' } });
    expect(await call(p.app, 'POST', `/sim/devices/${bob}/groups/${GROUP}/leave`)).toEqual({ status: 403, json: { error: 'not_a_member' } });
  });

  it('refuses bad input, unknown groups and a sender that is not the owner', async () => {
    const { g, ada } = await world();
    const m = await g.message('x');
    const bad = async (method: 'PUT' | 'POST', url: string, body: unknown, reason: RegExp): Promise<void> => {
      const r = await call(p.app, method, url, body);
      expect(r.status).toBe(400);
      expect(r.json.error).toMatch(reason);
    };
    const group = { owner: BIZ, invite_code: 'C1', join_approval: 'auto_approve', members: [ada] };
    await bad('PUT', '/v1/groups/G2', { ...group, join_approval: 'maybe' }, /^join_approval: must be/);
    await bad('PUT', '/v1/groups/G2', { ...group, members: [ada, ada] }, /^members: \d+ appears twice$/);
    await bad('PUT', '/v1/groups/G2', { ...group, members: Array.from({ length: 9 }, (_, i) => `1555800200${i}`) }, /^members: at most 8 members$/);
    await bad('PUT', '/v1/groups/G2', { ...group, members: [BIZ] }, /^members: the owner/);
    await bad('PUT', '/v1/groups/G2', { ...group, invite_code: 'a b' }, /^invite_code: /);
    await bad('PUT', '/v1/groups/G2', { ...group, owner: 'a/b' }, /^owner: /);
    await bad('POST', `/v1/groups/${GROUP}/messages`, { ...m, type: 2 }, /^type: type must be 7/);
    await bad('POST', `/v1/groups/${GROUP}/messages`, { ...m, body: 'not base64!' }, /^body: /);
    await bad('POST', `/v1/groups/${GROUP}/messages`, { messages: [m, { ...m, id: '' }] }, /^messages\.1\.id: /);
    await bad('POST', `/sim/devices/${ada}/groups/${GROUP}/messages`, {}, /^text: /);
    await bad('POST', `/sim/devices/${ada}/groups/join`, {}, /^invite_link: /);
    expect(await call(p.app, 'PUT', '/v1/groups/G2', { ...group, invite_code: 'InviteCode1' })).toEqual({ status: 409, json: { error: 'invite_code_in_use' } });

    expect(await call(p.app, 'POST', '/v1/groups/nope/messages', m)).toEqual({ status: 404, json: { error: 'unknown_group' } });
    expect(await call(p.app, 'POST', `/v1/groups/${GROUP}/messages`, { ...m, from: '15550800999' })).toEqual({ status: 403, json: { error: 'not_owner' } });
    expect(await call(p.app, 'POST', `/v1/groups/${GROUP}/messages`, { messages: [m, { ...m, from: '15550800999' }] })).toEqual({ status: 403, json: { error: 'not_owner' } });
    expect(await call(p.app, 'POST', `/sim/devices/${ada}/groups/nope/messages`, { text: 'x' })).toEqual({ status: 404, json: { error: 'unknown_group' } });
    expect(await call(p.app, 'POST', `/sim/devices/15558009999/groups/${GROUP}/leave`)).toEqual({ status: 404, json: { error: 'unknown_device' } });
    expect(await call(p.app, 'DELETE', '/v1/groups/nope')).toEqual({ status: 404, json: { error: 'unknown_group' } });
    expect(await call(p.app, 'DELETE', `/v1/groups/${GROUP}`)).toEqual({ status: 200, json: { success: true } });
    expect(await call(p.app, 'POST', `/v1/groups/${GROUP}/messages`, m)).toEqual({ status: 404, json: { error: 'unknown_group' } });
    expect(await call(p.app, 'POST', `/sim/devices/${ada}/groups/join`, { invite_link: 'https://chat.whatsapp.com/InviteCode1' })).toEqual({ status: 404, json: { error: 'unknown_invite_link' } });
    await p.state.settled();
    expect(await view(ada)).toEqual([]);
  });

  it('logs no plaintext and no unmasked number on the group paths', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } }));
    p = buildPlatform({ logger });
    const ada = await registerDevice(p.app, '+15558001011');
    const bob = await registerDevice(p.app, '+15558001012');
    const biz = new TestBusiness(BIZ);
    await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload());
    const g = new GroupBusiness(biz, '120363041234567890');
    await g.register([ada, bob]);
    await g.distribute({ [ada]: [1], [bob]: [1] });
    await g.post(await g.message('CANARY-7f3e group'));
    const broken = await g.message('CANARY-7f3e broken');
    await g.post({ ...broken, body: Buffer.from('garbage-garbage-garbage!').toString('base64') });
    await call(p.app, 'POST', `/sim/devices/${ada}/groups/${g.groupId}/messages`, { text: 'CANARY-7f3e from Ada' });
    await p.state.settled();
    const all = lines.join('');
    expect(all).toContain('group registered');
    expect(all).toContain('group message not decrypted');
    expect(all).not.toContain('CANARY');
    for (const n of [ada, bob, BIZ, g.groupId]) expect(all).not.toContain(n);
  });
});
