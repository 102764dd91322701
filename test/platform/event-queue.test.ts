import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/devices.ts';
import { EventQueue } from '../../src/platform/event-queue.ts';
import type { RouterEvent } from '../../src/platform/events.ts';
import { startPlatform, type Platform, type RunningPlatform } from '../../src/platform/server.ts';
import { createLogger } from '../../src/log.ts';
import { call, quietPlatform } from './helpers.ts';

const spam = (n: number): RouterEvent => ({ kind: 'spam_report', from: `1555000${n}`, to: '15550300300', timestamp: '1700000000' });
const pullNow = { max: 100, waitMs: 0, leaseMs: 30_000 };

let p: Platform | undefined;
let running: RunningPlatform | undefined;
afterEach(async () => {
  await p?.app.close();
  await running?.close();
  p = running = undefined;
});

describe('event queue', () => {
  it('pulls FIFO, hides leased events, and deletes acked ones', async () => {
    let now = 1_000;
    const q = new EventQueue(() => now);
    const ids = [1, 2, 3, 4].map((n) => q.push(spam(n)));
    const a = await q.pull({ ...pullNow, max: 2 });
    const b = await q.pull(pullNow);
    expect(a.map((e) => e.event_id)).toEqual(ids.slice(0, 2));
    expect(b.map((e) => e.event_id)).toEqual(ids.slice(2));
    expect(await q.pull(pullNow)).toEqual([]);
    expect(q.ack([ids[0]!, ids[3]!, 'ev_unknown'])).toBe(2);

    // After the lease the un-acked ones come back, still in enqueue order, ahead of newer events.
    const newer = q.push(spam(5));
    now += 30_000;
    expect((await q.pull(pullNow)).map((e) => e.event_id)).toEqual([ids[1], ids[2], newer]);
    expect(q.ack([ids[1]!, ids[2]!, newer])).toBe(3);
    expect(q.size).toBe(0);
  });

  it('wakes a long poll when an event arrives and serves waiters in order', async () => {
    const q = new EventQueue();
    const first = q.pull({ max: 10, waitMs: 10_000, leaseMs: 1000 });
    const second = q.pull({ max: 10, waitMs: 10_000, leaseMs: 1000 });
    const id = q.push(spam(1));
    expect((await first).map((e) => e.event_id)).toEqual([id]);
    const id2 = q.push(spam(2));
    expect((await second).map((e) => e.event_id)).toEqual([id2]);
    const aborted = new AbortController();
    const third = q.pull({ max: 10, waitMs: 10_000, leaseMs: 1000 }, aborted.signal);
    aborted.abort();
    expect(await third).toEqual([]);
    q.push(spam(3));
    expect(await q.pull(pullNow)).toHaveLength(1); // the aborted waiter took nothing
    q.close();
  });

  it('redelivers an un-acked event over HTTP once its lease expires', async () => {
    p = quietPlatform();
    p.state.queue.push(spam(1));
    const first = await call(p.app, 'POST', '/v1/events/pull', { lease_ms: 100, wait_ms: 0 });
    expect(first.json.events).toHaveLength(1);
    expect((await call(p.app, 'POST', '/v1/events/pull', { wait_ms: 0 })).json.events).toEqual([]);
    // This long poll is woken by the lease expiry, not by a new event.
    const again = await call(p.app, 'POST', '/v1/events/pull', { wait_ms: 10_000 });
    expect(again.json.events.map((e: { event_id: string }) => e.event_id)).toEqual([first.json.events[0].event_id]);
    expect((await call(p.app, 'POST', '/v1/events/ack', { event_ids: [first.json.events[0].event_id] })).json).toEqual({ acked: 1 });
  });

  it('gives concurrent pullers disjoint events', async () => {
    p = quietPlatform();
    for (let i = 0; i < 300; i++) p.state.queue.push(spam(i));
    const answers = await Promise.all([1, 2, 3, 4].map(() => call(p!.app, 'POST', '/v1/events/pull', { max: 100, wait_ms: 0 })));
    const ids = answers.flatMap((a) => a.json.events.map((e: { event_id: string }) => e.event_id));
    expect(ids).toHaveLength(300);
    expect(new Set(ids).size).toBe(300);
  });

  it('hands out 50,000 events once each, in order, and holds nothing once they are acknowledged', async () => {
    const q = new EventQueue();
    const n = 50_000;
    const pushed = Array.from({ length: n }, (_, i) => q.push(spam(i)));
    const pulled: string[] = [];
    // Bounded: every pull takes at least one event while any is ready.
    for (let round = 0; round < n && pulled.length < n; round++) {
      const batch = await q.pull({ max: 1000, waitMs: 0, leaseMs: 30_000 });
      expect(batch.length).toBeGreaterThan(0);
      pulled.push(...batch.map((e) => e.event_id));
      q.ack(batch.map((e) => e.event_id));
    }
    expect(pulled).toEqual(pushed);
    expect(q.size).toBe(0);
    expect(await q.pull({ max: 1000, waitMs: 0, leaseMs: 30_000 })).toEqual([]);
  });

  it('serves long polls on a real port and answers a client that gave up', async () => {
    running = await startPlatform({ host: '127.0.0.1', port: 0, logger: createLogger('platform-test', 'silent') });
    expect(await (await fetch(`${running.url}/healthz`)).json()).toEqual({ ok: true });
    const gaveUp = new AbortController();
    const abandoned = fetch(`${running.url}/v1/events/pull`, { method: 'POST', signal: gaveUp.signal }).catch(() => 'aborted');
    const waiting = fetch(`${running.url}/v1/events/pull`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ wait_ms: 10_000 }),
    });
    await waitFor(() => running!.state.queue.waiting === 2, 'both long polls waiting', 10_000, 5);
    gaveUp.abort();
    expect(await abandoned).toBe('aborted');
    await waitFor(() => running!.state.queue.waiting === 1, 'the abandoned poll to be let go', 10_000, 5);
    const id = running.state.queue.push(spam(1));
    const res = await waiting;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { events: { event_id: string }[] }).events.map((e) => e.event_id)).toEqual([id]);
  });
});
