import { Worker, type ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { WakeJob } from '../src/runtime/mailbox.ts';
import type { ShardRunner } from '../src/runtime/shard-runner.ts';
import { WakeListener } from '../src/runtime/wake-list.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';
import type { Keys } from '../src/store/keys.ts';

/** A worker process's conversation side: the wake list's listener and the conversations queue's worker. */
export interface ConversationWorker {
  listener: WakeListener;
  /** Runs wake-up jobs of the conversations queue (added by versions before the wake list: a rolling upgrade). */
  worker: Worker<WakeJob>;
  close(): Promise<void>;
}

/**
 * The conversations' processor: a wake-up names a shard; the shard runner drains the shard's ready
 * conversations, each under its own lease. Wake-ups come from the wake list (src/runtime/wake-list.ts); the
 * conversations queue's jobs, which earlier versions added for the same purpose, are still run, so a process
 * of each version can work side by side while a fleet is upgraded.
 */
export function startConversationWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  shared: Redis;
  keys: Keys;
  runner: ShardRunner;
  concurrency: number;
  log: Logger;
}): ConversationWorker {
  const listener = new WakeListener(opts.shared, opts.keys, opts.runner, opts.concurrency, opts.log.child({ component: 'wake-list' })).start();
  const worker = new Worker<WakeJob>(
    opts.queueName,
    async (job) => {
      await opts.runner.run(job.data.shard, job.data.region ?? null);
    },
    { connection: opts.connection, prefix: opts.prefix, concurrency: Math.min(4, opts.concurrency), ...RECOVERY, ...queueTelemetry() },
  );
  worker.on('failed', (job, err) => opts.log.error({ shard: job?.data.shard, job_id: job?.id, err: err.message }, 'shard wake-up failed'));
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'conversation worker error'));
  return {
    listener,
    worker,
    async close() {
      await Promise.all([listener.close(), worker.close()]);
    },
  };
}
