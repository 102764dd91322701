import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, deviceStats, openWindows, sendText, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';

const WORKERS = 3;
const CONVERSATIONS = 50;
const PER_CONVERSATION = 20;

describe('three worker processes against one Redis', () => {
  let sys: TestSystem;
  const children: ChildProcess[] = [];
  const stderr: string[] = [];

  beforeAll(async () => {
    sys = await startSystem({ workers: false });
    for (let i = 0; i < WORKERS; i++) {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], { env: sys.childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr!.on('data', (d) => stderr.push(String(d)));
      children.push(child);
    }
  });

  afterAll(async () => {
    await Promise.all(children.map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null) return resolve();
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
    })));
    await sys?.close();
  });

  it('delivers 1,000 messages over 50 conversations exactly once each, in API order, with no key reused', async () => {
    const users = await Promise.all(
      Array.from({ length: CONVERSATIONS }, (_, i) => createDevice(sys.platformUrl, `+1555200${String(i).padStart(4, '0')}`)),
    );
    await openWindows(sys, users);
    const sent = new Map<string, string[]>();
    // Each conversation's messages are sent one after another (API order); conversations run concurrently.
    await Promise.all(users.map(async (waId, u) => {
      const bodies: string[] = [];
      for (let i = 0; i < PER_CONVERSATION; i++) {
        const body = `u${u}-m${i}`;
        await sendText(sys, `+${waId}`, body);
        bodies.push(body);
      }
      sent.set(waId, bodies);
    }));
    await waitFor(async () => {
      const counts = await Promise.all(users.map(async (w) => (await deviceMessages(sys.platformUrl, w)).length));
      return counts.every((n) => n === PER_CONVERSATION);
    }, 'every device to show its messages', 180_000, 250);
    for (const waId of users) {
      const shown = await deviceMessages(sys.platformUrl, waId);
      expect(shown.map((m) => m.text?.body)).toEqual(sent.get(waId));
      expect(shown.every((m) => m.arrivals === 1)).toBe(true);
      const stats = await deviceStats(sys.platformUrl, waId);
      expect(stats.key_reuse).toBe(0);
      expect(stats.failures).toEqual({});
    }
    expect(stderr.join('')).not.toMatch(/Error/);
  }, 300_000);
});
