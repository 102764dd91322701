import { Queue, Worker, type ConnectionOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { Mailboxes, MailboxEvent } from '../src/runtime/mailbox.ts';
import { RECOVERY } from './conversation.ts';

/** A durable timer: at its time, `event` goes to the conversation's mailbox. */
export interface TimerJob {
  conversationId: string;
  event: MailboxEvent;
}

const jobIdOf = (conversationId: string, timerId: string) => `${conversationId}-${timerId.replace(/:/g, '_')}`;

/** Adds a timer as a delayed job; the id makes a replayed schedule a no-op. */
export async function scheduleTimer(queue: Queue<TimerJob>, conversationId: string, timerId: string, at: number, event: MailboxEvent): Promise<void> {
  await queue.add('timer', { conversationId, event }, {
    jobId: jobIdOf(conversationId, timerId),
    delay: Math.max(0, at - Date.now()),
    removeOnComplete: true,
    removeOnFail: 1000,
    attempts: 10,
    backoff: { type: 'exponential', delay: 500 },
  });
}

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
    { connection: opts.connection, prefix: opts.prefix, concurrency: 8, ...RECOVERY },
  );
  worker.on('error', (err) => opts.log.error({ err: err.message }, 'timer worker error'));
  return worker;
}

/** Removes a timer's delayed job; one that already ran (or never existed) is fine. */
export async function cancelTimer(queue: Queue<TimerJob>, conversationId: string, timerId: string): Promise<void> {
  await queue.remove(jobIdOf(conversationId, timerId));
}
