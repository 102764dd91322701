import { DelayedError, Queue, UnrecoverableError, Worker, type ConnectionOptions, type Job, type JobsOptions } from 'bullmq';
import type { Logger } from 'pino';
import { toGraphError } from '../src/runtime/graph-errors.ts';
import { handleMessagesRequest } from '../src/runtime/message-requests.ts';
import type { BusinessStore } from '../src/store/businesses.ts';
import type { OutboundPort } from '../src/runtime/ports.ts';
import { RateLimitedError } from '../src/runtime/rate-limits.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import type { OutboundJobData, OutboundJobResult } from '../src/queues/outbound.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';

/** The longest a job refused by the throughput or pair limit waits (a tenth of it at least) before it tries again. */
const RATE_LIMIT_RETRY_MS = { throughput: 1000, pair: 6000 } as const;

/**
 * The outbound queue's processor: validates the job on arrival (a bad job fails with the Graph error's
 * message, e.g. `(#100) Invalid parameter: ...`, and stays in the failed set), accepts it through the same
 * function as the HTTP API (same actor, same webhooks), and records the answer as the job's return value.
 * Throughput and pair limits delay the job (no attempt is spent); every other refusal fails it for good.
 * The message content leaves the job as soon as it is accepted or refused.
 */
export function startOutboundWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  businesses: BusinessStore;
  outbound: OutboundPort;
  concurrency?: number;
  log: Logger;
}): Worker<OutboundJobData, OutboundJobResult> {
  const scrub = (job: Job<OutboundJobData>, extra: Partial<OutboundJobData>) =>
    job.updateData({ phone_number_id: String(job.data?.phone_number_id ?? '').slice(0, 40), ...extra });

  const process = async (job: Job<OutboundJobData>, token?: string): Promise<OutboundJobResult> => {
    const data = job.data as unknown;
    let refused: unknown;
    try {
      if (typeof data !== 'object' || data === null) throw new UnrecoverableError('(#100) Invalid parameter: job data must be an object {phone_number_id, message}');
      const { phone_number_id: pnid, message } = data as Record<string, unknown>;
      if (message === undefined) {
        // A job whose content was already removed by an earlier attempt that recorded the outcome.
        const done = (data as OutboundJobData).wamid;
        if (done) return { messaging_product: 'whatsapp', messages: [{ id: done }] };
        throw new UnrecoverableError('(#100) Invalid parameter: job data must have a message (the Cloud API request body)');
      }
      if (typeof pnid !== 'string' || !/^\d{1,20}$/.test(pnid)) throw new UnrecoverableError('(#100) Invalid parameter: phone_number_id must be a string of digits');
      const pn = await opts.businesses.phoneNumber(pnid);
      if (!pn) throw new UnrecoverableError(`(#100) Invalid parameter: unknown phone_number_id ${pnid}`);
      // The same path as the HTTP API (same validation, same actor, same webhooks); the job id is the idempotency key.
      const outcome = await handleMessagesRequest(opts.outbound, pn, message, { idempotencyKey: `job:${job.id}` });
      if (outcome.kind === 'read') {
        await scrub(job, {});
        return { success: true };
      }
      await scrub(job, { wamid: outcome.accepted.wamid });
      return { messaging_product: 'whatsapp', messages: [{ id: outcome.accepted.wamid }] };
    } catch (e) {
      if (e instanceof RateLimitedError && token) {
        // Not a failure: the number (or the pair) is at its limit; try again later without spending an attempt.
        await job.moveToDelayed(Date.now() + Math.max(RATE_LIMIT_RETRY_MS[e.limit] / 10, e.retryAfterMs), token);
        throw new DelayedError();
      }
      refused = e;
    }
    if (refused instanceof UnrecoverableError) {
      await scrub(job, { error_code: Number(/^\(#(\d+)\)/.exec(refused.message)?.[1] ?? 100) });
      throw refused;
    }
    const { graph, unexpected } = toGraphError(refused);
    if (unexpected) throw refused as Error; // Redis down, a bug: retried with backoff, content kept for the retry.
    await scrub(job, { error_code: graph.code });
    throw new UnrecoverableError(`${graph.message}: ${graph.details}`);
  };

  const worker = new Worker<OutboundJobData, OutboundJobResult>(opts.queueName, process, {
    connection: opts.connection, prefix: opts.prefix, concurrency: opts.concurrency ?? 16, ...RECOVERY, ...queueTelemetry(),
  });
  worker.on('failed', (job, err) => {
    if (err instanceof DelayedError || err.name === 'DelayedError') return;
    opts.log.warn({ job_id: job?.id, reason: err.message.slice(0, 200) }, 'outbound job refused');
  });
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'outbound worker error'));
  return worker;
}
