import { Queue, UnrecoverableError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { createLogger } from '../src/log.ts';
import { deliverWebhook, WebhookRejectedError, type WebhookTargetResolver } from '../src/webhook/delivery.ts';
import type { ChangeValue } from '../src/webhook/envelope.ts';

/** Job data of a webhook delivery: ids and the change values; never the URL or the app secret. */
export interface WebhookJob {
  business_id: string;
  phone_number_id: string;
  values: ChangeValue[];
}

/** Retry policy of webhook deliveries. */
export interface WebhookBackoff {
  baseMs: number;
  maxMs: number;
  /** After this long since the job was created, a delivery is dropped (Meta: 7 days). */
  maxAgeMs: number;
}

// Enough attempts that the age limit, not the count, ends the retries.
const ATTEMPTS = 100_000;

/** The webhooks queue. */
export function createWebhookQueue(connection: ConnectionOptions, opts: { prefix: string; queueName: string }): Queue<WebhookJob> {
  return new Queue<WebhookJob>(opts.queueName, {
    connection,
    prefix: opts.prefix,
    defaultJobOptions: {
      attempts: ATTEMPTS,
      backoff: { type: 'webhook' },
      removeOnComplete: true,
      removeOnFail: { count: 10_000 },
    },
  });
}

/** Adds a delivery; a `jobId` makes a replayed add a no-op while the job exists. */
export async function enqueueWebhook(queue: Queue<WebhookJob>, data: WebhookJob, opts: { jobId?: string } = {}): Promise<void> {
  await queue.add('deliver', data, opts.jobId ? { jobId: opts.jobId } : {});
}

/** Exponential backoff with full jitter in [delay/2, delay], capped. */
export function webhookDelay(attemptsMade: number, b: Pick<WebhookBackoff, 'baseMs' | 'maxMs'>, random = Math.random): number {
  const exp = Math.min(b.baseMs * 2 ** Math.max(0, attemptsMade - 1), b.maxMs);
  return Math.round(exp / 2 + (exp / 2) * random());
}

/**
 * The webhooks queue's processor: signs and POSTs the envelope; only HTTP 200 is success; anything else is
 * retried with exponential backoff until `maxAgeMs` after the job was created, then dropped and counted.
 */
export function startWebhookWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  resolveTarget: WebhookTargetResolver;
  concurrency: number;
  backoff: WebhookBackoff;
  timeoutMs: number;
  onDropped?: (job: Job<WebhookJob>, reason: string) => void;
}): Worker<WebhookJob> {
  const log = createLogger('webhooks');
  const worker = new Worker<WebhookJob>(
    opts.queueName,
    async (job) => {
      if (Date.now() - job.timestamp > opts.backoff.maxAgeMs) {
        const reason = `undelivered after ${Math.round((Date.now() - job.timestamp) / 1000)} s (${job.attemptsMade} attempts)`;
        log.warn({ business_id: job.data.business_id, job_id: job.id, reason }, 'webhook dropped');
        opts.onDropped?.(job, reason);
        throw new UnrecoverableError(`webhook dropped: ${reason}`);
      }
      try {
        await deliverWebhook(job.data, opts.resolveTarget, { timeoutMs: opts.timeoutMs });
      } catch (e) {
        if (e instanceof WebhookRejectedError && e.permanent) throw new UnrecoverableError(e.message);
        throw e;
      }
    },
    {
      connection: opts.connection,
      prefix: opts.prefix,
      concurrency: opts.concurrency,
      settings: { backoffStrategy: (attemptsMade: number) => webhookDelay(attemptsMade, opts.backoff) },
    },
  );
  worker.on('failed', (job, err) => {
    if (job && !(err instanceof UnrecoverableError)) {
      log.debug({ business_id: job.data.business_id, job_id: job.id, attempt: job.attemptsMade, err: err.message }, 'webhook attempt failed');
    }
  });
  worker.on('error', (err) => log.error({ err: err.message }, 'webhook worker error'));
  return worker;
}
