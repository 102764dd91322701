import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { maskNumbers } from '../log.ts';
import { metrics } from '../ops/metrics.ts';
import { inSpan } from '../ops/tracing.ts';
import type { Keys } from '../store/keys.ts';
import { SHARDS } from './shards.ts';

/**
 * How a shard with conversations ready reaches a worker process: a wake-up token pushed onto a list in the
 * shared store, popped by whichever worker process blocks on it first. One push and one pop (two commands)
 * where a BullMQ job cost some twenty (its add, the worker's fetch, its completion), which under low load was
 * paid for nearly every event. At most one token waits per shard (the shard's awake flag, set by the mark
 * that pushes it, mark-2.lua, and by the sweep, stale-4.lua; cleared by the shard loop's first claim). A token
 * lost with a process that popped it and died leaves the flag until it expires: the runner's sweep wakes the
 * shard then (src/runtime/shard-runner.ts). BullMQ still drives what must wait for a time (timers, deletions).
 */

/**
 * A shard to wake: its number, its region (null: the shared store), when it was pushed (ms, the pusher's
 * clock: the wait metric) and, tracing on, the waker's span.
 */
export interface ShardWake {
  shard: number;
  region: string | null;
  at: number;
  tp?: string;
}

/** The list entry of a wake-up: `shard|at|traceparent|region` (the region last: it is configuration text). */
export function encodeWake(w: ShardWake): string {
  return `${w.shard}|${w.at}|${w.tp ?? ''}|${w.region ?? ''}`;
}

/** A list entry read back, or null if it is not one (never thrown: a bad entry must not stop the listener). */
export function decodeWake(entry: string): ShardWake | null {
  const a = entry.indexOf('|');
  const b = a < 0 ? -1 : entry.indexOf('|', a + 1);
  const c = b < 0 ? -1 : entry.indexOf('|', b + 1);
  if (c < 0) return null;
  const shard = Number(entry.slice(0, a));
  const at = Number(entry.slice(a + 1, b));
  if (!Number.isInteger(shard) || shard < 0 || shard >= SHARDS || !Number.isFinite(at) || a + 1 === b) return null;
  const tp = entry.slice(b + 1, c);
  const region = entry.slice(c + 1);
  return { shard, region: region || null, at, ...(tp ? { tp } : {}) };
}

/** Pushes a shard's wake-up (inside a producer span when tracing is on, whose context the token carries). */
export async function pushWake(shared: Redis, keys: Keys, shard: number, region: string | null, lane: 'events' | 'sends'): Promise<void> {
  const list = keys.wakeList(lane);
  await inSpan('sealpost.wake', {
    kind: 'producer',
    attributes: { 'messaging.system': 'redis', 'messaging.destination.name': list, 'messaging.operation.type': 'send', 'sealpost.shard': shard },
  }, (span) => shared.rpush(list, encodeWake({ shard, region, at: Date.now(), ...(span?.traceparent ? { tp: span.traceparent } : {}) })));
}

/** What a wake-up runs: a shard's loop (src/runtime/shard-runner.ts). */
export interface ShardLoop {
  run(shard: number, region: string | null): Promise<number>;
}

/** How long one blocking pop waits before it looks again whether the listener was closed (seconds). */
const POP_WAIT_S = 1;

/**
 * A worker process's side of the wake list: blocks on both lanes (events first) on a connection of its own,
 * and runs each popped shard's loop, up to `concurrency` at once; a full process stops popping, so tokens go
 * to processes with room.
 */
export class WakeListener {
  private readonly conn: Redis;
  private running = true;
  private readonly active = new Set<Promise<void>>();
  private freed: (() => void) | null = null;
  private loop: Promise<void> | null = null;

  constructor(
    shared: Redis,
    private readonly keys: Keys,
    private readonly shards: ShardLoop,
    private readonly concurrency: number,
    private readonly log: Logger,
  ) {
    this.conn = shared.duplicate();
  }

  start(): this {
    this.loop ??= this.listen();
    return this;
  }

  private async listen(): Promise<void> {
    const lists = [this.keys.wakeList('events'), this.keys.wakeList('sends')];
    let failures = 0;
    while (this.running) {
      if (this.active.size >= this.concurrency) {
        await new Promise<void>((resolve) => (this.freed = resolve));
        continue;
      }
      let popped: [string, string] | null;
      try {
        popped = await this.conn.blpop(...lists, POP_WAIT_S);
        failures = 0;
      } catch (e) {
        if (!this.running) break;
        // Redis away (a restart, a failover): ioredis reconnects; marks made meanwhile wait in their shards.
        failures++;
        if (failures === 1 || failures % 20 === 0) this.log.warn({ err: (e as Error).message, failures }, 'wake list unreachable; retrying');
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * failures)));
        continue;
      }
      if (!popped) continue;
      const wake = decodeWake(popped[1]);
      if (!wake) {
        this.log.warn({ entry: popped[1].slice(0, 40) }, 'unreadable wake-up dropped');
        continue;
      }
      const p = this.runShard(wake, popped[0]).finally(() => {
        this.active.delete(p);
        const freed = this.freed;
        this.freed = null;
        freed?.();
      });
      this.active.add(p);
    }
  }

  private async runShard(w: ShardWake, list: string): Promise<void> {
    const started = Date.now();
    // As for a queue's jobs: the wait from the push, the time the shard's loop took.
    metrics.jobWaitSeconds.observe({ queue: 'conversations' }, Math.max(0, started - w.at) / 1000);
    try {
      await inSpan('sealpost.wake', {
        kind: 'consumer', parent: w.tp ?? null,
        attributes: { 'messaging.system': 'redis', 'messaging.destination.name': list, 'messaging.operation.type': 'process', 'sealpost.shard': w.shard },
      }, () => this.shards.run(w.shard, w.region));
    } catch (e) {
      // Its conversations stay ready; the sweep wakes the shard again once its awake flag has lapsed.
      metrics.jobFailures.inc({ queue: 'conversations' });
      this.log.warn({ shard: w.shard, err: maskNumbers((e as Error).message) }, 'shard wake-up failed');
    } finally {
      metrics.jobSeconds.observe({ queue: 'conversations' }, (Date.now() - started) / 1000);
    }
  }

  /** Stops popping, then waits for the shard loops it started (their drains are the runner's to wait for). */
  async close(): Promise<void> {
    this.running = false;
    const freed = this.freed;
    this.freed = null;
    freed?.();
    this.conn.disconnect();
    await this.loop;
    while (this.active.size) await Promise.allSettled([...this.active]);
  }
}
