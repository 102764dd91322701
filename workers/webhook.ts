import { Queue, UnrecoverableError, Worker, type ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { createLogger } from '../src/log.ts';
import type { Keys } from '../src/store/keys.ts';
import { deliverWebhook, WebhookRejectedError, type WebhookTargetResolver } from '../src/webhook/delivery.ts';
import type { ChangeValue } from '../src/webhook/envelope.ts';
import { RECOVERY } from './conversation.ts';

/** Job data of a webhook wake-up: only the business; the updates wait in its outbox list. */
export interface WebhookJob {
  business_id: string;
}

/** One update waiting in a business's webhook outbox. */
export interface OutboxEntry {
  /** phone_number_id */
  p: string;
  /** the change value (statuses or messages) */
  v: ChangeValue;
  /** when it was queued (ms): entries older than the age limit are dropped */
  t: number;
}

/** Retry policy of webhook deliveries. */
export interface WebhookBackoff {
  baseMs: number;
  maxMs: number;
  /** After this long since an update was queued, it is dropped (Meta: 7 days). */
  maxAgeMs: number;
}

// Enough attempts that the age limit, not the count, ends the retries.
const ATTEMPTS = 1_000_000;

/** The webhooks queue (wake-up jobs, one per business at a time). */
export function createWebhookQueue(connection: ConnectionOptions, opts: { prefix: string; queueName: string }): Queue<WebhookJob> {
  return new Queue<WebhookJob>(opts.queueName, { connection, prefix: opts.prefix });
}

/** Exponential backoff with jitter in [delay/2, delay], capped. */
export function webhookDelay(attemptsMade: number, b: Pick<WebhookBackoff, 'baseMs' | 'maxMs'>, random = Math.random): number {
  const exp = Math.min(b.baseMs * 2 ** Math.max(0, attemptsMade - 1), b.maxMs);
  return Math.round(exp / 2 + (exp / 2) * random());
}

/**
 * A business's webhook outbox: updates are appended in the order the conversations produced them and
 * delivered by at most one worker at a time per business (a deduplicated wake-up job), oldest first, up to
 * `maxBatch` updates per POST. So one conversation's updates arrive in order while the receiver is healthy,
 * a busy business gets batches, and a slow or dead endpoint only ever holds up its own business.
 */
export class WebhookOutbox {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly queue: Queue<WebhookJob>,
  ) {}

  /** Appends updates for one business number and wakes the business's delivery. */
  async enqueue(businessId: string, phoneNumberId: string, values: ChangeValue[], ttlMs: number): Promise<void> {
    if (!values.length) return;
    const key = this.keys.webhookOutbox(businessId);
    const t = Date.now();
    await this.redis.multi().rpush(key, ...values.map((v) => JSON.stringify({ p: phoneNumberId, v, t } satisfies OutboxEntry))).pexpire(key, ttlMs).exec();
    await this.wake(businessId);
  }

  /** Makes sure the business's delivery job exists. */
  async wake(businessId: string): Promise<void> {
    await this.queue.add('deliver', { business_id: businessId }, {
      deduplication: { id: businessId, keepLastIfActive: true },
      attempts: ATTEMPTS,
      backoff: { type: 'webhook' },
      removeOnComplete: true,
      removeOnFail: { count: 10_000 },
    });
  }
}

/** Counters a process can export. */
export interface WebhookStats {
  delivered: number;
  dropped: number;
  failedAttempts: number;
}

/**
 * The webhooks queue's processor: takes the oldest updates of the business (up to `maxBatch`), drops those
 * past the age limit (counted), signs and POSTs the rest as one envelope per phone number; only HTTP 200 is
 * success, then they leave the outbox. Anything else fails the job, which BullMQ retries with exponential
 * backoff; updates queued meanwhile join the next attempt, behind the ones that failed.
 */
export function startWebhookWorker(opts: {
  connection: ConnectionOptions;
  redis: Redis;
  keys: Keys;
  prefix: string;
  queueName: string;
  resolveTarget: WebhookTargetResolver;
  concurrency: number;
  backoff: WebhookBackoff;
  timeoutMs: number;
  maxBatch?: number;
  onDropped?: (businessId: string, count: number) => void;
}): { worker: Worker<WebhookJob>; stats: WebhookStats } {
  const log = createLogger('webhooks');
  const stats: WebhookStats = { delivered: 0, dropped: 0, failedAttempts: 0 };
  const maxBatch = opts.maxBatch ?? 1000;
  const worker = new Worker<WebhookJob>(
    opts.queueName,
    async (job) => {
      const businessId = job.data.business_id;
      const key = opts.keys.webhookOutbox(businessId);
      for (;;) {
        const raw = await opts.redis.lrange(key, 0, maxBatch - 1);
        if (!raw.length) return;
        const now = Date.now();
        const entries = raw.map((r) => JSON.parse(r) as OutboxEntry);
        const live = entries.filter((e) => now - e.t <= opts.backoff.maxAgeMs);
        const dropped = entries.length - live.length;
        if (dropped) {
          stats.dropped += dropped;
          log.warn({ business_id: businessId, dropped }, 'webhook updates dropped after the age limit');
          opts.onDropped?.(businessId, dropped);
        }
        // One POST per phone number, in the order of each number's first update.
        const byNumber = new Map<string, ChangeValue[]>();
        for (const e of live) byNumber.set(e.p, [...(byNumber.get(e.p) ?? []), e.v]);
        try {
          for (const [phoneNumberId, values] of byNumber) {
            await deliverWebhook({ business_id: businessId, phone_number_id: phoneNumberId, values }, opts.resolveTarget, { timeoutMs: opts.timeoutMs });
          }
        } catch (e) {
          stats.failedAttempts++;
          if (e instanceof WebhookRejectedError && e.permanent) {
            log.warn({ business_id: businessId, err: e.message, dropped: entries.length }, 'webhook updates dropped');
            stats.dropped += live.length;
            await opts.redis.ltrim(key, entries.length, -1);
            throw new UnrecoverableError(e.message);
          }
          // Expired updates at the head are gone for good; the live ones stay, in order, for the retry.
          const expiredHead = entries.findIndex((x) => now - x.t <= opts.backoff.maxAgeMs);
          if (expiredHead > 0) await opts.redis.ltrim(key, expiredHead, -1);
          throw e;
        }
        stats.delivered += live.length;
        await opts.redis.ltrim(key, entries.length, -1);
      }
    },
    {
      connection: opts.connection,
      prefix: opts.prefix,
      concurrency: opts.concurrency,
      ...RECOVERY,
      settings: { backoffStrategy: (attemptsMade: number) => webhookDelay(attemptsMade, opts.backoff) },
    },
  );
  worker.on('failed', (job, err) => {
    if (job && !(err instanceof UnrecoverableError)) {
      log.debug({ business_id: job.data.business_id, attempt: job.attemptsMade, err: err.message }, 'webhook attempt failed');
    }
  });
  worker.on('error', (err) => log.error({ err: err.message }, 'webhook worker error'));
  return { worker, stats };
}
