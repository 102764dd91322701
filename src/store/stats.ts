import type { Redis } from 'ioredis';
import { Coalescer } from '../redis/coalesce.ts';
import type { Keys } from './keys.ts';

/** One business's non-identifiable aggregates for one day (UTC). */
export interface DayStats {
  day: string;
  accepted: number;
  sent: number;
  delivered: number;
  read: number;
  inbound: number;
  failed: Record<string, number>;
}

/** Billable and free messages of one business for one month, by category. */
export interface Billing {
  business_id: string;
  month: string;
  billable: Record<string, number>;
  free: Record<string, number>;
}

const dayOf = (at: number) => new Date(at).toISOString().slice(0, 10);
const KEEP_MS = 400 * 86_400_000;
/** How often a process renews a counter key's TTL (see {@link Stats}). */
const TTL_RENEW_MS = 3_600_000;

/**
 * Statistics and billing: counters per business and day, with no phone number, message id or conversation
 * id in them (the only dimensions are business, day, status, error code and category). Counted when the
 * event happens; a step replayed after a crash may count again, so they are at-least-once aggregates.
 */
export class Stats {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Counter keys whose TTL this process set within the last TTL_RENEW_MS (key → when): their counts need no
   * `PEXPIRE`, so a lone count is one `HINCRBY` (at low load, when counts do not coalesce, every status paid a
   * MULTI, HINCRBY, PEXPIRE, EXEC). Renewed hourly, so a key lost with a Redis that kept nothing and made again
   * by a count gets its TTL back within the hour.
   */
  private readonly ttlSet = new Map<string, number>();

  /** Counts of one turn of the event loop, summed per counter key and written together (a transaction when more than one command). */
  private readonly writes = new Coalescer<Record<string, number>>(async (key, all) => {
    const sums: Record<string, number> = {};
    for (const fields of all) for (const [f, n] of Object.entries(fields)) if (n) sums[f] = (sums[f] ?? 0) + n;
    const fields = Object.entries(sums).filter(([, n]) => n);
    if (!fields.length) return;
    const t = this.now();
    const last = this.ttlSet.get(key);
    const renew = last === undefined || t - last >= TTL_RENEW_MS;
    if (fields.length === 1 && !renew) {
      await this.redis.hincrby(key, fields[0]![0], fields[0]![1]);
      return;
    }
    const m = this.redis.multi();
    for (const [f, n] of fields) m.hincrby(key, f, n);
    if (renew) m.pexpire(key, KEEP_MS);
    await m.exec();
    if (renew) this.noteTtl(key, t);
  });

  private noteTtl(key: string, t: number): void {
    this.ttlSet.set(key, t);
    // One key per business and day: forget those not renewed lately once there are many.
    if (this.ttlSet.size > 10_000) for (const [k, at] of this.ttlSet) if (t - at >= TTL_RENEW_MS) this.ttlSet.delete(k);
  }

  /**
   * Adds to counters of one business for the day of `at`; resolves once written. Counts made in the same turn
   * of the event loop (many drains finishing together) go out as one write per business and day.
   */
  async count(businessId: string, fields: Record<string, number>, at = Date.now()): Promise<void> {
    await this.writes.add(this.keys.stats(businessId, dayOf(at)), fields);
  }

  /** The business's days from `from` to `to` (inclusive, YYYY-MM-DD). */
  async days(businessId: string, from: string, to: string): Promise<DayStats[]> {
    const out: DayStats[] = [];
    for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`) && out.length < 400; t += 86_400_000) {
      const day = dayOf(t);
      const row = await this.redis.hgetall(this.keys.stats(businessId, day));
      const failed: Record<string, number> = {};
      for (const [f, v] of Object.entries(row)) if (f.startsWith('failed:')) failed[f.slice(7)] = Number(v);
      out.push({
        day, accepted: Number(row.accepted ?? 0), sent: Number(row.sent ?? 0), delivered: Number(row.delivered ?? 0),
        read: Number(row.read ?? 0), inbound: Number(row.inbound ?? 0), failed,
      });
    }
    return out;
  }

  /** The month's (YYYY-MM) billable messages by category: delivered templates bill, service messages are free. */
  async billing(businessId: string, month: string): Promise<Billing> {
    const billable: Record<string, number> = {};
    const free: Record<string, number> = {};
    const start = Date.parse(`${month}-01T00:00:00Z`);
    for (let t = start; new Date(t).toISOString().slice(0, 7) === month; t += 86_400_000) {
      const row = await this.redis.hgetall(this.keys.stats(businessId, dayOf(t)));
      for (const [f, v] of Object.entries(row)) {
        if (f.startsWith('billable:')) billable[f.slice(9)] = (billable[f.slice(9)] ?? 0) + Number(v);
        if (f.startsWith('free:')) free[f.slice(5)] = (free[f.slice(5)] ?? 0) + Number(v);
      }
    }
    return { business_id: businessId, month, billable, free };
  }
}
