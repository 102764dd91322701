import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRedis, mastersOf, scanEach } from '../../src/redis/connect.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { parseTrace, replayTrace } from '../../src/trace/replay.ts';
import { readTraceLines } from '../../src/trace/store.ts';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { startOwnCluster, type OwnCluster } from '../helpers/redis-cluster.ts';
import { deletePrefix, testRedisUrl } from '../helpers/redis.ts';
import { sendTemplate, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

/**
 * The whole system on a local 3-master Redis Cluster (started here from Debian's redis-server): first
 * contact, retransmission, inbound, a reply in the window, trace and replay, retention deleting the message
 * and then the user, worker processes stopped mid-flight and replaced; every key of a conversation in one slot.
 */
describe('on a 3-master Redis Cluster', () => {
  let cluster: OwnCluster;
  let sys: TestSystem;
  const children: ChildProcess[] = [];
  const stderr: string[] = [];

  const spawnWorker = () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env: sys.childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => stderr.push(String(d)));
    children.push(child);
    return child;
  };
  const stopChild = (c: ChildProcess, signal: NodeJS.Signals = 'SIGTERM') => new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once('exit', () => resolve());
    c.kill(signal);
  });

  beforeAll(async () => {
    cluster = await startOwnCluster();
    // Workers run in their own processes (below); the API, platform and receiver here.
    sys = await startSystem({ redisUrl: cluster.url, workers: false, env: { SEALPOST_RETENTION: '10m', SEALPOST_SWEEP_EVERY_MS: '500', SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '600' } });
    spawnWorker();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(children.map((c) => stopChild(c)));
    await sys?.close();
    await cluster?.stop();
  });

  const delivered = (wamid: string) => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered');
  const faults = (body: Record<string, unknown>) =>
    fetch(`${sys.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('delivers end to end: first contact, retransmission through a lossy transport, inbound, a reply in the window', async () => {
    const wa = await createDevice(sys.platformUrl, '+15557600001');
    const first = await sendTemplate(sys, wa, 'welcome');
    await waitFor(() => delivered(first), 'first contact delivered', 60_000);

    await faults({ drop: 1 });
    const lost = await sendTemplate(sys, wa, 'shipping_update');
    // Its first copy is lost: only a retransmission can deliver it.
    await waitFor(async () => ((await (await fetch(`${sys.platformUrl}/sim/faults`)).json()) as { dropped: number }).dropped >= 1, 'the first copy dropped', 60_000);
    await faults({});
    await waitFor(() => delivered(lost), 'delivered after retransmissions', 60_000);

    const inbound = await userWrites(sys, wa, 'thanks, when does it arrive?');
    expect(sys.receiver.messages().find((m) => m.id === inbound)).toMatchObject({ type: 'text', text: { body: 'thanks, when does it arrive?' } });
    const reply = await sendText(sys, wa, 'tomorrow morning');
    await waitFor(() => delivered(reply), 'reply delivered', 60_000);
    expect((await deviceMessages(sys.platformUrl, wa)).map((m) => m.id)).toEqual([first, lost, reply]);

    // The trace, read from the cluster, replays; the retransmission is in it.
    const conv = conversationOfWamid(reply)!;
    const lines = await readTraceLines(sys.ctx.redis, sys.ctx.keys.trace(conv), conv);
    expect(lines.some((l) => l.includes('"RETRANSMIT_DUE"'))).toBe(true);
    expect(replayTrace(parseTrace(lines.join('\n')))).toMatchObject({ ok: true });
  }, 120_000);

  it('keeps every key of a conversation in one slot, and spreads conversations over the masters', async () => {
    const users = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => createDevice(sys.platformUrl, `+1555761000${i}`)));
    const ids = await Promise.all(users.map((u) => sendTemplate(sys, u, 'welcome')));
    await waitFor(() => ids.every(delivered), 'delivered', 60_000).catch((e) => {
      console.log('DEBUG statuses', JSON.stringify(sys.receiver.statuses().filter((s) => ids.includes(s.id))), 'stderr', stderr.join('').slice(-3000));
      throw e;
    });
    const r = connectRedis(cluster.url);
    try {
      const slotsByConv = new Map<string, Set<number>>();
      const mastersByConv = new Map<string, Set<number>>();
      const masters = await mastersOf(r);
      for (let n = 0; n < masters.length; n++) {
        let cursor = '0';
        do {
          const [next, keys] = await masters[n]!.scan(cursor, 'MATCH', `${sys.prefix}:{c:*`, 'COUNT', 1000);
          cursor = next;
          for (const k of keys) {
            const conv = /\{c:([0-9a-f]+)\}/.exec(k)![1]!;
            const slot = Number(await masters[n]!.call('CLUSTER', 'KEYSLOT', k));
            slotsByConv.set(conv, (slotsByConv.get(conv) ?? new Set()).add(slot));
            mastersByConv.set(conv, (mastersByConv.get(conv) ?? new Set()).add(n));
          }
        } while (cursor !== '0');
      }
      for (const id of ids) expect(slotsByConv.get(conversationOfWamid(id)!)?.size, id).toBe(1);
      // Seven conversations over three masters: more than one master holds some.
      expect(new Set([...mastersByConv.values()].flatMap((s) => [...s])).size).toBeGreaterThan(1);
    } finally {
      r.disconnect();
    }
  }, 120_000);

  it('loses nothing when its worker processes are killed mid-flight and replaced', async () => {
    const users = await Promise.all([1, 2, 3, 4, 5].map((i) => createDevice(sys.platformUrl, `+1555762000${i}`)));
    const ids: string[] = [];
    for (let round = 0; round < 4; round++) for (const u of users) ids.push(await sendTemplate(sys, u, `update_${round}`));
    // Kill the worker hard while it works, start two new ones.
    await stopChild(children[0]!, 'SIGKILL');
    spawnWorker();
    spawnWorker();
    await waitFor(() => ids.every(delivered), 'every message delivered after the crash', 90_000);
    for (const u of users) {
      const shown = await deviceMessages(sys.platformUrl, u);
      expect(shown.filter((m) => ids.includes(m.id))).toHaveLength(4);
    }
  }, 150_000);

  it('deletes the message at the end of retention, then the conversation and the user', async () => {
    // A business keeping messages 8 s (the others keep them 10 minutes: a worker crash must not outlast a TTL).
    const short = await sys.ctx.businesses.create({ name: 'Short Co', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me', retentionMs: 8_000, throughputMps: 1000 });
    await sys.ctx.publisher.ensure(short.phone_number_id);
    const wa = await createDevice(sys.platformUrl, '+15557630001');
    const res = await fetch(`${sys.apiUrl}/v23.0/${short.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${short.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: wa, type: 'template', template: { name: 'welcome', language: { code: 'en_US' } } }),
    });
    const wamid = ((await res.json()) as { messages: { id: string }[] }).messages[0]!.id;
    await waitFor(() => delivered(wamid), 'delivered', 60_000);
    const conv = conversationOfWamid(wamid)!;
    expect(await sys.ctx.redis.exists(sys.ctx.keys.meta(conv))).toBe(1);
    await waitFor(async () => (await sys.ctx.redis.exists(sys.ctx.keys.meta(conv))) === 0, 'the conversation deleted after its retention', 60_000);
    // Nothing of the conversation stays on any node (a late event's mailbox goes with the next drain).
    const left = async () => {
      const keys: string[] = [];
      await scanEach(sys.ctx.redis, `${sys.prefix}:{c:${conv}}*`, async (k) => { keys.push(...k); });
      return keys;
    };
    await waitFor(async () => (await left()).length === 0, 'no key of the conversation left', 30_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}: ${(await left()).map((k) => k.slice(sys.prefix.length)).join(', ')}`);
    });
    expect(stderr.join('')).not.toMatch(/CROSSSLOT|MOVED|ClusterAllFailedError/);
  }, 120_000);

  it("keeps a region's data on a cluster: SEALPOST_REGIONS takes a cluster URL with its node list", async () => {
    // The shared store is a single node; the region "eu" is this cluster (the comma-separated nodes stay in its URL).
    const regional = await startSystem({ redisUrl: testRedisUrl(), env: { SEALPOST_REGIONS: `eu=${cluster.url},us=${testRedisUrl()}` } });
    try {
      expect([...regional.ctx.stores.regionNames].sort()).toEqual(['eu', 'us']);
      const eu = await regional.ctx.businesses.create({ name: 'EU GmbH', webhookUrl: regional.receiver.url, appSecret: regional.appSecret, verifyToken: 'verify-me', region: 'eu' });
      await regional.ctx.publisher.ensure(eu.phone_number_id);
      const wa = await createDevice(regional.platformUrl, '+4915112340001');
      const wamid = await sendTemplate(regional, wa, 'welcome', eu);
      await waitFor(() => regional.receiver.statuses().some((st) => st.id === wamid && st.status === 'delivered'), 'delivered through the regional cluster', 60_000);
      const conv = conversationOfWamid(wamid)!;
      const onCluster: string[] = [];
      const r = connectRedis(cluster.url);
      try {
        await scanEach(r, `${regional.prefix}:{c:${conv}}*`, async (k) => { onCluster.push(...k); });
      } finally {
        r.disconnect();
      }
      expect(onCluster.map((k) => k.slice(k.indexOf('}:') + 2))).toEqual(expect.arrayContaining(['meta', 'snap', 'sess', `m:${wamid}`]));
      expect(await regional.ctx.redis.exists(regional.ctx.keys.meta(conv))).toBe(0);
    } finally {
      await regional.close();
      await deletePrefix(cluster.url, regional.prefix);
    }
  }, 120_000);
});
