import { Worker, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import { LeaseBusyError, type ActorHost } from '../src/runtime/actor-host.ts';
import type { Mailboxes, WakeJob } from '../src/runtime/mailbox.ts';
import { RECOVERY } from '../src/queues/recovery.ts';
import { queueTelemetry } from '../src/ops/tracing.ts';


/**
 * The conversations queue's processor: a wake-up job names a conversation; the actor host drains its
 * mailbox. A conversation still holding events afterwards is woken again (one waiting job at most).
 */
export function startConversationWorker(opts: {
  connection: ConnectionOptions;
  prefix: string;
  queueName: string;
  host: ActorHost;
  mailboxes: Mailboxes;
  concurrency: number;
  log: Logger;
}): Worker<WakeJob> {
  const worker = new Worker<WakeJob>(
    opts.queueName,
    async (job) => {
      const id = job.data.conversationId;
      const { pending } = await opts.host.drainAndCheck(id);
      if (pending) await opts.mailboxes.wake(id);
    },
    { connection: opts.connection, prefix: opts.prefix, concurrency: opts.concurrency, ...RECOVERY, ...queueTelemetry() },
  );
  worker.on('failed', (job, err) => {
    if (err instanceof LeaseBusyError || err.name === 'CommitConflictError') return;
    opts.log.error({ conversation_id: job?.data.conversationId, job_id: job?.id, err: err.message }, 'conversation step failed');
  });
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'conversation worker error'));
  return worker;
}
