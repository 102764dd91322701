/**
 * Sealpost as a package: what a business backend needs to enqueue messages directly (docs/direct-enqueue.md),
 * and the few types a program embedding Sealpost uses.
 *
 * @example
 * import { Queue } from 'bullmq';
 * import { SealpostQueue } from 'sealpost';
 * const sealpost = new SealpostQueue({ connection: { host: '127.0.0.1', port: 6379 }, prefix: 'sp' });
 * const jobId = await sealpost.send('1234567890', { messaging_product: 'whatsapp', to: '+15551234567', type: 'text', text: { body: 'Hi' } }, { idempotencyKey: 'order-42-shipped' });
 * const answer = await sealpost.result(jobId); // { messaging_product, messages: [{ id: 'wamid...' }] }
 */
import { Queue, QueueEvents, type ConnectionOptions, type JobsOptions, type Telemetry } from 'bullmq';
import { OUTBOUND_JOB_OPTS, type OutboundJobData, type OutboundJobResult } from './queues/outbound.ts';

export type { OutboundJobData, OutboundJobResult } from './queues/outbound.ts';
export { OUTBOUND_JOB_OPTS } from './queues/outbound.ts';
export type { Config } from './config.ts';

/** The outbound queue's name (its braces are the Redis Cluster hash tag). */
export const OUTBOUND_QUEUE = '{outbound}';

/** BullMQ's `prefix` option for a Sealpost deployment whose SEALPOST_PREFIX is `prefix` (default `sp`). */
export function outboundQueuePrefix(prefix = 'sp'): string {
  return `${prefix}:q`;
}

/**
 * The Cloud API request body of `POST /{phone_number_id}/messages`: a send (`to`, `type` and the type's
 * object) or a mark-as-read (`status: "read"`, `message_id`). Validated by Sealpost when the job arrives.
 */
export type MessagesRequest = { messaging_product: 'whatsapp' } & Record<string, unknown>;

/** A typed producer for the outbound queue. */
export class SealpostQueue {
  readonly queue: Queue<OutboundJobData, OutboundJobResult>;
  private events?: QueueEvents;

  /**
   * `telemetry`: BullMQ's (e.g. `new BullMQOtel()` from bullmq-otel): a job then carries the backend's trace
   * context, and a Sealpost with tracing on continues that trace (docs/operations.md, Tracing).
   */
  constructor(private readonly opts: { connection: ConnectionOptions; prefix?: string; telemetry?: Telemetry }) {
    this.queue = new Queue<OutboundJobData, OutboundJobResult>(OUTBOUND_QUEUE, {
      connection: opts.connection, prefix: outboundQueuePrefix(opts.prefix), ...(opts.telemetry ? { telemetry: opts.telemetry } : {}),
    });
  }

  /**
   * Enqueues one request; resolves with the job id. With an `idempotencyKey` (it becomes the job id) the same
   * key enqueued again sends nothing twice: while the job is kept BullMQ ignores the duplicate, and after
   * that Sealpost answers with the first message's wamid until the message's retention ends.
   */
  async send(phoneNumberId: string, body: MessagesRequest, options: { idempotencyKey?: string; jobOptions?: JobsOptions } = {}): Promise<string> {
    if (options.idempotencyKey !== undefined && (!/^[\w.\-]{1,128}$/.test(options.idempotencyKey) || /^\d+$/.test(options.idempotencyKey))) {
      throw new Error('idempotencyKey: 1 to 128 letters, digits, _ . - and not only digits (it becomes the BullMQ job id)');
    }
    const job = await this.queue.add('message', { phone_number_id: phoneNumberId, message: body }, {
      ...OUTBOUND_JOB_OPTS,
      ...options.jobOptions,
      ...(options.idempotencyKey !== undefined ? { jobId: options.idempotencyKey } : {}),
    });
    return job.id!;
  }

  /** Waits for a job's answer: the Cloud API response, or throws the refusal (`(#code) title: details`). */
  async result(jobId: string, timeoutMs = 30_000): Promise<OutboundJobResult> {
    this.events ??= new QueueEvents(OUTBOUND_QUEUE, { connection: this.opts.connection, prefix: outboundQueuePrefix(this.opts.prefix) });
    await this.events.waitUntilReady();
    const job = await this.queue.getJob(jobId);
    if (!job) throw new Error(`no job ${jobId} (removed, or never added)`);
    return job.waitUntilFinished(this.events, timeoutMs);
  }

  async close(): Promise<void> {
    await this.events?.close();
    await this.queue.close();
  }
}
