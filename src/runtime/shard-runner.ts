import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { maskNumbers } from '../log.ts';
import { metrics } from '../ops/metrics.ts';
import type { Keys } from '../store/keys.ts';
import type { Stores } from '../store/stores.ts';
import { LuaScript } from './lua/read-script.ts';
import { AWAKE_MS, type Mailboxes } from './mailbox.ts';
import { SENDS_LANE, SHARDS } from './shards.ts';

const CLAIM = new LuaScript('claim-3.lua');
const SETTLE = new LuaScript('settle-2.lua');
const STALE = new LuaScript('stale-4.lua');
const TURN = new LuaScript('sweep-turn-1.lua');

/** A timer this far past due with no tick fired is fired by the sweep (ticks are at most 2 s late by design). */
const LOST_TICK_MS = 5000;

/** What the runner drives: the actor host's drain of one conversation under its lease. */
export interface Drainer {
  drainAndCheck(conversationId: string): Promise<{ handled: number; pending: boolean }>;
}

/** Settings of the shard runner. */
export interface ShardRunnerOptions {
  /** Conversations one shard's drain runs at once. */
  perShard?: number;
  /** How long one wake-up's loop keeps claiming before it hands the shard back (fairness between shards). */
  budgetMs?: number;
  /** A drain still running after this long no longer keeps its shard's loop waiting for it. */
  slowMs?: number;
  /** The conversation lease's duration: a claim not settled within it counts as abandoned. */
  leaseMs?: number;
  /** Attempts of a failing conversation before its claim is dropped (its next event retries it). */
  maxAttempts?: number;
  /** Fires a shard's due timers whose tick was lost (shard-timers.ts). */
  onTimersDue?: (shard: number, region: string | null, earliest: number) => Promise<void>;
}

/** A wake-up's loop: whether it still claims, and how many of its drains have ended. */
interface Loop {
  active: boolean;
  /** Its drains still running (removed in the same turn as `ended` counts them). */
  mine: Set<string>;
  ended: number;
  signal: () => void;
}

/** Another process held a conversation's lease (its own drain reports events that arrive meanwhile). */
const isLeaseBusy = (e: unknown) => (e as Error)?.name === 'LeaseBusyError';
const isConflict = (e: unknown) => (e as Error)?.name === 'CommitConflictError';

/**
 * Runs shards: a shard's wake-up (src/runtime/wake-list.ts) runs a loop that claims the shard's ready
 * conversations (claim-3.lua) and drains each under its own fenced lease, a few at once, claiming more as
 * drains end until none is ready. A drain waiting on the network (a slow bundle fetch) holds up only itself:
 * the loop polls for newly ready conversations while it runs, and ends without it once nothing else is ready
 * (the drain settles on its own, waking the shard again if it must). Claims name the conversation with the
 * time they lapse: a process that dies mid-drain leaves claims that go back to the ready set once its leases
 * have expired too. One loop per shard runs in a process at a time: a wake-up of a shard whose loop runs
 * here already makes that loop look once more before it ends.
 */
