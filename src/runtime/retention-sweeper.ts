import type { Stores } from '../store/stores.ts';
import type { Logger } from 'pino';
import type { Keys } from '../store/keys.ts';
import type { Mailboxes } from './mailbox.ts';

/**
 * Finds conversations whose newest message's retention has ended but which still exist (their deletion
 * job was lost, e.g. with a crashed worker) and wakes them with a retention tick, so deletion never depends
 * on a single job. Any number of processes may run it: a wake is idempotent.
 */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly mailboxes: Mailboxes,
    private readonly log: Logger,
    private readonly mailboxTtlMs: number,
  ) {}

  /** One pass: wakes up to `limit` overdue conversations; returns how many. */
  async sweep(now = Date.now(), limit = 500): Promise<number> {
    let woken = 0;
    // Each store keeps its own index: a region's conversations are listed only in the region.
    for (const redis of this.stores.all()) {
      const due = await redis.zrangebyscore(this.keys.expiries, '-inf', String(now), 'LIMIT', 0, limit);
      for (const conv of due) await this.mailboxes.post(conv, [{ type: 'PURGE_DUE', at: now }], this.mailboxTtlMs);
      woken += due.length;
    }
    if (woken) this.log.debug({ conversations: woken }, 'retention sweep');
    return woken;
  }

  /** Sweeps every `everyMs`. */
  start(everyMs: number): void {
    this.timer = setInterval(() => void this.sweep().catch((e: Error) => this.log.warn({ err: e.message }, 'retention sweep failed')), everyMs);
  }

  /** Stops sweeping. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
