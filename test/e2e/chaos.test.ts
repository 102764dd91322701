import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, deviceMessages, deviceStats, waitFor } from '../helpers/devices.ts';
import { startOwnRedisServer, type OwnRedis } from '../helpers/redis-server.ts';
import { openWindows, sendText, startSystem, type TestSystem } from '../helpers/system.ts';
import { readTraceLines } from '../../src/trace/store.ts';

const CONVERSATIONS = 100;
const PER_CONVERSATION = 20;
const WORKERS = 3;
const KILL_EVERY_MS = 3000;

describe('chaos: a lossy, flapping transport, workers killed with SIGKILL, Redis restarted', () => {
  let redis: OwnRedis | undefined;
  let sys: TestSystem | undefined;
  const workers = new Set<ChildProcess>();
  let killer: NodeJS.Timeout | undefined;

  afterAll(async () => {
    clearInterval(killer);
    await Promise.all([...workers].map((w) => new Promise<void>((r) => {
      if (w.exitCode !== null || w.signalCode !== null) return r();
      w.once('exit', () => r());
      w.kill('SIGKILL');
    })));
    await sys?.close();
    await redis?.stop();
  });

  it('shows every message exactly once, in API order, and reports it delivered', async () => {
    redis = await startOwnRedisServer();
    sys = await startSystem({
      workers: false,
      redisUrl: redis.url,
      env: { SEALPOST_RETRANSMIT_BASE_MS: '500', SEALPOST_RETRANSMIT_MAX_MS: '2000', SEALPOST_BUNDLE_RETRY_MS: '300' },
    });
    const s = sys;
    let kills = 0;
    const spawnWorker = () => {
      const w = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env: s.childEnv(), stdio: 'ignore' });
      workers.add(w);
      w.once('exit', () => workers.delete(w));
      return w;
    };
    for (let i = 0; i < WORKERS; i++) spawnWorker();

    const users = await Promise.all(Array.from({ length: CONVERSATIONS }, (_, i) => createDevice(s.platformUrl, `+1555800${String(i).padStart(4, '0')}`)));
    await openWindows(s, users);
    // The chaos starts once every user has written (the window is open): killing workers from here on.
    killer = setInterval(() => {
      const victim = [...workers][Math.floor(Math.random() * workers.size)];
      if (!victim) return;
      victim.kill('SIGKILL');
      kills++;
      spawnWorker();
    }, KILL_EVERY_MS);
    const faults = { drop: 0.2, duplicate: 0.1, reorder: true };
    await fetch(`${s.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(faults) });
    const t0 = Date.now();
    const sent = new Map<string, { wamid: string; body: string }[]>();
    let outage = false;
    await Promise.all(users.map(async (waId, u) => {
      const list: { wamid: string; body: string }[] = [];
      for (let i = 0; i < PER_CONVERSATION; i++) {
        if (!outage && Date.now() - t0 > 1500) {
          outage = true; // once, while messages are flowing: the transport is down for 10 s
          await fetch(`${s.platformUrl}/sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...faults, down_for_ms: 10_000 }) });
        }
        const body = `c${u}-m${i}`;
        list.push({ wamid: await sendText(s, waId, body), body });
      }
      sent.set(waId, list);
    }));
    // In the middle of the run, with most messages still being retransmitted: restart Redis (AOF keeps the state).
    await redis.restart();
    const all = [...sent.values()].flat();
    await waitFor(async () => {
      const delivered = new Set(s.receiver.statuses().filter((x) => x.status === 'delivered').map((x) => x.id));
      return all.every((m) => delivered.has(m.wamid));
    }, 'a delivered webhook for every message', 400_000, 500);
    clearInterval(killer);

    let arrivals = 0;
    let duplicates = 0;
    for (const waId of users) {
      const shown = await deviceMessages(s.platformUrl, waId);
      expect(shown.map((m) => m.text?.body), `device ${waId}`).toEqual(sent.get(waId)!.map((m) => m.body));
      expect(new Set(shown.map((m) => m.id)).size).toBe(shown.length);
      const stats = await deviceStats(s.platformUrl, waId);
      expect(stats.key_reuse).toBe(0);
      arrivals += shown.reduce((n, m) => n + m.arrivals, 0);
      duplicates += stats.duplicates;
    }
    let handedOver = 0;
    const convs = new Set(all.map((m) => conversationOfWamid(m.wamid)!));
    for (const c of convs) {
      const lines = (await readTraceLines(s.ctx.redis, s.ctx.keys.trace(c), c)).map((l) => JSON.parse(l) as { commands: { type: string }[] });
      handedOver += lines.flatMap((l) => l.commands).filter((cmd) => cmd.type === 'transport.send').length;
    }
    const statuses = s.receiver.statuses();
    const deliveredOnce = new Set(statuses.filter((x) => x.status === 'delivered').map((x) => x.id));
    for (const m of all) {
      const mine = statuses.filter((x) => x.id === m.wamid).map((x) => x.status);
      expect(mine.indexOf('sent')).toBeLessThan(mine.indexOf('delivered') === -1 ? Infinity : mine.lastIndexOf('delivered'));
    }
    const report = {
      accepted: all.length,
      handed_to_transport: handedOver,
      retransmitted: handedOver - all.length,
      copies_reaching_devices: arrivals,
      duplicates_dropped_by_devices: duplicates,
      shown_once: all.length,
      delivered_webhooks: deliveredOnce.size,
      workers_killed: kills,
      redis_restarts: 1,
      seconds: Math.round((Date.now() - t0) / 1000),
    };
    console.log(`chaos reconciliation: ${JSON.stringify(report)}`);
    expect(report.delivered_webhooks).toBe(all.length);
    expect(kills).toBeGreaterThan(0);
    expect(report.retransmitted).toBeGreaterThan(0);
  }, 600_000);
});
