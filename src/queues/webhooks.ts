import { Queue, type ConnectionOptions, type JobsOptions, type QueueOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Keys } from '../store/keys.ts';
import { seal } from '../store/sealer.ts';
import type { ChangeValue } from '../webhook/envelope.ts';
import { Coalescer } from '../redis/coalesce.ts';

/**
 * The webhooks queue as producers see it: a business's outbox of sealed updates and the deduplicated wake-up
 * job that gets it delivered (the worker that delivers is workers/webhook.ts).
 */

/** Job data of a webhook wake-up: only the business; the updates wait in its outbox list. */
export interface WebhookWakeJob {
  business_id: string;
}

/** The job data of the webhooks queue: every job is a wake-up of one business's outbox. */
export type WebhookJob = WebhookWakeJob;

/** One update waiting in a business's webhook outbox. */
export interface OutboxEntry {
  /** phone_number_id */
  p: string;
  /** the change value (statuses or messages) */
  v: ChangeValue;
  /** when it was queued (ms): entries older than the age limit are dropped */
  t: number;
  /** tracing on: the trace contexts (W3C traceparent) of the messages the update reports on */
  x?: string[];
}

// Enough attempts that the age limit, not the count, ends the retries (7 days at a 1 h cap is ~180).
const ATTEMPTS = 1_000_000;

/**
 * What a direct delivery of a business's outbox came to (workers/webhook.ts): delivered; 'busy', someone else
 * holds the business's delivery and delivers these too; 'failed', an attempt failed; 'skipped', no room in
 * the process.
 */
export type DirectDelivery = 'done' | 'busy' | 'failed' | 'skipped';

/** Options every webhooks job is added with: retried by the `webhook` strategy, finished jobs kept visible. */
export const WEBHOOK_JOB_OPTS = {
  attempts: ATTEMPTS,
  backoff: { type: 'webhook' },
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 10_000 },
} as const satisfies JobsOptions;

/** The webhooks queue: wake-up jobs of the business outboxes, deduplicated per business. */
export function createWebhookQueue(connection: ConnectionOptions, opts: { prefix: string; queueName: string } & Pick<QueueOptions, 'telemetry'>): Queue<WebhookJob> {
  return new Queue<WebhookJob>(opts.queueName, { connection, prefix: opts.prefix, ...(opts.telemetry ? { telemetry: opts.telemetry } : {}) });
}

/**
 * A business's webhook outbox: updates are appended in the order the conversations produced them and
 * delivered by at most one worker at a time per business (a deduplicated wake-up job), oldest first, up to
 * `maxBatch` updates per POST. So one conversation's updates arrive in order while the receiver is healthy,
 * a busy business gets batches, and a slow or dead endpoint only ever holds up its own business.
 */
export class WebhookOutbox {
  constructor(
    /** The store a business's outbox lives in (its region's, if it is pinned to one). */
    private readonly storeOf: (businessId: string) => Promise<Redis>,
    private readonly keys: Keys,
    private readonly queue: Queue<WebhookJob>,
    /** The business's data key: pending updates carry message text and phone numbers, so they are sealed. */
    private readonly dataKeyOf: (businessId: string) => Promise<Buffer>,
  ) {}

  /**
   * Appends of one turn of the event loop, one transaction per business: each caller's entries stay together
   * and in its order (a conversation's updates), callers in the order they came.
   */
  private readonly appends = new Coalescer<{ entries: string[]; ttlMs: number }>(async (businessId, all) => {
    const key = this.keys.webhookOutbox(businessId);
    const entries = all.flatMap((a) => a.entries);
    const ttlMs = Math.max(...all.map((a) => a.ttlMs));
    await (await this.storeOf(businessId)).multi().rpush(key, ...entries).pexpire(key, ttlMs).exec();
  });

