import { Worker, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { Mailboxes } from '../src/runtime/mailbox.ts';
import type { ShardTimers } from '../src/runtime/shard-timers.ts';
import { isTick, type TimersQueueJob } from '../src/queues/timers.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';

/**
 * The timers queue's processor: a shard's tick fires the shard's due timers; a deletion job (or a timer job
 * queued before timers were kept per shard) hands its event to the conversation.
 */
export function startTimerWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  mailboxes: Mailboxes;
  timers: ShardTimers;
  mailboxTtlMs: number;
  log: Logger;
}): Worker<TimersQueueJob> {
  const worker = new Worker<TimersQueueJob>(
    opts.queueName,
    async (job) => {
      const data = job.data;
      if (isTick(data)) await opts.timers.fire(data.shard, data.region ?? null);
      else await opts.mailboxes.post(data.conversationId, [data.event], opts.mailboxTtlMs);
    },
    { connection: opts.connection, prefix: opts.prefix, concurrency: 8, ...RECOVERY, ...queueTelemetry() },
  );
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'timer worker error'));
  return worker;
}
