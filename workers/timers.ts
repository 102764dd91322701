import { Worker, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { Mailboxes } from '../src/runtime/mailbox.ts';
import type { TimerJob } from '../src/queues/timers.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';

/** The timers queue's processor: hands the due event to the conversation. */
export function startTimerWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  mailboxes: Mailboxes;
  mailboxTtlMs: number;
  log: Logger;
}): Worker<TimerJob> {
  const worker = new Worker<TimerJob>(
    opts.queueName,
    async (job) => opts.mailboxes.post(job.data.conversationId, [job.data.event], opts.mailboxTtlMs),
    { connection: opts.connection, prefix: opts.prefix, concurrency: 8, ...RECOVERY, ...queueTelemetry() },
  );
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'timer worker error'));
  return worker;
}