  /**
   * Appends updates for one business number and wakes the business's delivery; resolves once both are done.
   * `traces`: see {@link OutboxEntry.x}.
   */
  async enqueue(businessId: string, phoneNumberId: string, values: ChangeValue[], ttlMs: number, traces?: string[]): Promise<void> {
    if (!values.length) return;
    const key = this.keys.webhookOutbox(businessId);
    const t = Date.now();
    const dk = await this.dataKeyOf(businessId);
    const x = traces?.length ? { x: traces } : {};
    const entries = values.map((v) => seal(dk, JSON.stringify({ p: phoneNumberId, v, t, ...x } satisfies OutboxEntry), key));
    await this.appends.add(businessId, { entries, ttlMs });
    await this.wakeSoon(businessId);
  }

  /** Wake-ups of a business scheduled for the next turn of the event loop and not started yet. */
  private readonly pendingWakes = new Map<string, Promise<void>>();

  /**
   * One wake-up for every append of this business that completed before it starts: many conversations
   * finishing their drains together add one deduplicated job, not one each. An append that completes while
   * the add is already under way schedules another, so every append is followed by an add that began after it.
   */
  private wakeSoon(businessId: string): Promise<void> {
    let pending = this.pendingWakes.get(businessId);
    if (!pending) {
      pending = new Promise<void>((resolve, reject) => {
        setImmediate(() => {
          this.pendingWakes.delete(businessId);
          this.wake(businessId).then(resolve, reject);
        });
      });
      this.pendingWakes.set(businessId, pending);
    }
    return pending;
  }

  /** This process's direct delivery (a worker process's), if any: see {@link deliverDirectly}. */
  private direct: ((businessId: string) => Promise<DirectDelivery>) | null = null;
  private safetyMs = SAFETY_MS;

  /**
   * In a process that runs the webhooks worker: deliver what this process appends at once, from here, under
   * the business's delivery lock (workers/webhook.ts), instead of through a job each. Each wake-up still adds
   * a webhooks job, delayed by `safetyMs` and deduplicated per business (so at most one waits, and an add
   * that finds it costs a few commands): it delivers whatever a direct delivery left, should its process
   * die or its attempt fail, and from there BullMQ's retries take over. At low load, when every status is a
   * wake-up of its own, a job's add, fetches and completion cost ~60 Redis commands each.
   */
  deliverDirectly(deliver: (businessId: string) => Promise<DirectDelivery>, safetyMs = SAFETY_MS): void {
    this.direct = deliver;
    this.safetyMs = safetyMs;
  }

  /** Direct deliveries started here and not finished. */
  private readonly delivering = new Set<Promise<void>>();

  /** Makes sure a wake-up of the business's outbox is coming (deduplicated per business). */
  async wake(businessId: string): Promise<void> {
    const direct = this.direct;
    await this.addWake(businessId, direct ? { delay: this.safetyMs } : {});
    if (!direct) return;
    // Not awaited: a drain never waits on a business's endpoint. The job added above covers every outcome
    // (a failed attempt, a full process, a holder that dies); 'busy': the holder delivers these too.
    const p = direct(businessId).then(async (r) => {
      // No room here now: the waiting job goes at once instead of after its delay.
      if (r === 'skipped') await this.addWake(businessId, {}, true);
    }).catch(() => undefined);
    this.delivering.add(p);
    void p.finally(() => this.delivering.delete(p));
  }

  /** The business's wake-up job (deduplicated per business); `reschedule`: a delayed one waiting is moved to now. */
  private async addWake(businessId: string, opts: { delay?: number }, reschedule = false): Promise<void> {
    await this.queue.add('deliver', { business_id: businessId }, {
      ...WEBHOOK_JOB_OPTS, ...opts,
      deduplication: { id: businessId, keepLastIfActive: true, ...(reschedule ? { reschedule: true } : {}) },
    });
  }

  /** Waits for the direct deliveries started here (a process shutting down). */
  async settle(): Promise<void> {
    while (this.delivering.size) await Promise.allSettled([...this.delivering]);
  }
}

/** How long the safety job of a directly delivered wake-up waits (see {@link WebhookOutbox.deliverDirectly}). */
const SAFETY_MS = 1000;