export class ShardRunner {
  /** Conversations drained in this process now; `again` when claimed once more meanwhile. */
  private readonly running = new Map<string, { again: boolean }>();
  /** Shards whose loop runs in this process (`region|shard`); `again` when woken once more meanwhile. */
  private readonly loops = new Map<string, { again: boolean }>();
  /** Every drain in flight in this process (close() waits for them). */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly attempts = new Map<string, number>();
  private readonly perShard: number;
  private readonly budgetMs: number;
  private readonly slowMs: number;
  private readonly leaseMs: number;
  private readonly maxAttempts: number;
  private sweepTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly host: Drainer,
    private readonly mailboxes: Mailboxes,
    private readonly log: Logger,
    private readonly opts: ShardRunnerOptions = {},
  ) {
    this.perShard = opts.perShard ?? 4;
    this.budgetMs = opts.budgetMs ?? 2000;
    this.slowMs = opts.slowMs ?? 200;
    this.leaseMs = opts.leaseMs ?? 15_000;
    this.maxAttempts = opts.maxAttempts ?? 20;
  }

  /** A wake-up of a shard: drains its ready conversations; answers how many drains it started. */
  async run(shard: number, region: string | null): Promise<number> {
    const key = `${region ?? ''}|${shard}`;
    const live = this.loops.get(key);
    if (live) {
      live.again = true;
      return 0;
    }
    const state = { again: false };
    this.loops.set(key, state);
    let count = 0;
    try {
      for (;;) {
        state.again = false;
        const { started, handedBack } = await this.loop(shard, region);
        count += started;
        // Out of time, the loop pushed a wake-up of the shard: the shard waits its turn behind the others.
        if (!state.again || handedBack) break;
      }
    } finally {
      this.loops.delete(key);
    }
    return count;
  }

  /** One loop over a shard: claims and drains until nothing is ready (or its time is up). */
  private async loop(shard: number, region: string | null): Promise<{ started: number; handedBack: boolean }> {
    const redis = this.stores.forRegion(region);
    const started = Date.now();
    let wakeUp: () => void = () => {};
    const loop: Loop = { active: true, mine: new Set(), ended: 0, signal: () => wakeUp() };
    const mine = loop.mine;
    let count = 0;
    let overBudget = false;
    let first = true;
    try {
      for (;;) {
        overBudget = Date.now() - started >= this.budgetMs;
        const room = this.perShard - mine.size;
        const endedBefore = loop.ended;
        const claimed = room > 0 && !overBudget ? await this.claim(redis, shard, room, first) : [];
        first = false;
        for (const conv of claimed) if (this.start(conv, shard, region, redis, loop)) count++;
        if (!mine.size) break;
        // Wait for a drain to end (then claim again) or, after a while, look for newly ready conversations.
        const ended = await new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(false), this.slowMs);
          wakeUp = () => {
            clearTimeout(t);
            resolve(true);
          };
          if (loop.ended !== endedBefore) wakeUp();
        });
        wakeUp = () => {};
        // Only slow drains left and nothing new ready (or the loop's time is up): end the loop; those drains
        // settle on their own. Checked and set in one turn, so a drain ending now either sees the loop active
        // (and its conversation is claimed again) or not (and wakes the shard itself).
        if (!ended && loop.ended === endedBefore && (overBudget || !claimed.length)) break;
      }
    } finally {
      loop.active = false;
    }
    if (overBudget) await this.mailboxes.wakeShard(shard, region);
    metrics.shardDrains.observe(count);
    return { started: count, handedBack: overBudget };
  }

  /** Starts draining a claimed conversation, or notes the claim for the drain already running it here. */
  private start(conv: string, shard: number, region: string | null, redis: Redis, loop: Loop): boolean {
    const here = this.running.get(conv);
    if (here) {
      here.again = true;
      return false;
    }
    const state = { again: false };
    this.running.set(conv, state);
    loop.mine.add(conv);
    const p = this.drainOne(conv, shard, region, redis, loop, state).finally(() => {
      this.inFlight.delete(p);
    });
    this.inFlight.add(p);
    return true;
  }

  private async drainOne(conv: string, shard: number, region: string | null, redis: Redis, loop: Loop, state: { again: boolean }): Promise<void> {
    let mode: 'done' | 'again' | 'retry' = 'done';
    let lapse = 0;
    try {
      const { pending } = await this.host.drainAndCheck(conv);
      this.attempts.delete(conv);
      if (pending) mode = 'again';
    } catch (e) {
      if (isLeaseBusy(e)) {
        // Another process drains it: its release reports what arrived meanwhile. Should it have died, the
        // claim lapses once its lease has expired.
        mode = 'retry';
        lapse = Date.now() + this.leaseMs;
      } else {
        const n = (this.attempts.get(conv) ?? 0) + 1;
        if (n >= this.maxAttempts) {
          this.attempts.delete(conv);
          this.log.error({ conversation_id: conv, attempts: n, err: maskNumbers((e as Error).message) }, 'conversation drain failed; left until its next event');
        } else {
          this.attempts.set(conv, n);
          mode = 'retry';
          lapse = Date.now() + Math.min(30_000, 200 * 2 ** (n - 1));
          if (!isConflict(e)) this.log.warn({ conversation_id: conv, attempt: n, err: maskNumbers((e as Error).message) }, 'conversation drain failed; retrying');
        }
        metrics.jobFailures.inc({ queue: 'conversations' });
      }
    } finally {
      this.running.delete(conv);
    }
    if (state.again && mode === 'done') mode = 'again';
    try {
      const added = Number(await SETTLE.run(redis, [this.keys.shardReady(shard), this.keys.shardClaimed(shard)], [conv, mode, String(mode === 'retry' ? lapse : Date.now())]));
      // A drain that outlived its loop wakes the shard itself.
      if (added && !loop.active) await this.mailboxes.wakeShard(shard, region);
    } catch (e) {
      // The claim lapses and the conversation is drained again then.
      this.log.warn({ conversation_id: conv, err: (e as Error).message }, 'could not settle a drain');
    } finally {
      loop.mine.delete(conv);
      loop.ended++;
      loop.signal();
    }
  }

  private async claim(redis: Redis, shard: number, count: number, first: boolean): Promise<string[]> {
    const now = Date.now();
    return (await CLAIM.run(redis, [this.keys.shardReady(shard), this.keys.shardClaimed(shard), this.keys.shardAwake(shard)],
      [String(now), String(count), String(now + this.leaseMs), first ? '1' : ''])) as string[];
  }

  /**
   * One pass over every shard of every store: wakes shards with ready conversations nobody woke them for
   * (older than `staleMs`), with abandoned or lapsed claims, and hands due timers on. Any number of processes
   * may sweep: a shard with a wake-up waiting (its awake flag) is not woken again until the flag is cleared or
   * lapses, so of the sweeps and marks in between one pushes it.
   */
  async sweep(now = Date.now(), staleMs = 1000): Promise<number> {
    let woken = 0;
    const passes: Promise<void>[] = [];
    for (const region of [null, ...this.stores.regionNames]) {
      const redis = this.stores.forRegion(region);
      for (let shard = 0; shard < SHARDS; shard++) {
        passes.push((async () => {
          const [wake, earliest] = (await STALE.run(redis, [this.keys.shardReady(shard), this.keys.shardClaimed(shard), this.keys.shardTimers(shard), this.keys.shardAwake(shard)],
            [String(now), String(now - staleMs), String(SENDS_LANE), String(AWAKE_MS)])) as [number, string];
          if (wake) {
            woken++;
            await this.mailboxes.wakeShard(shard, region);
          }
          const due = Number(earliest);
          // Their tick is late by far more than its bucket: lost (its job removed) or never added.
          if (due >= 0 && due <= now - LOST_TICK_MS && this.opts.onTimersDue) await this.opts.onTimersDue(shard, region, due);
        })());
      }
    }
    const results = await Promise.allSettled(passes);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) this.log.warn({ err: ((failed as PromiseRejectedResult).reason as Error).message }, 'shard sweep incomplete');
    return woken;
  }

  /**
   * The periodic sweep: of all processes ticking every `everyMs`, the one that takes the period's turn sweeps
   * (sweep-turn-1.lua: the last sweep's time in the shared store, at least 0.8 of a period old); the others
   * skip. One sweep per period whatever the number of processes: each sweep is a script per shard (64), which
   * every worker process ran every second before. A process that stops has no turn to give back: the next period's first tick takes it. Answers what
   * {@link sweep} answered, or null when it was not this process's turn.
   */
  async sweepIfDue(everyMs: number, now = Date.now()): Promise<number | null> {
    const turn = Number(await TURN.run(this.stores.shared, [this.keys.sweepTurn()], [now, Math.floor(everyMs * 0.8), 3_600_000]));
    return turn ? this.sweep(now) : null;
  }

  /** Sweeps every `everyMs` (the first at once), taking turns with the other processes (see {@link sweepIfDue}). */
  startSweeping(everyMs: number): void {
    const tick = () => void this.sweepIfDue(everyMs).catch(() => undefined);
    tick();
    this.sweepTimer = setInterval(tick, everyMs);
    this.sweepTimer.unref();
  }

  /** Stops sweeping and waits for the drains still running in this process. */
  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }
}
