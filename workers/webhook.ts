import { randomUUID } from 'node:crypto';
import { DelayedError, UnrecoverableError, Worker, type ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { createLogger } from '../src/log.ts';
import type { Keys } from '../src/store/keys.ts';
import { open } from '../src/store/sealer.ts';
import { deliverWebhook, WebhookRejectedError, type FetchLike, type WebhookTargetResolver } from '../src/webhook/delivery.ts';
import type { ChangeValue } from '../src/webhook/envelope.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import type { DirectDelivery, OutboxEntry, WebhookJob, WebhookWakeJob } from '../src/queues/webhooks.ts';
import { metrics } from '../src/ops/metrics.ts';
import { queueTelemetry, tracingOn } from '../src/ops/tracing.ts';
import { inBatchRequest, tracedFetch } from '../src/runtime/trace-context.ts';
import { LuaScript } from '../src/runtime/lua/read-script.ts';

const RELEASE = new LuaScript('webhook-release-1.lua');
const RENEW = new LuaScript('renew-1.lua');
/** How long a business's delivery lock holds without renewal (renewed every third of it while a delivery runs). */
const LOCK_MS = 15_000;
/** A webhooks job that finds the business's delivery held by someone else looks again this much later. */
const BUSY_RETRY_MS = 1000;

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

/** A running webhooks worker: the queue's worker, its counters, and direct delivery for this process's appends. */
export interface WebhookWorker {
  worker: Worker<WebhookJob>;
  stats: WebhookStats;
  /** See {@link WebhookOutbox.deliverDirectly}: delivers a business's outbox now, in this process. */
  deliverNow(businessId: string): Promise<DirectDelivery>;
  /** Waits for the direct deliveries running, then closes the worker. */
  close(): Promise<void>;
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
 * Jobs and this process's direct deliveries ({@link WebhookWorker.deliverNow}) take the business's delivery
 * lock, so one deliverer at a time sends a business's updates, in order.
 */
export function startWebhookWorker(opts: WebhookWorkerOptions): WebhookWorker {
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
  const dropped = (jobId: string | undefined, businessId: string, count: number, reason: string) => {
    stats.dropped += count;
    log.warn({ business_id: businessId, job_id: jobId, dropped: count, reason }, 'webhook dropped');
    opts.onDropped?.(businessId, count, jobId);
  };

  const drainOutbox = async (jobId: string | undefined, businessId: string) => {
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
        if (count('hopeless')) dropped(jobId, businessId, count('hopeless'), reason);
        if (count('expired')) dropped(jobId, businessId, count('expired'), `age limit reached: ${reason}`);
        // The other numbers were not tried yet (hopeless), or nothing owed is left in this batch: go on now.
        if (hopeless !== null || !keep.length) continue;
        const oldest = Math.min(...entries.filter((_, i) => fate[i] === 'keep').map((x) => x.t));
        throw new WebhookAttemptError(reason, oldest + maxAgeMs);
      }
      stats.delivered += entries.length;
      await redis.ltrim(key, entries.length, -1);
    }
  };

  /**
   * Delivers the business's outbox under its delivery lock (one deliverer per business at a time, whether a
   * job or a direct delivery, so a business's updates go out in order): 'busy' when someone else holds it
   * (they deliver what waits, updates appended meanwhile included: they release only an empty outbox).
   */
  const holdAndDrain = async (businessId: string, jobId: string | undefined): Promise<'done' | 'busy'> => {
    const redis = await opts.storeOf(businessId);
    const lock = opts.keys.webhookLock(businessId);
    const outbox = opts.keys.webhookOutbox(businessId);
    const token = randomUUID();
    if ((await redis.set(lock, token, 'PX', LOCK_MS, 'NX')) !== 'OK') return 'busy';
    const renew = setInterval(() => void RENEW.run(redis, [lock], [token, LOCK_MS]).catch(() => undefined), LOCK_MS / 3);
    try {
      for (;;) {
        await drainOutbox(jobId, businessId);
        // Released only when nothing waits; 0: updates came meanwhile, theirs to us; -1: the lock lapsed (a
        // stall): whoever holds it now delivers.
        if (Number(await RELEASE.run(redis, [lock, outbox], [token, ''])) !== 0) return 'done';
      }
    } catch (e) {
      await RELEASE.run(redis, [lock, outbox], [token, '1']).catch(() => undefined);
      throw e;
    } finally {
      clearInterval(renew);
    }
  };

  /** Direct deliveries running in this process (bounded by `concurrency`; close() waits for them). */
  const directs = new Set<Promise<unknown>>();
  /**
   * Delivers the business's outbox now, in this process, if no one else is delivering it ('busy') and this
   * process has room ('skipped' otherwise); 'failed' when an attempt failed (the webhooks queue retries).
   */
  const deliverNow = async (businessId: string): Promise<DirectDelivery> => {
    if (directs.size >= opts.concurrency) return 'skipped';
    const p = holdAndDrain(businessId, undefined).then((r) => r, (e: unknown) => {
      stats.failedAttempts++;
      log.debug({ business_id: businessId, err: (e as Error).message }, 'webhook attempt failed');
      return 'failed' as const;
    });
    directs.add(p);
    try {
      return await p;
    } finally {
      directs.delete(p);
    }
  };

  const worker = new Worker<WebhookJob>(
    opts.queueName,
    async (job, token) => {
      const businessId = parseJob(job.data).business_id;
      if ((await holdAndDrain(businessId, job.id)) === 'busy') {
        // Someone delivers it now; should they die, their lock lapses and this job finds it free.
        await job.moveToDelayed(Date.now() + BUSY_RETRY_MS, token);
        throw new DelayedError();
      }
    },
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
  const close = async () => {
    while (directs.size) await Promise.allSettled([...directs]);
    await worker.close();
  };
  return { worker, stats, deliverNow, close };
}
