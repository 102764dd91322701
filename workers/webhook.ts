import { UnrecoverableError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { createLogger } from '../src/log.ts';
import type { Keys } from '../src/store/keys.ts';
import { open } from '../src/store/sealer.ts';
import { deliverWebhook, WebhookRejectedError, type FetchLike, type WebhookTargetResolver } from '../src/webhook/delivery.ts';
import type { ChangeValue } from '../src/webhook/envelope.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import type { OutboxEntry, WebhookJob, WebhookWakeJob } from '../src/queues/webhooks.ts';
import { metrics } from '../src/ops/metrics.ts';
import { queueTelemetry, tracingOn } from '../src/ops/tracing.ts';
import { inBatchRequest, tracedFetch } from '../src/runtime/trace-context.ts';

/** Retry policy of webhook deliveries. */
export interface WebhookBackoff {
  baseMs: number;
  maxMs: number;
  /** After this long since an update was queued, it is dropped (Meta: 7 days). */
  maxAgeMs: number;
}

/** Exponential backoff with jitter in [delay/2, delay], capped. */
export function webhookDelay(attemptsMade: number, b: Pick<WebhookBackoff, 'baseMs' | 'maxMs'>, random = Math.random): number {
  const exp = Math.min(b.baseMs * 2 ** Math.max(0, attemptsMade - 1), b.maxMs);
  return Math.round(exp / 2 + (exp / 2) * random());
}

/**
 * A failed attempt that will be retried, carrying when its oldest update reaches the age limit: the backoff
 * never waits past that moment, so the last attempt happens at the limit rather than up to `maxMs` after it.
 */
export class WebhookAttemptError extends Error {
  constructor(message: string, readonly retryBy: number) {
    super(message);
    this.name = 'WebhookAttemptError';
  }
}

/** The `settings.backoffStrategy` of the webhooks worker: {@link webhookDelay}, clamped to the age limit. */
export function webhookBackoffStrategy(b: Pick<WebhookBackoff, 'baseMs' | 'maxMs'>): (attemptsMade: number, type?: string, err?: Error) => number {
  return (attemptsMade, _type, err) => {
    const delay = webhookDelay(attemptsMade, b);
    if (!(err instanceof WebhookAttemptError)) return delay;
    return Math.max(0, Math.min(delay, err.retryBy - Date.now()));
  };
}

// Strict: a job carrying anything besides the business (updates, a phone number) is not a wake-up, and
// waking the business for it would leave what it carries undelivered without a word.
const wakeJob = z.strictObject({ business_id: z.string().min(1) });

/**
 * Validates a job as it arrives (producers may use plain bullmq): anything but a wake-up `{business_id}`
 * fails at once (UnrecoverableError) with the reason, and stays in the failed set.
 */
function parseJob(data: unknown): WebhookWakeJob {
  const parsed = wakeJob.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UnrecoverableError(`invalid webhook job: ${issue?.path.join('.') || '(data)'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/** Counters a process can export. */
export interface WebhookStats {
  /** Updates (status or message values) delivered with HTTP 200. */
  delivered: number;
  /** Updates given up: past the age limit, or the business has no webhook target. */
  dropped: number;
  /** POSTs (or target look-ups) that did not end in HTTP 200. */
  failedAttempts: number;
}

/** Options of {@link startWebhookWorker}. */
export interface WebhookWorkerOptions {
  connection: ConnectionOptions;
  /** For the outbox (wake-up jobs): the store a business's outbox lives in. */
  storeOf: (businessId: string) => Promise<Redis>;
  keys: Keys;
  /** The business's data key, to open sealed outbox entries. */
  dataKeyOf: (businessId: string) => Promise<Buffer>;
  /** BullMQ prefix and queue name, as given to {@link createWebhookQueue}. */
  prefix: string;
  queueName: string;
  /** The business store's look-up (URL, app secret, WABA id, display number); `null` = no webhook. */
  resolveTarget: WebhookTargetResolver;
  concurrency: number;
  backoff: WebhookBackoff;
  /** Per POST, answer included (10 s in the default configuration). */
  timeoutMs: number;
  /** Outbox updates per POST (Meta: up to 1000). */
  maxBatch?: number;
  /** Stands in for the global `fetch` (tests, an egress proxy). */
  fetchImpl?: FetchLike;
  /** Called once per drop with the number of updates given up and the job that gave them up. */
  onDropped?: (businessId: string, count: number, jobId: string | undefined) => void;
}

/**
 * The webhooks queue's processor. A wake-up job drains the business's outbox: the oldest updates (up to
 * `maxBatch`), one signed POST per phone number; only HTTP 200 is success, then they leave the outbox.
 * Anything else fails the attempt, which BullMQ retries with exponential backoff and jitter; an update that fails an attempt made at or after `maxAgeMs` since it was queued is
 * dropped (logged as `webhook dropped`, counted, `onDropped`), so nothing is dropped without a last attempt.
 */
export function startWebhookWorker(opts: WebhookWorkerOptions): { worker: Worker<WebhookJob>; stats: WebhookStats } {
  const log = createLogger('webhooks');
  const stats: WebhookStats = { delivered: 0, dropped: 0, failedAttempts: 0 };
  const maxBatch = opts.maxBatch ?? 1000;
  const { maxAgeMs } = opts.backoff;
  const post = async (businessId: string, phoneNumberId: string, values: ChangeValue[], traces: string[]) => {
    const started = performance.now();
    let outcome = 'delivered';
    // Tracing on: an HTTP client span for the POST, linked to the traces of the messages it reports on, each of
    // which gets a `sealpost.webhook` span.
    const attributes = { 'sealpost.business_id': businessId, 'sealpost.phone_number_id': phoneNumberId };
    try {
      await inBatchRequest('POST', undefined, traces, { perMessage: 'sealpost.webhook', attributes }, () => deliverWebhook({ business_id: businessId, phone_number_id: phoneNumberId, values }, opts.resolveTarget, {
        timeoutMs: opts.timeoutMs,
        ...(opts.fetchImpl || tracingOn() ? { fetchImpl: tracedFetch(opts.fetchImpl) } : {}),
      }));
    } catch (e) {
      outcome = /webhook answered HTTP/.test((e as Error).message) ? 'rejected' : 'unreachable';
      throw e;
    } finally {
      metrics.webhookSeconds.observe({ outcome }, (performance.now() - started) / 1000);
      metrics.webhookDeliveries.inc({ outcome });
    }
  };
  const isPermanent = (e: unknown) => e instanceof WebhookRejectedError && e.permanent;
  const dropped = (job: Job, businessId: string, count: number, reason: string) => {
    stats.dropped += count;
    log.warn({ business_id: businessId, job_id: job.id, dropped: count, reason }, 'webhook dropped');
    opts.onDropped?.(businessId, count, job.id);
  };

  const drainOutbox = async (job: Job, businessId: string) => {
    const key = opts.keys.webhookOutbox(businessId);
    for (;;) {
      const redis = await opts.storeOf(businessId);
      const raw = await redis.lrange(key, 0, maxBatch - 1);
      if (!raw.length) return;
      const dk = await opts.dataKeyOf(businessId);
      const entries = raw.map((r) => JSON.parse(open(dk, r, key).toString()) as OutboxEntry);
      // One POST per phone number, in the order of each number's first update.
      const byNumber = new Map<string, ChangeValue[]>();
      const traces = new Map<string, string[]>();
      for (const e of entries) {
        byNumber.set(e.p, [...(byNumber.get(e.p) ?? []), e.v]);
        if (e.x) traces.set(e.p, [...(traces.get(e.p) ?? []), ...e.x]);
      }
      const done = new Set<string>();
      let current = '';
      try {
        for (const [phoneNumberId, values] of byNumber) {
          current = phoneNumberId;
          await post(businessId, phoneNumberId, values, traces.get(phoneNumberId) ?? []);
          done.add(phoneNumberId);
        }
      } catch (e) {
        stats.failedAttempts++;
        const reason = (e as Error).message;
        // No target for this number (removed, or its business has no webhook): its updates can never go out.
        const hopeless = isPermanent(e) ? current : null;
        const now = Date.now();
        const fate = entries.map((x) => (done.has(x.p) ? 'delivered' : x.p === hopeless ? 'hopeless' : now - x.t >= maxAgeMs ? 'expired' : 'keep'));
        const count = (f: string) => fate.filter((x) => x === f).length;
        const keep = raw.filter((_, i) => fate[i] === 'keep');
        stats.delivered += count('delivered');
        if (keep.length < raw.length) {
          // Safe without a lock: producers only RPUSH at the tail, and only this (deduplicated) job touches the head.
          const tx = redis.multi().ltrim(key, raw.length, -1);
          if (keep.length) tx.lpush(key, ...[...keep].reverse());
          await tx.exec();
        }
        if (count('hopeless')) dropped(job, businessId, count('hopeless'), reason);
        if (count('expired')) dropped(job, businessId, count('expired'), `age limit reached: ${reason}`);
        // The other numbers were not tried yet (hopeless), or nothing owed is left in this batch: go on now.
        if (hopeless !== null || !keep.length) continue;
        const oldest = Math.min(...entries.filter((_, i) => fate[i] === 'keep').map((x) => x.t));
        throw new WebhookAttemptError(reason, oldest + maxAgeMs);
      }
      stats.delivered += entries.length;
      await redis.ltrim(key, entries.length, -1);
    }
  };

  const worker = new Worker<WebhookJob>(
    opts.queueName,
    async (job) => drainOutbox(job, parseJob(job.data).business_id),
    {
      connection: opts.connection,
      prefix: opts.prefix,
      concurrency: opts.concurrency,
      ...RECOVERY, ...queueTelemetry(),
      settings: { backoffStrategy: webhookBackoffStrategy(opts.backoff) },
    },
  );
  worker.on('failed', (job, err) => {
    if (!job) return;
    if (err instanceof UnrecoverableError && err.message.startsWith('invalid webhook job')) {
      log.warn({ job_id: job.id, err: err.message }, 'webhook job rejected');
    } else if (!(err instanceof UnrecoverableError)) {
      log.debug({ business_id: job.data.business_id, job_id: job.id, attempt: job.attemptsMade, err: err.message }, 'webhook attempt failed');
    }
  });
  worker.on('error', (err) => log.error({ err: err.message }, 'webhook worker error'));
  return { worker, stats };
}
