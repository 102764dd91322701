import { Queue, type ConnectionOptions, type JobsOptions, type QueueOptions } from 'bullmq';

/**
 * A job of the outbound queue (direct enqueue): the phone number to send from and the request body exactly as
 * `POST /{phone_number_id}/messages` takes it (a send, or a mark-as-read). The job id is the idempotency key.
 * docs/direct-enqueue.md is the reference.
 */
export interface OutboundJobData {
  phone_number_id: string;
  /** The Cloud API request body. Removed from the job once the message is accepted or refused. */
  message?: Record<string, unknown>;
  /** Set by the worker when it removes `message`: the wamid it was accepted as. */
  wamid?: string;
  /** Set by the worker when it removes `message` of a refused job: the Cloud API error code. */
  error_code?: number;
}

/**
 * A finished job's answer. Unlike the HTTP answer it names no `contacts`: a job's return value is kept in Redis
 * with the finished job and shown on the queue board, and the user's phone number must not be there.
 */
export type OutboundJobResult =
  | { messaging_product: 'whatsapp'; messages: { id: string }[] }
  | { success: true };

/** Options a client should add jobs with (the typed helper does): finished jobs stay visible, without content. */
export const OUTBOUND_JOB_OPTS = {
  attempts: 10,
  backoff: { type: 'exponential', delay: 1000 },
  removeOnComplete: { age: 86_400 },
  removeOnFail: { age: 7 * 86_400 },
} as const satisfies JobsOptions;

/** The outbound queue (for the board and for producers in this process). */
export function createOutboundQueue(connection: ConnectionOptions, prefix: string, queueName: string, extra: Pick<QueueOptions, 'telemetry'> = {}): Queue<OutboundJobData, OutboundJobResult> {
  return new Queue<OutboundJobData, OutboundJobResult>(queueName, { connection, prefix, defaultJobOptions: OUTBOUND_JOB_OPTS, streams: { events: { maxLen: 1000 } }, ...extra });
}
