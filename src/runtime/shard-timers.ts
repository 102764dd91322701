import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { TimersQueueJob } from '../queues/timers.ts';
import type { Keys } from '../store/keys.ts';
import type { Stores } from '../store/stores.ts';
import { LuaScript } from './lua/read-script.ts';
import type { MailboxEvent, Mailboxes } from './mailbox.ts';
import { shardOf } from './shards.ts';

const DUE = new LuaScript('timers-due-2.lua');
const DONE = new LuaScript('timers-done-2.lua');
const TIMER = new LuaScript('timer-2.lua');

/** Tick granularities: a timer due in d ms is ticked at the end of a bucket of at most d/10 (≥ 100 ms). */
const BUCKETS = [100, 250, 500, 1000, 2000];

/** Timers moved to mailboxes per round trip of a tick. */
const PER_PASS = 256;

/** The bucket a timer due at `at` (scheduled at `now`) is ticked at: never before `at`, at most a tenth of its delay late. */
export function tickBucket(at: number, now: number): number {
  const d = Math.max(0, at - now);
  let g = BUCKETS[0]!;
  for (const b of BUCKETS) if (b <= d / 10) g = b;
  // Never a bucket already begun: a timer due now (or in the past, after a slow step) goes to the next one,
  // whose tick is still to run (a bucket's tick that already ran would not fire it).
  return Math.max(Math.ceil(at / g) * g, (Math.floor(now / BUCKETS[0]!) + 1) * BUCKETS[0]!);
}

/**
 * Durable timers kept per shard (src/runtime/shards.ts): a sorted set of `<conversation id> <timer id>` by
 * due time plus the event each posts, and a delayed BullMQ tick job per shard and time bucket (visible on the
 * queue board) instead of a delayed job per timer. Scheduling is two writes in the shard's slot and, unless
 * this process already made the bucket's tick, one job; cancelling is two writes and no job. A tick moves the
 * shard's due timers to their conversations' mailboxes, then removes them (a crash in between posts them
 * again: a timer event is idempotent for the machine). The shard sweep (shard-runner.ts) fires timers whose
 * tick was lost.
 */
export class ShardTimers {
  /** Ticks this process has added, by `<region>|<shard>|<bucket>` (pruned as they pass). */
  private readonly ticks = new Map<string, number>();

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly queue: Queue<TimersQueueJob>,
    private readonly mailboxes: Mailboxes,
    private readonly mailboxTtlMs: number,
    private readonly log: Logger,
  ) {}

  /** Schedules (or moves) the conversation's timer `timerId` to post `event` at `at`. */
  async schedule(conversationId: string, timerId: string, at: number, event: MailboxEvent): Promise<void> {
    const shard = shardOf(conversationId);
    const region = await this.stores.regionOf(conversationId);
    const member = `${conversationId} ${timerId}`;
    await TIMER.run(this.stores.forRegion(region), [this.keys.shardTimers(shard), this.keys.shardTimerEvents(shard)], [member, at, JSON.stringify(event)]);
    await this.tickAt(shard, region, at);
  }

  /** Cancels a timer (one already fired or never made is fine). */
  async cancel(conversationId: string, timerId: string): Promise<void> {
    const shard = shardOf(conversationId);
    const member = `${conversationId} ${timerId}`;
    await TIMER.run(await this.stores.forConversation(conversationId), [this.keys.shardTimers(shard), this.keys.shardTimerEvents(shard)], [member, '']);
  }

  /** Makes sure a tick job runs for the shard at the bucket of `at` (one per shard and bucket: the job id). */
  private async tickAt(shard: number, region: string | null, at: number): Promise<void> {
    const bucket = tickBucket(at, Date.now());
    const id = `${region ?? ''}|${shard}|${bucket}`;
    if (this.ticks.has(id)) return;
    await this.queue.add('tick', region ? { shard, region } : { shard }, {
      // (BullMQ job ids cannot hold ':'.)
      jobId: `tick-${shard}-${bucket}${region ? `-${region.replaceAll(':', '_')}` : ''}`,
      delay: Math.max(0, bucket - Date.now()),
      removeOnComplete: true,
      removeOnFail: 1000,
      attempts: 10,
      backoff: { type: 'exponential', delay: 500 },
    });
    this.ticks.set(id, bucket);
    if (this.ticks.size > 4096) {
      const now = Date.now();
      for (const [k, b] of this.ticks) if (b < now) this.ticks.delete(k);
    }
  }

  /** Posts the shard's due timers to their mailboxes and removes them; answers how many fired. */
  async fire(shard: number, region: string | null, now = Date.now()): Promise<number> {
    const redis = this.stores.forRegion(region);
    const timers = this.keys.shardTimers(shard);
    const events = this.keys.shardTimerEvents(shard);
    let fired = 0;
    for (;;) {
      const flat = (await DUE.run(redis, [timers, events], [String(now), String(PER_PASS)])) as (string | null)[];
      if (!flat.length) break;
      const byConversation = new Map<string, MailboxEvent[]>();
      const done: string[] = [];
      for (let i = 0; i < flat.length; i += 3) {
        const member = flat[i]!;
        const conv = member.slice(0, member.indexOf(' '));
        done.push(member, flat[i + 1]!);
        if (!flat[i + 2]) continue;
        try {
          const list = byConversation.get(conv) ?? [];
          list.push(JSON.parse(flat[i + 2]!) as MailboxEvent);
          byConversation.set(conv, list);
        } catch {
          this.log.warn({ conversation_id: conv }, 'unreadable timer event dropped');
        }
      }
      await Promise.all([...byConversation].map(([conv, evs]) => this.mailboxes.post(conv, evs, this.mailboxTtlMs)));
      await DONE.run(redis, [timers, events], done);
      fired += flat.length / 3;
      if (flat.length / 3 < PER_PASS) break;
    }
    return fired;
  }
}
