import type { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { metrics } from '../../src/ops/metrics.ts';
import type { startPlatform } from '../../src/platform/server.ts';
import { ActorHost, type HostSinks } from '../../src/runtime/actor-host.ts';
import { conversationId, conversationOfWamid } from '../../src/runtime/ids.ts';
import { OutboundService } from '../../src/runtime/outbound-service.ts';
import type { TransportClient } from '../../src/runtime/transport-client.ts';
import { TransportPuller } from '../../src/runtime/transport-puller.ts';
import type { BusinessStore } from '../../src/store/businesses.ts';
import type { Keys } from '../../src/store/keys.ts';
import type { DataKeys } from '../../src/store/sealer.ts';
import { createDevice, deviceMessages, deviceStats, waitFor } from '../helpers/devices.ts';
import { startHostWorld } from '../helpers/host-world.ts';

/**
 * A process keeps the conversations it drained hydrated (src/runtime/host/warm.ts) and uses that state only
 * while Redis still holds exactly what it committed: these tests run two hosts (two processes' worth of
 * warm states) over one Redis, real libsignal and the real transport, and check the device.
 */
describe('warm conversation states', () => {
  let world: Awaited<ReturnType<typeof startHostWorld>>;
  let redis: Redis;
  let keys: Keys;
  let platform: Awaited<ReturnType<typeof startPlatform>>;
  let makeHost: () => ActorHost;
  let outbound: OutboundService;
  let puller: TransportPuller;
  let transport: TransportClient;
  let dataKeys: DataKeys;
  let biz: Awaited<ReturnType<BusinessStore['create']>>;
  const statuses: { wamid: string; status: string }[] = [];
  const log = createLogger('test', 'silent');

  beforeEach(async () => {
    world = await startHostWorld('warm');
    ({ redis, keys, platform, transport, dataKeys } = world);
    const { businesses, stores, mailboxes } = world;
    const sinks: HostSinks = {
      async webhook(_b, _p, values) {
        for (const v of values) for (const st of (v.statuses ?? []) as { id: string; status: string }[]) statuses.push({ wamid: st.id, status: st.status });
      },
      async timer() {},
      async cancelTimer() {},
      async purgeAt() {},
      async cancelPurges() {},
      async count() {},
    };
    makeHost = () => new ActorHost(stores, keys, dataKeys, businesses, transport, sinks, log, { retentionMs: 3600e3, bundleRetryMs: 100, retransmitBaseMs: 60_000, retransmitMaxMs: 60_000 });
    outbound = new OutboundService(stores, keys, dataKeys, businesses, mailboxes, 3600e3);
    puller = new TransportPuller(transport, businesses, dataKeys, mailboxes, outbound, log, 3600e3);
    biz = await businesses.create({ name: 'Warm', webhookUrl: 'http://127.0.0.1:9/hook', appSecret: 'secret-secret', verifyToken: 'v' });
    statuses.length = 0;
  });

  afterEach(async () => {
    await world.close();
  });

  const warmCount = async () => (await metrics.warmDrains.get()).values[0]?.value ?? 0;
  const coldCount = async () => (await metrics.hydrations.get()).values[0]?.value ?? 0;

  async function send(waId: string, body: string) {
    const conv = await conversationId(dataKeys, biz.business_id, biz.phone_number_id, waId);
    await redis.set(keys.window(conv), String(Date.now() - 60_000), 'PX', 60_000);
    return outbound.accept({ businessId: biz.business_id, phoneNumberId: biz.phone_number_id, waId, message: { type: 'text', text: { body } } });
  }

  /** Pulls the transport's events (receipts) into the mailboxes until the device's receipts for `n` messages are in. */
  async function pullReceipts(conv: string, n: number) {
    await waitFor(async () => {
      const events = await transport.pull(100, 200, 30_000);
      if (events.length) await puller.handle(events);
      return (await redis.llen(keys.mailbox(conv))) >= n;
    }, 'receipts');
  }

  async function expectDeviceShows(waId: string, bodies: string[], once = true) {
    await waitFor(async () => (await deviceMessages(platform.url, waId)).length >= bodies.length, 'device shows the messages');
    const shown = await deviceMessages(platform.url, waId);
    expect(shown.map((m) => m.text?.body)).toEqual(bodies);
    if (once) expect(shown.every((m) => m.arrivals === 1)).toBe(true);
    const stats = await deviceStats(platform.url, waId);
    expect(stats.key_reuse).toBe(0);
    expect(stats.failures).toEqual({});
  }

  it('a drain after this process\'s own drain starts from the warm state, and the device reads every message once, in order', async () => {
    const host = makeHost();
    const waId = await createDevice(platform.url, '+15557790001');
    const first = await send(waId, 'warm one');
    const conv = conversationOfWamid(first.wamid)!;
    const [warm0, cold0] = [await warmCount(), await coldCount()];
    await host.drain(conv);
    expect(await coldCount()).toBe(cold0 + 1);
    await pullReceipts(conv, 1);
    await host.drain(conv);
    await send(waId, 'warm two');
    await host.drain(conv);
    await send(waId, 'warm three');
    await host.drain(conv);
    // One hydration from Redis, then three drains from memory.
    expect(await coldCount()).toBe(cold0 + 1);
    expect(await warmCount()).toBe(warm0 + 3);
    await expectDeviceShows(waId, ['warm one', 'warm two', 'warm three']);
  });

  it('is not used once another process committed, not even when the version number matches again (a re-created conversation)', async () => {
    const a = makeHost();
    const b = makeHost();
    const waId = await createDevice(platform.url, '+15557790002');
    const first = await send(waId, 'from a');
    const conv = conversationOfWamid(first.wamid)!;
    await a.drain(conv);
    await pullReceipts(conv, 1);
    await a.drain(conv); // a keeps the conversation warm at this version
    const versionA = await redis.hget(keys.meta(conv), 'v');
    // Another process runs the conversation: its session moves on.
    await send(waId, 'from b');
    await b.drain(conv);
    expect(await redis.hget(keys.meta(conv), 'v')).not.toBe(versionA);
    // a's warm version would be behind; make it look current by number alone, as a conversation deleted and
    // made again could: only the stored bytes tell them apart.
    await redis.hset(keys.meta(conv), 'v', versionA!);
    const [warm0, cold0] = [await warmCount(), await coldCount()];
    await send(waId, 'from a again');
    await a.drain(conv);
    expect(await warmCount()).toBe(warm0);
    expect(await coldCount()).toBe(cold0 + 1);
    // Encrypted from the session b left, not a's stale one (which would reuse b's message key).
    await expectDeviceShows(waId, ['from a', 'from b', 'from a again']);
  });

  it('a drain that fails leaves nothing warm behind: the next one reads Redis', async () => {
    const host = makeHost();
    const waId = await createDevice(platform.url, '+15557790003');
    const first = await send(waId, 'before the failure');
    const conv = conversationOfWamid(first.wamid)!;
    await host.drain(conv);
    await pullReceipts(conv, 1);
    // The step's commit is refused (the lease was lost meanwhile): the drain throws after the step encrypted
    // in memory, a session ahead of what Redis holds.
    await send(waId, 'refused once');
    const r = redis as unknown as { sealpostCommit: (...args: unknown[]) => Promise<unknown> };
    const commit = r.sealpostCommit.bind(redis);
    r.sealpostCommit = async (...args: unknown[]) => {
      r.sealpostCommit = commit;
      await redis.set(keys.lease(conv), 'thief', 'PX', 300);
      return commit(...args);
    };
    await expect(host.drain(conv)).rejects.toThrow(/LEASE_LOST/);
    await waitFor(async () => (await redis.exists(keys.lease(conv))) === 0, 'the stolen lease expires');
    const [warm0, cold0] = [await warmCount(), await coldCount()];
    await host.drain(conv);
    expect(await warmCount()).toBe(warm0);
    expect(await coldCount()).toBe(cold0 + 1);
    await expectDeviceShows(waId, ['before the failure', 'refused once']);
    expect(await redis.llen(keys.mailbox(conv))).toBe(0);
  });
});
