import type { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import type { startPlatform } from '../../src/platform/server.ts';
import { ActorHost, CommitConflictError, defineCommitScript, LeaseBusyError, type HostSinks, type StatusUpdate } from '../../src/runtime/actor-host.ts';
import { Stores } from '../../src/store/stores.ts';
import { conversationId, conversationOfWamid } from '../../src/runtime/ids.ts';
import type { Mailboxes } from '../../src/runtime/mailbox.ts';
import { OutboundService } from '../../src/runtime/outbound-service.ts';
import { TransportClient } from '../../src/runtime/transport-client.ts';
import { TransportPuller } from '../../src/runtime/transport-puller.ts';
import { KeyPublisher } from '../../src/runtime/key-publisher.ts';
import { BusinessStore } from '../../src/store/businesses.ts';
import type { Keys } from '../../src/store/keys.ts';
import type { DataKeys } from '../../src/store/sealer.ts';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { startHostWorld } from '../helpers/host-world.ts';
import { readTraceLines } from '../../src/trace/store.ts';

describe('actor host on real Redis, real libsignal and a real transport', () => {
  let world: Awaited<ReturnType<typeof startHostWorld>>;
  let redis: Redis;
  let keys: Keys;
  let platform: Awaited<ReturnType<typeof startPlatform>>;
  let host: ActorHost;
  let hostWithTraceMax: (traceMax: number) => ActorHost;
  let outbound: OutboundService;
  let puller: TransportPuller;
  let transport: TransportClient;
  let biz: Awaited<ReturnType<BusinessStore['create']>>;
  let dataKeys: DataKeys;
  let mailboxes: Mailboxes;
  /** A host that also decrypts what users send first (the business number's prekeys published). */
  let inboundHost: () => Promise<ActorHost>;
  const statuses: StatusUpdate[] = [];
  const timers: { id: string; at: number }[] = [];
  const cancelled: string[] = [];
  let failTimers = false;
  const webhookMessages: Record<string, any>[] = [];
  const log = createLogger('test', 'silent');
  /**
   * A send to a new device whose drain fails when its timers reach the queue (after the commits): what the
   * outbox then owes. `failTimers` is left on.
   */
  const drainFailingAtTimers = async (phone: string, body: string) => {
    const waId = await createDevice(platform.url, phone);
    const conv = conversationOfWamid((await send(waId, body)).wamid)!;
    failTimers = true;
    await expect(host.drain(conv)).rejects.toThrow('timers queue unreachable');
    return { waId, conv, owed: await outboxOf(conv) };
  };
  /** The conversation's outbox: a string key, a JSON array of commands (absent once cleared). */
  const outboxOf = async (conv: string): Promise<{ type: string }[]> => JSON.parse((await redis.get(keys.outbox(conv))) ?? '[]') as { type: string }[];

  beforeEach(async () => {
    world = await startHostWorld('host');
    ({ redis, keys, dataKeys, platform, transport, mailboxes } = world);
    const { businesses, stores } = world;
    const sinks: HostSinks = {
      async webhook(_b, _p, values) {
        for (const v of values) {
          for (const st of (v.statuses ?? []) as Record<string, any>[]) {
            statuses.push({ wamid: st.id, status: st.status, at: Number(st.timestamp) * 1000, recipientId: st.recipient_id, ...(st.errors ? { errorCode: st.errors[0].code } : {}), ...(st.biz_opaque_callback_data ? { bizOpaqueCallbackData: st.biz_opaque_callback_data } : {}) });
          }
          webhookMessages.push(...((v.messages ?? []) as Record<string, any>[]));
        }
      },
      async timer(_c, id, at) {
        if (failTimers) throw new Error('timers queue unreachable');
        timers.push({ id, at });
      },
      async cancelTimer(_c, id) { cancelled.push(id); },
      async purgeAt() {},
      async cancelPurges() {},
      async count() {},
    };
    host = new ActorHost(stores, keys, dataKeys, businesses, transport, sinks, log, { retentionMs: 3600e3, bundleRetryMs: 100, retransmitBaseMs: 1000, retransmitMaxMs: 10_000 });
    hostWithTraceMax = (traceMax) => new ActorHost(stores, keys, dataKeys, businesses, transport, sinks, log, { retentionMs: 3600e3, bundleRetryMs: 100, retransmitBaseMs: 1000, retransmitMaxMs: 10_000, traceMax });
    inboundHost = async () => {
      const publisher = new KeyPublisher(redis, keys, dataKeys, businesses, transport, log, 3600e3);
      await publisher.ensure(biz.phone_number_id);
      return new ActorHost(stores, keys, dataKeys, businesses, transport, sinks, log, { retentionMs: 3600e3, bundleRetryMs: 100, retransmitBaseMs: 1000, retransmitMaxMs: 10_000 },
        (pn) => publisher.preKeysOf(pn));
    };
    outbound = new OutboundService(stores, keys, dataKeys, businesses, mailboxes, 3600e3);
    puller = new TransportPuller(transport, businesses, dataKeys, mailboxes, outbound, log, 3600e3);
    biz = await businesses.create({ name: 'Acme', webhookUrl: 'http://127.0.0.1:9/hook', appSecret: 'secret-secret', verifyToken: 'v' });
    statuses.length = 0;
    timers.length = 0;
    cancelled.length = 0;
    failTimers = false;
    webhookMessages.length = 0;
  });

  afterEach(async () => {
    await world.close();
  });

  /** As if the user had written a minute ago: the customer-service window is open (this suite tests the host). */
  async function openWindow(waId: string) {
    const conv = await conversationId(dataKeys, biz.business_id, biz.phone_number_id, waId);
    await redis.set(keys.window(conv), String(Date.now() - 60_000), 'PX', 60_000);
  }
  const send = async (waId: string, body: string) => {
    await openWindow(waId);
    return outbound.accept({ businessId: biz.business_id, phoneNumberId: biz.phone_number_id, waId, message: { type: 'text', text: { body } } });
  };

  /** Pulls what the transport has for the router until `until` holds. */
  async function pullUntil(until: () => boolean) {
    await waitFor(async () => {
      const events = await transport.pull(100, 200, 30_000);
      if (events.length) await puller.handle(events);
      return until();
    }, 'transport events');
  }

  it('negotiates PQXDH through the directory, delivers, and switches to Whisper after the session ack', async () => {
    const waId = await createDevice(platform.url, '+15557770001');
    const { wamid } = await send(waId, 'first');
    const conv = conversationOfWamid(wamid)!;
    await host.drain(conv);
    await waitFor(async () => (await deviceMessages(platform.url, waId)).length === 1, 'device shows the message');
    expect((await deviceMessages(platform.url, waId))[0]).toMatchObject({ id: wamid, text: { body: 'first' }, arrivals: 1 });
    await pullUntil(() => true);
    await host.drain(conv);
    expect(statuses.map((s) => [s.wamid, s.status])).toEqual([[wamid, 'sent'], [wamid, 'delivered']]);
    expect(statuses[0]!.recipientId).toBe(waId);
    // The device's encrypted session_ack has acknowledged the session: the next message is a Whisper message.
    const second = await send(waId, 'second');
    await host.drain(conv);
    const trace = (await readTraceLines(redis, keys.trace(conv), conv)).map((l) => JSON.parse(l));
    const encrypted = trace.filter((t) => t.event.type === 'ENCRYPTED').map((t) => [t.event.wamid, t.event.messageType]);
    expect(encrypted).toEqual([[wamid, 3], [second.wamid, 2]]);
    expect(trace.some((t) => t.event.type === 'SESSION_ACK')).toBe(true);
  });

  it('forgets a delivered message body and ciphertext, keeping no content', async () => {
    const waId = await createDevice(platform.url, '+15557770002');
    const { wamid } = await send(waId, 'forget me');
    const conv = conversationOfWamid(wamid)!;
    await host.drain(conv);
    expect(await redis.hexists(keys.message(conv, wamid), 'cd')).toBe(1);
    await pullUntil(() => true);
    await host.drain(conv);
    expect(statuses.map((s) => s.status)).toContain('delivered');
    expect(await redis.hmget(keys.message(conv, wamid), 'c', 'cd', 'ct', 'ty')).toEqual([null, null, null, null]);
  });

  it('stores compactly: a delivered row shrinks back to a small hash, the snapshot is sealed deflated bytes', async () => {
    const waId = await createDevice(platform.url, '+15557770003');
    const { wamid } = await send(waId, 'compact me');
    const conv = conversationOfWamid(wamid)!;
    await host.drain(conv);
    expect(await redis.call('OBJECT', 'ENCODING', keys.message(conv, wamid))).toBe('hashtable');
    const { c: _c, cd: _cd, ...kept } = await redis.hgetall(keys.message(conv, wamid));
    const ttlBefore = await redis.pttl(keys.message(conv, wamid));
    await pullUntil(() => true);
    await host.drain(conv);
    expect(statuses.map((s) => s.status)).toContain('delivered');
    // The ciphertext made the row a hash table; once it is forgotten the rest is rewritten compactly, TTL kept:
    // by this host from what it read at encryption, and by one that did not encrypt it (nothing known: read back).
    expect(await redis.call('OBJECT', 'ENCODING', keys.message(conv, wamid))).toBe('listpack');
    expect(await redis.hgetall(keys.message(conv, wamid))).toEqual(kept);
    expect(Math.abs((await redis.pttl(keys.message(conv, wamid))) - ttlBefore)).toBeLessThan(10_000);
    const second = (await send(waId, 'compact me too')).wamid;
    await host.drain(conv);
    const { c: _c2, cd: _cd2, ...kept2 } = await redis.hgetall(keys.message(conv, second));
    await pullUntil(() => statuses.some((st) => st.wamid === second && st.status === 'delivered') || true);
    await hostWithTraceMax(300).drain(conv);
    expect(statuses.filter((st) => st.wamid === second).map((st) => st.status)).toContain('delivered');
    expect(await redis.call('OBJECT', 'ENCODING', keys.message(conv, second))).toBe('listpack');
    expect(await redis.hgetall(keys.message(conv, second))).toEqual(kept2);
    expect(await redis.pttl(keys.message(conv, second))).toBeGreaterThan(0);
    expect(await redis.type(keys.snapshot(conv))).toBe('string');
    expect((await redis.strlen(keys.snapshot(conv)))).toBeLessThan(200);
    const meta = await redis.hgetall(keys.meta(conv));
    expect(Number(meta.v)).toBeGreaterThan(1);
    expect(Number(meta.t)).toBeGreaterThan(1);
  });

  it('renews the keys\' TTL backstops at the first commit and then at most hourly, a new retention index included', async () => {
    const waId = await createDevice(platform.url, '+15557770009');
    const { wamid } = await send(waId, 'ttl');
    const conv = conversationOfWamid(wamid)!;
    await host.drain(conv);
    const renewedAt = Number(await redis.hget(keys.meta(conv), 'x'));
    expect(renewedAt).toBeGreaterThan(Date.now() - 60_000);
    // Shortened by hand: a commit within the hour leaves the backstops alone...
    for (const k of [keys.meta(conv), keys.trace(conv), keys.retention(conv)]) await redis.pexpire(k, 20_000_000);
    await pullUntil(() => true);
    await host.drain(conv);
    expect(Number(await redis.hget(keys.meta(conv), 'x'))).toBe(renewedAt);
    for (const k of [keys.meta(conv), keys.trace(conv), keys.retention(conv)]) expect(await redis.pttl(k), k).toBeLessThanOrEqual(20_000_000);
    // ...and one after it renews them all (the business's retention and a day).
    await redis.hset(keys.meta(conv), 'x', String(renewedAt - 3_600_001));
    await send(waId, 'ttl again');
    await host.drain(conv);
    expect(Number(await redis.hget(keys.meta(conv), 'x'))).toBeGreaterThan(renewedAt);
    for (const k of [keys.meta(conv), keys.trace(conv), keys.retention(conv)]) expect(await redis.pttl(k), k).toBeGreaterThan(20_000_000);
  });

  it('continues a conversation whose snapshot is still in the hash form written before', async () => {
    const waId = await createDevice(platform.url, '+15557770004');
    const { wamid } = await send(waId, 'before');
    const conv = conversationOfWamid(wamid)!;
    await host.drain(conv);
    await pullUntil(() => true);
    await host.drain(conv);
    // Rewrite the stored snapshot as the old format: a hash {v, s (sealed JSON), t}, nothing in meta.
    const { decodeSnapshot } = await import('../../src/runtime/snapshot-codec.ts');
    const { seal } = await import('../../src/store/sealer.ts');
    const dk = await dataKeys.get(biz.business_id);
    const aad = `${keys.snapshot(conv)}:s`;
    const persisted = decodeSnapshot(dk, conv, (await redis.getBuffer(keys.snapshot(conv)))!, aad);
    const meta = await redis.hgetall(keys.meta(conv));
    await redis.del(keys.snapshot(conv));
    await redis.hset(keys.snapshot(conv), { v: meta.v!, t: meta.t!, s: seal(dk, JSON.stringify(persisted), aad) });
    await redis.hdel(keys.meta(conv), 'v', 't');
    const second = await send(waId, 'after');
    await host.drain(conv);
    await pullUntil(() => true);
    await host.drain(conv);
    expect(statuses.filter((s) => s.wamid === second.wamid).map((s) => s.status)).toEqual(['sent', 'delivered']);
    expect(await redis.type(keys.snapshot(conv))).toBe('string');
    expect(Number(await redis.hget(keys.meta(conv), 'v'))).toBeGreaterThan(Number(meta.v));
    // The trace continues its numbering.
    const seqs = (await readTraceLines(redis, keys.trace(conv), conv)).map((l) => JSON.parse(l).seq as number);
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
  });

  it('a drain tells whether events still wait, and leaves no lease and no outbox behind', async () => {
    const oneAtATime = new ActorHost(new Stores(redis, keys, {}, defineCommitScript), keys, dataKeys, new BusinessStore(redis, keys, dataKeys), transport,
      { async webhook() {}, async timer() {}, async cancelTimer() {}, async purgeAt() {}, async cancelPurges() {}, async count() {} },
      log, { retentionMs: 3600e3, bundleRetryMs: 100, retransmitBaseMs: 1000, retransmitMaxMs: 10_000, batchSize: 1, maxStepsPerDrain: 1 });
    const waId = await createDevice(platform.url, '+15557770009');
    let conv = '';
    for (const body of ['one', 'two', 'three']) conv = conversationOfWamid((await send(waId, body)).wamid)!;
    const drains: { handled: number; pending: boolean }[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await oneAtATime.drainAndCheck(conv);
      drains.push(r);
      expect(await redis.exists(keys.lease(conv))).toBe(0);
      expect(await outboxOf(conv)).toEqual([]);
      if (!r.pending) break;
    }
    // One mailbox event per drain: the first two leave events waiting, the third does not.
    expect(drains.map((d) => d.pending)).toEqual([true, true, false]);
    expect(await redis.llen(keys.mailbox(conv))).toBe(0);
    await waitFor(async () => (await deviceMessages(platform.url, waId)).length === 3, 'three messages on the device');
  });

  it('gives its lease back at once when the state read with it fails', async () => {
    const waId = await createDevice(platform.url, '+15557770011');
    const conv = conversationOfWamid((await send(waId, 'hi')).wamid)!;
    // A key of the wrong type where the session belongs: its read fails after the lease was taken.
    await redis.rpush(keys.session(conv), 'not a session');
    await expect(host.drainAndCheck(conv)).rejects.toThrow(/WRONGTYPE/);
    expect(await redis.exists(keys.lease(conv))).toBe(0);
    await redis.del(keys.session(conv));
    expect((await host.drainAndCheck(conv)).handled).toBeGreaterThan(0);
  });

  it("the puller routes a batch's events concurrently yet keeps each conversation's events in transport order", async () => {
    const waId = await createDevice(platform.url, '+15557770010');
    const { wamid } = await send(waId, 'hello');
    const conv = conversationOfWamid(wamid)!;
    const ts = String(Math.floor(Date.now() / 1000));
    const envelope = (id: string) => ({ event_id: `e-${id}`, kind: 'envelope' as const, id, from: waId, to: biz.display_phone_number, type: 2, body: 'AAAA', timestamp: ts });
    // Envelopes and receipts wait on Redis to be routed (number lookup, conversation check), for different times.
    const [in1, in2, in3] = ['wamid.inbound-one-000001', 'wamid.inbound-two-000002', 'wamid.inbound-three-0003'];
    await puller.handle([
      envelope(in1),
      { event_id: 'e-r', kind: 'receipt', status: 'delivered', id: wamid, from: waId, to: biz.display_phone_number, timestamp: ts },
      envelope(in2),
      envelope(in3),
    ]);
    const mailbox = (await redis.lrange(keys.mailbox(conv), 0, -1)).map((e) => JSON.parse(e) as { type: string; id?: string });
    expect(mailbox.map((e) => e.id ?? e.type)).toEqual(['SEND', in1, 'DELIVERED', in2, in3]);
  });

  it('bounds a long trace and keeps what it keeps replayable (a snapshot before the first kept step)', async () => {
    const bounded = hostWithTraceMax(16);
    const waId = await createDevice(platform.url, '+15557770005');
    let conv = '';
    for (let i = 0; i < 15; i++) {
      const { wamid } = await send(waId, `m${i}`);
      conv = conversationOfWamid(wamid)!;
      await bounded.drain(conv);
      await pullUntil(() => true);
      await bounded.drain(conv);
    }
    expect(statuses.filter((s) => s.status === 'delivered')).toHaveLength(15);
    const entries = await redis.llen(keys.trace(conv));
    expect(entries).toBeLessThanOrEqual(16);
    const lines = (await readTraceLines(redis, keys.trace(conv), conv)).map((l) => JSON.parse(l));
    // Pruned: it no longer starts at seq 1, its first line carries the snapshot before it, and it replays.
    expect(lines[0].seq).toBeGreaterThan(1);
    expect(lines[0].before).toBeDefined();
    expect(lines.length).toBeLessThan(lines.at(-1).seq);
    const { replayTrace } = await import('../../src/trace/replay.ts');
    expect(replayTrace(lines)).toMatchObject({ ok: true });
  });

  it('fails the message with 131026 when the recipient has no device', async () => {
    const { wamid } = await send('15550000000', 'nobody');
    await host.drain(conversationOfWamid(wamid)!);
    expect(statuses).toEqual([expect.objectContaining({ wamid, status: 'failed', errorCode: 131026 })]);
  });

  it("a message whose TTL and retention end together still fails with its callback data (the row's end does not erase what the status needs)", async () => {
    const waId = await createDevice(platform.url, '+15557770023');
    await openWindow(waId);
    const acceptedAt = Date.now();
    const { wamid } = await outbound.accept({
      businessId: biz.business_id, phoneNumberId: biz.phone_number_id, waId, message: { type: 'text', text: { body: 'never acknowledged' } }, bizOpaqueCallbackData: 'keep-me',
    });
    const conv = conversationOfWamid(wamid)!;
    await host.drain(conv);
    expect(statuses.map((s) => s.status)).toEqual(['sent']);
    // Day 30 by default: the retransmit timer finds the TTL over and the retention sweep arrives in the same batch.
    const end = acceptedAt + 3600e3 + 1000;
    await mailboxes.post(conv, [{ type: 'RETRANSMIT_DUE', at: end, timerId: 'rt:end' }, { type: 'PURGE_DUE', at: end }], 60_000);
    await host.drain(conv);
    expect(statuses.at(-1)).toMatchObject({ wamid, status: 'failed', errorCode: 131026, bizOpaqueCallbackData: 'keep-me' });
    // ...and everything about the conversation went with the retention's end.
    expect(await redis.exists(keys.message(conv, wamid), keys.snapshot(conv), keys.meta(conv))).toBe(0);
  });

  it("routes a receipt only from the conversation's own user, and a user's message only under the id it carries", async () => {
    const alice = await createDevice(platform.url, '+15557770031');
    const mallory = await createDevice(platform.url, '+15557770032');
    const { wamid } = await send(alice, 'for alice only');
    const conv = conversationOfWamid(wamid)!;
    await fetch(`${platform.url}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ drop: 1 }) });
    await host.drain(conv);
    expect(statuses.map((s) => s.status)).toEqual(['sent']);
    // Mallory's phone acknowledges Alice's message (it learnt the wamid somehow): dropped, Alice's stays unacknowledged.
    const display = (await new BusinessStore(redis, keys, dataKeys).phoneNumber(biz.phone_number_id))!.display_phone_number;
    const forged = { kind: 'receipt' as const, status: 'read' as const, id: wamid, from: mallory, to: display, timestamp: '1' };
    await puller.handle([{ event_id: 'forged-1', ...forged }]);
    await host.drain(conv);
    expect(statuses.map((s) => s.status)).toEqual(['sent']);
    // The same receipt from Alice is taken.
    await puller.handle([{ event_id: 'real-1', ...forged, from: alice }]);
    await host.drain(conv);
    expect(statuses.map((s) => s.status)).toEqual(['sent', 'delivered', 'read']);

    // An envelope relabelled on the way (its id no longer the one inside the message) is not forwarded.
    const receiving = await inboundHost();
    await fetch(`${platform.url}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const res = await fetch(`${platform.url}/sim/devices/${mallory}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: display, text: 'relabelled' }) });
    expect(res.status).toBe(200);
    const realId = ((await res.json()) as { id: string }).id;
    let relabelled = '';
    await waitFor(async () => {
      const events = await transport.pull(100, 200, 30_000);
      const env = events.find((e) => e.kind === 'envelope' && e.id === realId);
      if (env) {
        relabelled = `wamid.relabelled${realId.slice(-12)}`;
        (env as { id: string }).id = relabelled;
      }
      if (events.length) await puller.handle(events);
      return relabelled !== '';
    }, 'the envelope');
    const malloryConv = await conversationId(dataKeys, biz.business_id, biz.phone_number_id, mallory);
    await receiving.drain(malloryConv);
    // The next message of the same conversation gets through: the relabelled one was handled, and refused.
    const next = await fetch(`${platform.url}/sim/devices/${mallory}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: display, text: 'as sent' }) });
    const nextId = ((await next.json()) as { id: string }).id;
    await waitFor(async () => {
      const events = await transport.pull(100, 200, 30_000);
      if (events.length) await puller.handle(events);
      await receiving.drain(malloryConv);
      return webhookMessages.some((m) => m.id === nextId);
    }, 'the next message');
    expect(webhookMessages.map((m) => m.id)).toEqual([nextId]);
  });

  it('retries the bundle fetch through a durable timer when the transport is down', async () => {
    const waId = await createDevice(platform.url, '+15557770003');
    await fetch(`${platform.url}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ down_for_ms: 60_000 }) });
    const { wamid } = await send(waId, 'later');
    await host.drain(conversationOfWamid(wamid)!);
    // GET /v1/keys is not behind the outage; the send is: the message waits for a retransmit timer. The
    // machine scheduled one timer for the send and replaced it after the refusal, within one drain: only the
    // net timer reaches the queue, and the one that never did is not cancelled.
    expect(timers.map((t) => t.id)).toEqual([expect.stringMatching(/^rt:/)]);
    expect(cancelled).toEqual([]);
    expect(statuses).toEqual([]);
    // Nothing is left in the outbox once the timer is applied.
    expect(await outboxOf(conversationOfWamid(wamid)!)).toEqual([]);
  });

  it('keeps a committed timer in the outbox until it reaches the queue: a drain that dies before replays it', async () => {
    const { conv, owed } = await drainFailingAtTimers('+15557770013', 'timer survives');
    // The send was committed and handed over; its retransmit timer is still owed, in the outbox.
    expect(owed.map((o) => o.type)).toContain('timer.schedule');
    expect(timers).toEqual([]);
    failTimers = false;
    await host.drain(conv);
    expect(timers.map((t) => t.id)).toEqual([expect.stringMatching(/^rt:/)]);
    expect(await outboxOf(conv)).toEqual([]);
  });

  it('replays an outbox an earlier version left as a list, and deletes it once applied', async () => {
    const { waId, conv, owed } = await drainFailingAtTimers('+15557770014', 'left by an earlier version');
    // As the earlier version stored it: the owed commands as a list, one JSON command per entry.
    expect(owed.length).toBeGreaterThan(0);
    await redis.del(keys.outbox(conv));
    await redis.rpush(keys.outbox(conv), ...owed.map((o) => JSON.stringify(o)));
    failTimers = false;
    await host.drain(conv);
    expect(timers.map((t) => t.id)).toEqual([expect.stringMatching(/^rt:/)]);
    expect(await redis.exists(keys.outbox(conv))).toBe(0);
    // The next send's commit writes the outbox as a string, and the drain's end deletes it.
    await send(waId, 'after the upgrade');
    await host.drain(conv);
    expect(await redis.exists(keys.outbox(conv))).toBe(0);
    expect(await redis.hlen(keys.meta(conv))).toBeGreaterThan(0);
    expect(await redis.call('OBJECT', 'ENCODING', keys.meta(conv))).toBe('listpack');
  });

  it('refuses to run a conversation whose lease another process holds, and fences a stale commit', async () => {
    const waId = await createDevice(platform.url, '+15557770004');
    const { wamid } = await send(waId, 'fenced');
    const conv = conversationOfWamid(wamid)!;
    await redis.set(keys.lease(conv), 'someone-else', 'PX', 5000);
    await expect(host.drain(conv)).rejects.toBeInstanceOf(LeaseBusyError);
    expect(await redis.llen(keys.mailbox(conv))).toBe(1); // nothing consumed
    // A drain whose lease is taken over mid-flight commits nothing.
    await redis.del(keys.lease(conv));
    const originalSet = redis.set.bind(redis);
    let stolen = false;
    (host as unknown as { transport: TransportClient }).transport.fetchDeviceBundle = (async (addr: string, deviceId: number) => {
      if (!stolen) {
        stolen = true;
        await originalSet(keys.lease(conv), 'thief', 'PX', 5000);
      }
      return TransportClient.prototype.fetchDeviceBundle.call(transport, addr, deviceId);
    }) as TransportClient['fetchDeviceBundle'];
    await expect(host.drain(conv)).rejects.toBeInstanceOf(CommitConflictError);
    expect(await redis.llen(keys.mailbox(conv))).toBe(1);
    expect(await redis.exists(keys.snapshot(conv))).toBe(0);
    expect(await deviceMessages(platform.url, waId)).toEqual([]);
  });
});
