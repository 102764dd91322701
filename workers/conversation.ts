import { Worker, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { WakeJob } from '../src/runtime/mailbox.ts';
import type { ShardRunner } from '../src/runtime/shard-runner.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';

/**
 * The conversations queue's processor: a wake-up job names a shard; the shard runner drains the shard's
 * ready conversations, each under its own lease. One job of a shard runs at a time (deduplicated wakes).
 */
export function startConversationWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  runner: ShardRunner;
  concurrency: number;
  log: Logger;
}): Worker<WakeJob> {
  const worker = new Worker<WakeJob>(
    opts.queueName,
    async (job) => {
      await opts.runner.run(job.data.shard, job.data.region ?? null);
    },
    { connection: opts.connection, prefix: opts.prefix, concurrency: opts.concurrency, ...RECOVERY, ...queueTelemetry() },
  );
  worker.on('failed', (job, err) => opts.log.error({ shard: job?.data.shard, job_id: job?.id, err: err.message }, 'shard wake-up failed'));
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'conversation worker error'));
  return worker;
}
