import { Worker, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import { GroupBusyError, type GroupHost, type GroupJob } from '../src/runtime/group-host.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';

/**
 * The groups queue's processor: a wake-up drains a group actor's mailbox under its lease (a busy lease is
 * retried with the job's backoff); a delayed timer job posts the group's retransmission wake-up.
 */
export function startGroupWorker(opts: { connection: ConnectionOptions; prefix: string; queueName: string; host: GroupHost; concurrency: number; log: Logger }): Worker<GroupJob> {
  const worker = new Worker<GroupJob>(opts.queueName, async (job) => opts.host.run(job.data), {
    connection: opts.connection, prefix: opts.prefix, concurrency: opts.concurrency, ...RECOVERY, ...queueTelemetry(),
  });
  worker.on('failed', (job, err) => {
    if (!(err instanceof GroupBusyError)) opts.log.error({ group_id: job?.data.g, job_id: job?.id, err: err.message }, 'group job failed');
  });
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'group worker error'));
  return worker;
}
