import { afterAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, deviceStats, openWindows, sendText, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';
import { workerProcesses } from '../helpers/worker-processes.ts';

const CONVERSATIONS = 30;
const PER_CONVERSATION = 12;

/**
 * Two workers never run one conversation at once: a worker paused (SIGSTOP) in the middle of its drains
 * loses its leases; another takes the conversations over and goes on; when the paused one wakes up, its
 * commits are refused (fenced), so every device still shows every message once, in order, with no message
 * key used twice.
 */
describe('a worker paused while it holds leases', () => {
  let sys: TestSystem;
  const workers = workerProcesses(() => sys.childEnv());
  // Short leases, so a dead or paused worker's claims and leases lapse quickly.
  const spawnWorker = () => workers.spawn({ SEALPOST_LEASE_MS: '2000' });

  afterAll(async () => {
    await workers.stopAll();
    await sys?.close();
  });

  it('is fenced out: the other worker carries on and no message is lost, repeated or reordered', async () => {
    sys = await startSystem({ workers: false, env: { SEALPOST_RETRANSMIT_BASE_MS: '1000', SEALPOST_RETRANSMIT_MAX_MS: '2000' } });
    const users = await Promise.all(Array.from({ length: CONVERSATIONS }, (_, i) => createDevice(sys.platformUrl, `+1555840${String(i).padStart(4, '0')}`)));
    const paused = spawnWorker();
    await openWindows(sys, users);
    const sent = new Map<string, string[]>();
    const sendRound = (i: number) => Promise.all(users.map(async (waId, u) => {
      const body = `p${u}-m${i}`;
      await sendText(sys, waId, body);
      sent.set(waId, [...(sent.get(waId) ?? []), body]);
    }));
    for (let i = 0; i < PER_CONVERSATION / 2; i++) await sendRound(i);
    // Pause it while it holds leases (in the middle of drains).
    const leases = async () => (await sys.ctx.redis.keys(`${sys.prefix}:{c:*}:lease`)).map((k) => k.slice(k.indexOf('{c:') + 3, k.indexOf('}')));
    let held: string[] = [];
    await waitFor(async () => (held = await leases()).length > 0, 'the worker holding leases', 60_000, 2);
    paused.kill('SIGSTOP');
    held = [...new Set([...held, ...(await leases())])];
    expect(held.length).toBeGreaterThan(0);
    const shownBefore = (await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)))).reduce((n, m) => n + m.length, 0);
    // Another worker takes over once the paused one's leases (2 s) and claims have lapsed, and goes on.
    spawnWorker();
    for (let i = PER_CONVERSATION / 2; i < PER_CONVERSATION; i++) await sendRound(i);
    await waitFor(async () => (await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)))).every((m) => m.length === PER_CONVERSATION),
      'every device to show its messages while the first worker is paused', 120_000, 250);
    expect(shownBefore).toBeLessThan(CONVERSATIONS * PER_CONVERSATION);
    // The paused worker wakes up in the middle of what it was doing: whatever it tries to commit is refused.
    paused.kill('SIGCONT');
    // It resumes its drains (whose commits are refused) and releases nothing it no longer holds: once no
    // drain holds a lease, whatever it would have done is done.
    await waitFor(async () => (await leases()).length === 0, 'every drain to end', 30_000, 100);
    for (const waId of users) {
      const shown = await deviceMessages(sys.platformUrl, waId);
      expect(shown.map((m) => m.text?.body), `device ${waId}`).toEqual(sent.get(waId));
      const stats = await deviceStats(sys.platformUrl, waId);
      expect(stats.key_reuse).toBe(0);
    }
    expect(paused.exitCode).toBeNull();
  }, 240_000);
});
