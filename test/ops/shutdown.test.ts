import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, openWindows, sendText, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';

describe('SIGTERM: a worker finishes or hands back its jobs and exits cleanly', () => {
  let sys: TestSystem;
  const children: ChildProcess[] = [];
  const startWorker = () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env: sys.childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    child.stdout!.on('data', (d) => out.push(String(d)));
    child.stderr!.on('data', (d) => out.push(String(d)));
    children.push(child);
    return { child, out };
  };

  beforeAll(async () => {
    sys = await startSystem({ workers: false });
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await sys?.close();
  });

  it('exits 0 mid-flight, and every accepted message is still delivered once (by the next worker)', async () => {
    const users = await Promise.all(Array.from({ length: 10 }, (_, i) => createDevice(sys.platformUrl, `+1555310${String(i).padStart(4, '0')}`)));
    const first = startWorker();
    await openWindows(sys, users);
    const sending = Promise.all(users.map(async (waId, u) => {
      for (let i = 0; i < 10; i++) await sendText(sys, waId, `graceful ${u}.${i}`);
    }));
    // Stop the worker while messages are still arriving and being worked on.
    await waitFor(async () => (await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)))).some((m) => m.length > 0), 'the first worker to deliver something', 120_000);
    const exited = new Promise<number | null>((resolve) => first.child.once('exit', (code) => resolve(code)));
    first.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(first.out.join('')).toContain('SIGTERM, finishing in-flight work');
    await sending;
    startWorker();
    await waitFor(async () => (await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)))).every((m) => m.length === 10), 'all 100 messages shown', 180_000, 250);
    for (const [u, waId] of users.entries()) {
      const shown = await deviceMessages(sys.platformUrl, waId);
      expect(shown.map((m) => m.text?.body)).toEqual(Array.from({ length: 10 }, (_, i) => `graceful ${u}.${i}`));
      expect(shown.every((m) => m.arrivals >= 1)).toBe(true);
    }
    await waitFor(() => sys.receiver.statuses().filter((s) => s.status === 'delivered').length >= 100, 'delivered webhooks for all 100', 120_000);
  }, 300_000);
});
